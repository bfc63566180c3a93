"""Requantization of the INT8 reference: an int32 accumulator to 8 bits, the three ways the
runtimes do it (numpy alone; `kernels` re-exports the public names).

* `requantize` (``variant="reference"``): TFLite's reference kernels, fixed-point multiplier
  with gemmlowp's double rounding (``OpResolverType.BUILTIN_REF``);
* `requantize` (``variant="ruy"``): TFLite's optimized builtin kernels through ruy, the second
  rounding ties toward +inf;
* `requantize_fp32`: LiteRT's default XNNPACK delegate and onnxruntime, float32 scale and round
  half to even.

Any two of them differ by at most 1 LSB per requantization. The small integer checks here are
shared with `kernels`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def int_dtype_range(dtype) -> tuple[int, int]:
    """``(qmin, qmax)`` of an integer dtype, e.g. ``uint8 -> (0, 255)``, ``int8 -> (-128, 127)``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"not a numpy dtype: {dtype!r}") from exc
    if dt.kind not in "iu":
        raise ValueError(f"expected an integer dtype, got {dt}")
    info = np.iinfo(dt)
    return int(info.min), int(info.max)


def _as_int64(value, name: str) -> np.ndarray:
    """An integer-typed array (or Python int) as int64; floats are refused, not rounded."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values beyond int64")
    return arr.astype(np.int64, copy=False)


def _as_int(value, name: str) -> int:
    """A scalar integer (Python or numpy int, or a 0-d/size-1 integer array)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.size != 1:
        raise ValueError(f"{name} must be a single integer, got {value!r}")
    return int(arr.reshape(()))


def _check_int32(arr: np.ndarray, name: str) -> None:
    if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
        bad = arr[(arr < INT32_MIN) | (arr > INT32_MAX)].ravel()[0]
        raise ValueError(f"{name} must fit in int32; found {int(bad)}")


def _check_last_axis(param: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """Per-channel parameters are a scalar or a 1-D vector matching the last axis of ``shape``."""
    if param.ndim == 0:
        return
    if param.ndim != 1 or len(shape) == 0 or param.shape[0] not in (1, shape[-1]):
        raise ValueError(
            f"{name} must be a scalar or a vector over the last (channel) axis of length "
            f"{shape[-1] if shape else 'n/a'}; got shape {param.shape}"
        )


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero, like C's std::round (TFLite's TfLiteRound).

    ``floor(|v| + 0.5)`` is wrong for 0.49999999999999994 (the addition rounds up to 1.0), so
    split off the fraction instead: ``v - trunc(v)`` is exact in binary floating point (Sterbenz:
    trunc(v) lies within a factor 2 of v once |v| >= 1, and is 0 below), and the tie test on the
    exact fraction is then exact.
    """
    with np.errstate(invalid="ignore"):  # inf - inf inside the fraction of +-inf; result stays inf
        t = np.trunc(v)
        frac = v - t
        return t + np.where(np.abs(frac) >= 0.5, np.sign(v), 0.0)


# --------------------------------------------------------------------------------------------
# fixed-point multipliers (TFLite quantization_util.cc, common.h; gemmlowp fixedpoint.h)
# --------------------------------------------------------------------------------------------


def quantize_multiplier(real: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's ``QuantizeMultiplier``: ``real = q * 2**(shift - 31)`` with ``q`` in [2**30, 2**31).

    Elementwise over arrays (per-channel multipliers); returns ``(q, shift)`` as int32 arrays of
    the input's shape (0-d for a scalar).

    Derivation: ``frexp(real) = (frac, e)`` with ``frac`` in [0.5, 1) and ``real = frac * 2**e``;
    with ``q = frac * 2**31`` (in [2**30, 2**31)) this is ``real = q * 2**(e - 31)``, so
    ``shift = e``. ``q`` is rounded with ``std::round`` (half away from zero); if that rounds up
    to exactly 2**31 (frac within 2**-32 of 1), ``q`` is halved and ``shift`` incremented.

    Special cases, as TFLite:

    * ``real == 0`` gives ``(0, 0)``;
    * a shift below -31 (``real`` below about 2**-32) would shift every bit out, so TFLite flushes
      it to ``(0, 0)`` ("flush denormals to zero") and so do we.

    TFLite computes the real multiplier in double, e.g. for a convolution
    ``double(x_scale) * double(w_scale[o]) / double(out_scale)`` from the float32 scales in the
    file; pass the same double here. Shifts above 30 are returned as TFLite returns them, but
    :func:`multiply_by_quantized_multiplier` refuses them (TFLite's ``1 << shift`` overflows).

    Raises ValueError for a negative or non-finite ``real``.
    """
    r = np.asarray(real, dtype=np.float64)
    bad = ~np.isfinite(r) | (r < 0)
    if bad.any():
        value = r[bad].ravel()[0]
        raise ValueError(f"quantize_multiplier needs finite non-negative reals; got {value!r}")
    frac, exponent = np.frexp(r)  # frexp(0) == (0.0, 0): q = 0, shift = 0 falls out below
    q = _round_half_away(frac * float(1 << 31)).astype(np.int64)  # frac * 2**31 is exact
    shift = exponent.astype(np.int64)
    full = q == (1 << 31)
    q = np.where(full, q // 2, q)
    shift = np.where(full, shift + 1, shift)
    flushed = shift < -31
    q = np.where(flushed, 0, q)
    shift = np.where(flushed, 0, shift)
    return q.astype(np.int32), shift.astype(np.int32)


def _saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 arrays holding int32 values.

    C++ (gemmlowp/fixedpoint/fixedpoint.h)::

        bool overflow = a == b && a == INT32_MIN;
        int64 ab = int64(a) * int64(b);
        int32 nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
        int32 r = int32((ab + nudge) / (1LL << 31));     // C division truncates toward zero
        return overflow ? INT32_MAX : r;

    ``|a*b| <= 2**62`` so the int64 product never overflows. numpy's ``//`` floors, so the
    C truncation is written out: ``n >> 31`` for n >= 0 and ``-((-n) >> 31)`` for n < 0.

    (Worked out, this equals ``floor((a*b + 2**30) / 2**31)`` for every input but the overflow
    one: nearest of ``2ab / 2**32`` with ties toward +inf, so -0.5 -> 0 but +0.5 -> 1. The test
    suite checks that identity; the literal form is kept here for auditability.)
    """
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    n = ab + nudge
    truncated = np.where(n >= 0, n >> 31, -((-n) >> 31))
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), truncated)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    C++::

        mask = (1 << exponent) - 1;
        remainder = x & mask;                           // x mod 2**exponent, in [0, mask]
        threshold = (mask >> 1) + (x < 0 ? 1 : 0);
        return (x >> exponent) + (remainder > threshold ? 1 : 0);

    ``x >> exponent`` is the floor; the remainder is what the floor dropped. For x >= 0 the
    result goes up when remainder > half - 1, i.e. remainder >= half (ties up = away from zero);
    for x < 0 only when remainder > half, so a tie stays at the floor (= away from zero).
    numpy's ``>>`` on signed ints is arithmetic and ``&`` is two's complement, as in C.
    """
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


Requantization = Literal["reference", "ruy"]


def _rounding_shift_right_upward(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``(x + 2**(e-1)) >> e`` (and ``x`` for e == 0): ``x / 2**e`` rounded with ties toward +inf.

    This is ARM's SRSHL/URSHL by a negative amount, which ruy's kernels use instead of gemmlowp's
    RoundingDivideByPOT; ruy's x86 kernels reproduce it.
    """
    half = np.where(exponent > 0, np.int64(1) << np.maximum(exponent - 1, 0), np.int64(0))
    return (x + half) >> exponent


def multiply_by_quantized_multiplier(
    x, multiplier, shift, *, variant: Requantization = "reference"
) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier(int32 x, int32 q, int shift)`` (reference kernels).

    This is the default build's version (the one without ``TFLITE_SINGLE_ROUNDING``); it rounds
    twice::

        left_shift  = max(shift, 0)
        right_shift = max(-shift, 0)
        RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * (1 << left_shift), q),
                            right_shift)

    i.e. approximately ``round(x * q * 2**(shift - 31))``: the high-mul gives
    ``round(x * 2**left * q / 2**31)`` (ties toward +inf) and the divide then rounds
    ``/ 2**right`` half away from zero. The two roundings can differ from a single rounding of
    the exact product by 1 (e.g. x=4, real=0.325 gives 2, not round(1.3) = 1).

    ``variant="ruy"`` replaces the second rounding by ``(h + 2**(right-1)) >> right`` (ties
    toward +inf instead of away from zero: -1.5 -> -1, not -2), which is what TFLite's optimized
    builtin kernels compute through ruy (ARM: SQRDMULH then SRSHL; measured bit-exact on x86
    against ai-edge-litert 2.3.0 with ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``, while
    ``"reference"`` was bit-exact against ``BUILTIN_REF``). LiteRT's default (XNNPACK) and
    onnxruntime use float32 requantization instead: see :func:`requantize_fp32`.

    ``multiplier`` and ``shift`` are scalars or vectors over the last axis of ``x`` (per-channel).
    Intermediates are int64; the result is int32. Raises ValueError for values outside int32,
    shifts outside [-31, 30] (TFLite's ``1 << left_shift`` and ``RoundingDivideByPOT`` limits),
    or an ``x * 2**left_shift`` that would overflow int32 (undefined behaviour in TFLite).
    """
    if variant not in ("reference", "ruy"):
        raise ValueError(f"variant must be 'reference' or 'ruy', got {variant!r}")
    x64 = _as_int64(x, "x")
    m = _as_int64(multiplier, "multiplier")
    s = _as_int64(shift, "shift")
    _check_int32(x64, "x")
    _check_int32(m, "multiplier")
    _check_last_axis(m, x64.shape, "multiplier")
    _check_last_axis(s, x64.shape, "shift")
    if s.size and (s.min() < -31 or s.max() > 30):
        bad = s[(s < -31) | (s > 30)].ravel()[0]
        raise ValueError(f"shift must lie in [-31, 30]; got {int(bad)}")
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    a = x64 * (np.int64(1) << left)
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):
        raise ValueError(
            "x * 2**left_shift overflows int32 (TFLite's int32 product would be undefined); "
            "the multiplier is too large for these accumulators"
        )
    high = _saturating_rounding_doubling_high_mul(a, m)
    if variant == "ruy":
        return _rounding_shift_right_upward(high, right).astype(np.int32)
    return _rounding_divide_by_pot(high, right).astype(np.int32)


def _output_range(out_zero_point, qmin, qmax, dtype) -> tuple[int, int, int]:
    """(zero point, qmin, qmax) checked against `dtype`; None for qmin/qmax is the dtype's bound."""
    lo, hi = int_dtype_range(dtype)
    zp = _as_int(out_zero_point, "out_zero_point")
    if not lo <= zp <= hi:
        raise ValueError(f"out_zero_point {zp} is outside the range [{lo}, {hi}] of {np.dtype(dtype)}")
    qmin = lo if qmin is None else _as_int(qmin, "qmin")
    qmax = hi if qmax is None else _as_int(qmax, "qmax")
    if not lo <= qmin <= qmax <= hi:
        raise ValueError(f"need {lo} <= qmin <= qmax <= {hi} for {np.dtype(dtype)}; got qmin={qmin}, qmax={qmax}")
    return zp, qmin, qmax


def requantize(
    acc_int32,
    multiplier,
    shift,
    out_zero_point,
    qmin,
    qmax,
    dtype,
    *,
    variant: Requantization = "reference",
) -> np.ndarray:
    """int32 accumulators -> 8-bit outputs, as TFLite's conv/fully-connected epilogue::

        acc = MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]);
        acc += output_zero_point;
        acc = clamp(acc, output_activation_min, output_activation_max);

    ``qmin``/``qmax`` are the activation range; ``None`` means the full range of ``dtype``. A fused
    ReLU is ``qmin = out_zero_point`` (the quantized real 0), ReLU6 would be ``qmax = q(6.0)``.
    ``multiplier``/``shift`` may be per-channel vectors over the last axis. The zero point is a
    single integer (per-tensor output quantization, as in TFLite). Returns ``dtype``.
    ``variant`` is passed to :func:`multiply_by_quantized_multiplier` ("reference": TFLite's
    reference kernels; "ruy": TFLite's optimized builtin kernels without XNNPACK).
    """
    zp, qmin, qmax = _output_range(out_zero_point, qmin, qmax, dtype)
    scaled = multiply_by_quantized_multiplier(acc_int32, multiplier, shift, variant=variant)
    scaled = scaled.astype(np.int64)
    return np.clip(scaled + zp, qmin, qmax).astype(dtype)


def requantize_fp32(acc_int32, scale, out_zero_point, qmin, qmax, dtype) -> np.ndarray:
    """int32 accumulators -> 8-bit outputs with *float32* requantization (onnxruntime, XNNPACK).

    onnxruntime's MLAS (QLinearConv, QGEMM output stage) and XNNPACK's "fp32" requantization,
    which LiteRT uses through its default XNNPACK delegate, do not use the fixed-point multiplier;
    they compute, all in float32::

        v = clamp(float(acc) * scale, qmin - zp, qmax - zp)
        q = round_half_to_even(v) + zp          // "magic number" rounding

    with ``scale = x_scale * w_scale[c] / y_scale`` formed in float32 from the float32 scales;
    pass exactly that float32 value (e.g. ``np.float32(xs) * ws.astype(np.float32) /
    np.float32(ys)``). This differs from :func:`requantize` (TFLite's reference fixed-point path)
    by at most 1 LSB. ``scale`` is a scalar or a vector over the last axis.

    Measured bit-exact (x86) against onnxruntime 1.32 QLinearConv (uint8 and int8 activations,
    per-channel int8 weights) and against ai-edge-litert 2.3.0's default resolver (XNNPACK) on
    int8 CONV_2D with per-channel weights (XNNPACK's "qc8" kernels always requantize in fp32; on
    ARM they round with VCVTN/magic-number, also half to even).
    """
    zp, qmin, qmax = _output_range(out_zero_point, qmin, qmax, dtype)
    acc = _as_int64(acc_int32, "acc_int32")
    _check_int32(acc, "acc_int32")
    s = np.asarray(scale)
    if s.dtype.kind != "f":
        raise ValueError(f"scale must be floating point, got dtype {s.dtype}")
    s = s.astype(np.float32)
    _check_last_axis(s, acc.shape, "scale")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"scale must be finite and positive; got {scale!r}")
    v = acc.astype(np.float32) * s  # float32 product, as float(acc) * scale in C
    v = np.clip(v, np.float32(qmin - zp), np.float32(qmax - zp))
    return (np.rint(v).astype(np.int64) + zp).astype(dtype)
