"""How long calibration takes on this machine, and what the streaming observers cost.

    python benchmarks/calibration_speed.py [--images 500] [--batch-size 32] [--threads 2] [--pipeline]

Loads the Deep-Compression SqueezeNet v1.0 (from the shared weights), takes N images of the
shared ImageNet sample (the calibration split first; when N is larger, the evaluation split
too, then the same images again — calibration/evaluation disjointness does not matter for a
speed measurement, and the script says which images it used), then times on the same images:

- reading + preprocessing alone,
- the plain FP32 forward pass (reading included, no observers),
- collect_stats (reading included, every tensor observed),
- choose_range for every tensor with each method,
- with --pipeline, the whole calibrate_and_quantize with the default options (equalization
  makes it calibrate twice: what `edgesqueeze quantize` waits for),

and prints a markdown table with the target: calibrating 500 images in under 60 s (collect_stats).
`measure()` does the timing; benchmarks/run.py calls it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass


TARGET_S = 60.0
TARGET_IMAGES = 500


from edgesqueeze.sysinfo import cpu_model  # noqa: E402


def pick_images(n: int):
    """(items, description): the first n of calibration split + evaluation split, cycled."""
    from edgesqueeze.data import read_labels_csv, split_calibration
    from edgesqueeze.paths import default_labels_csv

    csv = default_labels_csv()
    calib, evals = split_calibration(read_labels_csv(csv))
    if n <= len(calib):
        return calib[:n], f"the first {n} of the {len(calib)} calibration-split images of {csv}"
    pool = calib + evals
    items = [pool[i % len(pool)] for i in range(n)]
    desc = (f"N={n} > the calibration split's {len(calib)} images of {csv}: all {len(calib)} "
            f"calibration images, then {min(n, len(pool)) - len(calib)} of the {len(evals)} evaluation images")
    if n > len(pool):
        desc += f", then the same {len(pool)} images again from the start ({n - len(pool)} repeats)"
    return items, desc


@dataclass(frozen=True)
class CalibrationTiming:
    """Seconds for one run of `measure` (None: not measured in that run)."""

    images: int
    description: str  # which images (pick_images)
    batch_size: int
    threads: int  # torch threads
    bins: int
    tensors: int  # tensors observed
    values_per_image: float  # values observed per image
    collect_s: float  # collect_stats, every tensor observed, reading included
    load_s: float | None = None  # reading + preprocessing alone
    fp32_s: float | None = None  # the plain FP32 forward pass, reading included
    choose_ms: tuple[tuple[str, float], ...] = ()  # (method, ms) of choose_ranges over every tensor
    pipeline_s: float | None = None  # calibrate_and_quantize with QuantizeOptions.make()'s defaults
    pipeline_passes: int | None = None  # passes over the images it made (equalization calibrates twice)

    def per_target(self, seconds: float) -> float:
        """`seconds` scaled to TARGET_IMAGES images (the target is stated for 500)."""
        return seconds * TARGET_IMAGES / self.images

    def to_dict(self) -> dict:
        d = asdict(self)
        d["choose_ms"] = dict(self.choose_ms)
        return d


def measure(model, items, *, description: str = "", batch_size: int = 32, threads: int = 2, bins: int = 2048,
            baseline: bool = True, methods: bool = True, pipeline: bool = False):
    """(CalibrationTiming, stats, {Method: ranges}) for calibrating `model` on `items`.

    Always times collect_stats (reading included); `baseline`: also reading alone and the plain
    FP32 pass, `methods`: choose_ranges with every method, `pipeline`: the whole
    calibrate_and_quantize with the default options (what `edgesqueeze quantize` runs)."""
    import torch

    from edgesqueeze.calibrate import Method, choose_ranges, collect_stats
    from edgesqueeze.data import load_image, normalize, to_uint8_input
    from edgesqueeze.evaluate import fp32_scores
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    torch.set_num_threads(threads)
    pre = model.arch.preprocess
    with torch.no_grad():  # warm-up: one-time allocations and kernel selection stay out of the timings
        model(torch.zeros(batch_size, 3, pre.crop, pre.crop))

    t_load = t_fp32 = t_pipe = passes = None
    if baseline:
        t0 = time.perf_counter()
        for it in items:
            normalize(to_uint8_input(load_image(it.path), pre), pre)
        t_load = time.perf_counter() - t0

        t0 = time.perf_counter()
        fp32_scores(model, items, batch_size=batch_size)
        t_fp32 = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = collect_stats(model, items, batch_size=batch_size, bins=bins)
    t_calib = time.perf_counter() - t0

    t_methods, ranges = {}, {}
    for m in (Method if methods else ()):
        t0 = time.perf_counter()
        ranges[m] = choose_ranges(stats, m)
        t_methods[m.value] = (time.perf_counter() - t0) * 1000.0

    if pipeline:
        seen = []  # images it read, counted through its progress callback: passes = seen / images
        t0 = time.perf_counter()
        calibrate_and_quantize(model, items, QuantizeOptions.make(), batch_size=batch_size, progress=seen.append)
        t_pipe = time.perf_counter() - t0
        passes = sum(seen) // len(items)

    values = sum(s.count for s in stats.values())
    timing = CalibrationTiming(images=len(items), description=description, batch_size=batch_size, threads=threads,
                               bins=bins, tensors=len(stats), values_per_image=values / len(items),
                               collect_s=t_calib, load_s=t_load, fp32_s=t_fp32, choose_ms=tuple(t_methods.items()),
                               pipeline_s=t_pipe, pipeline_passes=passes)
    return timing, stats, ranges


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=TARGET_IMAGES, help="number of images (default 500)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--bins", type=int, default=2048, help="histogram bins per tensor (default 2048)")
    ap.add_argument("--pipeline", action="store_true",
                    help="also time the whole calibrate_and_quantize with the default options")
    args = ap.parse_args(argv)
    if args.images < 1 or args.batch_size < 1 or args.threads < 1:
        ap.error("--images, --batch-size and --threads must be at least 1")

    import torch

    from edgesqueeze.calibrate import Method
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.paths import ensure_weights_env
    from edgesqueeze.weights import load_params

    ensure_weights_env()
    arch, params = load_params()
    model = SqueezeNet.from_params(arch, params)
    items, desc = pick_images(args.images)
    print(f"images: {desc}")
    print(f"first: {items[0].path.name}, last: {items[-1].path.name}")

    t, stats, ranges = measure(model, items, description=desc, batch_size=args.batch_size, threads=args.threads,
                               bins=args.bins, pipeline=args.pipeline)
    t_load, t_fp32, t_calib, t_methods = t.load_s, t.fp32_s, t.collect_s, dict(t.choose_ms)

    n = len(items)
    rows = [
        ("CPU", cpu_model()),
        ("torch", f"{torch.__version__}, {args.threads} threads"),
        ("images", f"{n} (batch {args.batch_size})"),
        ("tensors observed", f"{t.tensors} ({t.values_per_image / 1e6:.2f} M values per image, {args.bins} bins)"),
        ("read + preprocess only", f"{t_load:.2f} s"),
        ("FP32 forward (incl. reading), no observers", f"{t_fp32:.2f} s ({n / t_fp32:.1f} images/s)"),
        ("calibration: collect_stats (incl. reading)", f"{t_calib:.2f} s ({n / t_calib:.1f} images/s)"),
        ("observer overhead", f"{t_calib - t_fp32:.2f} s, x{t_calib / t_fp32:.2f} of the FP32 pass"),
    ]
    rows += [(f"choose_range, {m.value}, all {len(stats)} tensors", f"{t_methods[m.value]:.1f} ms") for m in Method]
    if t.pipeline_s is not None:
        rows.append((f"calibrate_and_quantize, default options ({t.pipeline_passes} passes, quantizing included)",
                     f"{t.pipeline_s:.2f} s ({n / t.pipeline_s:.1f} images/s)"))
    print()
    print("| measure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")

    print()
    shown = [k for k in ("conv1", "fire2.squeeze", "fire5.concat", "fire9.concat", "conv10", "logits") if k in stats]
    print("| tensor | min | max | " + " | ".join(m.value for m in Method) + " |")
    print("|---|---|---|" + "---|" * len(Method))
    for k in shown:
        s = stats[k]
        cells = [f"{ranges[m][k][0]:.3g}..{ranges[m][k][1]:.4g}" for m in Method]
        print(f"| {k} | {s.min:.4g} | {s.max:.4g} | " + " | ".join(cells) + " |")

    print()
    # the target is for 500 images: scale a run of another size to 500
    projected = t.per_target(t_calib)
    verdict = "PASS" if projected < TARGET_S else "FAIL"
    note = "" if n == TARGET_IMAGES else f" (projected from {n} images: {projected:.1f} s)"
    print(f"target: < {TARGET_S:.0f} s for {TARGET_IMAGES} images: {verdict} — {t_calib:.1f} s for {n}{note}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
