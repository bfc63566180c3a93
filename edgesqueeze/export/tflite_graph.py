"""The TFLite graphs: a QuantizedModel (INT8) or float params (FP32) lowered op by op into a
flatbuffer `_Graph`, and the shipped file bytes with their metadata.

INT8 graph (one subgraph, batch fixed at 1: input [1, S, S, 3]):

    pixels  uint8 [1,S,S,3], scale 1, zero point 0   (the runtime's input contract, formats/metadata.py)
    DEQUANTIZE -> float32 pixel values, QUANTIZE -> int8, scale 1, zero point -128
             (q = pixel - 128: exact; XNNPACK takes these two, not a uint8 -> int8 QUANTIZE)
    CONV_2D  int8 in/out; weights int8 OHWI, symmetric per output channel (quantized_dimension
             0, zero points 0); bias int32 with per-channel scale s_in * s_w[c] (float32) and
             zero point 0; fused RELU where the graph has one (the output's zero point makes
             the clamp [zp, 127] exact). Padding: 0 -> VALID; when TFLite's SAME padding is
             exactly the graph's symmetric padding (expand3x3: 3x3, pad 1, stride 1) -> SAME;
             anything else (the released v1.0's conv10: 1x1 with pad 1) -> an explicit PAD op
             (int8 PAD fills with the tensor's zero point = real 0), then VALID.
    MAX_POOL_2D on int8, output keeps the input's parameters. Ceil mode: when the ceil and
             floor output sizes agree -> VALID; when they differ and TFLite's SAME padding pads
             nothing before and exactly the missing cells after (3x3/2 on an even size) -> SAME
             (TFLite's max pool skips padded cells, so this is the ceil-mode pool); otherwise
             PADV2 with the dtype minimum on the far edges, then VALID.
    CONCATENATION axis 3; inputs and output must share one scale/zero point (the quantizer
             guarantees it; a model that breaks it is refused, naming the layers).
    ADD      int8 (the paper's bypass variants), each input with its own parameters.
    float conv  a conv the model keeps in float (QuantizedModel.float_convs): DEQUANTIZE of its
             int8 input (one per tensor) -> CONV_2D float32 (float32 weights and bias, fused
             RELU) -> QUANTIZE to the output's parameters (ops.FLOAT_CONV)
    head     conv10 is written with output scale 1 and the reference's zero point zp, its output
             scale s moved into its weight scales: w[c] with float32 s_in * w[c] equal to the
             reference's multiplier s_in * s_w[c] / s (`head_weight_scales`; on the few channels
             no float32 w[c] reaches, 1 ulp off: no value moved on the 406 evaluation images of
             v1.0). Its int8 values q are the reference's. Then
             DEQUANTIZE -> (q - zp) as float32, exact -> MEAN over axes [1, 2], keep_dims false
             -> MUL s -> "logits" float32 [1, classes] -> SOFTMAX (float, beta 1) ->
             "probability" float32 [1, classes], the file's one output.
             So logits = s * (sum_hw(q - zp) / (H*W)): the dequantized average the integer
             reference (`quant.reference.run_int8`) computes, at the full resolution of the sum
             (s / 225 for v1.0), with no int8 rounding of the logits. The sum is exact in float32
             in any order (|sum| <= 255*H*W < 2**24, checked), so the logits are a monotone
             function of the exact integer sum: classes whose integer sums are equal — exact ties
             happen on real images (1 of 64 for v1.0) — get equal logits and equal
             probabilities (argmax then picks the lower class index, as the reference does), and
             the order of distinct sums is kept.
             Why not DEQUANTIZE with conv10's own scale s -> MEAN: that sums H*W rounded float32
             products s*(q - zp), whose sum depends on the order of summation, so tied classes
             come out in an arbitrary order. Why not CAST int8 -> float32 (the raw integers,
             exact too): XNNPACK does not take CAST (nor ARG_MAX, PADV2, int8 SOFTMAX or
             AVERAGE_POOL_2D), and one such op splits the graph into two delegate partitions;
             DEQUANTIZE, float MEAN, MUL and SOFTMAX it takes, so the whole graph runs in one
             XNNPACK partition (`tflite_verify.xnnpack_delegation`, benchmarks/xnnpack_head.py).

FP32 graph: the same uint8 pixels (scale 1, zero point 0) -> DEQUANTIZE float32 -> SUB mean ->
MUL 1/std (left out when every std is 1, as in the Caffe preprocessing) -> the same convs in
float NHWC with OHWI weights (transposed from the OIHW params) and the same padding rules (float
PAD fills with 0.0, PADV2 with the lowest float32) -> MAX_POOL_2D, CONCATENATION, ADD -> MEAN ->
"logits" -> SOFTMAX -> "probability": one XNNPACK partition too.

Metadata: the model's `metadata` list holds an entry named "edgesqueeze" whose buffer is the
UTF-8 JSON of a `ModelMetadata` (arch, preprocessing, labels, scheme, calibration method /
image count / split rule — not the per-tensor ranges): what the runtime reads. Beside it, the
standard "TFLITE_METADATA" entry and, appended after the flatbuffer, a zip archive holding
labels.txt: what MediaPipe, the TFLite Task Library and model bindings read
(`tflite_metadata.py`). The file also carries a signature "serving_default" (pixels ->
probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch import Arch, pool_output_size
from ..errors import DataError
from ..graph import INPUT, OUTPUT, Node, OpKind, lower
from ..formats.metadata import METADATA_KEY, ModelMetadata, int8_metadata
from ..formats.standard_metadata import STANDARD_KEY, read_associated_files
from ..formats.tflite import _schema
from .files import ExportError
from .ops import PROBABILITY, check_supported
from .tflite_flatbuffer import _NP_TO_TFL, _Graph
from .tflite_metadata import append_associated_files, associated_files, build_metadata_buffer, standard_metadata

PIXELS = "pixels"  # the uint8 input's name
SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})


# ---------------------------------------------------------------- padding decisions


@dataclass(frozen=True)
class _Pad:
    padding: str  # "SAME" | "VALID" for the op itself
    explicit: tuple[int, int] | None  # (before, after) of a PAD/PADV2 op in front, else None
    out: int


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TFLite's SAME: output ceil(size / stride), total padding split with the smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def conv_padding(size: int, kernel: int, stride: int, pad: int) -> _Pad:
    """How a conv with symmetric zero padding `pad` is written (see module doc)."""
    out = (size + 2 * pad - kernel) // stride + 1
    if pad == 0:
        return _Pad("VALID", None, out)
    s_out, before, after = _same_pads(size, kernel, stride)
    if s_out == out and before == pad and after == pad:
        return _Pad("SAME", None, out)
    return _Pad("VALID", (pad, pad), out)


def pool_padding(size: int, kernel: int, stride: int, ceil_mode: bool) -> _Pad:
    """How an unpadded max pool (ceil or floor mode) is written (see module doc)."""
    out = pool_output_size(size, kernel, stride, ceil_mode)
    if out == (size - kernel) // stride + 1:
        return _Pad("VALID", None, out)
    s_out, before, _ = _same_pads(size, kernel, stride)
    if s_out == out and before == 0:
        return _Pad("SAME", None, out)
    return _Pad("VALID", (0, (out - 1) * stride + kernel - size), out)


# ---------------------------------------------------------------- ops


def _padded_input(g: _Graph, node: Node, pad: _Pad, *, fill_min: bool) -> str:
    """`node`'s input as its op reads it: the input itself, or, where `pad` needs explicit
    padding, a PAD (fills with the zero point, or 0.0 for float) or PADV2 (fills with the
    dtype's minimum) of it on H and W named `<node>.pad`: rows/cols `before` on top/left,
    `after` on bottom/right."""
    src = node.inputs[0]
    if pad.explicit is None:
        return src
    s = g.s
    name = f"{node.name}.pad"
    b, a = pad.explicit
    n, h, w, c = g.shapes[src]
    paddings = np.array([[0, 0], [b, a], [b, a], [0, 0]], np.int32)
    g.tensor(f"{name}.paddings", (4, 2), "INT32", data=paddings)
    inputs = [src, f"{name}.paddings"]
    if fill_min:
        if g.dtypes[src] == "INT8":
            q = g.qparams[src]
            g.tensor(f"{name}.value", (1,), "INT8", data=np.array([-128], np.int8),
                     scale=[q[0]], zero_point=[q[1]])
        else:
            g.tensor(f"{name}.value", (1,), "FLOAT32", data=np.array([np.finfo(np.float32).min], np.float32))
        inputs.append(f"{name}.value")
    g.like(name, src, (n, h + b + a, w + b + a, c))
    if fill_min:
        g.op("PADV2", inputs, [name], s.PadV2OptionsT(), "PadV2Options")
    else:
        g.op("PAD", inputs, [name], s.PadOptionsT(), "PadOptions")
    return name


def _conv_op(g: _Graph, n: Node, weight: np.ndarray, bias: np.ndarray, *, out_q=None,
             weight_q=None, bias_q=None) -> None:
    s = g.s
    c = n.conv
    pad = conv_padding(g.shapes[n.inputs[0]][1], c.kernel, c.stride, c.pad)
    src = _padded_input(g, n, pad, fill_min=False)
    g.tensor(f"{n.name}.weight", weight.shape, _NP_TO_TFL[weight.dtype], data=weight,
             **(weight_q or {}))
    g.tensor(f"{n.name}.bias", bias.shape, _NP_TO_TFL[bias.dtype], data=bias, **(bias_q or {}))
    dtype = g.dtypes[n.inputs[0]]
    g.tensor(n.name, (1, pad.out, pad.out, c.out_channels), dtype, **(out_q or {}))
    o = s.Conv2DOptionsT()
    o.padding = getattr(s.Padding, pad.padding)
    o.strideH = o.strideW = c.stride
    o.fusedActivationFunction = s.ActivationFunctionType.RELU if c.relu else s.ActivationFunctionType.NONE
    g.op("CONV_2D", [src, f"{n.name}.weight", f"{n.name}.bias"], [n.name], o, "Conv2DOptions")


def _pool_op(g: _Graph, n: Node) -> None:
    s = g.s
    _, h, _, ch = g.shapes[n.inputs[0]]
    pad = pool_padding(h, n.kernel, n.stride, n.ceil_mode)
    src = _padded_input(g, n, pad, fill_min=True)
    g.like(n.name, n.inputs[0], (1, pad.out, pad.out, ch))
    o = s.Pool2DOptionsT()
    o.padding = getattr(s.Padding, pad.padding)
    o.strideH = o.strideW = n.stride
    o.filterHeight = o.filterWidth = n.kernel
    g.op("MAX_POOL_2D", [src], [n.name], o, "Pool2DOptions")


def _concat_op(g: _Graph, n: Node, out_q=None) -> None:
    s = g.s
    shp = g.shapes[n.inputs[0]]
    g.tensor(n.name, (*shp[:3], sum(g.shapes[i][3] for i in n.inputs)), g.dtypes[n.inputs[0]], **(out_q or {}))
    o = s.ConcatenationOptionsT()
    o.axis = 3
    g.op("CONCATENATION", list(n.inputs), [n.name], o, "ConcatenationOptions")


def _add_op(g: _Graph, n: Node, out_q=None) -> None:
    s = g.s
    g.tensor(n.name, g.shapes[n.inputs[0]], g.dtypes[n.inputs[0]], **(out_q or {}))
    g.op("ADD", list(n.inputs), [n.name], s.AddOptionsT(), "AddOptions")


def _mean_op(g: _Graph, src: str, name: str) -> None:
    s = g.s
    n, h, w, c = g.shapes[src]
    g.tensor(f"{name}.axes", (2,), "INT32", data=np.array([1, 2], np.int32))
    g.tensor(name, (n, c), "FLOAT32")
    o = s.ReducerOptionsT()
    o.keepDims = False
    g.op("MEAN", [src, f"{name}.axes"], [name], o, "ReducerOptions")


def _q(p) -> dict:
    return {"scale": [p.scale], "zero_point": [p.zero_point]}


def _check_int8_model(qm) -> tuple[Node, ...]:
    """Every reason this QuantizedModel cannot be written, at once, before anything is built."""
    from ..quant.params import validate

    nodes = qm.nodes
    check_supported(nodes, "TFLite", SUPPORTED)
    problems = []
    for n in nodes:
        if n.kind is OpKind.CONCAT and n.name in qm.tensors:
            out = qm.tensors[n.name]
            bad = [f"{i} (scale {qm.tensors[i].scale:.6g}, zero point {qm.tensors[i].zero_point})"
                   for i in n.inputs if i in qm.tensors and qm.tensors[i] != out]
            if bad:
                problems.append(f"concat {n.name} (scale {out.scale:.6g}, zero point {out.zero_point}) "
                                f"has inputs with other parameters: {', '.join(bad)}")
        if n.kind is OpKind.MAXPOOL and n.name in qm.tensors and qm.tensors.get(n.inputs[0]) != qm.tensors[n.name]:
            problems.append(f"max pool {n.name} does not keep its input's scale/zero point")
    if problems:
        raise ExportError("cannot write TFLite: TFLite's CONCATENATION and MAX_POOL_2D need inputs and "
                          "output to share one scale/zero point; re-quantize with edgesqueeze's quantizer: "
                          + "; ".join(problems))
    try:
        validate(qm)
    except DataError as e:
        raise ExportError(f"cannot write TFLite: {e}") from None
    head = nodes[-1]
    if head.kind is not OpKind.MEAN or nodes[-2].name != head.inputs[0]:
        raise ExportError("cannot write TFLite: the graph does not end in conv10 -> mean")  # pragma: no cover
    return nodes


def _build_int8(qm) -> tuple[_Graph, str]:
    """The INT8 graph; returns it and the head tensor's name (conv10's int8 output)."""
    nodes = _check_int8_model(qm)
    s = _schema()
    g = _Graph(s)
    size = qm.arch.input_size
    g.tensor(PIXELS, (1, size, size, 3), "UINT8", scale=[1.0], zero_point=[0])
    g.tensor("pixels.f32", (1, size, size, 3), "FLOAT32")
    g.op("DEQUANTIZE", [PIXELS], ["pixels.f32"], s.DequantizeOptionsT(), "DequantizeOptions")
    g.tensor(INPUT, (1, size, size, 3), "INT8", **_q(qm.tensors[INPUT]))
    g.op("QUANTIZE", ["pixels.f32"], [INPUT], s.QuantizeOptionsT(), "QuantizeOptions")
    head = nodes[-1].inputs[0]
    dequantized: dict[str, str] = {}  # int8 tensor -> its float32 DEQUANTIZE, one per tensor
    for n in nodes:
        if n.kind is OpKind.CONV and n.name in qm.float_convs:
            _float_conv_op(g, n, qm, dequantized, head)
        elif n.kind is OpKind.CONV:
            qc = qm.convs[n.name]
            s_in = np.float32(qm.tensors[qc.input].scale)
            ws = qc.weight_scale.astype(np.float32)
            out_q = _q(qm.tensors[n.name])
            if n.name == head:  # the head's conv: output scale 1, its scale in the weights (module doc)
                ws = head_weight_scales(qc.real_multiplier(qm.tensors), s_in)
                out_q = {"scale": [1.0], "zero_point": [qm.tensors[head].zero_point]}
            zeros = np.zeros(ws.shape, np.int64)
            _conv_op(g, n, qc.weight.astype(np.int8), qc.bias.astype(np.int32), out_q=out_q,
                     weight_q={"scale": ws, "zero_point": zeros, "qdim": 0},
                     bias_q={"scale": (s_in * ws).astype(np.float32), "zero_point": zeros, "qdim": 0})
        elif n.kind is OpKind.MAXPOOL:
            _pool_op(g, n)
        elif n.kind is OpKind.CONCAT:
            _concat_op(g, n, _q(qm.tensors[n.name]))
        elif n.kind is OpKind.ADD:
            _add_op(g, n, _q(qm.tensors[n.name]))
        elif n.kind is OpKind.MEAN:
            _int8_head(g, head, qm.tensors[head])
    return g, head


def _float_conv_op(g: _Graph, n: Node, qm, dequantized: dict[str, str], head: str) -> None:
    """A float-kept conv (ops.FLOAT_CONV): DEQUANTIZE(x) -> CONV_2D float32 -> QUANTIZE to the
    output's parameters. The head's conv is written with output scale 1 (module doc, "head"):
    its float weights and bias are divided by the output scale s instead."""
    from dataclasses import replace

    s = g.s
    src = n.inputs[0]
    if src not in dequantized:
        dequantized[src] = f"{src}.dequantized"
        g.tensor(dequantized[src], g.shapes[src], "FLOAT32")
        g.op("DEQUANTIZE", [src], [dequantized[src]], s.DequantizeOptionsT(), "DequantizeOptions")
    w, b = (np.asarray(a, np.float32) for a in qm.float_weights[n.name])
    out_q = _q(qm.tensors[n.name])
    if n.name == head:
        sc = np.float64(qm.tensors[head].scale)
        w, b = (w.astype(np.float64) / sc).astype(np.float32), (b.astype(np.float64) / sc).astype(np.float32)
        out_q = {"scale": [1.0], "zero_point": [qm.tensors[head].zero_point]}
    fnode = replace(n, name=f"{n.name}.float", inputs=(dequantized[src],))
    _conv_op(g, fnode, np.ascontiguousarray(w), b)
    g.tensor(n.name, g.shapes[fnode.name], "INT8", **out_q)
    g.op("QUANTIZE", [fnode.name], [n.name], s.QuantizeOptionsT(), "QuantizeOptions")


def head_weight_scales(multiplier: np.ndarray, input_scale: np.float32) -> np.ndarray:
    """Per-channel weight scales w for the head's conv written with output scale 1: float32
    w whose float32 product input_scale * w is the reference's requantization multiplier
    (`multiplier`, float32 input_scale * weight_scale / output_scale), which XNNPACK then
    computes as input_scale * w / 1. Where no float32 w gives exactly that product (the
    products of consecutive w step by up to 2 ulps), the nearest one (1 ulp off)."""
    m = np.asarray(multiplier, np.float32)
    s_in = np.float32(input_scale)
    w0 = (m.astype(np.float64) / np.float64(s_in)).astype(np.float32)
    best, err = w0.copy(), np.full(m.shape, np.inf)
    for k in range(-3, 4):
        w = (w0.view(np.int32) + np.int32(k)).view(np.float32)
        e = np.abs((s_in * w).astype(np.float32).astype(np.float64) - m.astype(np.float64))
        better = e < err
        best[better], err[better] = w[better], e[better]
    return best


def _int8_head(g: _Graph, src: str, q) -> None:
    """`src` (conv10's output, written with scale 1 and the reference's zero point) ->
    DEQUANTIZE (exactly q - zp as float32) -> MEAN -> MUL scale -> logits -> SOFTMAX ->
    probability (module doc, "head")."""
    s = g.s
    n, h, w, c = g.shapes[src]
    if 255 * h * w >= 2**24:
        raise ExportError(f"cannot write TFLite: conv10's output is {h}x{w}; the exact float32 head "
                          "needs 255*H*W < 2**24 (use a smaller input size)")
    if g.qparams.get(src) != (1.0, q.zero_point):
        raise ExportError(f"internal: the head's input {src} must have scale 1")  # pragma: no cover
    raw = f"{src}.values"
    g.tensor(raw, (n, h, w, c), "FLOAT32")
    g.op("DEQUANTIZE", [src], [raw], s.DequantizeOptionsT(), "DequantizeOptions")
    _mean_op(g, raw, f"{src}.mean")
    g.tensor(f"{src}.scale", (1,), "FLOAT32", data=np.array([q.scale], np.float32))
    g.tensor(OUTPUT, (n, c), "FLOAT32")
    g.op("MUL", [f"{src}.mean", f"{src}.scale"], [OUTPUT], s.MulOptionsT(), "MulOptions")
    _softmax_op(g, OUTPUT, PROBABILITY)


def _softmax_op(g: _Graph, src: str, name: str) -> None:
    o = g.s.SoftmaxOptionsT()
    o.beta = 1.0
    g.tensor(name, g.shapes[src], "FLOAT32")
    g.op("SOFTMAX", [src], [name], o, "SoftmaxOptions")


def _build_fp32(arch: Arch, params) -> _Graph:
    nodes = lower(arch)
    check_supported(nodes, "TFLite", SUPPORTED)
    missing = [c.name for c in arch.convs() if c.name not in params]
    if missing:
        raise ExportError(f"cannot write TFLite FP32: no weights for {', '.join(missing)}")
    s = _schema()
    g = _Graph(s)
    size = arch.input_size
    pre = arch.preprocess
    g.tensor(PIXELS, (1, size, size, 3), "UINT8", scale=[1.0], zero_point=[0])
    g.tensor("pixels.f32", (1, size, size, 3), "FLOAT32")
    g.op("DEQUANTIZE", [PIXELS], ["pixels.f32"], s.DequantizeOptionsT(), "DequantizeOptions")
    scaled = any(v != 1.0 for v in pre.std)
    centred = "pixels.centred" if scaled else INPUT
    g.tensor("pixel_mean", (3,), "FLOAT32", data=np.asarray(pre.mean, np.float32))
    g.tensor(centred, (1, size, size, 3), "FLOAT32")
    g.op("SUB", ["pixels.f32", "pixel_mean"], [centred], s.SubOptionsT(), "SubOptions")
    if scaled:
        g.tensor("pixel_inv_std", (3,), "FLOAT32", data=(1.0 / np.asarray(pre.std, np.float64)).astype(np.float32))
        g.tensor(INPUT, (1, size, size, 3), "FLOAT32")
        g.op("MUL", [centred, "pixel_inv_std"], [INPUT], s.MulOptionsT(), "MulOptions")
    for n in nodes:
        if n.kind is OpKind.CONV:
            w, b = params[n.name]
            _conv_op(g, n, np.ascontiguousarray(np.asarray(w, np.float32).transpose(0, 2, 3, 1)),
                     np.asarray(b, np.float32))
        elif n.kind is OpKind.MAXPOOL:
            _pool_op(g, n)
        elif n.kind is OpKind.CONCAT:
            _concat_op(g, n)
        elif n.kind is OpKind.ADD:
            _add_op(g, n)
        elif n.kind is OpKind.MEAN:
            _mean_op(g, n.inputs[0], OUTPUT)
            _softmax_op(g, OUTPUT, PROBABILITY)
    return g


# ---------------------------------------------------------------- file bytes


def build_tflite(qm) -> bytes:
    """The INT8 .tflite bytes (not written, not verified)."""
    g, _ = _build_int8(qm)
    return _file_bytes(g, int8_metadata(qm), _description(qm.arch, qm.scheme.value))


def _metadata_entries(md: ModelMetadata) -> dict[str, bytes]:
    return {METADATA_KEY: md.to_json().encode("utf-8")}


def _file_bytes(g: _Graph, md: ModelMetadata, description: str) -> bytes:
    """The file as shipped: the flatbuffer with the "edgesqueeze" and the standard metadata
    entries, then the zip archive of its associated files (tflite_metadata.py), which must
    start right where the flatbuffer ends."""
    entries = _metadata_entries(md)
    entries[STANDARD_KEY] = build_metadata_buffer(standard_metadata(md, g.shapes[PROBABILITY][-1]))
    flat = g.pack(inputs=[PIXELS], outputs=[PROBABILITY], metadata=entries, description=description)
    data = append_associated_files(flat, associated_files(md))
    try:
        start = read_associated_files(data)[0]
    except ValueError as e:  # MetadataError
        raise ExportError(f"internal: the associated files do not read back: {e}") from None  # pragma: no cover
    if start != len(flat):
        raise ExportError(f"internal: the associated files start at byte {start}, the flatbuffer "
                          f"ends at {len(flat)}")  # pragma: no cover
    return data


def _description(arch: Arch, scheme: str) -> str:
    return (f"edgesqueeze {arch.name} {scheme}: uint8 NHWC pixels [1,{arch.input_size},{arch.input_size},3] "
            f"({arch.preprocess.channel_order}) -> float32 probabilities [1,{arch.num_classes}] (softmax)")


def build_tflite_fp32(arch: Arch, params, *, metadata: ModelMetadata) -> bytes:
    """The FP32 .tflite bytes (not written, not verified)."""
    g = _build_fp32(arch, params)
    return _file_bytes(g, metadata, _description(arch, "fp32"))
