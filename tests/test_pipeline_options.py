"""Quantization options: typed, checked once, scheme-dependent defaults."""

import pytest

pytest.importorskip("torch")

from edgesqueeze.calibrate import Method  # noqa: E402
from edgesqueeze.errors import OptionError  # noqa: E402
from edgesqueeze.pipeline import QuantizeOptions  # noqa: E402
from edgesqueeze.quant.params import Scheme  # noqa: E402


def test_scheme_defaults():
    a = QuantizeOptions.make()
    assert (a.scheme, a.method, a.bias_correction, a.equalize) == (Scheme.AFFINE, Method.MINMAX, True, 0.5)
    assert (a.empirical_bias_correction, a.adaptive_rounding) == (True, True)
    r = QuantizeOptions.make(scheme="ristretto")
    assert (r.method, r.bias_correction, r.empirical_bias_correction, r.equalize) == (Method.KL, True, True, 0.5)
    r2 = QuantizeOptions.make(scheme="ristretto", bias_correction=False, equalize=0.25, method="minmax")
    assert (r2.method, r2.bias_correction, r2.empirical_bias_correction, r2.equalize) == (Method.MINMAX, False, False, 0.25)
    r3 = QuantizeOptions.make(scheme="ristretto", bias_correction=False, empirical_bias_correction=True)
    assert (r3.bias_correction, r3.empirical_bias_correction) == (False, True)


@pytest.mark.parametrize("kw,needle", [(dict(scheme="int4"), "'affine', 'ristretto'"),
                                       (dict(method="median"), "minmax"),
                                       (dict(equalize=1.5), "equalize=1.5")])
def test_bad_options_named(kw, needle):
    with pytest.raises(OptionError, match=needle):
        QuantizeOptions.make(**kw)


def test_too_few_images_for_method():
    from edgesqueeze.data import LabelledImage
    from edgesqueeze.errors import DataError
    from edgesqueeze.model import squeezenet1_1
    from edgesqueeze.pipeline import calibrate_and_quantize

    with pytest.raises(DataError, match="too few.*kl"):
        calibrate_and_quantize(squeezenet1_1(), [LabelledImage("a.jpg", -1)] * 3, QuantizeOptions.make(method="kl"))


# ---------------------------------------------------------------- the passes, on a tiny arch


def _tiny(n=13, seed=4):
    import numpy as np

    from edgesqueeze.data import LabelledImage
    from edgesqueeze.model import SqueezeNet
    from test_quant import smooth_pixels, tiny_arch, tiny_params

    arch = tiny_arch()
    model = SqueezeNet.from_params(arch, tiny_params(arch, seed=seed))
    pixels = smooth_pixels(np.random.default_rng(seed + 1), n, noise=6.0)
    items = [LabelledImage(f"never-read-{i}.jpg", -1) for i in range(n)]  # pixels= : nothing is read
    return model, items, pixels


def _separate_steps(model, pixels, options, batch_size):
    """The steps of calibrate_and_quantize one by one, each with its own pass over the pixels."""
    from dataclasses import replace

    from edgesqueeze.calibrate import collect_stats
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import conv_input_statistics, quantize_from_stats
    from edgesqueeze.quant.empirical import empirical_bias_correction
    from edgesqueeze.quant.equalize import equalize

    from edgesqueeze.calibrate import DEFAULT_BINS, Method

    bins = 0 if options.method is Method.MINMAX else DEFAULT_BINS
    stats = collect_stats(model, None, batch_size=batch_size, pixels=pixels, bins=bins)
    if options.equalize > 0:
        cmax = {n: s.channel_max for n, s in stats.items() if s.channel_max is not None}
        params, _ = equalize(model.arch, model.numpy_params(), cmax, alpha=options.equalize)
        model = SqueezeNet.from_params(model.arch, params)
        stats = collect_stats(model, None, batch_size=batch_size, pixels=pixels, bins=bins)
    if options.range_split:
        from edgesqueeze.quant.range_split import split_squeeze

        for t in options.range_split:
            arch, params, _ = split_squeeze(model.arch, model.numpy_params(), t, stats[t].channel_max)
            model = SqueezeNet.from_params(arch, params)
        stats = collect_stats(model, None, batch_size=batch_size, pixels=pixels, bins=bins)
    conv = conv_input_statistics(model, pixels, batch_size=batch_size, patches=options.adaptive_rounding)
    qm = quantize_from_stats(model, stats, options,
                             patch_moments=conv.patch_moments if options.adaptive_rounding else None)
    if options.empirical_bias_correction:
        qm, shifts = empirical_bias_correction(qm, pixels, conv.preactivation_means)
        qm = replace(qm, calibration={**qm.calibration, "shifts": shifts})
    return qm, stats


@pytest.mark.parametrize("kw", [{}, dict(equalize=0.0), dict(adaptive_rounding=False),
                                dict(empirical_bias_correction=False), dict(method="mse"), dict(range_split=())])
def test_fused_passes_compute_what_the_separate_steps_compute(kw):
    import numpy as np

    from edgesqueeze.pipeline import calibrate_and_quantize

    model, items, pixels = _tiny()
    options = QuantizeOptions.make(**kw)
    qm, stats, _ = calibrate_and_quantize(model, items, options, batch_size=5, pixels=pixels)
    ref, ref_stats = _separate_steps(model, pixels, options, 5)
    assert list(stats) == list(ref_stats)
    for name, s in stats.items():
        r = ref_stats[name]
        assert s == r, name
        for key in ("channel_mean", "channel_max"):
            a, b = getattr(s, key), getattr(r, key)
            assert (a is None and b is None) or np.array_equal(a, b), (name, key)
    assert qm.tensors == ref.tensors
    for name, c in qm.convs.items():
        for key in ("weight", "weight_scale", "bias"):
            np.testing.assert_array_equal(getattr(c, key), getattr(ref.convs[name], key), err_msg=f"{name}.{key}")
    if options.empirical_bias_correction:
        assert qm.calibration["empirical_shift_mean_acc_steps"] == {
            k: round(v, 2) for k, v in ref.calibration["shifts"].items()}
    if options.adaptive_rounding:
        assert qm.calibration["adaptive_rounding_gain_db"] == ref.calibration["adaptive_rounding_gain_db"]


@pytest.mark.parametrize("kw,names", [
    ({}, ["statistics", "statistics and conv inputs (equalized)", "empirical bias correction"]),
    (dict(equalize=0.0, range_split=()), ["statistics and conv inputs", "empirical bias correction"]),
    # without equalization the range split needs a pass of its own for the channel maxima
    (dict(equalize=0.0), ["statistics", "statistics and conv inputs", "empirical bias correction"]),
    (dict(adaptive_rounding=False, empirical_bias_correction=False), ["statistics", "statistics (equalized)"]),
    (dict(equalize=0.0, adaptive_rounding=False, empirical_bias_correction=False, range_split=()), ["statistics"]),
])
@pytest.mark.parametrize("batch_size", [5, 10])
def test_on_pass_names_every_pass_and_counts_its_images(kw, names, batch_size):
    from edgesqueeze.pipeline import MAXIMA_BATCH, calibrate_and_quantize

    model, items, pixels = _tiny()
    calls, progress = [], []
    options = QuantizeOptions.make(**kw)
    calibrate_and_quantize(model, items, options, batch_size=batch_size, pixels=pixels,
                           on_pass=lambda *a: calls.append(a), progress=progress.append)
    seen = []
    for name, done, total in calls:
        assert total == len(items)
        if not seen or seen[-1][0] != name:
            assert done == 0, (name, done)  # a pass starts at 0
            seen.append((name, []))
        seen[-1][1].append(done)
    assert [name for name, _ in seen] == names
    fp32_batches = []
    # the first of two FP32 passes keeps maxima only (for equalization or the range split)
    maxima_first = len([n for n, _ in seen if n != "empirical bias correction"]) > 1
    for k, (name, counts) in enumerate(seen):
        assert counts[-1] == len(items), name  # and ends with every image
        assert all(b > a for a, b in zip(counts, counts[1:])), (name, counts)
        if name != "empirical bias correction":  # after every batch; the first pass only keeps
            size = min(batch_size, MAXIMA_BATCH) if k == 0 and maxima_first else batch_size
            assert counts == [0, *range(size, len(items), size), len(items)], (name, counts)
            fp32_batches += [b - a for a, b in zip(counts, counts[1:])]
    # the images-per-batch callback counts the FP32 statistics passes' batches
    assert progress == fp32_batches


def test_pixels_are_checked():
    from edgesqueeze.errors import DataError
    from edgesqueeze.pipeline import calibrate_and_quantize

    model, items, pixels = _tiny()
    with pytest.raises(DataError, match="12 rows of pixels for 13 images"):
        calibrate_and_quantize(model, items, QuantizeOptions.make(), pixels=pixels[:12])


def test_decoding_in_the_first_pass_gives_the_pixels_result(tmp_path):
    import numpy as np

    cv2 = pytest.importorskip("cv2")
    from edgesqueeze.data import LabelledImage, load_pixels
    from edgesqueeze.pipeline import calibrate_and_quantize

    model, _, _ = _tiny()
    rng = np.random.default_rng(9)
    items = []
    for i in range(9):
        p = tmp_path / f"img{i}.png"
        assert cv2.imwrite(str(p), cv2.GaussianBlur(rng.integers(0, 256, (48, 52, 3), dtype=np.uint8), (5, 5), 0))
        items.append(LabelledImage(p, -1))
    options = QuantizeOptions.make()
    a, _, _ = calibrate_and_quantize(model, items, options, batch_size=4)
    b, _, _ = calibrate_and_quantize(model, items, options, batch_size=4, pixels=load_pixels(items, model.arch.preprocess))
    assert a.tensors == b.tensors
    for name, c in a.convs.items():
        np.testing.assert_array_equal(c.weight, b.convs[name].weight)
        np.testing.assert_array_equal(c.bias, b.convs[name].bias)


def test_minmax_statistics_skip_the_histogram_and_keep_everything_else():
    """min/max reads only min and max: the pipeline collects no histogram for it, and every
    other figure equals the one collected with a histogram."""
    import numpy as np

    from edgesqueeze.calibrate import choose_range, collect_stats
    from edgesqueeze.errors import DataError
    from edgesqueeze.pipeline import calibrate_and_quantize

    model, items, pixels = _tiny()
    _, stats, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(equalize=0.0, range_split=()), batch_size=5,
                                         pixels=pixels)
    full = collect_stats(model, None, batch_size=5, pixels=pixels)
    _, kl_stats, _ = calibrate_and_quantize(model, items, QuantizeOptions.make(equalize=0.0, method="kl", range_split=()),
                                            batch_size=5, pixels=pixels)
    for name, s in stats.items():
        f = full[name]
        assert s.bins == 0 and f.bins > 0 and kl_stats[name].bins == f.bins, name
        assert (s.min, s.max, s.count, s.bound) == (f.min, f.max, f.count, f.bound), name
        assert choose_range(s, "minmax") == choose_range(f, "minmax")
        for key in ("channel_mean", "channel_max"):
            a, b = getattr(s, key), getattr(f, key)
            assert (a is None and b is None) or np.array_equal(a, b), (name, key)
    name = next(iter(stats))
    with pytest.raises(DataError, match="collected without one.*bins=2048"):
        choose_range(stats[name], "kl")
    # and the saved form round-trips without a histogram
    from edgesqueeze.calibrate import TensorStats

    assert TensorStats.from_dict(stats[name].to_dict()) == stats[name]
