"""Quantization options compared by two-fold cross-validation on the calibration split alone.

    python benchmarks/cv_options.py                      # the standard rows (about 20 min on 2 cores)
    python benchmarks/cv_options.py --variants affine ristretto --markdown

Top-1 and agreement on a few hundred images move by whole images with numerical noise, so
options are compared by the SQNR of the logits against FP32 (continuous: it moves by hundredths
of a dB where agreement moves by whole images), with agreement beside it. Each variant is
calibrated on the even-numbered half of the calibration split and measured on the odd half, then
the other way round; the two halves' logits are pooled. The evaluation split is never read.

The pooled SQNR is a ratio of sums, so a few images with large errors can move it by a dB while
most images go the other way. Every row after the first is therefore also compared with the first,
image by image on the same held-out logits: the pooled gain with a 95 % paired bootstrap interval
(images resampled, 2000 times) and the share of images whose logits came closer to FP32. A default
changes only when that interval lies above zero.

The integer model is the project's integer reference (what the exported files compute, bit for
bit), its convolutions on torch's exact float32 kernels (exact_conv.py: the same integers).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name -> (description, QuantizeOptions.make keywords, share of each training half used)
VARIANTS: dict[str, tuple[str, dict, float]] = {
    "affine": ("affine default (min/max, bias corr., eq. 0.5, fire2.squeeze range-split, empirical bias corr., "
               "adaptive rounding)", {}, 1.0),
    "affine-no-split": ("... without range splitting", dict(range_split=()), 1.0),
    "affine-pieces2": ("... with fire2.squeeze in 2 pieces", dict(range_pieces=2), 1.0),
    "affine-pieces3": ("... with fire2.squeeze in 3 pieces", dict(range_pieces=3), 1.0),
    "affine-pieces4": ("... with fire2.squeeze in 4 pieces", dict(range_pieces=4), 1.0),
    "affine-no-adaround": ("... without adaptive rounding", dict(adaptive_rounding=False), 1.0),
    "affine-no-empirical": ("... without empirical bias correction", dict(empirical_bias_correction=False), 1.0),
    "affine-eq0.25": ("... with equalization 0.25", dict(equalize=0.25), 1.0),
    "affine-eq0.75": ("... with equalization 0.75", dict(equalize=0.75), 1.0),
    "affine-eq0": ("... without equalization", dict(equalize=0.0), 1.0),
    "affine-eq-per-layer": ("... with equalization strength per pair (0/0.25/0.5/0.75, consumer output error)",
                            dict(equalize_per_layer=True), 1.0),
    "affine-logit-ranges": ("... with ranges shrunk by logit SQNR on the training half",
                            dict(range_search=True), 1.0),
    "affine-no-split-logit-ranges": ("... without range splitting, with ranges shrunk by logit SQNR",
                                     dict(range_split=(), range_search=True), 1.0),
    "affine-kl": ("... with KL ranges", dict(method="kl"), 1.0),
    "affine-mse": ("... with MSE ranges", dict(method="mse"), 1.0),
    "affine-percentile": ("... with percentile 99.99 % ranges", dict(method="percentile"), 1.0),
    "affine-half-images": ("... calibrated on half the images of each fold", {}, 0.5),
    "affine-quarter-images": ("... calibrated on a quarter of the images of each fold", {}, 0.25),
    "ristretto": ("ristretto default (KL, unsigned ReLU tensors, per-channel weight shifts, eq. 0.5, bias corr., "
                  "empirical bias corr., adaptive rounding, fire2.squeeze range-split)", dict(scheme="ristretto"), 1.0),
    "ristretto-no-split": ("... without range splitting", dict(scheme="ristretto", range_split=()), 1.0),
    "ristretto-pieces3": ("... with fire2.squeeze in 3 pieces", dict(scheme="ristretto", range_pieces=3), 1.0),
    "ristretto-eq0.25": ("... with equalization 0.25", dict(scheme="ristretto", equalize=0.25), 1.0),
    "ristretto-eq0": ("... without range split or equalization",
                      dict(scheme="ristretto", equalize=0.0, range_split=()), 1.0),
    # the rows below are without range splitting or equalization, each changing one thing of ristretto-eq0
    "ristretto-signed": ("... without range split or equalization, with signed activations (a sign bit on every tensor)",
                         dict(scheme="ristretto", equalize=0.0, range_split=(), unsigned_activations=False), 1.0),
    "ristretto-per-layer": ("... without range split or equalization, with one weight shift per layer",
                            dict(scheme="ristretto", equalize=0.0, range_split=(), per_channel_weights=False), 1.0),
    "ristretto-signed-per-layer": ("... without range split or equalization, with both: signed activations, one weight shift "
                                   "per layer", dict(scheme="ristretto", equalize=0.0, range_split=(),
                                                     unsigned_activations=False, per_channel_weights=False), 1.0),
    "ristretto-logit-ranges": ("... with ranges shrunk by logit SQNR on the training half",
                               dict(scheme="ristretto", range_search=True), 1.0),
    "ristretto-mse": ("... without range split or equalization, with MSE ranges (power-of-two grids)",
                      dict(scheme="ristretto", equalize=0.0, range_split=(), method="mse"), 1.0),
    "ristretto-minmax": ("... without range split or equalization, with min/max ranges",
                         dict(scheme="ristretto", equalize=0.0, range_split=(), method="minmax"), 1.0),
    "ristretto-published": ("ristretto as published (min/max, signed, per-layer weights, no equalization, "
                            "no range split, no correction, nearest rounding)",
                            dict(scheme="ristretto", method="minmax", bias_correction=False, equalize=0.0,
                                 range_split=(), adaptive_rounding=False, unsigned_activations=False,
                                 per_channel_weights=False), 1.0),
    "affine-reconstruct": ("... with block reconstruction (activation steps learned per block, 100 steps)",
                           dict(reconstruction=True, reconstruction_iterations=100), 1.0),
    "affine-reconstruct-rounding": ("... with block reconstruction learning the rounding too (300 steps)",
                                    dict(reconstruction=True, reconstruction_iterations=300,
                                         reconstruction_rounding=True), 1.0),
    "affine-reconstruct-rounding-only": ("... with block reconstruction learning the weight rounding alone "
                                        "(calibration's steps kept, range split on; 300 steps)",
                                        dict(reconstruction=True, reconstruction_iterations=300,
                                             reconstruction_rounding=True, reconstruction_steps=False), 1.0),
    "affine-no-split-reconstruct-rounding-only": ("... without range splitting, with block reconstruction learning "
                                                  "the weight rounding alone (300 steps)",
                                                  dict(range_split=(), reconstruction=True,
                                                       reconstruction_iterations=300, reconstruction_rounding=True,
                                                       reconstruction_steps=False), 1.0),
    "ristretto-reconstruct": ("ristretto default with block reconstruction (power-of-two steps, 100 steps)",
                              dict(scheme="ristretto", reconstruction=True, reconstruction_iterations=100), 1.0),
}
STANDARD = ["affine", "affine-no-split", "affine-no-adaround", "affine-eq0.25", "affine-eq0.75", "affine-half-images",
            "affine-quarter-images", "ristretto"]


@dataclass(frozen=True)
class Comparison:
    """One variant's held-out logits against another's (the first row's), image by image."""

    gain_db: float  # pooled logit SQNR, this minus the other
    ci_low_db: float  # 95 % paired bootstrap interval of gain_db
    ci_high_db: float
    closer_share: float  # images whose logit error power fell, in [0, 1]

    def cell(self) -> str:
        return f"{self.gain_db:+.2f} dB [{self.ci_low_db:+.2f}, {self.ci_high_db:+.2f}], {100 * self.closer_share:.0f} %"


def compare(fp32: np.ndarray, base: np.ndarray, other: np.ndarray, *, resamples: int = 2000,
            seed: int = 0) -> Comparison:
    """`other`'s logits against `base`'s, both against `fp32` (N, classes): the pooled SQNR gain,
    its 95 % paired bootstrap interval (the same resampled images for both) and the share of
    images `other` brought closer."""
    fp, base, other = (np.asarray(a, np.float64) for a in (fp32, base, other))
    if fp.ndim != 2 or base.shape != fp.shape or other.shape != fp.shape or len(fp) < 2:
        raise ValueError(f"compare needs logits of the same >= 2 images, got {fp.shape}, {base.shape}, "
                         f"{other.shape}")
    e_base, e_other = ((base - fp) ** 2).sum(axis=1), ((other - fp) ** 2).sum(axis=1)
    idx = np.random.default_rng(seed).integers(0, len(fp), (resamples, len(fp)))
    # the signal power cancels in a difference of SQNRs: only the error sums remain
    boot = 10 * np.log10(e_base[idx].sum(axis=1) / e_other[idx].sum(axis=1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Comparison(float(10 * np.log10(e_base.sum() / e_other.sum())), float(lo), float(hi),
                      float((e_other < e_base).mean()))


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    calibration_images: int  # per fold
    sqnr_db: float
    agreement: float
    seconds: float
    logits: np.ndarray  # the held-out int8 logits of every calibration-split image, both folds


def folds(items: list) -> list[tuple[list, list, np.ndarray]]:
    """(train items, test items, test indices) for the two halves: even-numbered, odd-numbered."""
    idx = np.arange(len(items))
    halves = [idx[0::2], idx[1::2]]
    return [([items[i] for i in halves[k]], [items[i] for i in halves[1 - k]], halves[1 - k]) for k in (0, 1)]


NO_SHARED_DATA = "no shared data folder: set EDGESQUEEZE_SHARED to the shared/ folder"


def calibration_split(limit: int = 0):
    """(the released v1.0 FP32 model, the calibration-split items of the shared sample (the first
    `limit`; 0: all), their pixels), or None without a shared data folder (NO_SHARED_DATA says
    what to do). The evaluation split is never read."""
    from edgesqueeze import paths
    from edgesqueeze.data import load_pixels, read_labels_csv, split_calibration
    from edgesqueeze.model import load_pretrained

    shared = paths.shared_dir()
    if shared is None:
        return None
    paths.ensure_weights_env()
    calib, _ = split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))
    if limit:
        calib = calib[:limit]
    model = load_pretrained("squeezenet1_0-dc")
    return model, calib, load_pixels(calib, model.arch.preprocess)


def run_variant(name: str, model, items: list, pixels: np.ndarray, fp32: np.ndarray) -> Row:
    from edgesqueeze.metrics import agreement, sqnr_db
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.sensitivity import reference_logits

    description, kw, share = VARIANTS[name]
    options = QuantizeOptions.make(**kw)
    t0 = time.perf_counter()
    q = np.zeros_like(fp32)
    used = 0
    for train, _, test_idx in folds(items):
        train_idx = np.setdiff1d(np.arange(len(items)), test_idx)
        n = max(8, int(round(len(train) * share)))
        train, train_idx = train[:n], train_idx[:n]
        used = n
        qm, _, _ = calibrate_and_quantize(model, train, options, pixels=pixels[train_idx])
        q[test_idx] = reference_logits(qm, pixels[test_idx])
    return Row(name, description, used, sqnr_db(fp32, q), agreement(fp32, q), time.perf_counter() - t0, q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=STANDARD,
                    help=f"rows to run (default: {' '.join(STANDARD)})")
    ap.add_argument("--limit", type=int, default=0, help="the first N calibration images only (a smoke run)")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args(argv)

    import torch

    from edgesqueeze import sysinfo
    from edgesqueeze.evaluate import fp32_logits

    data = calibration_split(args.limit)
    if data is None:
        print(NO_SHARED_DATA, file=sys.stderr)
        return 2
    model, calib, pixels = data
    torch.set_num_threads(2)
    fp32 = fp32_logits(model, pixels)
    print(f"CPU: {sysinfo.cpu_model()}; torch {torch.__version__}, 2 threads; {len(calib)} calibration-split "
          f"images, two folds of {len(calib) // 2}-{(len(calib) + 1) // 2}", flush=True)
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, model, calib, pixels, fp32))
        r = rows[-1]
        print(f"  {r.name}: {r.sqnr_db:.2f} dB, {r.agreement:.2f} %, {r.seconds:.0f} s", file=sys.stderr, flush=True)
    headers = ["variant (2-fold CV on the calibration split)", "calibration images per fold",
               "logit SQNR", "top-1 agreement", "vs the first row: gain [95 % CI], images closer"]
    table = [[r.description, str(r.calibration_images), f"{r.sqnr_db:.2f} dB", f"{r.agreement:.2f} %",
              compare(fp32, rows[0].logits, r.logits).cell() if k else "-"] for k, r in enumerate(rows)]
    from edgesqueeze.metrics import format_table

    print(format_table(headers, table, compact=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
