"""Calibration: run the FP32 model over images, keep per-tensor statistics, choose clip ranges.

Nothing here keeps activations: each tensor the model taps (`SqueezeNet.forward(x, tap=...)`,
one name per tensor of `edgesqueeze.graph.lower(arch)`) goes through a streaming `Observer`
that keeps its exact min, max and count and a fixed-size histogram. `choose_range` turns those
statistics into the clipping range [lo, hi] that the quantizer derives scale and zero point from.

    stats = collect_stats(model, calibration_images)        # {tensor name: TensorStats}
    lo, hi = choose_range(stats["fire2.squeeze"], "kl")
    save_stats(stats, "calib.json", meta={...}); stats, meta = load_stats("calib.json")

The histogram
-------------
`bins` bins (even, divisible by 4) evenly cover [-bound, bound]; bin j is
[-bound + j*step, -bound + (j+1)*step), step = 2*bound/bins, and the last bin also holds +bound
(torch.histc's convention). `bound` is a power of two: the smallest one >= max|x| of the first
batch (at least 2**-20); a later batch with larger values doubles it (as often as needed) and
the histogram is merged exactly, old bin j -> new bin bins/4 + j//2 (the edges align). Zero is
always the lower edge of bin bins/2, so a ReLU's zeros all sit in that one bin.

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

import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised only without torch
    from .errors import missing_extra

    raise missing_extra("torch", "quantize") from e

from . import graph
from .data import LabelledImage, iter_batches, load_image, normalize, to_uint8_input
from .errors import DataError, OptionError

DEFAULT_BINS = 2048
MIN_BOUND = 2.0**-20  # the smallest histogram bound an observer uses
MIN_RANGE = 2.0**-20  # a clip range narrower than this is degenerate
DEGENERATE_RANGE = 1e-3  # the range given to a degenerate (e.g. all-zero) tensor
KL_EPSILON = 1e-4  # counts given to an empty Q bin where P is non-zero (KL smoothing)
# torch.histc counts in float32, exact only up to 2**24 per bin: larger tensors go in chunks
_HISTC_CHUNK = 2**24

STATS_FORMAT = "edgesqueeze-calibration-stats"
STATS_VERSION = 1


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


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class TensorStats:
    """What calibration keeps of one tensor: exact min, max, count, and a histogram of `bins`
    int64 counts evenly covering [-bound, bound] (see the module docstring)."""

    name: str
    min: float
    max: float
    count: int  # number of values seen
    hist: np.ndarray  # int64 counts, `bins` bins evenly covering [-bound, bound]
    bound: float  # > 0
    # mean of each channel (axis 1 of NCHW) over all images and positions; None for 2-D
    # tensors. The quantizer's bias correction needs the mean input of every conv.
    channel_mean: np.ndarray | None = None
    channel_max: np.ndarray | None = None  # max of each channel; for activation equalization

    def __post_init__(self) -> None:
        hist = np.array(self.hist, dtype=np.int64)  # a private, read-only copy
        if hist.ndim != 1 or hist.size < 4 or hist.size % 4:
            raise DataError(f"{self.name}: the histogram needs a number of bins divisible by 4, got shape {hist.shape}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise DataError(f"{self.name}: histogram bound {self.bound!r} must be a positive number")
        hist.flags.writeable = False
        object.__setattr__(self, "hist", hist)
        for key in ("channel_mean", "channel_max"):
            if getattr(self, key) is not None:
                cm = np.array(getattr(self, key), dtype=np.float64).reshape(-1)
                cm.flags.writeable = False
                object.__setattr__(self, key, cm)
        object.__setattr__(self, "min", float(self.min))
        object.__setattr__(self, "max", float(self.max))
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "bound", float(self.bound))

    @property
    def bins(self) -> int:
        return int(self.hist.size)

    @property
    def bin_width(self) -> float:
        return 2.0 * self.bound / self.bins

    @property
    def edges(self) -> np.ndarray:
        """The bins + 1 bin edges, -bound .. bound."""
        return np.linspace(-self.bound, self.bound, self.bins + 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return (self.name, self.min, self.max, self.count, self.bound) == (
            other.name, other.min, other.max, other.count, other.bound
        ) and np.array_equal(self.hist, other.hist)

    __hash__ = None  # type: ignore[assignment]  # holds an array

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "min": self.min,
            "max": self.max,
            "count": self.count,
            "bound": self.bound,
            "bins": self.bins,
            "hist": [int(v) for v in self.hist],
            "channel_mean": None if self.channel_mean is None else [float(v) for v in self.channel_mean],
            "channel_max": None if self.channel_max is None else [float(v) for v in self.channel_max],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorStats":
        """The inverse of to_dict; DataError saying what is wrong with a malformed entry."""
        if not isinstance(d, Mapping):
            raise DataError(f"a tensor entry is a {type(d).__name__}, expected an object")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise DataError("a tensor entry has no 'name'")
        missing = [k for k in ("min", "max", "count", "bound", "hist") if k not in d]
        if missing:
            raise DataError(f"{name}: missing {', '.join(missing)}")
        try:
            mn, mx, bound = float(d["min"]), float(d["max"]), float(d["bound"])
            count = d["count"]
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"count {count!r} is not an integer")
            hist = d["hist"]
            if not isinstance(hist, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in hist):
                raise TypeError("hist is not a list of integers")
            hist = np.array(hist, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise DataError(f"{name}: {e}") from None
        if "bins" in d and d["bins"] != hist.size:
            raise DataError(f"{name}: 'bins' says {d['bins']} but the histogram has {hist.size}")
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise DataError(f"{name}: min/max {mn}/{mx} are not finite")
        if count < 0 or (hist < 0).any():
            raise DataError(f"{name}: negative counts")
        if count > 0 and mn > mx:
            raise DataError(f"{name}: min {mn} > max {mx}")
        if int(hist.sum()) != count:
            raise DataError(f"{name}: the histogram holds {int(hist.sum())} values, count says {count}")
        if count > 0 and max(-mn, mx) > bound:
            raise DataError(f"{name}: values up to {max(-mn, mx)} lie outside the histogram bound {bound}")
        per_channel = {}
        for key in ("channel_mean", "channel_max"):
            cm = d.get(key)
            if cm is not None:
                try:
                    cm = np.array(cm, dtype=np.float64).reshape(-1)
                except (TypeError, ValueError) as e:
                    raise DataError(f"{name}: {key} is not a list of numbers ({e})") from None
                if not np.isfinite(cm).all():
                    raise DataError(f"{name}: {key} holds NaN or Inf")
            per_channel[key] = cm
        return cls(name, mn, mx, count, hist, bound, **per_channel)


def _pow2_at_least(v: float) -> float:
    """The smallest power of two >= v (v > 0)."""
    m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    return math.ldexp(1.0, e - 1) if m == 0.5 else math.ldexp(1.0, e)


def _double_hist(hist, times: int = 1):
    """A histogram over [-B, B] re-binned onto [-2**times B, 2**times B] (exact: edges align).
    Works on a torch tensor or a numpy array (1-D, length divisible by 4)."""
    n = hist.shape[0]
    for _ in range(times):
        merged = hist.reshape(n // 2, 2).sum(1)
        new = hist.new_zeros(n) if isinstance(hist, torch.Tensor) else np.zeros(n, hist.dtype)
        new[n // 4 : n // 4 + n // 2] = merged
        hist = new
    return hist


class Observer:
    """Streaming statistics of one tensor: exact min/max/count and a doubling histogram.

    `update` costs an aminmax and a histc over the tensor (a few torch ops); nothing of the
    tensor is kept. NaN or Inf raise DataError naming the tensor."""

    def __init__(self, name: str, bins: int = DEFAULT_BINS):
        bins = int(bins)
        if bins < 4 or bins % 4:
            raise OptionError(f"bins={bins}: the histogram needs a positive number of bins divisible by 4 (e.g. 2048)")
        self.name = name
        self.bins = bins
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.bound: float | None = None
        self._hist = torch.zeros(bins, dtype=torch.int64)
        self._channel_sum: "torch.Tensor | None" = None  # float64 per-channel sums of NCHW input
        self._channel_max: "torch.Tensor | None" = None

    def update(self, x: "torch.Tensor") -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        lo_t, hi_t = torch.aminmax(x)
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            what = "NaN" if math.isnan(lo) or math.isnan(hi) else "Inf"
            raise DataError(f"{what} in activations of {self.name}; check the weights")
        amax = max(-lo, hi)
        if self.bound is None:
            self.bound = _pow2_at_least(max(amax, MIN_BOUND))
        elif amax > self.bound:
            times = 0
            while amax > self.bound:
                self.bound *= 2.0
                times += 1
            self._hist = _double_hist(self._hist, times)
        flat = x.reshape(-1)
        b = self.bound
        for chunk in flat.split(_HISTC_CHUNK) if flat.numel() > _HISTC_CHUNK else (flat,):
            self._hist += torch.histc(chunk, self.bins, -b, b).to(torch.int64)
        if x.dim() == 4:
            sums = x.sum(dim=(0, 2, 3), dtype=torch.float64)
            self._channel_sum = sums if self._channel_sum is None else self._channel_sum + sums
            cmax = x.amax(dim=(0, 2, 3)).double()
            self._channel_max = cmax if self._channel_max is None else torch.maximum(self._channel_max, cmax)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += x.numel()

    def stats(self) -> TensorStats:
        if self.count == 0:
            return TensorStats(self.name, 0.0, 0.0, 0, np.zeros(self.bins, np.int64), MIN_BOUND)
        cm = None
        if self._channel_sum is not None:
            per_channel = self.count / self._channel_sum.numel()
            cm = (self._channel_sum / per_channel).numpy()
        cx = None if self._channel_max is None else self._channel_max.numpy()
        return TensorStats(self.name, self.min, self.max, self.count, self._hist.numpy().copy(), self.bound, cm, cx)


def merge_stats(name: str, parts: Sequence[TensorStats]) -> TensorStats:
    """The statistics of the concatenation of tensors from their statistics (exact min, max,
    count; histograms re-binned onto the largest bound, as an Observer would). All parts need
    the same number of bins."""
    parts = [p for p in parts if p.count > 0] or list(parts[:1])
    if not parts:
        raise DataError(f"{name}: nothing to merge")
    bins = {p.bins for p in parts}
    if len(bins) != 1:
        raise DataError(f"{name}: cannot merge histograms of {sorted(bins)} bins")
    bound = max(p.bound for p in parts)
    hist = np.zeros(parts[0].bins, np.int64)
    for p in parts:
        times = round(math.log2(bound / p.bound))
        if math.ldexp(p.bound, times) != bound:
            raise DataError(f"{name}: bounds {p.bound} and {bound} differ by other than a power of two")
        hist += _double_hist(p.hist, times)
    if all(p.count == 0 for p in parts):
        return TensorStats(name, 0.0, 0.0, 0, hist, bound)
    # the parts are concatenated along channels (a Fire's concat): their means line up in order
    def cat(key):
        vals = [getattr(p, key) for p in parts]
        return np.concatenate(vals) if all(v is not None for v in vals) else None

    return TensorStats(name, min(p.min for p in parts), max(p.max for p in parts),
                       sum(p.count for p in parts), hist, bound, cat("channel_mean"), cat("channel_max"))


# ---------------------------------------------------------------- running the model


def _image_path(item: Path | LabelledImage | str | os.PathLike) -> Path:
    return item.path if isinstance(item, LabelledImage) else Path(item)


def collect_stats(
    model,
    images: Sequence[Path | LabelledImage],
    *,
    batch_size: int = 16,
    bins: int = DEFAULT_BINS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, TensorStats]:
    """Run the FP32 model over the images and return {tensor name: TensorStats} for every
    tensor of `graph.lower(model.arch)` (graph order, "logits" last).

    Each image is read with `data.load_image` (errors name the file), resized and cropped with
    `to_uint8_input` and normalised with `normalize`, both by `model.arch.preprocess`.
    `progress(n)` is called after each batch with the number of images in it. The model runs in
    eval mode under torch.no_grad() (its training flag is restored afterwards).

    A Fire module's concat is not observed itself: its statistics are merged exactly from its
    two expand branches (same values), which saves about a third of the histogram work."""
    items = list(images)
    if not items:
        raise DataError("no calibration images given; give a folder with images")
    if int(batch_size) < 1:
        raise OptionError(f"batch_size={batch_size} must be at least 1")
    nodes = graph.lower(model.arch)
    derived = {n.name: n.inputs for n in nodes if n.kind is graph.OpKind.CONCAT}
    observers = {n.name: Observer(n.name, bins) for n in nodes if n.name not in derived}
    observers[graph.INPUT] = Observer(graph.INPUT, bins)  # the normalised input (NCHW)
    unexpected: set[str] = set()

    def tap(name: str, t: "torch.Tensor") -> None:
        obs = observers.get(name)
        if obs is not None:
            obs.update(t)
        elif name not in derived:
            unexpected.add(name)

    pre = model.arch.preprocess
    was_training = model.training
    model.eval()
    try:
        for batch in iter_batches(items, int(batch_size)):
            x = np.concatenate([normalize(to_uint8_input(load_image(_image_path(i)), pre), pre) for i in batch])
            with torch.no_grad():
                xt = torch.from_numpy(x)
                observers[graph.INPUT].update(xt)
                model(xt, tap=tap)
            if progress is not None:
                progress(len(batch))
    finally:
        model.train(was_training)

    unseen = [n for n, o in observers.items() if o.count == 0]
    if unseen or unexpected:
        raise RuntimeError(  # the model and graph.lower disagree: a bug, not a user error
            f"the model's taps do not match graph.lower({model.arch.name}): "
            f"never tapped {unseen}, unknown {sorted(unexpected)}"
        )
    out: dict[str, TensorStats] = {graph.INPUT: observers[graph.INPUT].stats()}
    for n in nodes:
        if n.name in derived:
            out[n.name] = merge_stats(n.name, [out[i] for i in derived[n.name]])
        else:
            out[n.name] = observers[n.name].stats()
    return out


# ---------------------------------------------------------------- choosing ranges


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


def _power_of_two_mse_range(h, step, n_eff, amax, one_sided, lo_all, hi_all) -> tuple[float, float]:
    """MSE over Ristretto's grids (module docstring): symmetric int8, step s = 2**(il - 8),
    values clipped at c = 127 * s. On the |x| histogram that grid has 128 levels over [0, c],
    so `_mse_errors` with num_levels = 128 gives the error at each bin edge; a clip beyond the
    last non-empty bin clips nothing and costs rounding noise alone."""
    il_max = math.ceil(math.log2(amax)) + 1
    err = _mse_errors(h, step, n_eff, 128, None, amax)
    total = float(h[:n_eff].sum())
    best = None
    for il in range(il_max, il_max - POW2_MSE_CANDIDATES, -1):
        s = 2.0 ** (il - 8)
        c = 127 * s
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
) -> tuple[float, float]:
    """The clipping range [lo, hi] to quantize this tensor with (see the module docstring).
    Always lo <= 0 <= hi and hi - lo > 0; lo >= min and hi <= max unless degenerate.
    `power_of_two` makes MSE search Ristretto's power-of-two grids (module docstring)."""
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
        return _power_of_two_mse_range(h, step, n_eff, amax, one_sided, lo_all, hi_all)
    elif method is Method.MSE:
        err = _mse_errors(h, step, n_eff, num_levels, None if one_sided else -lo_all, hi_all)
        t = (int(np.argmin(err)) + 1) * step
    else:  # KL
        nq = num_levels // 2
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


# ---------------------------------------------------------------- files


def save_stats(stats: Mapping[str, TensorStats], path: str | os.PathLike, *, meta: dict | None = None) -> None:
    """Write the statistics (and JSON-able `meta`, e.g. weights, images, bins) as JSON."""
    path = Path(path)
    doc = {
        "format": STATS_FORMAT,
        "version": STATS_VERSION,
        "meta": dict(meta or {}),
        "tensors": [s.to_dict() for s in stats.values()],
    }
    try:
        text = json.dumps(doc, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise DataError(f"calibration meta is not JSON-serialisable: {e}") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"{path}: cannot write the calibration statistics ({e.strerror or e})") from None


def load_stats(path: str | os.PathLike) -> tuple[dict[str, TensorStats], dict]:
    """(stats, meta) from a save_stats file; DataError with the reason when it is malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read the calibration statistics ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a calibration statistics file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not a calibration statistics file (invalid JSON: {e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(doc, dict) or doc.get("format") != STATS_FORMAT:
        raise DataError(f"{path}: not a calibration statistics file (no \"format\": \"{STATS_FORMAT}\")")
    if doc.get("version") != STATS_VERSION:
        raise DataError(f"{path}: calibration statistics version {doc.get('version')!r}, this edgesqueeze reads {STATS_VERSION}; calibrate again")
    tensors, meta = doc.get("tensors"), doc.get("meta", {})
    if not isinstance(tensors, list) or not isinstance(meta, dict):
        raise DataError(f"{path}: malformed calibration statistics ('tensors' must be a list, 'meta' an object)")
    out: dict[str, TensorStats] = {}
    for entry in tensors:
        try:
            s = TensorStats.from_dict(entry)
        except DataError as e:
            raise DataError(f"{path}: malformed calibration statistics: {e}") from None
        if s.name in out:
            raise DataError(f"{path}: malformed calibration statistics: tensor {s.name} appears twice")
        out[s.name] = s
    return out, meta


__all__ = [
    "DEFAULT_BINS",
    "DEGENERATE_RANGE",
    "KL_EPSILON",
    "METHOD_NAMES",
    "MIN_RANGE",
    "Method",
    "Observer",
    "TensorStats",
    "as_method",
    "choose_range",
    "choose_ranges",
    "collect_stats",
    "kl_divergences",
    "load_stats",
    "merge_stats",
    "save_stats",
]
