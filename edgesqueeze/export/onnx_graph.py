"""The ONNX graphs: the FP32 model and the INT8 QDQ model, each a ModelProto (not written) built
from the lowered graph (`edgesqueeze.graph.lower`) with the shared op table (`ops.OPS`).

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
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from ..arch import Arch
from ..errors import missing_extra
from ..graph import INPUT, OUTPUT, Node, OpKind, lower
from ..formats.metadata import METADATA_KEY, ModelMetadata, int8_metadata
from ..quant.params import QParams, QuantizedModel, parse_enum, validate
from .files import ExportError
from .ops import OPS, PROBABILITY, check_supported

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


def read_metadata(model) -> ModelMetadata | None:
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return ModelMetadata.from_json(p.value)
    return None


# ==================================================================== INT8 (QDQ)

TARGET_KEY = "edgesqueeze.target"  # metadata_props: "x86" | "arm"
LABELS_KEY = "labels"  # metadata_props: the class names, one per line
INT8_SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})


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
