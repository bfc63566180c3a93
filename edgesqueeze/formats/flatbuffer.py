"""A few TFLite-schema facts and a tiny read-only flatbuffer walker (Python stdlib only).

The writer (`export/tflite_flatbuffer.py`) builds files with the schema's own generated builders
(`ai_edge_litert.schema_py_generated`); this module exists so that a board which has a TFLite
runtime but not that schema module (e.g. `tflite-runtime`) can still read a model's
`edgesqueeze` metadata without an interpreter.

Facts used, from tensorflow/lite/schema/schema.fbs (TFLite schema version 3):

    table Model    { version:uint (0); operator_codes (1); subgraphs (2); description:string (3);
                     buffers:[Buffer] (4); metadata_buffer:[int] (5); metadata:[Metadata] (6);
                     signature_defs (7); ... }
    table Metadata { name:string (0); buffer:uint (1); }
    table Buffer   { data:[ubyte] (0, force_align 16); offset:ulong (1); size:ulong (2); }
    file_identifier "TFL3" (bytes 4..8 of the file)

Flatbuffer layout: the file starts with a uint32 offset to the root table; a table starts with
an int32 soffset back to its vtable; the vtable holds uint16 (vtable size, table size, then one
field offset per field, 0 = absent); a vector or string field holds a uint32 offset to
(uint32 length, elements...). Little-endian throughout.
"""

from __future__ import annotations

import struct

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

_MODEL_VERSION, _MODEL_BUFFERS, _MODEL_METADATA = 0, 4, 6


class FlatbufferError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer (as far as this reader looks)."""


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = memoryview(buf)
        self.n = len(buf)

    def _unpack(self, fmt: str, off: int):
        size = struct.calcsize(fmt)
        if off < 0 or off + size > self.n:
            raise FlatbufferError(f"offset {off} out of range (file is {self.n} bytes)")
        return struct.unpack_from(fmt, self.buf, off)[0]

    def u16(self, off: int) -> int:
        return self._unpack("<H", off)

    def u32(self, off: int) -> int:
        return self._unpack("<I", off)

    def i32(self, off: int) -> int:
        return self._unpack("<i", off)

    def u64(self, off: int) -> int:
        return self._unpack("<Q", off)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of a table's field, or None when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        rel = self.u16(vtable + slot)
        return table + rel if rel else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field."""
        pos = self.field(table, index)
        if pos is None:
            return None
        v = self.indirect(pos)
        length = self.u32(v)
        return v + 4, length

    def bytes_of(self, table: int, index: int) -> bytes | None:
        vec = self.vector(table, index)
        if vec is None:
            return None
        start, length = vec
        if start + length > self.n:
            raise FlatbufferError("a vector runs past the end of the file")
        return bytes(self.buf[start:start + length])

    def table_at(self, vec_start: int, i: int) -> int:
        return self.indirect(vec_start + 4 * i)


def read_metadata_entries(buf: bytes) -> dict[str, bytes]:
    """{name: buffer bytes} of a TFLite model's `metadata` list (no schema module needed)."""
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise FlatbufferError("not a TFLite flatbuffer (no 'TFL3' file identifier at bytes 4..8)")
    r = _Reader(buf)
    model = r.indirect(0)
    meta = r.vector(model, _MODEL_METADATA)
    if meta is None:
        return {}
    buffers = r.vector(model, _MODEL_BUFFERS)
    n_buffers = buffers[1] if buffers else 0
    out: dict[str, bytes] = {}
    for i in range(meta[1]):
        entry = r.table_at(meta[0], i)
        name_b = r.bytes_of(entry, 0)
        pos = r.field(entry, 1)
        index = r.u32(pos) if pos is not None else 0
        if name_b is None or index >= n_buffers:
            raise FlatbufferError(f"metadata entry {i} has no name or a buffer index out of range")
        buffer = r.table_at(buffers[0], index)
        data = r.bytes_of(buffer, 0)
        if data is None:  # a buffer stored outside the flatbuffer (models over 2 GB)
            off_pos, size_pos = r.field(buffer, 1), r.field(buffer, 2)
            off = r.u64(off_pos) if off_pos is not None else 0
            size = r.u64(size_pos) if size_pos is not None else 0
            if off > 1 and off + size <= r.n:
                data = bytes(r.buf[off:off + size])
            else:
                data = b""
        out[name_b.decode("utf-8", "replace")] = data
    return out
