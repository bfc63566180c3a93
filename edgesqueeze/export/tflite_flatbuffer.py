"""The TFLite flatbuffer container: tensors, constant buffers and operators of one subgraph,
packed into a Model with the schema's generated builders.

Operator versions are the ones tensorflow/lite/tools/versioning/op_version.cc assigns to the
types written here: int8 CONV_2D 3, MAX_POOL_2D 2, CONCATENATION 2, ADD 2 (from the shared op
table, `ops.OPS`), int8 PAD/PADV2 2, DEQUANTIZE from int8 2, QUANTIZE to int8 (per tensor) 1;
every float32 op, and DEQUANTIZE from uint8, version 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..formats.flatbuffer import FILE_IDENTIFIER, SCHEMA_VERSION
from .files import ExportError
from .ops import OPS

SIGNATURE_KEY = "serving_default"

# op_version.cc for the int8 ops not in ops.OPS (see module doc); float32 ops are all version 1
_INT8_VERSIONS = {"PAD": 2, "PADV2": 2, "QUANTIZE": 1, "DEQUANTIZE": 2, "CAST": 3}

_NP_TO_TFL = {
    np.dtype(np.float32): "FLOAT32", np.dtype(np.int32): "INT32", np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64", np.dtype(np.int8): "INT8",
}


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

