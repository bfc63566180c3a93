"""benchmarks/cv_options.py's paired comparison: a pooled SQNR gain carried by a few images is
told apart from one most images share."""

from __future__ import annotations

import numpy as np
import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def cv():
    return load_script("benchmarks/cv_options.py")


def _case(n=200, classes=10, seed=1):
    rng = np.random.default_rng(seed)
    fp = rng.normal(size=(n, classes)) * 5
    noise = rng.normal(size=(n, classes))
    return fp, noise


def test_a_gain_every_image_shares_has_an_interval_above_zero(cv):
    fp, noise = _case()
    base = fp + noise
    factor = np.random.default_rng(2).uniform(0.5, 0.9, (len(fp), 1))  # every image's error shrinks
    better = fp + factor * noise
    c = cv.compare(fp, base, better)
    e = lambda q: ((q - fp) ** 2).sum()  # noqa: E731
    assert c.gain_db == pytest.approx(10 * np.log10(e(base) / e(better)), abs=1e-9)
    assert 0 < c.ci_low_db < c.gain_db < c.ci_high_db and c.closer_share == 1.0
    back = cv.compare(fp, better, base)  # the other way round: the mirror image
    assert back.gain_db == pytest.approx(-c.gain_db) and back.closer_share == 0.0 and back.ci_high_db < 0


def test_a_gain_from_a_few_images_is_not_called_one(cv):
    """Worse by 20 % on 99 % of the images, far better on the 2 with the largest errors: the
    pooled SQNR rises, but the interval reaches below zero (a resample leaves both out with
    probability e^-2) and few images came closer."""
    fp, noise = _case()
    base = fp + noise
    base[:2] += 12 * noise[:2]  # two images with large errors
    other = fp + np.sqrt(1.2) * noise
    c = cv.compare(fp, base, other)
    assert c.gain_db > 1.0
    assert c.ci_low_db < 0 < c.ci_high_db
    assert c.closer_share == pytest.approx(0.01)
    assert "[" in c.cell() and c.cell().endswith(", 1 %")


def test_the_interval_is_reproducible_and_shapes_are_checked(cv):
    fp, noise = _case(n=50)
    a, b = fp + noise, fp + 0.9 * noise[::-1]
    assert cv.compare(fp, a, b) == cv.compare(fp, a, b)
    assert cv.compare(fp, a, b, seed=1) != cv.compare(fp, a, b, seed=2)
    with pytest.raises(ValueError, match="same >= 2 images"):
        cv.compare(fp, a, b[:10])


def test_markdown_tables_are_compact_or_padded_with_the_same_cells():
    from edgesqueeze.metrics import format_table

    headers, rows = ["variant", "logit SQNR"], [["affine", "30.06 dB"], ["... no split", float("nan")]]
    assert format_table(headers, rows, compact=True).splitlines() == [
        "| variant | logit SQNR |", "|---|---|", "| affine | 30.06 dB |", "| ... no split | n/a |"]
    padded = format_table(headers, rows).splitlines()
    assert padded[0] == "| variant      | logit SQNR |" and padded[1] == "|--------------|------------|"
    assert [c.strip() for c in padded[3].strip("|").split("|")] == ["... no split", "n/a"]
