"""TFLite writer: a QuantizedModel -> a fully-integer .tflite, and the FP32 baseline .tflite;
each file built (`tflite_graph.py`), checked (`tflite_verify.py`), then moved into place.

The files are built directly with the TFLite flatbuffer schema (the generated builders that
`ai-edge-litert` ships as `ai_edge_litert.schema_py_generated`, packed by the `flatbuffers`
package) from the lowered graph (`edgesqueeze.graph`) — no TensorFlow, no converter. Writing is
a workstation step and needs the `[tflite]` extra; reading a file back (`formats.tflite`:
`read_tflite_metadata`, `tflite_ops`) needs no writer.

    to_tflite(qm, path, verify_images=None) -> ExportReport         # INT8, verified
    to_tflite_fp32(arch, params, path, metadata=...) -> ExportReport  # FP32 baseline

Outputs: "probability" only, because the standard metadata describes that one output and the
tools that read it (MediaPipe, the Task Library) show it as the scores: equal integer sums give
equal scores. The logits exist inside the file (tensor "logits", the softmax's input) and the
verification variant lists them as an output; the runtime, reading the shipped file, derives
log-probabilities where it needs logits (runtime.py). Batch is fixed at 1 (the runtime
classifies one camera frame at a time).

Runtimes: LiteRT (ai-edge-litert 2.3) runs the int8 graph in its default XNNPACK delegate, which
requantizes in float32 like the reference's default, and matched it bit for bit on every model
tried. tflite-runtime 2.14 (numpy < 2) runs it on its builtin fixed-point kernels instead; there
it matches `run_int8(..., requant="fixed-point")` in top-1, and differs from the float32
reference by the rounding of each requantization (measured: top-1 the same on 30 of 32 real
images).

The graphs, their operators and metadata are described in `tflite_graph.py`, the flatbuffer
container and operator versions in `tflite_flatbuffer.py`, the verification gates in
`tflite_verify.py`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..arch import Arch
from ..graph import OUTPUT
from ..formats.metadata import ModelMetadata, int8_metadata
from .files import atomic_output, check_output_path
from .ops import PROBABILITY, max_score_diff
from .tflite_flatbuffer import op_version
from .tflite_graph import (PIXELS, SUPPORTED, _build_fp32, _build_int8, _description, _file_bytes,
                           _metadata_entries, build_tflite, build_tflite_fp32, conv_padding,
                           head_weight_scales, pool_padding)
from .tflite_verify import (MIN_HEAD_WITHIN_1_LSB, MIN_TOP1_AGREEMENT, Delegation, _check_images,
                            check_flatbuffer, check_fp32_file, check_int8_file, runtime_version,
                            synthetic_images, xnnpack_delegation)


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class ExportReport:
    """What was written and how it verified. Fractions are in [0, 1]; the INT8-only fields are
    None for the FP32 file (which is only checked to load and give finite probabilities summing to 1)."""

    path: Path
    bytes: int
    kind: str  # "int8" | "fp32"
    images: int  # images run through the written file
    image_source: str  # "given" | "synthetic (seed 0)"
    lsb_match: float | None  # conv10 values within 1 LSB of the integer reference
    max_lsb_diff: int | None
    exact_match: float | None  # conv10 values bit-identical to the reference
    top1_agreement: float | None
    max_logit_diff_lsb: float | None  # max |logit - reference logit| / conv10's scale
    runtime: str
    runtime_version: str
    ops: tuple[tuple[str, int], ...] = field(default=())  # (op, version) in first-use order
    max_score_diff: float | None = None  # max |probability - softmax(reference logits)|

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ops"] = [list(o) for o in self.ops]
        return d


# ---------------------------------------------------------------- writers


def to_tflite(qm, path: str | os.PathLike, *, verify_images: np.ndarray | None = None) -> ExportReport:
    """Write the fully-integer .tflite of `qm` to `path`, verified against `run_int8` first.

    `verify_images`: uint8 (N, S, S, 3) pixels in the model's channel order (as
    `data.to_uint8_input` makes them); None runs `synthetic_images(S)`. Raises ExportError (and
    leaves nothing at `path`) when the model cannot be expressed or the written file does not
    match the reference (`tflite_verify.py`)."""
    check_output_path(path)
    images, source = _check_images(verify_images, qm.arch.input_size)
    g, head = _build_int8(qm)
    md = int8_metadata(qm)
    desc = _description(qm.arch, qm.scheme.value)
    data = _file_bytes(g, md, desc)
    # the probe is never shipped: the edgesqueeze entry only (the standard one describes one output)
    variant = g.pack(inputs=[PIXELS], outputs=[PROBABILITY, OUTPUT, head], metadata=_metadata_entries(md),
                     description=desc)
    check_flatbuffer(data)
    check_flatbuffer(variant)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
        v = check_int8_file(qm, path, tmp, variant, images, source, head, g.shapes[head][1] * g.shapes[head][2])
    return ExportReport(Path(path), len(data), "int8", len(images), source, v["lsb_match"],
                        v["max_lsb_diff"], v["exact_match"], v["top1_agreement"],
                        v["max_logit_diff_lsb"], "ai-edge-litert", runtime_version(), tuple(g.op_versions),
                        v["max_score_diff"])


def to_tflite_fp32(arch: Arch, params, path: str | os.PathLike, *, metadata: ModelMetadata,
                   verify_images: np.ndarray | None = None) -> ExportReport:
    """Write the FP32 baseline .tflite (float weights; same uint8 pixel input, normalised inside
    the file). Checked before it is moved into place: structurally, then loaded in LiteRT and
    run on the first 2 verification images (finite logits of shape (1, classes))."""
    check_output_path(path)
    images, source = _check_images(verify_images, arch.input_size)
    images = images[:2]
    g = _build_fp32(arch, params)
    data = _file_bytes(g, metadata, _description(arch, "fp32"))
    check_flatbuffer(data)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
        check_fp32_file(path, tmp, images, arch.num_classes)
    return ExportReport(Path(path), len(data), "fp32", len(images), source, None, None, None, None, None,
                        "ai-edge-litert", runtime_version(), tuple(g.op_versions))


def fp32_metadata(arch: Arch, labels: Sequence[str] = ()) -> ModelMetadata:
    """The metadata of an FP32 file."""
    return ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=tuple(labels), scheme="fp32")


__all__ = [
    "ExportReport", "MIN_HEAD_WITHIN_1_LSB", "MIN_TOP1_AGREEMENT", "PIXELS", "PROBABILITY", "SUPPORTED",
    "Delegation", "build_tflite", "build_tflite_fp32", "check_flatbuffer", "conv_padding", "fp32_metadata", "head_weight_scales",
    "max_score_diff",
    "op_version", "pool_padding", "runtime_version", "synthetic_images",
    "to_tflite", "to_tflite_fp32", "xnnpack_delegation",
]
