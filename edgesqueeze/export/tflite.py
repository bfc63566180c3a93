"""TFLite writer: a QuantizedModel -> a fully-integer .tflite, and the FP32 baseline .tflite.

The files are built directly with the TFLite flatbuffer schema (the generated builders that
`ai-edge-litert` ships as `ai_edge_litert.schema_py_generated`, packed by the `flatbuffers`
package) from the lowered graph (`edgesqueeze.graph`) — no TensorFlow, no converter. Writing is
a workstation step and needs the `[tflite]` extra; reading a file back (`formats.tflite`:
`read_tflite_metadata`, `tflite_ops`) needs no writer.

    to_tflite(qm, path, verify_images=None) -> ExportReport         # INT8, verified
    to_tflite_fp32(arch, params, path, metadata=...) -> ExportReport  # FP32 baseline

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
             XNNPACK partition (`xnnpack_delegation`, benchmarks/xnnpack_head.py).

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

FP32 graph: the same uint8 pixels (scale 1, zero point 0) -> DEQUANTIZE float32 -> SUB mean ->
MUL 1/std (left out when every std is 1, as in the Caffe preprocessing) -> the same convs in
float NHWC with OHWI weights (transposed from the OIHW params) and the same padding rules (float
PAD fills with 0.0, PADV2 with the lowest float32) -> MAX_POOL_2D, CONCATENATION, ADD -> MEAN ->
"logits" -> SOFTMAX -> "probability": one XNNPACK partition too.

Operator versions are the ones tensorflow/lite/tools/versioning/op_version.cc assigns to the
types written here: int8 CONV_2D 3, MAX_POOL_2D 2, CONCATENATION 2, ADD 2 (from the shared op
table, `ops.OPS`), int8 PAD/PADV2 2, DEQUANTIZE from int8 2, QUANTIZE to int8 (per tensor) 1;
every float32 op, and DEQUANTIZE from uint8, version 1.

Metadata: the model's `metadata` list holds an entry named "edgesqueeze" whose buffer is the
UTF-8 JSON of a `ModelMetadata` (arch, preprocessing, labels, scheme, calibration method /
image count / split rule — not the per-tensor ranges): what the runtime reads. Beside it, the
standard "TFLITE_METADATA" entry and, appended after the flatbuffer, a zip archive holding
labels.txt: what MediaPipe, the TFLite Task Library and model bindings read
(`tflite_metadata.py`). The file also carries a signature "serving_default" (pixels ->
probability).

Verification (`to_tflite`): the bytes are written to a temporary file beside the target; they
are first checked structurally (`check_flatbuffer`: parsed with the schema's reader, every
index, buffer size and quantization vector checked, operators topologically ordered — the
interpreter can abort the process on a malformed buffer, Python cannot catch that — and the
standard metadata read back with its zip archive, which must start where the flatbuffer ends),
then loaded
in LiteRT's Interpreter and run image by image against the integer reference `run_int8`:
conv10's int8 output (read from a verification variant of the same flatbuffer that also lists
that tensor and the logits as subgraph outputs) must be within 1 LSB on >= 99.9 % of values
(>= 99 %, and top-1 on >= 99 % of images, for a model with float-kept convs: ops.FLOAT_CONV),
the shipped file's top-1 (argmax of its probabilities) must agree on >= 99.5 % of images, and
its probabilities must be within `max_score_diff` of the softmax of the reference's logits
(half of one head unit s / (H*W): 0.0052 for v1.0; measured 1e-6). Only then is the file moved into place; on
failure an ExportError carries the numbers and nothing is left at the target path.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..arch import Arch, pool_output_size
from ..errors import DataError, missing_extra
from ..graph import INPUT, OUTPUT, Node, OpKind, lower
from ..formats.flatbuffer import FILE_IDENTIFIER, SCHEMA_VERSION
from ..formats.metadata import METADATA_KEY, ModelMetadata, int8_metadata
from ..formats.standard_metadata import STANDARD_KEY, read_associated_files, standard_metadata_problems
from ..formats.tflite import _schema
from .files import ExportError, atomic_output, check_output_path
from .ops import (FLOAT_CONV_MIN_LSB_MATCH, FLOAT_CONV_MIN_TOP1, OPS, PROBABILITY, check_supported,
                  float_conv_score_diff, max_score_diff)
from .tflite_metadata import append_associated_files, associated_files, build_metadata_buffer, standard_metadata

PIXELS = "pixels"  # the uint8 input's name
SIGNATURE_KEY = "serving_default"
SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})

# acceptance of the written file against the integer reference
MIN_HEAD_WITHIN_1_LSB = 0.999  # fraction of conv10's int8 output values within 1 LSB
MIN_TOP1_AGREEMENT = 0.995  # fraction of images with the same top-1
SYNTHETIC_IMAGES = 16
SYNTHETIC_SEED = 0

# op_version.cc for the int8 ops not in ops.OPS (see module doc); float32 ops are all version 1
_INT8_VERSIONS = {"PAD": 2, "PADV2": 2, "QUANTIZE": 1, "DEQUANTIZE": 2, "CAST": 3}

_NP_TO_TFL = {
    np.dtype(np.float32): "FLOAT32", np.dtype(np.int32): "INT32", np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64", np.dtype(np.int8): "INT8",
}
_ITEMSIZE = {"FLOAT32": 4, "INT32": 4, "UINT8": 1, "INT64": 8, "INT8": 1, "INT16": 2, "FLOAT16": 2,
             "BOOL": 1}


def _interpreter_cls():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise missing_extra("ai_edge_litert", "tflite") from e
    return Interpreter


def runtime_version() -> str:
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - import succeeded
        return "unknown"


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


# ---------------------------------------------------------------- flatbuffer assembly


class _RawBuffer:
    """A Buffer table whose bytes start on a 16-byte boundary (schema: force_align 16)."""

    def __init__(self, schema, data: bytes):
        self.schema, self.data = schema, data

    def Pack(self, builder):  # noqa: N802 - the generated object API's name
        s = self.schema
        vec = None
        if self.data:
            builder.StartVector(1, len(self.data), 16)
            builder.head -= len(self.data)
            builder.Bytes[builder.head:builder.head + len(self.data)] = self.data
            vec = builder.EndVector()
        s.BufferStart(builder)
        if vec is not None:
            s.BufferAddData(builder, vec)
        return s.BufferEnd(builder)


class _Quantization:
    """A QuantizationParameters table whose scale and zero-point vectors are shared with every
    other tensor that has identical ones (flatbuffers allow one vector to be referenced many
    times): per-channel zero points are all 0, so a conv's weight and bias, and every conv with
    the same width, reference one vector. Saves ~60 KB (int64 zero points) on v1.0."""

    def __init__(self, schema, scale: np.ndarray, zero_point: np.ndarray, qdim: int):
        self.schema, self.scale, self.zero_point, self.qdim = schema, scale, zero_point, qdim
        self.cache: dict = {}  # vector bytes -> offset, one dict per builder (set by _Graph.pack)

    def _shared(self, builder, arr: np.ndarray) -> int:
        key = (arr.dtype.str, arr.tobytes())
        if key not in self.cache:
            self.cache[key] = builder.CreateNumpyVector(arr)
        return self.cache[key]

    def Pack(self, builder):  # noqa: N802 - the generated object API's name
        s = self.schema
        scale = self._shared(builder, self.scale)
        zp = self._shared(builder, self.zero_point)
        s.QuantizationParametersStart(builder)
        s.QuantizationParametersAddScale(builder, scale)
        s.QuantizationParametersAddZeroPoint(builder, zp)
        s.QuantizationParametersAddQuantizedDimension(builder, self.qdim)
        return s.QuantizationParametersEnd(builder)


class _Graph:
    """Tensors, constant buffers and operators of one subgraph, packed into a Model."""

    def __init__(self, schema):
        self.s = schema
        self.tensors: list = []
        self.index: dict[str, int] = {}
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty buffer tensors without data use
        self.operators: list = []
        self.opcodes: dict[tuple[int, int], int] = {}
        self.op_versions: list[tuple[str, int]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        self.qparams: dict[str, tuple[float, int]] = {}

    def tensor(self, name: str, shape: Sequence[int], dtype: str, *, data: np.ndarray | None = None,
               scale=None, zero_point=None, qdim: int = 0) -> int:
        if name in self.index:
            raise ExportError(f"internal: tensor {name!r} defined twice")  # pragma: no cover
        s = self.s
        t = s.TensorT()
        t.name = name
        t.shape = np.asarray(shape, np.int32)
        t.type = getattr(s.TensorType, dtype)
        if data is not None:
            arr = np.ascontiguousarray(data)
            if _NP_TO_TFL[arr.dtype] != dtype or tuple(arr.shape) != tuple(shape):
                raise ExportError(f"internal: {name}: data {arr.dtype}{arr.shape} for {dtype}{tuple(shape)}")  # pragma: no cover
            t.buffer = len(self.buffers)
            self.buffers.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        if scale is not None:
            q = _Quantization(s, np.asarray(scale, np.float32).reshape(-1),
                              np.asarray(zero_point, np.int64).reshape(-1), qdim)
            t.quantization = q
            if q.scale.size == 1:
                self.qparams[name] = (float(q.scale[0]), int(q.zero_point[0]))
        self.index[name] = len(self.tensors)
        self.tensors.append(t)
        self.shapes[name] = tuple(int(v) for v in shape)
        self.dtypes[name] = dtype
        return self.index[name]

    def like(self, name: str, src: str, shape: Sequence[int] | None = None) -> int:
        """A tensor with `src`'s dtype and quantization (and shape unless given)."""
        q = self.qparams.get(src)
        return self.tensor(name, shape if shape is not None else self.shapes[src], self.dtypes[src],
                           scale=None if q is None else [q[0]], zero_point=None if q is None else [q[1]])

    def op(self, code: str, inputs: Sequence[str], outputs: Sequence[str], options=None,
           options_name: str | None = None) -> None:
        s = self.s
        version = op_version(code, self.dtypes[inputs[0]])
        builtin = getattr(s.BuiltinOperator, code)
        key = (builtin, version)
        if key not in self.opcodes:
            self.opcodes[key] = len(self.opcodes)
            self.op_versions.append((code, version))
        o = s.OperatorT()
        o.opcodeIndex = self.opcodes[key]
        o.inputs = np.asarray([self.index[i] for i in inputs], np.int32)
        o.outputs = np.asarray([self.index[i] for i in outputs], np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_name)
            o.builtinOptions = options
        self.operators.append(o)

    def pack(self, *, inputs: Sequence[str], outputs: Sequence[str], metadata: dict[str, bytes],
             description: str) -> bytes:
        import flatbuffers

        s = self.s
        shared: dict = {}
        for t in self.tensors:
            if t.quantization is not None:
                t.quantization.cache = shared
        sg = s.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = np.asarray([self.index[n] for n in inputs], np.int32)
        sg.outputs = np.asarray([self.index[n] for n in outputs], np.int32)
        sg.operators = self.operators
        sg.name = "main"
        codes = [None] * len(self.opcodes)
        for (builtin, version), i in self.opcodes.items():
            oc = s.OperatorCodeT()
            # deprecated_builtin_code is an int8: 127 (PLACEHOLDER_FOR_GREATER_OP_CODES) above it
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), version
            codes[i] = oc
        buffers = list(self.buffers)
        meta = []
        for name, data in metadata.items():
            m = s.MetadataT()
            m.name, m.buffer = name, len(buffers)
            buffers.append(data)
            meta.append(m)
        sig = s.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
        sig.inputs, sig.outputs = [], []
        for names, lst in ((inputs, sig.inputs), (outputs, sig.outputs)):
            for n in names:
                tm = s.TensorMapT()
                tm.name, tm.tensorIndex = n, self.index[n]
                lst.append(tm)
        model = s.ModelT()
        model.version = SCHEMA_VERSION
        model.operatorCodes = codes
        model.subgraphs = [sg]
        model.description = description
        model.buffers = [_RawBuffer(s, b) for b in buffers]
        model.metadata = meta
        model.signatureDefs = [sig]
        builder = flatbuffers.Builder(sum(len(b) for b in buffers) + (1 << 16))
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def op_version(code: str, input_dtype: str) -> int:
    """The operator version op_version.cc assigns for this op and input type (module doc)."""
    if input_dtype != "INT8":
        return 1
    for m in OPS.values():
        if m.tflite == code:
            return m.tflite_version_int8
    return _INT8_VERSIONS[code]


def _pad_op(g: _Graph, src: str, name: str, before_after: tuple[int, int], *, fill_min: bool) -> str:
    """PAD (fills with the zero point, or 0.0 for float) or PADV2 (fills with the dtype's
    minimum) on H and W: rows/cols `before` on top/left, `after` on bottom/right."""
    s = g.s
    b, a = before_after
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
    src = n.inputs[0]
    _, h, w, _ = g.shapes[src]
    pad = conv_padding(h, c.kernel, c.stride, c.pad)
    if pad.explicit is not None:
        src = _pad_op(g, src, f"{n.name}.pad", pad.explicit, fill_min=False)
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
    src = n.inputs[0]
    _, h, w, ch = g.shapes[src]
    pad = pool_padding(h, n.kernel, n.stride, n.ceil_mode)
    if pad.explicit is not None:
        src = _pad_op(g, src, f"{n.name}.pad", pad.explicit, fill_min=True)
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


# ---------------------------------------------------------------- structural check


def check_flatbuffer(buf: bytes) -> None:
    """Raise ExportError unless `buf` parses as a TFLite model whose every reference is in range.

    Python's flatbuffers package has no Verifier, so this parses the whole file with the
    schema's object API (out-of-range offsets raise in Python instead of crashing native code)
    and then checks what the interpreter trusts: buffer 0 empty; tensor, buffer, opcode indices
    in range; constant data sizes equal to shape x element size; quantization vectors of equal
    length and per-channel ones along an existing axis of matching size; every operator input
    produced earlier, constant, or a subgraph input.

    A zip archive after the flatbuffer (the associated files) is cut off first, and the model
    must parse from the bytes before it alone. A "TFLITE_METADATA" entry must read back
    (`formats.standard_metadata.standard_metadata_problems`): one subgraph with as many inputs and
    outputs as the model, every associated file in the archive, stored uncompressed, a label
    file with one line per class."""
    s = _schema()
    problems: list[str] = []
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise ExportError("the flatbuffer has no 'TFL3' file identifier")
    try:
        end, _ = read_associated_files(buf)
    except ValueError as e:  # MetadataError
        raise ExportError(f"the bytes after the flatbuffer: {e}") from None
    try:
        m = s.ModelT.InitFromPackedBuf(bytearray(buf[:end]), 0)
    except Exception as e:  # noqa: BLE001 - any parse failure means a malformed file
        raise ExportError(f"the flatbuffer does not parse: {type(e).__name__}: {e}") from None
    if m.version != SCHEMA_VERSION:
        problems.append(f"schema version {m.version} is not {SCHEMA_VERSION}")
    buffers = m.buffers or []
    if not buffers or (buffers[0].data is not None and len(buffers[0].data)):
        problems.append("buffer 0 must exist and be empty")
    codes = m.operatorCodes or []
    known = {v for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    for i, oc in enumerate(codes):
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code not in known or oc.version < 1:
            problems.append(f"operator code {i}: builtin {code} version {oc.version} is not valid")
    if len(m.subgraphs or []) != 1:
        problems.append(f"{len(m.subgraphs or [])} subgraphs (one expected)")
    for sg in m.subgraphs or []:
        tensors = sg.tensors or []
        nt = len(tensors)
        const = set()
        for ti, t in enumerate(tensors):
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            shape = [int(v) for v in (t.shape if t.shape is not None else [])]
            if any(v < 1 for v in shape):
                problems.append(f"tensor {name}: shape {shape}")
            if not 0 <= t.buffer < len(buffers):
                problems.append(f"tensor {name}: buffer {t.buffer} out of range")
                continue
            data = buffers[t.buffer].data
            if t.buffer and data is not None and len(data):
                const.add(ti)
                want = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(types.get(t.type, ""), 0)
                if len(data) != want:
                    problems.append(f"tensor {name}: {len(data)} data bytes, shape {shape} needs {want}")
            q = t.quantization
            if q is not None and q.scale is not None:
                ns, nz = len(q.scale), len(q.zeroPoint) if q.zeroPoint is not None else 0
                if ns != nz:
                    problems.append(f"tensor {name}: {ns} scales but {nz} zero points")
                if not np.all(np.isfinite(q.scale)) or not np.all(np.asarray(q.scale) > 0):
                    problems.append(f"tensor {name}: scales must be positive and finite")
                if ns > 1 and not (0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == ns):
                    problems.append(f"tensor {name}: {ns} per-channel scales along axis {q.quantizedDimension} of {shape}")
        ins = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
        outs = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
        if any(not 0 <= i < nt for i in ins + outs):
            problems.append("subgraph inputs/outputs out of range")
        ready = set(ins) | const
        for k, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < len(codes):
                problems.append(f"operator {k}: opcode index {op.opcodeIndex} out of range")
            oi = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            oo = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if any(not -1 <= i < nt for i in oi) or any(not 0 <= i < nt for i in oo):
                problems.append(f"operator {k}: tensor index out of range")
                continue
            late = [i for i in oi if i >= 0 and i not in ready]
            if late:
                problems.append(f"operator {k}: reads tensors {late} before they are written")
            ready.update(oo)
        if any(o not in ready for o in outs):
            problems.append("a subgraph output is never written")
    for md in m.metadata or []:
        if not 0 <= md.buffer < len(buffers):
            problems.append(f"metadata buffer {md.buffer} out of range")
        elif md.name in (STANDARD_KEY, STANDARD_KEY.encode()) and len(m.subgraphs or []) == 1:
            sg = m.subgraphs[0]
            shapes = [[int(v) for v in sg.tensors[i].shape] for i in sg.inputs], \
                     [[int(v) for v in sg.tensors[i].shape] for i in sg.outputs]
            entry = bytes(buffers[md.buffer].data if buffers[md.buffer].data is not None else b"")
            problems += standard_metadata_problems(buf, entry, *shapes)
    if problems:
        raise ExportError("malformed TFLite flatbuffer: " + "; ".join(problems))


# ---------------------------------------------------------------- verification


def synthetic_images(size: int, n: int = SYNTHETIC_IMAGES, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """`n` deterministic uint8 (size, size, 3) images from numpy.random.default_rng(seed): even
    indices are smooth (a random 8x8x3 grid upsampled nearest-neighbour, plus noise of std 8),
    odd ones uniform noise over 0..255. Used to verify an export when no images are given."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        if k % 2 == 0:
            grid = rng.uniform(0, 255, (8, 8, 3))
            idx = (np.arange(size) * 8) // size
            img = grid[idx][:, idx] + rng.normal(0, 8, (size, size, 3))
        else:
            img = rng.uniform(0, 256, (size, size, 3))
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _check_images(images: np.ndarray | None, size: int) -> tuple[np.ndarray, str]:
    if images is None:
        return synthetic_images(size), f"synthetic (seed {SYNTHETIC_SEED})"
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or len(images) == 0:
        raise DataError(f"verify_images must be uint8 (N, {size}, {size}, 3) pixels, got "
                        f"{images.dtype}{images.shape}; make them with data.to_uint8_input")
    return images, "given"


def _threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _run(interp, images: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    missing = [n for n in names if n not in outs]
    if missing:
        raise ExportError(f"internal: outputs {missing} not in {sorted(outs)}")  # pragma: no cover
    res: dict[str, list] = {n: [] for n in names}
    for img in images:
        interp.set_tensor(inp, img[None])
        interp.invoke()
        for n in names:
            res[n].append(interp.get_tensor(outs[n])[0].copy())
    return {n: np.stack(v) for n, v in res.items()}


def _reference(qm, images: np.ndarray, head: str, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    from ..quant.reference import run_int8

    heads, logits = [], []
    for i in range(0, len(images), batch):
        r = run_int8(qm, images[i:i + batch], keep=True)
        heads.append(r.tensors[head])
        logits.append(r.logits)
    return np.concatenate(heads), np.concatenate(logits)


def _verify_int8(qm, file_path: Path, variant: bytes, images: np.ndarray, head: str) -> dict:
    from ..quant.reference import softmax

    Interpreter = _interpreter_cls()
    shipped = _run(Interpreter(model_path=str(file_path), num_threads=_threads()), images, [PROBABILITY])
    probe = _run(Interpreter(model_content=variant, num_threads=_threads()), images, [head, OUTPUT])
    ref_head, ref_logits = _reference(qm, images, head)
    diff = np.abs(probe[head].astype(np.int32) - ref_head.astype(np.int32))
    probs = shipped[PROBABILITY]
    # strict: the first index of the maximum on both sides (the head keeps exact ties as ties,
    # and equal logits give equal probabilities)
    agree = probs.argmax(axis=1) == ref_logits.argmax(axis=1)
    return {
        "lsb_match": float((diff <= 1).mean()),
        "max_lsb_diff": int(diff.max()),
        "exact_match": float((diff == 0).mean()),
        "top1_agreement": float(agree.mean()),
        "max_logit_diff_lsb": float(np.abs(probe[OUTPUT].astype(np.float64) - ref_logits).max()
                                    / qm.tensors[head].scale),
        "max_score_diff": float(np.abs(probs.astype(np.float64) - softmax(ref_logits)).max()),
        "finite": bool(np.isfinite(probs).all() and np.isfinite(probe[OUTPUT]).all()),
    }


@dataclass(frozen=True)
class Delegation:
    """How LiteRT's default delegate (XNNPACK) took a model: `partitions` delegate nodes, and
    `whole` when there is one and it reads every graph input and writes every graph output
    (then no operator runs outside it)."""

    partitions: int
    whole: bool
    ops: int  # the model's operators


def xnnpack_delegation(model: bytes | str | os.PathLike, threads: int = 1) -> Delegation:
    """Load `model` in LiteRT (default delegate: XNNPACK) and read which nodes the delegate
    replaced: LiteRT lists each delegate partition as one extra node named DELEGATE after the
    model's own operators."""
    Interpreter = _interpreter_cls()
    kw = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = Interpreter(**kw, num_threads=threads)
    it.allocate_tensors()
    nodes = it._get_ops_details()  # the only Python view of the execution plan's delegate nodes
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ins = {int(d["index"]) for d in it.get_input_details()}
    outs = {int(d["index"]) for d in it.get_output_details()}
    whole = len(delegates) == 1 and ins <= {int(i) for i in delegates[0]["inputs"]} \
        and outs <= {int(i) for i in delegates[0]["outputs"]}
    return Delegation(len(delegates), whole, len(nodes) - len(delegates))


# ---------------------------------------------------------------- writers


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


def to_tflite(qm, path: str | os.PathLike, *, verify_images: np.ndarray | None = None) -> ExportReport:
    """Write the fully-integer .tflite of `qm` to `path`, verified against `run_int8` first.

    `verify_images`: uint8 (N, S, S, 3) pixels in the model's channel order (as
    `data.to_uint8_input` makes them); None runs `synthetic_images(S)`. Raises ExportError (and
    leaves nothing at `path`) when the model cannot be expressed or the written file does not
    match the reference (module doc)."""
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
        v = _verify_int8(qm, tmp, variant, images, head)
        # float-kept convs sum in the runtime's order: within 1 LSB, not bit for bit (ops.FLOAT_CONV)
        n_fc = len(qm.float_convs)
        min_lsb = FLOAT_CONV_MIN_LSB_MATCH if n_fc else MIN_HEAD_WITHIN_1_LSB
        min_top1 = FLOAT_CONV_MIN_TOP1 if n_fc else MIN_TOP1_AGREEMENT
        score_tol = (float_conv_score_diff(qm.tensors[head].scale) if n_fc else
                     max_score_diff(qm.tensors[head].scale, g.shapes[head][1] * g.shapes[head][2]))
        ok = (v["finite"] and v["lsb_match"] >= min_lsb
              and v["top1_agreement"] >= min_top1 and v["max_score_diff"] <= score_tol)
        if not ok:
            raise ExportError(
                f"{path}: the written TFLite model does not match the integer reference on "
                f"{len(images)} {source} images: conv10 within 1 LSB {100 * v['lsb_match']:.3f} % "
                f"(need >= {100 * min_lsb:.1f} %), max {v['max_lsb_diff']} LSB; top-1 "
                f"agreement {100 * v['top1_agreement']:.2f} % (need >= {100 * min_top1:.1f} %); "
                + (f"the model keeps {n_fc} conv(s) in float, checked within 1 LSB for float summation "
                   "order; " if n_fc else "") +
                f"max |logit diff| {v['max_logit_diff_lsb']:.4g} x conv10 scale; max |probability diff| "
                f"{v['max_score_diff']:.3g} (need <= {score_tol:.3g}); outputs finite: {v['finite']}. "
                "Nothing was written."
            )
    return ExportReport(Path(path), len(data), "int8", len(images), source, v["lsb_match"],
                        v["max_lsb_diff"], v["exact_match"], v["top1_agreement"],
                        v["max_logit_diff_lsb"], "ai-edge-litert", runtime_version(), tuple(g.op_versions),
                        v["max_score_diff"])


def build_tflite_fp32(arch: Arch, params, *, metadata: ModelMetadata) -> bytes:
    """The FP32 .tflite bytes (not written, not verified)."""
    g = _build_fp32(arch, params)
    return _file_bytes(g, metadata, _description(arch, "fp32"))


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
        Interpreter = _interpreter_cls()
        probs = _run(Interpreter(model_path=str(tmp), num_threads=_threads()), images, [PROBABILITY])[PROBABILITY]
        sums = probs.astype(np.float64).sum(axis=1)
        if probs.shape != (len(images), arch.num_classes) or not np.isfinite(probs).all() \
                or not np.allclose(sums, 1.0, atol=1e-4):
            raise ExportError(f"{path}: the written FP32 model gives probabilities of shape {probs.shape} "
                              f"(finite: {bool(np.isfinite(probs).all())}, sums {np.round(sums, 5).tolist()}); "
                              "nothing was written")
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
