"""Quantizer and integer reference on a tiny SqueezeNet built in code (no shared data)."""

import math
from dataclasses import replace

import numpy as np
import pytest

from edgesqueeze.arch import Preprocess, metaparameter_arch, squeezenet1_0_arch
from edgesqueeze.errors import DataError, OptionError, WeightsError
from edgesqueeze.graph import INPUT, OpKind, lower
from edgesqueeze.quant import kernels
from edgesqueeze.quant.params import QuantizedModel, Scheme
from edgesqueeze.quant.quantize import (
    INPUT_QPARAMS,
    affine_qparams,
    fold_input_normalization,
    power_of_two_qparams,
    quantize_model,
)
from edgesqueeze.quant.reference import Requant, run_int8

PRE = Preprocess(style="caffe", channel_order="BGR", resize=(40, 40), crop=35, mean=(104.0, 117.0, 123.0),
                 std=(58.0, 57.0, 57.5))


def tiny_arch(**kw):
    a = metaparameter_arch(base_e=16, incr_e=16, sr=0.25, num_classes=10, **kw)
    return replace(a, preprocess=PRE, final_pad=1)


def tiny_params(arch, seed=0):
    rng = np.random.default_rng(seed)
    p = {}
    for c in arch.convs():
        fan_in = c.in_channels * c.kernel * c.kernel
        w = rng.standard_normal((c.out_channels, c.in_channels, c.kernel, c.kernel)) * math.sqrt(2 / fan_in)
        p[c.name] = (w.astype(np.float32), (rng.standard_normal(c.out_channels) * 0.1).astype(np.float32))
    return p


def smooth_pixels(rng, n: int, *, noise: float = 0.0) -> np.ndarray:
    """uint8 (n, 35, 35, 3) images for tiny_arch: a random 5x5 grid upsampled 7x (so neighbouring
    pixels and the activations after them are correlated, as in photos), plus optional Gaussian
    noise of standard deviation `noise`."""
    coarse = rng.integers(0, 256, (n, 5, 5, 3)).astype(np.float64)
    x = np.kron(coarse, np.ones((1, 7, 7, 1)))
    if noise:
        x = x + rng.normal(0, noise, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def conv_f(x, w, b, stride, pad):
    """Float conv, NHWC x, OIHW w, float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ocij->nhwo", win, w) + b


def max_pool_f(x, ceil_mode):
    """3x3/2 float max pool, ceil mode by padding the far edge with -inf."""
    h = x.shape[1]
    out = kernels.pool_output_size(h, 3, 2, ceil_mode)
    extra = max((out - 1) * 2 + 3 - h, 0)
    x = np.pad(x, ((0, 0), (0, extra), (0, extra), (0, 0)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return win.max(axis=(-2, -1))[:, :out, :out]


def float_forward(arch, params, pixels, *, fake_quant: QuantizedModel | None = None, taps=None):
    """FP32 graph in numpy on normalised input; with `fake_quant`, every tensor is rounded to its
    int8 grid (quantize -> dequantize) and weights/biases are the dequantized int ones."""
    pre = arch.preprocess
    env = {INPUT: (pixels.astype(np.float64) - np.array(pre.mean)) / np.array(pre.std)}
    if fake_quant is not None:
        env[INPUT] = pixels.astype(np.float64)  # folded: raw pixels
    for n in lower(arch):
        if n.kind is OpKind.CONV:
            if fake_quant is not None:
                c = fake_quant.convs[n.name]
                w = c.weight.transpose(0, 3, 1, 2).astype(np.float64) * c.weight_scale[:, None, None, None]
                b = c.bias.astype(np.float64) * np.float32(fake_quant.tensors[c.input].scale) * c.weight_scale
            else:
                w, b = (a.astype(np.float64) for a in params[n.name])
            y = conv_f(env[n.inputs[0]], w, b, n.conv.stride, n.conv.pad)
            env[n.name] = np.maximum(y, 0) if n.relu else y
        elif n.kind is OpKind.MAXPOOL:
            env[n.name] = max_pool_f(env[n.inputs[0]], n.ceil_mode)
        elif n.kind is OpKind.CONCAT:
            env[n.name] = np.concatenate([env[i] for i in n.inputs], -1)
        elif n.kind is OpKind.ADD:
            env[n.name] = env[n.inputs[0]] + env[n.inputs[1]]
        elif n.kind is OpKind.MEAN:
            env[n.name] = env[n.inputs[0]].mean(axis=(1, 2))
            continue
        if fake_quant is not None:
            q = fake_quant.tensors[n.name]
            env[n.name] = kernels.dequantize(kernels.quantize(env[n.name], q.scale, q.zero_point, np.int8), q.scale, q.zero_point).astype(np.float64)
        if taps is not None:
            taps[n.name] = env[n.name]
    return env


def minmax_ranges(arch, params, pixels):
    taps = {}
    float_forward(arch, params, pixels, taps=taps)
    return {k: (float(v.min()), float(v.max())) for k, v in taps.items() if k != "logits"}


def tiny_case(seed: int = 1):
    """(tiny arch, its params, min/max ranges on 6 random calibration images, 4 other test images)."""
    arch = tiny_arch()
    params = tiny_params(arch)
    rng = np.random.default_rng(seed)
    calib = rng.integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (4, 35, 35, 3), dtype=np.uint8)
    return arch, params, minmax_ranges(arch, params, calib), test


@pytest.fixture(scope="module")
def tiny():
    return tiny_case()


def test_input_folding_is_exact(tiny):
    arch, params, _, pixels = tiny
    w, b = params["conv1"]
    wf, bf = fold_input_normalization(arch, w, b)
    pre = arch.preprocess
    normed = (pixels - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(conv_f(pixels.astype(np.float64), wf, bf, 2, 0),
                               conv_f(normed, w.astype(np.float64), b.astype(np.float64), 2, 0), rtol=1e-9, atol=1e-9)


def test_input_folding_refuses_padded_conv1(tiny):
    arch, params, _, _ = tiny
    padded = replace(arch, conv1=replace(arch.conv1, pad=1))
    with pytest.raises(OptionError, match="padding"):
        fold_input_normalization(padded, *params["conv1"])


def test_affine_qparams():
    q = affine_qparams(0.0, 2.55)  # ReLU output: zero point at the bottom of int8
    assert q.zero_point == -128 and q.scale == pytest.approx(0.01)
    q = affine_qparams(-1.0, 1.0)
    lo, hi = q.range()
    assert lo <= -0.99 and hi >= 0.99 and q.zero_point in (-1, 0)
    q = affine_qparams(0.0, 0.0)  # degenerate: never a zero scale
    assert q.scale > 0 and math.isfinite(q.scale)


def test_power_of_two_qparams():
    q = power_of_two_qparams(0.0, 5.0)  # |x| < 8 = 2**3: il = 3 + 1 sign bit, fl = 4
    assert (q.scale, q.zero_point, q.fractional_length) == (2.0**-4, 0, 4)
    # max|x| = 0.3: ceil(log2 0.3) = -1, il = -1 + 1 = 0, fl = 8: step 1/256, top 127/256 = 0.496
    assert power_of_two_qparams(-0.3, 0.2).fractional_length == 8


def test_quantized_model_structure(tiny):
    arch, params, ranges, _ = tiny
    qm = quantize_model(arch, params, ranges)
    assert qm.tensors[INPUT] == INPUT_QPARAMS
    for n in lower(arch):
        if n.kind is OpKind.CONCAT:
            assert all(qm.tensors[i] == qm.tensors[n.name] for i in n.inputs)
        if n.kind is OpKind.MAXPOOL:
            assert qm.tensors[n.name] == qm.tensors[n.inputs[0]]
        if n.kind is OpKind.CONV and n.relu:
            assert qm.tensors[n.name].zero_point == -128  # [0, max]: zero at the bottom
    for c in qm.convs.values():
        assert c.weight.dtype == np.int8 and np.abs(c.weight.astype(int)).max() == 127
        assert c.bias.dtype == np.int32
        assert all(float(np.float32(s)) == float(s) for s in c.weight_scale)


def test_zero_weight_channel_gets_a_usable_scale(tiny):
    arch, params, ranges, pixels = tiny
    p = dict(params)
    w, b = p["fire3.expand1x1"]
    w = w.copy()
    w[2] = 0.0
    p["fire3.expand1x1"] = (w, b)
    qm = quantize_model(arch, p, ranges)
    c = qm.convs["fire3.expand1x1"]
    assert np.isfinite(c.weight_scale).all() and c.weight_scale[2] == c.weight_scale.max()
    assert not c.weight[2].any()
    out = run_int8(qm, pixels, keep=True).tensors["fire3.expand1x1"]
    t = qm.tensors["fire3.expand1x1"]
    want = kernels.quantize(max(float(b[2]), 0.0), t.scale, t.zero_point, np.int8)
    assert np.abs(out[..., 2].astype(int) - int(want)).max() <= 1  # the channel outputs relu(bias)


@pytest.mark.parametrize("scheme", list(Scheme))
def test_reference_matches_fake_quant_layer_by_layer(tiny, scheme):
    """Each int8 layer, fed the reference's own int8 input, equals the float fake-quant layer
    to within 1 LSB (the float path rounds once, the runtime rounds in float32)."""
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme=scheme)
    run = run_int8(qm, pixels, keep=True)
    worst = 0
    for n in lower(arch):
        if n.kind is not OpKind.CONV:
            continue
        c = qm.convs[n.name]
        x_real = kernels.dequantize(run.tensors[c.input], qm.tensors[c.input].scale, qm.tensors[c.input].zero_point).astype(np.float64)
        w = c.weight.transpose(0, 3, 1, 2).astype(np.float64) * c.weight_scale[:, None, None, None]
        b = c.bias * (np.float64(np.float32(qm.tensors[c.input].scale)) * c.weight_scale.astype(np.float64))
        y = conv_f(x_real, w, b, n.conv.stride, n.conv.pad)
        y = np.maximum(y, 0) if n.relu else y
        o = qm.tensors[n.name]
        want = kernels.quantize(y, o.scale, o.zero_point, np.int8).astype(int)
        diff = np.abs(run.tensors[n.name].astype(int) - want)
        worst = max(worst, int(diff.max()))
        assert (diff == 0).mean() > 0.99, n.name
    assert worst <= 1


@pytest.mark.parametrize("scheme", list(Scheme))
def test_reference_logits_close_to_fake_quant_and_fp32(tiny, scheme):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme=scheme)
    got = run_int8(qm, pixels).logits.astype(np.float64)
    fq = float_forward(arch, params, pixels, fake_quant=qm)["logits"]
    fp = float_forward(arch, params, pixels)["logits"]
    step = qm.tensors["conv10"].scale
    assert np.abs(got - fq).max() <= 4 * step  # a few LSB of conv10 after 26 layers
    rel = np.abs(got - fp).max() / np.abs(fp).max()
    assert rel < (0.05 if scheme is Scheme.AFFINE else 0.15)


def test_fixed_point_and_float32_requant_within_one_lsb_per_layer(tiny):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges)
    a = run_int8(qm, pixels, keep=True, requant=Requant.FLOAT32).tensors
    b = run_int8(qm, pixels, keep=True, requant="fixed-point").tensors
    # the first layer sees identical input, so the two requantizations differ by <= 1 there
    assert np.abs(a["conv1"].astype(int) - b["conv1"].astype(int)).max() <= 1
    assert (a["conv10"] == b["conv10"]).mean() > 0.95


def test_ristretto_requantization_is_a_shift(tiny):
    arch, params, ranges, _ = tiny
    qm = quantize_model(arch, params, ranges, scheme=Scheme.RISTRETTO)
    for name, c in qm.convs.items():
        assert len(set(c.weight_scale.tolist())) == 1, name  # one scale per layer
        m = c.real_multiplier(qm.tensors)
        frac, _ = np.frexp(m.astype(np.float64))
        assert (frac == 0.5).all(), name  # s_in * s_w / s_out is a power of two
    for name, q in qm.tensors.items():
        assert q.fractional_length is not None, name


def test_save_load_roundtrip(tiny, tmp_path):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme="ristretto", labels=tuple("abcdefghij"),
                        calibration={"method": "minmax", "images": 6})
    jpath, npath = qm.save(tmp_path / "q")
    import json

    doc = json.loads(jpath.read_text())
    assert doc["scheme"] == "ristretto" and "fractional_length" in doc["tensors"]["conv1"]
    back = QuantizedModel.load(jpath)
    assert back.tensors == qm.tensors and back.labels == qm.labels and back.arch == qm.arch
    np.testing.assert_array_equal(run_int8(back, pixels).logits, run_int8(qm, pixels).logits)


def test_malformed_files_are_rejected(tiny, tmp_path):
    arch, params, ranges, _ = tiny
    jpath, npath = quantize_model(arch, params, ranges).save(tmp_path / "q")
    text = jpath.read_text()
    jpath.write_text(text.replace('"scale": ', '"scale": -', 1))
    with pytest.raises(DataError, match="scale"):
        QuantizedModel.load(jpath)
    jpath.write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        QuantizedModel.load(jpath)
    jpath.write_text(text)
    npath.unlink()
    with pytest.raises(DataError, match="malformed"):
        QuantizedModel.load(jpath)
    with pytest.raises(DataError, match="quantize"):
        QuantizedModel.load(tmp_path / "absent.json")


def test_bad_inputs(tiny):
    arch, params, ranges, pixels = tiny
    with pytest.raises(OptionError, match="'affine', 'ristretto'"):
        quantize_model(arch, params, ranges, scheme="float16")
    short = {k: v for k, v in ranges.items() if k != "fire5.concat"}
    with pytest.raises(OptionError, match="fire5.concat"):
        quantize_model(arch, params, short)
    nan = dict(params)
    nan["conv10"] = (np.full_like(params["conv10"][0], np.nan), params["conv10"][1])
    with pytest.raises(WeightsError, match="conv10"):
        quantize_model(arch, nan, ranges)
    qm = quantize_model(arch, params, ranges)
    with pytest.raises(DataError, match="uint8"):
        run_int8(qm, pixels.astype(np.float32))
    with pytest.raises(DataError, match="35, 35, 3"):
        run_int8(qm, pixels[:, :30])


def test_bypass_variants_quantize_and_run():
    for b in ("simple", "complex"):
        arch = tiny_arch(bypass=b)
        params = tiny_params(arch, seed=3)
        pixels = np.random.default_rng(4).integers(0, 256, (3, 35, 35, 3), dtype=np.uint8)
        qm = quantize_model(arch, params, minmax_ranges(arch, params, pixels))
        got = run_int8(qm, pixels).logits
        fp = float_forward(arch, params, pixels)["logits"]
        assert np.abs(got - fp).max() / np.abs(fp).max() < 0.1


def test_real_arch_quantizes_without_calibration_data():
    """Every tensor of the real v1.0 graph gets parameters (ranges given by hand here)."""
    arch = squeezenet1_0_arch(caffe=True)
    params = tiny_params(arch)
    ranges = {n.name: (0.0, 4.0) for n in lower(arch)}
    qm = quantize_model(arch, params, ranges)
    assert set(qm.convs) == {c.name for c in arch.convs()}


def test_equalization_preserves_the_function_and_evens_channel_ranges(tiny):
    from edgesqueeze.quant.equalize import equalization_pairs, equalize

    arch, params, _, pixels = tiny
    taps = {}
    before = float_forward(arch, params, pixels, taps=taps)["logits"]
    cmax = {k: v.max(axis=(0, 1, 2)) for k, v in taps.items() if v.ndim == 4}
    new, factors = equalize(arch, params, cmax, alpha=1.0)
    taps2 = {}
    after = float_forward(arch, new, pixels, taps=taps2)["logits"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    assert len(equalization_pairs(arch)) == 2 * len(arch.fires) + 1
    for tensor, s in factors.items():
        assert (s >= 1).all()
        m = taps2[tensor].max(axis=(0, 1, 2))
        live = cmax[tensor] > 0
        # alpha=1: every live channel reaches the tensor's max (up to the 16x cap)
        capped = s[live] >= 16.0
        np.testing.assert_allclose(m[live][~capped], m[live].max(), rtol=1e-4)


def test_equalization_skips_bypass_and_checks_alpha(tiny):
    from edgesqueeze.quant.equalize import equalization_pairs, equalize

    arch, params, _, _ = tiny
    assert equalization_pairs(tiny_arch(bypass="simple")) == []
    with pytest.raises(OptionError, match="alpha"):
        equalize(arch, params, {}, alpha=1.5)
    with pytest.raises(OptionError, match="conv1"):
        equalize(arch, params, {}, alpha=0.5)
