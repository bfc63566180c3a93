"""`edgesqueeze quantize`: the main job."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import EdgeSqueezeError
from .common import (_add_data_args, _add_quant_args, _add_weights_args, _calibration_items, _class_names,
                     _load_items, _load_model, _progress, _quantize_options, _write_json)

QUANTIZE_EXAMPLES = """examples:
  edgesqueeze quantize                               # DC v1.0, shared sample, ./export and ./calib
  edgesqueeze quantize --scheme ristretto --formats tflite
  edgesqueeze quantize --method kl --equalize 0 --onnx-target arm
"""


def cmd_quantize(args) -> int:
    """The main job: weights -> calibration -> INT8 ONNX + INT8 TFLite (+ FP32 references),
    each verified against the integer reference before it is written."""
    import numpy as np

    from ..data import load_pixels
    from ..evaluate import compare, fp32_scores, int8_scores
    from ..metadata import ModelMetadata
    from ..metrics import accuracy, format_table
    from ..pipeline import calibrate_and_quantize

    options = _quantize_options(args, args.scheme)
    formats = set(args.formats)
    out_dir, calib_dir = Path(args.out), Path(args.calib_dir)
    for d in (out_dir, calib_dir):
        if d.exists() and not d.is_dir():
            raise EdgeSqueezeError(f"{d} exists and is not a folder; choose another --out/--calib-dir")
    model = _load_model(args)
    src, evals = _load_items(args) if args.split == "eval" else (None, None)
    calib = _calibration_items(args)
    names = _class_names(args)
    arch = model.arch
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_dir.mkdir(parents=True, exist_ok=True)

    passes = 2 if options.equalize > 0 else 1
    update, close = _progress(passes * len(calib), "calibrate", args.quiet)
    t0 = time.perf_counter()
    try:
        qm, stats, quantized_fp32 = calibrate_and_quantize(model, calib, options, labels=names, progress=update)
    finally:
        close()
    calib_seconds = time.perf_counter() - t0
    stem = f"{arch.name}-{options.scheme.value}" + (f"-w{options.weight_bits}" if options.weight_bits != 8 else "")
    qjson, _ = qm.save(calib_dir / stem)

    verify = None
    if evals:
        verify = load_pixels(evals[: args.verify_images], arch.preprocess)
    files = []
    meta_fp32 = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=tuple(names), scheme="fp32")
    if "onnx" in formats:
        from ..export.onnx import to_onnx, to_onnx_fp32

        p = to_onnx_fp32(arch, model.numpy_params(), out_dir / f"{arch.name}-fp32.onnx", metadata=meta_fp32)
        files.append([p.name, p.stat().st_size, "fp32", "-", "-"])
        r = to_onnx(qm, out_dir / f"{stem}-int8.onnx", target=args.onnx_target, verify_images=verify)
        files.append([r.path.name, r.bytes, f"int8 ({args.onnx_target})",
                      f"{100 * r.lsb_match:.2f} % within 1 LSB", f"{100 * r.top1_agreement:.1f} %"])
    if "tflite" in formats:
        from ..export.tflite import to_tflite, to_tflite_fp32

        r = to_tflite_fp32(arch, model.numpy_params(), out_dir / f"{arch.name}-fp32.tflite", metadata=meta_fp32)
        files.append([r.path.name, r.bytes, "fp32", "-", "-"])
        r = to_tflite(qm, out_dir / f"{stem}-int8.tflite", verify_images=verify)
        files.append([r.path.name, r.bytes, "int8", f"{100 * r.lsb_match:.2f} % within 1 LSB", f"{100 * r.top1_agreement:.1f} %"])

    print(f"{arch.name} ({args.weights}), scheme {options.scheme.value}, ranges by {options.method.value}, "
          f"bias correction {'on' if options.bias_correction else 'off'}, "
          f"empirical bias correction {'on' if options.empirical_bias_correction else 'off'}, "
          f"adaptive rounding {'on' if options.adaptive_rounding else 'off'}, equalization {options.equalize:g}; "
          f"calibrated on {len(calib)} images in {calib_seconds:.1f} s")
    print(f"quantization parameters: {qjson}")
    if files:
        print(format_table(["file", "bytes", "type", "vs integer reference", "top-1 same as reference"], files))
    report = {"arch": arch.name, "weights": str(args.weights), "options": qm.calibration | {"scheme": options.scheme.value},
              "qparams": str(qjson), "files": [dict(zip(["file", "bytes", "type", "check", "top1_vs_reference"], f)) for f in files]}
    if evals:
        update, close = _progress(2 * len(evals), "evaluate", args.quiet)
        try:
            fp = fp32_scores(model, evals, progress=update)
            q = int8_scores(qm, evals, progress=update)
        finally:
            close()
        labels = np.array([i.label for i in evals])
        base = accuracy("fp32", fp, labels)
        c = compare(f"int8-{options.scheme.value}", q, fp, labels, base)
        print(f"\naccuracy on the evaluation split ({len(evals)} images, disjoint from calibration):")
        print(format_table(["model", "top-1 %", "top-5 %", "drop top-1 pp", "top-1 agreement %", "logit SQNR dB"],
                           [["fp32", base.top1, base.top5, 0.0, 100.0, "-"],
                            [c.accuracy.name, c.accuracy.top1, c.accuracy.top5, c.drop_top1, c.agreement,
                             c.logit_sqnr_db]]))
        report["accuracy"] = [base.to_dict(), c.to_dict()]
        if args.sqnr_images:
            from ..evaluate import per_layer_sqnr

            sq = per_layer_sqnr(quantized_fp32, qm, evals[: args.sqnr_images])
            worst = sorted(sq, key=sq.get)[:5]
            print(f"worst per-layer SQNR (dB, {min(len(evals), args.sqnr_images)} images): "
                  + ", ".join(f"{n} {sq[n]:.1f}" for n in worst))
            report["sqnr_db"] = sq
    report_path = out_dir / f"{stem}-report.json"
    _write_json(str(report_path), report)
    print(f"report: {report_path}")
    return 0



def add_parser(sub) -> None:
    q = sub.add_parser("quantize", help="the main job: calibrate, quantize, export INT8 ONNX + TFLite",
                       epilog=QUANTIZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(q)
    _add_data_args(q)
    _add_quant_args(q)
    q.set_defaults(split="eval")
    q.add_argument("--scheme", default="affine", choices=["affine", "ristretto"], help="default affine")
    q.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=["onnx", "tflite"])
    q.add_argument("--onnx-target", default="x86", choices=["x86", "arm"],
                   help="activation type of the INT8 ONNX: uint8 (x86, fast there) or int8 (arm)")
    q.add_argument("--out", default="export", help="folder for the model files (default ./export)")
    q.add_argument("--calib-dir", default="calib", help="folder for the quantization parameters (default ./calib)")
    q.add_argument("--verify-images", type=int, default=32, help="evaluation images each export is checked on")
    q.add_argument("--sqnr-images", type=int, default=16, help="images for the per-layer SQNR summary (0: skip)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_quantize)
