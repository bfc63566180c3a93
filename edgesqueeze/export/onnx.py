"""ONNX writers (need the `onnx` package; onnxruntime only to verify).

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

The INT8 graph, per lowered op (every 8-bit tensor is written by one QuantizeLinear whose output
bears the graph tensor's name, and read through one DequantizeLinear shared by its consumers):

    conv     DQ(x) , DQ(8-bit OIHW weight, per-channel axis 0) , DQ(int32 bias, scale
             s_in * s_w[c] in float32, zp 0) -> Conv -> [Relu] -> Q(out) ; onnxruntime fuses
             DQ/Conv/Relu/Q into QLinearConv (integer accumulate, float32 requantization — what
             the integer reference computes). It drops a Relu only when the Q's zero point is the
             type's minimum (real 0 at qmin, always so for the affine scheme); otherwise the conv
             is written Conv -> Q -> DQ -> Relu -> Q (exact: the clamp at the zero point)
    maxpool  DQ -> MaxPool(ceil_mode) -> Q, same scale/zero point: runs on the 8-bit values
    concat   DQ, DQ -> Concat -> Q, shared scale/zero point (QLinearConcat: a copy)
    add      DQ, DQ -> Add -> Q (the bypass variants; QLinearAdd)
    mean     Cast(conv10) -> GlobalAveragePool -> Flatten -> Sub zp -> Mul scale -> "logits"
             float32 -> Softmax (axis 1) -> "probability": the head averages the integers in
             float, like the reference (reference.py) and the TFLite head, so equal integer sums
             give equal logits and equal probabilities

`Target` picks the 8-bit types (weights are per-channel with the reference's values either way):

    X86 (default)  uint8 activations, zero point + 128, same scale: an exact re-encoding of the
                   reference's int8 values (q_u8 = q_s8 + 128); uint8 weights, zero point 128,
                   likewise. onnxruntime's u8 x s8 kernel on AVX2 CPUs without VNNI sums pairs
                   of products in saturating int16 (VPMADDUBSW), which an int8-weight file hit
                   on an AMD EPYC (conv10 off by up to 87 LSB); u8 x u8 is exact on every x86
                   CPU (measured on that EPYC at 1 thread: 30.2 ms against 23.5 ms for the
                   saturating u8 x s8 file, v1.0). onnxruntime's x86 integer GEMM
                   (MLAS) is built around u8 x s8, and on x86 it fuses int8-activation QDQ
                   convs only where it can first rewrite them to uint8 (a Q with one consumer),
                   leaving the rest as float Conv: the ARM file ran 2.3-4.6x slower than the X86
                   file on an AVX512-VNNI Xeon with default options (v1.0, batch 1, onnxruntime
                   1.32), and 5-16x slower with every conv forced to s8s8 QLinearConv
                   (`session_config`; VNNI multiplies u8 x s8). The shared README saw ~3x. So
                   this is what an x86 host should run.
    ARM            int8 activations (s8 x s8): what onnxruntime's ARM kernels prefer (it fuses
                   s8s8 QDQ convs by default only there), and the reference's own values. The
                   uint8 pixels enter through DQ(uint8, 1, 0) -> Q(int8, 1, -128), exact. To run
                   it as integer ops on x86 (verification does), set `session_config(ARM)`.

`to_onnx` verifies the file before it is moved into place (`files.atomic_output`): the ONNX
checker, then onnxruntime (CPUExecutionProvider) against `reference.run_int8` on the head tensor
(conv10's 8-bit output, through an in-memory copy that also outputs it), on the logits and
the probabilities (within `ops.max_score_diff` of the softmax of the reference's logits), and
onnxruntime's optimized graph must run every conv as an integer op. Any failure raises an
ExportError with the numbers and leaves nothing at the path (a previous file stays as it was).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from ..arch import Arch
from ..errors import DataError, missing_extra
from ..graph import INPUT, OUTPUT, Node, OpKind, lower
from ..formats.metadata import METADATA_KEY, ModelMetadata, int8_metadata
from ..quant.params import QParams, QuantizedModel, parse_enum, validate
from .files import ExportError, atomic_output, check_output_path
from .ops import (FLOAT_CONV_MIN_LSB_MATCH, FLOAT_CONV_MIN_TOP1, OPS, PROBABILITY, check_supported,
                  float_conv_score_diff, max_score_diff)

OPSET = 17
PIXELS = "pixels"  # the uint8 input's name; "input" is the normalised float tensor inside
SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise missing_extra("onnx", "quantize") from e
    return onnx


def _node_fp32(helper, n: Node, inits: list, params) -> list:
    op = OPS[n.kind].onnx
    if n.kind is OpKind.CONV:
        from onnx import numpy_helper

        w, b = params[n.name]
        c = n.conv
        inits += [numpy_helper.from_array(w.astype(np.float32), f"{n.name}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"{n.name}.bias")]
        out = f"{n.name}.preact" if c.relu else n.name
        nodes = [helper.make_node(op, [n.inputs[0], f"{n.name}.weight", f"{n.name}.bias"], [out],
                                  name=n.name, kernel_shape=[c.kernel, c.kernel],
                                  strides=[c.stride, c.stride], pads=[c.pad] * 4)]
        if c.relu:
            nodes.append(helper.make_node("Relu", [out], [n.name], name=f"{n.name}.relu"))
        return nodes
    if n.kind is OpKind.MAXPOOL:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name,
                                 kernel_shape=[n.kernel, n.kernel], strides=[n.stride, n.stride],
                                 ceil_mode=int(n.ceil_mode))]
    if n.kind is OpKind.CONCAT:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name, axis=1)]
    if n.kind is OpKind.ADD:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name)]
    if n.kind is OpKind.MEAN:
        return [helper.make_node(op, list(n.inputs), [f"{n.name}.pooled"], name=f"{n.name}.pool"),
                helper.make_node("Flatten", [f"{n.name}.pooled"], [n.name], name=f"{n.name}.flatten", axis=1)]
    raise ExportError(f"no ONNX lowering for {n.kind}")  # pragma: no cover - check_supported ran


def _input_nodes(helper, numpy_helper, arch: Arch, inits: list) -> list:
    pre = arch.preprocess
    inits += [numpy_helper.from_array(np.asarray(pre.mean, np.float32).reshape(1, 1, 1, 3), "pixel_mean"),
              numpy_helper.from_array(np.asarray(pre.std, np.float32).reshape(1, 1, 1, 3), "pixel_std")]
    return [
        helper.make_node("Cast", [PIXELS], ["pixels.f32"], name="cast", to=1),
        helper.make_node("Sub", ["pixels.f32", "pixel_mean"], ["pixels.centred"], name="sub_mean"),
        helper.make_node("Div", ["pixels.centred", "pixel_std"], ["pixels.nhwc"], name="div_std"),
        helper.make_node("Transpose", ["pixels.nhwc"], [INPUT], name="to_nchw", perm=[0, 3, 1, 2]),
    ]


def _softmax(helper):
    """logits -> probability: the float softmax both files end in (ops.PROBABILITY)."""
    return helper.make_node("Softmax", [OUTPUT], [PROBABILITY], name="softmax", axis=1)


def _outputs(helper, onnx, classes: int) -> list:
    """"probability" first (the scores), then "logits" (ops.py says why both)."""
    return [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", classes])
            for name in (PROBABILITY, OUTPUT)]


def build_fp32_model(arch: Arch, params, metadata: ModelMetadata):
    """The FP32 ONNX ModelProto (not written)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    nodes = lower(arch)
    check_supported(nodes, "ONNX", SUPPORTED)
    inits: list = []
    graph_nodes = _input_nodes(helper, numpy_helper, arch, inits)
    for n in nodes:
        graph_nodes += _node_fp32(helper, n, inits, params)
    graph_nodes.append(_softmax(helper))
    s = arch.input_size
    graph = helper.make_graph(
        graph_nodes,
        arch.name,
        [helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8, ["N", s, s, 3])],
        _outputs(helper, onnx, arch.num_classes),
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgesqueeze", producer_version=metadata.version)
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    helper.set_model_props(model, {METADATA_KEY: metadata.to_json()})
    return model


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


def read_metadata(model) -> ModelMetadata | None:
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return ModelMetadata.from_json(p.value)
    return None


# ==================================================================== INT8 (QDQ)

TARGET_KEY = "edgesqueeze.target"  # metadata_props: "x86" | "arm"
LABELS_KEY = "labels"  # metadata_props: the class names, one per line
INT8_SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})
# verification gates (module doc; the numbers are reported either way)
MIN_LSB_MATCH = 0.999  # fraction of head values within 1 LSB of the reference
MAX_LSB_DIFF = 2  # no head value further than this from the reference
MIN_TOP1_AGREEMENT = 0.995  # images whose top-1 is the reference's (exact reference ties count as agreeing)
MAX_LOGIT_DIFF_LSB = 2.0  # max |logit - reference logit| in units of conv10's scale
SYNTHETIC_IMAGES = 16
FILE_CHECK_IMAGES = 8  # the file itself runs these; its verification copy runs all of them
SYNTHETIC_SEED = 20240605
VERIFY_BATCH = 8  # images per onnxruntime run and per reference run during verification

INTEGER_CONV_OPS = frozenset({"QLinearConv", "ConvInteger"})  # any domain (com.microsoft NHWC QLinearConv too)
FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose"})


class Target(str, Enum):
    """Which 8-bit type the INT8 file's activations use (module doc).

    X86: uint8 activations (zero point + 128) x uint8 weights (zero point 128) — onnxruntime's
    u8u8 integer path, exact on every x86 CPU, where int8 activations run 2-5x slower (partly as
    float convs). ARM: int8 activations x int8 weights (s8s8), what onnxruntime's ARM kernels
    prefer; on x86 run it with `session_config(Target.ARM)`. Both hold exactly the reference's
    values."""

    X86 = "x86"
    ARM = "arm"


class NotQuantizedError(ExportError, TypeError):
    """The INT8 writer was given something that is not a QuantizedModel."""


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


def as_target(target: "Target | str") -> Target:
    """A Target from a member or its value; OptionError naming the allowed values."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return parse_enum(Target, target.lower(), "target")
    return parse_enum(Target, target, "target")


def _require_quantized(qm) -> QuantizedModel:
    if isinstance(qm, QuantizedModel):
        return qm
    what = type(qm).__module__ + "." + type(qm).__qualname__
    raise NotQuantizedError(
        f"to_onnx writes an INT8 file from a QuantizedModel, got a {what}; run the quantizer "
        "first (edgesqueeze.pipeline.calibrate_and_quantize, or `edgesqueeze quantize`, then "
        "QuantizedModel.load), or write the float model with to_onnx_fp32(arch, params, ...)"
    )


class _QDQBuilder:
    """Accumulates nodes and initializers of the QDQ graph (module doc)."""

    def __init__(self, helper, numpy_helper, qm: QuantizedModel, target: Target):
        self.h, self.nh, self.qm, self.target = helper, numpy_helper, qm, target
        self.nodes: list = []
        self.inits: list = []
        self.offset = 128 if target is Target.X86 else 0
        self.qdtype = np.uint8 if target is Target.X86 else np.int8
        self.qmin = int(np.iinfo(self.qdtype).min)
        self._params_made: set[str] = set()
        self._dq: dict[str, str] = {}

    def init(self, array: np.ndarray, name: str) -> str:
        self.inits.append(self.nh.from_array(np.asarray(array), name))
        return name

    def zero_point(self, p: QParams) -> int:
        return p.zero_point + self.offset

    def act_params(self, tensor: str, p: QParams | None = None) -> tuple[str, str]:
        """(scale, zero point) initializer names of an 8-bit activation tensor, in the target type."""
        p = p or self.qm.tensors[tensor]
        if tensor not in self._params_made:
            self._params_made.add(tensor)
            self.init(np.array(p.scale, np.float32), f"{tensor}.scale")
            self.init(np.array(self.zero_point(p), self.qdtype), f"{tensor}.zero_point")
        return f"{tensor}.scale", f"{tensor}.zero_point"

    def q(self, x: str, tensor: str, out: str | None = None) -> str:
        """QuantizeLinear of float x with `tensor`'s parameters; output named `out` (default: tensor)."""
        out = out or tensor
        s, z = self.act_params(tensor)
        self.nodes.append(self.h.make_node("QuantizeLinear", [x, s, z], [out], name=f"{out}/quantize"))
        return out

    def dq(self, tensor: str, *, params_of: str | None = None) -> str:
        """The DequantizeLinear of the 8-bit `tensor`: one per tensor, shared by its consumers."""
        if tensor in self._dq:
            return self._dq[tensor]
        out = self._dq[tensor] = f"{tensor}.dq"
        s, z = self.act_params(params_of or tensor)
        self.nodes.append(self.h.make_node("DequantizeLinear", [tensor, s, z], [out], name=f"{tensor}/dequantize"))
        return out

    def input(self) -> None:
        """uint8 NHWC pixels -> Transpose (exact on uint8) -> the 8-bit INPUT tensor, NCHW."""
        p = self.qm.tensors[INPUT]
        to_nchw = dict(name="to_nchw", perm=[0, 3, 1, 2])
        if self.target is Target.X86 and p == QParams(1.0, -128):
            # q_u8 = q_s8 + 128 = pixel: the pixels *are* the quantized input
            self.nodes.append(self.h.make_node("Transpose", [PIXELS], [INPUT], **to_nchw))
            self.act_params(INPUT)
            return
        # pixel -> real (exact) -> the input's parameters (int8: q = pixel - 128 for scale 1)
        self.nodes.append(self.h.make_node("Transpose", [PIXELS], ["pixels.nchw"], **to_nchw))
        self.init(np.array(1.0, np.float32), "pixels.scale")
        self.init(np.array(0, np.uint8), "pixels.zero_point")
        self.nodes.append(self.h.make_node("DequantizeLinear", ["pixels.nchw", "pixels.scale", "pixels.zero_point"],
                                           ["pixels.real"], name="pixels/dequantize"))
        self.q("pixels.real", INPUT)

    def dequantized(self, tensor: str) -> str:
        """The float32 values of an 8-bit tensor for a float-kept conv: Cast -> Sub zero point ->
        Mul scale, what DequantizeLinear computes (the cast and the subtraction are exact, the
        product rounds once). Not a DequantizeLinear: onnxruntime's optimizer quantizes the
        float weights of a conv between a DequantizeLinear and a QuantizeLinear (its
        weight/bias quantization pass) and runs it as QLinearConv, which is not the float conv
        the model asks for."""
        out = f"{tensor}.f32"
        if out in self._dq:
            return out
        self._dq[out] = out
        s, z = self.act_params(tensor)
        p = self.qm.tensors[tensor]
        self.init(np.array(self.zero_point(p), np.float32), f"{tensor}.zero_point_f")
        self.nodes += [
            self.h.make_node("Cast", [tensor], [f"{tensor}.int"], name=f"{tensor}/cast", to=1),  # FLOAT
            self.h.make_node("Sub", [f"{tensor}.int", f"{tensor}.zero_point_f"], [f"{tensor}.centred"],
                             name=f"{tensor}/centre"),
            self.h.make_node("Mul", [f"{tensor}.centred", s], [out], name=f"{tensor}/scale"),
        ]
        return out

    def float_conv(self, n: Node, op: str) -> None:
        """A float-kept conv (ops.FLOAT_CONV): the dequantized input (`dequantized`) -> float
        Conv -> [Relu] -> Q(out)."""
        spec = n.conv
        w, b = self.qm.float_weights[n.name]
        x = self.dequantized(n.inputs[0])
        self.init(np.ascontiguousarray(np.asarray(w, np.float32).transpose(0, 3, 1, 2)), f"{n.name}.weight")
        self.init(np.asarray(b, np.float32), f"{n.name}.bias")
        acc = f"{n.name}.acc"
        self.nodes.append(self.h.make_node(
            op, [x, f"{n.name}.weight", f"{n.name}.bias"], [acc], name=n.name,
            kernel_shape=[spec.kernel, spec.kernel], strides=[spec.stride, spec.stride], pads=[spec.pad] * 4))
        if n.relu:  # quantize(relu(y)) is the reference's clamp at the zero point
            self.nodes.append(self.h.make_node("Relu", [acc], [f"{n.name}.relu"], name=f"{n.name}/relu"))
            acc = f"{n.name}.relu"
        self.q(acc, n.name)

    def conv(self, n: Node, op: str) -> None:
        if n.name in self.qm.float_convs:
            return self.float_conv(n, op)
        c = self.qm.convs[n.name]
        spec = n.conv
        s_in = np.float32(self.qm.tensors[c.input].scale)
        ws = c.weight_scale.astype(np.float32)
        x = self.dq(n.inputs[0])
        w = np.ascontiguousarray(c.weight.transpose(0, 3, 1, 2))
        if self.target is Target.X86:
            # uint8 weights with zero point 128 (the same values: w_u8 - 128 = w_s8), so that
            # onnxruntime runs u8 x u8, which is exact on every x86 CPU. Its u8 x s8 kernel on
            # AVX2 without VNNI multiplies with VPMADDUBSW, whose pairwise int16 sums saturate
            # (255 * 127 * 2 > 32767): on an AMD EPYC without VNNI the int8-weight file gave
            # conv10 values up to 87 LSB off the reference and failed verification.
            w_q = self.init((w.astype(np.int16) + 128).astype(np.uint8), f"{n.name}.weight_quantized")
            zp = np.full(spec.out_channels, 128, np.uint8)
        else:
            w_q = self.init(w, f"{n.name}.weight_quantized")
            zp = np.zeros(spec.out_channels, np.int8)
        self.init(ws, f"{n.name}.weight_scale")
        self.init(zp, f"{n.name}.weight_zero_point")
        self.nodes.append(self.h.make_node(
            "DequantizeLinear", [w_q, f"{n.name}.weight_scale", f"{n.name}.weight_zero_point"],
            [f"{n.name}.weight"], name=f"{n.name}.weight/dequantize", axis=0))
        b_q = self.init(c.bias.astype(np.int32), f"{n.name}.bias_quantized")
        self.init((s_in * ws).astype(np.float32), f"{n.name}.bias_scale")  # as the reference: s_in * s_w in float32
        self.init(np.zeros(spec.out_channels, np.int32), f"{n.name}.bias_zero_point")
        self.nodes.append(self.h.make_node(
            "DequantizeLinear", [b_q, f"{n.name}.bias_scale", f"{n.name}.bias_zero_point"],
            [f"{n.name}.bias"], name=f"{n.name}.bias/dequantize", axis=0))
        acc = f"{n.name}.acc"
        self.nodes.append(self.h.make_node(
            op, [x, f"{n.name}.weight", f"{n.name}.bias"], [acc], name=n.name,
            kernel_shape=[spec.kernel, spec.kernel], strides=[spec.stride, spec.stride], pads=[spec.pad] * 4))
        if not n.relu:
            self.q(acc, n.name)
        elif self.zero_point(self.qm.tensors[n.name]) == self.qmin:
            # real 0 sits at qmin: the Q's saturation is the ReLU, and onnxruntime drops the Relu
            self.nodes.append(self.h.make_node("Relu", [acc], [f"{n.name}.relu"], name=f"{n.name}/relu"))
            self.q(f"{n.name}.relu", n.name)
        else:
            # the reference clamps at the zero point: quantize, then ReLU between DQ/Q (exact)
            pre = self.q(acc, n.name, out=f"{n.name}.prerelu")
            r = self.dq(pre, params_of=n.name)
            self.nodes.append(self.h.make_node("Relu", [r], [f"{n.name}.relu"], name=f"{n.name}/relu"))
            self.q(f"{n.name}.relu", n.name)

    def node(self, n: Node) -> None:
        op = OPS[n.kind].onnx
        if n.kind is OpKind.CONV:
            self.conv(n, op)
        elif n.kind is OpKind.MAXPOOL:
            x = self.dq(n.inputs[0])
            self.nodes.append(self.h.make_node(op, [x], [f"{n.name}.real"], name=n.name,
                                               kernel_shape=[n.kernel, n.kernel], strides=[n.stride, n.stride],
                                               ceil_mode=int(n.ceil_mode)))
            self.q(f"{n.name}.real", n.name)
        elif n.kind in (OpKind.CONCAT, OpKind.ADD):
            xs = [self.dq(i) for i in n.inputs]
            attrs = {"axis": 1} if n.kind is OpKind.CONCAT else {}
            self.nodes.append(self.h.make_node(op, xs, [f"{n.name}.real"], name=n.name, **attrs))
            self.q(f"{n.name}.real", n.name)
        elif n.kind is OpKind.MEAN:
            # Cast -> GlobalAveragePool -> Flatten -> Sub zero point -> Mul scale, as the TFLite
            # head (CAST, MEAN, SUB, MUL): the pool averages integers, whose sum (< 2^24) is exact
            # in float32 in any order, so two classes with equal integer sums get equal scores
            # and the tie goes to the lower index in every runtime. DQ -> pool instead sums
            # rounded products and can break such a tie either way.
            src = n.inputs[0]
            p = self.qm.tensors[src]
            zp = self.init(np.array(self.zero_point(p), np.float32), f"{n.name}.zero_point_f")
            scale = self.init(np.array(p.scale, np.float32), f"{n.name}.scale_f")
            self.nodes += [
                self.h.make_node("Cast", [src], [f"{n.name}.int"], name=f"{n.name}.cast", to=1),  # FLOAT
                self.h.make_node(op, [f"{n.name}.int"], [f"{n.name}.pooled"], name=f"{n.name}.pool"),
                self.h.make_node("Flatten", [f"{n.name}.pooled"], [f"{n.name}.sum"], name=f"{n.name}.flatten", axis=1),
                self.h.make_node("Sub", [f"{n.name}.sum", zp], [f"{n.name}.centred"], name=f"{n.name}.sub"),
                self.h.make_node("Mul", [f"{n.name}.centred", scale], [n.name], name=f"{n.name}.mul"),
            ]
        else:  # pragma: no cover - check_supported ran
            raise ExportError(f"no ONNX INT8 lowering for {n.kind}")


def head_tensor(qm: QuantizedModel) -> str:
    """The 8-bit tensor entering the head (conv10's output): the verification point."""
    return next(n for n in qm.nodes if n.kind is OpKind.MEAN).inputs[0]


def build_int8_model(qm: QuantizedModel, *, target: Target | str = Target.X86,
                     metadata: ModelMetadata | None = None):
    """The QDQ INT8 ONNX ModelProto (not written, not verified)."""
    qm = _require_quantized(qm)
    target = as_target(target)
    onnx = _onnx()
    from onnx import helper, numpy_helper

    nodes = qm.nodes
    check_supported(nodes, "ONNX INT8", INT8_SUPPORTED)
    validate(qm)
    b = _QDQBuilder(helper, numpy_helper, qm, target)
    b.input()
    for n in nodes:
        b.node(n)
    b.nodes.append(_softmax(helper))
    arch = qm.arch
    s = arch.input_size
    graph = helper.make_graph(
        b.nodes, f"{arch.name}-int8-{target.value}",
        [helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8, ["N", s, s, 3])],
        _outputs(helper, onnx, arch.num_classes),
        initializer=b.inits,
        doc_string=(f"INT8 QDQ ({qm.scheme.value}, {target.value}: "
                    f"{'uint8' if target is Target.X86 else 'int8'} activations and per-channel weights); "
                    f"input 'pixels' uint8 NHWC [N, {s}, {s}, 3] {arch.preprocess.channel_order}, "
                    "outputs 'probability' (softmax) and 'logits' float32"),
    )
    metadata = metadata or int8_metadata(qm)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgesqueeze", producer_version=metadata.version)
    model.ir_version = 8
    props = {METADATA_KEY: metadata.to_json(), TARGET_KEY: target.value}
    if metadata.labels:
        props[LABELS_KEY] = "\n".join(metadata.labels)
    helper.set_model_props(model, props)
    return model


def read_target(model) -> Target | None:
    for p in model.metadata_props:
        if p.key == TARGET_KEY:
            return as_target(p.value)
    return None


# ---------------------------------------------------------------- verification


def synthetic_images(size: int, n: int = SYNTHETIC_IMAGES, *, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """n deterministic uint8 NHWC test images (n, size, size, 3): smoothed random noise.

    Image i is uniform noise on a coarse (g x g x 3) grid, g cycling through 2, 4, 8, 16, 32,
    bilinearly upsampled to size x size, stretched to a random contrast (96..255) and
    brightness, plus +-8 of pixel noise — blobs and edges at several scales, so every layer sees
    varied values. Numpy's PCG64 with a fixed seed: the same images on every machine."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        g = (2, 4, 8, 16, 32)[i % 5]
        coarse = rng.random((g, g, 3))
        pos = np.linspace(0.0, g - 1, size)
        i0 = np.clip(np.floor(pos).astype(int), 0, max(g - 2, 0))
        i1 = np.minimum(i0 + 1, g - 1)
        f = (pos - i0)[:, None]
        rows = coarse[i0] * (1 - f)[:, :, None] + coarse[i1] * f[:, :, None]  # (size, g, 3)
        img = rows[:, i0] * (1 - f.T)[:, :, None] + rows[:, i1] * f.T[:, :, None]  # (size, size, 3)
        span = rng.uniform(96, 255)  # contrast
        img = rng.uniform(0, 255 - span) + span * img + rng.uniform(-8, 8, img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _check_images(images, size: int) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, 3) or len(x) == 0:
        raise DataError(f"verify_images must be uint8 NHWC (N, {size}, {size}, 3) pixels, got "
                        f"{x.dtype}{tuple(x.shape)}; make them with data.to_uint8_input")
    return np.ascontiguousarray(x)


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise missing_extra("onnxruntime", "onnx") from e
    return onnxruntime


def session_config(target: Target | str) -> dict[str, str]:
    """onnxruntime session config entries to run a file of this target as integer ops anywhere.

    onnxruntime fuses int8-activation (s8s8) QDQ convs into QLinearConv by default only on ARM;
    on x86 it converts int8 Q/DQ pairs to uint8 where a Q has a single consumer and leaves the
    rest as float Conv (a Fire module's squeeze output has two). "session.qdqisint8allowed" = 1
    makes an x86 host run what an ARM host runs by default: every conv as an s8s8 QLinearConv.
    The X86 target (uint8 activations) needs nothing."""
    return {"session.qdqisint8allowed": "1"} if as_target(target) is Target.ARM else {}


def _session(ort, model, *, target: Target, optimized_path: str | None = None, threads: int = 0):
    so = ort.SessionOptions()
    for k, v in session_config(target).items():
        so.add_session_config_entry(k, v)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the NCHWc warning when saving an ALL-level graph is expected
    if threads:
        so.intra_op_num_threads = threads
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    src = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def optimized_conv_ops(optimized) -> tuple[int, int, Counter]:
    """(integer convs, float convs, op histogram) of an onnxruntime-optimized ModelProto."""
    ops = Counter(n.op_type for n in optimized.graph.node)
    for f in optimized.functions:  # none expected; counted so nothing hides in a function
        ops.update(n.op_type for n in f.node)
    ints = sum(v for k, v in ops.items() if k in INTEGER_CONV_OPS)
    floats = sum(v for k, v in ops.items() if k in FLOAT_CONV_OPS)
    return ints, floats, ops


def _with_head_output(model, qm: QuantizedModel, target: Target):
    """An in-memory copy of `model` that also outputs the 8-bit head tensor."""
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    head = head_tensor(qm)
    elem = onnx.TensorProto.UINT8 if target is Target.X86 else onnx.TensorProto.INT8
    copy.graph.output.append(helper.make_tensor_value_info(head, elem, None))
    return copy, head


_REFERENCE_CACHE: list = []  # one entry: (weakref to the QuantizedModel, images digest, outputs)


def reference_outputs(qm: QuantizedModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, int8 NHWC head tensor) of `reference.run_int8` on `images`.

    The integer reference is numpy and slow (~0.4 s per 227x227 image on 2 cores), so the last
    result is kept for the same QuantizedModel object and the same pixels: exporting both
    targets from one model verifies against one reference run."""
    from ..quant.reference import run_int8

    digest = hashlib.sha256(images.tobytes()).hexdigest() + repr(images.shape)
    for ref, d, out in _REFERENCE_CACHE:
        if ref() is qm and d == digest:
            return out
    head = head_tensor(qm)
    logits, heads = [], []
    for i in range(0, len(images), VERIFY_BATCH):  # keep=True holds every tensor: a few images at a time
        r = run_int8(qm, images[i:i + VERIFY_BATCH], keep=True)
        logits.append(r.logits)
        heads.append(r.tensors[head])
    out = (np.concatenate(logits), np.concatenate(heads))
    _REFERENCE_CACHE[:] = [(weakref.ref(qm), digest, out)]
    return out


def verify_int8(qm: QuantizedModel, model, file: str | os.PathLike, target: Target,
                images: np.ndarray, *, synthetic: bool) -> dict:
    """Run `file` (the serialized `model`) in onnxruntime against reference.run_int8; the numbers
    as a dict, plus "failures": the gates (module constants) that were missed."""
    from ..quant.reference import softmax

    ort = _ort()
    onnx = _onnx()
    head = head_tensor(qm)
    hp = qm.tensors[head]
    offset = 128 if target is Target.X86 else 0
    with tempfile.TemporaryDirectory(prefix="edgesqueeze-ort-") as td:
        opt_path = os.path.join(td, "optimized.onnx")
        sess = _session(ort, Path(file), target=target, optimized_path=opt_path)
        optimized = onnx.load(opt_path)
    n_int, n_float, ops = optimized_conv_ops(optimized)
    vcopy, head_name = _with_head_output(model, qm, target)
    vsess = _session(ort, vcopy, target=target)
    # a few images per run: onnxruntime's buffers grow with the batch (32 at once took ~0.5 GiB
    # more than 8 for v1.0), and the answers do not depend on it
    runs = [vsess.run([OUTPUT, head_name, PROBABILITY], {PIXELS: images[i:i + VERIFY_BATCH]})
            for i in range(0, len(images), VERIFY_BATCH)]
    logits = np.concatenate([r[0] for r in runs])
    v_head = np.concatenate([r[1] for r in runs])
    probs = np.concatenate([r[2] for r in runs])
    # the file itself (whose optimized graph was checked above) must give the copy's outputs
    few = images[:FILE_CHECK_IMAGES]
    file_probs, file_logits = sess.run([PROBABILITY, OUTPUT], {PIXELS: few})

    ref_l, ref_h = reference_outputs(qm, images)
    ref_h = ref_h.astype(np.int32) + offset  # NHWC, in the target's type
    got_h = v_head.astype(np.int32).transpose(0, 2, 3, 1)
    if got_h.shape != ref_h.shape:
        raise ExportError(f"head tensor {head}: onnxruntime gives shape {got_h.shape}, the reference {ref_h.shape}")
    diff = np.abs(got_h - ref_h)
    top_ort = probs.argmax(1)  # the scores a user sees
    top_ref = ref_l.argmax(1)
    disagree = top_ort != top_ref
    rows = np.arange(len(ref_l))
    ties = int((disagree & (ref_l[rows, top_ort] == ref_l[rows, top_ref])).sum())
    n_convs = sum(1 for n in qm.nodes if n.kind is OpKind.CONV)
    res = {
        "images": len(images), "synthetic_images": synthetic, "head_values": int(diff.size),
        "lsb_match": float((diff <= 1).mean()), "exact_match": float((diff == 0).mean()),
        "max_lsb_diff": int(diff.max()),
        "top1_agreement": float((~disagree).mean()), "top1_reference_ties": ties,
        "max_logit_diff_lsb": float(np.abs(logits.astype(np.float64) - ref_l).max() / hp.scale),
        "max_score_diff": float(np.abs(probs.astype(np.float64) - softmax(ref_l)).max()),
        "integer_convs": int(n_int), "float_convs": int(n_float),
        "optimized_ops": tuple(sorted(ops.items())), "ort_version": ort.__version__,
        "session_config": tuple(sorted(session_config(target).items())),
    }
    failures = []
    # float-kept convs sum in the runtime's order: within 1 LSB, not bit for bit (ops.FLOAT_CONV)
    n_fc = len(qm.float_convs)
    min_lsb = FLOAT_CONV_MIN_LSB_MATCH if n_fc else MIN_LSB_MATCH
    min_top1 = FLOAT_CONV_MIN_TOP1 if n_fc else MIN_TOP1_AGREEMENT
    what = f" ({n_fc} float conv{'s' if n_fc != 1 else ''}: float summation order)" if n_fc else ""
    if res["lsb_match"] < min_lsb:
        failures.append(f"head tensor {head}: {100 * res['lsb_match']:.3f} % of values within 1 LSB "
                        f"of the reference (need >= {100 * min_lsb:.1f} %{what})")
    if res["max_lsb_diff"] > MAX_LSB_DIFF and not n_fc:
        failures.append(f"head tensor {head}: max difference {res['max_lsb_diff']} LSB (allowed {MAX_LSB_DIFF})")
    agree = 1.0 - (int(disagree.sum()) - ties) / len(images)  # exact reference ties have no one top-1
    if agree < min_top1:
        failures.append(f"top-1 differs from the reference on {int(disagree.sum())} of {len(images)} images "
                        f"({ties} of them exact ties in the reference; need >= {100 * min_top1:.1f} % agreement{what})")
    if res["max_logit_diff_lsb"] > MAX_LOGIT_DIFF_LSB:
        failures.append(f"logits differ from the reference by up to {res['max_logit_diff_lsb']:.3f} x conv10's "
                        f"scale (allowed {MAX_LOGIT_DIFF_LSB})")
    hw = int(ref_h.shape[1] * ref_h.shape[2])
    score_tol = float_conv_score_diff(hp.scale) if n_fc else max_score_diff(hp.scale, hw)
    if not res["max_score_diff"] <= score_tol:
        failures.append(f"probabilities differ from the softmax of the reference's logits by up to "
                        f"{res['max_score_diff']:.3g} (allowed {score_tol:.3g})")
    # equal up to float summation order (one head LSB moves a logit by scale / (H*W), far more)
    copy_diff = float(np.abs(file_logits.astype(np.float64) - logits[:len(few)]).max()) / hp.scale
    copy_pdiff = float(np.abs(file_probs.astype(np.float64) - probs[:len(few)]).max())
    if copy_diff > 1e-3 or copy_pdiff > 1e-5:
        failures.append("the file gives other outputs than its verification copy (with the head output): "
                        f"max |logit diff| {copy_diff:.3g} x conv10's scale, max |probability diff| {copy_pdiff:.3g}")
    if n_float != n_fc or n_int != n_convs - n_fc:
        failures.append(f"onnxruntime's optimized graph runs {n_int} of {n_convs} convs as integer ops and "
                        f"{n_float} as float convs, the model keeps {n_fc} in float (ops: {dict(ops)})")
    res["failures"] = failures
    return res


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
    smoothed-noise images). Verification (module doc): onnx.checker (full check); onnxruntime
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
