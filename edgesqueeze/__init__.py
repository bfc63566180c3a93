"""edgesqueeze: SqueezeNet from PyTorch to an 8-bit model on a Raspberry-Pi-class board.

Importing the package imports numpy alone; torch, onnx, onnxruntime, LiteRT and OpenCV are
imported by the modules that need them.
"""

from .version import __version__  # noqa: E402


from .job import quantize  # noqa: E402  (numpy-only at import, like the package)


def __getattr__(name: str):
    # the runtime's Classifier one import deep, without importing it (and OpenCV) with the package
    if name == "Classifier":
        from .runtime import Classifier

        return Classifier
    raise AttributeError(f"module 'edgesqueeze' has no attribute {name!r}")


__all__ = ["Classifier", "__version__", "quantize"]
