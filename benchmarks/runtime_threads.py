"""What thread safety costs: one `Classifier` shared by several threads, measured on this machine.

    python benchmarks/runtime_threads.py [--out DIR]          # the real v1.0 INT8, made in this run
    python benchmarks/runtime_threads.py --models export/squeezenet1_0-affine-int8.tflite \\
        export/squeezenet1_0-affine-int8.onnx [--rounds 30] [--per-round 10] [--calls 40]

A .tflite Classifier serializes its calls (a lock around each run: LiteRT's interpreter is not
re-entrant); a .onnx one does not (onnxruntime runs concurrent calls in one session). Two
measurements per file, every Classifier with 1 runtime thread, the input preprocessed once:

1. latency of one thread, with the lock and without it (a second Classifier of the same file
   whose lock is replaced by a no-op: safe here, only one thread calls it): `timing.interleaved_ms`
   runs the two in rounds whose order rotates; median and p90 of `--rounds` x `--per-round`
   calls each;
2. throughput of THREADS (4) threads making `--calls` calls each: through one shared Classifier,
   through one Classifier per thread (an interpreter or session each), and of one thread alone
   for reference; inferences per second over the wall time of each run, the three variants
   alternating for `--repeats` runs; the median.

Without --models the real Deep-Compression v1.0 is quantized (affine INT8, min/max ranges from
32 calibration-split images; the files' operators and shapes are those of `edgesqueeze
quantize`'s, which is what latency depends on) and exported to both formats in a temporary
folder: that needs torch and the shared data. Timings depend on what else runs: compare rows
of one run, and quote medians with the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py

from timing import interleaved_ms  # noqa: E402

THREADS = 4


def make_models(out: Path) -> list[Path]:
    """The real v1.0, affine INT8, exported to .tflite and .onnx (x86 target) in `out`."""
    from edgesqueeze import paths
    from edgesqueeze.data import read_class_names, read_labels_csv, split_calibration
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.model import load_pretrained
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    shared = paths.shared_dir()
    if shared is None:
        raise SystemExit("no shared data folder: set EDGESQUEEZE_SHARED, or pass --models FILE...")
    paths.ensure_weights_env()
    calib, _ = split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))
    options = QuantizeOptions.make(empirical_bias_correction=False, adaptive_rounding=False)
    labels = read_class_names(shared / "imagenet" / "synset_words.txt")
    qm, _, _ = calibrate_and_quantize(load_pretrained("squeezenet1_0-dc"), calib[:32], options, labels=labels)
    files = [out / "squeezenet1_0-affine-int8.tflite", out / "squeezenet1_0-affine-int8.onnx"]
    to_tflite(qm, files[0])
    to_onnx(qm, files[1])
    return files


def frame() -> np.ndarray:
    """The shared kitten if there is one, else a fixed smooth synthetic frame."""
    from edgesqueeze import paths
    from edgesqueeze.data import load_image

    shared = paths.shared_dir()
    if shared is not None and (shared / "images" / "kitten.jpg").is_file():
        return load_image(shared / "images" / "kitten.jpg")
    import cv2

    coarse = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (400, 300), interpolation=cv2.INTER_LINEAR)


def unlocked(clf):
    """The same Classifier with its lock replaced by a no-op: for one thread only."""
    clf._run_lock = contextlib.nullcontext()
    return clf


def lock_cost_us(n: int = 100_000, repeats: int = 9) -> float:
    """What the lock adds to a call that finds it free: one acquire and release, median in us."""
    lock = threading.Lock()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            with lock:
                pass
        times.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(times))


def run_threads(clfs: list, pixels: np.ndarray, calls: int) -> float:
    """Inferences per second of len(clfs) threads, thread i calling clfs[i] `calls` times."""
    start = threading.Barrier(len(clfs) + 1)

    def work(clf):
        start.wait()
        for _ in range(calls):
            clf.logits(pixels)

    threads = [threading.Thread(target=work, args=(c,)) for c in clfs]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return len(clfs) * calls / (time.perf_counter() - t0)


def measure(path: Path, image: np.ndarray, args) -> dict:
    from edgesqueeze.runtime import Classifier

    locked = Classifier.load(path, threads=1)
    pixels = locked.preprocess(image)
    serialized = not isinstance(locked._run_lock, contextlib.nullcontext)
    runners = {"lock": lambda: locked.logits(pixels)}
    if serialized:
        bare = unlocked(Classifier.load(path, threads=1))
        runners["no lock"] = lambda: bare.logits(pixels)
    ms = interleaved_ms(runners, warmup=args.warmup, rounds=args.rounds, per_round=args.per_round)

    own = [Classifier.load(path, threads=1) for _ in range(THREADS)]
    for c in own:
        c.logits(pixels)
    variants = {"1 thread, 1 Classifier": [locked],
                f"{THREADS} threads, 1 shared Classifier": [locked] * THREADS,
                f"{THREADS} threads, 1 Classifier each": own}
    ips: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        keys = list(variants)
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # the order rotates, as in timing.py
            ips[k].append(run_threads(variants[k], pixels, args.calls))
    return {"file": path, "backend": f"{locked.backend.value} {locked.runtime_version}", "serialized": serialized,
            "latency": {k: (float(np.median(v)), float(np.percentile(v, 90)), len(v)) for k, v in ms.items()},
            "throughput": {k: float(np.median(v)) for k, v in ips.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, help="exported .tflite/.onnx files (default: make the real "
                   "v1.0 INT8 in both formats)")
    p.add_argument("--out", type=Path, help="without --models: keep the files made in this folder (default: a "
                   "temporary one)")
    p.add_argument("--rounds", type=int, default=30, help="latency: rounds (default 30)")
    p.add_argument("--per-round", type=int, default=10, help="latency: calls per runner per round (default 10)")
    p.add_argument("--warmup", type=int, default=10, help="latency: untimed calls first (default 10)")
    p.add_argument("--calls", type=int, default=40, help="throughput: calls per thread (default 40)")
    p.add_argument("--repeats", type=int, default=9, help="throughput: runs of each variant (default 9)")
    args = p.parse_args(argv)

    from edgesqueeze.metrics import format_table
    from edgesqueeze.sysinfo import cpu_model, usable_cores

    with tempfile.TemporaryDirectory(prefix="edgesqueeze-threads-") as td:
        out = args.out or Path(td)
        if args.out:
            out.mkdir(parents=True, exist_ok=True)
        models = args.models or make_models(out)
        image = frame()
        results = [measure(m, image, args) for m in models]

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, {usable_cores()} usable by this process; "
          f"load average {os.getloadavg()[0]:.1f} at the end); numpy {np.__version__}; every Classifier with "
          f"1 runtime thread; an uncontended lock acquire + release: {lock_cost_us():.3f} us (median)")
    print(f"\nlatency of one thread, ms (median, p90 of {args.rounds} x {args.per_round} calls, lock and no lock "
          "interleaved):")
    rows = []
    for r in results:
        for k, (med, p90, _) in r["latency"].items():
            rows.append([r["file"].name, r["backend"], k, f"{med:.3f}", f"{p90:.3f}"])
        if r["serialized"]:
            lock, bare = r["latency"]["lock"][0], r["latency"]["no lock"][0]
            rows.append([r["file"].name, "", "lock - no lock", f"{1000 * (lock - bare):+.1f} us",
                         f"{100 * (lock - bare) / bare:+.1f} %"])
        else:
            rows[-1][2] = "none (calls not serialized)"
    print(format_table(["model", "runtime", "lock", "median ms", "p90 ms"], rows))
    print(f"\nthroughput (median of {args.repeats} runs of {args.calls} calls per thread):")
    rows = [[r["file"].name, k, f"{v:.1f}", f"{v / r['throughput']['1 thread, 1 Classifier']:.2f}"]
            for r in results for k, v in r["throughput"].items()]
    print(format_table(["model", "variant", "inferences/s", "x one thread"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
