"""The `edgesqueeze` command: thin over the library.

    edgesqueeze info                  the SqueezeNet family's layer table and parameter counts
    edgesqueeze eval                  FP32 top-1/top-5 on the shared sample (defaults)
    edgesqueeze eval --images DIR_OR_CSV --weights NAME_OR_PATH --report out.json

Every user error is one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import EdgeSqueezeError

EXAMPLES = """examples:
  edgesqueeze info
  edgesqueeze eval                                   # Deep-Compression v1.0 on ../shared sample
  edgesqueeze eval --split eval --report export/eval.json
  edgesqueeze eval --weights squeezenet1_0-torchvision --download --images my_labels.csv
"""


def _progress(total: int, desc: str, quiet: bool):
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
    return bar.update, bar.close


def _load_items(args):
    from . import data, paths

    src = Path(args.images) if args.images else paths.default_labels_csv()
    synsets = args.synset_words
    if synsets is None and src.is_dir() and data.looks_synset_named(src):
        synsets = paths.default_synset_words()
    items = data.load_dataset(src, synset_words=synsets)
    if args.split != "all":
        calib, evals = data.split_calibration(items, calibration_fraction=args.calibration_fraction)
        items = calib if args.split == "calibration" else evals
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise EdgeSqueezeError(f"no images selected from {src} (split={args.split})")
    return src, items


def _load_model(args):
    from . import paths
    from .model import SqueezeNet
    from .weights import load_params

    paths.ensure_weights_env()
    arch, params = load_params(args.weights, download=args.download)
    model = SqueezeNet(arch)
    model.load_numpy_params(params)
    return model.eval()


def cmd_info(args) -> int:
    from .arch import metaparameter_arch, squeezenet1_0_arch, squeezenet1_1_arch
    from .metrics import format_table

    archs = [squeezenet1_0_arch(), squeezenet1_1_arch(), squeezenet1_0_arch(caffe=True),
             squeezenet1_0_arch(bypass="simple"), squeezenet1_0_arch(bypass="complex"),
             metaparameter_arch(base_e=args.base_e, incr_e=args.incr_e, pct3x3=args.pct3x3,
                                freq=args.freq, sr=args.sr)]
    rows = [[a.name, a.input_size, a.final_pad, a.num_parameters()] for a in archs]
    print(format_table(["arch", "input", "conv10 pad", "parameters"], rows))
    a = archs[-1]
    print(f"\nlayers of {a.name}:")
    rows = [[c.name, c.in_channels, c.out_channels, f"{c.kernel}x{c.kernel}/{c.stride}", c.pad,
             c.out_channels * (c.in_channels * c.kernel**2 + 1)] for c in a.convs()]
    print(format_table(["conv", "in", "out", "kernel", "pad", "params"], rows))
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from .evaluate import fp32_scores
    from .metrics import accuracy, format_table

    model = _load_model(args)  # weights first: a bad weights file fails before any image is read
    src, items = _load_items(args)
    update, close = _progress(len(items), "fp32", args.quiet)
    t0 = time.perf_counter()
    try:
        scores = fp32_scores(model, items, batch_size=args.batch_size, progress=update)
    finally:
        close()
    seconds = time.perf_counter() - t0
    labels = np.array([i.label for i in items])
    acc = accuracy("fp32", scores, labels)
    print(f"{model.arch.name} ({args.weights}) on {len(items)} images from {src} (split: {args.split})")
    print(format_table(["model", "images", "top-1 %", "top-5 %"], [[acc.name, acc.images, acc.top1, acc.top5]]))
    report = {
        "arch": model.arch.name, "weights": str(args.weights), "images": str(src),
        "split": args.split, "calibration_fraction": args.calibration_fraction,
        "seconds": round(seconds, 2), "results": [acc.to_dict()],
    }
    if args.report:
        out = Path(args.report)
        if out.parent and not out.parent.is_dir():
            raise EdgeSqueezeError(f"--report {out}: folder {out.parent} does not exist")
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {out}")
    return 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="labels CSV (file,class_index,...) or a folder of <synset>_*.JPEG "
                   "images (default: the shared sample_labels.csv)")
    p.add_argument("--synset-words", help="synset_words.txt, for a folder of synset-named images")
    p.add_argument("--split", choices=["all", "calibration", "eval"], default="all",
                   help="which part of the fixed hash split of file names to use (default: all)")
    p.add_argument("--calibration-fraction", type=float, default=1 / 3,
                   help="share of names in the calibration split (default 1/3: ~200 of 600)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="squeezenet1_0-dc",
                   help="a known name (squeezenet1_0-dc, squeezenet1_0-torchvision, "
                   "squeezenet1_1-torchvision) or a .net/.pth/.caffemodel file")
    p.add_argument("--download", action="store_true", help="download known weights if not found locally")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgesqueeze", description="SqueezeNet to INT8 on a Raspberry-Pi-class board.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="layer tables and parameter counts")
    for name, default, typ in (("--base-e", 128, int), ("--incr-e", 128, int), ("--pct3x3", 0.5, float),
                               ("--freq", 2, int), ("--sr", 0.125, float)):
        info.add_argument(name, type=typ, default=default, help=f"metaparameter (default {default})")
    info.set_defaults(func=cmd_info)

    ev = sub.add_parser("eval", help="top-1/top-5 on labelled images",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(ev)
    _add_data_args(ev)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--report", help="write the results as JSON to this file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeSqueezeError as e:
        print(f"edgesqueeze {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"edgesqueeze {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgesqueeze {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
