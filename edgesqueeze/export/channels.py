"""The channel order of the written files: RGB unless asked otherwise.

Tools that read a .tflite's standard metadata (MediaPipe, the TFLite Task Library) feed RGB
images, and the metadata schema has no BGR colour space, so every file the project writes takes
RGB by default (`arch.DEFAULT_FILE_CHANNEL_ORDER`), whatever order the weights were trained in.
The released Caffe SqueezeNet takes BGR; the mean is folded into conv1 and conv1 is the only
layer that sees the input channels, so reversing conv1's input-channel axis (and the order of
the mean and std) gives a model that computes exactly the same function of the reversed image.

The model is calibrated and quantized in its weights' own order, and then turned:

    quantized_with_channel_order(qm, "RGB")   # the same QuantizedModel with conv1's int8
                                              # weights reversed along their input channels:
                                              # every scale, zero point, bias and weight is the
                                              # same, so the integer results on the reversed
                                              # pixels are bit for bit those on the original
    arch.with_channel_order(arch, params, "RGB")   # the float weights (the FP32 files)

The runtime keeps taking OpenCV's BGR frames and converts them as the file's metadata says
(`data.to_uint8_input`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..arch import CHANNEL_ORDERS, with_channel_order
from ..errors import OptionError


def quantized_with_channel_order(qm, order: str | None):
    """`qm` (a quant.params.QuantizedModel) taking its input channels in `order` (None: as it
    is): conv1's int8 weights (OHWI) reversed along I, the arch's mean/std reversed and its
    channel order set, and conv1's float32 weights reversed the same way when it is kept in
    float. Nothing else changes: the calibration's parameters are the same, in another channel
    order."""
    if order is None:
        return qm
    want = str(order).upper()
    if want not in CHANNEL_ORDERS:
        raise OptionError(f"channel order {order!r} must be RGB or BGR")
    if qm.arch.preprocess.channel_order == want:
        return qm
    first = qm.arch.conv1.name
    conv = qm.convs[first]
    if conv.weight.ndim != 4 or conv.weight.shape[-1] != 3:
        raise OptionError(f"{first}'s int8 weight has shape {conv.weight.shape}; reversing the channel order "
                          "needs 3 input channels (OHWI)")
    arch, _ = with_channel_order(qm.arch, {first: (np.zeros((1, 3, 1, 1), np.float32), None)}, want)
    convs = dict(qm.convs)
    convs[first] = replace(conv, weight=np.ascontiguousarray(conv.weight[..., ::-1]))
    float_weights = dict(qm.float_weights)
    if first in float_weights:  # conv1 kept in float: its float32 weights (OHWI) turn the same way
        w, b = float_weights[first]
        float_weights[first] = (np.ascontiguousarray(w[..., ::-1]), b)
    return replace(qm, arch=arch, convs=convs, float_weights=float_weights)


__all__ = ["quantized_with_channel_order", "with_channel_order"]
