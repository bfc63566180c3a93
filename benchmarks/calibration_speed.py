"""How long calibration takes on this machine, and what the streaming observers cost.

    python benchmarks/calibration_speed.py [--images 500] [--batch-size 32] [--threads 2]

Loads the Deep-Compression SqueezeNet v1.0 (from the shared weights), takes N images of the
shared ImageNet sample (the calibration split first; when N is larger, the evaluation split
too, then the same images again — calibration/evaluation disjointness does not matter for a
speed measurement, and the script says which images it used), then times on the same images:

- reading + preprocessing alone,
- the plain FP32 forward pass (reading included, no observers),
- collect_stats (reading included, every tensor observed),
- choose_range for every tensor with each method,

and prints a markdown table with the target: calibrating 500 images in under 60 s.
"""

from __future__ import annotations

import argparse
import sys
import time


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=TARGET_IMAGES, help="number of images (default 500)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--bins", type=int, default=2048, help="histogram bins per tensor (default 2048)")
    args = ap.parse_args(argv)
    if args.images < 1 or args.batch_size < 1 or args.threads < 1:
        ap.error("--images, --batch-size and --threads must be at least 1")

    import torch

    from edgesqueeze.calibrate import Method, choose_ranges, collect_stats
    from edgesqueeze.data import load_image, normalize, to_uint8_input
    from edgesqueeze.evaluate import fp32_scores
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.paths import ensure_weights_env
    from edgesqueeze.weights import load_params

    torch.set_num_threads(args.threads)
    ensure_weights_env()
    arch, params = load_params()
    model = SqueezeNet.from_params(arch, params)
    items, desc = pick_images(args.images)
    print(f"images: {desc}")
    print(f"first: {items[0].path.name}, last: {items[-1].path.name}")

    pre = arch.preprocess
    with torch.no_grad():  # warm-up: one-time allocations and kernel selection stay out of the timings
        model(torch.zeros(args.batch_size, 3, pre.crop, pre.crop))

    t0 = time.perf_counter()
    for it in items:
        normalize(to_uint8_input(load_image(it.path), pre), pre)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    fp32_scores(model, items, batch_size=args.batch_size)
    t_fp32 = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = collect_stats(model, items, batch_size=args.batch_size, bins=args.bins)
    t_calib = time.perf_counter() - t0

    t_methods, ranges = {}, {}
    for m in Method:
        t0 = time.perf_counter()
        ranges[m] = choose_ranges(stats, m)
        t_methods[m] = time.perf_counter() - t0

    values = sum(s.count for s in stats.values())
    n = len(items)
    rows = [
        ("CPU", cpu_model()),
        ("torch", f"{torch.__version__}, {args.threads} threads"),
        ("images", f"{n} (batch {args.batch_size})"),
        ("tensors observed", f"{len(stats)} ({values / n / 1e6:.2f} M values per image, {args.bins} bins)"),
        ("read + preprocess only", f"{t_load:.2f} s"),
        ("FP32 forward (incl. reading), no observers", f"{t_fp32:.2f} s ({n / t_fp32:.1f} images/s)"),
        ("calibration: collect_stats (incl. reading)", f"{t_calib:.2f} s ({n / t_calib:.1f} images/s)"),
        ("observer overhead", f"{t_calib - t_fp32:.2f} s, x{t_calib / t_fp32:.2f} of the FP32 pass"),
    ]
    rows += [(f"choose_range, {m.value}, all {len(stats)} tensors", f"{t_methods[m] * 1000:.1f} ms") for m in Method]
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
    projected = t_calib * TARGET_IMAGES / n
    verdict = "PASS" if projected < TARGET_S else "FAIL"
    note = "" if n == TARGET_IMAGES else f" (projected from {n} images: {projected:.1f} s)"
    print(f"target: < {TARGET_S:.0f} s for {TARGET_IMAGES} images: {verdict} — {t_calib:.1f} s for {n}{note}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
