"""Block reconstruction (quant/reconstruct.py) on the tiny arch: what it learns lowers the block
errors it optimises, and what it hands on is an ordinary QuantizedModel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgesqueeze.errors import OptionError
from edgesqueeze.graph import OpKind
from edgesqueeze.quant.params import validate
from edgesqueeze.quant.reference import run_int8

torch = pytest.importorskip("torch")

ITERATIONS = 40


def _calibrated(scheme: str, n: int = 12, **kw):
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from test_pipeline_options import _tiny

    model, items, pixels = _tiny(n=n)
    kw.setdefault("range_split", ())  # learned steps cannot keep a split tensor's grid (its own test below)
    options = QuantizeOptions.make(scheme=scheme, empirical_bias_correction=False, **kw)
    qm, _, fp32 = calibrate_and_quantize(model, items, options, pixels=pixels)
    return qm, fp32, pixels


@pytest.fixture(scope="module")
def affine():
    from edgesqueeze.quant.reconstruct import reconstruct

    torch.set_num_threads(min(2, torch.get_num_threads()))
    qm, fp32, pixels = _calibrated("affine")
    out, report = reconstruct(qm, fp32, pixels, iterations=ITERATIONS, batch_size=8, learn_rounding=False,
                              measure_start=True)
    return qm, fp32, pixels, out, report


def test_reconstruction_lowers_the_block_errors_it_fits(affine):
    _, _, _, _, report = affine
    assert list(report)[0] == "conv1" and list(report)[-1] == "conv10" and len(report) == 10
    gains = [end - start for start, end in report.values()]
    # conv1 sees the exact pixels, so its start is calibration's conv1 itself: the learned
    # step fits the FP32 output better. The later blocks start from calibration's steps fed the
    # reconstructed blocks before them; min/max steps are near a local optimum of the block
    # error there, so they gain little, but a broken target, chain or bias (the FP32 bias
    # swapped for the corrected one, learned biases) costs whole dB
    assert gains[0] > 0.1, report
    assert np.mean(gains) > -0.05 and min(gains) > -0.5, report
    # with calibration's integer weights kept, only the steps moved
    assert all(np.array_equal(c.weight, affine[0].convs[n].weight) for n, c in affine[3].convs.items())


def test_result_is_a_valid_model_the_integer_reference_runs(affine):
    qm, _, pixels, out, _ = affine
    validate(out)
    logits = run_int8(out, pixels).logits
    assert logits.shape == (len(pixels), qm.arch.num_classes) and np.isfinite(logits).all()
    for name, p in out.tensors.items():  # ReLU tensors: ranges [0, 255 s], zero point -128
        if name != "input":
            assert p.zero_point == -128 and math.isfinite(p.scale) and p.scale > 0, name
    for name, (lo, hi) in out.calibration["ranges"].items():
        if name != "input":  # the normalised input's range, not quantized (raw pixels are)
            assert lo == 0.0 < hi and math.isfinite(hi), name
    for n in out.nodes:  # concat inputs still write in the concat's parameters
        if n.kind is OpKind.CONCAT:
            assert all(out.tensors[i] == out.tensors[n.name] for i in n.inputs)


def test_learned_rounding_stays_floor_or_ceil_and_keeps_zeros(affine):
    from edgesqueeze.quant.quantize import fold_input_normalization
    from edgesqueeze.quant.reconstruct import reconstruct

    qm, fp32, pixels, _, _ = affine
    out, _ = reconstruct(qm, fp32, pixels[:6], iterations=5, batch_size=4, learn_rounding=True)
    assert np.isfinite(run_int8(out, pixels).logits).all()

    params = fp32.numpy_params()
    moved = 0
    for name, c in out.convs.items():
        w = np.asarray(params[name][0], np.float64)
        if name == "conv1":
            w, _ = fold_input_normalization(qm.arch, *params[name])
        r = (w / c.weight_scale.astype(np.float64)[:, None, None, None]).transpose(0, 2, 3, 1)
        q = c.weight.astype(np.float64)
        assert np.all((q == np.floor(r)) | (q == np.ceil(r))), name
        assert np.array_equal(c.weight_scale, qm.convs[name].weight_scale)
        assert np.all(q[r == 0] == 0)
        moved += int((c.weight != qm.convs[name].weight).sum())
    assert moved > 0  # the rounding was learned, not copied


@pytest.mark.parametrize("unsigned", [True, False])
def test_ristretto_steps_stay_powers_of_two_and_weights_are_kept(unsigned):
    from edgesqueeze.quant.reconstruct import reconstruct

    qm, fp32, pixels = _calibrated("ristretto", n=8, unsigned_activations=unsigned)
    out, report = reconstruct(qm, fp32, pixels, iterations=4, batch_size=4)
    validate(out)
    for name, p in out.tensors.items():
        if name != "input":  # raw pixels: scale 1, zero point -128 in both schemes
            assert p.zero_point == (-128 if unsigned else 0) and p.fractional_length is not None, (name, p)
    for name, c in out.convs.items():  # weights are calibration's integers without learned rounding
        assert np.array_equal(c.weight, qm.convs[name].weight)
    assert np.isfinite(run_int8(out, pixels).logits).all()
    assert all(len(v) == 1 for v in report.values())


def test_pipeline_option_runs_and_is_checked():
    from edgesqueeze.pipeline import PASS_RECONSTRUCTION, QuantizeOptions, calibrate_and_quantize
    from test_pipeline_options import _tiny

    with pytest.raises(OptionError, match="reconstruction_iterations"):
        QuantizeOptions.make(reconstruction=True, reconstruction_iterations=0)
    assert QuantizeOptions.make().reconstruction is False
    model, items, pixels = _tiny(n=6)
    names = []
    qm, _, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(reconstruction=True, reconstruction_iterations=2),
                                      pixels=pixels, on_pass=lambda name, done, total: names.append((name, done)))
    assert (PASS_RECONSTRUCTION, 6) in names and names.index((PASS_RECONSTRUCTION, 0)) < len(names) - 1
    assert qm.calibration["reconstruction"]["iterations"] == 2 and qm.calibration["empirical_bias_correction"]


def test_rounding_only_on_a_range_split_model_keeps_every_grid():
    """learn_steps=False: calibration's tensor parameters stay (the split tensor's grid still ends
    at its clamp), the rounding is learned, and the FP32 target clamps the split squeeze as the
    model does: with an unclamped target, calibration's own Fire block would start far from it."""
    from edgesqueeze.quant.reconstruct import reconstruct

    torch.set_num_threads(min(2, torch.get_num_threads()))
    qm, fp32, pixels = _calibrated("affine", range_split=("fire2.squeeze",))
    clip = next(f.squeeze_clip for f in qm.arch.fires if f.name == "fire2")
    assert clip > 0 and math.isclose(qm.tensors["fire2.squeeze"].scale * 255, clip, rel_tol=1e-6)
    with pytest.raises(OptionError, match="range-split.*learn_steps=False"):
        reconstruct(qm, fp32, pixels, iterations=2, batch_size=4)
    with pytest.raises(OptionError, match="nothing to learn"):
        reconstruct(qm, fp32, pixels, iterations=2, learn_rounding=False, learn_steps=False)
    out, report = reconstruct(qm, fp32, pixels, iterations=ITERATIONS, batch_size=8, learn_rounding=True,
                              learn_steps=False, measure_start=True)
    assert out.tensors == qm.tensors
    assert sum(int((c.weight != qm.convs[n].weight).sum()) for n, c in out.convs.items()) > 0
    start, end = report["fire2"]
    assert start > 15.0, report  # the split block against its clamped FP32 output
    assert end > start - 0.5, report
    assert np.isfinite(run_int8(out, pixels).logits).all()


def test_fp32_target_of_a_split_fire_block_is_the_model_output():
    """The FP32 side of a range-split Fire block clamps its squeeze at T as the split model
    does; unclamped, the expand convs would read y + (y - T) where y > T."""
    from edgesqueeze.data import normalize
    from edgesqueeze.quant.reconstruct import _Conv, _forward, blocks

    qm, fp32, pixels = _calibrated("affine", n=8, range_split=("fire2.squeeze",))
    clip = next(f.squeeze_clip for f in qm.arch.fires if f.name == "fire2")
    seen = []
    fp32.eval()
    with torch.no_grad():
        fp32(torch.from_numpy(normalize(pixels, fp32.arch.preprocess)), tap=lambda n, t: seen.append((n, t)))
    names = [n for n, _ in seen]
    x, want = seen[names.index("fire2.squeeze") - 1][1], dict(seen)["fire2.concat"]
    assert float(dict(seen)["fire2.squeeze"].max()) == pytest.approx(clip)  # the clamp is reached
    blk = next(b for b in blocks(qm) if b.name == "fire2")
    params = fp32.numpy_params()

    def target(clamped: bool):
        convs = {}
        for name in blk.convs:
            w, b = (np.asarray(a, np.float64) for a in params[name])
            convs[name] = _Conv(torch, w, b, qm.convs[name].weight_scale, 127, qm.convs[name].spec)
            convs[name].clip = clip if clamped and name == "fire2.squeeze" else 0.0
        with torch.no_grad():
            return _forward(torch, blk, x, convs, None, 255, fp=True)

    torch.testing.assert_close(target(True), want, rtol=1e-4, atol=1e-4)
    assert float((target(False) - want).abs().max()) > 1e-2  # what the clamp is there for
