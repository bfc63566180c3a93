"""The integer reference: what an INT8 runtime computes for a QuantizedModel (numpy only).

This is the golden model both exporters are checked against (<= 1 LSB). It takes the same input
as the exported files — uint8 NHWC pixels in the model's channel order — and runs:

    input   q = pixel - 128 (scale 1, zero point -128)
    conv    int32 acc = sum((x - x_zp) * w) + bias, exact (kernels.conv2d_accumulate);
            requantized per output channel by M = s_in * s_w[c] / s_out, + s_out's zero point,
            clamped to [zp, 127] after a fused ReLU (the clamp is the ReLU), else [-128, 127]
    maxpool on the int8 values, ceil mode as the arch says
    concat  a copy: inputs and output share parameters (quantize.py)
    add     real sum of the two dequantized inputs, requantized (float32)
    mean    the head: conv10's int8 output dequantized and averaged in float —
            logits = s * sum_hw(q - zp) / (H*W). Averaging in float keeps the resolution of the
            sum (s / 225 for v1.0), so top-1 is decided by the model, not by an int8 rounding of
            the logits.

Requantization (`Requant`): the runtimes do not agree bit for bit. LiteRT's default XNNPACK
kernels and onnxruntime's QLinearConv compute rint(float32(acc) * float32(M)) (half to even);
TFLite's reference kernels use a fixed-point multiplier and shift with gemmlowp's rounding
(kernels.requantize). Any two differ by at most 1 LSB per layer; FLOAT32 is the default because
that is what both deployed runtimes run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import numpy as np

from ..errors import DataError
from ..graph import INPUT, Node, OpKind
from . import kernels
from .params import QConv, QuantizedModel, parse_enum


class Requant(str, Enum):
    FLOAT32 = "float32"  # LiteRT (XNNPACK), onnxruntime
    FIXED_POINT = "fixed-point"  # TFLite reference kernels


@dataclass(frozen=True)
class IntRun:
    logits: np.ndarray  # float32 (N, classes)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # int8 NHWC, when kept


def pixels_to_int8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> int8 q = pixel - 128 (the input's parameters: scale 1, zero point -128)."""
    if pixels.dtype != np.uint8:
        raise DataError(f"the integer model takes uint8 pixels, got {pixels.dtype}; use data.to_uint8_input")
    return (pixels.astype(np.int16) - 128).astype(np.int8)


def _requantize(acc: np.ndarray, conv, tensors, zp: int, qmin: int, how: Requant) -> np.ndarray:
    if how is Requant.FLOAT32:
        return kernels.requantize_fp32(acc, conv.real_multiplier(tensors), zp, qmin, 127, np.int8)
    mult, shift = kernels.quantize_multiplier(conv.real_multiplier(tensors, dtype=np.float64))
    return kernels.requantize(acc, mult, shift, zp, qmin, 127, np.int8)


# conv_hook(node, conv, accs) -> per-channel int64 delta to subtract from the accumulator (and
# from the bias), or None; `accs` are the int32 accumulators of the batch, in chunks.
ConvHook = Callable[[Node, QConv, list], "np.ndarray | None"]


def run_int8(qm: QuantizedModel, pixels: np.ndarray, *, requant: Requant | str = Requant.FLOAT32,
             keep: bool = False) -> IntRun:
    """Run the quantized model on uint8 pixels (N, H, W, 3) or (H, W, 3)."""
    return _run(qm, pixels, parse_enum(Requant, requant, "requant"), keep=keep)


def _run(qm: QuantizedModel, pixels: np.ndarray, how: Requant, *, keep: bool = False,
         conv_hook: ConvHook | None = None, chunk: int | None = None) -> IntRun:
    """run_int8, plus what empirical bias correction (quant/empirical.py) needs: the conv
    accumulators computed `chunk` images at a time (so a large batch's int32 maps never exist
    at once) and shown to `conv_hook`, which may shift them per channel before requantization."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    s = qm.arch.input_size
    if pixels.shape[1:] != (s, s, 3):
        raise DataError(f"input shape {pixels.shape[1:]} is not ({s}, {s}, 3); resize/crop with data.to_uint8_input")
    t = qm.tensors
    env: dict[str, np.ndarray] = {INPUT: pixels_to_int8(pixels)}
    logits = None
    nodes = qm.nodes
    step = chunk or len(pixels)
    # the last node that reads each tensor: past it the tensor is dropped (peak memory stays
    # at a few feature maps) unless `keep` asks for all of them
    last_use = {i: k for k, n in enumerate(nodes) for i in n.inputs}
    for k, n in enumerate(nodes):
        if n.kind is OpKind.CONV:
            c = qm.convs[n.name]
            x = env[n.inputs[0]]
            p = n.conv.pad
            accs = [kernels.conv2d_accumulate(x[i:i + step], t[c.input].zero_point, c.weight, c.bias,
                                              stride=n.conv.stride, padding=(p, p, p, p))
                    for i in range(0, len(x), step)]
            delta = conv_hook(n, c, accs) if conv_hook is not None else None
            if delta is not None:
                accs = [(a - delta).astype(np.int32) for a in accs]
            zp = t[n.name].zero_point
            qmin = max(zp, -128) if n.relu else -128
            outs = [_requantize(a, c, t, zp, qmin, how) for a in accs]
            env[n.name] = outs[0] if len(outs) == 1 else np.concatenate(outs)
        elif n.kind is OpKind.MAXPOOL:
            env[n.name] = kernels.max_pool(env[n.inputs[0]], kernel=n.kernel, stride=n.stride, ceil_mode=n.ceil_mode)
        elif n.kind is OpKind.CONCAT:
            env[n.name] = np.concatenate([env[i] for i in n.inputs], axis=-1)
        elif n.kind is OpKind.ADD:
            a, b = (kernels.dequantize(env[i], t[i].scale, t[i].zero_point) for i in n.inputs)
            out = t[n.name]
            env[n.name] = kernels.quantize(a + b, out.scale, out.zero_point, np.int8)
        elif n.kind is OpKind.MEAN:
            src = n.inputs[0]
            q = env[src].astype(np.int64) - t[src].zero_point
            hw = q.shape[1] * q.shape[2]
            logits = (q.sum(axis=(1, 2)) * (t[src].scale / hw)).astype(np.float32)
        if not keep:
            for i in n.inputs:
                if last_use[i] == k:
                    env.pop(i, None)
    return IntRun(logits, env if keep else {})


def dequantize_tensor(qm: QuantizedModel, name: str, q: np.ndarray) -> np.ndarray:
    p = qm.tensors[name]
    return kernels.dequantize(q, p.scale, p.zero_point)
