"""Run an exported model on a board: numpy + OpenCV + one runtime, never torch.

    clf = Classifier.load("squeezenet1_0-affine-int8.tflite")   # or a .onnx file
    for c in clf.classify(frame_bgr, top_k=5):                 # pycoral-style results
        print(c.index, c.label, f"{100 * c.score:.1f} %")

Everything the runtime needs is in the file (`metadata.ModelMetadata`): labels, input size,
channel order and the resize/crop. Every file takes uint8 NHWC pixels, already resized and
centre-cropped, in the model's channel order, and gives float32 logits (N, classes); the scores
of `classify` are their softmax.

Backends, chosen from the file: a .onnx file runs in onnxruntime (`pip install
'edgesqueeze[onnx]'`), a .tflite file in LiteRT (`ai-edge-litert`, `pip install
'edgesqueeze[tflite]'`), else in the older `tflite-runtime` (2.14, numpy < 2 only: `pip install
'edgesqueeze[legacy]'`; the order is `TFLITE_FALLBACK_ORDER`). An ONNX file
exported for the ARM target (int8 activations) is run with onnxruntime's
"session.qdqisint8allowed" = 1, so its convs are integer kernels on every CPU (see
`export.onnx.session_config`; this module does not import the writer).

A .tflite file is checked with a standard-library flatbuffer walker (`check_tflite_bytes`)
before an interpreter sees it: a native interpreter can abort the whole process on a malformed
buffer, which Python cannot catch. Every problem with a file — missing, empty, truncated, not a
model, no edgesqueeze metadata, an input that is not the uint8 contract — is a `ModelFileError`
naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import struct
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import check_frame, to_uint8_input
from .errors import DataError, OptionError, missing_extra
from .export.tflite_schema import FILE_IDENTIFIER, SCHEMA_VERSION, FlatbufferError, _Reader, read_metadata_entries
from .metadata import METADATA_KEY, ModelMetadata
from .metrics import top_k as _top_k

ONNX_TARGET_KEY = "edgesqueeze.target"  # export.onnx.TARGET_KEY: "x86" | "arm"
ARM_SESSION_CONFIG = {"session.qdqisint8allowed": "1"}  # export.onnx.session_config(Target.ARM)
TFLITE_SUFFIXES = (".tflite",)
ONNX_SUFFIXES = (".onnx",)


class ModelFileError(DataError):
    """A model file cannot be used: missing, empty, truncated, not a model, or not one written
    by edgesqueeze. The message names the file and the fix."""


@dataclass(frozen=True)
class Class:
    """One classification result (as pycoral's `classify.Class`)."""

    index: int
    label: str
    score: float  # softmax probability of the logits

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "score": self.score}


class Backend(str, Enum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "ai-edge-litert"
    TFLITE_RUNTIME = "tflite-runtime"


def _as_backend(backend: Backend | str | None) -> Backend | None:
    if backend is None or isinstance(backend, Backend):
        return backend
    aliases = {"onnx": Backend.ONNXRUNTIME, "ort": Backend.ONNXRUNTIME, "litert": Backend.LITERT,
               "ai_edge_litert": Backend.LITERT, "tflite_runtime": Backend.TFLITE_RUNTIME}
    key = str(backend).strip().lower()
    for b in Backend:
        if key == b.value:
            return b
    if key in aliases:
        return aliases[key]
    raise OptionError(f"backend {backend!r} is not one of: " + ", ".join(b.value for b in Backend))


# ---------------------------------------------------------------- scores


def get_scores(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32, computed stably (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)


def get_classes(scores_row: np.ndarray, labels: Sequence[str], top_k: int = 5) -> list[Class]:
    """The `top_k` best classes of one row of scores, best first (ties: the lower index first,
    as `metrics.top_k`). A class without a label is named by its index."""
    row = np.asarray(scores_row)
    if row.ndim == 2 and row.shape[0] == 1:
        row = row[0]
    if row.ndim != 1:
        raise DataError(f"get_classes takes one row of scores, got shape {row.shape}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise OptionError(f"top_k must be a positive integer, got {top_k!r}")
    k = min(int(top_k), row.shape[0])
    idx = _top_k(row, k)[0]
    return [Class(int(i), str(labels[i]) if i < len(labels) else str(int(i)), float(row[i])) for i in idx]


# ---------------------------------------------------------------- file checks


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
            opt = r.field(op, 4)
            if opt is not None:
                r.indirect(opt)
            vec(op, 5, 1)  # custom options
        for k, i in reads:  # else LiteRT fails at invoke ("Input tensor 53 lacks data"), not at load
            if not has_data[i] and i not in written:
                raise FlatbufferError(f"operator {k}: input tensor {i} has no data and nothing writes it")
    read_metadata_entries(buf)  # the metadata list and its buffers


def _not_a_model(path: Path, data: bytes, fmt: str, detail: str) -> ModelFileError:
    what = _looks_like(data)
    what = f"; it looks like {what}" if what else ""
    return ModelFileError(f"{path}: not a usable {fmt} model ({detail}){what}; re-export it with "
                          "`edgesqueeze quantize` or copy the file again (it may be truncated or corrupt)")


def _read_file_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give a .onnx or .tflite model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; give the path of a .onnx or .tflite file "
                             "written by `edgesqueeze quantize`")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file ({e.strerror or e})") from None
    if not data:
        raise ModelFileError(f"{path}: the file is empty (0 bytes); re-export it or copy it again")
    return data


def _read_model_file(path: Path) -> tuple[bytes, dict | None]:
    """(model bytes, None), or for an update bundle (`edgesqueeze pack`, told by its magic bytes
    or its .esq suffix) the verified unpacked model and {name, bundle_bytes, model_bytes, sha256}."""
    data = _read_file_bytes(path)
    from . import bundle  # numpy + stdlib; imported here because it imports this module

    if not (bundle.is_bundle(data) or path.suffix.lower() in bundle.BUNDLE_SUFFIXES):
        return data, None
    name, model = bundle.unpack_bytes(data, source=str(path))
    return model, {"name": name, "bundle_bytes": len(data), "model_bytes": len(model),
                   "sha256": hashlib.sha256(model).hexdigest()}


def _read_model_bytes(path: Path) -> bytes:
    """The model's bytes (a bundle verified and unpacked in memory); ModelFileError if unusable."""
    return _read_model_file(path)[0]


def _format_of(path: Path, data: bytes) -> str:
    """'tflite' or 'onnx', from the bytes first (the TFL3 identifier), then the suffix."""
    suffix = path.suffix.lower()
    if len(data) >= 8 and data[4:8] == FILE_IDENTIFIER:
        return "tflite"
    if suffix in TFLITE_SUFFIXES:
        raise _not_a_model(path, data, "TFLite", "no 'TFL3' identifier at bytes 4..8")
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if data[:1] == b"\x08" and _looks_like(data) is None:  # ModelProto starts with ir_version (field 1)
        return "onnx"
    raise ModelFileError(f"{path}: unknown model format (suffix {suffix or 'none'!r}, and the bytes are "
                         "neither TFLite nor ONNX); give a .onnx or .tflite file written by `edgesqueeze quantize`")


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


# ---------------------------------------------------------------- runtimes


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise missing_extra("onnxruntime", "onnx") from e
    return onnxruntime


# LiteRT first: it is maintained and runs int8 on XNNPACK; tflite-runtime 2.14 (the last
# release, numpy < 2 only) is the fallback for a board set up with the `legacy` extra.
TFLITE_FALLBACK_ORDER = (Backend.LITERT, Backend.TFLITE_RUNTIME)
TFLITE_INSTALL_HINT = ("pip install 'edgesqueeze[tflite]' (LiteRT), or on Python <= 3.11 the older runtime: "
                       "pip install 'edgesqueeze[legacy]' (tflite-runtime 2.14.0, numpy<2, OpenCV<4.12)")


def _import_tflite(backend: Backend | None):
    """(Backend, Interpreter class, version) of the first TFLite runtime that imports, in
    TFLITE_FALLBACK_ORDER (or only the one asked for). A runtime that is installed but fails to
    import (tflite-runtime under numpy 2) is named in the error with its reason."""
    broken = []
    for b in [backend] if backend is not None else TFLITE_FALLBACK_ORDER:
        top = "ai_edge_litert" if b is Backend.LITERT else "tflite_runtime"
        try:
            if b is Backend.LITERT:
                from ai_edge_litert.interpreter import Interpreter
            else:
                from tflite_runtime.interpreter import Interpreter
        except ImportError as e:
            if (e.name or "").split(".")[0] != top:  # present, but something it imports failed
                broken.append(f"{b.value} is installed but does not import ({_short(e, 200)})")
            continue
        return b, Interpreter, _dist_version(b.value)
    why = "; ".join(broken)
    if broken and int(np.__version__.split(".")[0]) >= 2:
        why += f" (numpy is {np.__version__}; tflite-runtime needs numpy<2)"
    why = f": {why}" if why else ""
    if backend is Backend.TFLITE_RUNTIME:
        raise ImportError(f"tflite_runtime cannot be used{why or ': it is not installed'}; pip install "
                          "'edgesqueeze[legacy]' (tflite-runtime 2.14.0 with numpy<2, Python <= 3.11), or use "
                          "LiteRT: pip install 'edgesqueeze[tflite]'")
    if backend is Backend.LITERT and not broken:
        raise missing_extra("ai-edge-litert", "tflite")
    tried = ", ".join(b.value for b in ([backend] if backend else TFLITE_FALLBACK_ORDER))
    raise ImportError(f"no TFLite runtime could be imported (tried {tried}){why}; " + TFLITE_INSTALL_HINT)


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _default_threads() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (a container or
    `taskset` can allow fewer than os.cpu_count()), else os.cpu_count(). 4 on a Pi 4/5."""
    from .sysinfo import usable_cores

    return usable_cores()


def _check_threads(threads) -> int:
    if threads is None:
        return _default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise OptionError(f"threads must be a positive integer (or None for all {_default_threads()} cores), "
                          f"got {threads!r}")
    return int(threads)


# ---------------------------------------------------------------- classifier


class Classifier:
    """One model file, ready to classify BGR frames. Make it with `Classifier.load(path)`."""

    metadata: ModelMetadata
    backend: Backend
    threads: int
    path: Path
    runtime_version: str
    last_inference_ms: float

    def __init__(self, *, path: Path, metadata: ModelMetadata, backend: Backend, threads: int,
                 runtime_version: str, run, batch_fixed: bool, num_classes: int, extra: dict | None = None):
        self.path = path
        self.metadata = metadata
        self.backend = backend
        self.threads = threads
        self.runtime_version = runtime_version
        self.last_inference_ms = float("nan")
        self.num_classes = num_classes
        self.info = dict(extra or {})  # e.g. {"target": "arm", "session_config": {...}}
        self._run = run  # uint8 (n, S, S, 3) -> float32 (n, classes); n == 1 when batch_fixed
        self._batch_fixed = batch_fixed

    # -------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             backend: Backend | str | None = None) -> "Classifier":
        """Open a .onnx or .tflite file written by edgesqueeze (format from its bytes, then its
        suffix), or its update bundle from `edgesqueeze pack` (checked, unpacked in memory;
        `info["bundle"]` then says what was in it). threads=None: every core this process may use (`_default_threads`). Raises ModelFileError for a file
        that is not a usable model, ImportError naming the pip command for a missing runtime,
        OptionError for a bad `threads`/`backend`."""
        path = Path(path)
        threads = _check_threads(threads)
        backend = _as_backend(backend)
        data, bundle = _read_model_file(path)  # an update bundle (.esq) is unpacked in memory
        fmt = _format_of(path if bundle is None else Path(f"{path}:{bundle['name']}"), data)  # member's suffix
        if fmt == "tflite":
            if backend is Backend.ONNXRUNTIME:
                raise OptionError(f"{path} is a TFLite file; backend onnxruntime runs .onnx files only")
            clf = cls._load_tflite(path, data, threads, backend)
        else:
            if backend not in (None, Backend.ONNXRUNTIME):
                raise OptionError(f"{path} is an ONNX file; backend {backend.value} runs .tflite files only")
            clf = cls._load_onnx(path, data, threads)
        if bundle is not None:
            clf.info["bundle"] = bundle
        return clf

    @classmethod
    def _load_onnx(cls, path: Path, data: bytes, threads: int) -> "Classifier":
        try:
            props = onnx_metadata_props(data)
            check_onnx_scales(data)
        except ValueError as e:
            raise _not_a_model(path, data, "ONNX", str(e)) from None
        metadata = _parse_metadata(path, props.get(METADATA_KEY))
        ort = _import_onnxruntime()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        target = props.get(ONNX_TARGET_KEY, "").strip().lower()
        config = dict(ARM_SESSION_CONFIG) if target == "arm" else {}
        for k, v in config.items():
            so.add_session_config_entry(k, v)
        try:
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise _not_a_model(path, data, "ONNX", _short(e)) from None
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        s = metadata.input_size
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4 \
                or list(inputs[0].shape[1:]) != [s, s, 3]:
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ModelFileError(f"{path}: input is {got}, not uint8 NHWC [N, {s}, {s}, 3] as its metadata says; "
                                 "re-export it with `edgesqueeze quantize`")
        out = outputs[0] if outputs else None
        n_classes = out.shape[-1] if out is not None and out.shape else None
        if out is None or out.type != "tensor(float)" or not isinstance(n_classes, int):
            raise ModelFileError(f"{path}: output is not float32 logits [N, classes]; re-export it")
        _check_labels(path, metadata, n_classes)
        in_name, out_name = inputs[0].name, out.name
        batch_fixed = inputs[0].shape[0] == 1

        def run(pixels: np.ndarray) -> np.ndarray:
            return sess.run([out_name], {in_name: pixels})[0]

        clf = cls(path=path, metadata=metadata, backend=Backend.ONNXRUNTIME, threads=threads,
                  runtime_version=ort.__version__, run=run, batch_fixed=batch_fixed, num_classes=n_classes,
                  extra={"target": target or None, "session_config": config})
        clf._session = sess
        return clf

    @classmethod
    def _load_tflite(cls, path: Path, data: bytes, threads: int, backend: Backend | None) -> "Classifier":
        try:
            check_tflite_bytes(data)
        except FlatbufferError as e:
            raise _not_a_model(path, data, "TFLite", str(e)) from None
        try:
            entries = read_metadata_entries(data)
        except FlatbufferError as e:  # pragma: no cover - check_tflite_bytes read them already
            raise _not_a_model(path, data, "TFLite", str(e)) from None
        metadata = _parse_metadata(path, (entries.get(METADATA_KEY) or b"").decode("utf-8", "replace") or None)
        backend, Interpreter, version = _import_tflite(backend)
        try:
            interp = Interpreter(model_content=data, num_threads=threads)
            interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - ValueError / RuntimeError from the interpreter
            hint = ""
            if backend is Backend.TFLITE_RUNTIME and int(np.__version__.split(".")[0]) >= 2:
                hint = (f" (tflite-runtime does not work with numpy {np.__version__}: pip install "
                        "'edgesqueeze[legacy]' pins numpy<2; or use LiteRT: pip install 'edgesqueeze[tflite]')")
            raise ModelFileError(f"{path}: {backend.value} cannot load it: {_short(e)}{hint}") from None
        ins, outs = interp.get_input_details(), interp.get_output_details()
        s = metadata.input_size
        if len(ins) != 1 or ins[0]["dtype"] != np.uint8 or list(ins[0]["shape"]) != [1, s, s, 3]:
            got = ", ".join(f"{d['name']} {np.dtype(d['dtype']).name} {[int(v) for v in d['shape']]}" for d in ins)
            raise ModelFileError(f"{path}: input is {got}, not uint8 [1, {s}, {s}, 3] as its metadata says; "
                                 "re-export it with `edgesqueeze quantize`")
        if not outs or outs[0]["dtype"] != np.float32 or len(outs[0]["shape"]) != 2:
            raise ModelFileError(f"{path}: output is not float32 logits [1, classes]; re-export it")
        n_classes = int(outs[0]["shape"][-1])
        _check_labels(path, metadata, n_classes)
        in_idx, out_idx = ins[0]["index"], outs[0]["index"]

        def run(pixels: np.ndarray) -> np.ndarray:
            interp.set_tensor(in_idx, pixels)
            interp.invoke()
            return interp.get_tensor(out_idx).copy()

        clf = cls(path=path, metadata=metadata, backend=backend, threads=threads, runtime_version=version,
                  run=run, batch_fixed=True, num_classes=n_classes)
        clf._interpreter = interp
        clf._model_bytes = data  # the interpreter reads the buffer it was given: keep it alive
        return clf

    # -------------------------------------------------------- properties

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def __repr__(self) -> str:
        return (f"Classifier({str(self.path)!r}, backend={self.backend.value} {self.runtime_version}, "
                f"threads={self.threads}, input={self.input_size}x{self.input_size} "
                f"{self.metadata.channel_order}, classes={self.num_classes}, scheme={self.metadata.scheme})")

    # -------------------------------------------------------- running

    def preprocess(self, frame_bgr: np.ndarray, *, source: str = "frame") -> np.ndarray:
        """A BGR frame (uint8 or uint16; grey, BGR or BGRA) -> the model's uint8 (S, S, 3)
        input: resized and centre-cropped as the file's metadata says, in its channel order."""
        return to_uint8_input(check_frame(frame_bgr, source=source), self.metadata.preprocess)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) or (S, S, 3) pixels -> float32 logits (N, classes).
        `last_inference_ms` is the time of the model runs (all N images)."""
        x = self._check_pixels(pixels)
        t0 = time.perf_counter()
        try:
            if self._batch_fixed and len(x) > 1:
                out = np.concatenate([self._run(x[i:i + 1]) for i in range(len(x))])
            else:
                out = self._run(x)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's Fail/InvalidArgument, LiteRT's RuntimeError
            # a corrupt file can load and still fail here (a conv whose weight shape was
            # altered, found by tests/test_hardening.py): name the file, not the kernel only
            raise ModelFileError(f"{self.path}: {self.backend.value} cannot run it: {_short(e)}; the file is "
                                 "corrupt or was not written by edgesqueeze: re-export it or copy it again") from None
        self.last_inference_ms = (time.perf_counter() - t0) * 1000.0
        out = np.asarray(out, dtype=np.float32).reshape(len(x), -1)
        if not np.isfinite(out).all():  # valid files give finite logits for every uint8 input
            raise ModelFileError(f"{self.path}: the model gives non-finite logits (NaN or inf), so a scale or "
                                 "weight in the file is corrupt; re-export it or copy it again")
        return out

    def classify(self, frame_bgr: np.ndarray, top_k: int = 5) -> list[Class]:
        """The top_k classes of one BGR frame, best first, with softmax scores."""
        scores = get_scores(self.logits(self.preprocess(frame_bgr)))
        return get_classes(scores[0], self.labels, top_k)

    def classify_batch(self, frames: Sequence[np.ndarray], top_k: int = 5) -> list[list[Class]]:
        """classify() of each frame; ONNX runs them as one batch, TFLite one by one."""
        if frames is None:
            raise DataError("no frames (got None); pass a list of BGR frames")
        if isinstance(frames, np.ndarray) and frames.ndim < 4:
            raise DataError(f"classify_batch takes a list of frames (or an N x H x W x C array), got an array "
                            f"of shape {frames.shape}; use classify() for one frame")
        pixels = [self.preprocess(f, source=f"frame {i}") for i, f in enumerate(frames)]
        if not pixels:
            return []
        scores = get_scores(self.logits(np.stack(pixels)))
        return [get_classes(row, self.labels, top_k) for row in scores]

    def _check_pixels(self, pixels) -> np.ndarray:
        s = self.input_size
        want = f"uint8 (N, {s}, {s}, 3) or ({s}, {s}, 3) pixels in {self.metadata.channel_order} order " \
               "(Classifier.preprocess makes them from a frame)"
        if pixels is None or not isinstance(pixels, np.ndarray):
            raise DataError(f"logits takes {want}, got {type(pixels).__name__}")
        x = pixels[None] if pixels.ndim == 3 else pixels
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (s, s, 3) or len(x) == 0:
            raise DataError(f"logits takes {want}, got {pixels.dtype} {tuple(pixels.shape)}")
        return np.ascontiguousarray(x)


def _parse_metadata(path: Path, text: str | None) -> ModelMetadata:
    if not text:
        raise ModelFileError(f"{path}: no '{METADATA_KEY}' metadata (labels, input size, preprocessing), so "
                             "it was not written by edgesqueeze; re-export it with `edgesqueeze quantize`")
    try:
        return ModelMetadata.from_json(text, source=str(path))
    except DataError as e:
        raise ModelFileError(str(e)) from None


def _check_labels(path: Path, metadata: ModelMetadata, n_classes: int) -> None:
    if metadata.labels and len(metadata.labels) != n_classes:
        raise ModelFileError(f"{path}: the model gives {n_classes} classes but its metadata has "
                             f"{len(metadata.labels)} labels; re-export it with the right class names")


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


__all__ = ["Backend", "Class", "Classifier", "ModelFileError", "check_tflite_bytes", "get_classes", "get_scores",
           "onnx_metadata_props"]
