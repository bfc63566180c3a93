"""Range splitting: a Fire squeeze tensor carried in n pieces of 1/n its range (numpy only).

    arch2, params2, split = split_squeeze(arch, params, "fire2.squeeze", channel_max, pieces=3)

Why. One per-tensor 8-bit grid spends its 256 levels on the tensor's whole range, and on the
released v1.0 one tensor, fire2's squeeze output, carries about half of the logit error of the
affine model (benchmarks/noise_budget.py: 46.7 % of the summed single-tensor noise). Its channels
have similar maxima (per-channel grids gain 1.1 dB there), and clipping its long tail loses
class evidence, so neither a per-channel scale nor a narrower range fixes it.

How. With T = max / 2, every value y >= 0 of the ReLU output is

    y = min(y, T) + min(max(y - T, 0), T)        for y <= 2T = max,

two pieces of range [0, T] each. The squeeze conv gets one more output channel for each
channel whose maximum exceeds T: the same weights, bias b - T. The original channels are
clamped at T: the int8 grid of [0, T] saturates there on its own (requantization clamps to
127), so no new op is needed. The expand convs read each extra channel with the weights of the
channel it came from, so they compute W y exactly (in real arithmetic) from twice finer steps:
a quarter of that tensor's rounding noise. Every conv stays one int8 conv in both runtimes; the
cost is the extra channels: for v1.0's fire2, 16 squeeze channels become at most 32, about 4 %
more multiply-accumulates (docs/quantization.md has the measured latency).

n pieces. With T = max / n, piece k (k = 0 .. n-1) is min(max(y - kT, 0), T): channel c gets
an extra channel for every k >= 1 with kT below its maximum (bias b - kT), a 1/n^2 share of the
rounding noise for up to n - 1 extra channels per channel.

The grid must then be exactly [0, T] (any other top would double-count or lose values between
it and T), so the split tensor's range is fixed to that, whatever the range method, and the range
search leaves it alone. T need not be exactly max / 2: any T with a grid ending at it works, and
the pieces cover [0, nT]. Affine puts its grid top anywhere, so T = max / n. Ristretto's
power-of-two grids end at 255 * 2**-fl (unsigned) or 127 * 2**-fl (signed): `grid_top` gives the
top of the grid the scheme chooses for [0, max / n], which is at least 255/256 of max / n, so the
pieces reach 255/256 of the maximum at worst, the same saturation as an unsplit power-of-two grid.

The float model returned (arch.FireSpec.squeeze_clip = T on that Fire) clamps in float, so the
calibration statistics, bias corrections and per-layer comparisons see what the int8 graph does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..arch import Arch
from ..errors import OptionError

Params = dict[str, tuple[np.ndarray, np.ndarray]]
PIECES_RANGE = (2, 4)  # more pieces: at most 1/16 of the noise for up to 3 extra channels per channel
# docs/quantization.md, "Range splitting": for affine a third piece adds 0.35 dB on the 2-fold CV
# (closer on 63 % of the images) but 7.5 % more MACs, 3.6-5.6 % more latency at 1 thread, over the
# 3 % budget (two pieces: 2-4 %); for ristretto it buys nothing (29.93-29.95 against 29.93 dB):
# a power-of-two T for max / 3 is often the one for max / 2, the same bracket
DEFAULT_RANGE_PIECES = 2


@dataclass(frozen=True)
class RangeSplit:
    """What was split: readable, and recorded in the quantized model's calibration dict."""

    tensor: str  # "fire2.squeeze"
    threshold: float  # T: every piece's range is [0, T]
    sources: tuple[int, ...]  # the original channel behind each extra channel, in order
    offsets: tuple[float, ...]  # kT of each extra channel: its bias is the source's minus this
    pieces: int = 2

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "threshold": self.threshold, "pieces": self.pieces,
                "extra_channels": len(self.sources), "sources": list(self.sources), "offsets": list(self.offsets)}


def clamped(arch: Arch) -> dict[str, float]:
    """{squeeze tensor: its clamp T} of the range-split Fires of `arch` (FireSpec.squeeze_clip):
    the tensors whose int8 grid must end exactly at T."""
    return {f"{f.name}.squeeze": f.squeeze_clip for f in arch.fires if f.squeeze_clip}


def splittable(arch: Arch) -> list[str]:
    """The tensors split_squeeze can split: every Fire's squeeze output."""
    return [f"{f.name}.squeeze" for f in arch.fires]


def check_pieces(pieces) -> int:
    """`pieces` as an int in PIECES_RANGE, else OptionError naming the value and the fix."""
    lo, hi = PIECES_RANGE
    if isinstance(pieces, bool) or not isinstance(pieces, (int, np.integer)) or not lo <= pieces <= hi:
        raise OptionError(f"range split pieces={pieces!r} is not an integer in {lo}..{hi}; use 2 (half the "
                          f"step for up to one extra channel per channel) or 3 (a third, up to two)")
    return int(pieces)


def split_squeeze(arch: Arch, params: Params, tensor: str, channel_max: np.ndarray, *, pieces: int = 2,
                  grid_top: Callable[[float], float] | None = None) -> tuple[Arch, Params, RangeSplit]:
    """(arch, params, record) with `tensor` (a Fire's squeeze output) in `pieces` pieces (module
    doc). `channel_max`: that tensor's per-channel maxima on the calibration images, in the model
    `params` describe (after equalization, if any). `grid_top(hi)`: the top of the int8 grid the
    scheme gives a range [0, hi], which becomes T for hi = max / pieces (None: T = max / pieces,
    affine)."""
    n_pieces = check_pieces(pieces)
    names = splittable(arch)
    if tensor not in names:
        raise OptionError(f"cannot range-split {tensor!r}: choose a Fire squeeze output ({', '.join(names)})")
    fire = next(f for f in arch.fires if f"{f.name}.squeeze" == tensor)
    if fire.squeeze_clip:
        raise OptionError(f"{tensor} is already split (clamped at {fire.squeeze_clip})")
    m = np.asarray(channel_max, np.float64)
    if m.shape != (fire.squeeze,) or not np.isfinite(m).all():
        raise OptionError(f"range split of {tensor} needs its {fire.squeeze} per-channel maxima, got {m.shape}")
    top = float(m.max())
    if not top > 0:
        raise OptionError(f"{tensor} never fires on the calibration images (max {top}); nothing to split")
    part = top / n_pieces
    t = part if grid_top is None else float(grid_top(part))
    if not part * 0.99 <= t <= top:
        raise OptionError(f"grid_top gave {t} for a range of {part} (max / {n_pieces}): a split needs "
                          f"max / {n_pieces} <= T <= max")
    # piece k >= 1 of channel c exists where kT lies below c's maximum; the k-major order keeps
    # the two-piece layout (one extra channel per source, in channel order) as its first block
    extra = [(int(c), k * t) for k in range(1, n_pieces) for c in np.flatnonzero(m > k * t)]
    sources = tuple(c for c, _ in extra)
    offsets = np.array([o for _, o in extra], np.float64)
    n = fire.name
    out = {k: (np.asarray(w, np.float32), np.asarray(b, np.float32)) for k, (w, b) in params.items()}
    w, b = (np.asarray(a, np.float64) for a in params[f"{n}.squeeze"])
    idx = list(sources)
    out[f"{n}.squeeze"] = (np.concatenate([w, w[idx]]).astype(np.float32),
                           np.concatenate([b, b[idx] - offsets]).astype(np.float32))
    for e in ("expand1x1", "expand3x3"):  # the extra channels read with their source's weights
        v, c = params[f"{n}.{e}"]
        v = np.asarray(v, np.float32)
        out[f"{n}.{e}"] = (np.concatenate([v, v[:, idx]], axis=1), np.asarray(c, np.float32))
    fires = tuple(replace(f, squeeze=f.squeeze + len(sources), squeeze_clip=t) if f is fire else f
                  for f in arch.fires)
    return replace(arch, fires=fires), out, RangeSplit(tensor, t, sources, tuple(float(o) for o in offsets),
                                                       n_pieces)


__all__ = ["DEFAULT_RANGE_PIECES", "PIECES_RANGE", "RangeSplit", "check_pieces", "clamped", "split_squeeze", "splittable"]
