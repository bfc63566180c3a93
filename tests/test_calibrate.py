"""Tests for edgesqueeze.calibrate: streaming observers, range choice, collect_stats, files.

Fixtures are built in code (random tensors, small JPEGs written under tmp_path, a randomly
initialised SqueezeNet v1.1). The one test on the real Deep-Compression weights and the shared
ImageNet sample is marked `shared`.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgesqueeze import graph  # noqa: E402
from edgesqueeze.calibrate import (  # noqa: E402
    DEGENERATE_RANGE,
    KL_EPSILON,
    Method,
    Observer,
    TensorStats,
    choose_range,
    choose_ranges,
    collect_stats,
    kl_divergences,
    load_stats,
    merge_stats,
    save_stats,
)
from edgesqueeze.data import LabelledImage, preprocess_file  # noqa: E402
from edgesqueeze.errors import DataError, OptionError  # noqa: E402
from edgesqueeze.arch import TORCHVISION_PREPROCESS, squeezenet1_1_arch  # noqa: E402
from edgesqueeze.model import SqueezeNet  # noqa: E402

RNG_SEED = 1234
# a v1.1 on 64x64 crops: every layer is there (conv1 31x31 .. conv10 3x3), ~12x less work than 224
SMALL_PRE = replace(TORCHVISION_PREPROCESS, resize=72, crop=64)


def tiny_squeezenet(bypass="none") -> SqueezeNet:
    return SqueezeNet(squeezenet1_1_arch(bypass=bypass, num_classes=10).with_preprocess(SMALL_PRE))


def observe(*arrays, name="t", bins=2048) -> TensorStats:
    o = Observer(name, bins)
    for a in arrays:
        o.update(torch.from_numpy(np.asarray(a, np.float32)))
    return o.stats()


def reference_hist(values: np.ndarray, bound: float, bins: int = 2048) -> np.ndarray:
    """np.histogram in float64 over [-bound, bound]: the ground truth for the observer."""
    return np.histogram(values.astype(np.float64), bins=bins, range=(-bound, bound))[0]


# ---------------------------------------------------------------- Observer


def test_observer_min_max_count_exact_and_hist_total():
    rng = np.random.default_rng(RNG_SEED)
    batches = [rng.normal(0, s, size=(4, 3, 5, 7)).astype(np.float32) for s in (0.1, 1.0, 0.5, 7.0)]
    st = observe(*batches)
    allv = np.concatenate([b.ravel() for b in batches])
    assert st.min == float(allv.min()) and st.max == float(allv.max())
    assert st.count == allv.size
    assert int(st.hist.sum()) == st.count
    assert st.hist.dtype == np.int64 and st.hist.size == 2048
    # bound: the smallest power of two >= max|x|
    amax = float(np.abs(allv).max())
    assert st.bound >= amax and st.bound / 2 < amax and math.log2(st.bound).is_integer()


def test_observer_first_bound_floor_and_power_of_two():
    assert observe(np.zeros(10)).bound == 2.0**-20
    assert observe(np.array([0.0, 3.0])).bound == 4.0
    assert observe(np.array([-4.0, 1.0])).bound == 4.0  # exactly a power of two: kept
    assert observe(np.array([0.0, 4.0000005])).bound == 8.0


def test_doubling_merge_matches_one_histogram_over_the_final_range():
    rng = np.random.default_rng(RNG_SEED)
    small = rng.uniform(-0.3, 0.3, 200_000).astype(np.float32)  # bound 0.5
    large = rng.uniform(-5.0, 5.0, 200_000).astype(np.float32)  # bound 8: four doublings
    st = observe(small, large)
    assert st.bound == 8.0
    both = np.concatenate([small, large])
    ref = reference_hist(both, 8.0)
    assert int(st.hist.sum()) == both.size == int(ref.sum())
    # values drawn from a continuous distribution almost never sit on a bin edge: at most a
    # few values may land one bin off through float32 rounding, so the cumulative counts at
    # every edge agree within 2, and nearly every bin agrees exactly
    assert np.abs(np.cumsum(st.hist) - np.cumsum(ref)).max() <= 2
    assert (st.hist == ref).mean() > 0.99
    # the small batch's mass stays where it belongs: only the bins covering [-0.3, 0.3]
    # hold more than the large batch alone puts there
    only_large = reference_hist(large, 8.0)
    extra = np.flatnonzero(st.hist - only_large > 2)
    edges = np.linspace(-8, 8, 2049)
    assert edges[extra.min()] >= -0.3 - 16 / 2048 and edges[extra.max() + 1] <= 0.3 + 16 / 2048
    assert extra.size >= 70  # 0.6 wide / 16/2048 per bin = 77 bins


def test_doubling_merge_exact_on_bin_centres():
    # values at the centres of the final bins are far from every edge: exact equality
    step = 16 / 2048
    rng = np.random.default_rng(RNG_SEED)
    k_small = rng.integers(1024 - 30, 1024 + 30, 5000)  # within [-0.23, 0.23]
    k_large = rng.integers(0, 2048, 5000)
    centre = lambda k: (-8.0 + (k + 0.5) * step).astype(np.float32)  # noqa: E731
    st = observe(centre(k_small), centre(k_large))
    assert st.bound == 8.0
    assert np.array_equal(st.hist, np.bincount(np.concatenate([k_small, k_large]), minlength=2048))


def test_observer_counts_beyond_float32_histc_precision():
    # torch.histc counts in float32 (exact to 2**24): a bigger batch must still count exactly
    n = 2**24 + 1001
    o = Observer("big")
    o.update(torch.zeros(n))
    st = o.stats()
    assert st.count == n and int(st.hist.sum()) == n and st.hist[1024] == n


def test_observer_zeros_sit_in_the_bin_above_zero():
    st = observe(np.maximum(np.random.default_rng(0).normal(size=10_000), 0))
    assert st.min == 0.0
    assert st.hist[:1024].sum() == 0  # nothing negative
    assert st.hist[1024] >= 4000  # ReLU zeros: bin 1024 = [0, step)


def test_observer_rejects_nan_and_inf_naming_the_tensor():
    o = Observer("fire3.squeeze")
    o.update(torch.ones(4))
    with pytest.raises(DataError, match=r"NaN in activations of fire3\.squeeze; check the weights"):
        o.update(torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(DataError, match=r"Inf in activations of conv1"):
        Observer("conv1").update(torch.tensor([1.0, float("inf")]))
    with pytest.raises(DataError, match="conv10"):
        Observer("conv10").update(torch.tensor([-float("inf"), 0.0]))
    # the failed update left the earlier statistics intact
    st = o.stats()
    assert st.count == 4 and st.max == 1.0


def test_observer_bins_must_be_divisible_by_4():
    with pytest.raises(OptionError, match="divisible by 4"):
        Observer("x", bins=1022)
    assert observe(np.arange(10.0), bins=64).hist.size == 64


def test_merge_stats_equals_observing_the_concatenation():
    rng = np.random.default_rng(RNG_SEED)
    a = np.maximum(rng.normal(0, 0.2, 50_000), 0).astype(np.float32)
    b = np.maximum(rng.normal(0, 9.0, 50_000), 0).astype(np.float32)
    merged = merge_stats("cat", [observe(a), observe(b)])
    direct = observe(np.concatenate([a, b]))
    assert (merged.min, merged.max, merged.count, merged.bound) == (direct.min, direct.max, direct.count, direct.bound)
    assert np.abs(np.cumsum(merged.hist) - np.cumsum(direct.hist)).max() <= 2


def test_tensor_stats_is_read_only_and_compares_by_value():
    st = observe(np.arange(5.0))
    with pytest.raises(ValueError):
        st.hist[0] = 3
    assert st == TensorStats.from_dict(st.to_dict())
    assert st != observe(np.arange(6.0))


# ---------------------------------------------------------------- choose_range


@pytest.fixture(scope="module")
def dists():
    rng = np.random.default_rng(RNG_SEED)
    n = 1_000_000
    arrays = {
        "uniform": rng.random(n),
        "relu_gauss": np.maximum(rng.standard_normal(n), 0),
        "exponential": rng.exponential(1.0, n),
        "gauss": rng.standard_normal(n),
        "skewed": np.concatenate([rng.uniform(-1.0, 0.0, n // 10), rng.exponential(2.0, n - n // 10)]),
    }
    return {k: (v.astype(np.float32), observe(v)) for k, v in arrays.items()}


def test_minmax_is_exact_with_zero_included(dists):
    for a, st in dists.values():
        lo, hi = choose_range(st, Method.MINMAX)
        assert lo == min(float(a.min()), 0.0) and hi == max(float(a.max()), 0.0)
    assert choose_range(observe(np.array([2.0, 3.0])), "minmax") == (0.0, 3.0)
    assert choose_range(observe(np.array([-2.0, -1.0])), "minmax") == (-2.0, 0.0)


def test_percentile_on_uniform(dists):
    a, st = dists["uniform"]
    lo, hi = choose_range(st, "percentile", percentile=99.0)
    assert lo == 0.0 and abs(hi - 0.99) <= 0.005
    assert abs(choose_range(st, "percentile", percentile=50.0)[1] - 0.5) <= 0.005
    assert choose_range(st, "percentile", percentile=100.0)[1] == pytest.approx(float(a.max()))
    a, st = dists["exponential"]
    assert choose_range(st, "percentile", percentile=99.9)[1] == pytest.approx(np.quantile(a, 0.999), rel=0.01)
    with pytest.raises(OptionError, match="percentile"):
        choose_range(st, "percentile", percentile=0)


def test_mse_clips_a_relu_gaussian_between_its_quantiles_and_max(dists):
    a, st = dists["relu_gauss"]
    lo, hi = choose_range(st, "mse")
    assert lo == 0.0
    assert np.quantile(a, 0.999) < hi < 0.95 * float(a.max())
    # the search really minimises: a brute-force error at a few thresholds is not smaller
    def err(t):
        clipped = np.minimum(a.astype(np.float64), t)
        return ((a - clipped) ** 2).sum() + (a <= t).sum() * (t / 255) ** 2 / 12
    assert err(hi) <= min(err(0.8 * hi), err(1.2 * hi), err(float(a.max())))


@pytest.mark.parametrize("name", ["relu_gauss", "exponential", "uniform"])
def test_power_of_two_mse_picks_the_best_ristretto_grid(dists, name):
    """ristretto + MSE: the range is one of Ristretto's clips 127 * 2**(il-8), and it is the one
    with the least real squared error on the very samples (grid: symmetric int8, step 2**(il-8))."""
    from edgesqueeze.quant.quantize import power_of_two_qparams

    a, st = dists[name]
    a = a.astype(np.float64)
    lo, hi = choose_range(st, "mse", power_of_two=True)
    assert lo == 0.0 and 0 < hi <= float(a.max())
    il_max = math.ceil(math.log2(float(a.max()))) + 1

    def err(il):
        s = 2.0 ** (il - 8)
        return ((np.clip(np.rint(a / s), -128, 127) * s - a) ** 2).sum()

    chosen = 8 - power_of_two_qparams(lo, hi).fractional_length  # the il the scheme will use
    assert il_max - 8 < chosen <= il_max
    errors = {il: err(il) for il in range(il_max - 7, il_max + 1)}
    # the histogram's bin-centre model may pick a neighbour of equal quality, never a worse grid
    assert errors[chosen] <= min(errors.values()) * 1.05
    if name == "uniform":  # nothing to gain by clipping a bounded distribution
        assert chosen == il_max


def test_kl_clips_a_long_tail_and_keeps_a_bounded_distribution(dists):
    a, st = dists["exponential"]
    lo, hi = choose_range(st, "kl")
    assert lo == 0.0 and np.quantile(a, 0.999) < hi < 0.95 * float(a.max())
    a, st = dists["uniform"]
    lo, hi = choose_range(st, "kl")
    assert lo == 0.0 and hi >= 0.97 * float(a.max()) and hi <= float(a.max())
    # a ReLU tensor (half zeros) is not clipped to a fraction of its range (the zero bin fix)
    a, st = dists["relu_gauss"]
    assert choose_range(st, "kl")[1] > np.quantile(a, 0.999)


def test_kl_closed_form_matches_a_direct_computation():
    rng = np.random.default_rng(RNG_SEED)
    h = rng.integers(0, 50, 300).astype(np.int64)
    h[rng.random(300) < 0.2] = 0  # empty bins inside, and
    h[250:299] = 0  # an empty run before a last outlier bin: Q needs smoothing there
    h[299] = 7
    nq = 16
    cand, kl = kl_divergences(h, nq)

    def direct(i):
        p = h[:i].astype(np.float64)
        p[-1] += h[i:].sum()
        m = i // nq
        q = np.zeros(i)
        for j in range(nq):
            s, e = j * m, (i if j == nq - 1 else (j + 1) * m)
            nz = p[s:e] > 0
            if nz.any():
                q[s:e][nz] = max(h[s:e].sum(), KL_EPSILON) / nz.sum()
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        return float((p[mask] * np.log(p[mask] / q[mask])).sum())

    assert list(cand) == list(range(nq, 301))
    np.testing.assert_allclose(kl, [direct(i) for i in cand], rtol=1e-9, atol=1e-12)


def test_negative_values_give_a_symmetric_threshold(dists):
    a, st = dists["gauss"]
    for m in ("percentile", "mse"):
        lo, hi = choose_range(st, m)
        assert lo == -hi and 0 < hi < float(a.max())
    lo, hi = choose_range(st, "kl")  # symmetric threshold t, then clipped to [min, max]
    t = max(-lo, hi)
    assert lo == max(-t, float(a.min())) and hi == min(t, float(a.max()))
    # mostly positive with small negatives: the threshold is clipped to [min, max]
    a, st = dists["skewed"]
    for m in Method:
        lo, hi = choose_range(st, m)
        assert float(a.min()) <= lo < 0 < hi <= float(a.max())
    assert choose_range(st, "percentile", percentile=99.0)[0] == float(a.min())


def test_ranges_always_contain_zero_and_stay_within_min_max(dists):
    for a, st in dists.values():
        for m in Method:
            lo, hi = choose_range(st, m)
            assert lo <= 0.0 <= hi and hi - lo > 0
            assert lo >= min(float(a.min()), 0.0) and hi <= max(float(a.max()), 0.0)


def test_degenerate_stats_give_a_small_positive_range():
    zero = observe(np.zeros((2, 3, 4, 4)))
    empty = Observer("empty").stats()
    tiny_negative = observe(np.array([-1e-9, 0.0]))
    for st in (zero, empty, tiny_negative):
        for m in Method:
            lo, hi = choose_range(st, m)
            assert math.isfinite(lo) and math.isfinite(hi) and hi - lo > 0 and lo <= 0 <= hi
    assert choose_range(zero, "kl") == (0.0, DEGENERATE_RANGE)
    assert choose_range(tiny_negative, "mse") == (-DEGENERATE_RANGE, DEGENERATE_RANGE)
    # almost all zeros with a few tiny positives: still a usable range
    lo, hi = choose_range(observe(np.r_[np.zeros(100_000), 1e-3]), "percentile", percentile=99.0)
    assert lo == 0.0 and hi > 0


def test_unknown_method_lists_the_allowed_ones(dists):
    st = dists["uniform"][1]
    with pytest.raises(OptionError) as e:
        choose_range(st, "entropy")
    msg = str(e.value)
    assert "'entropy'" in msg and all(n in msg for n in ("minmax", "percentile", "mse", "kl"))
    assert choose_range(st, "KL") == choose_range(st, Method.KL)  # names are case-insensitive
    with pytest.raises(OptionError, match="num_levels"):
        choose_range(st, "mse", num_levels=1)


# ---------------------------------------------------------------- collect_stats


def _write_images(folder, n, size=(64, 80)):
    rng = np.random.default_rng(RNG_SEED)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        p = folder / f"img{i}.jpg"
        assert cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp("calib_images"), 4)


def _tensor_sizes(model) -> dict[str, int]:
    sizes = {}
    x = torch.zeros(1, 3, model.arch.input_size, model.arch.input_size)
    with torch.no_grad():
        model.eval()(x, tap=lambda n, t: sizes.__setitem__(n, t[0].numel()))
    return sizes


@pytest.mark.parametrize("bypass", ["none", "complex"])
def test_collect_stats_on_a_tiny_squeezenet(tiny_images, bypass):
    torch.manual_seed(0)
    model = tiny_squeezenet(bypass)
    model.train()
    done = []
    items = [tiny_images[0], LabelledImage(tiny_images[1], 3), *tiny_images[2:]]
    stats = collect_stats(model, items, batch_size=3, bins=512, progress=done.append)
    assert done == [3, 1]
    assert model.training  # restored
    nodes = graph.lower(model.arch)
    assert list(stats) == ["input"] + [n.name for n in nodes] and list(stats)[-1] == "logits"
    sizes = _tensor_sizes(model)
    for n in nodes:
        st = stats[n.name]
        assert st.name == n.name and st.hist.size == 512
        assert st.count == len(items) * sizes[n.name], n.name
        assert int(st.hist.sum()) == st.count
        if n.relu or n.kind is graph.OpKind.CONCAT or bypass == "none":  # no bypass: all ReLU'd
            assert st.min >= 0.0, n.name
    if bypass == "complex":
        assert any(stats[n.name].min < 0 for n in nodes if n.kind is graph.OpKind.CONV and not n.relu)
    # the merged concat statistics equal observing the concat tensor itself
    direct = {}
    x = np.concatenate([preprocess_file(p, model.arch.preprocess) for p in tiny_images])

    def tap(name, t):
        if name.endswith(".concat"):
            direct.setdefault(name, Observer(name, 512)).update(t)

    with torch.no_grad():
        model.eval()(torch.from_numpy(x[:3]), tap=tap)
        model(torch.from_numpy(x[3:]), tap=tap)
    for name, o in direct.items():
        d, m = o.stats(), stats[name]
        assert (d.min, d.max, d.count, d.bound) == (m.min, m.max, m.count, m.bound)
        assert np.abs(np.cumsum(d.hist) - np.cumsum(m.hist)).max() <= 2


def _same_stats(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name] == b[name], name  # min, max, count, bound, histogram
        for key in ("channel_mean", "channel_max"):
            x, y = getattr(a[name], key), getattr(b[name], key)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (name, key)


def test_collect_stats_from_pixels_equals_from_files(tiny_images):
    from edgesqueeze.calibrate import pixel_batches
    from edgesqueeze.data import load_pixels

    model = tiny_squeezenet()
    pre = model.arch.preprocess
    from_files = collect_stats(model, tiny_images, batch_size=3)
    pixels = load_pixels(tiny_images, pre)
    _same_stats(collect_stats(model, tiny_images, batch_size=3, pixels=pixels), from_files)
    _same_stats(collect_stats(model, None, batch_size=3, pixels=pixels), from_files)
    # decoding once into a store gives those pixels
    store = np.zeros_like(pixels)
    batches = list(pixel_batches(tiny_images, pre, 3, store=store))
    assert [len(b) for b in batches] == [3, 1]
    np.testing.assert_array_equal(store, pixels)
    with pytest.raises(DataError, match="3 rows of pixels for 4 images"):
        collect_stats(model, tiny_images, pixels=pixels[:3])
    with pytest.raises(DataError, match="uint8"):
        collect_stats(model, tiny_images, pixels=pixels.astype(np.float32))


def test_channel_sums_in_chunks_and_scratch():
    from edgesqueeze import calibrate

    x = torch.randn(5, 4, 30, 30) * 3
    whole = x.sum(dim=(0, 2, 3), dtype=torch.float64)
    scratch = calibrate.Scratch()
    old = calibrate._SUM_CHUNK
    try:
        calibrate._SUM_CHUNK = 2 * 4 * 30 * 30  # two images per partial sum
        chunked = calibrate.channel_sums(x)
        assert torch.equal(calibrate.channel_sums(x, scratch), chunked)  # scratch: the same values
        assert torch.allclose(chunked, whole, rtol=1e-13, atol=1e-12)
    finally:
        calibrate._SUM_CHUNK = old
    assert torch.equal(calibrate.channel_sums(x), whole)  # one chunk: one sum


def test_channel_maxima_are_the_observers():
    from edgesqueeze.calibrate import ChannelMaxima

    model = tiny_squeezenet().eval()
    names = ["conv1", "fire2.squeeze", "fire2.concat"]
    maxima = ChannelMaxima(names)
    x = torch.randn(6, 3, 64, 64)
    obs = {}

    def tap(name, t):
        maxima.tap(name, t)
        if name in ("conv1", "fire2.squeeze", "fire2.expand1x1", "fire2.expand3x3"):
            obs.setdefault(name, Observer(name, 512)).update(t)

    with torch.no_grad():
        model(x[:4], tap=tap)
        model(x[4:], tap=tap)
    got = maxima.result()
    assert set(got) == set(names)
    np.testing.assert_array_equal(got["conv1"], obs["conv1"].stats().channel_max)
    concat = merge_stats("fire2.concat", [obs["fire2.expand1x1"].stats(), obs["fire2.expand3x3"].stats()])
    np.testing.assert_array_equal(got["fire2.concat"], concat.channel_max)
    with pytest.raises(DataError, match="NaN or Inf in activations of conv1"):
        ChannelMaxima(["conv1"]).tap("conv1", torch.full((1, 2, 2, 2), float("nan")))


def test_collect_stats_errors(tmp_path, tiny_images):
    model = tiny_squeezenet()
    with pytest.raises(DataError, match="no calibration images"):
        collect_stats(model, [])
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(DataError, match="notes.jpg"):
        collect_stats(model, [tiny_images[0], bad])
    with pytest.raises(OptionError, match="batch_size"):
        collect_stats(model, tiny_images, batch_size=0)


def test_collect_stats_nan_weights_name_the_tensor(tiny_images):
    model = tiny_squeezenet()
    with torch.no_grad():
        dict(model.named_convs())["fire3.squeeze"].bias[0] = float("nan")
    with pytest.raises(DataError, match=r"NaN in activations of fire3\.squeeze"):
        collect_stats(model, tiny_images[:1])


def test_collect_stats_all_black_images_give_usable_ranges(tmp_path):
    p = tmp_path / "black.png"
    cv2.imwrite(str(p), np.zeros((40, 40, 3), np.uint8))
    model = tiny_squeezenet()
    with torch.no_grad():  # zero biases and a black (negative after normalisation) input
        for _, conv in model.named_convs():
            conv.weight.zero_()
    stats = collect_stats(model, [p])
    assert stats["conv1"].max == 0.0
    for st in stats.values():
        for m in Method:
            lo, hi = choose_range(st, m)
            assert hi - lo > 0 and math.isfinite(hi)


# ---------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, dists):
    stats = {k: TensorStats(k, st.min, st.max, st.count, st.hist, st.bound) for k, (_, st) in dists.items()}
    path = tmp_path / "calib.json"
    save_stats(stats, path, meta={"weights": "squeezenet1_0-dc", "images": 3})
    loaded, meta = load_stats(path)
    assert meta == {"weights": "squeezenet1_0-dc", "images": 3}
    assert list(loaded) == list(stats) and all(loaded[k] == stats[k] for k in stats)
    assert choose_ranges(loaded, "mse") == choose_ranges(stats, "mse")
    assert not (tmp_path / "calib.json.tmp").exists()


def test_load_stats_malformed(tmp_path, dists):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        load_stats(p)
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not a calibration statistics file"):
        load_stats(p)
    with pytest.raises(DataError, match="cannot read"):
        load_stats(tmp_path / "missing.json")

    good = tmp_path / "good.json"
    save_stats({"a": dists["uniform"][1]}, good)
    doc = json.loads(good.read_text())

    def broken(change, match):
        d = json.loads(json.dumps(doc))
        change(d["tensors"][0])
        p.write_text(json.dumps(d))
        with pytest.raises(DataError, match=match):
            load_stats(p)

    broken(lambda t: t.__setitem__("count", t["count"] + 1), "histogram holds")
    broken(lambda t: t.pop("bound"), "missing bound")
    broken(lambda t: t.__setitem__("hist", t["hist"][:-1]), "bins")
    broken(lambda t: t.__setitem__("bound", -1.0), "bound")
    broken(lambda t: t.__setitem__("hist", ["x"] * len(t["hist"])), "list of integers")
    broken(lambda t: t.__setitem__("max", 1e9), "outside the histogram bound")


# ---------------------------------------------------------------- real data


@pytest.mark.shared
def test_calibrate_deep_compression_on_real_images(dc_params, shared):
    from edgesqueeze.data import read_labels_csv, split_calibration

    arch, params = dc_params
    model = SqueezeNet.from_params(arch, params)
    calib, _ = split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))
    stats = collect_stats(model, calib[:8], batch_size=4)
    nodes = graph.lower(arch)
    assert list(stats) == ["input"] + [n.name for n in nodes]
    assert stats["conv1"].max > 0
    for n in nodes:
        st = stats[n.name]
        assert st.count > 0 and int(st.hist.sum()) == st.count
        if n.relu:
            assert st.min == 0.0, n.name
        for m in Method:
            lo, hi = choose_range(st, m)
            assert lo == 0.0 < hi <= st.max, (n.name, m)
