"""Weights -> calibration -> QuantizedModel, the steps `edgesqueeze quantize` runs (torch).

    model, qm, stats = calibrate_and_quantize(calibration_items, scheme=..., method=...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .calibrate import Method, as_method, choose_range, collect_stats
from .data import DEFAULT_CALIBRATION_FRACTION, SPLIT_SALT, LabelledImage
from .errors import DataError
from .quant.params import QuantizedModel, Scheme, parse_enum
from .quant.quantize import quantize_model

MIN_CALIBRATION_IMAGES = {Method.MINMAX: 1, Method.PERCENTILE: 8, Method.MSE: 8, Method.KL: 8}


@dataclass(frozen=True)
class QuantizeOptions:
    scheme: Scheme = Scheme.AFFINE
    method: Method = Method.MINMAX
    bias_correction: bool = True
    percentile: float = 99.99

    @classmethod
    def make(cls, *, scheme: Scheme | str = Scheme.AFFINE, method: Method | str = Method.MINMAX,
             bias_correction: bool = True, percentile: float = 99.99) -> "QuantizeOptions":
        """Checked once on entry: unknown names raise OptionError listing the allowed ones."""
        return cls(parse_enum(Scheme, scheme, "scheme"), as_method(method), bool(bias_correction), float(percentile))


def quantize_from_stats(model, stats, options: QuantizeOptions, *, labels: Sequence[str] = (),
                        calibration: dict | None = None) -> QuantizedModel:
    ranges = {n: choose_range(s, options.method, percentile=options.percentile) for n, s in stats.items()}
    means = ({n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}
             if options.bias_correction else None)
    info = {"method": options.method.value, "bias_correction": options.bias_correction,
            "ranges": {n: list(r) for n, r in ranges.items()}, **(calibration or {})}
    return quantize_model(model.arch, model.numpy_params(), ranges, scheme=options.scheme,
                          labels=tuple(labels), calibration=info, channel_means=means)


def calibrate_and_quantize(model, items: Sequence[LabelledImage], options: QuantizeOptions, *,
                           labels: Sequence[str] = (), batch_size: int = 32,
                           progress: Callable[[int], None] | None = None):
    """(QuantizedModel, stats). `items` are the calibration images (never the evaluation ones)."""
    need = MIN_CALIBRATION_IMAGES[options.method]
    if len(items) < need:
        raise DataError(f"{len(items)} calibration image(s) is too few for method "
                        f"'{options.method.value}' (needs at least {need}); give more images or use --method minmax")
    stats = collect_stats(model, items, batch_size=batch_size, progress=progress)
    calibration = {"images": len(items),
                   "split": f"sha256('{SPLIT_SALT}' + name) < {DEFAULT_CALIBRATION_FRACTION:.4f}"}
    return quantize_from_stats(model, stats, options, labels=labels, calibration=calibration), stats
