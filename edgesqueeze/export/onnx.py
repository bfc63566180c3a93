"""ONNX writers (need the `onnx` package; onnxruntime only to verify): each file built
(`onnx_graph.py`), checked (onnx.checker, then `onnx_verify.py`), then moved into place.

`to_onnx_fp32` writes the float model from the lowered graph and numpy weights — not through
torch.onnx — and `to_onnx` writes the INT8 model (QDQ format) from a `QuantizedModel`'s own
parameters — never onnxruntime's quantizer — so both files are built by the same walk over the
same graph (`edgesqueeze.graph.lower`) with the same op table (`ops.OPS`).

Input contract, the same for both files (formats/metadata.py): one input "pixels", uint8, NHWC
[N, S, S, 3] with S = the arch's crop size and channels in the arch's channel order (a camera
frame after resize and centre crop, no normalisation); two outputs, float32 [N, classes]:
"probability", the softmax of "logits", and "logits" itself (export/ops.py says why both; the
runtime's scores are "probability" as it is, its logits "logits").

    FP32:  Cast -> Sub(mean) -> Div(std) -> Transpose(NCHW) -> float graph
    INT8:  Transpose(NCHW) on the uint8 pixels (exact) -> DequantizeLinear(scale 1, zp 0) ->
           QDQ graph; the normalisation is folded into conv1 by the quantizer

The graphs and the `Target` types are described in `onnx_graph.py`, the verification gates in
`onnx_verify.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arch import Arch
from ..formats.metadata import ModelMetadata
from ..quant.params import QuantizedModel
from .files import ExportError, atomic_output, check_output_path
from .onnx_graph import (LABELS_KEY, OPSET, PIXELS, SUPPORTED, TARGET_KEY, NotQuantizedError, Target, _onnx,
                         _require_quantized, as_target, build_fp32_model, build_int8_model, head_tensor,
                         read_metadata, read_target)
from .onnx_verify import _check_images, _ort, session_config, synthetic_images, verify_int8


@dataclass(frozen=True)
class ExportReport:
    """What `to_onnx` wrote and how it verified (fractions in [0, 1])."""

    path: Path
    bytes: int
    target: Target
    images: int  # verification images
    synthetic_images: bool  # True: the built-in synthetic set (verify_images=None)
    head_values: int  # values of the head tensor compared
    lsb_match: float  # fraction of head values within 1 LSB of the reference
    exact_match: float  # fraction bit-identical
    max_lsb_diff: int
    top1_agreement: float  # same top-1 as the reference (strict)
    top1_reference_ties: int  # disagreements where the reference's own top two are exactly equal
    max_logit_diff_lsb: float  # max |logit - reference| / conv10's scale
    integer_convs: int  # convs onnxruntime runs as integer ops (optimized graph)
    float_convs: int
    optimized_ops: tuple[tuple[str, int], ...]  # op histogram of onnxruntime's optimized graph
    ort_version: str
    session_config: tuple[tuple[str, str], ...] = ()  # session config entries verified with (session_config)
    max_score_diff: float | None = None  # max |probability - softmax(reference logits)|

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"], d["target"] = str(self.path), self.target.value
        d["optimized_ops"] = dict(self.optimized_ops)
        d["session_config"] = dict(self.session_config)
        return d


def to_onnx_fp32(arch: Arch, params, path: str | os.PathLike, *, metadata: ModelMetadata) -> Path:
    """Write the FP32 ONNX file atomically after onnx.checker's full check."""
    onnx = _onnx()
    model = build_fp32_model(arch, params, metadata)
    with atomic_output(path) as tmp:
        _save_checked(onnx, model, tmp, path, "the written FP32 model")
    return Path(path)


def _save_checked(onnx, model, tmp: Path, path, what: str) -> None:
    """Write `model` to the temporary `tmp` and run onnx.checker's full check on the file
    (ExportError naming `path` and `what` otherwise; atomic_output then removes `tmp`)."""
    onnx.save(model, tmp)
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as e:
        raise ExportError(f"{path}: {what} fails onnx.checker: {e}") from None


def to_onnx(qm: QuantizedModel, path: str | os.PathLike, *, target: Target | str = Target.X86,
            verify_images: np.ndarray | None = None) -> ExportReport:
    """Write `qm` as a QDQ INT8 ONNX file at `path`, verified before it is moved into place.

    The file takes "pixels", uint8 NHWC [N, S, S, 3] (S = qm.arch.input_size, channels in
    qm.arch.preprocess.channel_order: resized and centre-cropped, not normalised — the same
    contract as the FP32 file) and gives "probability" and "logits", float32 [N, classes]. Metadata: a
    `ModelMetadata` (labels, preprocessing, scheme, calibration method/images/split) under the
    metadata_props key "edgesqueeze", the target under "edgesqueeze.target", the labels one per
    line under "labels".

    `target`: Target.X86 (uint8 activations, the default: onnxruntime's fast u8s8 path on x86)
    or Target.ARM (int8 activations); see Target. A string is accepted; an unknown one raises
    OptionError naming the allowed values.

    `verify_images`: uint8 NHWC pixels to verify on; None: `synthetic_images` (16 fixed
    smoothed-noise images). Verification (`onnx_verify.py`): onnx.checker (full check); onnxruntime
    vs `reference.run_int8` — the head tensor (conv10's 8-bit output) within 1 LSB on >= 99.9 %
    of values and never more than 2 LSB, top-1 agreeing on >= 99.5 % of images (a disagreement
    on an exact tie of the reference's top two counts as agreeing), logits within 2 x conv10's
    scale, probabilities within `ops.max_score_diff`; every conv an integer op in onnxruntime's optimized graph (ORT_ENABLE_ALL). A model with
    float-kept convs (`qm.float_convs`, ops.FLOAT_CONV) is written with those convs in float32
    and checked within 1 LSB on >= 99 % of head values and top-1 on >= 99 % of images, those
    convs (and only those) float in the optimized graph. A failure
    raises ExportError with the numbers and leaves nothing at `path` (a previous file stays).

    Raises NotQuantizedError (an ExportError and a TypeError) for anything but a
    QuantizedModel, ExportError naming every unsupported layer — both before any file is
    written — and DataError for unusable verify_images."""
    qm = _require_quantized(qm)
    target = as_target(target)
    onnx = _onnx()
    _ort()  # verification needs it: fail before any work
    model = build_int8_model(qm, target=target)  # names unsupported layers before anything is written
    if verify_images is None:
        images, synthetic = synthetic_images(qm.arch.input_size), True
    else:
        images, synthetic = _check_images(verify_images, qm.arch.input_size), False
    path = check_output_path(path)
    with atomic_output(path) as tmp:
        _save_checked(onnx, model, tmp, path, "the INT8 model")
        res = verify_int8(qm, model, tmp, target, images, synthetic=synthetic)
        if res["failures"]:
            raise ExportError(f"{path}: the INT8 ONNX file ({target.value}) did not verify against the integer "
                              f"reference on {len(images)} {'synthetic ' if synthetic else ''}images: "
                              + "; ".join(res["failures"]) + "; nothing was written")
        size = os.path.getsize(tmp)
    res.pop("failures")
    return ExportReport(path=Path(path), bytes=size, target=target, **res)


__all__ = [
    "ExportReport", "LABELS_KEY", "NotQuantizedError", "OPSET", "PIXELS", "SUPPORTED", "TARGET_KEY", "Target",
    "as_target", "build_fp32_model", "build_int8_model", "head_tensor", "read_metadata", "read_target",
    "session_config", "synthetic_images", "to_onnx", "to_onnx_fp32", "verify_int8",
]
