"""Helpers every `edgesqueeze` subcommand shares: progress bars, option types, the data,
weights and quantization options, and reading the images and the model they name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EdgeSqueezeError, OptionError
from ..quant.equalize import DEFAULT_EQUALIZE
from ..quant.range_split import DEFAULT_RANGE_PIECES, PIECES_RANGE


def _progress(total: int, desc: str, quiet: bool):
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
    return bar.update, bar.close


class PassBars:
    """on_pass(name, done, total) as one progress bar per pass, named and counting images; no
    bars with quiet=True or without tqdm."""

    def __init__(self, quiet: bool, *, prefix: str = ""):
        self.quiet, self.prefix = quiet, prefix
        self.bars: dict = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if self.quiet:
            return
        bar = self.bars.get(name)
        if bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.quiet = True
                return
            bar = self.bars[name] = tqdm(total=total, desc=self.prefix + name, unit="img", file=sys.stderr,
                                         leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _load_items(args, limit: int | None = None):
    from .. import data, paths

    src = Path(args.images) if args.images else paths.default_labels_csv()
    synsets = args.synset_words
    if synsets is None and src.is_dir() and data.looks_synset_named(src):
        synsets = paths.default_synset_words()
    items = data.load_dataset(src, synset_words=synsets)
    if args.split != "all":
        calib, evals = data.split_calibration(items, calibration_fraction=args.calibration_fraction)
        items = calib if args.split == "calibration" else evals
    limit = args.limit if limit is None else limit
    if limit:
        items = items[:limit]
    if not items:
        raise EdgeSqueezeError(f"no images selected from {src} (split={args.split})")
    return src, items


def _load_model(args):
    from .. import paths
    from ..model import load_pretrained

    paths.ensure_weights_env()
    return load_pretrained(args.weights, download=args.download)


def _write_json(path: str, doc: dict) -> None:
    out = Path(path)
    if not out.parent.is_dir():
        raise EdgeSqueezeError(f"{out}: folder {out.parent} does not exist; create it or choose another path")
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _quantize_options(args, scheme: str):
    from ..pipeline import QuantizeOptions

    return QuantizeOptions.make(scheme=scheme, method=args.method,
                                bias_correction=False if args.no_bias_correction else None,
                                equalize=args.equalize,
                                empirical_bias_correction=False if args.no_empirical_bias_correction else None,
                                weight_bits=args.weight_bits,
                                adaptive_rounding=not args.no_adaptive_rounding,
                                range_split=_range_split(args), range_pieces=args.range_pieces,
                                range_search=args.range_search,
                                **ristretto_grids(args, scheme, schemes=getattr(args, "int8", None) or [scheme]))


def _range_split(args) -> tuple[str, ...] | None:
    """--range-split / --no-range-split (None: the default), for every scheme being made."""
    if args.range_split and args.no_range_split:
        raise OptionError("--range-split and --no-range-split contradict each other; give one")
    return () if args.no_range_split else (tuple(args.range_split) or None)


def ristretto_grids(args, scheme: str, *, schemes: list[str]) -> dict:
    """QuantizeOptions keywords of --signed-activations / --per-layer-weights for `scheme`: they
    change the ristretto scheme's grids only, and are refused, with the fix, when none of the
    `schemes` being run is ristretto."""
    given = [f for f, on in (("--signed-activations", args.signed_activations),
                             ("--per-layer-weights", args.per_layer_weights)) if on]
    if given and "ristretto" not in schemes:
        raise OptionError(f"{' and '.join(given)} {'changes' if len(given) == 1 else 'change'} the ristretto "
                          "scheme's grids only; add --scheme ristretto (eval: --int8 ristretto) or drop "
                          f"{'it' if len(given) == 1 else 'them'} (affine activations use all 256 levels and "
                          "its weights are per channel)")
    if scheme != "ristretto":
        return {}
    return {"unsigned_activations": False if args.signed_activations else None,
            "per_channel_weights": False if args.per_layer_weights else None}


EVAL_COLUMNS = ["model", "images", "top-1 %", "top-5 %", "drop top-1 pp", "top-1 agreement %", "logit SQNR dB"]


def _comparison_row(c) -> list:
    """One row of eval's table (EVAL_COLUMNS) for an evaluate.Comparison."""
    a = c.accuracy
    return [a.name, a.images, a.top1, a.top5, c.drop_top1, c.agreement, c.logit_sqnr_db]


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, with a message naming the bad value."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} must be at least {minimum}")
        return n

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _class_names(args) -> list[str]:
    from .. import paths
    from ..data import read_class_names

    p = args.synset_words or paths.default_synset_words()
    if p is None:
        raise EdgeSqueezeError("no class names: pass --synset-words synset_words.txt (1000 lines, class order)")
    return read_class_names(p)


def _calibration_items(args):
    """The calibration split of the same image source (disjoint from --split eval)."""
    saved = args.split
    try:
        args.split = "calibration"
        _, calib = _load_items(args, limit=args.calib_limit or 0)  # 0: all of them
    finally:
        args.split = saved
    return calib


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="labels CSV (file,class_index,...) or a folder of <synset>_*.JPEG "
                   "images (default: the shared sample_labels.csv)")
    p.add_argument("--synset-words", help="synset_words.txt, for a folder of synset-named images")
    p.add_argument("--split", choices=["all", "calibration", "eval"], default="all",
                   help="which part of the fixed hash split of file names to use (default: all)")
    p.add_argument("--calibration-fraction", type=float, default=1 / 3,
                   help="share of names in the calibration split (default 1/3: ~200 of 600)")
    p.add_argument("--limit", type=_non_negative, default=0, metavar="N", help="use only the first N images")


def _add_quant_args(p: argparse.ArgumentParser, *, calib_limit_help: str = "use only the first N calibration "
                    "images (default: all)") -> None:
    p.add_argument("--method", default=None, choices=["minmax", "percentile", "mse", "kl"],
                   help="how activation ranges are chosen from the calibration statistics (default: "
                   "minmax for affine, kl for ristretto)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="do not correct biases for weight rounding (on by default); turns the empirical "
                   "correction off too")
    p.add_argument("--no-empirical-bias-correction", action="store_true",
                   help="skip the empirical (sequential) bias correction on the calibration images "
                   "(on by default: one integer pass, ~1 min for 194 images)")
    p.add_argument("--no-adaptive-rounding", action="store_true",
                   help="round each weight to its nearest level instead of choosing up or down to lower "
                   "its conv's output error on the calibration images (README, \"Adaptive rounding\")")
    p.add_argument("--equalize", type=float, default=None, metavar="ALPHA",
                   help="cross-layer activation equalization strength in [0, 1] (0: off; default "
                   f"{DEFAULT_EQUALIZE})")
    p.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="weight levels: symmetric N-bit grid in int8 containers, 4..8 (default 8); fewer "
                   "levels give a smaller update bundle at a measured accuracy cost (README, \"Update bundle\")")
    p.add_argument("--signed-activations", action="store_true",
                   help="ristretto: a sign bit on every activation, as Ristretto publishes it (default: "
                   "tensors that are never negative are unsigned, half the step)")
    p.add_argument("--per-layer-weights", action="store_true",
                   help="ristretto: one power-of-two weight scale per layer, as Ristretto publishes it "
                   "(default: one per output channel)")
    p.add_argument("--range-search", action="store_true",
                   help="shrink activation ranges where the integer model's logits get closer to FP32 on the "
                   "calibration images (about 1-2 min more on 2 cores; docs/quantization.md)")
    p.add_argument("--range-split", nargs="+", default=[], metavar="TENSOR",
                   help="carry these Fire squeeze outputs in int8 pieces of an equal share of the range "
                   "(--range-pieces): a finer step for extra channels (default: fire2.squeeze; "
                   "docs/quantization.md, \"Range splitting\")")
    p.add_argument("--range-pieces", type=int, default=None, metavar="N",
                   help=f"how many int8 pieces each range-split tensor is carried in, {PIECES_RANGE[0]}.."
                   f"{PIECES_RANGE[1]}: 1/N of the step for up to N - 1 extra channels per channel "
                   f"(default {DEFAULT_RANGE_PIECES})")
    p.add_argument("--no-range-split", action="store_true",
                   help="no range splitting (every conv as wide as the float model's)")
    p.add_argument("--calib-limit", type=_non_negative, default=None, metavar="N", help=calib_limit_help)


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="squeezenet1_0-dc",
                   help="a known name (squeezenet1_0-dc, squeezenet1_0-torchvision, "
                   "squeezenet1_1-torchvision) or a .net/.pth/.caffemodel file (your own SqueezeNet: a "
                   "torchvision-layout state_dict; its class count and architecture are read from it)")
    p.add_argument("--download", action="store_true", help="download known weights if not found locally")

