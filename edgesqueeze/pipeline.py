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
    weight_bits: int = 8  # weight grid ±(2^(b-1)-1) in int8 (quant/quantize.py); 6 for a < 0.5 MB bundle

    @classmethod
    def make(cls, *, scheme: Scheme | str = Scheme.AFFINE, method: Method | str = Method.MINMAX,
             bias_correction: bool | None = None, percentile: float = 99.99,
             equalize: float | None = None, empirical_bias_correction: bool | None = None,
             weight_bits: int = 8) -> "QuantizeOptions":
        """Checked once on entry: unknown names raise OptionError listing the allowed ones.

        `bias_correction` and `equalize` default per scheme to what measured best on the
        shared sample's calibration/evaluation split (README): affine with both (bias
        correction, equalization 0.5); ristretto without either — as published, and because
        both made its drop larger here (4.0 pp plain vs 7.5 pp with them, on 200 images).
        `empirical_bias_correction` (quant/empirical.py) defaults to on for affine (measured:
        evaluation top-1 66.50 -> 67.24 %, agreement 94.58 -> 95.07 %) and off for ristretto;
        turning `bias_correction` off turns it off too unless it is asked for explicitly.
        `weight_bits` (4..8, default 8): fewer weight levels for a smaller update bundle, at the
        accuracy cost the README's "Update bundle" table measures."""
        scheme = parse_enum(Scheme, scheme, "scheme")
        if bias_correction is None:
            bias_correction = scheme is Scheme.AFFINE
        if equalize is None:
            equalize = DEFAULT_EQUALIZE if scheme is Scheme.AFFINE else 0.0
        if empirical_bias_correction is None:
            empirical_bias_correction = scheme is Scheme.AFFINE and bool(bias_correction)
        if not 0.0 <= float(equalize) <= 1.0:
            raise OptionError(f"equalize={equalize} must lie in [0, 1] (0 turns it off)")
        return cls(scheme, as_method(method), bool(bias_correction), float(percentile), float(equalize),
                   bool(empirical_bias_correction), weight_bits=check_weight_bits(weight_bits))


def quantize_from_stats(model, stats, options: QuantizeOptions, *, labels: Sequence[str] = (),
                        calibration: dict | None = None) -> QuantizedModel:
    """Quantize `model`'s weights with the ranges `options` chooses from `stats` (which must be
    statistics of this very model: after equalization, of the equalized one)."""
    ranges = {n: choose_range(s, options.method, percentile=options.percentile) for n, s in stats.items()}
    means = ({n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}
             if options.bias_correction else None)
    info = {"method": options.method.value, "bias_correction": options.bias_correction,
            "equalize": options.equalize, "empirical_bias_correction": False, "weight_bits": options.weight_bits,
            "ranges": {n: list(r) for n, r in ranges.items()}, **(calibration or {})}
    return quantize_model(model.arch, model.numpy_params(), ranges, scheme=options.scheme,
                          labels=tuple(labels), calibration=info, channel_means=means,
                          weight_bits=options.weight_bits)


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
    qm = quantize_from_stats(model, stats, options, labels=labels, calibration=calibration)
    if options.empirical_bias_correction:
        pixels = load_pixels(items, model.arch.preprocess)
        qm, shifts = empirical_bias_correction(qm, pixels, preactivation_means(model, pixels, batch_size=batch_size))
        qm = replace(qm, calibration={**qm.calibration, "empirical_bias_correction": True,
                                      "empirical_shift_mean_acc_steps": {k: round(v, 2) for k, v in shifts.items()}})
    return qm, stats, model


def preactivation_means(model: SqueezeNet, pixels: np.ndarray, *, batch_size: int = 32) -> dict[str, np.ndarray]:
    """{conv name: per-channel mean of the conv's output before its ReLU} over uint8 pixels
    (N, S, S, 3), border included (what the integer model's accumulator holds)."""
    import torch

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook_for(name):
        def hook(_module, _inputs, out):
            sums[name] = sums.get(name, 0) + out.double().sum(dim=(0, 2, 3)).numpy()
            counts[name] = counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
        return hook

    handles = [conv.register_forward_hook(hook_for(name)) for name, conv in model.named_convs()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(pixels), batch_size):
                model(torch.from_numpy(normalize(pixels[i:i + batch_size], model.arch.preprocess)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: sums[name] / counts[name] for name in sums}
