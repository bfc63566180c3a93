"""`edgesqueeze classify`, `bench` and `pack`: what a board does with an exported file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..sysinfo import cpu_model, usable_cores
from .common import _non_negative, _positive, _write_json

CLASSIFY_EXAMPLES = """examples:
  edgesqueeze classify export/squeezenet1_0-affine-int8.tflite kitten.jpg --top-k 3
  edgesqueeze classify export/squeezenet1_0-affine-int8.onnx *.jpg --json
  edgesqueeze bench export/*.tflite export/*.onnx --threads 1 4 --runs 100
  edgesqueeze eval --split eval --models export/squeezenet1_0-affine-int8.tflite export/squeezenet1_0-affine-int8.onnx
"""

def cmd_classify(args) -> int:
    """Top-k classes of each image. An unreadable image is an error line on stderr (and an
    "error" entry with --json) while the others still run and print; the exit code is then 2,
    the code of every user error (run_command), as for a bad model file."""
    from ..data import load_image
    from ..errors import DataError
    from ..runtime import Classifier

    import numpy as np

    clf = Classifier.load(args.model, threads=args.threads)
    clf.logits(np.zeros((clf.input_size, clf.input_size, 3), np.uint8))  # warm-up: the times shown are steady-state
    results, failed = [], 0
    for img in args.images:
        try:
            classes = clf.classify(load_image(img), top_k=args.top_k)
        except DataError as e:
            failed += 1
            print(f"edgesqueeze classify: error: {e}", file=sys.stderr)
            results.append({"image": str(img), "error": str(e)})
            continue
        results.append({"image": str(img), "inference_ms": round(clf.last_inference_ms, 3),
                        "top": [c.to_dict() for c in classes]})
        if not args.json:
            print(f"{img}  ({clf.path.name}, {clf.backend.value} {clf.runtime_version}, {clf.threads} threads, "
                  f"{clf.last_inference_ms:.1f} ms)")
            for k, c in enumerate(classes, 1):
                print(f"  {k}. {100 * c.score:6.2f} %  {c.label}  [{c.index}]")
    if args.json:
        print(json.dumps({"model": str(clf.path), "backend": clf.backend.value,
                          "runtime_version": clf.runtime_version, "threads": clf.threads,
                          "results": results}, indent=2))
    return 2 if failed else 0


def cmd_pack(args) -> int:
    """Write the update bundle of one model file (export/bundle.py): atomic, verified."""
    from ..export.bundle import pack

    info = pack(args.model, args.out)
    print(f"{args.model}: {info.model_bytes:,} bytes")
    print(f"{info.path}: {info.bundle_bytes:,} bytes ({100 * info.ratio:.1f} % of the model, codec {info.codec})")
    print(f"sha256 of {info.name}: {info.sha256}")
    return 0


_RSS_CHILD = """
import resource, sys
import numpy as np
from edgesqueeze.runtime import Classifier
from edgesqueeze.data import load_image
clf = Classifier.load(sys.argv[1], threads=int(sys.argv[2]))
img = load_image(sys.argv[3]) if sys.argv[3] else np.full((300, 400, 3), 128, np.uint8)
for _ in range(int(sys.argv[4])):
    clf.classify(img)
kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux; kept across exec from a big parent
try:  # VmHWM: this process image's own peak (Linux)
    kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    pass
print("RSS", kb)
"""


def _child_peak_rss_kb(model: Path, threads: int, image: Path | None, runs: int) -> int | None:
    """Peak RSS in KB of a fresh interpreter that imports the runtime, loads one model and
    classifies `runs` frames: what that model costs in a process of its own. Linux: VmHWM from
    /proc/self/status (ru_maxrss survives the exec, so a child of a big process reports the
    parent's peak); elsewhere resource.getrusage's ru_maxrss."""
    import subprocess

    try:
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(model), str(threads), str(image or ""), str(runs)],
                           capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in r.stdout.splitlines():
        if line.startswith("RSS "):
            return int(line.split()[1])
    return None


def _bench_image():
    """(BGR frame, description): the shared kitten if present, else a fixed synthetic image."""
    import numpy as np

    from .. import paths
    from ..data import load_image

    shared = paths.shared_dir()
    kitten = shared / "images" / "kitten.jpg" if shared else None
    if kitten is not None and kitten.is_file():
        return load_image(kitten), kitten
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(coarse, (400, 300), interpolation=cv2.INTER_LINEAR), None


def cmd_bench(args) -> int:
    """Inference time of each model file at each thread count, measured side by side."""
    import os
    import time

    import numpy as np

    from ..metrics import format_table
    from ..runtime import Classifier
    from ..timing import SETTLE_S

    threads = list(dict.fromkeys(args.threads or [1, usable_cores()]))  # as Classifier.load's default
    models = [Path(m) for m in args.models]
    runs = [(m, t, Classifier.load(m, threads=t)) for t in threads for m in models]  # every file checked first
    frame, image = _bench_image()
    pixels = [clf.preprocess(frame) for _, _, clf in runs]
    for (_, _, clf), x in zip(runs, pixels):  # warm-up, each model in turn
        for _ in range(args.warmup):
            clf.logits(x)
    # Rounds: each row waits timing.SETTLE_S (the previous row's onnxruntime threads stop
    # spinning: timing.py says what they cost the next row), runs one untimed inference (caches
    # and its own thread pool warm again after the switch), then a block of timed ones; the order
    # rotates every round. Slow drift (other load, a board's thermal throttling) then hits every
    # row alike, and each block is timed as a camera loop runs: the same model back to back.
    block = min(10, max(1, args.runs // 10))
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    r = 0
    while len(times[0]) < args.runs:
        k = r % len(order)
        n = min(block, args.runs - len(times[0]))
        for i in order[k:] + order[:k]:
            clf = runs[i][2]
            time.sleep(SETTLE_S)
            clf.logits(pixels[i])
            for _ in range(n):
                clf.logits(pixels[i])
                times[i].append(clf.last_inference_ms)
        r += 1
    rss = {}
    if not args.no_rss:
        for m, t, _ in runs:
            rss[(m, t)] = _child_peak_rss_kb(m, t, image, max(1, args.warmup))

    versions = {}
    for _, _, clf in runs:
        versions.setdefault(clf.backend.value, clf.runtime_version)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, {usable_cores()} usable by this process); "
          f"numpy {np.__version__}; "
          + ", ".join(f"{b} {v}" for b, v in versions.items()))
    print(f"input: {image if image else 'synthetic 400x300 image'}; {args.runs} timed runs per row after "
          f"{args.warmup} warm-up, rows interleaved in rounds of {block} (each after a {SETTLE_S} s pause and one "
          f"untimed run); threads: {', '.join(map(str, threads))}")
    rows, report = [], []
    for (m, t, clf), ts in zip(runs, times):
        a = np.asarray(ts)
        med, p90 = float(np.median(a)), float(np.percentile(a, 90))
        kb = rss.get((m, t))
        rows.append([m.name, f"{clf.backend.value} {clf.runtime_version}", t, med, p90,
                     1000.0 / med if med > 0 else float("nan"), f"{m.stat().st_size / 1024:.0f}",
                     f"{kb / 1024:.0f}" if kb else "n/a"])
        report.append({"file": str(m), "backend": clf.backend.value, "runtime_version": clf.runtime_version,
                       "threads": t, "median_ms": med, "p90_ms": p90, "fps": rows[-1][5],
                       "bytes": m.stat().st_size, "peak_rss_kb": kb})
    print(format_table(["model", "runtime", "threads", "median ms", "p90 ms", "FPS", "file KB",
                        "peak RSS MB"], rows))
    if not args.no_rss:
        print("peak RSS: of a separate process that loads only that model and classifies "
              f"{max(1, args.warmup)} frames (Python, numpy, OpenCV and the runtime included)")
    if args.report:
        _write_json(args.report, {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
                                  "runtimes": versions,
                                  "image": str(image) if image else "synthetic", "runs": args.runs,
                                  "warmup": args.warmup, "results": report})
        print(f"report: {args.report}")
    return 0



def add_parsers(sub) -> None:
    c = sub.add_parser("classify", help="top-k classes of images with an exported .onnx/.tflite file",
                       epilog=CLASSIFY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("model", help="a .onnx or .tflite file written by `edgesqueeze quantize`")
    c.add_argument("images", nargs="+", metavar="IMG", help="image files")
    c.add_argument("--top-k", type=_positive, default=5, help="classes per image (default 5)")
    c.add_argument("--threads", type=_positive, default=None, help="runtime threads (default: all cores)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.set_defaults(func=cmd_classify)

    b = sub.add_parser("bench", help="inference time of exported files, side by side",
                       epilog=CLASSIFY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("models", nargs="+", metavar="MODEL", help=".onnx / .tflite files")
    b.add_argument("--threads", type=_positive, nargs="+", default=None,
                   help="thread counts to measure (default: 1 and all cores)")
    b.add_argument("--runs", type=_positive, default=100, help="timed runs per model and thread count (default 100)")
    b.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs first (default 10)")
    b.add_argument("--no-rss", action="store_true", help="skip the peak-RSS measurement (a process per row)")
    b.add_argument("--report", help="write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)

    pk = sub.add_parser("pack", help="compress a .tflite/.onnx file into a checked update bundle (.esq)")
    pk.add_argument("model", help="a .onnx or .tflite file written by `edgesqueeze quantize`")
    pk.add_argument("-o", "--out", default=None, help="the bundle to write (default: MODEL.esq); never the model itself")
    pk.set_defaults(func=cmd_pack)

