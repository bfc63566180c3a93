"""`edgesqueeze eval`: FP32, the integer reference and exported files on labelled images."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import EdgeSqueezeError
from .common import (EVAL_COLUMNS, PassBars, _add_data_args, _add_quant_args, _add_weights_args, _calibration_items,
                     _comparison_row, _load_items, _load_model, _positive, _progress, _quantize_options,
                     _write_json)

EXAMPLES = """examples:
  edgesqueeze info
  edgesqueeze eval                                   # Deep-Compression v1.0 on ../shared sample
  edgesqueeze eval --split eval --report export/eval.json
  edgesqueeze eval --weights squeezenet1_0-torchvision --download --images my_labels.csv
  edgesqueeze eval --int8 affine --sqnr --sensitivity export/squeezenet1_0-affine-fp2-report.json
"""


def cmd_eval(args) -> int:
    import numpy as np

    from ..evaluate import compare, fp32_scores, int8_scores, per_layer_sqnr, sqnr_plot_png
    from ..metrics import accuracy, format_table

    if args.int8 and args.split != "eval":
        raise EdgeSqueezeError(f"--int8 calibrates on the calibration split, so it evaluates on --split eval "
                               f"only (got --split {args.split}); calibration and evaluation images must be disjoint")
    for scheme in args.int8:  # check every option before any slow work
        _quantize_options(args, scheme)
    sensitivity = _read_sensitivity(args.sensitivity) if args.sensitivity else None  # a bad report fails here
    classifiers = _load_classifiers(args.models, args.threads) if args.models else []  # bad files fail here
    model = _load_model(args)  # weights first: a bad weights file fails before any image is read
    src, items = _load_items(args)
    labels = np.array([i.label for i in items])
    update, close = _progress(len(items), "fp32", args.quiet)
    t0 = time.perf_counter()
    try:
        fp = fp32_scores(model, items, batch_size=args.batch_size, progress=update)
    finally:
        close()
    base = accuracy("fp32", fp, labels)
    report = {
        "arch": model.arch.name, "weights": str(args.weights), "images": str(src),
        "split": args.split, "calibration_fraction": args.calibration_fraction,
        "results": [{**base.to_dict(), "drop_top1_pp": 0.0, "drop_top5_pp": 0.0, "top1_agreement": 100.0}],
    }
    rows = [["fp32", base.images, base.top1, base.top5, 0.0, 100.0, "-"]]
    sqnr: dict[str, dict[str, float]] = {}
    if args.int8:
        from ..pipeline import calibrate_and_quantize

        calib = _calibration_items(args)
        for scheme in args.int8:
            options = _quantize_options(args, scheme)
            bars = PassBars(args.quiet, prefix=f"{scheme}: ")  # one bar per pass, counting images
            try:
                qm, _, quantized_fp32 = calibrate_and_quantize(model, calib, options, on_pass=bars)
            finally:
                bars.close()
            name = f"int8-{scheme}"
            update, close = _progress(len(items), name, args.quiet)
            try:
                scores = int8_scores(qm, items, progress=update)
            finally:
                close()
            c = compare(name, scores, fp, labels, base)
            rows.append(_comparison_row(c))
            report["results"].append({**c.to_dict(), "options": {"scheme": scheme, "method": options.method.value,
                                      "bias_correction": options.bias_correction, "equalize": options.equalize,
                                      "adaptive_rounding": options.adaptive_rounding,
                                      "calibration_images": len(calib)}})
            if args.sqnr:
                sub = items[: args.sqnr_images]
                update, close = _progress(len(sub), f"sqnr {scheme}", args.quiet)
                try:
                    sqnr[name] = per_layer_sqnr(quantized_fp32, qm, sub, progress=update)
                finally:
                    close()
    if classifiers:
        _eval_model_files(args, classifiers, items, fp, labels, base, rows, report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{model.arch.name} ({args.weights}) on {len(items)} images from {src} (split: {args.split})")
    print(format_table(EVAL_COLUMNS, rows))
    if sqnr:
        first = next(iter(sqnr))
        order = sorted(sqnr[first], key=lambda n: sqnr[first][n])
        print(f"\nper-layer SQNR in dB vs FP32 on {min(len(items), args.sqnr_images)} images (worst first):")
        print(format_table(["tensor", *sqnr], [[n, *(sqnr[v][n] for v in sqnr)] for n in order], floatfmt=".1f"))
        report["sqnr_db"] = sqnr
        if args.sqnr_plot:
            sqnr_plot_png(sqnr, args.sqnr_plot)
            print(f"plot: {args.sqnr_plot}")
    if sensitivity is not None:
        _print_sensitivity(args.sensitivity, sensitivity, format_table)
        report["mixed_precision"] = sensitivity
    if args.report:
        _write_json(args.report, report)
        print(f"report: {args.report}")
    return 0


def _read_sensitivity(path) -> dict:
    """The accuracy-aware search saved in a `quantize --min-agreement/--max-drop` report."""
    import json

    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise EdgeSqueezeError(f"--sensitivity {path}: no such file; give the report JSON that "
                               "`edgesqueeze quantize --min-agreement PCT` (or --max-drop PP) wrote") from None
    except (OSError, ValueError) as e:
        raise EdgeSqueezeError(f"--sensitivity {path}: not readable JSON ({e})") from None
    mp = doc.get("mixed_precision") if isinstance(doc, dict) else None
    if not isinstance(mp, dict) or not isinstance(mp.get("sensitivity"), list):
        raise EdgeSqueezeError(f"--sensitivity {path}: the report holds no per-layer sensitivity table; it is "
                               "written by `edgesqueeze quantize --min-agreement PCT` or `--max-drop PP`")
    return mp


def _print_sensitivity(path, mp: dict, format_table) -> None:
    before, after = mp.get("cv_before") or {}, mp.get("cv_after") or {}
    print(f"\nper-layer sensitivity from {path} (2-fold CV on the calibration split, "
          f"{mp.get('sensitivity_images')} held-out images, one conv in float at a time; most SQNR gain first):")
    if mp["sensitivity"]:
        print(format_table(["conv", "agreement %", "agreement gain pp", "logit SQNR dB", "SQNR gain dB"],
                           [[r.get("conv"), r.get("agreement"), r.get("agreement_gain_pp"), _num(r.get("sqnr_db")),
                             _num(r.get("sqnr_gain_db"))] for r in mp["sensitivity"]]))
    else:
        print("(none measured: the all-integer model met the target)")
    print(f"target: {mp.get('target_text')}; kept in float: {', '.join(mp.get('float_convs') or []) or 'none'}; "
          f"CV agreement {before.get('agreement')} -> {after.get('agreement')} %, "
          f"logit SQNR {before.get('sqnr_db')} -> {after.get('sqnr_db')} dB")


def _num(v):
    return float("nan") if v is None else float(v)


def _load_classifiers(files, threads=None):
    """Classifier of each model file, all loaded before any slow work (a bad file fails fast)."""
    from ..runtime import Classifier

    return [Classifier.load(f, threads=threads) for f in files]


def _eval_model_files(args, classifiers, items, fp, labels, base, rows, report) -> None:
    """Each exported file, run through the deployed path (runtime.Classifier: its own
    preprocessing from its metadata, its runtime), against the FP32 scores on the same images."""
    import numpy as np

    from ..data import iter_batches, load_image
    from ..evaluate import compare

    names = [c.path.name for c in classifiers]
    for clf in classifiers:
        name = clf.path.name if names.count(clf.path.name) == 1 else str(clf.path)
        if clf.num_classes != fp.shape[1]:
            raise EdgeSqueezeError(f"{clf.path}: gives {clf.num_classes} classes, the FP32 model {fp.shape[1]}; "
                                   "compare files of the same model")
        if args.split != "eval" and clf.metadata.calibration:
            print(f"edgesqueeze eval: note: {name} was calibrated on the calibration split "
                  f"({clf.metadata.calibration.get('split', '?')}); with --split {args.split} some evaluation "
                  "images may be calibration images: use --split eval for numbers on disjoint images",
                  file=sys.stderr)
        update, close = _progress(len(items), name, args.quiet)
        out, ms = [], 0.0
        try:
            for batch in iter_batches(items, args.batch_size):
                pixels = np.stack([clf.preprocess(load_image(i.path), source=str(i.path)) for i in batch])
                out.append(clf.logits(pixels))
                ms += clf.last_inference_ms
                if update:
                    update(len(batch))
        finally:
            close()
        scores = np.concatenate(out)
        if clf.logits_kind != "logits":  # a .tflite gives log-probabilities: compare like with like
            from ..runtime import log_probabilities

            c = compare(name, scores, log_probabilities(fp), labels, base)
        else:
            c = compare(name, scores, fp, labels, base)
        rows.append(_comparison_row(c))
        report["results"].append({**c.to_dict(), "file": str(clf.path), "backend": clf.backend.value,
                                  "runtime_version": clf.runtime_version, "threads": clf.threads,
                                  "scheme": clf.metadata.scheme, "calibration": clf.metadata.calibration,
                                  "inference_ms_per_image": round(ms / max(1, len(items)), 3)})



def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="top-1/top-5 on labelled images",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(ev)
    _add_data_args(ev)
    ev.add_argument("--int8", nargs="*", default=[], metavar="SCHEME", choices=["affine", "ristretto"],
                    help="also calibrate on the calibration split and evaluate the integer reference of "
                    "these schemes (affine, ristretto); needs --split eval")
    _add_quant_args(ev)
    ev.add_argument("--sqnr", action="store_true", help="per-layer SQNR table of each INT8 variant")
    ev.add_argument("--sqnr-images", type=int, default=64, help="images for the SQNR table (default 64)")
    ev.add_argument("--sqnr-plot", metavar="PNG", help="draw the per-layer SQNR as a bar chart")
    ev.add_argument("--sensitivity", metavar="REPORT.json",
                    help="also print the per-layer sensitivity table (one conv in float at a time, beside --sqnr's per-layer SQNR) that "
                    "`quantize --min-agreement/--max-drop` saved in its report")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--report", help="write the results as JSON to this file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--models", nargs="+", default=[], metavar="FILE",
                    help="exported .onnx/.tflite files to evaluate against FP32 on the same images, each run "
                    "through the board runtime (edgesqueeze.runtime.Classifier)")
    ev.add_argument("--threads", type=_positive, default=None, help="runtime threads for --models (default: all cores)")
    ev.set_defaults(func=cmd_eval)
