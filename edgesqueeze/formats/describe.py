"""What a model file says about itself, read without a runtime: format, edgesqueeze metadata,
input/output tensors and the operators with counts (`describe_model`; `edgesqueeze info MODEL`
prints it), after the same structural checks the runtime makes before it loads a file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .files import format_of, not_a_model, parse_metadata
from .flatbuffer import FlatbufferError, _Reader, read_metadata_entries
from .metadata import METADATA_KEY, ModelMetadata
from .onnx import (_ONNX_GRAPH_INITIALIZER, _ONNX_GRAPH_NODE, _ONNX_MODEL_GRAPH, _ONNX_NODE_OP_TYPE, _ONNX_TENSOR_NAME,
                   ONNX_TARGET_KEY, check_onnx_scales, onnx_metadata_props, proto_fields)
from .tflite import check_tflite_bytes

# schema.fbs BuiltinOperator names in code order (codes 0..209): the file stores numbers only,
# and a board without the schema module (tflite-runtime, or no TFLite package) must name them.
_TFLITE_BUILTIN_NAMES = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6
RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM
EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND
TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN
EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX
MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV
SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT
REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU
REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS
HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE
READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM
MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX
UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT
STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM
STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM
STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS
STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM
STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER
STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE
STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split())
_TFLITE_CUSTOM = 32  # BuiltinOperator.CUSTOM: the name is the operator code's custom_code string
_TFLITE_TYPE_NAMES = ("float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64",
                      "int8", "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16",
                      "int4", "bfloat16", "int2", "uint4")  # schema.fbs TensorType, in code order
# onnx.proto TensorProto.DataType
_ONNX_TYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
                    16: "bfloat16", 21: "uint4", 22: "int4"}
# onnx.proto: ModelProto.opset_import; OperatorSetIdProto.domain / .version;
# GraphProto.input / .output; NodeProto.domain; ValueInfoProto.name / .type; TypeProto.tensor_type;
# TypeProto.Tensor.elem_type / .shape; TensorShapeProto.dim; Dimension.dim_value / .dim_param
_ONNX_MODEL_OPSET = 8
_ONNX_GRAPH_INPUT, _ONNX_GRAPH_OUTPUT = 11, 12
_ONNX_NODE_DOMAIN = 7
_DEFAULT_LABELS_SHOWN = 5


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the file declares it. A dimension is an int, the name of a
    symbolic (ONNX) dimension such as "batch", or None when the file leaves it open."""

    name: str
    dtype: str
    shape: tuple

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name} {self.dtype} [{', '.join('?' if d is None else str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class ModelFileInfo:
    """What a model file says about itself (`describe_model`; `runtime.describe` adds the path,
    the file's size and, for an update bundle, what the bundle holds)."""

    format: str  # "tflite" | "onnx"
    model_bytes: int  # the model file's size (unpacked, for a bundle)
    metadata: ModelMetadata | None  # None: no edgesqueeze metadata (the runtime refuses the file)
    ops: dict[str, int]  # operator -> how many, most frequent first
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    target: str | None = None  # ONNX: the export target it was written for ("x86" | "arm")
    opsets: dict[str, int] = field(default_factory=dict)  # ONNX: domain ("" = ai.onnx) -> version
    path: Path | None = None
    file_bytes: int | None = None  # the file on disk (the bundle's size for a bundle)
    bundle: dict | None = None  # {name, bundle_bytes, model_bytes, sha256} for an update bundle

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())

    def to_dict(self, labels_shown: int = _DEFAULT_LABELS_SHOWN) -> dict:
        """JSON-ready; the first `labels_shown` class names (all of them with a negative number)."""
        m = self.metadata
        meta = None
        if m is not None:
            shown = m.labels if labels_shown < 0 else m.labels[:labels_shown]
            meta = {"arch": m.arch, "scheme": m.scheme, "classes": len(m.labels), "first_labels": list(shown),
                    "input": {"size": m.input_size, "layout": m.input_layout, "dtype": m.input_dtype,
                              **m.preprocess.to_dict(), "pixel_format": m.pixel_format},
                    "calibration": dict(m.calibration), "version": m.version}
        return {"path": None if self.path is None else str(self.path), "file_bytes": self.file_bytes,
                "bundle": self.bundle, "format": self.format, "model_bytes": self.model_bytes,
                "target": self.target, "opsets": dict(self.opsets), "metadata": meta,
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "operators": self.num_ops, "ops": dict(self.ops)}


def _by_count(counts: Counter) -> dict[str, int]:
    """Most frequent first; ties in the order the graph first uses them."""
    order = {k: i for i, k in enumerate(counts)}
    return {k: counts[k] for k in sorted(counts, key=lambda k: (-counts[k], order[k]))}


def describe_model(data: bytes, *, source: str, name: str | None = None) -> ModelFileInfo:
    """Format, edgesqueeze metadata, inputs/outputs and operator counts of a .tflite/.onnx
    file's bytes, after the same structural checks `Classifier.load` makes (`name`: the file's
    name, whose suffix decides when the bytes do not; `source` names it in errors).
    ModelFileError for bytes that are not such a model or whose edgesqueeze metadata is
    malformed; a model without edgesqueeze metadata is described with metadata None."""
    label = Path(name or source)
    fmt = format_of(label, data)
    if fmt == "tflite":
        try:
            check_tflite_bytes(data)
            info = _describe_tflite(data)
            text = (read_metadata_entries(data).get(METADATA_KEY) or b"").decode("utf-8", "replace")
        except FlatbufferError as e:
            raise not_a_model(label, data, "TFLite", str(e)) from None
    else:
        try:
            props = onnx_metadata_props(data)
            check_onnx_scales(data)
            info = _describe_onnx(data)
        except ValueError as e:
            raise not_a_model(label, data, "ONNX", str(e)) from None
        text = props.get(METADATA_KEY)
        target = props.get(ONNX_TARGET_KEY, "").strip().lower() or None
        info = {**info, "target": target}
    metadata = parse_metadata(Path(source), text) if text else None
    return ModelFileInfo(format=fmt, model_bytes=len(data), metadata=metadata, **info)


def _describe_tflite(buf: bytes) -> dict:
    """ops, inputs and outputs of a flatbuffer that check_tflite_bytes accepted."""
    r = _Reader(buf)
    model = r.indirect(0)

    def scalar(table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = r.field(table, index)
        return default if pos is None else r._unpack(fmt, pos)

    def ints(table: int, index: int) -> list[int]:
        v = r.vector(table, index)
        return [] if v is None else [r.i32(v[0] + 4 * i) for i in range(v[1])]

    names = []
    oc = r.vector(model, 1)
    for i in range(oc[1] if oc else 0):
        t = r.table_at(oc[0], i)
        code = max(scalar(t, 0, "<b"), scalar(t, 3, "<i"))  # schema.fbs: the larger of the two
        if code == _TFLITE_CUSTOM:
            custom = r.bytes_of(t, 1)
            names.append(custom.decode("utf-8", "replace") if custom else "CUSTOM")
        else:
            names.append(_TFLITE_BUILTIN_NAMES[code] if code < len(_TFLITE_BUILTIN_NAMES) else f"BUILTIN_{code}")
    counts: Counter = Counter()
    sg_vec = r.vector(model, 2)
    for s in range(sg_vec[1]):
        ops = r.vector(r.table_at(sg_vec[0], s), 3)
        for k in range(ops[1] if ops else 0):
            counts[names[scalar(r.table_at(ops[0], k), 0, "<I")]] += 1
    sg = r.table_at(sg_vec[0], 0)  # the model's entry point
    tensors = r.vector(sg, 0)

    def tensor(i: int) -> TensorInfo:
        t = r.table_at(tensors[0], i)
        ttype = scalar(t, 1, "<b")
        name = (r.bytes_of(t, 3) or b"").decode("utf-8", "replace")
        return TensorInfo(name, _TFLITE_TYPE_NAMES[ttype] if 0 <= ttype < len(_TFLITE_TYPE_NAMES) else f"type {ttype}",
                          tuple(ints(t, 0)))

    return {"ops": _by_count(counts), "inputs": tuple(tensor(i) for i in ints(sg, 1)),
            "outputs": tuple(tensor(i) for i in ints(sg, 2))}


def _text(data: bytes, span: tuple[int, int]) -> str:
    return bytes(data[span[0]:span[1]]).decode("utf-8", "replace")


def _onnx_value_info(data: bytes, span: tuple[int, int]) -> TensorInfo:
    name, dtype, shape = "", "?", []
    for f, w, v in proto_fields(data, *span):
        if f == 1 and w == 2:
            name = _text(data, v)
        elif f == 2 and w == 2:  # TypeProto
            for tf, tw, tv in proto_fields(data, *v):
                if tf != 1 or tw != 2:  # only tensor_type
                    continue
                for ef, ew, ev in proto_fields(data, *tv):
                    if ef == 1 and ew == 0:
                        dtype = _ONNX_TYPE_NAMES.get(ev, f"type {ev}")
                    elif ef == 2 and ew == 2:  # TensorShapeProto
                        for df, dw, dv in proto_fields(data, *ev):
                            if df != 1 or dw != 2:
                                continue
                            dim = None
                            for xf, xw, xv in proto_fields(data, *dv):
                                if xf == 1 and xw == 0:
                                    dim = xv
                                elif xf == 2 and xw == 2:
                                    dim = _text(data, xv)
                            shape.append(dim)
    return TensorInfo(name, dtype, tuple(shape))


def _describe_onnx(data: bytes) -> dict:
    """ops (op_type, prefixed by its domain outside the default one), inputs (initializers
    left out: older files list them as inputs too), outputs and opsets of a ModelProto."""
    graph, opsets = None, {}
    for f, w, v in proto_fields(data):
        if f == _ONNX_MODEL_GRAPH and w == 2:
            graph = v
        elif f == _ONNX_MODEL_OPSET and w == 2:
            domain, version = "", 0
            for of, ow, ov in proto_fields(data, *v):
                if of == 1 and ow == 2:
                    domain = _text(data, ov)
                elif of == 2 and ow == 0:
                    version = ov
            opsets[domain] = version
    if graph is None:
        raise ValueError("no graph in it: not a serialized ONNX ModelProto")
    counts: Counter = Counter()
    inputs, outputs, initializers = [], [], set()
    for f, w, v in proto_fields(data, *graph):
        if f == _ONNX_GRAPH_NODE and w == 2:
            op, domain = "", ""
            for nf, nw, nv in proto_fields(data, *v):
                if nf == _ONNX_NODE_OP_TYPE and nw == 2:
                    op = _text(data, nv)
                elif nf == _ONNX_NODE_DOMAIN and nw == 2:
                    domain = _text(data, nv)
            counts[f"{domain}.{op}" if domain not in ("", "ai.onnx") else op] += 1
        elif f == _ONNX_GRAPH_INITIALIZER and w == 2:
            initializers.update(_text(data, tv) for tf, tw, tv in proto_fields(data, *v)
                                if tf == _ONNX_TENSOR_NAME and tw == 2)
        elif f == _ONNX_GRAPH_INPUT and w == 2:
            inputs.append(_onnx_value_info(data, v))
        elif f == _ONNX_GRAPH_OUTPUT and w == 2:
            outputs.append(_onnx_value_info(data, v))
    return {"ops": _by_count(counts), "inputs": tuple(t for t in inputs if t.name not in initializers),
            "outputs": tuple(outputs), "opsets": opsets}


__all__ = ["ModelFileInfo", "TensorInfo", "describe_model"]
