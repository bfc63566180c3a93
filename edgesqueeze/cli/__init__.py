"""The `edgesqueeze` command: thin over the library.

    edgesqueeze info                  the SqueezeNet family's layer table and parameter counts
    edgesqueeze eval                  FP32 top-1/top-5 on the shared sample (defaults)
    edgesqueeze eval --images DIR_OR_CSV --weights NAME_OR_PATH --report out.json
    edgesqueeze eval --split eval --models A.tflite B.onnx   FP32 vs exported files (deployed path)
    edgesqueeze classify MODEL IMG... [--top-k 5] [--json]  top-k classes with an exported file
    edgesqueeze bench MODEL... [--threads 1 4] [--runs 100]  inference time, side by side
    edgesqueeze pack MODEL [-o OUT]   a checked, compressed update bundle (MODEL.esq) that classify loads
    edgesqueeze camera --model M.tflite --source 0 [--headless] [--fp32 F.onnx]  the live demo

Every user error is one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import run_command
from . import classify, evaluate, info, quantize

EXAMPLES = """examples:
  edgesqueeze info
  edgesqueeze eval                                   # Deep-Compression v1.0 on ../shared sample
  edgesqueeze eval --split eval --report export/eval.json
  edgesqueeze eval --weights squeezenet1_0-torchvision --download --images my_labels.csv
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgesqueeze", description="SqueezeNet to INT8 on a Raspberry-Pi-class board.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    info.add_parser(sub)
    evaluate.add_parser(sub)
    quantize.add_parser(sub)

    from .camera import add_camera_parser  # numpy + OpenCV only; the demo lives in edgesqueeze.camera

    add_camera_parser(sub)
    classify.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"edgesqueeze {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
