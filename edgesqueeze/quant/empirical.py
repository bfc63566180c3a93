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
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import DataError, OptionError
from ..graph import Node
from .params import QConv, QuantizedModel
from .reference import Requant, _run


def empirical_bias_correction(
    qm: QuantizedModel,
    pixels: np.ndarray,
    fp32_means: dict[str, np.ndarray],
    *,
    chunk: int = 16,
) -> tuple[QuantizedModel, dict[str, float]]:
    """(corrected model, {conv name: mean |shift| in accumulator steps}).

    `pixels`: uint8 (N, S, S, 3) calibration pixels (never evaluation images); `fp32_means`:
    {conv name: per-channel mean of the FP32 conv output before its ReLU} on the same images,
    of the same (after equalization: the equalized) FP32 model that `qm` was quantized from.
    Needs N * (largest int8 feature map) bytes: ~230 MB for 194 images of v1.0."""
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

    def hook(node: Node, conv: QConv, accs: list[np.ndarray]) -> np.ndarray:
        total = sum(a.sum(axis=(0, 1, 2), dtype=np.int64) for a in accs)
        count = sum(a.shape[0] * a.shape[1] * a.shape[2] for a in accs)
        fp = np.asarray(fp32_means[node.name], np.float64)
        if fp.shape != (conv.bias.shape[0],) or not np.isfinite(fp).all():
            raise OptionError(f"FP32 means of {node.name}: need {conv.bias.shape[0]} finite values, "
                              f"got shape {fp.shape}")
        # the bias is in accumulator units: scale s_in * s_w[c] (float32, as the runtimes derive it)
        acc_scale = np.float32(qm.tensors[conv.input].scale) * conv.weight_scale.astype(np.float32)
        delta = np.rint(total / count - fp / acc_scale.astype(np.float64)).astype(np.int64)
        bias = conv.bias.astype(np.int64) - delta
        if np.abs(bias).max() >= 2**31:
            raise OptionError(f"{node.name}: the corrected bias does not fit int32; "
                              "calibrate on more images or turn empirical bias correction off")
        convs[node.name] = replace(conv, bias=bias.astype(np.int32))
        shifts[node.name] = float(np.abs(delta).mean())
        return delta

    # _run reads qm.convs for each node as it reaches it; the hook replaces that node's conv in
    # `convs`, and the accumulators it returns are shifted by the same delta, so the layers
    # after it run on the corrected outputs.
    _run(qm, pixels, Requant.FLOAT32, conv_hook=hook, chunk=chunk)
    return replace(qm, convs=convs), shifts
