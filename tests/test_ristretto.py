"""The ristretto scheme's options: unsigned never-negative tensors and per-channel power-of-two
weight shifts (quant/quantize.py), their records, their ranges and their exported files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgesqueeze.errors import OptionError
from edgesqueeze.quant.params import QParams, QuantizedModel, Scheme
from edgesqueeze.quant.quantize import (INPUT_QPARAMS, model_qparams_rule, power_of_two_qparams,
                                        quantize_model)
from edgesqueeze.quant.reference import run_int8
from test_quant import tiny_case


@pytest.fixture(scope="module")
def tiny():
    return tiny_case(seed=3)


def _pow2(x: float) -> bool:
    return math.frexp(x)[0] == 0.5


def test_unsigned_rule_halves_the_step_of_a_never_negative_tensor():
    for hi in (0.3, 1.0, 5.7, 64.0, 200.0):
        s = power_of_two_qparams(0.0, hi)
        u = power_of_two_qparams(0.0, hi, unsigned=True)
        assert s.zero_point == 0 and u.zero_point == -128
        assert _pow2(u.scale) and u.scale == s.scale / 2  # the sign bit is spent on resolution
        assert u.range()[0] == 0.0  # q = -128 is real 0: ReLU and zero padding stay exact
        assert 127.5 * u.scale < hi <= 256 * u.scale  # il = ceil(log2(hi)): no finer power of two holds hi
    neg = power_of_two_qparams(-1.0, 3.0, unsigned=True)  # negative values keep the sign bit
    assert neg == power_of_two_qparams(-1.0, 3.0) and neg.zero_point == 0


def test_default_ristretto_is_unsigned_with_per_channel_shifts(tiny):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme=Scheme.RISTRETTO, unsigned_activations=True,
                        per_channel_weights=True)
    signed = quantize_model(arch, params, ranges, scheme=Scheme.RISTRETTO)
    per_channel = 0
    for name, q in qm.tensors.items():
        if name == "input":
            assert q == INPUT_QPARAMS
            continue
        assert q.zero_point == -128 and q.fractional_length is not None, name
        assert q.scale == signed.tensors[name].scale / 2, name
    for name, c in qm.convs.items():
        w = params[name][0]
        assert all(_pow2(float(s)) for s in c.weight_scale), name
        m = c.real_multiplier(qm.tensors).astype(np.float64)
        assert (np.frexp(m)[0] == 0.5).all(), name  # still a shift, now one per channel
        top = np.abs(c.weight.astype(np.int16)).reshape(len(c.weight), -1).max(axis=1)
        live = np.abs(w).reshape(len(w), -1).max(axis=1) > 0
        # each live channel's largest weight |w|/s is in (64, 128], rounded into [64, 127]: its own
        # power of two, not the layer's
        assert ((top[live] >= 64) & (top[live] <= 127)).all(), (name, top)
        per_channel += len(set(c.weight_scale.tolist())) > 1
        # never coarser than the layer's one shift
        assert (c.weight_scale <= signed.convs[name].weight_scale).all(), name
    assert per_channel > 0  # the tiny model's channels differ enough for several shifts
    assert qm.calibration["unsigned_activations"] is True and qm.calibration["per_channel_weights"] is True
    assert signed.calibration["unsigned_activations"] is False
    assert np.isfinite(run_int8(qm, pixels).logits).all()


def test_unsigned_model_is_closer_to_float(tiny):
    """Half the step on every ReLU tensor: the tiny model's logits move less from float."""
    from edgesqueeze.graph import OUTPUT
    from test_quant import float_forward

    arch, params, ranges, pixels = tiny
    ref = float_forward(arch, params, pixels)[OUTPUT]
    err = {}
    for unsigned in (False, True):
        qm = quantize_model(arch, params, ranges, scheme="ristretto", unsigned_activations=unsigned,
                            per_channel_weights=True)
        err[unsigned] = float(((run_int8(qm, pixels).logits - ref) ** 2).mean())
    assert err[True] < err[False]


def test_affine_refuses_the_ristretto_options(tiny):
    arch, params, ranges, _ = tiny
    for kw in (dict(unsigned_activations=True), dict(per_channel_weights=True)):
        with pytest.raises(OptionError, match="ristretto"):
            quantize_model(arch, params, ranges, scheme="affine", **kw)


def test_options_default_on_for_ristretto_and_are_checked():
    from edgesqueeze.pipeline import QuantizeOptions

    r = QuantizeOptions.make(scheme="ristretto")
    assert r.unsigned_activations and r.per_channel_weights
    p = QuantizeOptions.make(scheme="ristretto", unsigned_activations=False, per_channel_weights=False)
    assert not p.unsigned_activations and not p.per_channel_weights
    a = QuantizeOptions.make()
    assert not a.unsigned_activations and not a.per_channel_weights
    with pytest.raises(OptionError, match="unsigned_activations=True is an option of the ristretto scheme"):
        QuantizeOptions.make(unsigned_activations=True)
    with pytest.raises(OptionError, match="per_channel_weights"):
        QuantizeOptions.make(scheme="affine", per_channel_weights=False)


def test_record_is_readable_and_round_trips(tiny, tmp_path):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme="ristretto", unsigned_activations=True,
                        per_channel_weights=True)
    jpath, _ = qm.save(tmp_path / "r")
    doc = json.loads(jpath.read_text())
    t = doc["tensors"]["fire2.squeeze"]
    assert t["signed"] is False and t["integer_length"] + t["fractional_length"] == 8
    assert t["real_range"][0] == 0.0
    pix = doc["tensors"]["input"]  # raw pixels: 8 integer bits, no sign
    assert pix["signed"] is False and pix["integer_length"] == 8 and pix["real_range"] == [0.0, 255.0]
    listed = [n for n, c in doc["convs"].items() if "weight_fractional_lengths" in c]
    assert listed and all(len(doc["convs"][n]["weight_fractional_lengths"]) == qm.convs[n].spec.out_channels
                          for n in listed)
    back = QuantizedModel.load(jpath)
    assert back.tensors == qm.tensors and back.calibration["unsigned_activations"] is True
    rule = model_qparams_rule(back)
    assert rule(0.0, 3.0) == QParams(2.0**-6, -128)  # later passes keep the model's own grids
    np.testing.assert_array_equal(run_int8(back, pixels).logits, run_int8(qm, pixels).logits)


def test_unsigned_mse_and_kl_search_the_unsigned_grid():
    from edgesqueeze.ranges import choose_range
    from test_calibrate import observe

    rng = np.random.default_rng(5)
    a = rng.exponential(1.0, 200_000).astype(np.float32)  # one-sided, long-tailed
    st = observe(a)
    il_max = math.ceil(math.log2(float(a.max())))

    def err(il):  # real squared error on the unsigned grid step 2**(il-8), 256 levels from 0
        s = 2.0 ** (il - 8)
        return ((np.clip(np.rint(a / s), 0, 255) * s - a.astype(np.float64)) ** 2).sum()

    lo, hi = choose_range(st, "mse", power_of_two=True, unsigned=True)
    chosen = 8 - power_of_two_qparams(lo, hi, unsigned=True).fractional_length
    errors = {il: err(il) for il in range(il_max - 7, il_max + 1)}
    assert lo == 0.0 and il_max - 8 < chosen <= il_max
    assert errors[chosen] <= min(errors.values()) * 1.05
    # KL merges into 256 bins for an unsigned tensor: it clips no harder than with 128
    _, kl_u = choose_range(st, "kl", power_of_two=True, unsigned=True)
    _, kl_s = choose_range(st, "kl", power_of_two=True)
    assert kl_u >= kl_s


@pytest.mark.parametrize("writer", ["onnx", "tflite"])
def test_exported_files_match_the_reference(tiny, tmp_path, writer):
    arch, params, ranges, pixels = tiny
    qm = quantize_model(arch, params, ranges, scheme="ristretto", unsigned_activations=True,
                        per_channel_weights=True, labels=tuple("abcdefghij"))
    if writer == "onnx":
        pytest.importorskip("onnxruntime")
        from edgesqueeze.export.onnx import to_onnx

        rep = to_onnx(qm, tmp_path / "r.onnx", verify_images=pixels)
    else:
        from edgesqueeze.export.tflite import to_tflite

        rep = to_tflite(qm, tmp_path / "r.tflite", verify_images=pixels)
    assert rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0


@pytest.mark.parametrize("argv", [
    ["quantize", "--signed-activations"],
    ["quantize", "--scheme", "affine", "--per-layer-weights"],
    ["eval", "--split", "eval", "--int8", "affine", "--signed-activations", "--per-layer-weights"],
])
def test_cli_refuses_ristretto_grids_without_ristretto(argv, tmp_path, capsys, monkeypatch):
    from edgesqueeze.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(argv + ["--weights", str(tmp_path / "never-read.net")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "ristretto scheme's grids only; add --scheme ristretto" in err
    assert "never-read.net" not in err  # refused before the weights are looked for
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_maps_the_flags_to_the_options():
    import argparse

    from edgesqueeze.cli.common import _add_quant_args, _quantize_options

    p = argparse.ArgumentParser()
    _add_quant_args(p)
    assert _quantize_options(p.parse_args([]), "ristretto").unsigned_activations is True
    o = _quantize_options(p.parse_args(["--signed-activations", "--per-layer-weights"]), "ristretto")
    assert not o.unsigned_activations and not o.per_channel_weights
    o = _quantize_options(p.parse_args(["--per-layer-weights"]), "ristretto")
    assert o.unsigned_activations and not o.per_channel_weights
