"""Clip ranges from calibration statistics: the range methods and `choose_range`.

    lo, hi = choose_range(stats["fire2.squeeze"], "kl")     # stats: calibrate.TensorStats

Range methods (`Method`)
------------------------
A tensor with min >= 0 (every ReLU output, the pools, concats and logits here) is one-sided:
lo = 0 and only hi is searched, on the histogram's upper half. A tensor with negative values
searches a symmetric threshold t on the histogram of |x| (the two halves folded), then
[-t, t] is clipped to [min(min, 0), max(max, 0)].

- MINMAX: [min(min, 0), max(max, 0)] — nothing is clipped.
- PERCENTILE: the value below which `percentile` % of the (|x|) values lie, linearly
  interpolated within its bin.
- MSE: the bin edge t minimising the expected squared error: clipping error (sum over bins
  beyond t of count * (bin centre - t)**2) + rounding noise (count within range * step**2 / 12,
  step = range / (num_levels - 1), range being the clipped range [lo, hi] that t gives).
  With `power_of_two=True` (the ristretto scheme) the candidates are Ristretto's own grids
  instead: symmetric int8 with step 2**-fl, clipping at 127 * 2**-fl, for the integer length
  from the max and up to 7 below it; the range returned is exactly that clip, so the scheme's
  power-of-two rounding (quantize.power_of_two_qparams) keeps the chosen fl. Without this the
  MSE threshold is rounded *up* to a power of two and most of the clipping is undone.
- KL: TensorRT's entropy calibration. For each candidate i >= num_levels/2 bins kept: P =
  hist[:i] with the outliers added to its last bin; Q = hist[:i] (without the outliers, as in
  TensorRT/MXNet; merging P itself would make Q == P, KL == 0 at i = num_levels/2) merged into
  num_levels/2 bins (the last one takes the remainder) and spread evenly over P's non-zero bins;
  minimise KL(P || Q). A Q bin that is 0 where P is not is smoothed to `KL_EPSILON` counts so
  the divergence stays finite. The threshold is the upper edge of bin i - 1.

  KL and the zero bin: before the search, the first bin of the searched histogram (the one
  holding the exact zeros of a ReLU, half or more of its values) is given the count of the
  second, as NVIDIA's pytorch-quantization does (`_compute_amax_entropy`: bins[0] = bins[1]).
  Zeros are quantized exactly at any scale, yet left as they are they dominate P, and the search
  then favours i < num_levels (merged bins of one histogram bin, so Q == P on the spike) and
  clips ReLU tensors far too hard: a ReLU'd N(0, 1) (max 5.0) gets hi = 2.0 without this and
  4.7 with it; a ReLU'd Laplace(0, 1) (max 13.5) 4.0 vs 11.6.

Every method returns lo <= 0 <= hi, lo >= min and hi <= max, except for degenerate statistics
(no values, or max|x| < MIN_RANGE, e.g. an all-black image set): those get
[0, DEGENERATE_RANGE] (or [-DEGENERATE_RANGE, DEGENERATE_RANGE] when negative values were
seen) so that no scale is ever 0 or NaN.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .errors import DataError, OptionError

if TYPE_CHECKING:  # calibrate imports this module
    from .calibrate import TensorStats

MIN_RANGE = 2.0**-20  # a clip range narrower than this is degenerate
DEGENERATE_RANGE = 1e-3  # the range given to a degenerate (e.g. all-zero) tensor
KL_EPSILON = 1e-4  # counts given to an empty Q bin where P is non-zero (KL smoothing)


class Method(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    KL = "kl"


METHOD_NAMES = tuple(m.value for m in Method)


def as_method(method: Method | str) -> Method:
    """A Method from itself or its name (case-insensitive); OptionError listing the allowed ones."""
    if isinstance(method, Method):
        return method
    try:
        return Method(str(method).strip().lower())
    except ValueError:
        raise OptionError(
            f"unknown calibration method {method!r}; use one of: {', '.join(METHOD_NAMES)}"
        ) from None



def _check_levels(num_levels: int) -> int:
    if isinstance(num_levels, bool) or int(num_levels) != num_levels or num_levels < 4:
        raise OptionError(f"num_levels={num_levels!r} must be an integer >= 4 (256 for 8 bits)")
    return int(num_levels)


def _percentile_threshold(h: np.ndarray, step: float, percentile: float) -> float:
    c = np.cumsum(h)
    target = percentile / 100.0 * c[-1]
    b = int(np.searchsorted(c, target, side="left"))  # first bin whose cumulative count >= target
    b = min(b, h.size - 1)
    before = c[b - 1] if b > 0 else 0
    frac = (target - before) / h[b] if h[b] > 0 else 1.0
    return (b + float(np.clip(frac, 0.0, 1.0))) * step


def _mse_errors(h: np.ndarray, step: float, n_eff: int, num_levels: int, lo_abs: float | None, max_: float) -> np.ndarray:
    """Expected squared error for thresholds t_k = k*step, k = 1..n_eff (one-sided when lo_abs
    is None, else symmetric with the clipped range min(t, lo_abs) + min(t, max_))."""
    h = h[:n_eff].astype(np.float64)
    centres = (np.arange(n_eff) + 0.5) * step
    # suffix sums over bins b >= k of h, h*c, h*c^2 (index k: bins k..n_eff-1)
    s0 = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])
    s1 = np.concatenate([np.cumsum((h * centres)[::-1])[::-1], [0.0]])
    s2 = np.concatenate([np.cumsum((h * centres**2)[::-1])[::-1], [0.0]])
    k = np.arange(1, n_eff + 1)
    t = k * step
    clip = np.maximum(s2[k] - 2.0 * t * s1[k] + t * t * s0[k], 0.0)
    inside = s0[0] - s0[k]
    rng = t if lo_abs is None else np.minimum(t, lo_abs) + np.minimum(t, max_)
    noise = inside * (rng / (num_levels - 1)) ** 2 / 12.0
    return clip + noise


POW2_MSE_CANDIDATES = 8  # integer lengths tried: from the max's down to 7 below it (1/128 of the range)


def _power_of_two_mse_range(h, step, n_eff, amax, one_sided, lo_all, hi_all,
                            unsigned: bool = False) -> tuple[float, float]:
    """MSE over Ristretto's grids (module docstring): symmetric int8, step s = 2**(il - 8),
    values clipped at c = 127 * s. On the |x| histogram that grid has 128 levels over [0, c],
    so `_mse_errors` with num_levels = 128 gives the error at each bin edge; a clip beyond the
    last non-empty bin clips nothing and costs rounding noise alone. `unsigned` with a one-sided
    tensor: the unsigned grid (quantize.power_of_two_qparams), 256 levels over [0, 255 * s],
    il = ceil(log2(max))."""
    wide = unsigned and one_sided
    levels = 256 if wide else 128
    il_max = math.ceil(math.log2(amax)) + (0 if wide else 1)
    err = _mse_errors(h, step, n_eff, levels, None, amax)
    total = float(h[:n_eff].sum())
    best = None
    for il in range(il_max, il_max - POW2_MSE_CANDIDATES, -1):
        s = 2.0 ** (il - 8)
        c = (levels - 1) * s
        k = int(round(c / step))
        e = total * s * s / 12.0 if k >= n_eff else (float(err[k - 1]) if k >= 1 else math.inf)
        if best is None or e < best[0]:
            best = (e, c)
    c = best[1]  # at il_max, 127 * s can exceed the max: the range stays within [min, max]
    return (0.0 if one_sided else max(-c, lo_all)), min(c, hi_all)


def kl_divergences(h: np.ndarray, num_quantized: int) -> tuple[np.ndarray, np.ndarray]:
    """TensorRT's KL(P || Q) for every candidate number of kept bins i = num_quantized .. len(h)
    (see the module docstring); returns (candidates i, divergences). Closed form: within a
    merged bin j, Q is constant (Cq_j / nz_j) on P's non-zero bins, so sum_k p_k log q_k =
    sum_j Cp_j log(Cq_j / nz_j) — all candidates at once, no per-candidate loop."""
    h = np.asarray(h, np.float64)
    n = h.size
    cand = np.arange(num_quantized, n + 1)
    if cand.size == 0:
        return cand, np.zeros(0)
    c = np.concatenate([[0.0], np.cumsum(h)])
    nzc = np.concatenate([[0], np.cumsum(h > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    gc = np.concatenate([[0.0], np.cumsum(g)])
    total = c[-1]

    i = cand[:, None]  # (K, 1)
    m = i // num_quantized
    j = np.arange(num_quantized)[None, :]  # (1, J)
    start = j * m
    end = np.where(j == num_quantized - 1, i, (j + 1) * m)
    outl = total - c[cand]  # (K,)
    last_h = h[cand - 1]
    cq = c[end] - c[start]  # Q's merged bins: the kept bins without the outliers
    cp = cq.copy()
    cp[:, -1] += outl  # P's merged bins: with the outliers in the last kept bin
    nz = (nzc[end] - nzc[start]).astype(np.float64)
    nz[:, -1] += (last_h == 0) & (outl > 0)  # that last bin becomes non-zero in P
    q_sum = np.where(cq > 0, cq, np.where(nz > 0, KL_EPSILON, 0.0))  # smoothing
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.where(cp > 0, np.log(np.where(cp > 0, q_sum / np.maximum(nz, 1.0), 1.0)), 0.0)
    sum_p_log_q = (cp * log_q).sum(1)
    p_last = last_h + outl
    sum_p_log_p = gc[cand - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
    sq = q_sum.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (sum_p_log_p - sum_p_log_q) / total - math.log(total) + np.log(sq)
    kl = np.where(sq > 0, kl, np.inf)  # nothing kept: not a candidate
    return cand, kl


def choose_range(
    stats: TensorStats,
    method: Method | str,
    *,
    percentile: float = 99.99,
    num_levels: int = 256,
    power_of_two: bool = False,
    unsigned: bool = False,
) -> tuple[float, float]:
    """The clipping range [lo, hi] to quantize this tensor with (see the module docstring).
    Always lo <= 0 <= hi and hi - lo > 0; lo >= min and hi <= max unless degenerate.
    `power_of_two` makes MSE search Ristretto's power-of-two grids (module docstring).
    `unsigned` (with `power_of_two`): a one-sided tensor is quantized on 256 levels over [0, t]
    (quantize.power_of_two_qparams), so MSE searches that grid and KL merges into 256 bins
    instead of 128."""
    method = as_method(method)
    num_levels = _check_levels(num_levels)
    if method is Method.PERCENTILE and not (0.0 < float(percentile) <= 100.0):
        raise OptionError(f"percentile={percentile!r} must lie in (0, 100], e.g. 99.99")
    lo_all, hi_all = min(stats.min, 0.0), max(stats.max, 0.0)
    if stats.count == 0 or not (hi_all - lo_all >= MIN_RANGE):
        # degenerate (all zeros, nothing seen): a small fixed range so scales stay finite
        return (-DEGENERATE_RANGE if stats.min < 0 else 0.0, DEGENERATE_RANGE)
    if method is Method.MINMAX:
        return lo_all, hi_all
    if stats.bins == 0:
        raise DataError(f"{stats.name}: method '{method.value}' reads the histogram, and these statistics were "
                        "collected without one (bins=0, for min/max only); collect them again with bins=2048")

    n = stats.bins
    half = n // 2
    step = stats.bin_width
    one_sided = stats.min >= 0
    h = stats.hist[half:] if one_sided else stats.hist[half:] + stats.hist[half - 1 :: -1]
    nonzero = np.flatnonzero(h)
    n_eff = int(nonzero[-1]) + 1  # bins up to the last non-empty one
    amax = hi_all if one_sided else max(-lo_all, hi_all)

    if method is Method.PERCENTILE:
        t = _percentile_threshold(h[:n_eff], step, float(percentile))
    elif method is Method.MSE and power_of_two:
        return _power_of_two_mse_range(h, step, n_eff, amax, one_sided, lo_all, hi_all, unsigned)
    elif method is Method.MSE:
        err = _mse_errors(h, step, n_eff, num_levels, None if one_sided else -lo_all, hi_all)
        t = (int(np.argmin(err)) + 1) * step
    else:  # KL
        nq = num_levels if (power_of_two and unsigned and one_sided) else num_levels // 2
        hk = h[:n_eff].astype(np.int64)  # a copy
        if hk.size > 1:
            hk[0] = hk[1]  # the zero bin: see "KL and the zero bin" in the module docstring
        cand, kl = kl_divergences(hk, nq)
        t = amax if cand.size == 0 else int(cand[int(np.argmin(kl))]) * step
    t = min(t, amax)
    lo = 0.0 if one_sided else max(-t, lo_all)
    hi = min(t, hi_all)
    if hi - lo < MIN_RANGE:  # e.g. a percentile inside a tensor's zero bin: widen within [min, max]
        hi = min(hi_all, lo + MIN_RANGE)
        lo = max(lo_all, hi - MIN_RANGE)
    return float(lo), float(hi)


def choose_ranges(stats: Mapping[str, TensorStats], method: Method | str, **kw) -> dict[str, tuple[float, float]]:
    """choose_range for every tensor."""
    method = as_method(method)
    return {name: choose_range(s, method, **kw) for name, s in stats.items()}


__all__ = [
    "DEGENERATE_RANGE",
    "KL_EPSILON",
    "METHOD_NAMES",
    "MIN_RANGE",
    "Method",
    "as_method",
    "choose_range",
    "choose_ranges",
    "kl_divergences",
]
