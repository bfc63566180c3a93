"""evaluate.compare: the accuracy-tracking row (top-1/top-5, drop, agreement, logit SQNR)."""

from __future__ import annotations

import numpy as np
import pytest

from edgesqueeze.evaluate import compare


def test_compare_reports_logit_sqnr():
    """eval's continuous column: 10 log10(sum ref^2 / sum err^2), infinite when identical."""
    ref = np.array([[3.0, 4.0, 0.0], [0.0, 1.0, 2.0]])
    labels = np.array([1, 2])
    assert compare("same", ref.copy(), ref, labels).logit_sqnr_db == float("inf")
    noisy = ref + np.array([[0.3, -0.4, 0.0], [0.0, 0.0, 0.0]])  # error power 0.25, signal 30
    c = compare("noisy", noisy, ref, labels)
    assert c.logit_sqnr_db == pytest.approx(10 * np.log10(30 / 0.25))
    assert c.to_dict()["logit_sqnr_db"] == c.logit_sqnr_db and c.agreement == 100.0
