"""Reading a .tflite file without an interpreter: `check_tflite_bytes`, a flatbuffer walk over
every table, vector and index an interpreter follows (a native interpreter can abort the whole
process on a malformed buffer, which Python cannot catch), and the readers of what the file
says about itself:

    read_tflite_metadata(path_or_bytes) -> metadata.ModelMetadata   # the "edgesqueeze" JSON
    metadata_entry(path_or_bytes, key) -> (bytes, source)           # one Model.metadata entry
    tflite_ops(path_or_bytes) -> [(op name, version), ...]          # needs the schema module

Standard library and numpy only, except `tflite_ops` (the schema module of ai-edge-litert).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import DataError, missing_extra
from .flatbuffer import FILE_IDENTIFIER, SCHEMA_VERSION, FlatbufferError, _Reader, read_metadata_entries
from .metadata import METADATA_KEY, ModelMetadata

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


def read_bytes(path_or_bytes) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "model bytes"
    p = Path(path_or_bytes)
    try:
        return p.read_bytes(), str(p)
    except OSError as e:
        raise DataError(f"{p}: cannot read the model file ({e.strerror or e})") from None


def read_tflite_metadata(path_or_bytes) -> ModelMetadata:
    """The `ModelMetadata` stored under "edgesqueeze" in a .tflite file (stdlib flatbuffer
    reader: no interpreter, no schema module, no TensorFlow)."""
    entry, source = metadata_entry(path_or_bytes, METADATA_KEY, "; it was not written by edgesqueeze")
    return ModelMetadata.from_json(entry.decode("utf-8"), source=source)


def metadata_entry(path_or_bytes, key: str, why: str = "") -> tuple[bytes, str]:
    """(the bytes of the Model.metadata entry `key`, the file's name for messages); DataError
    for an unreadable model or a missing entry."""
    buf, source = read_bytes(path_or_bytes)
    try:
        entries = read_metadata_entries(buf)
    except FlatbufferError as e:
        raise DataError(f"{source}: not a readable TFLite model ({e})") from None
    if key not in entries:
        raise DataError(f"{source}: no '{key}' metadata{why} (re-export it with `edgesqueeze quantize`)")
    return entries[key], source


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise missing_extra("ai_edge_litert (the TFLite schema)", "tflite") from e
    return schema


def tflite_ops(path_or_bytes) -> list[tuple[str, int]]:
    """(builtin op name, version) of every operator code in the file, in file order."""
    s = _schema()
    buf, _ = read_bytes(path_or_bytes)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.Model.GetRootAs(buf, 0)
    out = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        out.append((names.get(code, str(code)), oc.Version()))
    return out


__all__ = ["check_tflite_bytes", "metadata_entry", "read_tflite_metadata", "tflite_ops"]
