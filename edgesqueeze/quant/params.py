"""The quantized graph as plain data: schemes, per-tensor QParams, quantized convs (numpy only).

A `QuantizedModel` is everything an exporter or the integer reference needs: the lowered graph,
every 8-bit tensor's scale and zero point, and each conv's int8 weights, per-channel scales and
int32 bias. It saves to a readable JSON (the parameters, per layer) plus an NPZ (the integer
arrays), so calibration runs once and export runs many times.

Conventions (TFLite's int8 spec, which ONNX QDQ also expresses):
- activations int8, real = scale * (q - zero_point); one scale/zero point per tensor;
- weights int8 symmetric per output channel (zero point 0), stored OHWI as TFLite wants;
- bias int32, scale = input scale * weight scale[c], zero point 0;
- every scale is a float32 value (kept as a Python float that is exactly a float32), because the
  runtimes compute requantization in float32 from the file's float32 scales.

Float-kept convs (`float_convs`, empty by default). A conv named there runs in float32 between
a dequantize of its int8 input and a quantize to its output tensor's own parameters: its
float32 weights (OHWI) and bias are in `float_weights`; its int8 weights stay in `convs` (the
graph keeps one QConv per conv) but are not used. Every tensor stays int8, so the rest of the
graph is unchanged. The JSON lists the names under "float_convs" (absent: none) and the NPZ
holds `<name>/float_weight` and `<name>/float_bias`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from ..arch import Arch, Bypass, ConvSpec, FireSpec, Preprocess
from ..errors import DataError, OptionError
from ..graph import Node, lower

FORMAT_VERSION = 1


class Scheme(str, Enum):
    """`affine`: TFLite/ONNX integer spec — per-channel symmetric int8 weights, asymmetric int8
    activations, scales from the calibrated range.
    `ristretto`: Ristretto's dynamic fixed point — power-of-two scales everywhere, symmetric
    (zero point 0) weights per layer (or per channel) and activations per tensor (never-negative
    tensors optionally unsigned: zero point -128), integer length from the calibrated max;
    requantization reduces to a shift."""

    AFFINE = "affine"
    RISTRETTO = "ristretto"


def parse_enum(enum_cls, value, what: str):
    """Enum member from a member or its value; OptionError naming the allowed values."""
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise OptionError(f"{what}={value!r} is not one of {allowed}") from None


def f32(x: float) -> float:
    """Round to the nearest float32, kept as a Python float."""
    return float(np.float32(x))


@dataclass(frozen=True)
class QParams:
    """One tensor's int8 quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    @property
    def fractional_length(self) -> int | None:
        """Ristretto's fractional length fl when scale == 2**-fl, else None."""
        m, e = math.frexp(self.scale)
        return 1 - e if m == 0.5 else None

    def range(self) -> tuple[float, float]:
        """The real values of q = -128 and q = 127."""
        return self.scale * (-128 - self.zero_point), self.scale * (127 - self.zero_point)

    def to_dict(self) -> dict:
        d = {"scale": self.scale, "zero_point": self.zero_point}
        lo, hi = self.range()
        d["real_range"] = [lo, hi]
        fl = self.fractional_length
        if fl is not None:  # Ristretto's notation: integer length + fractional length = 8 bits
            d["integer_length"], d["fractional_length"] = 8 - fl, fl
            if self.zero_point == -128:  # unsigned: no sign bit, [0, 255 * 2**-fl]
                d["signed"] = False
        return d


@dataclass(frozen=True)
class QConv:
    """A quantized conv: int8 weight OHWI, per-channel float32 scales, int32 bias."""

    name: str
    spec: ConvSpec
    weight: np.ndarray  # int8 (O, kh, kw, I)
    weight_scale: np.ndarray  # float32 (O,)
    bias: np.ndarray  # int32 (O,)
    input: str  # tensor names
    output: str

    def real_multiplier(self, tensors: dict[str, QParams], *, dtype=np.float32) -> np.ndarray:
        """input_scale * weight_scale / output_scale per channel, in that order.

        float32 (default): as onnxruntime and LiteRT (XNNPACK) compute it. float64: as TFLite's
        reference kernels do before quantize_multiplier (kernel_util's effective scale is a
        double product of the float32 scales); computing that one in float32 moved
        tflite-runtime's logits by up to 0.2 against the fixed-point reference, in double they
        agree to 2e-5 (measured on the emulated Pi, 100 images)."""
        s_in = dtype(np.float32(tensors[self.input].scale))
        s_out = dtype(np.float32(tensors[self.output].scale))
        return (s_in * self.weight_scale.astype(np.float32).astype(dtype)) / s_out


@dataclass(frozen=True)
class QuantizedModel:
    arch: Arch
    scheme: Scheme
    tensors: dict[str, QParams]  # every int8 tensor, "input" included
    convs: dict[str, QConv]
    labels: tuple[str, ...] = ()
    calibration: dict = field(default_factory=dict)  # method, images, split rule, per-tensor ranges
    float_convs: tuple[str, ...] = ()  # convs run in float32 between dequantize and quantize (module doc)
    # name -> (float32 weight OHWI, float32 bias) for each name of float_convs
    float_weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return lower(self.arch)

    @property
    def weight_bits(self) -> int:
        """The weights' grid, [-(2^(b-1)-1), 2^(b-1)-1] in int8 (quantize.py); absent means 8."""
        return int(self.calibration.get("weight_bits", 8))

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write `<path>.json` (readable: scheme, per-tensor and per-layer parameters) and
        `<path>.npz` (int8 weights, float32 weight scales, int32 biases)."""
        path = Path(path)
        base = path.with_suffix("") if path.suffix in (".json", ".npz") else path
        jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
        arrays = {}
        layers = {}
        for name, c in self.convs.items():
            arrays[f"{name}/weight"] = c.weight
            arrays[f"{name}/weight_scale"] = c.weight_scale
            arrays[f"{name}/bias"] = c.bias
            ws = c.weight_scale.astype(np.float64)
            layers[name] = {
                "input": c.input, "output": c.output,
                "weight_scale_min": float(ws.min()), "weight_scale_max": float(ws.max()),
                **(_weight_fractional_lengths(ws) if self.scheme is Scheme.RISTRETTO else {}),
            }
        for name in self.float_convs:
            w, b = self.float_weights[name]
            arrays[f"{name}/float_weight"] = np.asarray(w, np.float32)
            arrays[f"{name}/float_bias"] = np.asarray(b, np.float32)
        doc = {
            "format": "edgesqueeze-quantized", "format_version": FORMAT_VERSION,
            "scheme": self.scheme.value, "arch": arch_to_dict(self.arch),
            "labels": list(self.labels), "calibration": self.calibration,
            "tensors": {n: q.to_dict() for n, q in self.tensors.items()},
            "convs": layers, "arrays": npath.name,
        }
        if self.float_convs:  # absent means none: all-integer files stay as they were
            doc["float_convs"] = list(self.float_convs)
        tmp_j, tmp_n = jpath.with_name(jpath.name + ".partial"), npath.with_name(npath.name + ".partial.npz")
        with open(tmp_n, "wb") as f:
            np.savez(f, **arrays)
        tmp_j.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp_n, npath)
        os.replace(tmp_j, jpath)
        return jpath, npath

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QuantizedModel":
        path = Path(path)
        jpath = path if path.suffix == ".json" else path.with_suffix(".json")
        try:
            doc = json.loads(jpath.read_text())
        except FileNotFoundError:
            raise DataError(f"{jpath}: no such quantization file; run `edgesqueeze quantize` first") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{jpath}: not readable JSON ({e})") from None
        try:
            if doc.get("format") != "edgesqueeze-quantized":
                raise ValueError("it is not an edgesqueeze quantization file (format key)")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {doc.get('format_version')} is not {FORMAT_VERSION}")
            arch = arch_from_dict(doc["arch"])
            scheme = parse_enum(Scheme, doc["scheme"], "scheme")
            tensors = {n: QParams(float(d["scale"]), int(d["zero_point"])) for n, d in doc["tensors"].items()}
            npath = jpath.with_name(doc["arrays"])
            with np.load(npath) as z:
                arrays = {k: z[k] for k in z.files}
            specs = {c.name: c for c in arch.convs()}
            convs = {}
            for name, d in doc["convs"].items():
                convs[name] = QConv(name, specs[name], arrays[f"{name}/weight"].astype(np.int8),
                                    arrays[f"{name}/weight_scale"].astype(np.float32),
                                    arrays[f"{name}/bias"].astype(np.int32), d["input"], d["output"])
            float_convs = doc.get("float_convs", [])
            if not isinstance(float_convs, list) or not all(isinstance(n, str) for n in float_convs):
                raise ValueError(f"float_convs {float_convs!r} is not a list of conv names")
            float_weights = {}
            for name in float_convs:
                if f"{name}/float_weight" not in arrays or f"{name}/float_bias" not in arrays:
                    raise ValueError(f"float conv {name} has no float_weight/float_bias in {npath.name}")
                float_weights[name] = (arrays[f"{name}/float_weight"].astype(np.float32),
                                       arrays[f"{name}/float_bias"].astype(np.float32))
            qm = cls(arch, scheme, tensors, convs, tuple(doc.get("labels", ())), dict(doc.get("calibration", {})),
                     tuple(float_convs), float_weights)
            validate(qm)
            return qm
        except DataError:
            raise
        except (KeyError, ValueError, TypeError, OSError, OptionError) as e:
            raise DataError(f"{jpath}: malformed quantization file: {type(e).__name__}: {e}; "
                            "re-run `edgesqueeze quantize`") from None


def _weight_fractional_lengths(ws: np.ndarray) -> dict:
    """Ristretto's weight fractional length(s): one number for a per-layer scale, a list for
    per-channel power-of-two scales."""
    fls = [QParams(float(w), 0).fractional_length for w in ws]
    if len(set(fls)) == 1:
        return {"weight_fractional_length": fls[0]}
    return {"weight_fractional_lengths": fls}


def validate(qm: QuantizedModel) -> None:
    """Every tensor and conv of the graph present, shapes and dtypes right, scales positive and
    finite, zero points in int8, concat inputs sharing the output's parameters. All problems at once."""
    problems = []
    bits = qm.calibration.get("weight_bits", 8)
    bits_ok = isinstance(bits, int) and not isinstance(bits, bool) and 4 <= bits <= 8
    if not bits_ok:
        problems.append(f"calibration weight_bits {bits!r} is not an integer in 4..8")
    for n, q in qm.tensors.items():
        if not (math.isfinite(q.scale) and q.scale > 0):
            problems.append(f"tensor {n}: scale {q.scale} is not positive and finite")
        if not -128 <= q.zero_point <= 127:
            problems.append(f"tensor {n}: zero point {q.zero_point} is outside int8")
    for node in qm.nodes:
        if node.kind.value == "mean":
            continue
        if node.name not in qm.tensors:
            problems.append(f"tensor {node.name} has no quantization parameters")
        if node.kind.value == "conv":
            c = qm.convs.get(node.name)
            spec = node.conv
            want = (spec.out_channels, spec.kernel, spec.kernel, spec.in_channels)
            if c is None:
                problems.append(f"conv {node.name} is missing")
            elif c.weight.shape != want or c.weight.dtype != np.int8:
                problems.append(f"conv {node.name}: weight {c.weight.dtype}{c.weight.shape}, need int8{want}")
            elif c.weight_scale.shape != (spec.out_channels,) or not (np.isfinite(c.weight_scale).all() and (c.weight_scale > 0).all()):
                problems.append(f"conv {node.name}: weight scales must be {spec.out_channels} positive finite values")
            elif c.bias.shape != (spec.out_channels,) or c.bias.dtype != np.int32:
                problems.append(f"conv {node.name}: bias must be int32 ({spec.out_channels},)")
            elif bits_ok and bits < 8 and np.abs(c.weight.astype(np.int16)).max() > 2 ** (bits - 1) - 1:
                problems.append(f"conv {node.name}: weights exceed the {bits}-bit grid "
                                f"±{2 ** (bits - 1) - 1} that calibration weight_bits says")
        if node.kind.value == "concat" and node.name in qm.tensors:
            for i in node.inputs:
                if qm.tensors.get(i) != qm.tensors[node.name]:
                    problems.append(f"concat {node.name}: input {i} does not share the output's scale/zero point")
    problems += _float_conv_problems(qm)
    if problems:
        raise DataError("invalid quantized model: " + "; ".join(problems))


def _float_conv_problems(qm: QuantizedModel) -> list[str]:
    """What is wrong with the float-kept convs: unknown or repeated names, missing or misshapen
    float32 weights, non-finite values, weights for a conv not listed."""
    problems = []
    specs = {c.name: c for c in qm.arch.convs()}
    if len(set(qm.float_convs)) != len(qm.float_convs):
        problems.append(f"float_convs {list(qm.float_convs)} names a conv twice")
    for name in qm.float_convs:
        spec = specs.get(name)
        if spec is None:
            problems.append(f"float conv {name!r} is not a conv of {qm.arch.name} (convs: {', '.join(specs)})")
            continue
        wb = qm.float_weights.get(name)
        if wb is None:
            problems.append(f"float conv {name} has no float32 weights")
            continue
        w, b = (np.asarray(a) for a in wb)
        want = (spec.out_channels, spec.kernel, spec.kernel, spec.in_channels)
        if w.shape != want or w.dtype != np.float32 or b.shape != (spec.out_channels,) or b.dtype != np.float32:
            problems.append(f"float conv {name}: weight {w.dtype}{w.shape} and bias {b.dtype}{b.shape}, "
                            f"need float32{want} and float32({spec.out_channels},)")
        elif not (np.isfinite(w).all() and np.isfinite(b).all()):
            problems.append(f"float conv {name}: weights or bias hold NaN or Inf")
    extra = sorted(set(qm.float_weights) - set(qm.float_convs))
    if extra:
        problems.append(f"float weights given for convs not in float_convs: {', '.join(extra)}")
    return problems


# ---------------------------------------------------------------- arch <-> JSON


def arch_to_dict(arch: Arch) -> dict:
    c = arch.conv1
    return {
        "name": arch.name,
        "conv1": {"out_channels": c.out_channels, "kernel": c.kernel, "stride": c.stride, "pad": c.pad},
        # a range-split Fire's clamp is a 7th entry; absent (0) otherwise, so other files are unchanged
        "fires": [[f.index, f.in_channels, f.squeeze, f.expand1x1, f.expand3x3, f.bypass.value]
                  + ([f.squeeze_clip] if f.squeeze_clip else []) for f in arch.fires],
        "pool_after": list(arch.pool_after), "num_classes": arch.num_classes,
        "final_pad": arch.final_pad, "ceil_mode": arch.ceil_mode,
        "preprocess": arch.preprocess.to_dict(),
    }


def arch_from_dict(d: dict) -> Arch:
    c = d["conv1"]
    bad = [f for f in d["fires"] if not isinstance(f, list) or len(f) not in (6, 7)]
    if bad:
        raise ValueError(f"fires entries {bad} are not [index, in, squeeze, expand1x1, expand3x3, bypass(, clip)]")
    return Arch(
        name=str(d["name"]),
        conv1=ConvSpec("conv1", 3, int(c["out_channels"]), int(c["kernel"]), int(c["stride"]), int(c["pad"])),
        fires=tuple(FireSpec(int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), Bypass(f[5]),
                             float(f[6]) if len(f) > 6 else 0.0) for f in d["fires"]),
        pool_after=tuple(d["pool_after"]), num_classes=int(d["num_classes"]),
        final_pad=int(d["final_pad"]), ceil_mode=bool(d["ceil_mode"]),
        preprocess=Preprocess.from_dict(d["preprocess"]),
    )
