"""Weights -> calibration -> QuantizedModel, the steps `edgesqueeze quantize` runs (torch).

    qm, stats, quantized_fp32_model = calibrate_and_quantize(model, calibration_items, QuantizeOptions.make(...))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .calibrate import Method, as_method, choose_range, collect_stats
from .data import DEFAULT_CALIBRATION_FRACTION, SPLIT_SALT, LabelledImage, load_pixels, normalize
from .errors import DataError, OptionError
from .quant.params import QuantizedModel, Scheme, parse_enum
from .quant.rounding import PatchMoments
from .model import SqueezeNet
from .quant.empirical import empirical_bias_correction
from .quant.equalize import equalization_pairs, equalize
from .quant.quantize import check_weight_bits, quantize_model

DEFAULT_EQUALIZE = 0.5
MIN_CALIBRATION_IMAGES = {Method.MINMAX: 1, Method.PERCENTILE: 8, Method.MSE: 8, Method.KL: 8}


@dataclass(frozen=True)
class QuantizeOptions:
    scheme: Scheme = Scheme.AFFINE
    method: Method = Method.MINMAX
    bias_correction: bool = True
    percentile: float = 99.99
    equalize: float = DEFAULT_EQUALIZE  # cross-layer activation equalization strength; 0 = off
    empirical_bias_correction: bool = True  # quant/empirical.py, after the analytic correction
    weight_bits: int = 8  # weight grid ±(2^(b-1)-1) in int8 (quant/quantize.py); 7 for a < 0.5 MB bundle
    adaptive_rounding: bool = True  # quant/rounding.py: weights rounded for the layer's output error

    @classmethod
    def make(cls, *, scheme: Scheme | str = Scheme.AFFINE, method: Method | str | None = None,
             bias_correction: bool | None = None, percentile: float = 99.99,
             equalize: float | None = None, empirical_bias_correction: bool | None = None,
             weight_bits: int = 8, adaptive_rounding: bool = True) -> "QuantizeOptions":
        """Checked once on entry: unknown names raise OptionError listing the allowed ones.

        Defaults per scheme (None), chosen by two-fold cross-validation on the calibration
        split alone — calibrate on one half, measure the logits' SQNR against FP32 on the
        other — never on the evaluation images (README, "How the defaults were chosen"):
        - affine: min/max ranges, bias correction, equalization 0.5, empirical bias correction;
        - ristretto: KL ranges, bias correction and empirical bias correction, no equalization
          (CV: 21.3 dB against 16.7 dB for plain min/max, as Ristretto publishes it).
        Turning `bias_correction` off turns the empirical correction off too unless it is asked
        for explicitly. `weight_bits` (4..8, default 8): fewer weight levels for a smaller update
        bundle, at the accuracy cost the README's "Update bundle" table measures.
        `adaptive_rounding` (on by default, both schemes): each weight rounded up or down to
        lower its conv's output error on the calibration patches (quant/rounding.py; README
        "Adaptive rounding")."""
        scheme = parse_enum(Scheme, scheme, "scheme")
        if method is None:
            method = Method.MINMAX if scheme is Scheme.AFFINE else Method.KL
        if bias_correction is None:
            bias_correction = True
        if equalize is None:
            equalize = DEFAULT_EQUALIZE if scheme is Scheme.AFFINE else 0.0
        if empirical_bias_correction is None:
            empirical_bias_correction = bool(bias_correction)
        if not 0.0 <= float(equalize) <= 1.0:
            raise OptionError(f"equalize={equalize} must lie in [0, 1] (0 turns it off)")
        return cls(scheme, as_method(method), bool(bias_correction), float(percentile), float(equalize),
                   bool(empirical_bias_correction), weight_bits=check_weight_bits(weight_bits),
                   adaptive_rounding=bool(adaptive_rounding))


def quantize_from_stats(model, stats, options: QuantizeOptions, *, labels: Sequence[str] = (),
                        calibration: dict | None = None,
                        patch_moments: dict[str, PatchMoments] | None = None) -> QuantizedModel:
    """Quantize `model`'s weights with the ranges `options` chooses from `stats` (which must be
    statistics of this very model: after equalization, of the equalized one). With
    `options.adaptive_rounding`, `patch_moments` (conv_input_statistics, of this model) are
    required."""
    if options.adaptive_rounding and patch_moments is None:
        raise OptionError("adaptive rounding needs the conv input patch moments "
                          "(pipeline.conv_input_statistics of this model); pass them or set adaptive_rounding=False")
    pow2 = options.scheme is Scheme.RISTRETTO
    ranges = {n: choose_range(s, options.method, percentile=options.percentile, power_of_two=pow2)
              for n, s in stats.items()}
    means = ({n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}
             if options.bias_correction else None)
    info = {"method": options.method.value, "bias_correction": options.bias_correction,
            "equalize": options.equalize, "empirical_bias_correction": False, "weight_bits": options.weight_bits,
            "adaptive_rounding": options.adaptive_rounding,
            "ranges": {n: list(r) for n, r in ranges.items()}, **(calibration or {})}
    return quantize_model(model.arch, model.numpy_params(), ranges, scheme=options.scheme,
                          labels=tuple(labels), calibration=info, channel_means=means,
                          weight_bits=options.weight_bits,
                          patch_moments=patch_moments if options.adaptive_rounding else None)


def calibrate_and_quantize(model, items: Sequence[LabelledImage], options: QuantizeOptions, *,
                           labels: Sequence[str] = (), batch_size: int = 32,
                           progress: Callable[[int], None] | None = None):
    """(QuantizedModel, stats, fp32 model). `items` are the calibration images (never the
    evaluation ones). The returned FP32 model is the one that was quantized: after
    equalization its logits are the original's but its channels are rescaled, so per-layer
    comparisons (SQNR) must use it, not the original."""
    need = MIN_CALIBRATION_IMAGES[options.method]
    if len(items) < need:
        raise DataError(f"{len(items)} calibration image(s) is too few for method "
                        f"'{options.method.value}' (needs at least {need}); give more images or use --method minmax")
    stats = collect_stats(model, items, batch_size=batch_size, progress=progress)
    if options.equalize > 0 and equalization_pairs(model.arch):
        # rescale channels with the first pass's per-channel maxima, then calibrate the
        # equalized model: its activation ranges are what gets quantized
        cmax = {n: s.channel_max for n, s in stats.items() if s.channel_max is not None}
        params, _ = equalize(model.arch, model.numpy_params(), cmax, alpha=options.equalize,
                             power_of_two=options.scheme is Scheme.RISTRETTO)
        model = SqueezeNet.from_params(model.arch, params)
        stats = collect_stats(model, items, batch_size=batch_size, progress=progress)
    calibration = {"images": len(items),
                   "split": f"sha256('{SPLIT_SALT}' + name) < {DEFAULT_CALIBRATION_FRACTION:.4f}"}
    conv_stats = pixels = None
    if options.adaptive_rounding or options.empirical_bias_correction:
        # one more FP32 pass, of the (equalized) model being quantized: patch moments for the
        # rounding, pre-ReLU means for the empirical correction
        pixels = load_pixels(items, model.arch.preprocess)
        conv_stats = conv_input_statistics(model, pixels, batch_size=batch_size, patches=options.adaptive_rounding)
    qm = quantize_from_stats(model, stats, options, labels=labels, calibration=calibration,
                             patch_moments=conv_stats.patch_moments if conv_stats else None)
    if options.empirical_bias_correction:
        qm, shifts = empirical_bias_correction(qm, pixels, conv_stats.preactivation_means)
        qm = replace(qm, calibration={**qm.calibration, "empirical_bias_correction": True,
                                      "empirical_shift_mean_acc_steps": {k: round(v, 2) for k, v in shifts.items()}})
    return qm, stats, model


@dataclass(frozen=True)
class ConvStatistics:
    """What one FP32 pass over the calibration pixels gives the steps after calibration:
    per conv, the per-channel mean of its output before the ReLU (empirical bias correction)
    and the moments of its input patches (adaptive rounding)."""

    preactivation_means: dict[str, np.ndarray]
    patch_moments: dict[str, PatchMoments]


def conv_input_statistics(model: SqueezeNet, pixels: np.ndarray, *, batch_size: int = 32,
                          patches: bool = True) -> ConvStatistics:
    """One FP32 pass over uint8 pixels (N, S, S, 3). Pre-activation means include the padded
    border (what the integer model's accumulator holds). Patch moments are in the quantized
    conv's input units: conv1's in raw pixels (its input normalisation is folded, quantize.py),
    and in the OHWI order of its weights; `patches=False` skips them (empirical bias
    correction alone). Cost: sum over convs of patches * K^2 in float64, ~20 s for 194 images
    of v1.0 on 2 cores."""
    import torch
    import torch.nn.functional as F

    pre = model.arch.preprocess
    std = torch.tensor(pre.std, dtype=torch.float64).view(1, -1, 1, 1)
    mean = torch.tensor(pre.mean, dtype=torch.float64).view(1, -1, 1, 1)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    first: dict[str, torch.Tensor] = {}
    second: dict[str, torch.Tensor] = {}
    npatch: dict[str, int] = {}

    def hook_for(name: str):
        def hook(conv, inputs, out):
            sums[name] = sums.get(name, 0) + out.double().sum(dim=(0, 2, 3)).numpy()
            counts[name] = counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
            if not patches:
                return
            x = inputs[0].double()
            if name == "conv1":  # the folded conv1 sees raw pixels
                x = x * std + mean
            kh, kw = conv.kernel_size
            for xi in x:  # one image at a time: conv1's patches are ~15 MB per image in float64
                cols = F.unfold(xi[None], (kh, kw), padding=conv.padding, stride=conv.stride)  # (1, C*kh*kw, L)
                c = xi.shape[0]
                # unfold orders a patch (c, i, j); the int8 weights are OHWI, so reorder to (i, j, c)
                cols = cols[0].view(c, kh, kw, -1).permute(3, 1, 2, 0).reshape(-1, kh * kw * c)
                second[name] = second.get(name, 0) + cols.T @ cols
                first[name] = first.get(name, 0) + cols.sum(dim=0)
                npatch[name] = npatch.get(name, 0) + cols.shape[0]
        return hook

    handles = [conv.register_forward_hook(hook_for(name)) for name, conv in model.named_convs()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(pixels), batch_size):
                model(torch.from_numpy(normalize(pixels[i:i + batch_size], pre)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    means = {name: sums[name] / counts[name] for name in sums}
    moments = {name: PatchMoments((first[name] / npatch[name]).numpy(), (second[name] / npatch[name]).numpy(),
                                  npatch[name]) for name in first}
    return ConvStatistics(means, moments)


def preactivation_means(model: SqueezeNet, pixels: np.ndarray, *, batch_size: int = 32) -> dict[str, np.ndarray]:
    """{conv name: per-channel mean of the conv's output before its ReLU} over uint8 pixels
    (N, S, S, 3), border included (what the integer model's accumulator holds)."""
    return conv_input_statistics(model, pixels, batch_size=batch_size, patches=False).preactivation_means
