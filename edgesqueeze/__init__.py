"""edgesqueeze: SqueezeNet from PyTorch to an 8-bit model on a Raspberry-Pi-class board.

Importing the package imports numpy alone; torch, onnx, onnxruntime, LiteRT and OpenCV are
imported by the modules that need them.
"""

__version__ = "0.1.0"
