"""FP32 ONNX vs our INT8 ONNX vs onnxruntime's quantize_static INT8: latency, size, accuracy.

    EDGESQUEEZE_SHARED=../shared python benchmarks/onnx_latency.py [--calib-images 194]
        [--eval-images 406] [--rounds 7] [--iters 15] [--json out.json] [--out-dir DIR]

Model: the Deep-Compression SqueezeNet v1.0 from the shared weights. Images: the shared sample's
fixed split (edgesqueeze.data.split_calibration): the first N calibration-split images
calibrate both quantizers, the evaluation split (disjoint) measures accuracy.

Three files, all taking uint8 NHWC "pixels":
- FP32: `to_onnx_fp32` (Cast/Sub/Div/Transpose input head, float convs);
- ours: `to_onnx(qm, target=x86)` — QDQ written from edgesqueeze's own quantization
  (`calibrate_and_quantize` with `QuantizeOptions.make()`'s defaults: min/max ranges, per-channel
  int8 weights, bias correction, and whatever else those defaults turn on), uint8 activations;
- peer: onnxruntime.quantization.quantize_static on the FP32 file — QDQ, per-channel, MinMax,
  uint8 activations / int8 weights, the same calibration images fed as uint8 pixels through a
  CalibrationDataReader (it also quantizes what follows the FP32 input head).

Latency: batch 1 (one evaluation image), onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL,
1 and 2 intra-op threads, every (file, threads) session warmed up, then `--rounds` rounds in
which each session runs `--iters` times in turn (the order rotates each round), so drifts of the
machine's speed hit all of them alike; median and p90 of all runs. Timings are noisy (other
jobs may share the machine): the ratios measured within one run are what count.

Accuracy: top-1/top-5 on the evaluation split for the three files and for the integer
reference (`reference.run_int8`, numpy, slow: ~0.4 s per image), top-1 agreement with FP32 and
with the reference.

Targets (printed as PASS/FAIL, exit status 1 on a FAIL):
- speed: ours >= 1.8x faster than FP32 (median, at 1 and at 2 threads) and no slower than the
  peer (ours' median <= the peer's, at 1 and at 2 threads);
- accuracy: ours' top-1 equals the integer reference's within 0.25 pp (the same drop from FP32).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEEDUP_TARGET = 1.8
ACCURACY_TOLERANCE_PP = 0.25
THREADS = (1, 2)


from edgesqueeze.sysinfo import cpu_model  # noqa: E402
from timing import interleaved_ms  # noqa: E402  (benchmarks/timing.py)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_pixels(items, pre) -> np.ndarray:
    from edgesqueeze.data import load_pixels as load

    return load(items, pre)


def peer_quantize(fp32_path: Path, out_path: Path, calib_pixels: np.ndarray) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self, pixels):
            self._it = iter(pixels)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"pixels": x[None]}

    quantize_static(str(fp32_path), str(out_path), Reader(calib_pixels), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def load_real_setup(calib_images: int = 0, eval_images: int = 0):
    """(arch, FP32 torch model, calibration items, evaluation items, class names, labels CSV) of
    the real Deep-Compression v1.0 and the shared sample's split; 0 images: all of a split."""
    import torch

    from edgesqueeze.data import read_class_names, read_labels_csv, split_calibration
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.paths import default_labels_csv, default_synset_words, ensure_weights_env
    from edgesqueeze.weights import load_params

    torch.set_num_threads(2)
    ensure_weights_env()
    arch, params = load_params()
    model = SqueezeNet.from_params(arch, params)
    csv = default_labels_csv()
    calib, evals = split_calibration(read_labels_csv(csv))
    calib = calib[:calib_images] if calib_images else calib
    evals = evals[:eval_images] if eval_images else evals
    words = default_synset_words()
    labels = read_class_names(words) if words else [str(i) for i in range(arch.num_classes)]
    return arch, model, calib, evals, labels, csv


def output_dir(out_dir: Path | None, prefix: str):
    """(folder for the benchmark's files, TemporaryDirectory to clean up or None): `out_dir`
    (created) when given, else a temporary folder."""
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        return Path(tmp.name), tmp
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, None


def session(ort, path: Path, threads: int = 0):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def conv_ops(ort, path: Path) -> tuple[int, int]:
    """(integer convs, float convs) in onnxruntime's optimized graph of the file."""
    import onnx

    from edgesqueeze.export.onnx_verify import optimized_conv_ops

    with tempfile.TemporaryDirectory() as td:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(td) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        n_int, n_float, _ = optimized_conv_ops(onnx.load(so.optimized_model_filepath))
    return n_int, n_float


def run_all(sess, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([sess.run(None, {"pixels": pixels[i:i + batch]})[0] for i in range(0, len(pixels), batch)])


def session_runner(ort, path: Path, threads: int, x: np.ndarray):
    """One run of `path` on the batch `x` in its own session with `threads` intra-op threads: a
    callable for timing.interleaved_ms."""
    s = session(ort, path, threads)
    return lambda: s.run(None, {"pixels": x})


def measure_latency(ort, files: dict[str, Path], x: np.ndarray, *, rounds: int, iters: int, warmup: int) -> dict:
    """{(name, threads): [ms, ...]} from interleaved rounds (module doc)."""
    keys = [(name, t) for t in THREADS for name in files]
    return interleaved_ms({k: session_runner(ort, files[k[0]], k[1], x) for k in keys},
                          warmup=warmup, rounds=rounds, per_round=iters)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib-images", type=int, default=None,
                    help="calibration images: the first N of the calibration split (default: all of it, 194)")
    ap.add_argument("--eval-images", type=int, default=None,
                    help="evaluation images: the first N of the evaluation split (default: all of it, 406)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    ap.add_argument("--iters", type=int, default=15, help="runs per session per round (default 15)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up runs per session (default 10)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the three .onnx files here (default: a temp dir)")
    args = ap.parse_args(argv)
    for opt in ("calib_images", "eval_images"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            ap.error(f"--{opt.replace('_', '-')} must be at least 1")
    if args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        ap.error("--rounds and --iters must be at least 1, --warmup at least 0")

    import onnxruntime as ort

    from edgesqueeze.export.onnx import Target, to_onnx, to_onnx_fp32
    from edgesqueeze.formats.metadata import ModelMetadata
    from edgesqueeze.metrics import accuracy, agreement
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.reference import run_int8

    arch, model, calib, evals, labels, csv = load_real_setup(args.calib_images, args.eval_images)
    params = model.numpy_params()
    pre = arch.preprocess

    out_dir, tmp = output_dir(args.out_dir, "edgesqueeze-bench-")
    files = {"FP32": out_dir / "fp32.onnx", "INT8 ours (x86)": out_dir / "int8_ours_x86.onnx",
             "INT8 quantize_static": out_dir / "int8_ort_static.onnx"}
    FP32, OURS, PEER = files

    log(f"calibrating on {len(calib)} images (edgesqueeze) ...")
    t0 = time.perf_counter()
    qm = calibrate_and_quantize(model, calib, QuantizeOptions.make(), labels=labels)[0]  # (qm, stats[, model])
    t_calib = time.perf_counter() - t0
    meta = ModelMetadata(arch=arch.name, preprocess=pre, labels=tuple(labels))
    to_onnx_fp32(arch, params, files[FP32], metadata=meta)
    log("writing + verifying our INT8 file ...")
    report = to_onnx(qm, files[OURS], target=Target.X86)
    log(f"quantize_static on {len(calib)} images ...")
    calib_pixels = load_pixels(calib, pre)
    t0 = time.perf_counter()
    peer_quantize(files[FP32], files[PEER], calib_pixels)
    t_peer = time.perf_counter() - t0

    log(f"loading {len(evals)} evaluation images ...")
    eval_pixels = load_pixels(evals, pre)
    y = np.array([i.label for i in evals])

    log(f"latency: {args.rounds} rounds x {args.iters} runs x {len(files) * len(THREADS)} sessions ...")
    times = measure_latency(ort, files, eval_pixels[:1], rounds=args.rounds, iters=args.iters, warmup=args.warmup)

    log("accuracy: onnxruntime on the three files ...")
    scores = {name: run_all(session(ort, p, 2), eval_pixels) for name, p in files.items()}
    log(f"accuracy: integer reference on {len(evals)} images (numpy, slow) ...")
    t0 = time.perf_counter()
    ref_scores = np.concatenate([run_int8(qm, eval_pixels[i:i + 16]).logits for i in range(0, len(eval_pixels), 16)])
    t_ref = time.perf_counter() - t0
    REF = "integer reference"

    def stats(name, t):
        v = np.asarray(times[(name, t)])
        return float(np.median(v)), float(np.percentile(v, 90))

    results = {"cpu": cpu_model(), "onnxruntime": ort.__version__, "machine": platform.machine(),
               "calibration_images": len(calib), "evaluation_images": len(evals),
               "split": f"edgesqueeze.data.split_calibration of {csv}",
               "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
               "calibration_s": round(t_calib, 2), "quantize_static_s": round(t_peer, 2),
               "reference_s": round(t_ref, 2), "export_report": report.to_dict(), "models": {}}
    acc = {name: accuracy(name, s, y) for name, s in {**scores, REF: ref_scores}.items()}
    for name, path in files.items():
        n_int, n_float = conv_ops(ort, path)
        m = {"bytes": path.stat().st_size, "integer_convs": n_int, "float_convs": n_float, "top1": acc[name].top1, "top5": acc[name].top5,
             "agree_fp32": agreement(scores[name], scores[FP32]), "agree_reference": agreement(scores[name], ref_scores)}
        for t in THREADS:
            med, p90 = stats(name, t)
            m[f"t{t}_median_ms"], m[f"t{t}_p90_ms"] = med, p90
            m[f"t{t}_speedup_vs_fp32"] = stats(FP32, t)[0] / med
        results["models"][name] = m
    results["models"][REF] = {"top1": acc[REF].top1, "top5": acc[REF].top5,
                              "agree_fp32": agreement(ref_scores, scores[FP32]), "agree_reference": 100.0}

    # ---------------------------------------------------------------- report
    M = results["models"]
    print(f"CPU: {results['cpu']} ({platform.machine()}); onnxruntime {ort.__version__}; batch 1; "
          f"{args.rounds} interleaved rounds x {args.iters} runs per session after {args.warmup} warm-up runs")
    print(f"calibration: first {len(calib)} images of the calibration split; accuracy: {len(evals)} images "
          f"of the evaluation split ({csv})")
    print()
    hdr = ["model", "size KB", "int/float convs"]
    for t in THREADS:
        hdr += [f"{t} thr median ms", f"{t} thr p90 ms", f"{t} thr x FP32"]
    hdr += ["top-1 %", "top-5 %", "top-1 agree FP32 %", "top-1 agree ref %"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name in [*files, REF]:
        m = M[name]
        row = [name, f"{m['bytes'] / 1024:.0f}" if "bytes" in m else "-",
               f"{m['integer_convs']}/{m['float_convs']}" if "bytes" in m else "-"]
        for t in THREADS:
            if f"t{t}_median_ms" in m:
                row += [f"{m[f't{t}_median_ms']:.2f}", f"{m[f't{t}_p90_ms']:.2f}", f"{m[f't{t}_speedup_vs_fp32']:.2f}x"]
            else:
                row += ["-", "-", "-"]
        row += [f"{m['top1']:.2f}", f"{m['top5']:.2f}", f"{m['agree_fp32']:.2f}", f"{m['agree_reference']:.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    r = report
    print(f"our INT8 file: verified on {r.images} synthetic images: {100 * r.exact_match:.3f} % of head values "
          f"bit-exact, max {r.max_lsb_diff} LSB, top-1 agreement {100 * r.top1_agreement:.1f} %; onnxruntime runs "
          f"{r.integer_convs} convs as integer ops, {r.float_convs} float; optimized ops: {dict(r.optimized_ops)}")
    print()

    checks = []
    for t in THREADS:
        sp = M[OURS][f"t{t}_speedup_vs_fp32"]
        checks.append((f"ours >= {SPEEDUP_TARGET}x faster than FP32 at {t} thread(s)", sp >= SPEEDUP_TARGET, f"{sp:.2f}x"))
    for t in THREADS:
        o, p = M[OURS][f"t{t}_median_ms"], M[PEER][f"t{t}_median_ms"]
        checks.append((f"ours no slower than quantize_static at {t} thread(s)", o <= p,
                       f"{o:.2f} vs {p:.2f} ms ({p / o:.2f}x)"))
    d = M[OURS]["top1"] - M[REF]["top1"]
    checks.append((f"ours' top-1 = the integer reference's within {ACCURACY_TOLERANCE_PP} pp",
                   abs(d) <= ACCURACY_TOLERANCE_PP,
                   f"{M[OURS]['top1']:.2f} vs {M[REF]['top1']:.2f} % (drop from FP32: "
                   f"{M[FP32]['top1'] - M[OURS]['top1']:.2f} vs {M[FP32]['top1'] - M[REF]['top1']:.2f} pp)"))
    print("| target | result | measured |")
    print("|---|---|---|")
    for what, ok, val in checks:
        print(f"| {what} | {'PASS' if ok else 'FAIL'} | {val} |")
    results["targets"] = [{"target": w, "pass": bool(ok), "measured": v} for w, ok, v in checks]

    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
