"""benchmarks/noise_budget.py's core functions on the tiny arch built in code (no shared data):
the fake quantization against the integer reference, the unquantized float path, the budget's
shares and the per-channel grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from scripts import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "noise_budget.py"


@pytest.fixture(scope="module")
def nb():
    return load_script("benchmarks/noise_budget.py")


@pytest.fixture(scope="module")
def setup():
    """As the script: the default options calibrated on the even-numbered images, measured on the odd."""
    from edgesqueeze.data import LabelledImage
    from edgesqueeze.evaluate import fp32_logits
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from test_quant import smooth_pixels, tiny_arch, tiny_params

    arch = tiny_arch()
    model = SqueezeNet.from_params(arch, tiny_params(arch, seed=3))
    pixels = smooth_pixels(np.random.default_rng(7), 32, noise=6.0)
    train, test = pixels[0::2], pixels[1::2]
    items = [LabelledImage(f"never-read-{i}.jpg", -1) for i in range(len(train))]
    qm, _, eq = calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=()), pixels=train)
    return qm, eq.numpy_params(), train, test, fp32_logits(model, test)


def test_fake_quantization_of_everything_is_the_integer_reference(nb, setup):
    """Both round the same real values to the same grids: they differ only where float32 lands a
    value on the other side of a rounding tie (one LSB, rarely), so their difference must be far
    below the quantization noise itself (20 dB: a hundredth of its power), and the SQNRs agree
    well within the script's 1 dB check."""
    from edgesqueeze.metrics import sqnr_db
    from edgesqueeze.quant.sensitivity import reference_logits

    qm, _, _, test, fp32 = setup
    ref = reference_logits(qm, test)
    fake = nb.forward(qm.arch, nb.dequantized_params(qm), test, nb.tensor_grids(qm, list(nb.producers(qm))),
                      raw_input=True)
    quant_noise_db = sqnr_db(fp32, ref)
    assert 10.0 < quant_noise_db < 60.0  # a quantized model, not the float one
    assert sqnr_db(ref, fake) > quant_noise_db + 20.0
    assert abs(sqnr_db(fp32, fake) - quant_noise_db) < 0.2 * nb.TOLERANCE_DB


def test_nothing_quantized_is_the_fp32_model(nb, setup):
    """The equalized float graph with no grid gives the original FP32 logits up to float32
    rounding (equalization only rescales channels)."""
    from edgesqueeze.metrics import sqnr_db

    qm, params, _, test, fp32 = setup
    assert sqnr_db(fp32, nb.forward(qm.arch, params, test, {})) > 100.0


def test_owners_and_their_tensors(nb, setup):
    qm = setup[0]
    prod = nb.producers(qm)
    assert prod["fire2.concat"] == ["fire2.expand1x1", "fire2.expand3x3"]
    assert prod["conv1"] == ["conv1"] and "pool1" not in prod
    assert sorted(t for ts in prod.values() for t in ts) == sorted(qm.convs)  # every conv once, nothing else
    for owner, ts in prod.items():
        assert all(qm.tensors[t] == qm.tensors[owner] for t in ts)


def test_budget_rows(nb, setup):
    from edgesqueeze.metrics import sqnr_db

    qm, params, train, test, fp32 = setup
    channels = nb.channel_grids(qm, params, train)
    rows = nb.budget(qm, params, channels, test, fp32)
    assert [r[0] for r in rows] and sorted(r[0] for r in rows) == sorted(nb.producers(qm))
    assert sum(r[2] for r in rows) == pytest.approx(100.0, abs=1e-9)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    # the largest share is the lowest single-tensor SQNR (same signal power in every row)
    assert rows[0][1] == min(r[1] for r in rows)
    everything = sqnr_db(fp32, nb.forward(qm.arch, params, test, nb.tensor_grids(qm, list(nb.producers(qm)))))
    assert all(np.isfinite(r[1]) and np.isfinite(r[3]) and r[1] > everything - 1.0 for r in rows)


def test_per_channel_grids_are_never_coarser(nb, setup):
    """Each channel's range lies inside its tensor's (the same calibration images, the same
    equalized model; float32 rounding of the two passes aside), so its step is never larger."""
    qm, params, train, _, _ = setup
    channels = nb.channel_grids(qm, params, train)
    assert set(channels) == {t for ts in nb.producers(qm).values() for t in ts}
    finer = 0
    for t, (scale, zp) in channels.items():
        assert scale.shape == zp.shape == (qm.convs[t].weight.shape[0],)
        assert np.all(scale <= np.float32(qm.tensors[t].scale) * (1 + 1e-5)), t
        finer += int(np.sum(scale < 0.99 * qm.tensors[t].scale))
    assert finer > 0


def test_fake_quant_on_a_grid(nb):
    import torch

    x = torch.tensor([-3.0, -0.2, 0.0, 0.74, 0.76, 1e6]).reshape(1, 6, 1, 1)
    per_tensor = nb.fake_quant(x, (np.float32(0.5), np.float32(-10)))
    np.testing.assert_allclose(per_tensor.flatten().numpy(), [-3.0, 0.0, 0.0, 0.5, 1.0, 68.5])  # (127+10)*0.5
    per_channel = nb.fake_quant(x, (np.full(6, 0.5, np.float32), np.full(6, -10, np.float32)))
    np.testing.assert_array_equal(per_channel.numpy(), per_tensor.numpy())


def test_no_shared_data_exits_2(nb, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EDGESQUEEZE_SHARED", str(tmp_path / "absent"))
    assert nb.main([]) == 2
    assert "EDGESQUEEZE_SHARED" in capsys.readouterr().err
