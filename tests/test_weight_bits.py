"""`weight_bits`: fewer weight levels (4..8 bits) in int8 containers. A tiny SqueezeNet built in
code (no shared data) checks the grid, the option's errors, bias correction and that the exported
files still match the integer reference; marked `shared`, the real v1.0 at 6 bits packs to an
update bundle under 500,000 bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgesqueeze.errors import DataError, OptionError
from edgesqueeze.graph import INPUT
from edgesqueeze.quant.params import QuantizedModel, Scheme, validate
from edgesqueeze.quant.quantize import fold_input_normalization, quantize_model, weight_qmax
from edgesqueeze.quant.reference import run_int8
from test_quant import conv_f, float_forward, minmax_ranges, tiny_arch, tiny_params

LABELS = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def tiny():
    arch = tiny_arch()
    params = tiny_params(arch, seed=3)
    rng = np.random.default_rng(4)
    calib = rng.integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    taps = {}
    float_forward(arch, params, calib, taps=taps)
    pre = arch.preprocess
    means = {k: v.mean(axis=(0, 1, 2)) for k, v in taps.items() if v.ndim == 4}
    means[INPUT] = ((calib - np.array(pre.mean)) / np.array(pre.std)).mean(axis=(0, 1, 2))
    return arch, params, minmax_ranges(arch, params, calib), means, calib


def quantize(tiny, bits, **kw):
    arch, params, ranges, _, _ = tiny
    return quantize_model(arch, params, ranges, labels=LABELS, weight_bits=bits,
                          calibration={"method": "minmax", "images": 6}, **kw)


def real_weights(arch, params, name):
    """The float weights the quantizer rounds (conv1's with the input normalisation folded in)."""
    w, b = (a.astype(np.float64) for a in params[name])
    return fold_input_normalization(arch, w, b)[0] if name == "conv1" else w


# ---------------------------------------------------------------- the grid


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_affine_weights_lie_on_and_fill_the_b_bit_grid(tiny, bits):
    arch, params = tiny[0], tiny[1]
    qm = quantize(tiny, bits)
    qmax = 2 ** (bits - 1) - 1
    assert weight_qmax(bits) == qmax
    for name, c in qm.convs.items():
        q = c.weight.astype(np.int16)
        assert c.weight.dtype == np.int8 and np.abs(q).max() <= qmax, name
        assert len(np.unique(q)) <= 2 * qmax + 1
        # per channel scale max|w| / qmax: every channel's largest weight lands on ±qmax
        per_channel = np.abs(q).reshape(len(q), -1).max(axis=1)
        assert (per_channel == qmax).all(), (name, per_channel)
        # and it is the rounding of the float weights on that grid (within half a step)
        w = real_weights(arch, params, name)
        s = c.weight_scale.astype(np.float64)[:, None, None, None]
        deq = q.transpose(0, 3, 1, 2) * s
        assert (np.abs(deq - w) <= s / 2 * (1 + 1e-5)).all(), name
        np.testing.assert_allclose(c.weight_scale, np.abs(w).reshape(len(w), -1).max(axis=1) / qmax, rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 6])
def test_ristretto_weights_use_a_power_of_two_grid_of_b_bits(tiny, bits):
    qm = quantize(tiny, bits, scheme=Scheme.RISTRETTO)
    qmax = 2 ** (bits - 1) - 1
    for name, c in qm.convs.items():
        top = np.abs(c.weight.astype(np.int16)).max()
        # scale 2**-(bits - il), il = ceil(log2 max|w|) + 1: the largest weight is in (2^(b-2), qmax]
        assert 2 ** (bits - 2) <= top <= qmax, (name, top)
        fl = -np.log2(float(c.weight_scale[0]))
        assert fl == round(fl) and (c.weight_scale == c.weight_scale[0]).all()


def test_eight_bits_is_the_default_and_leaves_the_metadata_as_it_was(tiny):
    arch, params, ranges, _, _ = tiny
    default = quantize_model(arch, params, ranges, calibration={"method": "minmax"})
    eight = quantize(tiny, 8)
    six = quantize(tiny, 6)
    for name in default.convs:
        assert np.array_equal(default.convs[name].weight, eight.convs[name].weight)
        assert not np.array_equal(default.convs[name].weight, six.convs[name].weight)
    assert "weight_bits" not in default.calibration and default.weight_bits == 8
    assert six.calibration["weight_bits"] == 6 and six.weight_bits == 6


@pytest.mark.parametrize("bad", [3, 9, 0, -6, True, 6.0, "6", None])
def test_bad_weight_bits_are_rejected_with_the_allowed_range(tiny, bad):
    with pytest.raises(OptionError, match=r"weight_bits=.* is not an integer in 4\.\.8; use 8"):
        quantize(tiny, bad)


def test_numpy_integer_weight_bits_accepted(tiny):
    assert quantize(tiny, np.int64(6)).weight_bits == 6


def test_pipeline_options_and_cli_check_weight_bits(capsys):
    pytest.importorskip("torch")
    from edgesqueeze.cli import main
    from edgesqueeze.pipeline import QuantizeOptions

    assert QuantizeOptions.make().weight_bits == 8
    assert QuantizeOptions.make(weight_bits=6).weight_bits == 6
    with pytest.raises(OptionError, match="weight_bits=9 is not an integer in 4..8"):
        QuantizeOptions.make(weight_bits=9)
    # the CLI refuses it before any slow work (no weights or images are read)
    assert main(["quantize", "--weight-bits", "3"]) == 2
    err = capsys.readouterr().err
    assert "weight_bits=3" in err and "4..8" in err and "Traceback" not in err


# ---------------------------------------------------------------- bias correction


def test_bias_correction_removes_the_larger_mean_shift_of_fewer_bits(tiny):
    """On the calibration pixels, conv1's mean output with 4-bit weights is far closer to FP32's
    with the corrected bias than without (not exact: the strided windows weight the border
    pixels differently from the per-channel means the correction uses)."""
    arch, params, _, means, calib = tiny
    w, b = fold_input_normalization(arch, *(a.astype(np.float64) for a in params["conv1"]))
    want = conv_f(calib.astype(np.float64), w, b, 2, 0).mean(axis=(0, 1, 2))
    err = {}
    for corrected in (False, True):
        c = quantize(tiny, 4, channel_means=means if corrected else None).convs["conv1"]
        s = c.weight_scale.astype(np.float64)
        wq = c.weight.transpose(0, 3, 1, 2).astype(np.float64) * s[:, None, None, None]
        bq = c.bias * s * 1.0  # input scale is 1 (raw pixels)
        err[corrected] = np.abs(conv_f(calib.astype(np.float64), wq, bq, 2, 0).mean(axis=(0, 1, 2)) - want)
    assert err[False].mean() > 10 * err[True].mean()  # measured: 0.263 vs 0.005


# ---------------------------------------------------------------- files and exports


def test_save_load_keeps_weight_bits_and_old_files_load(tiny, tmp_path):
    six = quantize(tiny, 6)
    six.save(tmp_path / "six")
    back = QuantizedModel.load(tmp_path / "six.json")
    assert back.weight_bits == 6
    assert all(np.array_equal(back.convs[n].weight, c.weight) for n, c in six.convs.items())
    # a file written before the option (no weight_bits) loads as 8 bits
    old = quantize(tiny, 8)
    assert "weight_bits" not in old.calibration
    old.save(tmp_path / "old")
    assert QuantizedModel.load(tmp_path / "old.json").weight_bits == 8


def test_validate_refuses_weights_off_the_declared_grid(tiny):
    eight = quantize(tiny, 8)
    with pytest.raises(DataError, match=r"weights exceed the 6-bit grid ±31"):
        validate(replace(eight, calibration={**eight.calibration, "weight_bits": 6}))
    with pytest.raises(DataError, match=r"weight_bits 12 is not an integer in 4\.\.8"):
        validate(replace(eight, calibration={**eight.calibration, "weight_bits": 12}))


def test_six_bit_tflite_matches_the_integer_reference(tiny, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgesqueeze.export.ops import max_score_diff
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.formats.tflite import read_tflite_metadata
    from test_export_tflite import run_tflite

    arch = tiny[0]
    qm = quantize(tiny, 6, channel_means=tiny[3])
    r = to_tflite(qm, tmp_path / "w6.tflite")
    assert r.lsb_match >= 0.999 and r.max_lsb_diff <= 1 and r.top1_agreement >= 0.995
    images = np.random.default_rng(8).integers(0, 256, (6, arch.input_size, arch.input_size, 3), dtype=np.uint8)
    got = run_tflite(tmp_path / "w6.tflite", images)["probability"]
    ref = run_int8(qm, images)
    assert (got.argmax(1) == ref.logits.argmax(1)).all()
    head_scale = qm.tensors["conv10"].scale
    hw = arch.shapes()["conv10"][1] ** 2
    assert np.abs(got - ref.probabilities).max() <= max_score_diff(head_scale, hw)
    assert read_tflite_metadata(tmp_path / "w6.tflite").calibration["weight_bits"] == 6


def test_six_bit_onnx_matches_the_integer_reference(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edgesqueeze.export.onnx import to_onnx

    r = to_onnx(quantize(tiny, 6, channel_means=tiny[3]), tmp_path / "w6.onnx", target="x86")
    assert r.lsb_match >= 0.999 and r.top1_agreement >= 0.995


# ---------------------------------------------------------------- the real v1.0


@pytest.mark.shared
@pytest.mark.slow
def test_real_v1_0_at_six_bits_packs_under_half_a_megabyte(dc_model, dc_split, eval_pixels, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgesqueeze.formats.bundle import pack_bytes
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.runtime import Classifier

    pixels, labels = eval_pixels
    qm, _, _ = calibrate_and_quantize(dc_model, dc_split[0][:16], QuantizeOptions.make(weight_bits=6))
    assert qm.weight_bits == 6 and max(np.abs(c.weight.astype(np.int16)).max() for c in qm.convs.values()) == 31
    path = tmp_path / "w6.tflite"
    r = to_tflite(qm, path, verify_images=pixels[:16])
    assert r.lsb_match >= 0.999 and r.top1_agreement >= 0.995
    bundle = pack_bytes(path.read_bytes(), name=path.name)
    assert len(bundle) < 500_000, len(bundle)
    # still a working classifier (the README's table has the full evaluation)
    assert (Classifier.load(path, threads=1).logits(pixels).argmax(1) == labels).mean() >= 0.4
