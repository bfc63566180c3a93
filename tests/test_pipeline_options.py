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
    assert (r.method, r.bias_correction, r.empirical_bias_correction, r.equalize) == (Method.KL, True, True, 0.0)
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
