#!/usr/bin/env python3
"""Real-time SqueezeNet INT8 demo with live FP32 agreement tracking (thin wrapper over
`edgesqueeze.camera` and its command line, `edgesqueeze.cli.camera`; the same as `edgesqueeze camera ...`).

    python demos/camera.py --model export/squeezenet1_0-affine-int8.tflite --source 0
    python demos/camera.py --model m.tflite --source clip.avi --headless --max-frames 50   # smoke test
    python demos/camera.py --model m.tflite --source 0 --headless --serve 8080   # page: http://127.0.0.1:8080/

Board-side: needs numpy, OpenCV and one runtime (ai-edge-litert or onnxruntime); never torch.
See demos/README.md.
"""

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "edgesqueeze" / "camera" / "__init__.py").is_file():  # run from a checkout: use its package
    sys.path.insert(0, str(_CHECKOUT))

from edgesqueeze.cli.camera import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
