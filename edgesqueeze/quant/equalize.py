"""Cross-layer activation equalization (numpy): rescale channels so one per-tensor 8-bit scale
fits every channel of an activation tensor.

ReLU and max pooling are positively homogeneous: relu(s x) = s relu(x) and max(s x) = s max(x)
for s > 0. So for a channel c produced by conv P (row c of its weight and its bias) and read by
conv C (input channel c of its weight), multiplying P's row c and bias by s_c and dividing C's
input channel c by s_c leaves the network's function unchanged (exactly, up to float rounding)
while the activation channel c is s_c times larger. A per-tensor activation scale is set by the
largest channel; channels far below it use few of the 256 levels. Choosing
s_c = (max_all / max_c) ** alpha lifts the small channels (alpha = 1 equalizes completely; less
than 1 leaves some of the range in C's weights, which are quantized per output channel and lose
relative precision on the input channels they shrink). Nagel et al., "Data-free quantization
through weight equalization and bias correction", 2019, sec. 4.1, do the same for weights.

Pairs in SqueezeNet (v1.0/v1.1 without bypass):
    conv1 -> [pool1] -> fire2.squeeze
    fireN.squeeze -> fireN.expand1x1 and fireN.expand3x3 (one tensor, two readers)
    fireN.concat (expand1x1 channels, then expand3x3) -> [pool] -> next squeeze, or conv10
conv10 is not rescaled: its output is averaged into the logits with one scale. Bypass variants
are left as they are (an add mixes two paths whose scales would have to move together).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..arch import Arch, Bypass
from ..errors import OptionError

# the strength chosen by the 2-fold CV (docs/quantization.md): 0.25 raised the pooled logit SQNR
# but was worse on most images (its gain came from a few), so 0.5 stays
DEFAULT_EQUALIZE = 0.5

Params = dict[str, tuple[np.ndarray, np.ndarray]]


def equalization_pairs(arch: Arch) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(activation tensor, producer convs in channel order, consumer convs)."""
    if any(f.bypass is not Bypass.NONE for f in arch.fires):
        return []
    pairs = []
    prev_tensor, prev_producers = "conv1", ("conv1",)
    for f in arch.fires:
        n = f.name
        pairs.append((prev_tensor, prev_producers, (f"{n}.squeeze",)))
        pairs.append((f"{n}.squeeze", (f"{n}.squeeze",), (f"{n}.expand1x1", f"{n}.expand3x3")))
        prev_tensor, prev_producers = f"{n}.concat", (f"{n}.expand1x1", f"{n}.expand3x3")
    pairs.append((prev_tensor, prev_producers, ("conv10",)))
    return pairs


def equalize_weights(arch: Arch, params: Params, *, iterations: int = 4, max_factor: float = 16.0) -> Params:
    """DFQ's cross-layer weight equalization (Nagel et al. 2019, sec. 4.1) over the same pairs:
    s_c = sqrt(r1_c / r2_c) with r1_c the range of the producer's output channel c and r2_c the
    range of the consumers' input channel c; the producer's row c is divided by s_c and the
    consumers' input channel c multiplied by it, so both end with range sqrt(r1_c r2_c). For
    one weight scale per layer (Ristretto) this is what evens out the channels. Repeated a few
    times, since a Fire squeeze is both a consumer and a producer."""
    out = {k: (w.astype(np.float64).copy(), b.astype(np.float64).copy()) for k, (w, b) in params.items()}
    for _ in range(iterations):
        for _tensor, producers, consumers in equalization_pairs(arch):
            r1 = np.concatenate([np.abs(out[p][0]).reshape(out[p][0].shape[0], -1).max(axis=1) for p in producers])
            r2 = np.max([np.abs(out[c][0]).transpose(1, 0, 2, 3).reshape(out[c][0].shape[1], -1).max(axis=1)
                         for c in consumers], axis=0)
            s = np.ones_like(r1)
            ok = (r1 > 0) & (r2 > 0)
            s[ok] = np.clip(np.sqrt(r1[ok] / r2[ok]), 1 / max_factor, max_factor)
            start = 0
            for p in producers:
                w, b = out[p]
                k = w.shape[0]
                w /= s[start:start + k, None, None, None]
                b /= s[start:start + k]
                start += k
            for c in consumers:
                out[c][0][:] *= s[None, :, None, None]
    return {k: (w.astype(np.float32), b.astype(np.float32)) for k, (w, b) in out.items()}


def channel_factors(m: np.ndarray, alpha: float, max_factor: float = 16.0) -> np.ndarray:
    """s_c = (max_all / max_c) ** alpha, capped at `max_factor`; 1 for channels that never fire."""
    m = np.asarray(m, np.float64)
    s = np.ones_like(m)
    live = m > 0
    if live.any():
        s[live] = np.minimum((m[live].max() / m[live]) ** alpha, max_factor)
    return s


def equalize(arch: Arch, params: Params, channel_max: dict[str, np.ndarray], *,
             alpha: float | Mapping[str, float] = 0.5, max_factor: float = 16.0,
             power_of_two: bool = False) -> tuple[Params, dict[str, np.ndarray]]:
    """(new params, {tensor: s per channel}). `channel_max` maps activation tensors to their
    per-channel maxima from calibration. Channels that never fire (max 0) keep s = 1; factors are
    capped at `max_factor` so a nearly-dead channel is not blown up. `alpha`: one strength for
    every pair, or {tensor: strength} per pair (quant/eq_search.py chooses them; a tensor left
    out is not rescaled).

    `power_of_two` (for power-of-two scales, Ristretto): afterwards every factor of a tensor is
    multiplied by one k in [1, 2) that puts the tensor's max at 127/128 of the next power of
    two, the top of the grid il = ceil(log2 max) + 1 would give it anyway — a tensor whose max
    sits just above a power of two otherwise wastes almost a bit."""
    per_pair = isinstance(alpha, Mapping)
    for a in (alpha.values() if per_pair else [alpha]):
        if not 0.0 <= a <= 1.0:
            raise OptionError(f"alpha={a} must lie in [0, 1]")
    out = {k: (w.astype(np.float64).copy(), b.astype(np.float64).copy()) for k, (w, b) in params.items()}
    factors = {}
    for tensor, producers, consumers in equalization_pairs(arch):
        if tensor not in channel_max:
            raise OptionError(f"equalization needs the per-channel maxima of {tensor}; calibrate first")
        m = np.asarray(channel_max[tensor], np.float64)
        s = channel_factors(m, alpha.get(tensor, 0.0) if per_pair else alpha, max_factor)
        if power_of_two and (m > 0).any():
            top = float((m * s).max())
            s *= 2.0 ** np.ceil(np.log2(top)) * (127 / 128) / top if top > 0 else 1.0
            s = np.maximum(s, 1e-30)
        factors[tensor] = s
        start = 0
        for p in producers:  # concat: the producers' rows follow one another
            w, b = out[p]
            k = w.shape[0]
            w *= s[start:start + k, None, None, None]
            b *= s[start:start + k]
            start += k
        for c in consumers:
            out[c][0][:] /= s[None, :, None, None]
    return {k: (w.astype(np.float32), b.astype(np.float32)) for k, (w, b) in out.items()}, factors
