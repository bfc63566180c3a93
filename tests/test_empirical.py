"""Empirical (sequential) bias correction (quant/empirical.py) and the FP32 means it matches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgesqueeze.errors import DataError, OptionError
from edgesqueeze.graph import OpKind
from edgesqueeze.quant import kernels
from edgesqueeze.quant.empirical import empirical_bias_correction
from edgesqueeze.quant.quantize import quantize_model
from edgesqueeze.quant.reference import run_int8

from test_quant import float_forward, minmax_ranges, smooth_pixels, tiny_arch, tiny_params

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def setup():
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import preactivation_means

    arch = tiny_arch()
    params = tiny_params(arch, seed=4)
    pixels = smooth_pixels(np.random.default_rng(5), 24)  # so activations are not white noise
    qm = quantize_model(arch, params, minmax_ranges(arch, params, pixels))
    model = SqueezeNet.from_params(arch, params)
    return arch, params, pixels, qm, preactivation_means(model, pixels, batch_size=7)


def int8_preact_means(qm, pixels):
    """Per-conv mean accumulator of the integer model, dequantized (acc * s_in * s_w), from
    every conv's accumulators computed on its kept int8 input."""
    run = run_int8(qm, pixels, keep=True)
    out = {}
    for n in qm.nodes:
        if n.kind is OpKind.CONV:
            c = qm.convs[n.name]
            p = n.conv.pad
            acc = kernels.conv2d_accumulate(run.tensors[n.inputs[0]], qm.tensors[c.input].zero_point, c.weight,
                                            c.bias, stride=n.conv.stride, padding=(p, p, p, p))
            acc_scale = np.float64(np.float32(qm.tensors[c.input].scale) * c.weight_scale)
            out[n.name] = acc.sum(axis=(0, 1, 2), dtype=np.int64) / (acc.size // acc.shape[-1]) * acc_scale
    return out


def test_preactivation_means_match_a_numpy_forward_before_relu(setup):
    arch, params, pixels, _, means = setup
    # the last conv's pre-ReLU mean, from the numpy float graph with that ReLU removed
    taps = {}
    float_forward(arch, params, pixels, taps=taps)
    last = arch.convs()[-1].name
    w, b = params[last]
    x = taps[[k for k in taps if k != last and k != "logits"][-1]]  # conv10's input (NHWC)
    from test_quant import conv_f

    pre = conv_f(x, w.astype(np.float64), b.astype(np.float64), 1, arch.final_pad)
    np.testing.assert_allclose(means[last], pre.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert set(means) == {c.name for c in arch.convs()}


def test_after_correction_every_layer_mean_matches_fp32_within_a_step(setup):
    _, _, pixels, qm, fp = setup
    before = int8_preact_means(qm, pixels)
    fixed, shifts = empirical_bias_correction(qm, pixels, fp, chunk=5)
    after = int8_preact_means(fixed, pixels)
    worst_before = worst_after = 0.0
    for name, conv in fixed.convs.items():
        step = np.float64(np.float32(fixed.tensors[conv.input].scale) * conv.weight_scale)
        err_after = np.abs(after[name] - fp[name]) / step
        worst_after = max(worst_after, err_after.max())
        worst_before = max(worst_before, (np.abs(before[name] - fp[name]) / step).max())
        # rounding the shift to whole accumulator steps leaves at most half a step
        assert err_after.max() <= 0.5 + 1e-6, (name, err_after.max())
    assert worst_before > 1.0  # there was something to correct
    assert set(shifts) == set(qm.convs)
    # only biases move; weights and tensor parameters are untouched
    for name, conv in fixed.convs.items():
        np.testing.assert_array_equal(conv.weight, qm.convs[name].weight)
    assert fixed.tensors == qm.tensors


def test_a_planted_bias_error_is_removed(setup):
    _, _, pixels, qm, fp = setup
    base, _ = empirical_bias_correction(qm, pixels, fp)
    first = next(iter(base.convs))
    c = base.convs[first]
    planted = replace(base, convs={**base.convs, first: replace(c, bias=c.bias + 37)})
    fixed, shifts = empirical_bias_correction(planted, pixels, fp)
    np.testing.assert_array_equal(fixed.convs[first].bias, c.bias)
    assert shifts[first] == pytest.approx(37.0)
    # and the corrected model computes what the first corrected one did
    np.testing.assert_array_equal(run_int8(fixed, pixels[:3]).logits, run_int8(base, pixels[:3]).logits)


def test_chunking_does_not_change_the_result(setup):
    _, _, pixels, qm, fp = setup
    a, _ = empirical_bias_correction(qm, pixels, fp, chunk=1)
    b, _ = empirical_bias_correction(qm, pixels, fp, chunk=64)
    for name in a.convs:
        np.testing.assert_array_equal(a.convs[name].bias, b.convs[name].bias)


def test_bad_input_is_named(setup):
    _, _, pixels, qm, fp = setup
    with pytest.raises(DataError, match="calibration pixels"):
        empirical_bias_correction(qm, pixels[:0], fp)
    with pytest.raises(OptionError, match="missing for: conv1"):
        empirical_bias_correction(qm, pixels, {k: v for k, v in fp.items() if k != "conv1"})
    bad = dict(fp, conv1=fp["conv1"] * np.nan)
    with pytest.raises(OptionError, match="conv1"):
        empirical_bias_correction(qm, pixels, bad)
    with pytest.raises(OptionError, match="QuantizedModel"):
        empirical_bias_correction("model.json", pixels, fp)


def test_options_default_per_scheme():
    from edgesqueeze.pipeline import QuantizeOptions

    assert QuantizeOptions.make().empirical_bias_correction is True
    assert QuantizeOptions.make(scheme="ristretto").empirical_bias_correction is True
    assert QuantizeOptions.make(scheme="ristretto", bias_correction=False).empirical_bias_correction is False
    assert QuantizeOptions.make(bias_correction=False).empirical_bias_correction is False
    assert QuantizeOptions.make(empirical_bias_correction=False).empirical_bias_correction is False
    assert QuantizeOptions.make(scheme="ristretto", bias_correction=False,
                                empirical_bias_correction=True).empirical_bias_correction
