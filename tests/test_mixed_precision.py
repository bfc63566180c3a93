"""Convs kept in float32 between a dequantize and a quantize: the quantized graph, the integer
reference, both writers, and the accuracy-aware search (quant/sensitivity.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgesqueeze.errors import DataError, OptionError

FLOAT = ("fire3.expand3x3", "conv10")  # a middle conv and the head's conv (the TFLite head is special)


@pytest.fixture(scope="module")
def tiny():
    """(integer QuantizedModel, float conv weights, pixels) of a tiny SqueezeNet built in code."""
    from test_pipeline_options import _tiny

    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.quantize import float_conv_weights

    model, items, pixels = _tiny(n=16)
    options = QuantizeOptions.make(adaptive_rounding=False, empirical_bias_correction=False)
    qm, _, quantized_fp32 = calibrate_and_quantize(model, items, options, pixels=pixels)
    return qm, float_conv_weights(quantized_fp32.arch, quantized_fp32.numpy_params()), pixels


def _mixed(tiny, names=FLOAT):
    from edgesqueeze.quant.quantize import with_float_convs

    qm, weights, _ = tiny
    return with_float_convs(qm, names, weights)


# ------------------------------------------------------------------ the quantized graph


def test_json_round_trip_with_and_without_float_convs(tiny, tmp_path):
    from edgesqueeze.quant.params import QuantizedModel
    from edgesqueeze.quant.reference import run_int8

    qm, _, pixels = tiny
    jpath, _ = qm.save(tmp_path / "int")
    assert "float_convs" not in json.loads(jpath.read_text())  # all-integer files stay as they were
    assert QuantizedModel.load(jpath).float_convs == ()

    mixed = _mixed(tiny, ("conv10", "fire3.expand3x3"))
    assert mixed.float_convs == FLOAT  # graph order, whatever order they were given in
    jpath, _ = mixed.save(tmp_path / "mixed")
    assert json.loads(jpath.read_text())["float_convs"] == list(FLOAT)
    back = QuantizedModel.load(jpath)
    assert back.float_convs == FLOAT
    for name in FLOAT:
        for a, b in zip(back.float_weights[name], mixed.float_weights[name]):
            assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(run_int8(back, pixels[:4]).logits, run_int8(mixed, pixels[:4]).logits)


def test_a_file_naming_a_float_conv_without_weights_is_malformed(tiny, tmp_path):
    from edgesqueeze.quant.params import QuantizedModel

    qm, _, _ = tiny
    jpath, _ = qm.save(tmp_path / "m")
    doc = json.loads(jpath.read_text())
    doc["float_convs"] = ["fire2.squeeze"]
    jpath.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="fire2.squeeze"):
        QuantizedModel.load(jpath)


def test_unknown_float_conv_names_the_convs(tiny):
    from edgesqueeze.quant.quantize import with_float_convs

    qm, weights, _ = tiny
    with pytest.raises(OptionError, match="'fire2.bogus' is not a conv.*conv1, fire2.squeeze"):
        with_float_convs(qm, ["fire2.bogus"], weights)


def test_reference_float_conv_matches_a_float64_conv_within_one_lsb(tiny):
    """The reference's float conv against the same conv computed in float64 from the int8 input."""
    from edgesqueeze.quant.reference import run_int8

    mixed = _mixed(tiny, ("fire3.expand3x3",))
    qm, weights, pixels = tiny
    r = run_int8(mixed, pixels[:3], keep=True)
    node = next(n for n in mixed.nodes if n.name == "fire3.expand3x3")
    t_in, t_out = mixed.tensors[node.inputs[0]], mixed.tensors[node.name]
    x = (r.tensors[node.inputs[0]].astype(np.float64) - t_in.zero_point) * t_in.scale
    w, b = (a.astype(np.float64) for a in weights[node.name])
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # n, h, w, c, kh, kw
    y = np.einsum("nhwcij,oijc->nhwo", win, w) + b
    want = np.clip(np.rint(np.maximum(y, 0) / t_out.scale) + t_out.zero_point, t_out.zero_point, 127)
    got = r.tensors[node.name].astype(np.int64)
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.99


# ------------------------------------------------------------------ the writers


def _tflite_conv_input_types(path) -> list[str]:
    """The input tensor type of every CONV_2D operator in the file, in operator order."""
    from edgesqueeze.formats.tflite import _schema

    s = _schema()
    m = s.Model.GetRootAs(path.read_bytes(), 0)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    g = m.Subgraphs(0)
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        if names[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())] == "CONV_2D":
            out.append(types[g.Tensors(op.Inputs(0)).Type()] + "/" + types[g.Tensors(op.Inputs(1)).Type()])
    return out


def test_float_convs_export_to_onnx_and_tflite_and_run_in_classifier(tiny, tmp_path):
    import onnx

    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite, xnnpack_delegation
    from edgesqueeze.quant.reference import run_int8
    from edgesqueeze.runtime import Classifier

    mixed = _mixed(tiny)
    _, _, pixels = tiny
    ro = to_onnx(mixed, tmp_path / "m.onnx", verify_images=pixels)
    rt = to_tflite(mixed, tmp_path / "m.tflite", verify_images=pixels)
    # float in the files: ONNX Conv nodes with float32 weights, onnxruntime runs exactly those as float
    model = onnx.load(tmp_path / "m.onnx")
    inits = {i.name: i for i in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    for name in FLOAT:
        assert inits[convs[name].input[1]].data_type == onnx.TensorProto.FLOAT
        assert not any(n.op_type == "DequantizeLinear" and n.output[0] == convs[name].input[0]
                       for n in model.graph.node)
    assert (ro.float_convs, ro.integer_convs) == (2, len(mixed.convs) - 2)
    types = _tflite_conv_input_types(tmp_path / "m.tflite")
    assert types.count("FLOAT32/FLOAT32") == 2 and types.count("INT8/INT8") == len(mixed.convs) - 2
    assert xnnpack_delegation(tmp_path / "m.tflite").whole  # still one XNNPACK partition
    # both within 1 LSB / top-1 of the reference, as verified, and as Classifier sees them
    for r in (ro, rt):
        assert r.lsb_match >= 0.99 and r.top1_agreement >= 0.99
    ref = run_int8(mixed, pixels)
    for path in (tmp_path / "m.onnx", tmp_path / "m.tflite"):
        clf = Classifier.load(path)
        scores = np.concatenate([clf.scores(pixels[i:i + 1]) for i in range(len(pixels))])
        assert (scores.argmax(1) == ref.logits.argmax(1)).mean() >= 0.99
        assert np.abs(scores - ref.probabilities).max() < 0.05


def test_without_float_convs_the_files_are_all_integer(tiny, tmp_path):
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    qm, _, pixels = tiny
    r = to_onnx(qm, tmp_path / "m.onnx", verify_images=pixels[:4])
    assert r.float_convs == 0 and r.exact_match == 1.0
    to_tflite(qm, tmp_path / "m.tflite", verify_images=pixels[:4])
    assert "FLOAT32/FLOAT32" not in _tflite_conv_input_types(tmp_path / "m.tflite")


# ------------------------------------------------------------------ the search


def _fake_cv(monkeypatch, n: int, *, always_wrong: bool = False):
    """Items, pixels whose first value is the image's index, FP32 logits, and an integer
    reference whose top-1 is wrong on images i % 4 == 0 unless fire3.expand3x3 is in float, on
    i % 4 == 1 unless conv10 is, and (`always_wrong`) on every i % 4 == 2."""
    from test_pipeline_options import _tiny

    from edgesqueeze.data import LabelledImage
    from edgesqueeze.quant import sensitivity

    model, _, _ = _tiny(n=n)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 35, 35, 3), dtype=np.uint8)
    pixels[:, 0, 0, 0] = np.arange(n)
    fp32 = np.zeros((n, 10), np.float32)
    fp32[np.arange(n), np.arange(n) % 10] = 5.0
    fp32 += rng.normal(0, 0.1, fp32.shape).astype(np.float32)

    def fake(qm, px, **_):
        ids = px[:, 0, 0, 0].astype(int)
        out = fp32[ids].copy()
        wrong = (((ids % 4 == 0) & ("fire3.expand3x3" not in qm.float_convs))
                 | ((ids % 4 == 1) & ("conv10" not in qm.float_convs)) | ((ids % 4 == 2) & always_wrong))
        out[wrong] = np.roll(out[wrong], 1, axis=1)
        return out

    monkeypatch.setattr(sensitivity, "reference_logits", fake)
    items = [LabelledImage(f"never-read-{i}.jpg", int(i % 10)) for i in range(n)]
    return model, items, pixels, fp32


@pytest.mark.parametrize("target, want", [(dict(min_agreement=70), 1), (dict(min_agreement=90), 2),
                                          (dict(max_drop=30), 1), (dict(min_agreement=40), 0)])
def test_greedy_stops_at_the_first_set_that_meets_the_target(monkeypatch, target, want):
    from edgesqueeze.pipeline import QuantizeOptions
    from edgesqueeze.quant.sensitivity import AccuracyTarget, search_float_convs

    model, items, pixels, fp32 = _fake_cv(monkeypatch, 24)
    options = QuantizeOptions.make(adaptive_rounding=False, empirical_bias_correction=False)
    s = search_float_convs(model, items, pixels, options, AccuracyTarget.make(**target), sensitivity_images=8,
                           fp32=fp32)
    assert s.met and len(s.float_convs) == want
    assert s.baseline.agreement == pytest.approx(50.0)
    if want:
        assert set(s.float_convs) <= set(FLOAT)
        assert {x.conv for x in s.layers[:2]} == set(FLOAT)  # ranked first: they fix images
        assert [st.meets for st in s.steps] == [False] * (want - 1) + [True]
        assert s.after.agreement == pytest.approx(75.0 if want == 1 else 100.0)
        assert s.all_float is None  # stopped before every conv was in float
    else:
        assert s.steps == () and s.layers == () and s.all_float is None  # no search when already met
    d = s.to_dict()
    assert d["float_convs"] == list(s.float_convs) and d["met"] is True
    json.dumps(d, allow_nan=False)


def test_convs_are_ranked_by_sqnr_gain_before_agreement():
    """One image of 32 is 3.1 pp of agreement: a conv that flips one image but barely moves the
    logits ranks below one that brings them closer."""
    from edgesqueeze.quant.sensitivity import LayerSensitivity, rank

    flip = LayerSensitivity("fire9.squeeze", 30.1, 0.07, 100.0, 3.12)
    closer = LayerSensitivity("conv10", 30.5, 0.52, 96.88, 0.0)
    worse = LayerSensitivity("fire2.squeeze", 29.7, -0.29, 100.0, 3.12)
    tie = LayerSensitivity("conv1", 30.1, 0.07, 100.0, 3.12)
    got = rank([worse, flip, closer, tie], ["conv1", "fire2.squeeze", "fire9.squeeze", "conv10"])
    assert [s.conv for s in got] == ["conv10", "conv1", "fire9.squeeze", "fire2.squeeze"]


def test_an_impossible_target_is_refused_with_the_figures(monkeypatch):
    from edgesqueeze.pipeline import QuantizeOptions
    from edgesqueeze.quant.sensitivity import AccuracyTarget, TargetUnreachable, search_float_convs

    model, items, pixels, fp32 = _fake_cv(monkeypatch, 24, always_wrong=True)
    options = QuantizeOptions.make(adaptive_rounding=False, empirical_bias_correction=False)
    with pytest.raises(TargetUnreachable, match=r"cannot be met.*25.00 % agreement.*every conv in float "
                                                r"75.00 % agreement.*best of the 26 greedy sets") as e:
        search_float_convs(model, items, pixels, options, AccuracyTarget.make(min_agreement=80),
                           sensitivity_images=8, fp32=fp32)
    assert isinstance(e.value, OptionError)
    search = e.value.search
    assert not search.met and search.float_convs == () and len(search.steps) == 26  # every set measured
    assert not any(st.meets for st in search.steps) and search.all_float.agreement == pytest.approx(75.0)


@pytest.mark.parametrize("kw, needle", [
    (dict(min_agreement=120), "min_agreement=120 must be a number above 0 and at most 100"),
    (dict(min_agreement=0), "min_agreement=0"),
    (dict(min_agreement=float("nan")), "min_agreement=nan"),
    (dict(min_agreement=True), "min_agreement=True"),
    (dict(min_agreement="97"), "min_agreement='97'"),
    (dict(max_drop=-0.5), "max_drop=-0.5 must be a number at least 0"),
])
def test_bad_targets_are_refused_naming_the_value(kw, needle):
    from edgesqueeze.quant.sensitivity import AccuracyTarget

    with pytest.raises(OptionError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        AccuracyTarget.make(**kw)


def test_no_target_is_the_all_integer_default():
    from edgesqueeze.quant.sensitivity import AccuracyTarget

    assert AccuracyTarget.make() is None
    both = AccuracyTarget.make(min_agreement=97, max_drop=0.3)
    assert both.describe() == "top-1 agreement with FP32 >= 97 % and top-1 drop <= 0.3 pp"


def test_max_drop_needs_labelled_calibration_images(monkeypatch):
    from edgesqueeze.data import LabelledImage
    from edgesqueeze.pipeline import QuantizeOptions
    from edgesqueeze.quant.sensitivity import AccuracyTarget, search_float_convs

    model, items, pixels, fp32 = _fake_cv(monkeypatch, 8)
    items = [LabelledImage(i.path, -1) for i in items]
    with pytest.raises(OptionError, match="max_drop needs a label on every calibration image.*min_agreement"):
        search_float_convs(model, items, pixels, QuantizeOptions.make(), AccuracyTarget.make(max_drop=1),
                           fp32=fp32)


def test_the_job_and_the_cli_refuse_a_bad_target_before_any_work(tmp_path, capsys):
    import edgesqueeze
    from edgesqueeze.cli import main

    with pytest.raises(OptionError, match="min_agreement=120"):
        edgesqueeze.quantize(tmp_path / "no-such-weights.pth", min_agreement=120, out=tmp_path / "o")
    with pytest.raises(OptionError, match="sensitivity_images=1"):
        edgesqueeze.quantize(tmp_path / "no-such-weights.pth", min_agreement=97, sensitivity_images=1)
    assert not (tmp_path / "o").exists()
    rc = main(["quantize", "--weights", str(tmp_path / "no-such-weights.pth"), "--min-agreement", "120",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "min_agreement=120" in capsys.readouterr().err


def test_float_conv_weights_fold_conv1_like_the_quantizer(tiny):
    from edgesqueeze.quant.quantize import fold_input_normalization

    qm, weights, _ = tiny
    w, b = weights["conv1"]
    assert w.shape == qm.convs["conv1"].weight.shape and w.dtype == np.float32
    # the int8 conv1 is the folded float conv1 on its grid: dequantized, it is within half a step
    deq = qm.convs["conv1"].weight.astype(np.float64) * qm.convs["conv1"].weight_scale[:, None, None, None]
    assert np.abs(deq - w).max() <= 0.51 * qm.convs["conv1"].weight_scale.max()
    assert fold_input_normalization  # the folding used (quantize.py)
    assert replace(qm, float_convs=()).float_convs == ()


def test_eval_prints_the_sensitivity_table_of_a_quantize_report(tmp_path, capsys):
    from edgesqueeze.cli.evaluate import _print_sensitivity, _read_sensitivity
    from edgesqueeze.errors import EdgeSqueezeError
    from edgesqueeze.metrics import format_table
    from edgesqueeze.quant.sensitivity import (AccuracyTarget, CVScore, FloatConvSearch, LayerSensitivity,
                                               SearchStep)

    before, after = CVScore(100, 95.0, 28.0), CVScore(100, 97.0, 29.5)
    layers = (LayerSensitivity("conv10", 29.0, 1.0, 98.0, 2.0), LayerSensitivity("conv1", 28.1, 0.1, 96.0, 0.0))
    s = FloatConvSearch(AccuracyTarget.make(min_agreement=97), 100, 32, before, CVScore(100, 99.0, 31.0), layers,
                        (SearchStep(("conv10",), after, True),), ("conv10",), True, 1000, 12.0)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"mixed_precision": s.to_dict()}))
    _print_sensitivity(path, _read_sensitivity(path), format_table)
    out = capsys.readouterr().out
    assert "| conv10 " in out and "kept in float: conv10" in out and "95.0 -> 97.0 %" in out
    path.write_text(json.dumps({"arch": "x"}))
    with pytest.raises(EdgeSqueezeError, match="no per-layer sensitivity table.*--min-agreement"):
        _read_sensitivity(path)
    with pytest.raises(EdgeSqueezeError, match="no such file"):
        _read_sensitivity(tmp_path / "gone.json")


def test_the_job_writes_files_with_the_chosen_float_convs_and_times_them(monkeypatch, tmp_path, capsys):
    """The main job with a target: the search (here a fixed outcome, so the test does not depend on
    a tiny model's accuracy) -> files with that conv in float, verified, timed, reported."""
    import cv2
    import torch

    import edgesqueeze
    from edgesqueeze.arch import squeezenet1_1_arch
    from edgesqueeze.cli import main
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.quant import sensitivity
    from edgesqueeze.quant.params import QuantizedModel
    from edgesqueeze.quant.sensitivity import AccuracyTarget, CVScore, FloatConvSearch, SearchStep

    torch.manual_seed(0)
    model = SqueezeNet(squeezenet1_1_arch(num_classes=5))
    torch.save(model.state_dict(), tmp_path / "own5.pth")
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(12):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), rng.integers(0, 256, (72, 72, 3), dtype=np.uint8))
    seen = {}

    def fixed(model, items, pixels, options, target, **kw):
        seen.update(images=len(items), pixels=pixels.shape, target=target, kw=kw)
        s = CVScore(len(items), 75.0, 20.0)
        return FloatConvSearch(target, len(items), 2, s, s, (), (SearchStep(("fire3.expand3x3",), s, True),),
                               ("fire3.expand3x3",), True, 0, 0.0)

    monkeypatch.setattr(sensitivity, "search_float_convs", fixed)
    small = dict(input_size=64, resize=72, verify_images=4, sqnr_images=0)
    r = edgesqueeze.quantize(tmp_path / "own5.pth", tmp_path / "img", out=tmp_path / "e", calib_dir=tmp_path / "c",
                             min_agreement=50, sensitivity_images=6, latency_runs=2, **small)
    assert seen["target"] == AccuracyTarget(50.0, None) and seen["kw"]["sensitivity_images"] == 6
    assert seen["pixels"] == (seen["images"], 64, 64, 3)  # the calibration images, never the evaluation ones
    assert r.mixed_precision.float_convs == ("fire3.expand3x3",)
    int8 = [f for f in r.files if f.kind == "int8"]
    assert [f.detail for f in int8] == ["int8 + 1 float conv (x86)", "int8 + 1 float conv"]
    assert all("-fp1-" in f.path.name for f in int8)
    assert QuantizedModel.load(r.qparams).float_convs == ("fire3.expand3x3",)
    assert sorted((t.format, t.threads) for t in r.mixed_precision.latency) == [
        ("onnx", 1), ("onnx", 2), ("tflite", 1), ("tflite", 2)]
    assert all(t.mixed_ms > 0 and t.integer_ms > 0 for t in r.mixed_precision.latency)
    doc = json.loads(r.report.read_text())
    assert doc["options"]["min_agreement"] == 50.0
    assert doc["mixed_precision"]["float_convs"] == ["fire3.expand3x3"] and len(doc["mixed_precision"]["latency"]) == 4
    # the files are calibrated on calib_limit images; the CV runs on every calibration image
    everything = seen["images"]
    assert everything == r.calibration_images > 2
    r2 = edgesqueeze.quantize(tmp_path / "own5.pth", tmp_path / "img", out=tmp_path / "e4", calib_dir=tmp_path / "c4",
                              min_agreement=50, calib_limit=2, latency_runs=2, formats=("tflite",), **small)
    assert r2.calibration_images == 2 and seen["images"] == everything

    base = ["quantize", "--weights", str(tmp_path / "own5.pth"), "--images", str(tmp_path / "img"),
            "--input-size", "64", "--resize", "72", "--verify-images", "4", "--sqnr-images", "0", "--quiet",
            "--formats", "tflite"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "e2"), "--calib-dir", str(tmp_path / "c2"),
                 "--min-agreement", "50"]) == 0
    out = capsys.readouterr().out
    assert "kept in float: fire3.expand3x3" in out and "cost %" in out and "| tflite |" in out
    # unlabelled images: --max-drop is refused before calibration, nothing written
    assert main([*base, "--out", str(tmp_path / "e3"), "--calib-dir", str(tmp_path / "c3"), "--max-drop", "1"]) == 2
    assert "max_drop needs a label on every calibration image" in capsys.readouterr().err
    assert not list((tmp_path / "e3").glob("*.tflite"))
