"""Per-pair equalization strength: for each equalization pair (quant/equalize.py) the alpha
from a small set that leaves the least quantization error at the pair's consumer output (torch).

    alphas, errors = choose_alphas(model, pixels, channel_max)      # {tensor: alpha}
    params, _ = equalize(arch, params, channel_max, alpha=alphas)

Why. One strength for every pair trades, everywhere alike, the activation rounding of the pair's
tensor (a larger alpha lifts its small channels onto more of the 256 levels) against the weight
rounding of its consumers (their input channel c is divided by s_c, so per-output-channel weight
scales, set by the largest column, leave the shrunk columns fewer levels). Where the balance
lies depends on the tensor: how spread its channel maxima are, how large the consumer's weights
on the small channels are.

The score. A pair's consumers compute the same function whatever alpha is (equalization is
exact in float), so their output error compares alphas on one footing. For alpha and its
factors s (equalize.channel_factors), with x the consumer input in FP32 on a few calibration
images: x' = s x is rounded on the per-tensor affine grid of its min/max range max_c(s_c m_c)
(m: the per-channel maxima of the whole calibration set, as the pipeline's equalization uses;
zero point -128, the tensor being a ReLU output), the consumer weights W / s are rounded to
nearest on their per-output-channel symmetric grid, and the error is
    sum over outputs of (conv(q(x'), q(W / s)) - conv(x, W))^2
with each output channel's mean error removed first (bias correction and empirical bias
correction remove it in the pipeline). A pair read by two convs (a Fire squeeze) adds both.

What it leaves out: adaptive rounding lowers the weight part of the error (by a few dB per conv,
quantize.py's adaptive_rounding_gain_db), so the score overstates what a larger alpha costs;
and the errors of later layers, which this pair's output error feeds, are not weighed.

Streaming: forward hooks on each pair's first consumer see its input batch by batch; the sums
of the error and of its square per output channel are accumulated (float64), so no activation
is kept beyond its batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import OptionError
from .equalize import channel_factors, equalization_pairs

EQ_ALPHAS = (0.0, 0.25, 0.5, 0.75)
DEFAULT_EQ_IMAGES = 16
BATCH = 8


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(a) for a in alphas)
    if not out or any(not 0.0 <= a <= 1.0 for a in out):
        raise OptionError(f"equalization strengths {alphas!r} must lie in [0, 1], e.g. {EQ_ALPHAS}")
    return out


def _fake_quant_weight(w, qmax: int):
    """Nearest rounding on the symmetric per-output-channel grid max|w[o]| / qmax (quantize.py)."""
    import torch

    amax = w.abs().flatten(1).amax(1)
    s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).view(-1, 1, 1, 1)
    return torch.round(w / s).clamp(-qmax, qmax) * s


def choose_alphas(model, pixels: np.ndarray, channel_max: dict[str, np.ndarray], *,
                  alphas: Sequence[float] = EQ_ALPHAS, weight_bits: int = 8,
                  max_factor: float = 16.0) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """({tensor: chosen alpha}, {tensor: {alpha: error}}) for every equalization pair of
    `model` (the FP32 SqueezeNet before equalization) on the uint8 calibration `pixels`
    (N, S, S, 3; never evaluation images). `channel_max`: the pairs' per-channel maxima over all
    calibration images (calibrate.ChannelMaxima). Ties go to the alpha listed first."""
    import torch
    import torch.nn.functional as F

    from ..data import normalize
    from .quantize import weight_qmax

    alphas = check_alphas(alphas)
    qmax = weight_qmax(weight_bits)
    pairs = equalization_pairs(model.arch)
    convs = dict(model.named_convs())
    state: dict[str, dict] = {}
    for tensor, _, consumers in pairs:
        m = np.asarray(channel_max[tensor], np.float64)
        per_alpha = []
        for a in alphas:
            s = channel_factors(m, a, max_factor)
            top = float((m * s).max()) if (m > 0).any() else 1.0
            s_t = torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1)
            weights = [_fake_quant_weight(convs[c].weight.detach().double() / s_t.double(), qmax).float()
                       for c in consumers]
            per_alpha.append((s_t, np.float32(top / 255.0), weights))
        n_c = len(consumers)
        # per alpha: per consumer the sums of e and e^2 per output channel, and the outputs counted
        state[tensor] = {"consumers": consumers, "alphas": per_alpha,
                         "sum": [[[0.0] * n_c, [0.0] * n_c, 0] for _ in alphas]}

    def hook_for(tensor: str):
        st = state[tensor]

        def hook(module, inputs):
            x = inputs[0].detach().float()
            refs = [F.conv2d(x, convs[c].weight, None, convs[c].stride, convs[c].padding) for c in st["consumers"]]
            for k, (s_t, step, weights) in enumerate(st["alphas"]):
                # the tensor's affine grid: real 0 at q = -128, step = range / 255 (ReLU output)
                xq = torch.clamp(torch.round(x * s_t / float(step)), 0, 255) * float(step)
                acc = st["sum"][k]
                for j, c in enumerate(st["consumers"]):
                    e = (F.conv2d(xq, weights[j], None, convs[c].stride, convs[c].padding) - refs[j]).double()
                    acc[0][j] = acc[0][j] + e.sum(dim=(0, 2, 3))
                    acc[1][j] = acc[1][j] + (e * e).sum(dim=(0, 2, 3))
                acc[2] += refs[0].shape[0] * refs[0].shape[2] * refs[0].shape[3]
        return hook

    pre = model.arch.preprocess
    handles = [convs[consumers[0]].register_forward_pre_hook(hook_for(tensor)) for tensor, _, consumers in pairs]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(pixels), BATCH):
                model(torch.from_numpy(normalize(pixels[i:i + BATCH], pre)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    errors: dict[str, dict[float, float]] = {}
    chosen: dict[str, float] = {}
    for tensor, st in state.items():
        errors[tensor] = {}
        for a, (s1s, s2s, count) in zip(alphas, st["sum"]):
            # each output channel's mean error removed: sum e^2 - (sum e)^2 / count
            errors[tensor][a] = float(sum(float((s2 - s1 * s1 / max(count, 1)).sum()) for s1, s2 in zip(s1s, s2s)))
        chosen[tensor] = min(alphas, key=lambda a: errors[tensor][a])
    return chosen, errors


__all__ = ["DEFAULT_EQ_IMAGES", "EQ_ALPHAS", "check_alphas", "choose_alphas"]
