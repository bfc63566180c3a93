"""Calibration: run the FP32 model over images, keep per-tensor statistics, choose clip ranges.

Nothing here keeps activations: each tensor the model taps (`SqueezeNet.forward(x, tap=...)`,
one name per tensor of `edgesqueeze.graph.lower(arch)`) goes through a streaming `Observer`
that keeps its exact min, max and count and a fixed-size histogram (`bins=0`: none, for the
min/max method, which reads only min and max). `choose_range` turns those
statistics into the clipping range [lo, hi] that the quantizer derives scale and zero point from.

    stats = collect_stats(model, calibration_images)        # {tensor name: TensorStats}
    lo, hi = choose_range(stats["fire2.squeeze"], "kl")
    save_stats(stats, "calib.json", meta={...}); stats, meta = load_stats("calib.json")

The histogram
-------------
`bins` bins (even, divisible by 4) evenly cover [-bound, bound]; bin j is
[-bound + j*step, -bound + (j+1)*step), step = 2*bound/bins, and the last bin also holds +bound
(torch.histc's convention). The histogram is most of an observer's cost (a histc over every
value: about a tenth of the calibration pass of v1.0), so the pipeline asks for it only when the
range method reads it. `bound` is a power of two: the smallest one >= max|x| of the first
batch (at least 2**-20); a later batch with larger values doubles it (as often as needed) and
the histogram is merged exactly, old bin j -> new bin bins/4 + j//2 (the edges align). Zero is
always the lower edge of bin bins/2, so a ReLU's zeros all sit in that one bin.

The range choosers (`Method`, `choose_range`, `kl_divergences`) live in edgesqueeze/ranges.py
and are importable from here as well.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised only without torch
    from .errors import missing_extra

    raise missing_extra("torch", "quantize") from e

from . import graph
from .data import LabelledImage, load_image, normalize, to_uint8_input
from .errors import DataError, OptionError
from .ranges import (  # the range choosers, importable from here too (__all__)
    DEGENERATE_RANGE,
    KL_EPSILON,
    METHOD_NAMES,
    MIN_RANGE,
    Method,
    as_method,
    choose_range,
    choose_ranges,
    kl_divergences,
)

DEFAULT_BINS = 2048
MIN_BOUND = 2.0**-20  # the smallest histogram bound an observer uses
# torch.histc counts in float32, exact only up to 2**24 per bin: larger tensors go in chunks
_HISTC_CHUNK = 2**24

STATS_FORMAT = "edgesqueeze-calibration-stats"
STATS_VERSION = 1


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class TensorStats:
    """What calibration keeps of one tensor: exact min, max, count, and a histogram of `bins`
    int64 counts evenly covering [-bound, bound] (see the module docstring), or no histogram
    (`bins` 0: collected for the min/max method only)."""

    name: str
    min: float
    max: float
    count: int  # number of values seen
    hist: np.ndarray  # int64 counts, `bins` bins evenly covering [-bound, bound]; empty: not collected
    bound: float  # > 0
    # mean of each channel (axis 1 of NCHW) over all images and positions; None for 2-D
    # tensors. The quantizer's bias correction needs the mean input of every conv.
    channel_mean: np.ndarray | None = None
    channel_max: np.ndarray | None = None  # max of each channel; for activation equalization

    def __post_init__(self) -> None:
        hist = np.array(self.hist, dtype=np.int64)  # a private, read-only copy
        if hist.ndim != 1 or (hist.size and (hist.size < 4 or hist.size % 4)):
            raise DataError(f"{self.name}: the histogram needs a number of bins divisible by 4 (or none), "
                            f"got shape {hist.shape}")
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
        if hist.size and int(hist.sum()) != count:
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


_SUM_CHUNK = 1 << 20  # values per float64 partial sum in channel_sums (8 MB)


class Scratch:
    """Reusable buffers (float64 unless asked otherwise), one per key, grown when a larger one
    is asked for.
    Calibration's partial sums and patch layouts take their 1-30 MB temporaries from here rather
    than allocating them for every chunk of every layer: that churn, between the forward pass's
    own allocations, left the heap fragmented (measured on v1.0, 194 images: the pass with
    patch moments peaked ~300 MB higher)."""

    def __init__(self):
        self._flat: dict[str, "torch.Tensor"] = {}

    def get(self, key: str, shape: tuple[int, ...], *, zero: bool = False,
            dtype: "torch.dtype" = torch.float64) -> "torch.Tensor":
        n = math.prod(shape)
        buf = self._flat.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            del buf
            self._flat.pop(key, None)  # the old one is freed before the new one is made
            buf = self._flat[key] = torch.empty(n, dtype=dtype)
        out = buf[:n].view(shape)
        return out.zero_() if zero else out


def channel_sums(x: "torch.Tensor", scratch: Scratch | None = None) -> "torch.Tensor":
    """float64 sum of each channel (axis 1) of an NCHW tensor, a few images at a time: summing a
    whole batch with dtype=float64 makes a float64 copy of it (300 MB for 32 conv1 outputs of
    v1.0). The float sums are grouped by those images, so they can differ from one sum over the
    batch in the last bits. With `scratch`, the float64 copies go there (the same values:
    sum(dtype=float64) sums a float64 copy)."""
    step = max(1, _SUM_CHUNK // max(1, x[0].numel()))
    total = None
    for i in range(0, x.shape[0], step):
        part = x[i:i + step]
        if scratch is None:
            part = part.sum(dim=(0, 2, 3), dtype=torch.float64)
        else:
            part = scratch.get("channel_sums", tuple(part.shape)).copy_(part).sum(dim=(0, 2, 3))
        total = part if total is None else total + part
    return total


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

    def __init__(self, name: str, bins: int = DEFAULT_BINS, *, scratch: Scratch | None = None):
        bins = int(bins)
        if bins < 0 or bins % 4:
            raise OptionError(f"bins={bins}: the histogram needs a number of bins divisible by 4 (e.g. 2048), "
                              "or 0 for none")
        self.name = name
        self.bins = bins
        self.scratch = scratch
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
        if self.bins:
            for chunk in flat.split(_HISTC_CHUNK) if flat.numel() > _HISTC_CHUNK else (flat,):
                self._hist += torch.histc(chunk, self.bins, -b, b).to(torch.int64)
        if x.dim() == 4:
            sums = channel_sums(x, self.scratch)
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
    the same number of bins, or none has a histogram."""
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


def pixel_batches(items: Sequence, pre, batch_size: int, *, pixels: np.ndarray | None = None,
                  store: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """uint8 NHWC batches of the images as the models take them: slices of `pixels` when given
    (nothing is read), else each image read with `data.load_image` (errors name the file) and
    resized/cropped with `to_uint8_input` by `pre`. With `store` (a uint8 (N, S, S, 3) array),
    each decoded batch is also written there, so later passes need not decode again."""
    for start in range(0, len(items) if pixels is None else len(pixels), int(batch_size)):
        if pixels is not None:
            yield pixels[start:start + batch_size]
            continue
        batch = np.stack([to_uint8_input(load_image(_image_path(i)), pre) for i in items[start:start + batch_size]])
        if store is not None:
            store[start:start + len(batch)] = batch
        yield batch


def check_pixels(pixels, count: int | None, pre) -> np.ndarray:
    """`pixels` as uint8 (N, crop, crop, 3), N == count when given; DataError saying what is wrong."""
    px = np.asarray(pixels)
    want = (pre.crop, pre.crop, 3)
    if px.dtype != np.uint8 or px.ndim != 4 or px.shape[1:] != want:
        raise DataError(f"pixels must be uint8 (N, {pre.crop}, {pre.crop}, 3) as data.load_pixels gives them, "
                        f"got {px.dtype} {px.shape}")
    if count is not None and len(px) != count:
        raise DataError(f"{len(px)} rows of pixels for {count} images; give the pixels of exactly these images")
    return px


class StatsCollector:
    """The observers of one calibration pass over `arch`: per batch, `observe_input(x)` with the
    normalised input and `tap` as the model's tap (SqueezeNet.forward(x, tap=...)); then
    `stats()`. A Fire module's concat is not observed itself: its statistics are merged exactly
    from its two expand branches (same values), which saves about a third of the histogram work."""

    def __init__(self, arch, bins: int = DEFAULT_BINS, *, scratch: Scratch | None = None):
        self.arch = arch
        self.nodes = graph.lower(arch)
        self.derived = {n.name: n.inputs for n in self.nodes if n.kind is graph.OpKind.CONCAT}
        scratch = scratch or Scratch()
        self.observers = {n.name: Observer(n.name, bins, scratch=scratch) for n in self.nodes if n.name not in self.derived}
        self.observers[graph.INPUT] = Observer(graph.INPUT, bins, scratch=scratch)  # the normalised input (NCHW)
        self.unexpected: set[str] = set()

    def observe_input(self, x: "torch.Tensor") -> None:
        self.observers[graph.INPUT].update(x)

    def tap(self, name: str, t: "torch.Tensor") -> None:
        obs = self.observers.get(name)
        if obs is not None:
            obs.update(t)
        elif name not in self.derived:
            self.unexpected.add(name)

    def stats(self) -> dict[str, TensorStats]:
        """{tensor name: TensorStats} in graph order ("input" first, "logits" last)."""
        unseen = [n for n, o in self.observers.items() if o.count == 0]
        if unseen or self.unexpected:
            raise RuntimeError(  # the model and graph.lower disagree: a bug, not a user error
                f"the model's taps do not match graph.lower({self.arch.name}): "
                f"never tapped {unseen}, unknown {sorted(self.unexpected)}"
            )
        out: dict[str, TensorStats] = {graph.INPUT: self.observers[graph.INPUT].stats()}
        for n in self.nodes:
            if n.name in self.derived:
                out[n.name] = merge_stats(n.name, [out[i] for i in self.derived[n.name]])
            else:
                out[n.name] = self.observers[n.name].stats()
        return out


class ChannelMaxima:
    """Exact per-channel maxima of the named NCHW tensors, as a tap: all that activation
    equalization needs of a calibration pass (Observer keeps the same values, at the cost of
    its histograms)."""

    def __init__(self, names):
        self.names = set(names)
        self.maxima: dict[str, "torch.Tensor"] = {}

    def tap(self, name: str, t: "torch.Tensor") -> None:
        if name not in self.names:
            return
        m = t.detach().amax(dim=(0, 2, 3)).double()
        if not bool(torch.isfinite(m).all()):
            raise DataError(f"NaN or Inf in activations of {name}; check the weights")
        have = self.maxima.get(name)
        self.maxima[name] = m if have is None else torch.maximum(have, m)

    def result(self) -> dict[str, np.ndarray]:
        missing = sorted(self.names - set(self.maxima))
        if missing:
            raise RuntimeError(f"never tapped {missing}")  # a bug: the names are the model's own
        return {n: m.numpy() for n, m in self.maxima.items()}


def collect_stats(
    model,
    images: Sequence[Path | LabelledImage] | None,
    *,
    batch_size: int = 16,
    bins: int = DEFAULT_BINS,
    progress: Callable[[int], None] | None = None,
    pixels: np.ndarray | None = None,
) -> dict[str, TensorStats]:
    """Run the FP32 model over the images and return {tensor name: TensorStats} for every
    tensor of `graph.lower(model.arch)` (graph order, "logits" last).

    Each image is read with `data.load_image` (errors name the file), resized and cropped with
    `to_uint8_input` and normalised with `normalize`, both by `model.arch.preprocess`; or, with
    `pixels` (uint8 (N, S, S, 3), e.g. data.load_pixels of the same images), nothing is read
    (`images` may then be None). `progress(n)` is called after each batch with the number of
    images in it. The model runs in eval mode under torch.no_grad() (its training flag is
    restored afterwards)."""
    items = [] if images is None else list(images)
    pre = model.arch.preprocess
    if pixels is not None:
        pixels = check_pixels(pixels, len(items) if images is not None else None, pre)
    if not (items if pixels is None else len(pixels)):
        raise DataError("no calibration images given; give a folder with images")
    if int(batch_size) < 1:
        raise OptionError(f"batch_size={batch_size} must be at least 1")
    collector = StatsCollector(model.arch, bins)
    was_training = model.training
    model.eval()
    try:
        for batch in pixel_batches(items, pre, int(batch_size), pixels=pixels):
            with torch.no_grad():
                xt = torch.from_numpy(normalize(batch, pre))
                collector.observe_input(xt)
                model(xt, tap=collector.tap)
            if progress is not None:
                progress(len(batch))
    finally:
        model.train(was_training)
    return collector.stats()


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
    "ChannelMaxima",
    "KL_EPSILON",
    "METHOD_NAMES",
    "MIN_RANGE",
    "Method",
    "Observer",
    "Scratch",
    "StatsCollector",
    "TensorStats",
    "as_method",
    "channel_sums",
    "check_pixels",
    "choose_range",
    "choose_ranges",
    "collect_stats",
    "kl_divergences",
    "load_stats",
    "merge_stats",
    "pixel_batches",
    "save_stats",
]
