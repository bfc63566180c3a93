"""Tests of the integer kernels (edgesqueeze.quant.kernels): hand-worked cases and naive loops."""

from __future__ import annotations


import numpy as np
import pytest

from edgesqueeze.quant import kernels as K
from edgesqueeze.quant.kernels import (
    INT32_MAX,
    INT32_MIN,
    conv2d_accumulate,
    dequantize,
    int_dtype_range,
    max_pool,
    multiply_by_quantized_multiplier,
    pool_output_size,
    quantize,
    quantize_multiplier,
    requantize,
    requantize_fp32,
    rounding_divide,
)

TWO30 = 1 << 30
TWO31 = 1 << 31


# --------------------------------------------------------------------------------------------
# int_dtype_range
# --------------------------------------------------------------------------------------------


def test_int_dtype_range():
    assert int_dtype_range(np.uint8) == (0, 255)
    assert int_dtype_range("int8") == (-128, 127)
    assert int_dtype_range(np.int32) == (INT32_MIN, INT32_MAX)
    with pytest.raises(ValueError, match="integer dtype"):
        int_dtype_range(np.float32)


# --------------------------------------------------------------------------------------------
# quantize_multiplier
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "real, expected",
    [
        # frexp(0.5) = (0.5, 0): q = 0.5 * 2^31 = 2^30, shift 0; 2^30 * 2^(0-31) = 0.5
        (0.5, (TWO30, 0)),
        # frexp(0.25) = (0.5, -1): q = 2^30, shift -1
        (0.25, (TWO30, -1)),
        # frexp(1.0) = (0.5, 1): q = 2^30, shift 1
        (1.0, (TWO30, 1)),
        # frexp(0.75) = (0.75, 0): q = 0.75 * 2^31 = 1610612736
        (0.75, (1610612736, 0)),
        # frexp(0.325) = (0.65, -1): 0.65 * 2^31 = 1395864371.2 -> 1395864371
        (0.325, (1395864371, -1)),
        # 0 is special-cased to (0, 0)
        (0.0, (0, 0)),
        # 1 - 2^-40: frac = 1 - 2^-40, frac * 2^31 = 2^31 - 2^-9 rounds to 2^31,
        # so q is halved to 2^30 and the shift goes from 0 to 1
        (1.0 - 2.0**-40, (TWO30, 1)),
        # 2^-32 = 0.5 * 2^-31: shift -31 is the smallest one kept
        (2.0**-32, (TWO30, -31)),
        # 2^-33 = 0.5 * 2^-32: shift -32 < -31 is flushed to (0, 0)
        (2.0**-33, (0, 0)),
        # tie: frac = 0.5 + 2^-32, frac * 2^31 = 2^30 + 0.5 exactly; std::round goes away from
        # zero -> 2^30 + 1 (half-to-even would give 2^30)
        (0.5 + 2.0**-32, (TWO30 + 1, 0)),
    ],
)
def test_quantize_multiplier_hand_worked(real, expected):
    q, shift = quantize_multiplier(real)
    assert q.dtype == np.int32 and shift.dtype == np.int32
    assert (int(q), int(shift)) == expected


def test_quantize_multiplier_elementwise_and_reconstructs():
    reals = np.array([0.5, 0.25, 0.0, 0.003921568859368563, 1.7, 1e-6])
    q, shift = quantize_multiplier(reals)
    assert q.shape == reals.shape and shift.shape == reals.shape
    assert list(q[:3]) == [TWO30, TWO30, 0]
    assert list(shift[:3]) == [0, -1, 0]
    nonzero = reals > 0
    assert np.all((q[nonzero] >= TWO30) & (q[nonzero].astype(np.int64) < TWO31))
    rebuilt = q.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)
    # q has 31 significant bits: relative error below 2^-31
    assert np.all(np.abs(rebuilt - reals) <= reals * 2.0**-30)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), -float("inf")])
def test_quantize_multiplier_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="non-negative"):
        quantize_multiplier(bad)
    with pytest.raises(ValueError, match="non-negative"):
        quantize_multiplier(np.array([0.5, bad]))


# --------------------------------------------------------------------------------------------
# multiply_by_quantized_multiplier
# --------------------------------------------------------------------------------------------


def test_mbqm_half_multiplier_shift0():
    # q = 2^30, shift 0 (real 0.5): SRDHM(x, 2^30) = floor((x * 2^30 + 2^30) / 2^31)
    # = floor((x + 1) / 2). Ties go toward +inf in the high-mul:
    #   3 -> floor(4/2) = 2 (1.5 -> 2);   -3 -> floor(-2/2) = -1 (-1.5 -> -1)
    #   5 -> 3 (2.5 -> 3);                -5 -> floor(-4/2) = -2 (-2.5 -> -2)
    #   1 -> 1 (0.5 -> 1);                -1 -> floor(0/2) = 0 (-0.5 -> 0)
    x = np.array([3, -3, 5, -5, 1, -1, 0], dtype=np.int32)
    out = multiply_by_quantized_multiplier(x, TWO30, 0)
    assert out.dtype == np.int32
    assert out.tolist() == [2, -1, 3, -2, 1, 0, 0]


def test_mbqm_rounding_divide_goes_away_from_zero():
    # q = 2^30, shift -1 (real 0.25): SRDHM gives h = floor((x + 1) / 2), then
    # RoundingDivideByPOT(h, 1): mask 1, threshold = 0 + (h < 0), h >> 1 plus (h & 1 > threshold)
    #   x =  6: h = 3;  3 >> 1 = 1, rem 1 > 0 -> 2      (1.5 -> 2, away from zero)
    #   x = -6: h = -3; -3 >> 1 = -2, rem 1 > 1? no -> -2 (-1.5 -> -2, away from zero)
    #   x =  2: h = 1;  0 + (1 > 0) -> 1                (0.5 -> 1)
    #   x = -2: h = -1; -1 >> 1 = -1, rem 1 > 1? no -> -1 (-0.5 -> -1)
    #   x = -3: h = -1 -> -1                            (-0.75 -> -1)
    #   x =  5: h = 3 -> 2                              (1.25 -> 1 exactly; double rounding: 2)
    x = np.array([6, -6, 2, -2, -3, 5], dtype=np.int64)
    assert multiply_by_quantized_multiplier(x, TWO30, -1).tolist() == [2, -2, 1, -1, -1, 2]


def test_mbqm_double_rounding_case():
    # real 0.325 -> (1395864371, -1) (see above). x = 4: 4 * 1395864371 / 2^31 = 2.5999999996
    # -> high-mul rounds to 3 -> RoundingDivideByPOT(3, 1) = 2, although 4 * 0.325 = 1.3 -> 1.
    # TFLite's default (double-rounding) MultiplyByQuantizedMultiplier really returns 2.
    q, shift = quantize_multiplier(0.325)
    assert int(multiply_by_quantized_multiplier(np.int32(4), q, shift)) == 2


def test_mbqm_saturation_and_extremes():
    # a == b == INT32_MIN is the only overflow of the doubling high-mul: INT32_MAX.
    x = np.array([INT32_MIN], dtype=np.int32)
    assert multiply_by_quantized_multiplier(x, INT32_MIN, 0).tolist() == [INT32_MAX]
    # (2^31-1)^2 = 2^62 - 2^32 + 1; (that + 2^30) >> 31 = 2^31 - 2 (remainder 2^30 + 1 < 2^31)
    x = np.array([INT32_MAX], dtype=np.int32)
    assert multiply_by_quantized_multiplier(x, INT32_MAX, 0).tolist() == [INT32_MAX - 1]
    # INT32_MIN * 2^30 / 2^31 = -2^30 exactly
    x = np.array([INT32_MIN], dtype=np.int32)
    assert multiply_by_quantized_multiplier(x, TWO30, 0).tolist() == [-TWO30]
    # largest right shift, 31: the exact value 2^30 * (2^31-1) / 2^62 = 0.49999999977 would round
    # to 0, but the high-mul first gives floor((2^30*(2^31-1) + 2^30) / 2^31) = 2^30, and
    # RoundingDivideByPOT(2^30, 31) has remainder 2^30 > threshold 2^30 - 1 -> 0 + 1 = 1.
    assert multiply_by_quantized_multiplier(np.int32(TWO30), INT32_MAX, -31).tolist() == 1
    # zero multiplier gives zero
    assert multiply_by_quantized_multiplier(np.array([12345, -999]), 0, 0).tolist() == [0, 0]


def test_mbqm_positive_shift():
    # q = 2^30, shift 2 (real 2.0): x * 4, then floor((4x * 2^30 + 2^30) / 2^31) = floor((4x+1)/2)
    # = 2x for every integer x.
    x = np.array([7, -7, 0, 100000], dtype=np.int32)
    assert multiply_by_quantized_multiplier(x, TWO30, 2).tolist() == [14, -14, 0, 200000]


def test_mbqm_per_channel_broadcast_last_axis():
    x = np.array([[6, 6, 6], [-6, -6, -6]], dtype=np.int32)
    mult = np.array([TWO30, TWO30, TWO30], dtype=np.int32)
    shift = np.array([0, -1, 1], dtype=np.int32)  # reals 0.5, 0.25, 1.0
    out = multiply_by_quantized_multiplier(x, mult, shift)
    # 0.5*6 = 3; 0.25*6 = 1.5 -> 2; 1.0*6 = 6 and the negatives: -3, -1.5 -> -2, -6
    assert out.tolist() == [[3, 2, 6], [-3, -2, -6]]


def test_mbqm_ruy_variant_rounds_ties_upward():
    # Same high-mul as above (q = 2^30, shift -1, real 0.25): h = floor((x + 1) / 2); the ruy
    # variant then computes (h + 1) >> 1 (ties toward +inf) instead of RoundingDivideByPOT:
    #   x =  6: h = 3  -> (4) >> 1 = 2      (1.5 -> 2, same as reference)
    #   x = -6: h = -3 -> (-2) >> 1 = -1    (-1.5 -> -1; reference gives -2)
    #   x =  2: h = 1  -> 1                 (0.5 -> 1)
    #   x = -2: h = -1 -> (0) >> 1 = 0      (-0.5 -> 0; reference gives -1)
    #   x = -3: h = -1 -> 0                 (-0.75 -> 0 by double rounding; reference -1)
    #   x = -7: h = -3 -> -1                (-1.75: the high-mul already gave -1.5 -> -1)
    x = np.array([6, -6, 2, -2, -3, -7], dtype=np.int32)
    ruy = multiply_by_quantized_multiplier(x, TWO30, -1, variant="ruy")
    ref = multiply_by_quantized_multiplier(x, TWO30, -1)
    assert ruy.tolist() == [2, -1, 1, 0, 0, -1]
    assert ref.tolist() == [2, -2, 1, -1, -1, -2]
    # with no right shift the two variants are the same function
    rng = np.random.default_rng(11)
    acc = rng.integers(-(1 << 20), 1 << 20, size=5000).astype(np.int32)
    q, sh = quantize_multiplier(rng.uniform(0.5, 0.99))  # shift 0
    assert int(sh) == 0
    assert np.array_equal(
        multiply_by_quantized_multiplier(acc, q, sh, variant="ruy"),
        multiply_by_quantized_multiplier(acc, q, sh),
    )
    # and in general they differ by at most 1
    reals = rng.uniform(1e-4, 0.5, size=64)
    q, sh = quantize_multiplier(reals)
    acc = rng.integers(-100000, 100000, size=(50, 64)).astype(np.int32)
    d = multiply_by_quantized_multiplier(acc, q, sh, variant="ruy").astype(np.int64) - \
        multiply_by_quantized_multiplier(acc, q, sh)
    assert set(np.unique(d).tolist()) <= {0, 1}  # ruy only ever rounds a tie up
    with pytest.raises(ValueError, match="variant"):
        multiply_by_quantized_multiplier(acc, q, sh, variant="gemmlowp")


def test_srdhm_equals_floor_formula():
    # The literal C formula (truncating division with a sign-dependent nudge) equals
    # floor((a*b + 2^30) / 2^31) everywhere except the saturating corner.
    rng = np.random.default_rng(0)
    a = rng.integers(INT32_MIN, INT32_MAX, size=20000, endpoint=True, dtype=np.int64)
    b = rng.integers(INT32_MIN, INT32_MAX, size=20000, endpoint=True, dtype=np.int64)
    # include exact ties of the products: a * 2^30 / 2^31 = a / 2 for odd a
    a = np.concatenate([a, np.arange(-9, 10)])
    b = np.concatenate([b, np.full(19, TWO30)])
    from edgesqueeze.quant.requant import _saturating_rounding_doubling_high_mul

    got = _saturating_rounding_doubling_high_mul(a, b)
    expected = (a * b + TWO30) // TWO31
    assert np.array_equal(got, expected)


def test_mbqm_matches_python_reference_on_random_values():
    # An independent transcription of the C++ in Python ints.
    def srdhm(a, b):
        if a == b == INT32_MIN:
            return INT32_MAX
        ab = a * b
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        n = ab + nudge
        return int(n / TWO31) if abs(n) < 2**52 else (abs(n) // TWO31) * (1 if n >= 0 else -1)

    def rdbpot(x, e):
        mask = (1 << e) - 1
        rem = x & mask
        thr = (mask >> 1) + (1 if x < 0 else 0)
        return (x >> e) + (1 if rem > thr else 0)

    def ref(x, q, s):
        return rdbpot(srdhm(x * (1 << max(s, 0)), q), max(-s, 0))

    rng = np.random.default_rng(1)
    reals = rng.uniform(1e-5, 0.9, size=300)
    q, s = quantize_multiplier(reals)
    x = rng.integers(-(1 << 24), 1 << 24, size=300)
    xs = np.broadcast_to(x[:, None], (300, 300))
    got = multiply_by_quantized_multiplier(xs, q, s)  # per-channel over the last axis
    for i in range(0, 300, 7):
        for j in range(0, 300, 11):
            assert int(got[i, j]) == ref(int(x[i]), int(q[j]), int(s[j]))
    # and within 1 of the float result
    exact = x[:, None].astype(np.float64) * reals[None, :]
    assert np.max(np.abs(got - np.round(exact))) <= 1


def test_mbqm_errors():
    with pytest.raises(ValueError, match="shift"):
        multiply_by_quantized_multiplier(np.int32(1), TWO30, -32)
    with pytest.raises(ValueError, match="shift"):
        multiply_by_quantized_multiplier(np.int32(1), TWO30, 31)
    with pytest.raises(ValueError, match="overflows int32"):
        multiply_by_quantized_multiplier(np.int32(1 << 29), TWO30, 3)
    with pytest.raises(ValueError, match="int32"):
        multiply_by_quantized_multiplier(np.int64(1 << 31), TWO30, 0)
    with pytest.raises(ValueError, match="integer"):
        multiply_by_quantized_multiplier(np.array([1.5]), TWO30, 0)
    with pytest.raises(ValueError, match="last"):
        multiply_by_quantized_multiplier(np.zeros((2, 3), np.int32), np.full(2, TWO30), 0)


# --------------------------------------------------------------------------------------------
# requantize
# --------------------------------------------------------------------------------------------


def test_requantize_hand_worked():
    # real 0.25 -> (2^30, -1); acc 6 -> 2 (1.5 away from zero), + zp 10 -> 12;
    # acc -6 -> -2 + 10 = 8; acc 1000 -> 250 + 10 = 260 -> clamped to 255 (uint8)
    acc = np.array([6, -6, 1000, -1000], dtype=np.int32)
    out = requantize(acc, TWO30, -1, 10, None, None, np.uint8)
    assert out.dtype == np.uint8
    assert out.tolist() == [12, 8, 255, 0]
    # fused ReLU: qmin = zero point -> negatives become the zero point
    out = requantize(acc, TWO30, -1, 10, 10, 255, np.uint8)
    assert out.tolist() == [12, 10, 255, 10]
    # int8 with zp -5: 2-5, -2-5, 250-5 -> 127, -250-5 -> -128
    out = requantize(acc, TWO30, -1, -5, None, None, np.int8)
    assert out.dtype == np.int8
    assert out.tolist() == [-3, -7, 127, -128]


@pytest.mark.parametrize("dtype, zp", [(np.uint8, 128), (np.uint8, 3), (np.int8, 0), (np.int8, -17)])
def test_requantize_against_float(dtype, zp):
    rng = np.random.default_rng(2)
    channels = 16
    reals = rng.uniform(1e-4, 2e-2, size=channels)
    mult, shift = quantize_multiplier(reals)
    acc = rng.integers(-40000, 40000, size=(4, 5, 5, channels)).astype(np.int32)
    lo, hi = int_dtype_range(dtype)
    got = requantize(acc, mult, shift, zp, None, None, dtype)
    want = np.clip(np.round(acc * reals) + zp, lo, hi)
    assert got.dtype == np.dtype(dtype)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1
    # the values do span the range, so the clamp was exercised
    assert got.min() == lo or got.max() == hi
    relu = requantize(acc, mult, shift, zp, zp, None, dtype)
    assert relu.min() >= zp
    assert np.array_equal(relu, np.maximum(got, np.array(zp, dtype)))


def test_requantize_variant_is_passed_through():
    # acc -6, real 0.25 (2^30, -1), zp 0: reference -1.5 -> -2, ruy -> -1
    acc = np.array([-6], np.int32)
    assert requantize(acc, TWO30, -1, 0, None, None, np.int8).tolist() == [-2]
    assert requantize(acc, TWO30, -1, 0, None, None, np.int8, variant="ruy").tolist() == [-1]


def test_requantize_fp32_hand_worked():
    # scale 0.25 (exact in float32): 6 -> 1.5 -> 2 (half even), 10 -> 2.5 -> 2 (half even),
    # -6 -> -1.5 -> -2, -10 -> -2.5 -> -2, 7 -> 1.75 -> 2; + zp 10; 2000 -> 500 saturates at 255,
    # -2000 -> -500 saturates at 0
    acc = np.array([6, 10, -6, -10, 7, 2000, -2000], np.int32)
    out = requantize_fp32(acc, np.float32(0.25), 10, None, None, np.uint8)
    assert out.dtype == np.uint8
    assert out.tolist() == [12, 12, 8, 8, 12, 255, 0]
    # the fixed-point reference rounds 10 * 0.25 = 2.5 away from zero instead: 3 + 10 = 13
    assert requantize(acc, TWO30, -1, 10, None, None, np.uint8).tolist()[1] == 13
    # fused ReLU and int8
    relu = requantize_fp32(acc, np.float32(0.25), -3, -3, None, np.int8)
    assert relu.tolist() == [-1, -1, -3, -3, -1, 127, -3]
    # float(acc) is a float32 conversion: 2^24 + 1 is not representable and becomes 2^24, so with
    # scale 2^-25 the product is exactly 0.5 -> 0 (half even), although the exact value
    # (2^24 + 1) * 2^-25 = 0.50000003 would round to 1.
    big = np.array([(1 << 24) + 1], np.int32)
    assert requantize_fp32(big, np.float32(2.0**-25), 0, None, None, np.int8).tolist() == [0]


def test_requantize_fp32_per_channel_and_against_fixed_point():
    rng = np.random.default_rng(12)
    xs, ys = np.float32(0.02), np.float32(0.05)
    ws = rng.uniform(0.001, 0.01, 32).astype(np.float32)
    acc = rng.integers(-60000, 60000, size=(3, 7, 7, 32)).astype(np.int32)
    fp = requantize_fp32(acc, xs * ws / ys, 5, None, None, np.int8)
    q, sh = quantize_multiplier(np.float64(xs) * ws.astype(np.float64) / np.float64(ys))
    fx = requantize(acc, q, sh, 5, None, None, np.int8)
    assert np.abs(fp.astype(np.int64) - fx).max() <= 1
    want = np.clip(np.rint(acc.astype(np.float32) * (xs * ws / ys)) + 5, -128, 127)
    assert np.array_equal(fp, want)
    with pytest.raises(ValueError, match="last"):
        requantize_fp32(acc, np.ones(3, np.float32), 0, None, None, np.int8)
    with pytest.raises(ValueError, match="floating"):
        requantize_fp32(acc, 1, 0, None, None, np.int8)
    with pytest.raises(ValueError, match="positive"):
        requantize_fp32(acc, np.float32(-1.0), 0, None, None, np.int8)
    with pytest.raises(ValueError, match="qmin"):
        requantize_fp32(acc, np.float32(1.0), 0, 5, 4, np.int8)


def test_requantize_errors():
    acc = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="out_zero_point"):
        requantize(acc, TWO30, 0, 300, None, None, np.uint8)
    with pytest.raises(ValueError, match="qmin"):
        requantize(acc, TWO30, 0, 0, 10, 5, np.uint8)
    with pytest.raises(ValueError, match="qmin"):
        requantize(acc, TWO30, 0, 0, -1, 5, np.uint8)


# --------------------------------------------------------------------------------------------
# conv2d_accumulate
# --------------------------------------------------------------------------------------------


def naive_conv(x, zp, w, bias, stride, padding):
    """Python-int loop, written from the definition."""
    top, bottom, left, right = padding
    n_b, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    oh = (h + top + bottom - kh) // stride + 1
    ow = (wd + left + right - kw) // stride + 1
    out = np.zeros((n_b, oh, ow, o), dtype=np.int64)
    xl = x.astype(np.int64).tolist()
    wl = w.astype(np.int64).tolist()
    for n in range(n_b):
        for i in range(oh):
            for j in range(ow):
                for oc in range(o):
                    total = 0 if bias is None else int(bias[oc])
                    for a in range(kh):
                        for b in range(kw):
                            r = i * stride + a - top
                            col = j * stride + b - left
                            for ci in range(c):
                                if 0 <= r < h and 0 <= col < wd:
                                    v = xl[n][r][col][ci]
                                else:
                                    v = zp  # padding holds the zero point
                                total += (v - zp) * wl[oc][a][b][ci]
                    out[n, i, j, oc] = total
    return out


CONV_CASES = [
    # (kernel, stride, padding, H, W)
    (3, 1, (0, 0, 0, 0), 6, 5),
    (3, 1, (1, 1, 1, 1), 5, 5),
    (3, 2, (0, 0, 0, 0), 7, 7),
    (3, 2, (0, 1, 0, 1), 6, 6),  # TFLite SAME for even input, stride 2: extra pad bottom/right
    (2, 3, (2, 0, 1, 3), 6, 7),
    (7, 2, (0, 0, 0, 0), 11, 9),  # SqueezeNet 1.0 conv1 shape class
    (1, 1, (0, 0, 0, 0), 4, 5),
    (1, 2, (0, 0, 0, 0), 5, 5),
    (1, 1, (1, 0, 0, 1), 3, 3),  # 1x1 with padding: general path
]


@pytest.mark.parametrize("kernel, stride, padding, h, w", CONV_CASES)
@pytest.mark.parametrize("dtype, zp", [(np.uint8, 0), (np.uint8, 131), (np.int8, -7), (np.int8, 127)])
def test_conv_matches_naive_loop(kernel, stride, padding, h, w, dtype, zp):
    rng = np.random.default_rng(hash((kernel, stride, padding, h, w, zp)) % 2**32)
    lo, hi = int_dtype_range(dtype)
    x = rng.integers(lo, hi, size=(2, h, w, 3), endpoint=True).astype(dtype)
    wq = rng.integers(-128, 127, size=(4, kernel, kernel, 3), endpoint=True).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=4).astype(np.int32)
    got = conv2d_accumulate(x, zp, wq, bias, stride=stride, padding=padding)
    want = naive_conv(x, zp, wq, bias, stride, padding)
    assert got.dtype == np.int32
    assert got.shape == want.shape
    assert np.array_equal(got, want)


def test_conv_without_bias_and_rectangular_kernel():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 255, size=(1, 6, 7, 2), endpoint=True).astype(np.uint8)
    wq = rng.integers(-128, 127, size=(3, 2, 3, 2), endpoint=True).astype(np.int8)
    got = conv2d_accumulate(x, 100, wq, None, stride=1, padding=(1, 0, 0, 2))
    assert np.array_equal(got, naive_conv(x, 100, wq, None, 1, (1, 0, 0, 2)))


def test_conv_padding_value_is_zero_point():
    # All-ones weight 3x3 on a 1x1 input of value 7 with zp 7 and padding 1: every tap is
    # (7 - 7) or padding (zp - zp) = 0, so the result is exactly the bias.
    x = np.full((1, 1, 1, 1), 7, np.uint8)
    wq = np.ones((1, 3, 3, 1), np.int8)
    out = conv2d_accumulate(x, 7, wq, np.array([42], np.int32), stride=1, padding=(1, 1, 1, 1))
    assert out.tolist() == [[[[42]]]]
    # with zp 0 instead, only the centre tap contributes 7
    out = conv2d_accumulate(x, 0, wq, np.array([42], np.int32), stride=1, padding=(1, 1, 1, 1))
    assert out.tolist() == [[[[49]]]]


def test_conv_1x1_fast_path_equals_general_path():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 127, size=(3, 5, 6, 8), endpoint=True).astype(np.int8)
    wq = rng.integers(-128, 127, size=(10, 1, 1, 8), endpoint=True).astype(np.int8)
    xf = x.astype(np.float64) - (-3)
    for stride in (1, 2):
        oh, ow = (5 - 1) // stride + 1, (6 - 1) // stride + 1
        fast = K._cols_1x1(xf, stride)
        general = K._cols_im2col(xf, 1, 1, stride, (0, 0, 0, 0), oh, ow)
        assert np.array_equal(fast, general)
        out = conv2d_accumulate(x, -3, wq, None, stride=stride, padding=(0, 0, 0, 0))
        assert out.shape == (3, oh, ow, 10)
        # the 1x1 conv is a matmul over channels
        ref = np.einsum("nhwc,oc->nhwo", (x.astype(np.int64) + 3)[:, ::stride, ::stride], wq[:, 0, 0].astype(np.int64))
        assert np.array_equal(out, ref)


def test_conv_worst_case_magnitudes_are_exact():
    # SqueezeNet's largest K = 3*3*512 = 4608 with every product at its extreme 255 * -128:
    # 4608 * -32640 = -150405120, plus bias; float64 must give it exactly.
    x = np.full((1, 3, 3, 512), 255, np.uint8)
    wq = np.full((2, 3, 3, 512), -128, np.int8)
    wq[1] = 127
    bias = np.array([-7, 3], np.int32)
    out = conv2d_accumulate(x, 0, wq, bias, stride=1, padding=(0, 0, 0, 0))
    assert out.tolist() == [[[[4608 * 255 * -128 - 7, 4608 * 255 * 127 + 3]]]]
    # and a random large-K case against int64 einsum
    rng = np.random.default_rng(7)
    x = rng.integers(0, 255, size=(2, 6, 6, 512), endpoint=True).astype(np.uint8)
    wq = rng.integers(-128, 127, size=(5, 3, 3, 512), endpoint=True).astype(np.int8)
    out = conv2d_accumulate(x, 200, wq, None, stride=1, padding=(1, 1, 1, 1))
    xp = np.pad(x.astype(np.int64) - 200, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 6, 6, 5), np.int64)
    for a in range(3):
        for b in range(3):
            ref += np.einsum("nhwc,oc->nhwo", xp[:, a : a + 6, b : b + 6], wq[:, a, b].astype(np.int64))
    assert np.array_equal(out, ref)


def test_conv_batch_chunking_matches_single_images(monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.integers(0, 255, size=(5, 9, 9, 4), endpoint=True).astype(np.uint8)
    wq = rng.integers(-128, 127, size=(6, 3, 3, 4), endpoint=True).astype(np.int8)
    whole = conv2d_accumulate(x, 17, wq, None, stride=2, padding=(1, 1, 1, 1))
    monkeypatch.setattr(K, "_COL_BUDGET_ELEMENTS", 1)  # forces one image per chunk
    chunked = conv2d_accumulate(x, 17, wq, None, stride=2, padding=(1, 1, 1, 1))
    assert np.array_equal(whole, chunked)
    for n in range(5):
        single = conv2d_accumulate(x[n : n + 1], 17, wq, None, stride=2, padding=(1, 1, 1, 1))
        assert np.array_equal(single[0], whole[n])


def test_conv_exactness_bound_is_enforced():
    # int32 inputs with zp 0 (|x - zp| <= 2^31) and int16 weights (|w| <= 2^15): 2^46 per
    # product, so K = 200 > 2^7 terms could exceed 2^53
    x = np.zeros((1, 1, 1, 200), np.int32)
    wq = np.ones((1, 1, 1, 200), np.int16)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        conv2d_accumulate(x, 0, wq, None, stride=1, padding=(0, 0, 0, 0))
    # K = 128 terms is exactly at the limit (128 * 2^46 = 2^53) and still allowed
    out = conv2d_accumulate(x[..., :128], 0, wq[..., :128], None, stride=1, padding=(0, 0, 0, 0))
    assert out.tolist() == [[[[0]]]]


def test_conv_int32_overflow_is_reported():
    x = np.full((1, 1, 1, 1), 255, np.uint8)
    wq = np.full((1, 1, 1, 1), 127, np.int8)
    with pytest.raises(ValueError, match="int32"):
        conv2d_accumulate(x, 0, wq, np.array([INT32_MAX], np.int32), stride=1, padding=(0, 0, 0, 0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stride=0, padding=(0, 0, 0, 0)), "stride"),
        (dict(stride=1.0, padding=(0, 0, 0, 0)), "stride"),
        (dict(stride=1, padding=(0, 0, 0)), "padding"),
        (dict(stride=1, padding=(0, -1, 0, 0)), "padding"),
    ],
)
def test_conv_bad_options(kwargs, match):
    x = np.zeros((1, 4, 4, 2), np.uint8)
    wq = np.zeros((3, 3, 3, 2), np.int8)
    with pytest.raises(ValueError, match=match):
        conv2d_accumulate(x, 0, wq, None, **kwargs)


def test_conv_bad_tensors():
    x = np.zeros((1, 4, 4, 2), np.uint8)
    wq = np.zeros((3, 3, 3, 2), np.int8)
    ok = dict(stride=1, padding=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="input channels"):
        conv2d_accumulate(x, 0, np.zeros((3, 3, 3, 5), np.int8), None, **ok)
    with pytest.raises(ValueError, match="NHWC"):
        conv2d_accumulate(x[0], 0, wq, None, **ok)
    with pytest.raises(ValueError, match="integer"):
        conv2d_accumulate(x.astype(np.float32), 0, wq, None, **ok)
    with pytest.raises(ValueError, match="x_zero_point"):
        conv2d_accumulate(x, 256, wq, None, **ok)
    with pytest.raises(ValueError, match="x_zero_point"):
        conv2d_accumulate(x, 0.5, wq, None, **ok)
    with pytest.raises(ValueError, match="bias_q"):
        conv2d_accumulate(x, 0, wq, np.zeros(2, np.int32), **ok)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_accumulate(x[:, :2], 0, wq, None, **ok)


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, kernel, stride, ceil_mode, pad, expected",
    [
        # SqueezeNet max pools, k=3 s=2 ceil: ceil((111-3)/2)+1 = 54+1 = 55
        (111, 3, 2, True, 0, 55),
        (55, 3, 2, True, 0, 27),  # ceil(52/2)+1 = 27
        (27, 3, 2, True, 0, 13),  # ceil(24/2)+1 = 13
        (113, 3, 2, True, 0, 56),  # SqueezeNet 1.1 conv1 output: ceil(110/2)+1
        (111, 3, 2, False, 0, 55),  # same as floor when (size-k) is even
        # 6, k=3, s=2: ceil(3/2)+1 = 3 (last window starts at 4 < 6, covers 4,5 + 1 past edge),
        # floor(3/2)+1 = 2
        (6, 3, 2, True, 0, 3),
        (6, 3, 2, False, 0, 2),
        # kernel < stride: ceil(4/3)+1 = 3 but the 3rd window would start at 6 >= 5: dropped
        (5, 1, 3, True, 0, 2),
        # with padding 1: ceil((5+2-2)/2)+1 = 4, 4th window starts at 6 >= 5+1: dropped -> 3
        (5, 2, 2, True, 1, 3),
        # input smaller than the kernel in ceil mode: one partial window
        (2, 3, 2, True, 0, 1),
    ],
)
def test_pool_output_size(size, kernel, stride, ceil_mode, pad, expected):
    assert pool_output_size(size, kernel, stride, ceil_mode, pad) == expected


def test_pool_output_size_errors():
    with pytest.raises(ValueError, match="no output"):
        pool_output_size(2, 3, 2, False)
    with pytest.raises(ValueError, match="pad"):
        pool_output_size(10, 3, 2, True, pad=2)
    with pytest.raises(ValueError, match="stride"):
        pool_output_size(10, 3, 0, True)


def naive_max_pool(x, kernel, stride, out_h, out_w):
    n_b, h, w, c = x.shape
    out = np.zeros((n_b, out_h, out_w, c), dtype=x.dtype)
    for n in range(n_b):
        for i in range(out_h):
            for j in range(out_w):
                for ch in range(c):
                    vals = [
                        int(x[n, r, col, ch])
                        for r in range(i * stride, min(i * stride + kernel, h))
                        for col in range(j * stride, min(j * stride + kernel, w))
                    ]
                    out[n, i, j, ch] = max(vals)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("h, w, kernel, stride", [(6, 6, 3, 2), (7, 8, 3, 2), (13, 13, 3, 2), (5, 7, 2, 2), (9, 6, 3, 3)])
def test_max_pool_matches_naive(dtype, ceil_mode, h, w, kernel, stride):
    rng = np.random.default_rng(h * 100 + w)
    lo, hi = int_dtype_range(dtype)
    x = rng.integers(lo, hi, size=(2, h, w, 3), endpoint=True).astype(dtype)
    out = max_pool(x, kernel=kernel, stride=stride, ceil_mode=ceil_mode)
    oh = pool_output_size(h, kernel, stride, ceil_mode)
    ow = pool_output_size(w, kernel, stride, ceil_mode)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == (2, oh, ow, 3)
    assert np.array_equal(out, naive_max_pool(x, kernel, stride, oh, ow))


def test_max_pool_partial_window_ignores_the_edge():
    # 1x6 row (as 6x1 column) of negative int8 values; ceil mode k=3 s=2 gives 3 windows:
    # [0:3] -> max(-50,-40,-30) = -30, [2:5] -> max(-30,-20,-10) = -10, [4:6] (partial) ->
    # max(-10, -60) = -10. Padding with 0 instead of "nothing" would wrongly give 0.
    # (The width is 3 so that it holds one full window: out width = (3-3)/2 + 1 = 1.)
    col = np.array([-50, -40, -30, -20, -10, -60], np.int8).reshape(1, 6, 1, 1)
    col = np.repeat(col, 3, axis=2)
    out = max_pool(col, kernel=3, stride=2, ceil_mode=True)
    assert out.shape == (1, 3, 1, 1)
    assert out.reshape(-1).tolist() == [-30, -10, -10]
    # floor mode drops the partial window
    out = max_pool(col, kernel=3, stride=2, ceil_mode=False)
    assert out.reshape(-1).tolist() == [-30, -10]


def test_max_pool_squeezenet_sizes():
    x = np.zeros((1, 111, 111, 2), np.uint8)
    for size in (55, 27, 13):
        x = max_pool(x, kernel=3, stride=2, ceil_mode=True)
        assert x.shape == (1, size, size, 2)


def test_max_pool_errors():
    with pytest.raises(ValueError, match="integer"):
        max_pool(np.zeros((1, 4, 4, 1), np.float32), kernel=2, stride=2, ceil_mode=False)
    with pytest.raises(ValueError, match="NHWC"):
        max_pool(np.zeros((4, 4, 1), np.uint8), kernel=2, stride=2, ceil_mode=False)
    with pytest.raises(ValueError, match="kernel"):
        max_pool(np.zeros((1, 4, 4, 1), np.uint8), kernel=0, stride=2, ceil_mode=False)


# --------------------------------------------------------------------------------------------
# rounding_divide
# --------------------------------------------------------------------------------------------


def test_rounding_divide_hand_worked():
    num = np.array([5, -5, 3, -3, 7, 8, -8, 0, 4, 5, -4, -5, 1, -1])
    den = np.array([2, 2, 2, 2, 3, 3, 3, 3, 9, 9, 9, 9, 2, 2])
    # 2.5 -> 3, -2.5 -> -3, 1.5 -> 2, -1.5 -> -2, 2.33 -> 2, 2.67 -> 3, -2.67 -> -3, 0,
    # 0.44 -> 0, 0.56 -> 1, -0.44 -> 0, -0.56 -> -1, 0.5 -> 1, -0.5 -> -1
    assert rounding_divide(num, den).tolist() == [3, -3, 2, -2, 2, 3, -3, 0, 0, 1, 0, -1, 1, -1]


def test_rounding_divide_matches_c_formula():
    def c_div(a, b):  # C '/' truncates toward zero
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q

    rng = np.random.default_rng(9)
    num = rng.integers(-10**6, 10**6, size=2000)
    den = rng.integers(1, 50, size=2000)
    got = rounding_divide(num, den)
    for a, b, g in zip(num.tolist(), den.tolist(), got.tolist()):
        want = c_div(a + b // 2, b) if a > 0 else c_div(a - b // 2, b)
        assert g == want


def test_rounding_divide_broadcast_and_errors():
    assert rounding_divide(np.array([[9, -9], [10, -10]]), 4).tolist() == [[2, -2], [3, -3]]
    with pytest.raises(ValueError, match="positive"):
        rounding_divide(5, 0)
    with pytest.raises(ValueError, match="positive"):
        rounding_divide(np.array([5, 5]), np.array([2, -2]))
    with pytest.raises(ValueError, match="integer"):
        rounding_divide(np.array([2.5]), 2)


# --------------------------------------------------------------------------------------------
# quantize / dequantize
# --------------------------------------------------------------------------------------------


def test_quantize_rounding_modes():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994], np.float64)
    even = quantize(x, 1.0, 0, np.int8)
    away = quantize(x, 1.0, 0, np.int8, rounding="half_away")
    assert even.dtype == np.int8 and away.dtype == np.int8
    assert even.tolist() == [0, 2, 2, 0, -2, -2, 0]
    # std::round; the last value is just below 0.5 (a naive floor(x + 0.5) would give 1)
    assert away.tolist() == [1, 2, 3, -1, -2, -3, 0]


def test_quantize_scale_zero_point_and_saturation():
    # scale 0.1 (float32 0.100000001...), zp 128: 0.25/0.1 = 2.4999999627 -> 2 + 128 = 130;
    # 1.0/0.1 = 9.99999985 -> 10 + 128; 100 -> 1000 + 128 saturates to 255; -100 -> 0; inf -> 255
    x = np.array([0.25, 1.0, 100.0, -100.0, np.inf, -np.inf], np.float32)
    assert quantize(x, 0.1, 128, np.uint8).tolist() == [130, 138, 255, 0, 255, 0]
    assert quantize(x, 0.1, -1, np.int8).tolist() == [1, 9, 127, -128, 127, -128]


def test_quantize_per_channel_axis():
    x = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], np.float32)
    scale = np.array([0.5, 0.25, 1.0 / 64])
    q = quantize(x, scale, 0, np.int8, axis=1)
    # 1/0.5 = 2, 1/0.25 = 4, 1/(1/64) = 64; negatives mirror
    assert q.tolist() == [[2, 4, 64], [-2, -4, -64]]
    q0 = quantize(x, np.array([0.5, 0.25]), np.array([1, -1]), np.int8, axis=0)
    assert q0.tolist() == [[3, 3, 3], [-5, -5, -5]]
    back = dequantize(q, scale, 0, axis=-1)
    assert back.dtype == np.float32
    assert np.array_equal(back, x)


def test_dequantize_values_and_round_trip():
    q = np.array([0, 128, 255], np.uint8)
    out = dequantize(q, 0.5, 128)
    assert out.tolist() == [-64.0, 0.0, 63.5]
    rng = np.random.default_rng(10)
    x = rng.uniform(-3, 3, size=1000).astype(np.float32)
    scale = np.float32(6 / 255)
    q = quantize(x, scale, 127, np.uint8)
    err = np.abs(dequantize(q, scale, 127) - x)
    assert err.max() <= scale / 2 * (1 + 1e-5)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
def test_dequantize_of_8_and_16_bit_tensors_is_the_float64_products_rounding(dtype):
    """8/16-bit tensors dequantize in float32 alone; every value must be the exact product
    (q - zp) * float32(scale) rounded once to float32, bit for bit, per tensor and per channel,
    scales drawn over many binades (including ones whose products round)."""
    rng = np.random.default_rng(11)
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max, size=(7, 5, 4, 6), endpoint=True).astype(dtype)
    for axis, n in ((None, 1), (3, 6), (0, 7)):
        scale = np.float32(2.0) ** rng.uniform(-40, 20, n) * rng.uniform(1, 2, n)
        zp = rng.integers(info.min // 2, info.max // 2, n, endpoint=True)
        if axis is None:
            scale, zp = scale[0], zp[0]
        shape = [1] * q.ndim
        if axis is not None:
            shape[axis] = n
        exact = (q.astype(np.int64) - np.reshape(zp, shape)).astype(np.float64)
        want = (exact * np.reshape(np.asarray(scale, np.float32).astype(np.float64), shape)).astype(np.float32)
        got = dequantize(q, scale, zp, axis=axis)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_quantize_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), 1.0, 0, np.int8)
    with pytest.raises(ValueError, match="scale"):
        quantize(x, 0.0, 0, np.int8)
    with pytest.raises(ValueError, match="scale"):
        quantize(x, -1.0, 0, np.int8)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, 1.0, 200, np.int8)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, 1.0, 0.5, np.int8)
    with pytest.raises(ValueError, match="rounding"):
        quantize(x, 1.0, 0, np.int8, rounding="nearest")
    with pytest.raises(ValueError, match="axis"):
        quantize(x, np.array([1.0, 2.0, 3.0]), 0, np.int8)
    with pytest.raises(ValueError, match="entries"):
        quantize(x, np.array([1.0, 2.0]), 0, np.int8, axis=0)
    with pytest.raises(ValueError, match="integer dtype"):
        quantize(x, 1.0, 0, np.float16)
    with pytest.raises(ValueError, match="float"):
        dequantize(np.zeros(2, np.int8), 1.0, 0, dtype=np.int32)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, edgesqueeze.quant.kernels; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
