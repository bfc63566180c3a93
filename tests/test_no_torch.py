"""The board-side modules never import torch (checked in a fresh interpreter)."""

import subprocess
import sys

BOARD_MODULES = ["edgesqueeze", "edgesqueeze.arch", "edgesqueeze.graph", "edgesqueeze.data",
                 "edgesqueeze.metrics", "edgesqueeze.formats", "edgesqueeze.formats.metadata",
                 "edgesqueeze.formats.flatbuffer", "edgesqueeze.formats.files", "edgesqueeze.formats.tflite",
                 "edgesqueeze.formats.onnx", "edgesqueeze.formats.standard_metadata", "edgesqueeze.formats.describe",
                 "edgesqueeze.formats.bundle", "edgesqueeze.export.bundle", "edgesqueeze.weights",
                 "edgesqueeze.weights.deep_compression", "edgesqueeze.weights.caffe",
                 "edgesqueeze.cli", "edgesqueeze.runtime", "edgesqueeze.camera",
                 "edgesqueeze.camera.sources", "edgesqueeze.camera.capture", "edgesqueeze.camera.shadow",
                 "edgesqueeze.camera.loop", "edgesqueeze.camera.overlay", "edgesqueeze.camera.systemd",
                 "edgesqueeze.camera.live", "edgesqueeze.camera.web", "edgesqueeze.camera.page", "edgesqueeze.camera.access",
                 "edgesqueeze.cli.camera",
                 "edgesqueeze.quant.reference", "edgesqueeze.quant.quantize", "edgesqueeze.quant.kernels",
                 "edgesqueeze.quant.requant", "edgesqueeze.imagesets", "edgesqueeze.version"]


def test_board_modules_do_not_import_torch():
    code = ("import sys, importlib\n"
            f"for m in {BOARD_MODULES!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'ai_edge_litert'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"
