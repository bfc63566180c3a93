"""Empirical (sequential) bias correction: make each quantized conv's mean output match FP32's.

    qm2, shifts = empirical_bias_correction(qm, pixels, fp32_means)

Why. Analytic bias correction (quantize.py) removes the mean shift that *weight* rounding
causes, from the FP32 input means. It cannot see what *activation* quantization does: the
rounding noise that enters a conv is zero-mean, but after the conv's ReLU it is not (a ReLU
passes noise that lifts a value above 0 and cuts noise that pushes it below), so every layer
hands the next a slightly biased input, and the biases compound through 26 convs. Measured on
the released v1.0, the mean pre-activation error reaches 30-90 accumulator steps per channel
by fire5-fire9 even with analytic correction on.

How (Nagel et al. 2019, sec. 4.2, "empirical bias correction"; AIMET does the same). Run the
integer model on the calibration pixels one layer at a time, in graph order; at each conv,
compare the mean of its int32 accumulator per output channel (dequantized: acc * s_in * s_w)
with the mean of the FP32 conv's output (before its ReLU) on the same images, and subtract the
difference, rounded to accumulator steps, from the int32 bias. The corrected output is what the
next layer's statistics are taken on, so each correction sees the corrections before it.
Correcting every layer at once from one pass instead (measured: agreement with FP32 fell from
94.6 % to 88.7 % after one such pass, 13.8 % after three) double-counts: a layer's shift is
mostly inherited from the layers before it, which are being corrected too.

The integer arithmetic is the integer reference's own (reference._run), so what is corrected is
exactly what the exported files compute. numpy only; the FP32 means come from
`pipeline.preactivation_means` (torch).

Streaming. The correction of a conv needs the mean of its int32 accumulator over all images,
and that mean needs no accumulator at all: sum_{n,p} acc[n, p, o] = count * bias[o] +
sum_k w[o, k] * S[k], where S[k] is the sum over images and output positions of the input tap
k = (kh, kw, c) of the patch, zero point subtracted (padded taps add 0). S comes from one pass
over the int8 input (its per-position sum over images, then a strided window sum per tap), in
int64, so the mean is the same integer the accumulators would sum to. The conv then runs once,
chunk by chunk, with its corrected bias; only int8 outputs are kept, as in run_int8 (about
300 MB for 194 images of v1.0 at 227 x 227 instead of every int32 accumulator of a layer at
once: 0.9 GB for conv1).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ..errors import DataError, OptionError
from ..graph import Node
from .params import QConv, QuantizedModel
from .reference import ConvKernel, Requant, _run


def tap_sums(x: np.ndarray, zero_point: int, kernel: tuple[int, int], stride: int, pad: int,
             out_hw: tuple[int, int]) -> np.ndarray:
    """int64 (kh, kw, C): for each tap of the conv's patch, the sum over all images and output
    positions of x - zero_point at that tap (padding contributes 0). `x`: integer NHWC."""
    n, h, w, c = x.shape
    plane = np.zeros((h, w, c), np.int64)
    for i in range(0, n, 64):  # int64 copies of 64 images at most
        plane += x[i:i + 64].sum(axis=0, dtype=np.int64)
    plane -= n * int(zero_point)
    kh, kw = kernel
    oh, ow = out_hw
    out = np.zeros((kh, kw, c), np.int64)
    for a in range(kh):
        rows = _taps(a, pad, stride, oh, h)
        for b in range(kw):
            cols = _taps(b, pad, stride, ow, w)
            out[a, b] = plane[rows][:, cols].sum(axis=(0, 1))
    return out


def _taps(offset: int, pad: int, stride: int, out: int, size: int) -> slice:
    """The input rows (or columns) that tap `offset` reads over the `out` output positions:
    offset - pad + stride * p for p in [0, out), those inside [0, size)."""
    first = offset - pad
    lo = first if first >= 0 else first + stride * (-(first // stride))  # first index >= 0
    hi = min(size, first + stride * (out - 1) + 1)
    return slice(lo, max(lo, hi), stride)


def empirical_bias_correction(
    qm: QuantizedModel,
    pixels: np.ndarray,
    fp32_means: dict[str, np.ndarray],
    *,
    chunk: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    conv_kernel: ConvKernel | None = None,
) -> tuple[QuantizedModel, dict[str, float]]:
    """(corrected model, {conv name: mean |shift| in accumulator steps}).

    `pixels`: uint8 (N, S, S, 3) calibration pixels (never evaluation images); `fp32_means`:
    {conv name: per-channel mean of the FP32 conv output before its ReLU} on the same images,
    of the same (after equalization: the equalized) FP32 model that `qm` was quantized from.
    `chunk`: images per conv computation (default: by size, reference._run); the result does
    not depend on it. `progress(done, total)`: multiply-accumulates of the integer convs done,
    after every chunk. `conv_kernel`: computes each conv chunk in place of reference.int8_conv,
    with the same results (edgesqueeze/exact_conv.py, torch). Memory: the int8 activations of
    all images of about two layers at once (module doc)."""
    if not isinstance(qm, QuantizedModel):
        raise OptionError(f"empirical_bias_correction takes a QuantizedModel, got {type(qm).__name__}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or len(pixels) == 0:
        raise DataError(f"empirical bias correction needs a batch of calibration pixels (N, S, S, 3), "
                        f"got shape {pixels.shape}")
    missing = [n for n in qm.convs if n not in fp32_means]
    if missing:
        raise OptionError(f"FP32 pre-activation means missing for: {', '.join(missing)}")
    convs = dict(qm.convs)
    shifts: dict[str, float] = {}

    def correct(node: Node, conv: QConv, x: np.ndarray) -> QConv:
        fp = np.asarray(fp32_means[node.name], np.float64)
        if fp.shape != (conv.bias.shape[0],) or not np.isfinite(fp).all():
            raise OptionError(f"FP32 means of {node.name}: need {conv.bias.shape[0]} finite values, "
                              f"got shape {fp.shape}")
        o, kh, kw, _ = conv.weight.shape
        s, p = node.conv.stride, node.conv.pad
        oh, ow = (x.shape[1] + 2 * p - kh) // s + 1, (x.shape[2] + 2 * p - kw) // s + 1
        taps = tap_sums(x, qm.tensors[conv.input].zero_point, (kh, kw), s, p, (oh, ow))
        count = x.shape[0] * oh * ow
        total = conv.weight.reshape(o, -1).astype(np.int64) @ taps.reshape(-1) + count * conv.bias.astype(np.int64)
        # the bias is in accumulator units: scale s_in * s_w[c] (float32, as the runtimes derive it)
        acc_scale = np.float32(qm.tensors[conv.input].scale) * conv.weight_scale.astype(np.float32)
        delta = np.rint(total / count - fp / acc_scale.astype(np.float64)).astype(np.int64)
        bias = conv.bias.astype(np.int64) - delta
        if np.abs(bias).max() >= 2**31:
            raise OptionError(f"{node.name}: the corrected bias does not fit int32; "
                              "calibrate on more images or turn empirical bias correction off")
        convs[node.name] = replace(conv, bias=bias.astype(np.int32))
        shifts[node.name] = float(np.abs(delta).mean())
        return convs[node.name]

    # _run calls `correct` at each conv, in graph order, with the conv's input over all images
    # as computed by the convs before it, already corrected
    _run(qm, pixels, Requant.FLOAT32, before_conv=correct, chunk=chunk, progress=progress, conv_kernel=conv_kernel)
    return replace(qm, convs=convs), shifts
