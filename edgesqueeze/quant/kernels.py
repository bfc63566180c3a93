"""Integer kernels of the INT8 reference, in numpy alone (this module never imports torch).

These functions reproduce the integer arithmetic of TFLite/LiteRT (``tensorflow/lite/kernels/
internal``, gemmlowp's fixed-point helpers, ruy) and onnxruntime, so the project's numpy model can
predict those runtimes to within 1 LSB. The accumulators (:func:`conv2d_accumulate`) are exact
integers and agree everywhere; the runtimes differ only in how they *requantize* an int32
accumulator to 8 bits, and each way is available here (implemented in requant.py):

* :func:`requantize` (``variant="reference"``): TFLite's reference kernels, fixed-point multiplier
  with gemmlowp's double rounding (``OpResolverType.BUILTIN_REF``);
* :func:`requantize` (``variant="ruy"``): TFLite's optimized builtin kernels through ruy
  (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), the second rounding ties toward +inf;
* :func:`requantize_fp32`: LiteRT's default XNNPACK delegate and onnxruntime, float32 scale and
  round half to even.

Any two of them differ by at most 1 LSB per requantization. (Each was checked bit-exact on x86
against ai-edge-litert 2.3.0 and onnxruntime 1.32 on single-convolution models while writing
this module; that check is not part of the numpy-only test suite.)

Layouts, as TFLite stores them:

* activations are NHWC (batch, height, width, channels);
* convolution weights are OHWI (out channels, kernel height, kernel width, in channels).

Quantization scheme: activations are asymmetric 8-bit (``uint8`` or ``int8``) with a zero point;
weights are **symmetric per-output-channel int8, weight zero point 0** (TFLite's int8 scheme, the
one these kernels assume), so the weight term of ``(x - x_zp) * (w - w_zp)`` is simply ``w``.
Bias is int32 with scale ``x_scale * w_scale[o]`` and zero point 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..arch import pool_output_size as _arch_pool_output_size

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "int_dtype_range",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "requantize",
    "requantize_fp32",
    "Requantization",
    "conv2d_accumulate",
    "pool_output_size",
    "max_pool",
    "rounding_divide",
    "quantize",
    "dequantize",
]

# the requantization side lives in requant.py; its public names are part of this module's API
from .requant import (  # noqa: E402
    INT32_MAX,
    INT32_MIN,
    Requantization,
    _as_int,
    _as_int64,
    _check_int32,
    _round_half_away,
    int_dtype_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    requantize_fp32,
)

# float64 represents every integer of magnitude <= 2**53 exactly.
_FLOAT64_EXACT_LIMIT = 1 << 53
# Largest im2col matrix (in float64 elements) built at once by conv2d_accumulate: 2**22 = 32 MiB.
_COL_BUDGET_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def conv2d_accumulate(
    x_q,
    x_zero_point,
    w_q,
    bias_q=None,
    *,
    stride: int,
    padding: tuple[int, int, int, int],
) -> np.ndarray:
    """int32 accumulators of a quantized 2-D convolution: NHWC x OHWI -> NHWO.

    ``acc[n, i, j, o] = bias[o] + sum_{kh, kw, c} (x[n, i*s + kh - top, j*s + kw - left, c] - x_zp)
    * w[o, kh, kw, c]``, with the padding (``top, bottom, left, right``) filled with ``x_zp``, the
    quantized real zero (so padded taps contribute nothing, as in TFLite where the padded input is
    skipped and in ONNX where QLinearConv pads with the zero point). The weight zero point is 0
    (symmetric per-channel int8 weights), so the weights enter as they are.

    Exactness of the float64 matmul: every product satisfies
    ``|(x - x_zp) * w| <= 255 * 128`` for 8-bit data (|x - x_zp| <= 255 for uint8 or int8 with an
    in-range zero point, |w| <= 128 for int8), and every partial sum of ``K = kh*kw*C`` such
    products is an integer of magnitude <= ``K * 255 * 128``. SqueezeNet's largest K is
    3*3*512 = 4608, giving 1.5e8, far below 2**53 = 9.0e15, so all products and partial sums are
    exact in float64 whatever order BLAS sums them in (FMA included). The bound is checked (from
    the actual dtypes) and a ValueError raised if it could reach 2**53.

    1x1 convolutions without padding are a plain reshape + matmul (strided by slicing when
    stride > 1); everything else goes through im2col built from ``sliding_window_view``. The
    batch is processed in chunks so that one im2col matrix stays around 32 MiB.

    ``bias_q`` is int32-valued of shape (O,) or None. Raises ValueError if a sum leaves int32
    (TFLite's int32 accumulator would wrap).
    """
    x = np.asarray(x_q)
    w = np.asarray(w_q)
    if x.dtype.kind not in "iu":
        raise ValueError(f"x_q must be an integer array, got dtype {x.dtype}")
    if w.dtype.kind not in "iu":
        raise ValueError(f"w_q must be an integer array, got dtype {w.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x_q must be NHWC (4-D), got shape {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"w_q must be OHWI (4-D), got shape {w.shape}")
    n_batch, height, width, channels = x.shape
    out_ch, kh, kw, w_in = w.shape
    if w_in != channels:
        raise ValueError(f"w_q has {w_in} input channels but x_q has {channels}")
    if 0 in x.shape or 0 in w.shape:
        raise ValueError(f"empty tensor: x_q {x.shape}, w_q {w.shape}")
    stride = _positive_int(stride, "stride")
    pads = tuple(padding)
    if len(pads) != 4 or any(
        isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or p < 0 for p in pads
    ):
        raise ValueError(f"padding must be 4 non-negative integers (top, bottom, left, right), got {padding!r}")
    top, bottom, left, right = (int(p) for p in pads)

    x_lo, x_hi = int_dtype_range(x.dtype)
    zp = _as_int(x_zero_point, "x_zero_point")
    if not x_lo <= zp <= x_hi:
        raise ValueError(f"x_zero_point {zp} is outside the range [{x_lo}, {x_hi}] of {x.dtype}")

    padded_h = height + top + bottom
    padded_w = width + left + right
    if padded_h < kh or padded_w < kw:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the padded input {padded_h}x{padded_w}"
        )
    out_h = (padded_h - kh) // stride + 1
    out_w = (padded_w - kw) // stride + 1
    k_terms = kh * kw * channels

    w_lo, w_hi = int_dtype_range(w.dtype)
    x_bound = max(x_hi - zp, zp - x_lo)
    w_bound = max(abs(w_lo), abs(w_hi))
    if k_terms * x_bound * w_bound > _FLOAT64_EXACT_LIMIT:
        raise ValueError(
            f"a dot of K={k_terms} products up to {x_bound}*{w_bound} could exceed 2**53; "
            "float64 accumulation would no longer be exact"
        )

    if bias_q is None:
        bias = np.zeros(out_ch, dtype=np.int64)
    else:
        bias = _as_int64(bias_q, "bias_q")
        if bias.shape != (out_ch,):
            raise ValueError(f"bias_q must have shape ({out_ch},), got {bias.shape}")
        _check_int32(bias, "bias_q")

    # OHWI -> (K, O) with K ordered (kh, kw, c), matching the im2col columns below.
    w_cols = w.reshape(out_ch, k_terms).astype(np.float64).T
    fast_1x1 = kh == 1 and kw == 1 and pads == (0, 0, 0, 0)

    out = np.empty((n_batch, out_h, out_w, out_ch), dtype=np.int32)
    per_chunk = max(1, _COL_BUDGET_ELEMENTS // (out_h * out_w * k_terms))
    for n0 in range(0, n_batch, per_chunk):
        n1 = min(n_batch, n0 + per_chunk)
        xf = x[n0:n1].astype(np.float64)
        xf -= zp  # padding with x_zp then subtracting == subtracting then padding with 0
        if fast_1x1:
            cols = _cols_1x1(xf, stride)
        else:
            cols = _cols_im2col(xf, kh, kw, stride, (top, bottom, left, right), out_h, out_w)
        acc = np.rint(cols @ w_cols).astype(np.int64) + bias
        _check_int32(acc, "a convolution accumulator")
        out[n0:n1] = acc.reshape(n1 - n0, out_h, out_w, out_ch)
    return out


def _cols_1x1(xf: np.ndarray, stride: int) -> np.ndarray:
    """(n, H, W, C) -> (n*OH*OW, C) for a 1x1 kernel without padding: no im2col needed."""
    if stride > 1:
        xf = xf[:, ::stride, ::stride, :]
    return xf.reshape(-1, xf.shape[-1])


def _cols_im2col(
    xf: np.ndarray,
    kh: int,
    kw: int,
    stride: int,
    pads: tuple[int, int, int, int],
    out_h: int,
    out_w: int,
) -> np.ndarray:
    """(n, H, W, C) (zero point already subtracted) -> (n*OH*OW, kh*kw*C) im2col matrix."""
    top, bottom, left, right = pads
    if any(pads):
        xf = np.pad(xf, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = sliding_window_view(xf, (kh, kw), axis=(1, 2))  # (n, H', W', C, kh, kw), a view
    win = win[:, ::stride, ::stride][:, :out_h, :out_w]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * xf.shape[-1])


# --------------------------------------------------------------------------------------------
# pooling and integer division
# --------------------------------------------------------------------------------------------


def pool_output_size(size: int, kernel: int, stride: int, ceil_mode: bool, pad: int = 0) -> int:
    """Output length of a pooling window along one axis, with PyTorch's (and Caffe's) rule.

    floor mode: ``(size + 2*pad - kernel) // stride + 1``;
    ceil mode:  ``ceil((size + 2*pad - kernel) / stride) + 1``, then, if the last window would
    start at or beyond ``size + pad`` (entirely in the right padding or past the input), it is
    dropped (PyTorch applies this always, Caffe only when pad > 0; they agree whenever
    kernel >= stride or pad > 0). ``pad`` may be at most ``kernel // 2`` (PyTorch's limit).
    """
    size = _positive_int(size, "size")
    kernel = _positive_int(kernel, "kernel")
    stride = _positive_int(stride, "stride")
    if isinstance(pad, (bool, np.bool_)) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    if pad > kernel // 2:
        raise ValueError(f"pad {pad} must be at most kernel // 2 = {kernel // 2}")
    out = _arch_pool_output_size(size, kernel, stride, ceil_mode, pad)  # the one formula
    if out < 1:
        raise ValueError(
            f"pooling window {kernel} (stride {stride}, pad {pad}) leaves no output for size {size}"
        )
    return out


def max_pool(x, *, kernel: int, stride: int, ceil_mode: bool) -> np.ndarray:
    """Max pooling of an integer NHWC tensor, square ``kernel``, no padding; keeps the dtype.

    Runs on the quantized values directly: dequantization ``s * (q - zp)`` with s > 0 is
    monotone increasing, so ``max`` commutes with it and the output keeps the input's scale and
    zero point (TFLite and ONNX both require this for MaxPool).

    In ceil mode (Caffe/PyTorch; SqueezeNet's 111 -> 55 -> 27 -> 13) the last window may run
    past the edge; it takes the max over its valid part, implemented by padding the bottom/right
    with the dtype minimum (every window starts inside the input, see :func:`pool_output_size`,
    so it always holds at least one real value).
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"max_pool works on integer tensors, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(f"max_pool expects NHWC (4-D), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"empty tensor of shape {arr.shape}")
    kernel = _positive_int(kernel, "kernel")
    stride = _positive_int(stride, "stride")
    _, height, width, _ = arr.shape
    out_h = pool_output_size(height, kernel, stride, ceil_mode)
    out_w = pool_output_size(width, kernel, stride, ceil_mode)
    need_h = (out_h - 1) * stride + kernel
    need_w = (out_w - 1) * stride + kernel
    if need_h > height or need_w > width:
        fill = np.iinfo(arr.dtype).min
        arr = np.pad(
            arr,
            ((0, 0), (0, max(0, need_h - height)), (0, max(0, need_w - width)), (0, 0)),
            constant_values=fill,
        )
    last_h = (out_h - 1) * stride + 1
    last_w = (out_w - 1) * stride + 1
    out = None
    for i in range(kernel):
        for j in range(kernel):
            tap = arr[:, i : i + last_h : stride, j : j + last_w : stride, :]
            if out is None:
                out = tap.copy()
            else:
                np.maximum(out, tap, out=out)
    return out


def rounding_divide(numerator_int, denominator_int) -> np.ndarray:
    """Integer division rounded half away from zero, as TFLite's int8 average pool::

        acc > 0 ? (acc + cnt / 2) / cnt : (acc - cnt / 2) / cnt     // C '/' truncates

    For n >= 0 that is ``floor((n + d//2) / d)``; for n < 0 C truncation of ``(n - d//2) / d``
    is ``-floor((|n| + d//2) / d)``. So the result is ``sign(n) * ((|n| + d//2) // d)``: exact
    halves (even d) go away from zero (5/2 -> 3, -5/2 -> -3); odd d has no exact halves.
    (TFLite's uint8 path uses ``(acc + cnt/2) / cnt`` with acc >= 0, the same thing.)

    Vectorized with broadcasting; the denominator must be positive. Returns int64.
    """
    n = _as_int64(numerator_int, "numerator_int")
    d = _as_int64(denominator_int, "denominator_int")
    if d.size and d.min() <= 0:
        raise ValueError(f"denominator must be positive; got {int(d.min())}")
    magnitude = (np.abs(n) + d // 2) // d
    return np.where(n < 0, -magnitude, magnitude)


# --------------------------------------------------------------------------------------------
# affine quantization of floats
# --------------------------------------------------------------------------------------------


def _channel_params(
    scale, zero_point, shape: tuple[int, ...], axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float64) and zero point (int64) shaped to broadcast against ``shape``."""
    s = np.asarray(scale, dtype=np.float64)
    zp_arr = np.asarray(zero_point)
    if zp_arr.dtype.kind not in "iu":
        raise ValueError(f"zero_point must be integer, got {zero_point!r}")
    zp = zp_arr.astype(np.int64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"scale must be finite and positive; got {scale!r}")
    if axis is None:
        if s.size != 1 or zp.size != 1:
            raise ValueError(
                f"per-channel scale/zero_point (sizes {s.size}, {zp.size}) need an axis argument"
            )
        return s.reshape(()), zp.reshape(())
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D tensor")
    axis = axis % ndim
    channels = shape[axis]
    target = [1] * ndim
    target[axis] = channels

    def fit(p: np.ndarray, name: str) -> np.ndarray:
        if p.size == 1:
            return p.reshape(())
        if p.ndim != 1 or p.shape[0] != channels:
            raise ValueError(f"{name} must be a scalar or have {channels} entries (axis {axis}); got shape {p.shape}")
        return p.reshape(target)

    return fit(s, "scale"), fit(zp, "zero_point")


def quantize(
    x_float,
    scale,
    zero_point,
    dtype,
    *,
    axis: int | None = None,
    rounding: Literal["half_even", "half_away"] = "half_even",
) -> np.ndarray:
    """Affine quantization ``q = saturate(round(x / scale) + zero_point)`` to an integer dtype.

    Rounding of exact ties differs between runtimes:

    * ``"half_even"`` (default): ONNX QuantizeLinear (the spec says round to nearest even;
      onnxruntime uses nearbyint) and XNNPACK's float->int8 convert, which LiteRT uses by default;
      0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    * ``"half_away"``: TFLite's reference Quantize kernel, ``TfLiteRound = std::round``;
      0.5 -> 1, 1.5 -> 2, 2.5 -> 3.

    The scale is first rounded to float32 (both file formats store float32 scales); the quotient
    is computed in the input's precision (float32 for float32 input, as onnxruntime; TFLite's
    reference divides in double and XNNPACK multiplies by a float32 reciprocal, which can move a
    value that lands within float rounding of a .5 tie by 1 LSB). Values beyond the dtype range
    saturate (±inf included); NaN raises ValueError.

    ``axis`` selects per-channel quantization: ``scale``/``zero_point`` are then vectors of the
    length of that axis (or scalars).
    """
    if rounding not in ("half_even", "half_away"):
        raise ValueError(f"rounding must be 'half_even' or 'half_away', got {rounding!r}")
    x = np.asarray(x_float)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"x_float must be numeric, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype == np.float16 else np.float64)
    if np.isnan(x).any():
        raise ValueError("cannot quantize NaN")
    lo, hi = int_dtype_range(dtype)
    s, zp = _channel_params(scale, zero_point, x.shape, axis)
    if zp.size and (zp.min() < lo or zp.max() > hi):
        raise ValueError(f"zero_point {zero_point!r} is outside the range [{lo}, {hi}] of {np.dtype(dtype)}")
    s = s.astype(np.float32).astype(x.dtype)
    if np.any(s == 0):
        raise ValueError(f"scale {scale!r} underflows to 0 in float32")
    with np.errstate(over="ignore"):
        v = x / s
    r = np.rint(v) if rounding == "half_even" else _round_half_away(v)
    # saturate before the integer cast (a C cast of an out-of-range float is undefined)
    r = np.clip(r, lo - zp, hi - zp)
    return (r.astype(np.int64) + zp).astype(dtype)


def dequantize(q, scale, zero_point, *, axis: int | None = None, dtype=np.float32) -> np.ndarray:
    """Affine dequantization ``(q - zero_point) * scale`` (per-channel with ``axis``).

    For float32 output the scale is rounded to float32 and the product is formed in float64 and
    rounded once to float32; since an integer below 2**24 times a float32 is exact in float64,
    this equals both onnxruntime's float32 ``(q - zp) * scale`` and TFLite's
    ``float(double(scale) * (q - zp))``.
    """
    out_dtype = np.dtype(dtype)
    small = np.asarray(q)
    if out_dtype == np.float32 and small.dtype.kind in "iu" and small.dtype.itemsize <= 2:
        s, zp = _channel_params(scale, zero_point, small.shape, axis)
        if zp.size and np.abs(zp).max() < 2**16:
            # 8- and 16-bit tensors in float32 alone, the same bits: q - zp is an integer below
            # 2**17 in magnitude, exact in float32, and a float32 product of two float32
            # values is the exact product rounded once, as the float64 path below rounds it
            # (without its int64 and float64 copies, 12 bytes an element)
            return (small.astype(np.float32) - zp.astype(np.float32)) * s.astype(np.float32)
    arr = _as_int64(q, "q")
    if out_dtype.kind != "f":
        raise ValueError(f"dequantize produces floats; got dtype {out_dtype}")
    s, zp = _channel_params(scale, zero_point, arr.shape, axis)
    if out_dtype == np.float32:
        s = s.astype(np.float32).astype(np.float64)
    return ((arr - zp).astype(np.float64) * s).astype(out_dtype)
