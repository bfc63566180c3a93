"""What a model file says about itself, so the runtime needs nothing but the file.

Every exported model carries one `ModelMetadata` as JSON (ONNX: metadata_props key
"edgesqueeze"; TFLite: a metadata buffer). The input contract is the same for every file:

    input  uint8, NHWC (1, crop, crop, 3), channels in `channel_order`: a camera frame after
           `resize` and a centre crop; the file does its own normalisation
    output float32 (1, classes) "probability": the softmax of the float head's logits; ONNX
           files also output the "logits" themselves (export/ops.py, runtime.py)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..version import __version__
from ..arch import Preprocess
from ..errors import DataError

METADATA_KEY = "edgesqueeze"
PIXEL_FORMAT = "uint8 NHWC, resized (bilinear, cv2.INTER_LINEAR_EXACT) and centre-cropped, no normalisation"


@dataclass(frozen=True)
class ModelMetadata:
    arch: str
    preprocess: Preprocess
    labels: tuple[str, ...]
    scheme: str = "fp32"  # "fp32" | "affine" | "ristretto"
    input_layout: str = "NHWC"
    input_dtype: str = "uint8"
    pixel_format: str = PIXEL_FORMAT
    calibration: dict = field(default_factory=dict)  # method, images, split rule
    version: str = __version__

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    @property
    def channel_order(self) -> str:
        return self.preprocess.channel_order

    def to_json(self) -> str:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["labels"] = list(self.labels)
        d["input_size"] = self.input_size
        d["channel_order"] = self.channel_order
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "model") -> "ModelMetadata":
        try:
            d = json.loads(text)
            return cls(
                arch=str(d["arch"]),
                preprocess=Preprocess.from_dict(d["preprocess"]),
                labels=tuple(str(s) for s in d["labels"]),
                scheme=str(d.get("scheme", "fp32")),
                input_layout=str(d.get("input_layout", "NHWC")),
                input_dtype=str(d.get("input_dtype", "uint8")),
                pixel_format=str(d.get("pixel_format", PIXEL_FORMAT)),
                calibration=dict(d.get("calibration", {})),
                version=str(d.get("version", "?")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{source}: its edgesqueeze metadata is malformed ({type(e).__name__}: {e}); "
                "re-export the model with `edgesqueeze quantize`"
            ) from None


# What an INT8 file says about its calibration: how, on what, with which corrections. Not the
# per-tensor ranges or the empirical shifts (kilobytes; they live in calib/<name>.json).
CALIBRATION_SUMMARY_KEYS = ("method", "images", "split", "bias_correction", "equalize",
                            "empirical_bias_correction", "adaptive_rounding", "weight_bits")


def int8_metadata(qm) -> ModelMetadata:
    """The metadata both INT8 writers (ONNX and TFLite) embed for a QuantizedModel."""
    calibration = {k: qm.calibration[k] for k in CALIBRATION_SUMMARY_KEYS if k in qm.calibration}
    return ModelMetadata(arch=qm.arch.name, preprocess=qm.arch.preprocess, labels=tuple(qm.labels),
                         scheme=qm.scheme.value, calibration=calibration)
