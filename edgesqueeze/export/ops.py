"""The one table from graph op (edgesqueeze.graph.OpKind) to export op, shared by both writers.

A fix to how a layer is exported is made here once; `check_supported` names every op a writer
cannot express, all at once, before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import Node, OpKind
from .files import ExportError


@dataclass(frozen=True)
class OpMapping:
    kind: OpKind
    onnx: str  # ONNX op_type (FP32); the QDQ writer wraps the same op in Q/DQ pairs
    tflite: str  # TFLite BuiltinOperator name
    tflite_version_int8: int  # operator version for int8 tensors (per-channel CONV_2D needs 3)
    note: str


OPS: dict[OpKind, OpMapping] = {
    OpKind.CONV: OpMapping(OpKind.CONV, "Conv", "CONV_2D", 3,
                           "bias and ReLU fused; padding explicit (ONNX pads, TFLite PAD where not SAME)"),
    OpKind.MAXPOOL: OpMapping(OpKind.MAXPOOL, "MaxPool", "MAX_POOL_2D", 2,
                              "ceil mode: ONNX ceil_mode=1; TFLite VALID (odd size) or SAME (even size), else PADV2 with the minimum"),
    OpKind.CONCAT: OpMapping(OpKind.CONCAT, "Concat", "CONCATENATION", 2,
                             "inputs and output share one scale/zero point"),
    OpKind.ADD: OpMapping(OpKind.ADD, "Add", "ADD", 2, "the paper's bypass"),
    OpKind.MEAN: OpMapping(OpKind.MEAN, "GlobalAveragePool", "MEAN", 1,
                           "the head, in float: ONNX Cast -> GlobalAveragePool -> Flatten -> Sub zp -> Mul scale; "
                           "TFLite CAST -> MEAN -> SUB zp -> MUL scale (sums of integers: exact, ties stay ties)"),
}


def check_supported(nodes: tuple[Node, ...], writer: str, supported: frozenset[OpKind]) -> None:
    """Raise one ExportError naming every node the writer cannot express."""
    bad = [f"{n.name} ({n.kind.value})" for n in nodes if n.kind not in supported or n.kind not in OPS]
    if bad:
        raise ExportError(
            f"the {writer} writer does not support these layers: {', '.join(bad)}; "
            f"supported ops: {', '.join(sorted(k.value for k in supported))}"
        )
