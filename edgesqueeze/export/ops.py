"""The one table from graph op (edgesqueeze.graph.OpKind) to export op, shared by both writers.

A fix to how a layer is exported is made here once; `check_supported` names every op a writer
cannot express, all at once, before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import OUTPUT, Node, OpKind
from .files import ExportError

# The outputs both writers give. Both end in a float softmax after the float head, so the file's
# scores are probabilities and classes whose integer sums are equal get equal scores.
#   .onnx:   "probability" and "logits" (the softmax's input), both float32 [N, classes]: the
#            logits serve logit SQNR / agreement tracking (the job evaluates through this file)
#   .tflite: "probability" only: the one output its standard metadata describes and MediaPipe /
#            the Task Library show (the runtime reads log-probabilities from it where it needs
#            logits; runtime.py)
PROBABILITY = "probability"
LOGITS = OUTPUT  # "logits"


def max_score_diff(scale: float, head_hw: int) -> float:
    """The largest |probability - softmax(reference logits)| a written INT8 file may show, for a
    head of conv10 scale `scale` averaged over `head_hw` = H*W cells: a logit one head unit
    (scale / (H*W)) off moves a probability p by at most p(1 - p) <= 1/4 times that; the bound
    allows two such units, plus float32 rounding (1e-6). 0.0052 for v1.0."""
    return 2 * 0.25 * float(scale) / head_hw + 1e-6


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


# A conv the quantized model keeps in float (QuantizedModel.float_convs): its int8 input
# dequantized, the conv in float32 (float32 weights and bias, ReLU where the graph has one), then
# quantized to the output tensor's own parameters, so every tensor between ops stays 8-bit.
#   .onnx:   dequantize(x) -> Conv (float32 initializers) -> [Relu] -> QuantizeLinear(out), the
#            dequantize written as Cast -> Sub zp -> Mul scale (onnx_graph.py says why not a DQ node)
#   .tflite: DEQUANTIZE(x) -> CONV_2D float32 [fused RELU] -> QUANTIZE(out)
# The runtimes sum in their own order, so such a file is verified against the integer reference
# within 1 LSB on >= FLOAT_CONV_MIN_LSB_MATCH of the head values and top-1 on >=
# FLOAT_CONV_MIN_TOP1 of the images; all-integer files keep their writer's exact gates.
FLOAT_CONV = OpMapping(OpKind.CONV, "Conv", "CONV_2D", 1,
                       "float32 conv between DEQUANTIZE and QUANTIZE (a float-kept conv)")
FLOAT_CONV_MIN_LSB_MATCH = 0.99
FLOAT_CONV_MIN_TOP1 = 0.99


def float_conv_score_diff(scale: float) -> float:
    """The largest |probability - softmax(reference logits)| a file with float convs may show:
    a logit up to two head scales off (each head value within 1 LSB, a few 2 LSB) moves a
    probability by at most 1/4 of that."""
    return 2 * 0.25 * float(scale) + 1e-6


def check_supported(nodes: tuple[Node, ...], writer: str, supported: frozenset[OpKind]) -> None:
    """Raise one ExportError naming every node the writer cannot express."""
    bad = [f"{n.name} ({n.kind.value})" for n in nodes if n.kind not in supported or n.kind not in OPS]
    if bad:
        raise ExportError(
            f"the {writer} writer does not support these layers: {', '.join(bad)}; "
            f"supported ops: {', '.join(sorted(k.value for k in supported))}"
        )
