"""FP32 vs INT8 TFLite on this machine: LiteRT latency, file size and accuracy, in one run.

    python benchmarks/tflite_latency.py [--rounds 20] [--per-round 5] [--warmup 10]
                                        [--eval-images N] [--json PATH] [--out DIR]

Steps (the real Deep-Compression SqueezeNet v1.0 from the shared weights):

1. calibrate (min/max, bias correction) on the whole calibration split of the shared ImageNet
   sample (`data.split_calibration`, the documented sha256 rule) and quantize (affine INT8);
2. write the FP32 .tflite (`to_tflite_fp32`) and the INT8 .tflite (`to_tflite`, verified
   against the integer reference on the first 16 evaluation-split images);
3. latency: LiteRT `Interpreter` (default XNNPACK delegate) with num_threads 1 and 2 for both
   files — four interpreters, warmed up, then `--rounds` rounds in which each interpreter runs
   `--per-round` single-image invocations, the order of the four rotating every round, so a
   slow period on a shared machine hits all four alike; median and p90 per invocation in ms;
4. accuracy on the evaluation split (the images not used for calibration; 406 of the 600):
   top-1/top-5 of the FP32 .tflite, the INT8 .tflite and the integer reference `run_int8`, the
   drops against FP32 and the top-1 agreements;
5. a SqueezeNet v1.1 INT8 file with random weights (`model.squeezenet1_1()`, min/max on 4
   calibration images, no bias correction), only to report its size.

Targets (PASS/FAIL in the table): INT8 >= 1.8x faster than FP32 at 1 thread (median); the v1.0
INT8 file <= 1.4 MB (1,400,000 bytes); the INT8 .tflite's top-1 within 0.25 pp of the integer
reference's (the runtime adds no error of its own). Exit status 0 only when all pass.
Ratios measured within one run are what count: absolute times depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEEDUP_TARGET = 1.8
SIZE_TARGET = 1_400_000
ACCURACY_TOLERANCE_PP = 0.25


from edgesqueeze.sysinfo import cpu_flags as sysinfo_cpu_flags, cpu_model  # noqa: E402
from timing import interleaved_ms  # noqa: E402  (benchmarks/timing.py)


def cpu_flags() -> str:
    """The CPU flags that matter for these kernels, space-separated."""
    flags = sysinfo_cpu_flags()
    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
                    if f in flags)


def run_logits(interp, images: np.ndarray) -> np.ndarray:
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    res = []
    for img in images:
        interp.set_tensor(inp, img[None])
        interp.invoke()
        res.append(interp.get_tensor(out)[0].copy())
    return np.stack(res)


def interpreter_runner(path: Path, threads: int, image: np.ndarray):
    """One single-image LiteRT invocation of `path` with `threads` threads, the input set once:
    a callable for timing.interleaved_ms."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], image[None])
    return it.invoke


def measure_latency(paths: dict[str, Path], threads: list[int], image: np.ndarray, *, warmup: int,
                    rounds: int, per_round: int) -> dict[str, dict]:
    runners = {f"{name} {t}t": interpreter_runner(path, t, image) for name, path in paths.items() for t in threads}
    times = interleaved_ms(runners, warmup=warmup, rounds=rounds, per_round=per_round)
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                "min_ms": float(np.min(v)), "runs": len(v)} for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    ap.add_argument("--per-round", type=int, default=5, help="invocations per interpreter per round (default 5)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up invocations per interpreter (default 10)")
    ap.add_argument("--eval-images", type=int, default=0, help="evaluate on the first N evaluation images (default: all)")
    ap.add_argument("--json", type=Path, help="write the results to this JSON file")
    ap.add_argument("--out", type=Path, help="keep the .tflite files in this folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if min(args.rounds, args.per_round) < 1 or args.warmup < 0 or args.eval_images < 0:
        ap.error("--rounds and --per-round must be >= 1, --warmup and --eval-images >= 0")

    import torch

    from edgesqueeze.data import load_pixels, read_class_names, read_labels_csv, split_calibration
    from edgesqueeze.export.tflite import fp32_metadata, runtime_version, to_tflite, to_tflite_fp32
    from edgesqueeze.metrics import accuracy, agreement, format_table
    from edgesqueeze.model import SqueezeNet, squeezenet1_1
    from edgesqueeze.paths import default_labels_csv, default_synset_words, ensure_weights_env
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.reference import run_int8
    from edgesqueeze.weights import load_params

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    ensure_weights_env()
    arch, params = load_params()
    model = SqueezeNet.from_params(arch, params)
    csv = default_labels_csv()
    calib, evals = split_calibration(read_labels_csv(csv))
    if args.eval_images:
        evals = evals[:args.eval_images]
    words = default_synset_words()
    labels = read_class_names(words) if words else []
    print(f"calibrating on {len(calib)} calibration-split images of {csv} ...", flush=True)
    qm = calibrate_and_quantize(model, calib, QuantizeOptions.make(), labels=labels)[0]

    print(f"preprocessing {len(evals)} evaluation-split images ...", flush=True)
    pixels = load_pixels(evals, arch.preprocess)
    truth = np.array([i.label for i in evals])

    tmpdir = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="edgesqueeze-bench-")
        out = Path(tmpdir.name)
    fp32_path, int8_path, v11_path = out / "squeezenet1_0_fp32.tflite", out / "squeezenet1_0_int8.tflite", out / "squeezenet1_1_random_int8.tflite"
    print("writing the FP32 and INT8 .tflite files ...", flush=True)
    r_fp32 = to_tflite_fp32(arch, params, fp32_path, metadata=fp32_metadata(arch, labels))
    r_int8 = to_tflite(qm, int8_path, verify_images=pixels[:16])

    torch.manual_seed(0)
    m11 = squeezenet1_1().eval()
    qm11 = calibrate_and_quantize(m11, calib[:4], QuantizeOptions.make(bias_correction=False), labels=labels)[0]
    try:
        r_v11 = to_tflite(qm11, v11_path)
        v11_size, v11_note = r_v11.bytes, f"verified on {r_v11.images} synthetic images"
    except Exception as e:  # noqa: BLE001 - report, do not stop the benchmark
        v11_size, v11_note = None, f"export failed: {e}"

    print(f"latency: {args.rounds} rounds x {args.per_round} invocations, threads 1 and 2 ...", flush=True)
    lat = measure_latency({"FP32": fp32_path, "INT8": int8_path}, [1, 2], pixels[0], warmup=args.warmup,
                          rounds=args.rounds, per_round=args.per_round)

    print("accuracy on the evaluation split ...", flush=True)
    from ai_edge_litert.interpreter import Interpreter

    s_fp32 = run_logits(Interpreter(model_path=str(fp32_path), num_threads=2), pixels)
    s_int8 = run_logits(Interpreter(model_path=str(int8_path), num_threads=2), pixels)
    s_ref = np.concatenate([run_int8(qm, pixels[i:i + 8]).logits for i in range(0, len(pixels), 8)])
    a_fp32 = accuracy("FP32 .tflite", s_fp32, truth)
    a_int8 = accuracy("INT8 .tflite", s_int8, truth)
    a_ref = accuracy("integer reference", s_ref, truth)

    speed1 = lat["FP32 1t"]["median_ms"] / lat["INT8 1t"]["median_ms"]
    speed2 = lat["FP32 2t"]["median_ms"] / lat["INT8 2t"]["median_ms"]
    ref_gap = abs(a_int8.top1 - a_ref.top1)
    checks = [
        ("INT8 speed-up vs FP32, 1 thread (median)", f">= {SPEEDUP_TARGET}x", f"{speed1:.2f}x", speed1 >= SPEEDUP_TARGET),
        ("v1.0 INT8 file size", f"<= {SIZE_TARGET:,} bytes", f"{r_int8.bytes:,} bytes", r_int8.bytes <= SIZE_TARGET),
        ("INT8 .tflite top-1 vs integer reference", f"within {ACCURACY_TOLERANCE_PP} pp",
         f"{a_int8.top1:.2f} % vs {a_ref.top1:.2f} % ({ref_gap:.2f} pp)", ref_gap <= ACCURACY_TOLERANCE_PP),
    ]

    print()
    print(f"CPU: {cpu_model()} ({cpu_flags()}), {len(os.sched_getaffinity(0))} cores available")
    print(f"LiteRT: ai-edge-litert {runtime_version()} (default XNNPACK delegate); Python {platform.python_version()}")
    print(f"evaluation: {len(evals)} evaluation-split images of {csv} (calibration: the other {len(calib)})")
    print(f"INT8 export verification: {r_int8.images} {r_int8.image_source} images, conv10 within 1 LSB "
          f"{100 * r_int8.lsb_match:.3f} % (max {r_int8.max_lsb_diff} LSB, bit-exact {100 * r_int8.exact_match:.3f} %), "
          f"top-1 agreement {100 * r_int8.top1_agreement:.1f} %")
    print()
    print("Latency per image (ms), interleaved:")
    print(format_table(["model", "threads", "median", "p90", "min", "runs"],
                       [[k.split()[0], k.split()[1][:-1], v["median_ms"], v["p90_ms"], v["min_ms"], v["runs"]]
                        for k, v in lat.items()]))
    print(f"\nspeed-up INT8 vs FP32: {speed1:.2f}x at 1 thread, {speed2:.2f}x at 2 threads")
    print()
    print("Files:")
    print(format_table(["file", "bytes", "MB"], [
        ["v1.0 FP32 .tflite", f"{r_fp32.bytes:,}", r_fp32.bytes / 1e6],
        ["v1.0 INT8 .tflite", f"{r_int8.bytes:,}", r_int8.bytes / 1e6],
        ["v1.1 INT8 .tflite (random weights)", "n/a" if v11_size is None else f"{v11_size:,}",
         float("nan") if v11_size is None else v11_size / 1e6],
    ], floatfmt=".3f"))
    if v11_size is None:
        print(f"(v1.1: {v11_note})")
    print()
    print(f"Accuracy on {len(evals)} evaluation-split images:")
    print(format_table(["model", "top-1 %", "top-5 %", "top-1 drop vs FP32 (pp)", "top-5 drop (pp)",
                        "top-1 agreement with FP32 %", "top-1 agreement with reference %"], [
        [a.name, a.top1, a.top5, a_fp32.top1 - a.top1, a_fp32.top5 - a.top5, agreement(s, s_fp32), agreement(s, s_ref)]
        for a, s in ((a_fp32, s_fp32), (a_int8, s_int8), (a_ref, s_ref))
    ]))
    print()
    print("Targets:")
    print(format_table(["target", "goal", "measured", "result"],
                       [[n, g, m, "PASS" if ok else "FAIL"] for n, g, m, ok in checks]))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")

    if args.json:
        doc = {
            "cpu": cpu_model(), "cpu_flags": cpu_flags(), "litert": runtime_version(),
            "latency_ms": lat, "speedup_1_thread": speed1, "speedup_2_threads": speed2,
            "bytes": {"v1.0_fp32": r_fp32.bytes, "v1.0_int8": r_int8.bytes, "v1.1_int8_random": v11_size},
            "accuracy": {"images": len(evals), "split": "evaluation (data.split_calibration)",
                         "fp32_tflite": a_fp32.to_dict(), "int8_tflite": a_int8.to_dict(),
                         "integer_reference": a_ref.to_dict(),
                         "int8_vs_fp32_agreement": agreement(s_int8, s_fp32),
                         "int8_vs_reference_agreement": agreement(s_int8, s_ref)},
            "int8_export": r_int8.to_dict(), "fp32_export": r_fp32.to_dict(),
            "targets": [{"target": n, "goal": g, "measured": m, "pass": ok} for n, g, m, ok in checks],
            "settings": {"rounds": args.rounds, "per_round": args.per_round, "warmup": args.warmup,
                         "calibration_images": len(calib)},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"results written to {args.json}")
    if tmpdir is not None:
        tmpdir.cleanup()
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
