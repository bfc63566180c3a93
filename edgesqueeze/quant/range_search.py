"""Activation ranges searched on the logits: shrink each tensor's min/max range while the
integer model's logits get closer to FP32's on the calibration images (numpy; torch kernels).

    ranges, report = search_ranges(qm, pixels, fp32_logits, conv_kernel=ExactFloat32Conv())
    qm2 = with_ranges(qm, ranges)

Why. Per-tensor clipping methods chosen on each tensor's own histogram (percentile, MSE, KL)
lose 3-8 dB of logit SQNR against min/max on SqueezeNet: the few large activations they clip
carry the class evidence. Whether a tensor can lose part of its range is a question about the
logits, not about the tensor's own squared error, so each candidate is scored there.

How. Greedy, in graph order, over the tensors that own their parameters (a conv's output, a
concat; a max pool and the convs writing into a concat share them, quantize.py): for each, the
factors of `factors` below 1 are tried from the largest down, each scaling the tensor's range
[lo, hi] to [f lo, f hi]; a factor is kept when the logit SQNR against FP32 on the search
images rises by more than `min_gain_db` and on each of `groups` interleaved groups of those
images (images 0, g, 2g, ... form the first; the whole set's score alone let the search fit a
few images), and the search of that tensor stops at the first factor that does not beat the
best so far (the score as a function of the clip is one bump:
rounding noise falls and clipping error grows as the range shrinks). Widening is not tried:
every SqueezeNet tensor ends in a ReLU, so its zero point is fixed at -128 and a wider range
only coarsens the grid.

Only the tensor's parameters and the int32 biases of the convs reading it change with a range
(the int8 weights and their per-channel scales depend on the weights alone): `with_ranges`
rescales each bias to its new accumulator step, rint(bias * s_in_old / s_in_new), which is
within half an old step of quantizing the float bias afresh; empirical bias correction, run
afterwards by the pipeline, sets every bias from the FP32 means again anyway.

Cost. A candidate for a tensor reruns the graph from the first conv that writes it, on int8
inputs kept from the best model so far: on average half the network per candidate. The int8
tensors of every node are kept for the search images (about 5 MB per image for v1.0).
Measured on v1.0 with 97 images, 2 cores: 25-28 partial runs, 71-84 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import DataError, OptionError
from ..graph import OpKind
from .params import QuantizedModel
from .quantize import model_qparams_rule, parameter_owners
from .range_split import clamped
from .reference import ConvKernel, run_int8

SEARCH_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
# the pipeline searches on the calibration images, at most this many (memory: every int8 tensor
# of every image is kept, about 5 MB per image for v1.0). On the 2-fold CV of the calibration
# split, scored on all images alone, 48 images per fold lowered the held-out logit SQNR (28.11 dB
# against 28.42 dB for min/max: the shrinks fitted those few images) and all 97 raised it
# (29.31 dB); with the 2-group consensus, 97 images gave 29.51 dB
DEFAULT_SEARCH_IMAGES = 128
MIN_GAIN_DB = 0.05  # a shrink must beat the best so far by this much (noise on a hundred images)
# a shrink must also raise the SQNR on each of this many interleaved groups of the search images:
# one that helps only a few images is a fit to them, not a better range (module doc)
CONSENSUS_GROUPS = 2


def owners(qm: QuantizedModel) -> list[str]:
    """The tensors that own quantization parameters, in graph order: conv outputs not written
    into a concat, and concats (max pools and concat inputs share theirs)."""
    return list(dict.fromkeys(parameter_owners(qm.nodes).values()))


def _shared_with(qm: QuantizedModel) -> dict[str, list[str]]:
    """{owner: every tensor whose parameters are the owner's, itself included}."""
    out: dict[str, list[str]] = {}
    for tensor, owner in parameter_owners(qm.nodes).items():
        out.setdefault(owner, []).append(tensor)
    return out


def with_ranges(qm: QuantizedModel, ranges: dict[str, tuple[float, float]]) -> QuantizedModel:
    """`qm` with the owners named in `ranges` quantized to those ranges: their parameters (and
    those of the tensors sharing them) and the int32 biases of the convs reading them (module
    doc). Ranges of tensors not in `ranges` stay as they are."""
    make = model_qparams_rule(qm)
    shared = _shared_with(qm)
    unknown = sorted(set(ranges) - set(shared))
    if unknown:
        raise OptionError(f"no quantization parameters of their own: {', '.join(unknown)}; "
                          f"give ranges of {', '.join(shared)}")
    tensors = dict(qm.tensors)
    for owner, (lo, hi) in ranges.items():
        p = make(lo, hi)
        for t in shared[owner]:
            tensors[t] = p
    convs = dict(qm.convs)
    for name, c in qm.convs.items():
        old, new = np.float32(qm.tensors[c.input].scale), np.float32(tensors[c.input].scale)
        if old == new:
            continue
        # bias in accumulator steps s_in * s_w[c]: the same real value at the new input scale
        b = np.rint(c.bias.astype(np.float64) * (float(old) / float(new)))
        if np.abs(b).max() >= 2**31:
            raise OptionError(f"{name}: a bias does not fit int32 at the searched input range")
        convs[name] = replace(c, bias=b.astype(np.int32))
    ranges_info = dict(qm.calibration.get("ranges", {}))
    ranges_info.update({k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()})
    return replace(qm, tensors=tensors, convs=convs, calibration={**qm.calibration, "ranges": ranges_info})


@dataclass(frozen=True)
class RangeSearch:
    """What the search chose and measured on its images."""

    factors: dict[str, float]  # owner -> the kept factor of its min/max range (1.0: unchanged)
    sqnr_before_db: float
    sqnr_after_db: float
    images: int
    candidates: int  # partial runs of the integer model

    def to_dict(self) -> dict:
        return {"factors": {k: v for k, v in self.factors.items() if v != 1.0},
                "sqnr_before_db": round(self.sqnr_before_db, 3), "sqnr_after_db": round(self.sqnr_after_db, 3),
                "images": self.images, "candidates": self.candidates}


def check_factors(factors: Sequence[float]) -> tuple[float, ...]:
    fs = tuple(float(f) for f in factors)
    if not fs or any(not (math.isfinite(f) and 0.0 < f <= 1.0) for f in fs):
        raise OptionError(f"range search factors {factors!r} must be numbers in (0, 1], e.g. {SEARCH_FACTORS}")
    return tuple(sorted(set(fs) | {1.0}, reverse=True))


def search_ranges(qm: QuantizedModel, pixels: np.ndarray, fp32: np.ndarray, *,
                  factors: Sequence[float] = SEARCH_FACTORS, min_gain_db: float = MIN_GAIN_DB,
                  order: Sequence[str] | None = None, groups: int = CONSENSUS_GROUPS,
                  conv_kernel: ConvKernel | None = None) -> tuple[dict[str, tuple[float, float]], RangeSearch]:
    """({owner: searched range}, report). `qm`: the model as calibrated (its ranges are the
    starting point, min/max in the pipeline); `pixels`: uint8 (N, S, S, 3) calibration images
    (never evaluation ones); `fp32`: the FP32 model's logits on them. `order`: the owners to
    search, in that order (default: all, graph order). The searched ranges never score below
    the starting ones on these images: a factor is kept only when it scores higher."""
    from ..metrics import sqnr_db

    pixels = np.asarray(pixels)
    fp32 = np.asarray(fp32, np.float32)
    if pixels.ndim != 4 or len(pixels) == 0 or len(fp32) != len(pixels):
        raise DataError(f"range search needs calibration pixels (N, S, S, 3) and their FP32 logits, got "
                        f"{pixels.shape} and {fp32.shape}")
    fs = check_factors(factors)
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= len(pixels):
        raise OptionError(f"range search groups={groups!r} must be an integer from 1 to the {len(pixels)} "
                          f"search images (1: the whole set's score alone)")
    names = owners(qm)
    fixed = clamped(qm.arch)  # a range-split tensor's grid must end at its clamp (quant/range_split.py)
    searchable = [o for o in names if o not in fixed]
    order = list(searchable if order is None else order)
    bad = [o for o in order if o not in searchable]
    if bad:
        raise OptionError(f"not searchable: {', '.join(bad)}; choose among {', '.join(searchable)}")
    base = {}
    for o in names:
        lo, hi = qm.calibration.get("ranges", {}).get(o) or qm.tensors[o].range()
        base[o] = (float(lo), float(hi))
    index = {n.name: k for k, n in enumerate(qm.nodes)}
    # a tensor's candidates rerun the graph from the first conv that writes it
    first_writer = {}
    for o in names:
        node = qm.nodes[index[o]]
        first_writer[o] = min(index[i] for i in node.inputs) if node.kind is OpKind.CONCAT else index[o]
    chosen = {o: 1.0 for o in names}
    run = run_int8(with_ranges(qm, base), pixels, keep=True, conv_kernel=conv_kernel)
    logits, env = run.logits, run.tensors
    parts = [np.arange(g, len(pixels), groups) for g in range(groups)]

    def scores(lg) -> tuple[float, list[float]]:
        return sqnr_db(fp32, lg), ([sqnr_db(fp32[p], lg[p]) for p in parts] if groups > 1 else [])

    best, best_parts = scores(logits)
    before = best
    runs = 1
    for o in order:
        lo, hi = base[o]
        for f in fs[1:]:
            ranges = {k: (base[k][0] * chosen[k], base[k][1] * chosen[k]) for k in names}
            ranges[o] = (lo * f, hi * f)
            cand = with_ranges(qm, ranges)
            # the graph again from the first conv that writes the tensor (resumed, not rerun)
            rerun = run_int8(cand, pixels, keep=True, conv_kernel=conv_kernel, start=first_writer[o], tensors=env)
            cand_logits, cand_env = rerun.logits, rerun.tensors
            runs += 1
            score, score_parts = scores(cand_logits)
            if not (score > best + min_gain_db and all(a > b for a, b in zip(score_parts, best_parts))):
                break
            best, best_parts, chosen[o], env = score, score_parts, f, cand_env
    final = {k: (base[k][0] * chosen[k], base[k][1] * chosen[k]) for k in names}
    return final, RangeSearch(chosen, before, best, len(pixels), runs)


__all__ = ["CONSENSUS_GROUPS", "DEFAULT_SEARCH_IMAGES", "MIN_GAIN_DB", "RangeSearch", "SEARCH_FACTORS", "check_factors", "owners",
           "search_ranges", "with_ranges"]
