"""Which convs to keep in float for an accuracy target, chosen by 2-fold CV on the calibration split.

    target = AccuracyTarget.make(min_agreement=97.0)            # and/or max_drop=0.3
    search = search_float_convs(model, items, pixels, options, target, sensitivity_images=32)
    search.float_convs      # the fewest convs, in order of gain, with which the CV target holds

A float-kept conv (params.py, "Float-kept convs") runs in float32 between a dequantize of its
int8 input and a quantize to its output's parameters, so keeping it in float removes its
weight rounding (and the rounding of its int32 requantization) but not the rounding of the
tensors around it.

The cross-validation is that of benchmarks/cv_options.py: the calibration images are split into
the even-numbered and the odd-numbered half; each half is calibrated on (the whole quantizer:
`pipeline.calibrate_and_quantize` with the given options) and the other half is measured with
the integer reference, then the other way round, and the two held-out halves are pooled. The
evaluation images are never read.

1. Sensitivity: with the two folds' quantized models, each conv L alone is kept in float and
   the first `sensitivity_images` held-out images (half from each fold) are run; the table
   records the logit SQNR against FP32 and the top-1 agreement with FP32, and their gains over
   the all-integer model on the same images.
2. Ranking: by SQNR gain, then by agreement gain. Agreement on the sensitivity images moves by
   whole images (one of 32 is 3.1 pp), which on v1.0 ranked convs first whose SQNR gain was
   0.07 dB or below zero; the SQNR is continuous.
3. Greedy: the convs are added in that order, and after each the whole held-out CV (every
   calibration image, once) is measured; the search stops at the first set that meets the
   target. When even every conv in float misses it, `TargetUnreachable` (an OptionError) says
   so with the figures (the greedy steps are not monotone: the CV moves by whole images, so a
   partial set can meet a target that every conv in float misses, which is why every step is
   measured).

Reference runs: (convs + 1) x `sensitivity_images` images for the table, plus one pass over the
calibration images for the baseline and for each greedy step; `reference_images` counts them. The integer convs run on torch's exact float32 kernels (exact_conv.py), so this
module needs torch (imported when a search runs); the module itself imports numpy only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import OptionError
from ..graph import OpKind

DEFAULT_SENSITIVITY_IMAGES = 32
BATCH = 16  # images per reference run

OnPass = Callable[[str, int, int], None]  # (pass name, done, total)


def _percent(value, what: str, *, lo: float, hi: float, lo_open: bool, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) > hi or float(value) < lo \
            or (lo_open and float(value) == lo):
        lo_txt = f"{'above' if lo_open else 'at least'} {lo:g}"
        raise OptionError(f"{what}={value!r} must be a number {lo_txt} and at most {hi:g}; {fix}")
    return float(value)


@dataclass(frozen=True)
class AccuracyTarget:
    """What the CV must show: top-1 agreement with FP32 >= `min_agreement` % and/or top-1 drop
    <= `max_drop` percentage points (both, when both are given)."""

    min_agreement: float | None = None
    max_drop: float | None = None

    @classmethod
    def make(cls, *, min_agreement=None, max_drop=None) -> "AccuracyTarget | None":
        """The checked target, or None when neither is given (the all-integer default)."""
        if min_agreement is None and max_drop is None:
            return None
        a = None if min_agreement is None else _percent(
            min_agreement, "min_agreement", lo=0.0, hi=100.0, lo_open=True,
            fix="give the top-1 agreement with FP32 in percent, e.g. 97")
        d = None if max_drop is None else _percent(
            max_drop, "max_drop", lo=0.0, hi=100.0, lo_open=False,
            fix="give the allowed top-1 drop in percentage points, e.g. 0.3")
        return cls(a, d)

    def holds(self, score: "CVScore") -> bool:
        ok = True
        if self.min_agreement is not None:
            ok &= score.agreement >= self.min_agreement - 1e-9
        if self.max_drop is not None:
            ok &= bool(np.isfinite(score.drop)) and score.drop <= self.max_drop + 1e-9
        return bool(ok)

    def describe(self) -> str:
        parts = []
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement with FP32 >= {self.min_agreement:g} %")
        if self.max_drop is not None:
            parts.append(f"top-1 drop <= {self.max_drop:g} pp")
        return " and ".join(parts)

    def to_dict(self) -> dict:
        return {"min_agreement": self.min_agreement, "max_drop": self.max_drop}


@dataclass(frozen=True)
class CVScore:
    """Pooled held-out figures: top-1 agreement with FP32 (%), logit SQNR (dB), and with labels
    the FP32 and INT8 top-1 (%) and the drop (pp; NaN without labels)."""

    images: int
    agreement: float
    sqnr_db: float
    top1_fp32: float = float("nan")
    top1_int8: float = float("nan")

    @property
    def drop(self) -> float:
        return self.top1_fp32 - self.top1_int8

    def to_dict(self) -> dict:
        return {"images": self.images, "agreement": round(self.agreement, 3), "sqnr_db": _r(self.sqnr_db),
                "top1_fp32": _r(self.top1_fp32), "top1_int8": _r(self.top1_int8), "drop_pp": _r(self.drop)}


def _r(x: float):
    return None if not np.isfinite(x) else round(float(x), 3)


@dataclass(frozen=True)
class LayerSensitivity:
    """One conv kept in float alone, on the sensitivity images."""

    conv: str
    sqnr_db: float
    sqnr_gain_db: float
    agreement: float
    agreement_gain: float  # percentage points over the all-integer model on the same images

    def to_dict(self) -> dict:
        return {"conv": self.conv, "sqnr_db": _r(self.sqnr_db), "sqnr_gain_db": _r(self.sqnr_gain_db),
                "agreement": round(self.agreement, 3), "agreement_gain_pp": round(self.agreement_gain, 3)}


@dataclass(frozen=True)
class SearchStep:
    float_convs: tuple[str, ...]
    score: CVScore
    meets: bool

    def to_dict(self) -> dict:
        return {"float_convs": list(self.float_convs), **self.score.to_dict(), "meets_target": self.meets}


@dataclass(frozen=True)
class FloatConvSearch:
    """What the search measured and chose (module doc)."""

    target: AccuracyTarget
    calibration_images: int
    sensitivity_images: int
    baseline: CVScore  # every conv integer
    all_float: CVScore | None  # every conv in float (None unless the greedy got that far)
    layers: tuple[LayerSensitivity, ...]  # ranked, most gain first
    steps: tuple[SearchStep, ...]
    float_convs: tuple[str, ...]  # the chosen set, in order of gain
    met: bool
    reference_images: int  # images run through the integer reference
    seconds: float
    seconds_by_part: dict = field(default_factory=dict)

    @property
    def after(self) -> CVScore:
        """The CV figures of the chosen set (the baseline when nothing is kept in float)."""
        return self.steps[-1].score if self.steps else self.baseline

    def to_dict(self) -> dict:
        return {
            "target": self.target.to_dict(), "target_text": self.target.describe(), "met": self.met,
            "cv": "2-fold on the calibration split: calibrate on the even-numbered half, measure on the "
                  "odd-numbered half, and the other way round; held-out halves pooled",
            "calibration_images": self.calibration_images, "sensitivity_images": self.sensitivity_images,
            "float_convs": list(self.float_convs),
            "cv_before": self.baseline.to_dict(), "cv_after": self.after.to_dict(),
            "cv_all_float": None if self.all_float is None else self.all_float.to_dict(),
            "sensitivity": [s.to_dict() for s in self.layers],
            "steps": [s.to_dict() for s in self.steps],
            "reference_images": self.reference_images, "seconds": round(self.seconds, 1),
            "seconds_by_part": {k: round(v, 1) for k, v in self.seconds_by_part.items()},
        }


class TargetUnreachable(OptionError):
    """The target does not hold on the CV even with every conv in float."""

    def __init__(self, message: str, search: FloatConvSearch):
        super().__init__(message)
        self.search = search


def check_sensitivity_images(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise OptionError(f"sensitivity_images={value!r} must be an integer >= 2 (held-out images per conv, "
                          f"half from each fold; default {DEFAULT_SENSITIVITY_IMAGES})")
    return int(value)


def folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(calibration indices, held-out indices) of the two folds: even-numbered, odd-numbered."""
    idx = np.arange(n)
    halves = [idx[0::2], idx[1::2]]
    return [(halves[k], halves[1 - k]) for k in (0, 1)]


def score(fp32: np.ndarray, q: np.ndarray, labels: np.ndarray | None) -> CVScore:
    from ..metrics import agreement, sqnr_db

    s = CVScore(len(q), agreement(fp32, q), sqnr_db(fp32, q))
    if labels is not None and len(labels) and (labels >= 0).all():
        t_f = 100.0 * float((fp32.argmax(1) == labels).mean())
        t_q = 100.0 * float((q.argmax(1) == labels).mean())
        s = CVScore(s.images, s.agreement, s.sqnr_db, t_f, t_q)
    return s


def reference_logits(qm, pixels: np.ndarray, *, kernel=None) -> np.ndarray:
    """The integer reference's logits, its integer convs on exact float32 kernels (exact_conv.py)."""
    from ..quant.reference import run_int8

    if kernel is None:
        from ..exact_conv import ExactFloat32Conv

        kernel = ExactFloat32Conv()
    return np.concatenate([run_int8(qm, pixels[i:i + BATCH], conv_kernel=kernel).logits
                           for i in range(0, len(pixels), BATCH)])


def rank(layers: Sequence[LayerSensitivity], order: Sequence[str]) -> list[LayerSensitivity]:
    """Most SQNR gain first, then most agreement gain, then graph `order` (module doc, step 2)."""
    position = {conv: i for i, conv in enumerate(order)}
    return sorted(layers, key=lambda s: (-s.sqnr_gain_db, -s.agreement_gain, position[s.conv]))


def search_float_convs(model, items: Sequence, pixels: np.ndarray, options, target: AccuracyTarget, *,
                       sensitivity_images: int = DEFAULT_SENSITIVITY_IMAGES, fp32: np.ndarray | None = None,
                       on_pass: OnPass | None = None) -> FloatConvSearch:
    """The fewest convs to keep in float for `target` on the 2-fold CV of the calibration
    images `items` (decoded: `pixels`, as the model takes them), quantized with `options`
    (pipeline.QuantizeOptions) — module doc. `model` is the FP32 SqueezeNet; `fp32` its logits
    on `pixels` when already computed. Labels (item.label >= 0 on every image) give top-1 and
    drop; `target.max_drop` needs them. Raises TargetUnreachable when even every conv in float
    misses the target."""
    from ..pipeline import calibrate_and_quantize
    from .quantize import float_conv_weights, with_float_convs

    n_sens = check_sensitivity_images(sensitivity_images)
    if len(items) != len(pixels) or len(items) < 4:
        raise OptionError(f"the CV needs at least 4 calibration images with their pixels (got {len(items)} images, "
                          f"{len(pixels)} decoded)")
    labels = np.array([getattr(i, "label", -1) for i in items])
    if target.max_drop is not None and not (labels >= 0).all():
        raise OptionError(f"max_drop needs a label on every calibration image ({int((labels < 0).sum())} of "
                          f"{len(labels)} have none); use min_agreement instead, which needs no labels")
    t_start = time.perf_counter()
    parts: dict[str, float] = {}
    ran = [0]

    def tell(name: str, done: int, total: int) -> None:
        if on_pass:
            on_pass(name, done, total)

    from ..exact_conv import ExactFloat32Conv

    # one kernel for the whole search: it checks each conv against numpy on its first chunk once
    # (exact_conv.py), not on every run
    kernel = ExactFloat32Conv()
    if fp32 is None:
        from ..evaluate import fp32_logits

        fp32 = fp32_logits(model, pixels)
    fp32 = np.asarray(fp32, np.float32)

    t0 = time.perf_counter()
    fold_models = []
    for k, (train, test) in enumerate(folds(len(items))):
        tell("CV: calibrate the two halves", k, 2)
        qm, _, quantized_fp32 = calibrate_and_quantize(model, [items[i] for i in train], options, pixels=pixels[train])
        fold_models.append((qm, float_conv_weights(quantized_fp32.arch, quantized_fp32.numpy_params()), test))
    tell("CV: calibrate the two halves", 2, 2)
    parts["calibrate folds"] = time.perf_counter() - t0
    convs = [n.name for n in fold_models[0][0].nodes if n.kind is OpKind.CONV]
    held = np.concatenate([test for _, _, test in fold_models])

    def cv(names: Sequence[str]) -> CVScore:
        q = np.zeros_like(fp32)
        for qm, weights, test in fold_models:
            m = with_float_convs(qm, names, weights) if names else qm
            q[test] = reference_logits(m, pixels[test], kernel=kernel)
            ran[0] += len(test)
        return score(fp32[held], q[held], labels[held])

    t0 = time.perf_counter()
    tell("CV: all-integer", 0, 1)
    baseline = cv(())
    parts["baseline"] = time.perf_counter() - t0
    all_float = None
    layers: list[LayerSensitivity] = []
    steps: list[SearchStep] = []
    chosen: tuple[str, ...] = ()
    met = target.holds(baseline)
    if not met:
        # 1. sensitivity: each conv alone in float on the first sensitivity images of each fold
        t0 = time.perf_counter()
        per_fold = [test[:max(1, (n_sens + 1 - k) // 2)] for k, (_, _, test) in enumerate(fold_models)]
        sub = np.concatenate(per_fold)
        base_sub = np.zeros_like(fp32)
        for (qm, _, _), idx in zip(fold_models, per_fold):
            base_sub[idx] = reference_logits(qm, pixels[idx], kernel=kernel)
            ran[0] += len(idx)
        b = score(fp32[sub], base_sub[sub], None)
        for j, name in enumerate(convs):
            tell("sensitivity: one conv in float", j, len(convs))
            q = np.zeros_like(fp32)
            for (qm, weights, _), idx in zip(fold_models, per_fold):
                q[idx] = reference_logits(with_float_convs(qm, [name], weights), pixels[idx], kernel=kernel)
                ran[0] += len(idx)
            s = score(fp32[sub], q[sub], None)
            layers.append(LayerSensitivity(name, s.sqnr_db, s.sqnr_db - b.sqnr_db, s.agreement,
                                           s.agreement - b.agreement))
        tell("sensitivity: one conv in float", len(convs), len(convs))
        parts["sensitivity"] = time.perf_counter() - t0
        # 2. rank; 3. greedy, stopping at the first set that meets the target
        layers = rank(layers, convs)
        t0 = time.perf_counter()
        for j, s in enumerate(layers):
            tell("greedy: add convs in order of gain", j, len(layers))
            chosen = chosen + (s.conv,)
            sc = cv(chosen)
            if len(chosen) == len(convs):
                all_float = sc
            met = target.holds(sc)
            steps.append(SearchStep(chosen, sc, met))
            if met:
                break
        tell("greedy: add convs in order of gain", len(layers), len(layers))
        parts["greedy"] = time.perf_counter() - t0
        n_sens = len(sub)
        if not met:
            search = FloatConvSearch(target, len(items), n_sens, baseline, all_float, tuple(layers), tuple(steps),
                                     (), False, ran[0], time.perf_counter() - t_start, parts)
            best = max(steps, key=lambda st: (st.score.agreement, -st.score.drop if np.isfinite(st.score.drop)
                                              else 0.0, st.score.sqnr_db))
            raise TargetUnreachable(
                f"the target ({target.describe()}) cannot be met by keeping convs in float: on the 2-fold CV of "
                f"the {len(items)} calibration images the all-integer model gives {_figures(baseline)}, every conv "
                f"in float {_figures(all_float)}, and the best of the {len(steps)} greedy sets ({len(best.float_convs)} "
                f"convs: {', '.join(best.float_convs)}) {_figures(best.score)} (the int8 tensors between the convs "
                f"stay); ask for at most what they reach, or leave the option out for the all-integer export", search)
    return FloatConvSearch(target, len(items), n_sens if layers else 0, baseline, all_float, tuple(layers),
                           tuple(steps), chosen, met, ran[0], time.perf_counter() - t_start, parts)


def _figures(s: CVScore) -> str:
    text = f"{s.agreement:.2f} % agreement, {s.sqnr_db:.2f} dB logit SQNR"
    if np.isfinite(s.drop):
        text += f", {s.drop:+.2f} pp top-1 drop"
    return text


__all__ = ["AccuracyTarget", "CVScore", "DEFAULT_SENSITIVITY_IMAGES", "FloatConvSearch", "LayerSensitivity",
           "SearchStep", "TargetUnreachable", "check_sensitivity_images", "folds", "search_float_convs"]
