"""Seconds and peak memory of each step of `pipeline.calibrate_and_quantize` on the real default.

    python benchmarks/calibration_stages.py [--quick] [--images N] [--threads 2] [--save-qm DIR] [--whole]

Model: the Deep-Compression SqueezeNet v1.0 from the shared weights; images: the calibration
split of the shared ImageNet sample (194 images; --quick: the first 16, --images N: the first N),
default options (`QuantizeOptions.make()`). The steps are run here one by one, as
calibrate_and_quantize runs them, and each gets one row: its wall time and the peak resident
memory while it ran. The peak of a step: the kernel's high-water mark (VmHWM) is reset to the
current RSS before the step by writing "5" to /proc/self/clear_refs and read from
/proc/self/status after it. Where clear_refs cannot be written, the row shows the process's
peak so far (ru_maxrss) instead, and the table says so.

--save-qm DIR writes the resulting QuantizedModel (`qm.save`: JSON + NPZ) so two versions of
the code can be compared parameter by parameter; --whole also runs calibrate_and_quantize
itself once and checks that it gives the same model as the steps.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from edgesqueeze.sysinfo import cpu_model

QUICK_IMAGES = 16


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return float("nan") if kb is None else kb / 1024.0


def reset_peak() -> bool:
    """Reset the kernel's high-water mark to the current RSS; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:  # no procfs: ru_maxrss is kB on Linux
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


class Stages:
    """Times steps and records the peak RSS of each."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []  # (stage, s, peak MB, RSS after MB)
        self.per_stage_peak = True

    def run(self, name: str, fn, *args, **kw):
        self.per_stage_peak &= reset_peak()
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        seconds = time.perf_counter() - t0
        self.rows.append((name, seconds, peak_mb(), rss_mb()))
        return out


def calibration_items(n: int | None):
    from edgesqueeze.data import read_labels_csv, split_calibration
    from edgesqueeze.errors import DataError
    from edgesqueeze.paths import shared_dir

    shared = shared_dir()
    if shared is None:
        raise DataError("no shared data folder: set EDGESQUEEZE_SHARED to the folder holding imagenet/ and weights/")
    calib, _ = split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))
    return calib if n is None else calib[:n]


def run_stages(model, items, options, labels, batch_size: int, stages: Stages):
    """The steps of calibrate_and_quantize, one stage each; returns (qm, fp32 model quantized)."""
    from dataclasses import replace

    from edgesqueeze.calibrate import collect_stats
    from edgesqueeze.data import DEFAULT_CALIBRATION_FRACTION, SPLIT_SALT, load_pixels
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import conv_input_statistics, quantize_from_stats
    from edgesqueeze.quant.empirical import empirical_bias_correction
    from edgesqueeze.quant.equalize import equalize
    from edgesqueeze.quant.params import Scheme

    stats = stages.run("statistics", collect_stats, model, items, batch_size=batch_size)
    cmax = {n: s.channel_max for n, s in stats.items() if s.channel_max is not None}
    params, _ = stages.run("equalization", equalize, model.arch, model.numpy_params(), cmax,
                           alpha=options.equalize, power_of_two=options.scheme is Scheme.RISTRETTO)
    model = SqueezeNet.from_params(model.arch, params)
    stats = stages.run("statistics (equalized)", collect_stats, model, items, batch_size=batch_size)

    def conv_inputs():
        pixels = load_pixels(items, model.arch.preprocess)
        return pixels, conv_input_statistics(model, pixels, batch_size=batch_size, patches=options.adaptive_rounding)

    pixels, conv_stats = stages.run("conv inputs (decode + FP32 pass)", conv_inputs)
    calibration = {"images": len(items),
                   "split": f"sha256('{SPLIT_SALT}' + name) < {DEFAULT_CALIBRATION_FRACTION:.4f}"}
    qm = stages.run("quantize (adaptive rounding)", quantize_from_stats, model, stats, options, labels=labels,
                    calibration=calibration, patch_moments=conv_stats.patch_moments)
    qm, shifts = stages.run("empirical bias correction", empirical_bias_correction, qm, pixels,
                            conv_stats.preactivation_means)
    qm = replace(qm, calibration={**qm.calibration, "empirical_bias_correction": True,
                                  "empirical_shift_mean_acc_steps": {k: round(v, 2) for k, v in shifts.items()}})
    return qm, model


def same_model(a, b) -> list[str]:
    """Names of what differs between two QuantizedModels (tensor parameters, int8 weights,
    weight scales, int32 biases); empty when they are identical."""
    import numpy as np

    diff = [f"tensor {n}" for n in a.tensors if a.tensors[n] != b.tensors.get(n)]
    for n, c in a.convs.items():
        d = b.convs[n]
        for key in ("weight", "weight_scale", "bias"):
            if not np.array_equal(getattr(c, key), getattr(d, key)):
                diff.append(f"{n}.{key}")
    return diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"the first {QUICK_IMAGES} calibration images only")
    ap.add_argument("--images", type=int, default=None, help="the first N calibration images (default: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per FP32 forward pass (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--save-qm", default=None, help="folder to write the QuantizedModel to (JSON + NPZ)")
    ap.add_argument("--whole", action="store_true", help="also run calibrate_and_quantize itself and compare")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch

    torch_s = time.perf_counter() - t0
    torch_rss = rss_mb()
    torch.set_num_threads(args.threads)

    from edgesqueeze.data import read_class_names
    from edgesqueeze.model import load_pretrained
    from edgesqueeze.paths import ensure_weights_env, shared_dir
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    ensure_weights_env()
    stages = Stages()
    stages.rows.append(("import torch", torch_s, peak_mb(), torch_rss))
    model = stages.run("load model", load_pretrained, "squeezenet1_0-dc")
    n = QUICK_IMAGES if args.quick and args.images is None else args.images
    items = calibration_items(n)
    labels = read_class_names(shared_dir() / "imagenet" / "synset_words.txt")
    options = QuantizeOptions.make()

    first = len(stages.rows)
    qm, _ = run_stages(model, items, options, labels, args.batch_size, stages)
    total_s = sum(r[1] for r in stages.rows[first:])
    total_peak = max(r[2] for r in stages.rows[first:])

    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} threads; "
          f"{len(items)} calibration images, batch {args.batch_size}")
    what = "peak RSS MB of the stage" if stages.per_stage_peak else "peak RSS MB so far (ru_maxrss; clear_refs not writable)"
    print()
    print(f"| stage | s | {what} | RSS after MB |")
    print("|---|---:|---:|---:|")
    for name, s, pk, after in stages.rows:
        print(f"| {name} | {s:.2f} | {pk:.0f} | {after:.0f} |")
    print(f"| **calibration steps, total** | **{total_s:.2f}** | **{total_peak:.0f}** | |")

    if args.save_qm:
        out = Path(args.save_qm)
        out.mkdir(parents=True, exist_ok=True)
        jpath, npath = qm.save(out / "squeezenet1_0-dc-affine")
        print(f"\nquantized model: {jpath}, {npath}")
    if args.whole:
        reset_peak()
        t0 = time.perf_counter()
        whole, _, _ = calibrate_and_quantize(model, items, options, labels=labels, batch_size=args.batch_size)
        s = time.perf_counter() - t0
        diff = same_model(qm, whole)
        print(f"\ncalibrate_and_quantize in one call: {s:.2f} s, peak RSS {peak_mb():.0f} MB; "
              + ("the same model as the steps" if not diff else f"DIFFERS from the steps in {', '.join(diff[:8])}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
