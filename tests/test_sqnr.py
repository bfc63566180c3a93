"""Per-layer SQNR: torch's exact float32 convolutions give the integer reference's integers, so
the figures equal the numpy reference's to the last bit."""

from __future__ import annotations

import numpy as np
import pytest


def test_per_layer_sqnr_same_with_exact_float32_convs(dc_quantized_pair, dc_split, eval_pixels):
    pytest.importorskip("torch")
    from edgesqueeze.evaluate import per_layer_sqnr
    from edgesqueeze.exact_conv import ExactFloat32Conv

    qm, fp32 = dc_quantized_pair
    items = dc_split[1][:6]
    pixels = eval_pixels[0][:6]
    slow = per_layer_sqnr(fp32, qm, items, batch_size=4)
    fast = per_layer_sqnr(fp32, qm, items, batch_size=4, pixels=pixels, conv_kernel=ExactFloat32Conv())
    assert list(fast) == list(slow) and len(slow) > 20
    assert fast == slow
    assert all(np.isfinite(v) for v in slow.values())


def test_per_layer_sqnr_refuses_pixels_of_another_count(dc_quantized_pair, dc_split, eval_pixels):
    from edgesqueeze.evaluate import per_layer_sqnr

    qm, fp32 = dc_quantized_pair
    with pytest.raises(ValueError, match="3 decoded images for 2 items"):
        per_layer_sqnr(fp32, qm, dc_split[1][:2], pixels=eval_pixels[0][:3])


def test_per_layer_sqnr_refuses_a_float_model_that_was_not_quantized(dc_model, dc_quantized, dc_split):
    """The range-split model has more squeeze channels than the released weights: comparing them
    is refused with the fix, not a broadcasting error."""
    from edgesqueeze.errors import OptionError
    from edgesqueeze.evaluate import per_layer_sqnr

    with pytest.raises(OptionError, match="pass calibrate_and_quantize's third result"):
        per_layer_sqnr(dc_model, dc_quantized, dc_split[1][:2])
