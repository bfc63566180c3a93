"""benchmarks/range_split_cost.py without shared data or timing: its MAC count on the tiny arch
(plain and range-split) against a hand count, its refusal of a model whose weights disagree with
its arch, the split/plain ratios and table rows from made-up timings, and exit status 2 when the
shared data is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from scripts import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "range_split_cost.py"
TENSOR = "fire2.squeeze"


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/range_split_cost.py")


@pytest.fixture(scope="module")
def pair():
    """(tiny arch as built, plain quantized model, range-split quantized model); cheap options."""
    from test_pipeline_options import _tiny

    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = _tiny(n=12, seed=4)
    cheap = dict(adaptive_rounding=False, empirical_bias_correction=False)
    plain = calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=(), **cheap), pixels=pixels)[0]
    split = calibrate_and_quantize(model, items, QuantizeOptions.make(range_split=(TENSOR,), **cheap),
                                   pixels=pixels)[0]
    return model.arch, plain, split


def _hand_count(arch, extra: int = 0) -> dict[str, int]:
    """Per conv, from Arch.shapes() (each layer's spatial size) and the layer table; `extra`
    channels added to fire2's squeeze output (read by both of its expand convs)."""
    shapes = arch.shapes()
    c1 = arch.conv1
    out = {"conv1": shapes["conv1"][1] ** 2 * c1.out_channels * c1.in_channels * c1.kernel ** 2}
    for f in arch.fires:
        s2 = shapes[f.name][1] ** 2
        sq = f.squeeze + (extra if f.name == "fire2" else 0)
        out[f"{f.name}.squeeze"] = s2 * f.in_channels * sq
        out[f"{f.name}.expand1x1"] = s2 * sq * f.expand1x1
        out[f"{f.name}.expand3x3"] = s2 * sq * f.expand3x3 * 9
    out["conv10"] = shapes["conv10"][1] ** 2 * arch.num_classes * arch.fires[-1].out_channels
    return out


def test_mac_count_matches_a_hand_count(script, pair):
    arch, plain, split = pair
    rec, = split.calibration["range_split"]
    k = rec["extra_channels"]
    assert k > 0 and rec["tensor"] == TENSOR
    plain_macs, split_macs = script.conv_macs(plain), script.conv_macs(split)
    assert plain_macs == _hand_count(arch)  # the arch as built, not the quantized model's own
    assert split_macs == _hand_count(arch, extra=k)
    changed = {n for n in split_macs if split_macs[n] != plain_macs[n]}
    assert changed == {"fire2.squeeze", "fire2.expand1x1", "fire2.expand3x3"}
    f = arch.fires[0]
    s2 = arch.shapes()["fire2"][1] ** 2
    assert sum(split_macs.values()) - sum(plain_macs.values()) == s2 * k * (f.in_channels + f.expand1x1
                                                                            + 9 * f.expand3x3)


def test_mac_count_refuses_weights_that_disagree_with_the_arch(script, pair):
    _, plain, split = pair
    with pytest.raises(RuntimeError, match="fire2.expand1x1.*fire2.expand3x3.*fire2.squeeze"):
        script.conv_macs(replace(split, convs=plain.convs))  # split arch, unsplit weights


def _times(per_round: int, rounds: int, base: dict[str, float], slow_round: int) -> dict:
    """Made-up interleaved_ms output: every runner's time per call is its base (ms) times 3 in
    `slow_round` (background load hitting every runner alike): split2 = plain x 1.1 on ONNX,
    split3 = plain x 1.2 on both runtimes."""
    factor = {("ONNX", "split2"): 1.1, ("ONNX", "split3"): 1.2, ("TFLite", "split3"): 1.2}
    out = {}
    for r in ("ONNX", "TFLite"):
        for v in ("plain", "split2", "split3"):
            for t in (1, 2):
                ms = base[r] / t * factor.get((r, v), 1.0)
                out[(r, v, t)] = [ms * (3.0 if i // per_round == slow_round else 1.0)
                                  for i in range(per_round * rounds)]
    return out


def test_ratios_and_rows(script):
    times = _times(per_round=3, rounds=5, base={"ONNX": 20.0, "TFLite": 40.0}, slow_round=1)
    times[("TFLite", "split2", 2)][-1] = 1e6  # one outlier moves neither the medians nor the quartiles
    stats, ratios = script.summarize(times, per_round=3)
    assert stats[("ONNX", "plain", 1)] == {"median_ms": 20.0, "p90_ms": pytest.approx(60.0), "runs": 15}
    assert stats[("ONNX", "split2", 2)]["median_ms"] == pytest.approx(11.0)
    assert set(ratios) == {(r, v, t) for r in ("ONNX", "TFLite") for v in ("split2", "split3") for t in (1, 2)}
    for t in (1, 2):
        assert ratios[("ONNX", "split2", t)] == pytest.approx({"ratio": 1.1, "q25": 1.1, "q75": 1.1})
        assert ratios[("TFLite", "split2", t)] == pytest.approx({"ratio": 1.0, "q25": 1.0, "q75": 1.0})
        assert ratios[("TFLite", "split3", t)] == pytest.approx({"ratio": 1.2, "q25": 1.2, "q75": 1.2})
    rows = script.table_rows({"plain": 1000, "split2": 1039, "split3": 1078}, stats, ratios)
    assert [r[0].split(" (")[0] for r in rows] == [f"INT8 {r} {v}" for r in ("ONNX", "TFLite")
                                                   for v in ("plain", "split2", "split3")]
    assert all(len(r) == len(script.HEADERS) for r in rows)
    assert [r[2] for r in rows] == ["+0.00 %", "+3.90 %", "+7.80 %"] * 2
    assert rows[1][3:5] == ["22.00", "11.00"] and rows[0][5:] == ["-", "-"]
    assert rows[1][5].startswith("1.100 ") and rows[4][6].startswith("1.000 ") and rows[5][5].startswith("1.200 ")


def test_exits_2_without_shared_data(tmp_path):
    env = {**os.environ, "EDGESQUEEZE_SHARED": str(tmp_path / "missing")}
    env.pop("EDGESQUEEZE_WEIGHTS", None)
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, p.stderr
    assert "EDGESQUEEZE_SHARED" in p.stderr and p.stdout == ""


def test_exits_2_when_the_shared_folder_lacks_the_labels(script, tmp_path, monkeypatch, capsys):
    (tmp_path / "imagenet").mkdir()
    monkeypatch.setenv("EDGESQUEEZE_SHARED", str(tmp_path))
    assert script.main(["--quick", "--markdown"]) == 2
    out = capsys.readouterr()
    assert "sample_labels.csv" in out.err and out.out == ""


def test_runs_must_be_positive(script):
    with pytest.raises(SystemExit) as e:
        script.parse_args(["--runs", "0"])
    assert e.value.code == 2
    assert script.parse_args([]).split == ["fire2.squeeze"] and script.parse_args([]).pieces is None
    assert script.parse_args(["--pieces", "2", "3"]).pieces == [2, 3]
    assert np.isclose(script.FULL.calib_images, 96)
