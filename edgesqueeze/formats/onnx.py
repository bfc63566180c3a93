"""Reading a serialized ONNX model without the `onnx` package: a minimal protobuf walk
(`proto_fields`), the model's metadata_props, and the check of its quantization scales that
onnxruntime does not make."""

from __future__ import annotations

import numpy as np

ONNX_TARGET_KEY = "edgesqueeze.target"  # export.onnx.TARGET_KEY: "x86" | "arm"


def varint(buf: bytes, pos: int) -> tuple[int, int]:
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


def proto_fields(buf: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of one protobuf message's top-level fields; a
    length-delimited value is a (start, end) pair. ValueError on anything malformed."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = varint(buf, pos)
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
    for field_no, wire, value in proto_fields(data):
        if field_no == _ONNX_MODEL_GRAPH and wire == 2:
            has_graph = True
        elif field_no == _ONNX_MODEL_METADATA_PROPS and wire == 2:
            key = val = ""
            for f, w, v in proto_fields(data, *value):
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
    graph = next((v for f, w, v in proto_fields(data) if f == _ONNX_MODEL_GRAPH and w == 2), None)
    if graph is None:
        raise ValueError("no graph in it: not a serialized ONNX ModelProto")
    scales: set[bytes] = set()
    initializers = []
    for f, w, v in proto_fields(data, *graph):
        if f == _ONNX_GRAPH_NODE and w == 2:
            inputs, op = [], b""
            for nf, nw, nv in proto_fields(data, *v):
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
        for tf, tw, tv in proto_fields(data, *v):
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


__all__ = ["ONNX_TARGET_KEY", "check_onnx_scales", "onnx_metadata_props", "proto_fields", "varint"]
