"""The integer reference's convolutions on torch's float32 kernels, with the same results.

    empirical_bias_correction(qm, pixels, means, conv_kernel=ExactFloat32Conv())

What the integer reference computes for a conv (reference.int8_conv) is an exact int32
accumulator, sum((x - x_zp) * w) + bias, requantized in float32 (kernels.requantize_fp32).
kernels.conv2d_accumulate gets the sum exactly from a float64 numpy product. A float32
convolution gets it exactly too whenever every partial sum is an integer that float32 holds,
|partial| <= 2^24: |x - x_zp| <= 255 and |w| <= max|w| of the layer, so the input channels are
split into groups of kh * kw * c_g * 255 * max|w| <= 2^24 (one group for every v1.0 conv but
the 3x3 expands of fire8 and fire9, two for those), whatever order the kernel sums in. The
requantization is kernels.requantize_fp32's own float32 arithmetic: float32(acc) * scale,
clamped, rounded half to even, plus the zero point.

Measured on the empirical bias correction pass of v1.0 (194 images, 2 cores): 21 s with numpy,
9 s with this, the same int32 biases. It serves that pass only; exporters and evaluation keep
the numpy reference.

Checked, not assumed: the first chunk of every conv of a run is computed both ways, and a
difference (a float32 convolution that does not compute in IEEE float32, e.g. with
torch.backends.mkldnn's fp32_precision set to "bf16" or "tf32") sends the rest of the run to
numpy. FIXED_POINT requantization is left to numpy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .graph import Node
from .quant.params import QConv
from .quant.reference import Requant, Requantizer, int8_conv

_EXACT = 1 << 24  # float32 holds every integer up to this magnitude


def ieee_float32() -> bool:
    """False when torch may run float32 products or convolutions in lower precision (TF32,
    bfloat16): torch.set_float32_matmul_precision below "highest", or an fp32_precision of
    torch.backends.mkldnn other than IEEE."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = torch.backends.mkldnn
    for owner in (mkldnn, getattr(mkldnn, "conv", None), getattr(mkldnn, "matmul", None)):
        precision = getattr(owner, "fp32_precision", "none")
        if precision not in ("none", "ieee"):
            return False
    return True


class ExactFloat32Conv:
    """A reference.ConvKernel (module doc). One instance per run: it remembers which convs
    were checked against numpy, and whether a check failed."""

    def __init__(self):
        self.checked: set[str] = set()
        self.use_numpy = not ieee_float32()

    def __call__(self, x: np.ndarray, node: Node, conv: QConv, input_zero_point: int,
                 requantize: Requantizer) -> np.ndarray:
        if self.use_numpy or requantize.how is not Requant.FLOAT32:
            return int8_conv(x, node, conv, input_zero_point, requantize)
        q = self._float32(x, node, conv, input_zero_point, requantize)
        if node.name not in self.checked:
            ref = int8_conv(x, node, conv, input_zero_point, requantize)
            if not np.array_equal(q, ref):
                self.use_numpy = True
                return ref
            self.checked.add(node.name)
        return q

    @staticmethod
    def _float32(x: np.ndarray, node: Node, conv: QConv, input_zero_point: int,
                 requantize: Requantizer) -> np.ndarray:
        w = conv.weight  # int8 OHWI
        _, kh, kw, cin = w.shape
        w_max = max(1, int(np.abs(w.astype(np.int16)).max()))
        group = max(1, _EXACT // (kh * kw * 255 * w_max))
        # NHWC data seen as NCHW (channels-last), which torch's convolutions take as it is
        xt = torch.from_numpy(x).to(torch.float32).sub_(input_zero_point).permute(0, 3, 1, 2)
        wt = torch.from_numpy(w).to(torch.float32).permute(0, 3, 1, 2)
        acc = None
        for c0 in range(0, cin, group):  # zero padding of x - x_zp is padding x with x_zp
            part = F.conv2d(xt[:, c0:c0 + group], wt[:, c0:c0 + group], stride=node.conv.stride,
                            padding=node.conv.pad)
            part = part.permute(0, 2, 3, 1).to(torch.int64)
            acc = part if acc is None else acc.add_(part)
        acc.add_(torch.from_numpy(conv.bias.astype(np.int64)))
        lo, hi = int(acc.min()), int(acc.max())
        if lo < -(1 << 31) or hi >= 1 << 31:
            raise ValueError(f"a convolution accumulator must fit in int32; found {lo if lo < -(1 << 31) else hi}")
        # kernels.requantize_fp32: float32(acc) * scale, clamped, rounded half to even, + zp
        zp = requantize.zp
        v = acc.to(torch.float32).mul_(torch.from_numpy(np.asarray(requantize.scale, np.float32)))
        v.clamp_(float(np.float32(requantize.qmin - zp)), float(np.float32(127 - zp)))
        return (torch.round(v).to(torch.int32) + zp).to(torch.int8).numpy()
