"""Range search on the logits and per-pair equalization strength, on the tiny arch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny():
    from edgesqueeze.data import LabelledImage
    from edgesqueeze.model import SqueezeNet
    from test_quant import smooth_pixels, tiny_arch, tiny_params

    arch = tiny_arch()
    model = SqueezeNet.from_params(arch, tiny_params(arch, seed=3))
    pixels = smooth_pixels(np.random.default_rng(7), 16, noise=6.0)
    items = [LabelledImage(f"never-read-{i}.jpg", -1) for i in range(len(pixels))]
    return model, items, pixels


@pytest.fixture(scope="module")
def calibrated(tiny):
    from edgesqueeze.evaluate import fp32_logits
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model, items, pixels = tiny
    qm, _, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(adaptive_rounding=False), pixels=pixels)
    return qm, fp32_logits(model, pixels)


def test_with_unchanged_ranges_is_the_same_model(calibrated):
    from edgesqueeze.quant.range_search import owners, with_ranges

    qm, _ = calibrated
    same = with_ranges(qm, {o: tuple(qm.calibration["ranges"][o]) for o in owners(qm)})
    assert same.tensors == qm.tensors
    for name, c in qm.convs.items():
        np.testing.assert_array_equal(same.convs[name].bias, c.bias)


def test_shrinking_a_range_shares_it_and_rescales_the_readers_bias(calibrated):
    from edgesqueeze.quant.range_search import with_ranges

    qm, _ = calibrated
    lo, hi = qm.calibration["ranges"]["fire2.concat"]
    m = with_ranges(qm, {"fire2.concat": (lo * 0.5, hi * 0.5)})
    p = m.tensors["fire2.concat"]
    assert p.scale == pytest.approx(qm.tensors["fire2.concat"].scale * 0.5, rel=1e-6)
    # the expand convs write into the concat, and the pool after it keeps its parameters
    assert m.tensors["fire2.expand1x1"] == m.tensors["fire2.expand3x3"] == p
    readers = [c for c in qm.convs.values() if c.input in ("fire2.concat", "pool3")]
    assert readers
    for c in readers:  # half the input step: twice the accumulator steps for the same bias
        np.testing.assert_allclose(m.convs[c.name].bias, 2.0 * c.bias.astype(np.float64), atol=1.0)
    untouched = [c for c in qm.convs.values() if c not in readers]
    for c in untouched:
        np.testing.assert_array_equal(m.convs[c.name].bias, c.bias)


def test_a_resumed_run_matches_the_whole_run_and_leaves_its_tensors_alone(calibrated, tiny):
    """run_int8 resumed mid-graph (what the search does per candidate) gives the whole run's
    logits and tensors, and never writes into the arrays it resumed from."""
    from edgesqueeze.quant.reference import run_int8

    qm, _ = calibrated
    pixels = tiny[2][:6]
    whole = run_int8(qm, pixels, keep=True)
    np.testing.assert_array_equal(whole.logits, run_int8(qm, pixels).logits)
    before = {k: v.copy() for k, v in whole.tensors.items()}
    names = [n.name for n in qm.nodes]
    for at in ("fire3.squeeze", "fire2.expand1x1"):  # the latter: a concat rebuilt from its first conv
        again = run_int8(qm, pixels, keep=True, start=names.index(at), tensors=whole.tensors)
        np.testing.assert_array_equal(again.logits, whole.logits)
        for k, v in whole.tensors.items():
            np.testing.assert_array_equal(again.tensors[k], v)
            np.testing.assert_array_equal(v, before[k])
    # another model (fire2.concat's range halved) resumed from this run's tensors: its own whole
    # run's logits, and this run's arrays untouched
    from edgesqueeze.quant.range_search import owners, with_ranges

    base = {o: tuple(qm.calibration.get("ranges", {}).get(o) or qm.tensors[o].range()) for o in owners(qm)}
    cand = with_ranges(qm, {**base, "fire2.concat": (base["fire2.concat"][0] / 2, base["fire2.concat"][1] / 2)})
    resumed = run_int8(cand, pixels, keep=True, start=names.index("fire2.expand1x1"), tensors=whole.tensors)
    np.testing.assert_array_equal(resumed.logits, run_int8(cand, pixels).logits)
    assert not np.array_equal(resumed.tensors["fire2.concat"], whole.tensors["fire2.concat"])
    for k, v in whole.tensors.items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="keep=True"):
        run_int8(qm, pixels, start=3, tensors=whole.tensors)


def test_searched_ranges_never_score_below_min_max_and_run_in_the_reference(calibrated, tiny):
    from edgesqueeze.metrics import sqnr_db
    from edgesqueeze.quant.range_search import SEARCH_FACTORS, owners, search_ranges, with_ranges
    from edgesqueeze.quant.reference import run_int8

    qm, fp32 = calibrated
    pixels = tiny[2]
    ranges, report = search_ranges(qm, pixels, fp32)
    assert set(ranges) == set(owners(qm))
    assert set(report.factors.values()) <= set(SEARCH_FACTORS)
    before = sqnr_db(fp32, run_int8(qm, pixels).logits)
    after = sqnr_db(fp32, run_int8(with_ranges(qm, ranges), pixels).logits)
    assert report.sqnr_before_db == pytest.approx(before, abs=1e-9)
    assert report.sqnr_after_db == pytest.approx(after, abs=1e-9)
    assert after >= before
    for o, (lo, hi) in ranges.items():
        base = qm.calibration["ranges"][o]
        assert hi == pytest.approx(base[1] * report.factors[o]) and lo <= 0 <= hi


@pytest.mark.parametrize("groups", [2, 3])
def test_each_group_of_images_gains_from_every_kept_shrink(calibrated, tiny, groups):
    """The consensus rule: a kept shrink raised the score on every interleaved group, so the
    final ranges score at least the starting ones on each group, not only on the whole set."""
    from edgesqueeze.metrics import sqnr_db
    from edgesqueeze.quant.range_search import search_ranges, with_ranges
    from edgesqueeze.quant.reference import run_int8

    qm, fp32 = calibrated
    pixels = tiny[2]
    ranges, report = search_ranges(qm, pixels, fp32, groups=groups)
    before = run_int8(qm, pixels).logits
    after = run_int8(with_ranges(qm, ranges), pixels).logits
    kept = [f for f in report.factors.values() if f != 1.0]
    for g in range(groups):
        part = np.arange(g, len(pixels), groups)
        b, a = sqnr_db(fp32[part], before[part]), sqnr_db(fp32[part], after[part])
        assert a > b if kept else a == b


def test_bad_factors_and_tensors_are_named(calibrated, tiny):
    from edgesqueeze.errors import OptionError
    from edgesqueeze.quant.range_search import search_ranges

    qm, fp32 = calibrated
    with pytest.raises(OptionError, match="factors"):
        search_ranges(qm, tiny[2], fp32, factors=(1.2,))
    with pytest.raises(OptionError, match="fire2.expand1x1"):
        search_ranges(qm, tiny[2], fp32, order=["fire2.expand1x1"])
    with pytest.raises(OptionError, match="groups=0 must be an integer from 1 to the 16"):
        search_ranges(qm, tiny[2], fp32, groups=0)


def test_per_pair_alphas_come_from_the_allowed_set_and_the_least_error(tiny):
    from edgesqueeze.calibrate import ChannelMaxima
    from edgesqueeze.data import normalize
    from edgesqueeze.quant.eq_search import EQ_ALPHAS, choose_alphas
    from edgesqueeze.quant.equalize import equalization_pairs

    import torch

    model, _, pixels = tiny
    maxima = ChannelMaxima(t for t, _, _ in equalization_pairs(model.arch))
    with torch.no_grad():
        model(torch.from_numpy(normalize(pixels, model.arch.preprocess)), tap=maxima.tap)
    chosen, errors = choose_alphas(model, pixels[:8], maxima.result())
    assert set(chosen) == {t for t, _, _ in equalization_pairs(model.arch)}
    for t, a in chosen.items():
        assert a in EQ_ALPHAS
        assert errors[t][a] == min(errors[t].values()) and all(e >= 0 for e in errors[t].values())
    # one allowed strength: every pair takes it, with the same error as among the others
    only, errs = choose_alphas(model, pixels[:8], maxima.result(), alphas=(0.0,))
    assert set(only.values()) == {0.0}
    for t in only:
        assert errs[t][0.0] == pytest.approx(errors[t][0.0], rel=1e-9) and errs[t][0.0] > 0


def test_equalize_per_pair_mapping_matches_the_global_strength():
    from edgesqueeze.quant.equalize import equalization_pairs, equalize
    from test_quant import tiny_arch, tiny_params

    arch = tiny_arch()
    params = tiny_params(arch, seed=1)
    rng = np.random.default_rng(0)
    maxima = {t: rng.uniform(0.1, 5.0, params[p[0]][0].shape[0] if len(p) == 1 else
                             sum(params[x][0].shape[0] for x in p)) for t, p, _ in equalization_pairs(arch)}
    one, f1 = equalize(arch, params, maxima, alpha=0.5)
    per, f2 = equalize(arch, params, maxima, alpha={t: 0.5 for t in maxima})
    for k in one:
        np.testing.assert_array_equal(one[k][0], per[k][0])
    none, f0 = equalize(arch, params, maxima, alpha={})
    assert all(np.all(s == 1.0) for s in f0.values())


@pytest.mark.parametrize("kw", [dict(range_search=True), dict(equalize_per_layer=True)])
def test_pipeline_options_run_and_stay_off_by_default(tiny, kw):
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.reference import run_int8

    default = QuantizeOptions.make()
    assert not default.range_search and not default.equalize_per_layer
    model, items, pixels = tiny
    qm, _, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(adaptive_rounding=False, **kw),
                                      pixels=pixels)
    out = run_int8(qm, pixels[:4]).logits
    assert out.shape == (4, model.arch.num_classes) and np.isfinite(out).all()
    if "range_search" in kw:
        assert qm.calibration["range_search"]["images"] == len(pixels)
