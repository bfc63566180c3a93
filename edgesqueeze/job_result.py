"""The main job's results (frozen dataclasses) and its report JSON (numpy only).

`job.quantize` returns a QuantizeResult and writes it with write_report: the options, the files
with their verification against the integer reference, the stages' seconds and peak memory, the
accuracy on the evaluation images, and the accuracy-aware option's search when it ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arch import Preprocess
from .latency_cost import Latency
from .metrics import Accuracy


@dataclass(frozen=True)
class Stage:
    """One step of the job: wall time and the peak resident memory during it."""

    name: str
    seconds: float
    peak_rss_mb: float | None

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 2),
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1)}


@dataclass(frozen=True)
class WrittenFile:
    """A model file the job wrote. INT8 files were run in their runtime and compared with the
    integer reference before they were moved into place."""

    path: Path
    bytes: int
    format: str  # "onnx" | "tflite"
    kind: str  # "fp32" | "int8"
    detail: str = ""  # e.g. "int8 (x86)"
    lsb_match: float | None = None  # fraction of head values within 1 LSB of the reference
    top1_vs_reference: float | None = None  # fraction of verification images with the reference's top-1

    def to_dict(self) -> dict:
        return {"file": self.path.name, "path": str(self.path), "bytes": self.bytes, "format": self.format,
                "type": self.detail or self.kind, "lsb_match": self.lsb_match,
                "top1_vs_reference": self.top1_vs_reference}


@dataclass(frozen=True)
class Evaluation:
    """FP32 against the INT8 file on the evaluation images. Without labels, `fp32.top1` and
    `int8.accuracy.top1` are NaN and only agreement and logit SQNR mean something."""

    images: int
    labelled: bool
    fp32: Accuracy
    int8: object  # evaluate.Comparison
    model_file: Path  # the INT8 file the scores came from (its own runtime)
    runtime: str


@dataclass(frozen=True)
class MixedPrecision:
    """The accuracy-aware option's outcome: the search (quant.sensitivity.FloatConvSearch) and
    the latency of each written INT8 file against the same model all-integer."""

    search: object  # quant.sensitivity.FloatConvSearch
    latency: tuple["Latency", ...] = ()

    @property
    def float_convs(self) -> tuple[str, ...]:
        return self.search.float_convs

    def to_dict(self) -> dict:
        return {**self.search.to_dict(), "latency": [t.to_dict() for t in self.latency]}


@dataclass(frozen=True)
class QuantizeResult:
    arch: str
    num_classes: int
    labels: tuple[str, ...]
    labels_source: str
    arch_source: str  # how the architecture was decided (named, told from the weights' shapes, ...)
    preprocess: Preprocess
    options: object  # pipeline.QuantizeOptions
    calibration_images: int
    files: tuple[WrittenFile, ...]
    qparams: Path
    report: Path
    evaluation: Evaluation | None
    sqnr_db: dict[str, float] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    warnings: tuple[str, ...] = ()
    mixed_precision: MixedPrecision | None = None  # the accuracy-aware option (min_agreement/max_drop)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)



def write_report(r: QuantizeResult, weights, sources) -> None:
    from .export.files import atomic_output

    opts = r.options
    doc = {
        "arch": r.arch, "weights": str(weights), "num_classes": r.num_classes, "labels_source": r.labels_source,
        "arch_source": r.arch_source,
        "images": [str(s) for s in sources], "calibration_images": r.calibration_images,
        "preprocess": r.preprocess.to_dict(),
        "options": {"scheme": opts.scheme.value, "method": opts.method.value, "bias_correction": opts.bias_correction,
                    "equalize": opts.equalize, "empirical_bias_correction": opts.empirical_bias_correction,
                    "adaptive_rounding": opts.adaptive_rounding, "weight_bits": opts.weight_bits,
                    **({"range_split": list(opts.range_split), "range_pieces": opts.range_pieces}
                       if opts.range_split else {}),
                    **({"range_search": True} if opts.range_search else {}),
                    **({"unsigned_activations": opts.unsigned_activations,
                        "per_channel_weights": opts.per_channel_weights} if opts.scheme.value == "ristretto" else {}),
                    **({} if r.mixed_precision is None else r.mixed_precision.search.target.to_dict())},
        "qparams": str(r.qparams), "files": [f.to_dict() for f in r.files],
        "stages": [s.to_dict() for s in r.stages], "warnings": list(r.warnings),
    }
    if r.evaluation is not None:
        e = r.evaluation
        doc["evaluation"] = {"images": e.images, "labelled": e.labelled, "model_file": str(e.model_file),
                             "runtime": e.runtime}
        doc["accuracy"] = [e.fp32.to_dict(), e.int8.to_dict()]
    if r.sqnr_db:
        doc["sqnr_db"] = r.sqnr_db
    if r.mixed_precision is not None:
        doc["mixed_precision"] = r.mixed_precision.to_dict()
    with atomic_output(r.report) as tmp:
        tmp.write_text(json.dumps(_plain(doc), indent=2, allow_nan=False) + "\n")


def _plain(o):
    """JSON-ready: numpy scalars as Python numbers, NaN/inf (no labels: no accuracy) as null."""
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


__all__ = ["Evaluation", "MixedPrecision", "QuantizeResult", "Stage", "WrittenFile", "write_report"]
