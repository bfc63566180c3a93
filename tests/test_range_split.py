"""Range splitting (quant/range_split.py) on the tiny arch: the float identity, the grid that
ends at the clamp, the finer pieces, the options' checks and the exported files."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgesqueeze.errors import OptionError  # noqa: E402
from edgesqueeze.graph import OUTPUT  # noqa: E402

TENSOR = "fire2.squeeze"


@pytest.fixture(scope="module")
def tiny():
    from test_pipeline_options import _tiny

    return _tiny(n=12, seed=4)


def _maxima(model, pixels, tensor):
    from edgesqueeze.calibrate import ChannelMaxima
    from edgesqueeze.data import normalize

    m = ChannelMaxima([tensor])
    with torch.no_grad():
        model.eval()(torch.from_numpy(normalize(pixels, model.arch.preprocess)), tap=m.tap)
    return m.result()[tensor]


def _logits_and_taps(model, pixels):
    from edgesqueeze.data import normalize

    taps = {}
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(normalize(pixels, model.arch.preprocess)),
                           tap=lambda n, t: taps.__setitem__(n, t.clone()))
    return out.numpy(), taps


def test_a_tensor_that_never_fires_is_left_whole(tiny):
    """The default split must not fail a calibration whose fire2 squeeze never fires: it is
    recorded as skipped and the model stays as wide as the float one."""
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = tiny
    params = model.numpy_params()
    w, b = params[TENSOR]
    # its input is a ReLU's (>= 0): negative weights and biases keep it at ReLU(< 0) = 0
    params[TENSOR] = (-np.abs(w), -np.abs(b) - 0.1)
    dead = SqueezeNet.from_params(model.arch, params)
    qm, _, _ = calibrate_and_quantize(dead, items, QuantizeOptions.make(), pixels=pixels)
    assert qm.calibration["range_split"] == [{"tensor": TENSOR, "skipped": "never positive on the calibration images"}]
    assert qm.arch == model.arch


@pytest.mark.parametrize("pieces", [2, 3, 4])
def test_the_split_float_model_computes_the_same_logits(tiny, pieces):
    """With T = max / n, piece k of a channel is min(max(y - kT, 0), T): the float model with the
    extra channels computes the same logits, every piece lies in [0, T], and the pieces of each
    channel add up to it; a channel gets piece k only where kT lies below its maximum."""
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.quant.range_split import split_squeeze

    model, _, pixels = tiny
    m = _maxima(model, pixels, TENSOR)
    arch, params, split = split_squeeze(model.arch, model.numpy_params(), TENSOR, m, pieces=pieces)
    t = m.max() / pieces
    fire = arch.fires[0]
    assert split.pieces == pieces and split.threshold == pytest.approx(t) and fire.squeeze_clip == split.threshold
    want = [(int(c), k) for k in range(1, pieces) for c in np.flatnonzero(m > k * t)]
    assert list(split.sources) == [c for c, _ in want] and split.sources
    np.testing.assert_allclose(split.offsets, [k * t for _, k in want], rtol=1e-12)
    assert fire.squeeze == model.arch.fires[0].squeeze + len(want)
    assert pieces == 2 or len(want) > int((m > t).sum())  # more extra channels than two pieces need
    split_model = SqueezeNet.from_params(arch, params)
    a, ta = _logits_and_taps(model, pixels)
    b, tb = _logits_and_taps(split_model, pixels)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    s, n0 = tb[TENSOR], model.arch.fires[0].squeeze
    assert float(s.max()) <= split.threshold * (1 + 1e-6) and float(s.min()) >= 0
    total = s[:, :n0].clone()
    for k, c in enumerate(split.sources):
        total[:, c] += s[:, n0 + k]
    np.testing.assert_allclose(total.numpy(), ta[TENSOR].numpy(), rtol=1e-5, atol=1e-4 * float(ta[TENSOR].max()))


def test_three_pieces_quantize_finer_and_export_exactly(tiny, tmp_path):
    """The integer model with three pieces: its grid ends at max / 3, its step is two thirds of the
    two-piece one, and both files equal the integer reference within 1 LSB."""
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = tiny
    two, _, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(range_pieces=2), pixels=pixels)
    three, _, fp32 = calibrate_and_quantize(model, items, QuantizeOptions.make(range_pieces=3), pixels=pixels)
    rec, = three.calibration["range_split"]
    assert rec["pieces"] == 3 and fp32.arch.fires[0].squeeze_clip == rec["threshold"]
    assert three.tensors[TENSOR].range()[1] == pytest.approx(rec["threshold"], rel=1e-6)
    assert three.tensors[TENSOR].scale == pytest.approx(two.tensors[TENSOR].scale * 2 / 3, rel=1e-5)
    assert rec["extra_channels"] > two.calibration["range_split"][0]["extra_channels"]
    rep = to_tflite(three, tmp_path / "three.tflite")
    assert rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0
    if pytest.importorskip("onnxruntime"):
        from edgesqueeze.export.onnx import to_onnx

        rep = to_onnx(three, tmp_path / "three.onnx")
        assert rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0


@pytest.fixture(scope="module")
def quantized(tiny):
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = tiny
    plain, _, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=()), pixels=pixels)
    split, _, fp32 = calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=[TENSOR], range_pieces=2),
                                            pixels=pixels)
    return plain, split, fp32


def test_the_grid_ends_at_the_clamp_and_its_step_halves(quantized):
    plain, split, fp32 = quantized
    rec, = split.calibration["range_split"]
    t = rec["threshold"]
    q = split.tensors[TENSOR]
    assert q.zero_point == -128 and q.range()[1] == pytest.approx(t, rel=1e-6)
    assert fp32.arch.fires[0].squeeze_clip == t and split.arch == fp32.arch
    # the plain model's grid spans the whole range 2T (its max), the split one's half of it
    assert q.scale == pytest.approx(plain.tensors[TENSOR].scale / 2, rel=0.02)
    n = split.convs[TENSOR].weight.shape[0]
    assert n == plain.convs[TENSOR].weight.shape[0] + rec["extra_channels"]
    assert split.convs["fire2.expand3x3"].weight.shape[3] == n  # OHWI: the expand convs read every piece


def test_pieces_of_the_integer_model_add_up_to_finer_values(tiny, quantized):
    """The dequantized pieces of the integer model's split tensor, added per source channel, are
    within one step of the float squeeze output computed from the integer model's own input:
    the step being T/255, half the unsplit step."""
    from edgesqueeze.quant import kernels
    from edgesqueeze.quant.reference import run_int8

    _, split, _ = quantized
    pixels = tiny[2]
    rec, = split.calibration["range_split"]
    env = run_int8(split, pixels, keep=True).tensors
    q = split.tensors[TENSOR]
    real = kernels.dequantize(env[TENSOR], q.scale, q.zero_point).astype(np.float64)  # NHWC
    n0 = real.shape[-1] - rec["extra_channels"]
    total = real[..., :n0].copy()
    for k, c in enumerate(rec["sources"]):
        total[..., c] += real[..., n0 + k]
    # the float squeeze conv on the integer model's dequantized input (its rounding is ours)
    c = split.convs[TENSOR]
    x_q = split.tensors[c.input]
    x = kernels.dequantize(env[c.input], x_q.scale, x_q.zero_point).astype(np.float64)
    w = c.weight[:, 0, 0, :].astype(np.float64)[:n0] * c.weight_scale[:n0, None].astype(np.float64)  # (O, I) of a 1x1
    b = c.bias[:n0].astype(np.float64) * np.float32(x_q.scale) * c.weight_scale[:n0].astype(np.float64)
    y = np.maximum(x @ w.T + b, 0.0)
    assert np.abs(total - np.minimum(y, 2 * rec["threshold"])).max() <= 1.01 * q.scale


@pytest.mark.parametrize("writer", ["onnx", "tflite"])
def test_exported_files_match_the_reference(quantized, tmp_path, writer):
    _, split, _ = quantized
    if writer == "onnx":
        pytest.importorskip("onnxruntime")
        from edgesqueeze.export.onnx import to_onnx

        rep = to_onnx(split, tmp_path / "s.onnx")
        assert rep.float_convs == 0 and rep.integer_convs == len(split.convs)
    else:
        from edgesqueeze.export.tflite import to_tflite

        rep = to_tflite(split, tmp_path / "s.tflite")
    assert rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0


def test_the_record_round_trips(quantized, tmp_path, tiny):
    from edgesqueeze.quant.params import QuantizedModel
    from edgesqueeze.quant.reference import run_int8

    _, split, _ = quantized
    back = QuantizedModel.load(split.save(tmp_path / "s")[0])
    assert back.arch == split.arch and back.calibration["range_split"] == split.calibration["range_split"]
    np.testing.assert_array_equal(run_int8(back, tiny[2]).logits, run_int8(split, tiny[2]).logits)


@pytest.fixture(scope="module")
def ristretto_pair(tiny):
    """Ristretto with min/max ranges whole and split, unsigned (the default) and signed."""
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = tiny
    out = {}
    for unsigned in (True, False):
        for split in ((), (TENSOR,)):
            opts = QuantizeOptions.make(scheme="ristretto", method="minmax", range_split=split,
                                        unsigned_activations=unsigned)
            out[unsigned, bool(split)] = calibrate_and_quantize(model, items, opts, pixels=pixels)
    return out


@pytest.mark.parametrize("unsigned", [True, False])
def test_ristretto_split_ends_on_its_power_of_two_grid(ristretto_pair, unsigned):
    """T is the top of the power-of-two grid for half the range: 255 or 127 steps of 2**-fl, at
    least 255/256 of max / 2, and the step is half the whole tensor's (min/max both)."""
    plain, _, _ = ristretto_pair[unsigned, False]
    split, _, fp32 = ristretto_pair[unsigned, True]
    rec, = split.calibration["range_split"]
    t, q, whole = rec["threshold"], split.tensors[TENSOR], plain.tensors[TENSOR]
    assert q.fractional_length is not None and q.zero_point == (-128 if unsigned else 0)
    assert q.range()[1] == t and (127 - q.zero_point) * q.scale == t  # exactly: requantization clamps at T
    assert fp32.arch.fires[0].squeeze_clip == t
    top = plain.calibration["ranges"][TENSOR][1]  # the whole tensor's max (min/max ranges)
    assert top / 2 * (255 / 256 if unsigned else 127 / 128) <= t * (1 + 1e-9) and t < top
    assert q.scale == whole.scale / 2


@pytest.mark.parametrize("writer", ["onnx", "tflite"])
def test_ristretto_split_files_match_the_reference(ristretto_pair, tmp_path, writer):
    split, _, _ = ristretto_pair[True, True]
    if writer == "onnx":
        pytest.importorskip("onnxruntime")
        from edgesqueeze.export.onnx import to_onnx

        rep = to_onnx(split, tmp_path / "s.onnx")
    else:
        from edgesqueeze.export.tflite import to_tflite

        rep = to_tflite(split, tmp_path / "s.tflite")
    assert rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0


def test_the_power_of_two_threshold_is_checked(tiny):
    from edgesqueeze.quant.range_split import split_squeeze

    model, _, pixels = tiny
    m = _maxima(model, pixels, TENSOR)
    with pytest.raises(OptionError, match="max / 2 <= T <= max"):
        split_squeeze(model.arch, model.numpy_params(), TENSOR, m, grid_top=lambda hi: hi / 4)


def test_options_are_checked(tiny):
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.range_split import split_squeeze

    assert QuantizeOptions.make().range_split == (TENSOR,)  # the affine default
    assert QuantizeOptions.make(scheme="ristretto").range_split == (TENSOR,)
    assert QuantizeOptions.make(reconstruction=True).range_split == ()
    with pytest.raises(OptionError, match="cannot be combined with reconstruction that learns step sizes"):
        QuantizeOptions.make(reconstruction=True, range_split=[TENSOR])
    rounding_only = QuantizeOptions.make(reconstruction=True, reconstruction_rounding=True, reconstruction_steps=False)
    assert rounding_only.range_split == (TENSOR,)  # calibration's grids kept: the split stays
    with pytest.raises(OptionError, match="nothing to learn"):
        QuantizeOptions.make(reconstruction=True, reconstruction_steps=False)
    with pytest.raises(OptionError, match="sequence of tensor names"):
        QuantizeOptions.make(range_split=TENSOR)
    for bad in (1, 5, 2.5, True, "3"):
        with pytest.raises(OptionError, match=rf"pieces={bad!r} is not an integer in 2\.\.4"):
            QuantizeOptions.make(range_pieces=bad)
    model, items, pixels = tiny
    with pytest.raises(OptionError, match="'conv1' is not a Fire squeeze output.*fire2.squeeze"):
        calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=["conv1"]), pixels=pixels)
    m = _maxima(model, pixels, TENSOR)
    arch, params, _ = split_squeeze(model.arch, model.numpy_params(), TENSOR, m)
    with pytest.raises(OptionError, match="already split"):
        split_squeeze(arch, params, TENSOR, m)
    with pytest.raises(OptionError, match="never fires"):
        split_squeeze(model.arch, model.numpy_params(), TENSOR, np.zeros_like(m))


def test_the_split_model_is_closer_to_float_on_the_split_tensor(tiny, quantized):
    """Measured on the tiny model: the split tensor's own error falls (its logits are dominated
    by other tensors there, so they are not asserted)."""
    from edgesqueeze.quant import kernels
    from edgesqueeze.quant.reference import run_int8

    plain, split, fp32 = quantized
    model, _, pixels = tiny
    _, taps = _logits_and_taps(model, pixels)
    ref = taps[TENSOR].numpy().transpose(0, 2, 3, 1).astype(np.float64)
    errs = {}
    for name, qm in (("plain", plain), ("split", split)):
        env = run_int8(qm, pixels, keep=True).tensors
        q = qm.tensors[TENSOR]
        real = kernels.dequantize(env[TENSOR], q.scale, q.zero_point).astype(np.float64)
        if name == "split":
            rec, = qm.calibration["range_split"]
            n0 = real.shape[-1] - rec["extra_channels"]
            total = real[..., :n0].copy()
            for k, c in enumerate(rec["sources"]):
                total[..., c] += real[..., n0 + k]
            real = total
        errs[name] = float(((real - ref) ** 2).mean())
    assert errs["split"] < errs["plain"]
    assert OUTPUT  # the head stays as it is: same graph names


def test_cli_flags_map_to_the_options_and_contradictions_are_refused(tmp_path, capsys, monkeypatch):
    import argparse

    from edgesqueeze.cli import main
    from edgesqueeze.cli.common import _add_quant_args, _quantize_options

    p = argparse.ArgumentParser()
    _add_quant_args(p)
    o = _quantize_options(p.parse_args(["--range-split", TENSOR, "--range-search"]), "affine")
    assert o.range_split == (TENSOR,) and o.range_search
    d = _quantize_options(p.parse_args([]), "affine")
    assert d.range_split == (TENSOR,) and not d.range_search
    assert _quantize_options(p.parse_args(["--no-range-split"]), "affine").range_split == ()
    assert _quantize_options(p.parse_args([]), "ristretto").range_split == (TENSOR,)
    assert _quantize_options(p.parse_args(["--no-range-split"]), "ristretto").range_split == ()
    assert _quantize_options(p.parse_args(["--range-pieces", "3"]), "affine").range_pieces == 3
    monkeypatch.chdir(tmp_path)
    rc = main(["eval", "--split", "eval", "--int8", "ristretto", "--range-split", TENSOR, "--no-range-split",
               "--weights", str(tmp_path / "never-read.net")])
    err = capsys.readouterr().err
    assert rc == 2 and "contradict each other" in err and "Traceback" not in err
    assert main(["quantize", "--range-pieces", "5"]) == 2  # refused before any weights or images are read
    err = capsys.readouterr().err
    assert "pieces=5 is not an integer in 2..4" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_range_search_leaves_the_split_tensor_whole(quantized, tiny):
    """The split tensor's grid must end at its clamp: the search never shrinks it, and naming it
    is refused with the tensors it can search."""
    from edgesqueeze.evaluate import fp32_logits
    from edgesqueeze.quant.range_search import search_ranges

    _, split, fp32 = quantized
    pixels = tiny[2]
    logits = fp32_logits(fp32, pixels)
    ranges, report = search_ranges(split, pixels, logits, factors=(0.5,))
    assert report.factors[TENSOR] == 1.0 and ranges[TENSOR] == tuple(split.calibration["ranges"][TENSOR])
    with pytest.raises(OptionError, match=f"not searchable: {TENSOR}; choose among conv1, fire2.concat"):
        search_ranges(split, pixels, logits, order=[TENSOR])
