"""`edgesqueeze quantize`: the main job (edgesqueeze.job.quantize), printed."""

from __future__ import annotations

import argparse
import sys

from ..errors import OptionError
from .common import (PassBars, _add_quant_args, _add_weights_args, _non_negative, _positive, _range_split,
                     ristretto_grids)

QUANTIZE_EXAMPLES = """examples:
  edgesqueeze quantize                               # DC v1.0, shared sample, ./export and ./calib
  edgesqueeze quantize --weights my_squeezenet.pth --labels labels.txt --images my_images/
  edgesqueeze quantize --weights my.pth --calib-images calib/ --eval-images val/ --out my_export
  edgesqueeze quantize --weights my.pth --images data.csv --input-size 160 --resize 182 \\
      --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5
  edgesqueeze quantize --scheme ristretto --formats tflite
  edgesqueeze quantize --min-agreement 97          # keep the fewest convs in float for 97 % CV agreement

images: a folder of images (unlabelled: calibration, and agreement with FP32 only), a
torchvision ImageFolder root (root/<class>/*.jpg; class index = sorted folder names), a CSV
file,class_index[,class_name], or a folder of <synset>_*.JPEG ImageNet files.
"""


def _floats3(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three numbers, one per channel (e.g. 0.485,0.456,0.406)")
    return values  # type: ignore[return-value]


def _resize(text: str) -> int | tuple[int, int]:
    """`256` (the short side) or `256x256` (height x width, exact)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a short side (256) nor HEIGHTxWIDTH (256x256)") from None


def _triple(v) -> str:
    return ",".join(f"{x:.3f}".rstrip("0").rstrip(".") for x in v)


def cmd_quantize(args) -> int:
    """The main job: weights -> calibration -> INT8 ONNX + INT8 TFLite (+ FP32 references),
    each verified against the integer reference before it is written."""
    from ..job import quantize
    from ..metrics import format_table

    if args.eval_images and not args.calib_images:
        raise OptionError("--eval-images needs --calib-images (the images to calibrate on)")
    bars = PassBars(args.quiet)

    def warn(text: str) -> None:
        print(f"edgesqueeze quantize: warning: {text}", file=sys.stderr)

    try:
        r = quantize(
            args.weights, args.images, labels=args.labels, calib_images=args.calib_images,
            eval_images=args.eval_images, synset_words=args.synset_words, arch=args.arch, out=args.out,
            calib_dir=args.calib_dir, formats=args.formats, onnx_target=args.onnx_target, scheme=args.scheme,
            method=args.method, bias_correction=False if args.no_bias_correction else None,
            empirical_bias_correction=False if args.no_empirical_bias_correction else None,
            adaptive_rounding=not args.no_adaptive_rounding, equalize=args.equalize, weight_bits=args.weight_bits,
            **ristretto_grids(args, args.scheme, schemes=[args.scheme]),
            range_split=_range_split(args), range_pieces=args.range_pieces,
            range_search=args.range_search,
            input_size=args.input_size, resize=args.resize, mean=args.mean, std=args.std,
            channel_order=args.channel_order, norm_scale=args.norm_scale,
            calibration_fraction=args.calibration_fraction, calib_limit=args.calib_limit, eval_limit=args.limit,
            verify_images=args.verify_images, sqnr_images=args.sqnr_images, min_agreement=args.min_agreement,
            max_drop=args.max_drop, sensitivity_images=args.sensitivity_images, download=args.download,
            on_pass=bars, on_warning=warn)
    finally:
        bars.close()

    o = r.options
    pre = r.preprocess
    print(f"{r.arch} ({args.weights}; architecture {r.arch_source})")
    print(f"{r.num_classes} classes, names from {r.labels_source}; input {pre.crop}x{pre.crop} "
          f"{pre.channel_order}, resize {pre.resize}, mean {_triple(pre.mean)}, std {_triple(pre.std)} (0..255 pixels)")
    calib = next(s for s in r.stages if s.name == "calibrate and quantize")
    print(f"scheme {o.scheme.value}, ranges by {o.method.value}, "
          f"bias correction {'on' if o.bias_correction else 'off'}, "
          f"empirical bias correction {'on' if o.empirical_bias_correction else 'off'}, "
          f"adaptive rounding {'on' if o.adaptive_rounding else 'off'}, equalization {o.equalize:g}, "
          f"range split {', '.join(o.range_split) or 'off'}{', range search on' if o.range_search else ''}; "
          f"calibrated on {r.calibration_images} images in {calib.seconds:.1f} s")
    print(f"quantization parameters: {r.qparams}")
    rows = [[f.path.name, f.bytes, f.detail or f.kind,
             "-" if f.lsb_match is None else f"{100 * f.lsb_match:.2f} % within 1 LSB",
             "-" if f.top1_vs_reference is None else f"{100 * f.top1_vs_reference:.1f} %"] for f in r.files]
    print(format_table(["file", "bytes", "type", "vs integer reference", "top-1 same as reference"], rows))
    e = r.evaluation
    if e is not None:
        c = e.int8
        what = "disjoint from calibration" if args.images or args.calib_images is None else "--eval-images"
        print(f"\naccuracy on {e.images} evaluation images ({what}; INT8 through {e.model_file.name}, {e.runtime}):")
        if e.labelled:
            print(format_table(["model", "top-1 %", "top-5 %", "drop top-1 pp", "top-1 agreement %", "logit SQNR dB"],
                               [["fp32", e.fp32.top1, e.fp32.top5, 0.0, 100.0, "-"],
                                [c.accuracy.name, c.accuracy.top1, c.accuracy.top5, c.drop_top1, c.agreement,
                                 c.logit_sqnr_db]]))
        else:
            print("the images carry no labels: agreement with FP32 only")
            print(format_table(["model", "top-1 agreement %", "logit SQNR dB"],
                               [[c.accuracy.name, c.agreement, c.logit_sqnr_db]]))
    if r.sqnr_db:
        worst = sorted(r.sqnr_db, key=r.sqnr_db.get)[:5]
        print(f"worst per-layer SQNR (dB, {min(e.images if e else 0, args.sqnr_images)} images): "
              + ", ".join(f"{n} {r.sqnr_db[n]:.1f}" for n in worst))
    if r.mixed_precision is not None:
        _print_mixed(r.mixed_precision, format_table)
    total = sum(s.seconds for s in r.stages)
    peak = max((s.peak_rss_mb or 0.0) for s in r.stages)
    print(f"{total:.0f} s, peak memory {peak:.0f} MiB (" + ", ".join(f"{s.name} {s.seconds:.1f} s" for s in r.stages)
          + ")")
    print(f"report: {r.report}")
    return 0


def _print_mixed(m, format_table) -> None:
    s = m.search
    print(f"\naccuracy target ({s.target.describe()}) on the 2-fold CV of the {s.calibration_images} calibration "
          f"images (calibrate on one half, measure on the other; never the evaluation images):")
    rows = [["all-integer", s.baseline.agreement, s.baseline.sqnr_db, float(s.baseline.drop)]]
    if s.float_convs:
        rows.append([f"{len(s.float_convs)} conv{'s' if len(s.float_convs) != 1 else ''} in float", s.after.agreement,
                     s.after.sqnr_db, float(s.after.drop)])
    if s.all_float is not None:
        rows.append(["every conv in float", s.all_float.agreement, s.all_float.sqnr_db, float(s.all_float.drop)])
    print(format_table(["CV", "top-1 agreement %", "logit SQNR dB", "drop top-1 pp"], rows))
    if s.layers:
        print(f"per-layer sensitivity ({s.sensitivity_images} held-out images, one conv in float at a time; "
              f"most SQNR gain first, top 8):")
        print(format_table(["conv", "agreement gain pp", "SQNR gain dB"],
                           [[x.conv, x.agreement_gain, x.sqnr_gain_db] for x in s.layers[:8]]))
    if s.float_convs:
        print(f"kept in float: {', '.join(s.float_convs)}")
    else:
        print("kept in float: none (the all-integer model meets the target)")
    print(f"search: {s.seconds:.0f} s, {s.reference_images} images through the integer reference")
    if m.latency:
        print(f"latency, batch 1, median ms (interleaved with the all-integer model; {m.latency[0].cpu}):")
        print(format_table(["file", "runtime", "threads", "with float convs", "all-integer", "cost %"],
                           [[t.format, t.runtime, t.threads, t.mixed_ms, t.integer_ms, 100 * t.cost]
                            for t in m.latency]))


def add_parser(sub) -> None:
    from ..weights import ARCH_NAMES

    q = sub.add_parser("quantize", help="the main job: calibrate, quantize, export INT8 ONNX + TFLite",
                       epilog=QUANTIZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(q)
    q.add_argument("--arch", choices=ARCH_NAMES, default=None,
                   help="the architecture, when it cannot be told from the weights (default: told from their "
                   "shapes; a simple bypass adds no weights, so name it)")
    q.add_argument("--labels", metavar="NAMES.txt",
                   help="class names, one per line in class-index order, as many as the model has outputs "
                   "(default: the images' own names, e.g. ImageFolder folders or a CSV class_name column)")
    d = q.add_argument_group("images")
    d.add_argument("--images", help="one set, split into calibration and evaluation by the fixed hash of "
                   "each file name (default: the shared ImageNet sample); see the layouts below")
    d.add_argument("--calib-images", metavar="DIR_OR_CSV", help="the calibration set, used whole (instead of --images)")
    d.add_argument("--eval-images", metavar="DIR_OR_CSV", help="the evaluation set, used whole (with --calib-images)")
    d.add_argument("--synset-words", help="synset_words.txt: labels for <synset>_*.JPEG files and names for a "
                   "1000-class model (default: the shared one)")
    d.add_argument("--calibration-fraction", type=float, default=1 / 3,
                   help="share of --images names in the calibration split (default 1/3: ~200 of 600)")
    d.add_argument("--limit", type=_non_negative, default=0, metavar="N",
                   help="use only the first N evaluation images (default: all)")
    p = q.add_argument_group("preprocessing (default: what the weights were trained with)")
    p.add_argument("--input-size", type=_positive, metavar="S", help="the square crop the network sees")
    p.add_argument("--resize", type=_resize, metavar="N|HxW",
                   help="resize the short side to N (torchvision), or to exactly HxW (Caffe), before the crop")
    p.add_argument("--mean", type=_floats3, metavar="R,G,B", help="per-channel mean, in the training code's units")
    p.add_argument("--std", type=_floats3, metavar="R,G,B", help="per-channel std, in the training code's units")
    p.add_argument("--norm-scale", type=int, choices=[1, 255], default=None,
                   help="the pixel range --mean/--std are written for: 1 (torchvision ToTensor + Normalize) or "
                   "255 (Caffe); default: the weights' own convention")
    p.add_argument("--channel-order", type=str.upper, choices=["RGB", "BGR"], default=None,
                   help="channel order the written files take (default RGB, what MediaPipe and the Task Library "
                   "feed); a model trained on the other order gets conv1's input channels reversed")
    _add_quant_args(q, calib_limit_help="calibrate on at most N of the calibration images, evenly spaced over "
                    "them (default 96: more measured no better in cross-validation; 0: all)")
    q.add_argument("--scheme", default="affine", choices=["affine", "ristretto"], help="default affine")
    q.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=["onnx", "tflite"])
    q.add_argument("--onnx-target", default="x86", choices=["x86", "arm"],
                   help="8-bit types of the INT8 ONNX: uint8 (x86) or int8 (arm)")
    q.add_argument("--out", default="export", help="folder for the model files (default ./export)")
    q.add_argument("--calib-dir", default="calib", help="folder for the quantization parameters (default ./calib)")
    q.add_argument("--verify-images", type=_positive, default=32, help="images each export is checked on")
    q.add_argument("--sqnr-images", type=_non_negative, default=16,
                   help="images for the per-layer SQNR summary (0: skip)")
    a = q.add_argument_group("accuracy target (keeps the fewest convs in float32; default: every conv integer)")
    a.add_argument("--min-agreement", type=float, default=None, metavar="PCT",
                   help="top-1 agreement with FP32 (percent) the 2-fold CV of the calibration images must reach")
    a.add_argument("--max-drop", type=float, default=None, metavar="PP",
                   help="top-1 drop (percentage points) the CV may show; needs labelled calibration images. "
                   "With --min-agreement, both must hold")
    a.add_argument("--sensitivity-images", type=_positive, default=32, metavar="N",
                   help="held-out images each conv's sensitivity is measured on (default 32)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quantize)
