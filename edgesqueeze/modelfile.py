"""Reading a model file without running it: the checks a file passes before a runtime sees
it, and what the file says about itself. The standard library and numpy only (no torch, onnx or
TFLite package), so a board can check and describe a file before any runtime is installed.

- `check_tflite_bytes`: a flatbuffer walk over every table, vector and index an interpreter
  follows (a native interpreter can abort the whole process on a malformed buffer, which
  Python cannot catch);
- `onnx_metadata_props`, `check_onnx_scales`: a minimal protobuf walk (`_proto_fields`);
- `describe_model`: format, edgesqueeze metadata, input/output tensors and the operators with
  counts (`edgesqueeze info MODEL` prints it);
- `read_file_bytes`, `not_a_model`, `parse_metadata`: every problem with a file is a
  `ModelFileError` naming the file and the fix.

An update bundle (`edgesqueeze pack`) is unpacked by `bundle.read_model_file`, which builds on
this module; `runtime` builds on both.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, ModelFileError
from .export.tflite_schema import FILE_IDENTIFIER, SCHEMA_VERSION, FlatbufferError, _Reader, read_metadata_entries
from .metadata import METADATA_KEY, ModelMetadata

ONNX_TARGET_KEY = "edgesqueeze.target"  # export.onnx.TARGET_KEY: "x86" | "arm"
TFLITE_SUFFIXES = (".tflite",)
ONNX_SUFFIXES = (".onnx",)
MODEL_FILE_HINT = "give the path of a .onnx or .tflite file written by `edgesqueeze quantize`"
MODEL_HINT = MODEL_FILE_HINT + " (or its .esq bundle)"


# ---------------------------------------------------------------- checks

_TFLITE_TYPE_SIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
                     13: 0, 14: 0, 15: 4, 16: 4, 17: 1, 18: 0, 19: 0, 20: 2}  # schema.fbs TensorType
# Zero points a tensor type can hold (LiteRT keeps them as int32). LiteRT does not check them:
# an int8 activation with zero point 128 made it segfault while loading (a byte overwrite found
# by tests/test_hardening.py), so they are checked before it sees the file.
# schema.fbs TensorType: 9 INT8, 3 UINT8, 7 INT16, 16 UINT16, 17 INT4; others: int32
_TFLITE_ZERO_POINT_RANGE = {9: (-128, 127), 3: (0, 255), 7: (-32768, 32767), 16: (0, 65535), 17: (-8, 7)}
_INT32_RANGE = (-2**31, 2**31 - 1)
# The only operator inputs that may be absent (-1): the bias of CONV_2D, DEPTHWISE_CONV_2D and
# FULLY_CONNECTED. On a CONCATENATION whose first input was -1 LiteRT reads out of bounds
# (a segfault or an error, depending on the heap; found by tests/test_hardening.py);
# edgesqueeze's writers never leave an input out.
_TFLITE_OPTIONAL_INPUTS = {3: {2}, 4: {2}, 9: {2}}  # builtin code -> input positions
# Ops that requantize by input_scale * weight_scale[c] / output_scale (CONV_2D, DEPTHWISE_CONV_2D,
# FULLY_CONNECTED). XNNPACK refuses a multiplier outside [2^-32, 256) and LiteRT 2.3 then aborted
# the process ("double free or corruption") when the whole graph was one delegate partition: a
# scale overwritten with a huge positive float (tests/test_hardening.py). Checked before loading.
_TFLITE_REQUANTIZING = (3, 4, 9)
_REQUANT_RANGE = (2.0 ** -32, 256.0)
_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
          b"BM": "a BMP image", b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip file",
          b"%PDF": "a PDF document", b"\x7fELF": "an executable"}


def _looks_like(data: bytes) -> str | None:
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            return what
    if data[:1] in (b"{", b"[") or data[:5].lower() in (b"<?xml", b"<html"):
        return "a text file"
    return None


def check_tflite_bytes(buf: bytes) -> None:
    """Raise FlatbufferError unless `buf` is a TFLite flatbuffer whose every table, vector and
    index an interpreter follows lies inside the file (standard library only).

    Walks: the root Model (schema version 3), operator codes, buffers (data inside the file),
    each subgraph's tensors (shape, type, buffer index, constant data size = shape x element
    size, quantization vectors: positive finite scales, zero points in the type's range),
    inputs/outputs and operators (opcode index, tensor indices, every input either constant or
    written by the graph), and the metadata entries."""
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise FlatbufferError("no 'TFL3' file identifier at bytes 4..8")
    r = _Reader(buf)
    n = r.n

    def vec(table: int, index: int, elem: int) -> tuple[int, int]:
        v = r.vector(table, index)
        if v is None:
            return 0, 0
        start, length = v
        if start + length * elem > n:
            raise FlatbufferError(f"a vector of {length} elements runs past the end of the file ({n} bytes)")
        return start, length

    def ints(table: int, index: int, fmt: str = "<i") -> list[int]:
        start, length = vec(table, index, struct.calcsize(fmt))
        return [r._unpack(fmt, start + struct.calcsize(fmt) * i) for i in range(length)]

    def scalar(table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = r.field(table, index)
        return default if pos is None else r._unpack(fmt, pos)

    model = r.indirect(0)
    version = scalar(model, 0, "<I")
    if version != SCHEMA_VERSION:
        raise FlatbufferError(f"schema version {version}, expected {SCHEMA_VERSION}")
    oc_start, n_codes = vec(model, 1, 4)
    builtin = []
    for i in range(n_codes):
        oc = r.table_at(oc_start, i)
        vec(oc, 1, 1)  # custom_code
        if scalar(oc, 2, "<i", 1) < 1:
            raise FlatbufferError(f"operator code {i} has version < 1")
        builtin.append(max(scalar(oc, 0, "<b"), scalar(oc, 3, "<i")))  # schema.fbs: the larger of the two
    b_start, n_buffers = vec(model, 4, 4)
    if n_buffers < 1:
        raise FlatbufferError("no buffers")
    sizes = []
    for i in range(n_buffers):
        b = r.table_at(b_start, i)
        _, length = vec(b, 0, 1)
        off, size = scalar(b, 1, "<Q"), scalar(b, 2, "<Q")
        if off > 1 and off + size > n:
            raise FlatbufferError(f"buffer {i} (offset {off}, {size} bytes) lies past the end of the file")
        sizes.append(length if length else (size if off > 1 else 0))
    sg_start, n_sub = vec(model, 2, 4)
    if n_sub < 1:
        raise FlatbufferError("no subgraphs")
    for s in range(n_sub):
        sg = r.table_at(sg_start, s)
        t_start, n_tensors = vec(sg, 0, 4)
        has_data = []  # per tensor: constant data, or a variable (state) tensor
        scales: dict[int, np.ndarray] = {}  # per quantized tensor: its scales (float64)
        for t in range(n_tensors):
            tt = r.table_at(t_start, t)
            shape = ints(tt, 0)
            if any(d < 0 for d in shape):
                raise FlatbufferError(f"tensor {t}: negative dimension in shape {shape}")
            ttype = scalar(tt, 1, "<b")
            if ttype not in _TFLITE_TYPE_SIZE:
                raise FlatbufferError(f"tensor {t}: unknown type {ttype}")
            bi = scalar(tt, 2, "<I")
            if bi >= n_buffers:
                raise FlatbufferError(f"tensor {t}: buffer {bi} out of range ({n_buffers} buffers)")
            n0, n_len = vec(tt, 3, 1)  # name: LiteRT's get_input_details raises UnicodeDecodeError on bad UTF-8
            try:
                bytes(r.buf[n0:n0 + n_len]).decode("utf-8")
            except UnicodeDecodeError:
                raise FlatbufferError(f"tensor {t}: its name is not UTF-8 text") from None
            has_data.append(bool(bi and sizes[bi]) or bool(scalar(tt, 5, "<b")))
            item = _TFLITE_TYPE_SIZE[ttype]
            if bi and sizes[bi] and item:
                want = item * int(np.prod(shape, dtype=np.int64))
                if sizes[bi] != want:
                    raise FlatbufferError(f"tensor {t}: {sizes[bi]} bytes of data, shape {shape} needs {want}")
            qpos = r.field(tt, 4)
            if qpos is not None:
                q = r.indirect(qpos)
                _, n_min = vec(q, 0, 4)
                _, n_max = vec(q, 1, 4)
                s0, n_scale = vec(q, 2, 4)
                z0, n_zp = vec(q, 3, 8)
                qdim = scalar(q, 6, "<i")
                if n_scale != n_zp and n_zp:
                    raise FlatbufferError(f"tensor {t}: {n_scale} scales but {n_zp} zero points")
                lo, hi = _TFLITE_ZERO_POINT_RANGE.get(ttype, _INT32_RANGE)
                for k in range(n_zp):
                    z = r._unpack("<q", z0 + 8 * k)
                    if not lo <= z <= hi:
                        raise FlatbufferError(f"tensor {t}: zero point {z} outside [{lo}, {hi}], the range of its type")
                if n_scale > 1 and not (0 <= qdim < len(shape) and shape[qdim] == n_scale):
                    raise FlatbufferError(f"tensor {t}: {n_scale} per-channel scales along axis {qdim} of {shape}")
                for k in range(n_scale):
                    v = r._unpack("<f", s0 + 4 * k)
                    if not (np.isfinite(v) and v > 0):
                        raise FlatbufferError(f"tensor {t}: quantization scale {v} is not positive and finite")
                if n_scale:
                    scales[t] = np.frombuffer(bytes(r.buf[s0:s0 + 4 * n_scale]), "<f4").astype(np.float64)
        written = set()  # the subgraph's inputs and every operator output
        for name, idx in (("input", 1), ("output", 2)):
            for i in ints(sg, idx):
                if not 0 <= i < n_tensors:
                    raise FlatbufferError(f"subgraph {s}: {name} tensor {i} out of range ({n_tensors} tensors)")
                if idx == 1:
                    written.add(i)
        op_start, n_ops = vec(sg, 3, 4)
        reads = []
        for k in range(n_ops):
            op = r.table_at(op_start, k)
            code = scalar(op, 0, "<I")
            if code >= n_codes:
                raise FlatbufferError(f"operator {k}: opcode index {code} out of range ({n_codes} codes)")
            op_in, op_out = ints(op, 1), ints(op, 2)
            for i in op_in + op_out + ints(op, 6):  # inputs, outputs, intermediates
                if not -1 <= i < n_tensors:
                    raise FlatbufferError(f"operator {k}: tensor {i} out of range ({n_tensors} tensors)")
            optional = _TFLITE_OPTIONAL_INPUTS.get(builtin[code], set())
            if any(i == -1 and j not in optional for j, i in enumerate(op_in)) or -1 in op_out:
                raise FlatbufferError(f"operator {k}: a required input or output is absent (-1)")
            reads += [(k, i) for i in op_in if i >= 0]
            written.update(op_out)
            if builtin[code] in _TFLITE_REQUANTIZING and len(op_in) >= 2 and op_out \
                    and all(i in scales for i in (op_in[0], op_in[1], op_out[0])):
                with np.errstate(over="ignore"):
                    mult = scales[op_in[0]][0] * scales[op_in[1]] / scales[op_out[0]][0]
                lo, hi = _REQUANT_RANGE
                if not (np.all(mult >= lo) and np.all(mult < hi)):
                    bad = mult[~((mult >= lo) & (mult < hi))][0]
                    raise FlatbufferError(f"operator {k}: requantization multiplier {bad:.3g} (input scale x weight "
                                          f"scale / output scale) outside [2^-32, 256): a corrupt scale")
            opt = r.field(op, 4)
            if opt is not None:
                r.indirect(opt)
            vec(op, 5, 1)  # custom options
        for k, i in reads:  # else LiteRT fails at invoke ("Input tensor 53 lacks data"), not at load
            if not has_data[i] and i not in written:
                raise FlatbufferError(f"operator {k}: input tensor {i} has no data and nothing writes it")
    read_metadata_entries(buf)  # the metadata list and its buffers


def not_a_model(path: Path, data: bytes, fmt: str, detail: str) -> ModelFileError:
    what = _looks_like(data)
    what = f"; it looks like {what}" if what else ""
    return ModelFileError(f"{path}: not a usable {fmt} model ({detail}){what}; re-export it with "
                          "`edgesqueeze quantize` or copy the file again (it may be truncated or corrupt)")


def read_file_bytes(path: Path, hint: str = MODEL_HINT) -> bytes:
    """The bytes of a model file; ModelFileError naming the file and `hint` (what to give
    instead) when it is not found, a folder, not a regular file, unreadable or empty."""
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; {hint}")
    if not path.exists():
        folder = path.parent
        where = "" if folder.is_dir() else f"; the folder {folder} does not exist either"
        raise ModelFileError(f"{path}: not found (no such model file{where}); {hint}")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file; {hint}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file ({e.strerror or e})") from None
    if not data:
        raise ModelFileError(f"{path}: the file is empty (0 bytes); re-export it or copy it again")
    return data


def format_of(path: Path, data: bytes) -> str:
    """'tflite' or 'onnx', from the bytes first (the TFL3 identifier), then the suffix."""
    suffix = path.suffix.lower()
    if len(data) >= 8 and data[4:8] == FILE_IDENTIFIER:
        return "tflite"
    if suffix in TFLITE_SUFFIXES:
        raise not_a_model(path, data, "TFLite", "no 'TFL3' identifier at bytes 4..8")
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if data[:1] == b"\x08" and _looks_like(data) is None:  # ModelProto starts with ir_version (field 1)
        return "onnx"
    raise ModelFileError(f"{path}: unknown model format (suffix {suffix or 'none'!r}, and the bytes are "
                         f"neither TFLite nor ONNX); {MODEL_HINT}")


# ---------------------------------------------------------------- ONNX (protobuf)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("a varint runs past the end of the file")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _proto_fields(buf: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of one protobuf message's top-level fields; a
    length-delimited value is a (start, end) pair. ValueError on anything malformed."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = (pos, pos + length), pos + length
        else:
            raise ValueError(f"wire type {wire} (not used by ONNX)")
        if pos > end:
            raise ValueError(f"field {field_no} runs past the end of its message")
        yield field_no, wire, value


_ONNX_MODEL_GRAPH, _ONNX_MODEL_METADATA_PROPS = 7, 14  # onnx.proto ModelProto


def onnx_metadata_props(data: bytes) -> dict[str, str]:
    """ModelProto.metadata_props of a serialized ONNX model, by a minimal protobuf walk (no
    `onnx` package). ValueError when the bytes are not a well-formed ModelProto with a graph."""
    props: dict[str, str] = {}
    has_graph = False
    for field_no, wire, value in _proto_fields(data):
        if field_no == _ONNX_MODEL_GRAPH and wire == 2:
            has_graph = True
        elif field_no == _ONNX_MODEL_METADATA_PROPS and wire == 2:
            key = val = ""
            for f, w, v in _proto_fields(data, *value):
                if w == 2 and f in (1, 2):
                    try:
                        text = data[v[0]:v[1]].decode("utf-8")
                    except UnicodeDecodeError:
                        raise ValueError("a metadata entry is not UTF-8") from None
                    key, val = (text, val) if f == 1 else (key, text)
            props[key] = val
    if not has_graph:
        raise ValueError("no graph in it: not a serialized ONNX ModelProto")
    return props


# onnx.proto: GraphProto.node / .initializer; NodeProto.input / .op_type; TensorProto.data_type /
# .float_data (packed) / .name / .raw_data; TensorProto.DataType FLOAT
_ONNX_GRAPH_NODE, _ONNX_GRAPH_INITIALIZER = 1, 5
_ONNX_NODE_INPUT, _ONNX_NODE_OP_TYPE = 1, 4
_ONNX_TENSOR_DATA_TYPE, _ONNX_TENSOR_FLOAT_DATA, _ONNX_TENSOR_NAME, _ONNX_TENSOR_RAW_DATA = 2, 4, 8, 9
_ONNX_FLOAT = 1
_ONNX_SCALED_OPS = {b"QuantizeLinear", b"DequantizeLinear"}  # input 1 is the scale


def check_onnx_scales(data: bytes) -> None:
    """ValueError unless every constant scale of a QuantizeLinear/DequantizeLinear is positive
    and finite. onnxruntime does not check them: a negative or zero scale loads and runs to
    wrong (finite) logits, found by tests/test_hardening.py's mutants; the TFLite twin of this
    check is in check_tflite_bytes."""
    graph = next((v for f, w, v in _proto_fields(data) if f == _ONNX_MODEL_GRAPH and w == 2), None)
    if graph is None:
        raise ValueError("no graph in it: not a serialized ONNX ModelProto")
    scales: set[bytes] = set()
    initializers = []
    for f, w, v in _proto_fields(data, *graph):
        if f == _ONNX_GRAPH_NODE and w == 2:
            inputs, op = [], b""
            for nf, nw, nv in _proto_fields(data, *v):
                if nw == 2 and nf == _ONNX_NODE_INPUT:
                    inputs.append(bytes(data[nv[0]:nv[1]]))
                elif nw == 2 and nf == _ONNX_NODE_OP_TYPE:
                    op = bytes(data[nv[0]:nv[1]])
            if op in _ONNX_SCALED_OPS and len(inputs) > 1:
                scales.add(inputs[1])
        elif f == _ONNX_GRAPH_INITIALIZER and w == 2:
            initializers.append(v)
    for v in initializers:
        name, dtype, payload = b"", None, None
        for tf, tw, tv in _proto_fields(data, *v):
            if tf == _ONNX_TENSOR_NAME and tw == 2:
                name = bytes(data[tv[0]:tv[1]])
            elif tf == _ONNX_TENSOR_DATA_TYPE and tw == 0:
                dtype = tv
            elif tf in (_ONNX_TENSOR_RAW_DATA, _ONNX_TENSOR_FLOAT_DATA) and tw == 2:
                payload = tv
        if name not in scales or dtype != _ONNX_FLOAT or payload is None:
            continue
        raw = bytes(data[payload[0]:payload[1]])
        values = np.frombuffer(raw[: len(raw) // 4 * 4], "<f4")
        bad = values[~(np.isfinite(values) & (values > 0))]
        if len(raw) % 4 or bad.size:
            what = f"holds {bad[0]}" if bad.size else f"has {len(raw)} bytes, not whole float32 values"
            raise ValueError(f"quantization scale {name.decode('utf-8', 'replace')!r} {what}: "
                             "a scale must be positive and finite")


# ---------------------------------------------------------------- metadata


def parse_metadata(path: Path, text: str | None) -> ModelMetadata:
    """The file's ModelMetadata from its JSON text; ModelFileError when absent or malformed."""
    if not text:
        raise ModelFileError(f"{path}: no '{METADATA_KEY}' metadata (labels, input size, preprocessing), so "
                             "it was not written by edgesqueeze; re-export it with `edgesqueeze quantize`")
    try:
        return ModelMetadata.from_json(text, source=str(path))
    except DataError as e:
        raise ModelFileError(str(e)) from None


# ---------------------------------------------------------------- describing

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
    for f, w, v in _proto_fields(data, *span):
        if f == 1 and w == 2:
            name = _text(data, v)
        elif f == 2 and w == 2:  # TypeProto
            for tf, tw, tv in _proto_fields(data, *v):
                if tf != 1 or tw != 2:  # only tensor_type
                    continue
                for ef, ew, ev in _proto_fields(data, *tv):
                    if ef == 1 and ew == 0:
                        dtype = _ONNX_TYPE_NAMES.get(ev, f"type {ev}")
                    elif ef == 2 and ew == 2:  # TensorShapeProto
                        for df, dw, dv in _proto_fields(data, *ev):
                            if df != 1 or dw != 2:
                                continue
                            dim = None
                            for xf, xw, xv in _proto_fields(data, *dv):
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
    for f, w, v in _proto_fields(data):
        if f == _ONNX_MODEL_GRAPH and w == 2:
            graph = v
        elif f == _ONNX_MODEL_OPSET and w == 2:
            domain, version = "", 0
            for of, ow, ov in _proto_fields(data, *v):
                if of == 1 and ow == 2:
                    domain = _text(data, ov)
                elif of == 2 and ow == 0:
                    version = ov
            opsets[domain] = version
    if graph is None:
        raise ValueError("no graph in it: not a serialized ONNX ModelProto")
    counts: Counter = Counter()
    inputs, outputs, initializers = [], [], set()
    for f, w, v in _proto_fields(data, *graph):
        if f == _ONNX_GRAPH_NODE and w == 2:
            op, domain = "", ""
            for nf, nw, nv in _proto_fields(data, *v):
                if nf == _ONNX_NODE_OP_TYPE and nw == 2:
                    op = _text(data, nv)
                elif nf == _ONNX_NODE_DOMAIN and nw == 2:
                    domain = _text(data, nv)
            counts[f"{domain}.{op}" if domain not in ("", "ai.onnx") else op] += 1
        elif f == _ONNX_GRAPH_INITIALIZER and w == 2:
            initializers.update(_text(data, tv) for tf, tw, tv in _proto_fields(data, *v)
                                if tf == _ONNX_TENSOR_NAME and tw == 2)
        elif f == _ONNX_GRAPH_INPUT and w == 2:
            inputs.append(_onnx_value_info(data, v))
        elif f == _ONNX_GRAPH_OUTPUT and w == 2:
            outputs.append(_onnx_value_info(data, v))
    return {"ops": _by_count(counts), "inputs": tuple(t for t in inputs if t.name not in initializers),
            "outputs": tuple(outputs), "opsets": opsets}


__all__ = ["MODEL_FILE_HINT", "MODEL_HINT", "ModelFileError", "ModelFileInfo", "TensorInfo", "check_onnx_scales", "check_tflite_bytes",
           "describe_model", "format_of", "not_a_model", "onnx_metadata_props", "parse_metadata", "read_file_bytes"]
