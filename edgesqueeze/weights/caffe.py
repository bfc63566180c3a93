"""Read the weights out of a Caffe ``.caffemodel`` file.

A ``.caffemodel`` is a serialized ``caffe.NetParameter`` protobuf message. It is decoded here by
hand, straight from the protobuf wire format, with numpy and the standard library only: the
boards this package runs on do not have the protobuf package (nor Caffe's generated
``caffe_pb2``), and the few fields that hold weights are simple enough that a full protobuf
runtime buys nothing. Only the fields named below are interpreted; every other field is
skipped by its wire type, so models written by any Caffe fork read the same.

Fields used (numbers from ``caffe.proto``)::

    NetParameter      layer = 100 (LayerParameter), layers = 2 (legacy V1LayerParameter)
    LayerParameter    name = 1, blobs = 7
    V1LayerParameter  name = 4, blobs = 6
    BlobProto         shape = 7 (BlobShape: dim = 1), data = 5, double_data = 8,
                      legacy num = 1, channels = 2, height = 3, width = 4

Very old models whose V1 layers keep their name and blobs in a nested V0 ``layer`` (field 1)
are not supported: such layers have no name at the V1 level and are reported as an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgesqueeze.errors import WeightsError

__all__ = ["read_caffemodel"]

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES = {
    _VARINT: "varint",
    _FIXED64: "fixed64",
    _LEN: "length-delimited",
    _START_GROUP: "start-group",
    _END_GROUP: "end-group",
    _FIXED32: "fixed32",
}
_MAX_FIELD = (1 << 29) - 1

# BlobProto's weight arrays: field number -> (name, wire type when unpacked, dtype on the wire).
_ARRAY_FIELDS = {5: ("data", _FIXED32, "<f4"), 8: ("double_data", _FIXED64, "<f8")}

_HINT_CORRUPT = "the file is truncated or is not a .caffemodel; download or copy it again"
_HINT_FORMAT = (
    "pass the binary .caffemodel with the trained weights (not the .prototxt, an image or "
    "another file), or download it again"
)
_HINT_CONTENT = (
    "the file is corrupt or was written by an incompatible tool; download it again or "
    "re-save it from Caffe"
)


class _Bad(Exception):
    """A decoding failure; turned into a WeightsError naming the file at the public entry."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def _truncated(what: str, pos: int, end: int, size: int) -> _Bad:
    where = "the file" if end == size else "its enclosing message"
    return _Bad(
        f"it ends in the middle of a field (a {what} at byte {pos} runs past the end of "
        f"{where}; the file has {size} bytes)",
        _HINT_CORRUPT,
    )


def _malformed(what: str, pos: int) -> _Bad:
    return _Bad(f"it is not a Caffe NetParameter ({what} at byte {pos})", _HINT_FORMAT)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _truncated("varint", start, end, len(buf))
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _malformed("a varint longer than 10 bytes", start)


def _signed64(value: int) -> int:
    # int32 and int64 fields put negative numbers on the wire as 64-bit two's complement.
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _tag(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read a field key at ``pos``; return (field number, wire type, position after it)."""
    key, after = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0 or field > _MAX_FIELD:
        raise _malformed(f"invalid field number {field}", pos)
    if wire not in _WIRE_NAMES:
        raise _malformed(f"invalid wire type {wire}", pos)
    return field, wire, after


def _skip_group(buf: bytes, pos: int, end: int, field: int) -> int:
    """Skip a (deprecated) group whose start tag for ``field`` ended just before ``pos``."""
    # Iterative, so that hostile input with deeply nested groups cannot hit the recursion limit.
    open_groups = [field]
    while open_groups:
        if pos >= end:
            raise _truncated("group", pos, end, len(buf))
        tag_pos = pos
        inner, wire, pos = _tag(buf, pos, end)
        if wire == _START_GROUP:
            open_groups.append(inner)
        elif wire == _END_GROUP:
            if open_groups.pop() != inner:
                raise _malformed(
                    f"an end-group tag for field {inner} that closes no group", tag_pos
                )
        else:
            pos = _skip_value(buf, pos, end, wire, tag_pos)
    return pos


def _skip_value(buf: bytes, pos: int, end: int, wire: int, tag_pos: int) -> int:
    """Return the position after the value of wire type ``wire`` that starts at ``pos``."""
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _FIXED64:
        if pos + 8 > end:
            raise _truncated("fixed64 value", pos, end, len(buf))
        return pos + 8
    if wire == _FIXED32:
        if pos + 4 > end:
            raise _truncated("fixed32 value", pos, end, len(buf))
        return pos + 4
    if wire == _LEN:
        return _span(buf, pos, end)[1]
    # _tag has already refused unknown wire types; only the group markers are left.
    raise _malformed("an end-group tag that closes no group", tag_pos)


def _span(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix at ``pos``; return (start, end) of the bytes it covers."""
    length, start = _varint(buf, pos, end)
    if length > end - start:
        raise _truncated("length-delimited field", pos, end, len(buf))
    return start, start + length


def _fields(buf: bytes, pos: int, end: int):
    """Yield (field, wire type, value, tag position) for each field in ``buf[pos:end]``.

    The value is an int for varints, a (start, end) pair for length-delimited fields and the
    offset of the raw bytes for fixed32/fixed64 fields. Groups are skipped.
    """
    while pos < end:
        tag_pos = pos
        field, wire, pos = _tag(buf, pos, end)
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LEN:
            value = _span(buf, pos, end)
            pos = value[1]
        elif wire == _START_GROUP:
            pos = _skip_group(buf, pos, end, field)
            continue
        else:
            value = pos
            pos = _skip_value(buf, pos, end, wire, tag_pos)
        yield field, wire, value, tag_pos


def _wrong_wire(name: str, wire: int, tag_pos: int) -> _Bad:
    return _malformed(f"field '{name}' with wire type {_WIRE_NAMES[wire]}", tag_pos)


def _fixed_run(
    buf: bytes, tag_pos: int, end: int, tag: int, dtype: str
) -> tuple[np.ndarray, int]:
    """Read consecutive unpacked fixed-width values that each follow the one-byte ``tag``.

    Unpacked repeated floats are laid out as (tag, 4 bytes) records; viewing them as rows of a
    byte matrix reads a whole run at once instead of one Python step per value.
    """
    width = np.dtype(dtype).itemsize + 1
    rows = (end - tag_pos) // width
    records = np.frombuffer(buf, np.uint8, rows * width, tag_pos).reshape(rows, width)
    other = records[:, 0] != tag
    count = int(np.argmax(other)) if other.any() else rows
    values = records[:count, 1:].copy().view(dtype).reshape(count)
    return values, tag_pos + count * width


def _dims(buf: bytes, start: int, end: int, dims: list[int]) -> None:
    """Append the ``dim`` entries of the BlobShape in ``buf[start:end]`` to ``dims``."""
    for field, wire, value, tag_pos in _fields(buf, start, end):
        if field != 1:
            continue
        if wire == _VARINT:
            dims.append(_signed64(value))
        elif wire == _LEN:
            pos, stop = value
            while pos < stop:
                dim, pos = _varint(buf, pos, stop)
                dims.append(_signed64(dim))
        else:
            raise _wrong_wire("BlobShape.dim", wire, tag_pos)


def _blob(buf: bytes, start: int, end: int, where: str) -> np.ndarray:
    """Decode the BlobProto in ``buf[start:end]`` into a float32 array of its shape."""
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    shape: list[int] | None = None
    legacy = {}  # legacy field number -> value; num/channels/height/width default to 0
    pos = start
    while pos < end:
        tag_pos = pos
        field, wire, pos = _tag(buf, pos, end)
        if field in _ARRAY_FIELDS:
            name, fixed, dtype = _ARRAY_FIELDS[field]
            chunks = floats if field == 5 else doubles
            size = np.dtype(dtype).itemsize
            if wire == _LEN:
                data_start, pos = _span(buf, pos, end)
                if (pos - data_start) % size:
                    raise _malformed(
                        f"packed {name} of {pos - data_start} bytes, not a multiple of {size}",
                        tag_pos,
                    )
                chunks.append(np.frombuffer(buf, dtype, (pos - data_start) // size, data_start))
            elif wire == fixed:
                if pos - tag_pos == 1:
                    values, pos = _fixed_run(buf, tag_pos, end, buf[tag_pos], dtype)
                    if values.size == 0:
                        raise _truncated(f"{name} value", tag_pos + 1, end, len(buf))
                else:
                    # A tag written in more bytes than needed; legal but never seen in practice.
                    after = _skip_value(buf, pos, end, wire, tag_pos)
                    values, pos = np.frombuffer(buf, dtype, 1, pos), after
                chunks.append(values)
            else:
                raise _wrong_wire(f"BlobProto.{name}", wire, tag_pos)
        elif field == 7:
            if wire != _LEN:
                raise _wrong_wire("BlobProto.shape", wire, tag_pos)
            shape_start, pos = _span(buf, pos, end)
            # Repeated occurrences of a message field merge, which for BlobShape appends dims.
            shape = shape if shape is not None else []
            _dims(buf, shape_start, pos, shape)
        elif field in (1, 2, 3, 4):
            if wire != _VARINT:
                raise _wrong_wire("BlobProto legacy dimension", wire, tag_pos)
            legacy[field], pos = _varint(buf, pos, end)
            legacy[field] = _signed64(legacy[field])
        elif wire == _START_GROUP:
            pos = _skip_group(buf, pos, end, field)
        else:
            pos = _skip_value(buf, pos, end, wire, tag_pos)

    # Caffe's Blob::FromProto: legacy dimensions win when any is set; double_data wins when set.
    if legacy:
        dims = [legacy.get(number, 0) for number in (1, 2, 3, 4)]
    else:
        dims = shape if shape is not None else []
    if any(dim < 0 for dim in dims):
        raise _Bad(f"{where} has a negative dimension in its shape {tuple(dims)}", _HINT_CONTENT)
    chunks = doubles if doubles else floats
    have = sum(chunk.size for chunk in chunks)
    need = 1
    for dim in dims:
        need *= dim
    if have != need:
        raise _Bad(
            f"{where} has shape {tuple(dims)}, which needs {need} values, but the file "
            f"holds {have}",
            _HINT_CONTENT,
        )
    # astype copies, so no returned array is a view that keeps the whole file's bytes alive.
    # double_data beyond float32's range becomes +-inf, as Caffe's own float nets would get it.
    with np.errstate(over="ignore"):
        if len(chunks) == 1:
            array = chunks[0].astype(np.float32)
        elif chunks:
            array = np.concatenate(chunks).astype(np.float32)
        else:
            array = np.zeros(0, np.float32)
    return array.reshape(dims)


def _layer(
    buf: bytes, start: int, end: int, name_field: int, blobs_field: int, index: int
) -> tuple[str | None, list[np.ndarray]]:
    """Decode a LayerParameter or V1LayerParameter; return its name and its blobs."""
    name = None
    spans: list[tuple[int, int]] = []
    for field, wire, value, tag_pos in _fields(buf, start, end):
        if field == name_field:
            if wire != _LEN:
                raise _wrong_wire("layer name", wire, tag_pos)
            try:
                name = buf[value[0] : value[1]].decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed("a layer name that is not UTF-8 text", tag_pos) from None
        elif field == blobs_field:
            if wire != _LEN:
                raise _wrong_wire("layer blobs", wire, tag_pos)
            spans.append(value)
    # The name can follow the blobs on the wire, so blobs are decoded once it is known.
    label = f"layer '{name}'" if name is not None else f"layer #{index} (unnamed)"
    blobs = [
        _blob(buf, blob_start, blob_end, f"{label} blob {number}")
        for number, (blob_start, blob_end) in enumerate(spans)
    ]
    return name, blobs


def _net(buf: bytes) -> dict[str, list[np.ndarray]]:
    layers: dict[str, list[np.ndarray]] = {}
    index = 0
    for field, wire, value, tag_pos in _fields(buf, 0, len(buf)):
        if field == 100:
            name_field, blobs_field = 1, 7
        elif field == 2:
            name_field, blobs_field = 4, 6
        else:
            continue
        if wire != _LEN:
            which = "NetParameter.layer" if field == 100 else "NetParameter.layers"
            raise _wrong_wire(which, wire, tag_pos)
        name, blobs = _layer(buf, value[0], value[1], name_field, blobs_field, index)
        index += 1
        if name is None:
            if blobs:
                raise _Bad(
                    f"layer #{index - 1} has weights but no name, so they cannot be matched "
                    "to a layer (very old V0-format models store it this way)",
                    "upgrade the model with Caffe's upgrade_net_proto_binary tool",
                )
            continue
        if name in layers:
            raise _Bad(
                f"the layer name '{name}' appears more than once",
                "give each layer a unique name in Caffe and save the model again",
            )
        layers[name] = blobs
    if not any(layers.values()):
        raise _Bad(
            f"it holds no weights ({len(layers)} layers, none with blobs)", _HINT_FORMAT
        )
    return layers


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read the weights of a Caffe ``.caffemodel`` file.

    Returns a dict from layer name to that layer's blobs, in file order, each a new, writable
    float32 array of the blob's shape (``double_data`` is rounded to float32; values are not
    checked, so NaN or inf in the file come back as they are). Every named layer
    is kept, including those without weights (ReLU, pooling, ...), which map to an empty list,
    so a caller can tell a layer without weights from a missing layer.

    Raises WeightsError, naming the file, when the file is missing, empty, truncated, not a
    NetParameter, holds no weights at all, has a layer name twice or has a blob whose data does
    not fill its shape.
    """
    path = Path(os.fspath(path))
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(
            f"caffemodel file not found: {path}; check the path, or download the .caffemodel first"
        ) from None
    except IsADirectoryError:
        raise WeightsError(
            f"caffemodel path is a directory, not a file: {path}; pass the .caffemodel file in it"
        ) from None
    except OSError as error:
        raise WeightsError(
            f"cannot read caffemodel {path}: {error.strerror or error}; check that the file is "
            "readable"
        ) from None
    if not buf:
        raise WeightsError(
            f"caffemodel {path} is empty (0 bytes); an interrupted download or copy leaves "
            "this; download or copy it again"
        )
    try:
        return _net(buf)
    except _Bad as bad:
        raise WeightsError(f"cannot read caffemodel {path}: {bad.problem}; {bad.hint}") from None
