"""Seconds and peak memory of each step of `pipeline.calibrate_and_quantize` on the real default.

    python benchmarks/calibration_stages.py [--quick] [--images N] [--threads 2] [--save-qm DIR]

Model: the Deep-Compression SqueezeNet v1.0 from the shared weights; images: the calibration
split of the shared ImageNet sample (194 images; --quick: the first 16, --images N: the first N),
default options (`QuantizeOptions.make()`). calibrate_and_quantize runs once, as the main job
calls it, and its `on_pass` callback cuts it into stages: each pass over the images (from its
first call, images_done = 0, to its last, images_done = images_total) and the work between
passes (equalization; the ranges and adaptive rounding of quantize_from_stats). Each stage gets
one row: its wall time and the peak resident memory while it ran. The peak of a stage: the
kernel's high-water mark (VmHWM) is reset to the current RSS when the stage starts by writing
"5" to /proc/self/clear_refs, and read from /proc/self/status when it ends. Where clear_refs
cannot be written, the row shows the process's peak so far (ru_maxrss) instead, and the table
says so. The reset also lowers what getrusage and `/usr/bin/time -v` report as the process's
maximum RSS (they then see the last stage's peak only): the bold total row is the peak of the
whole run.

--save-qm DIR writes the resulting QuantizedModel (`qm.save`: JSON + NPZ); --compare FILE.json
compares it with one saved before (e.g. by another version of the code): tensor parameters,
int8 weights, weight scales, int32 biases, and the calibration record of the JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgesqueeze import sysinfo
from edgesqueeze.sysinfo import cpu_model

QUICK_IMAGES = 16


def rss_mb() -> float:
    mb = sysinfo.rss_mb()
    return float("nan") if mb is None else mb


def peak_mb() -> float:
    mb = sysinfo.peak_rss_mb()
    return float("nan") if mb is None else mb


class Stages:
    """Times stages and records the peak RSS of each."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []  # (stage, s, peak MB, RSS after MB)
        self.per_stage_peak = True
        self._open: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self.stop()
        self.per_stage_peak &= sysinfo.reset_peak_rss()
        self._open = (name, time.perf_counter())

    def stop(self) -> None:
        if self._open is not None:
            name, t0 = self._open
            self.rows.append((name, time.perf_counter() - t0, peak_mb(), rss_mb()))
            self._open = None

    def run(self, name: str, fn, *args, **kw):
        self.start(name)
        out = fn(*args, **kw)
        self.stop()
        return out


# what runs after each pass of calibrate_and_quantize with the default options, until the next
AFTER_PASS = {"statistics": "equalization", "empirical bias correction": "finish"}
AFTER_LAST_FP32_PASS = "quantize (ranges, adaptive rounding)"


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
    """calibrate_and_quantize, one stage per pass and per stretch between passes; (qm, model)."""
    from edgesqueeze.pipeline import calibrate_and_quantize

    current = []

    def on_pass(name: str, done: int, total: int) -> None:
        if current[-1:] != [name]:
            current.append(name)
            stages.start(name)
        if done == total:
            stages.start(AFTER_PASS.get(name, AFTER_LAST_FP32_PASS))

    stages.start("setup")
    qm, _, fp32 = calibrate_and_quantize(model, items, options, labels=labels, batch_size=batch_size,
                                         on_pass=on_pass)
    stages.stop()
    return qm, fp32


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
    ap.add_argument("--compare", default=None, help="a QuantizedModel JSON to compare the result with")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch

    torch_s = time.perf_counter() - t0
    torch_rss = rss_mb()
    torch.set_num_threads(args.threads)

    from edgesqueeze.data import read_class_names
    from edgesqueeze.model import load_pretrained
    from edgesqueeze.paths import ensure_weights_env, shared_dir
    from edgesqueeze.pipeline import QuantizeOptions

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
    if args.compare:
        from edgesqueeze.quant.params import QuantizedModel

        other = QuantizedModel.load(args.compare)
        diff = same_model(qm, other)
        diff += [f"calibration[{k!r}]" for k in sorted(set(qm.calibration) | set(other.calibration))
                 if qm.calibration.get(k) != other.calibration.get(k)]
        print(f"\nagainst {args.compare}: " + ("identical" if not diff else "DIFFERS in " + ", ".join(diff)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
