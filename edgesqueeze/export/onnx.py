"""ONNX writer (needs the `onnx` package; onnxruntime only to verify).

`to_onnx_fp32` writes the float model from the lowered graph and numpy weights — not through
torch.onnx — so the FP32 file and the INT8 file are built by the same walk over the same graph.
Both take the runtime's one input contract (metadata.py): uint8 NHWC pixels, normalised inside
the file: Cast -> Sub(mean) -> Div(std) -> Transpose(NCHW).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..arch import Arch
from ..errors import missing_extra
from ..graph import INPUT, OUTPUT, Node, OpKind, lower
from ..metadata import METADATA_KEY, ModelMetadata
from .files import ExportError, atomic_output
from .ops import OPS, check_supported

OPSET = 17
PIXELS = "pixels"  # the uint8 input's name; "input" is the normalised float tensor inside
SUPPORTED = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.CONCAT, OpKind.ADD, OpKind.MEAN})


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise missing_extra("onnx", "quantize") from e
    return onnx


def _node_fp32(helper, n: Node, inits: list, params) -> list:
    op = OPS[n.kind].onnx
    if n.kind is OpKind.CONV:
        from onnx import numpy_helper

        w, b = params[n.name]
        c = n.conv
        inits += [numpy_helper.from_array(w.astype(np.float32), f"{n.name}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"{n.name}.bias")]
        out = f"{n.name}.preact" if c.relu else n.name
        nodes = [helper.make_node(op, [n.inputs[0], f"{n.name}.weight", f"{n.name}.bias"], [out],
                                  name=n.name, kernel_shape=[c.kernel, c.kernel],
                                  strides=[c.stride, c.stride], pads=[c.pad] * 4)]
        if c.relu:
            nodes.append(helper.make_node("Relu", [out], [n.name], name=f"{n.name}.relu"))
        return nodes
    if n.kind is OpKind.MAXPOOL:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name,
                                 kernel_shape=[n.kernel, n.kernel], strides=[n.stride, n.stride],
                                 ceil_mode=int(n.ceil_mode))]
    if n.kind is OpKind.CONCAT:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name, axis=1)]
    if n.kind is OpKind.ADD:
        return [helper.make_node(op, list(n.inputs), [n.name], name=n.name)]
    if n.kind is OpKind.MEAN:
        return [helper.make_node(op, list(n.inputs), [f"{n.name}.pooled"], name=f"{n.name}.pool"),
                helper.make_node("Flatten", [f"{n.name}.pooled"], [n.name], name=f"{n.name}.flatten", axis=1)]
    raise ExportError(f"no ONNX lowering for {n.kind}")  # pragma: no cover - check_supported ran


def _input_nodes(helper, numpy_helper, arch: Arch, inits: list) -> list:
    pre = arch.preprocess
    inits += [numpy_helper.from_array(np.asarray(pre.mean, np.float32).reshape(1, 1, 1, 3), "pixel_mean"),
              numpy_helper.from_array(np.asarray(pre.std, np.float32).reshape(1, 1, 1, 3), "pixel_std")]
    return [
        helper.make_node("Cast", [PIXELS], ["pixels.f32"], name="cast", to=1),
        helper.make_node("Sub", ["pixels.f32", "pixel_mean"], ["pixels.centred"], name="sub_mean"),
        helper.make_node("Div", ["pixels.centred", "pixel_std"], ["pixels.nhwc"], name="div_std"),
        helper.make_node("Transpose", ["pixels.nhwc"], [INPUT], name="to_nchw", perm=[0, 3, 1, 2]),
    ]


def build_fp32_model(arch: Arch, params, metadata: ModelMetadata):
    """The FP32 ONNX ModelProto (not written)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    nodes = lower(arch)
    check_supported(nodes, "ONNX", SUPPORTED)
    inits: list = []
    graph_nodes = _input_nodes(helper, numpy_helper, arch, inits)
    for n in nodes:
        graph_nodes += _node_fp32(helper, n, inits, params)
    s = arch.input_size
    graph = helper.make_graph(
        graph_nodes,
        arch.name,
        [helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8, ["N", s, s, 3])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", arch.num_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgesqueeze", producer_version=metadata.version)
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    helper.set_model_props(model, {METADATA_KEY: metadata.to_json()})
    return model


def to_onnx_fp32(arch: Arch, params, path: str | os.PathLike, *, metadata: ModelMetadata) -> Path:
    """Write the FP32 ONNX file atomically after onnx.checker's full check."""
    onnx = _onnx()
    model = build_fp32_model(arch, params, metadata)
    with atomic_output(path) as tmp:
        onnx.save(model, tmp)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"{path}: the written FP32 model fails onnx.checker: {e}") from None
    return Path(path)


def read_metadata(model) -> ModelMetadata | None:
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return ModelMetadata.from_json(p.value)
    return None
