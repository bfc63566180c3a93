"""Float weights + calibrated ranges -> a QuantizedModel (numpy only).

    quantize_model(arch, params, ranges, scheme=Scheme.AFFINE, weight_bits=8) -> QuantizedModel

`ranges` maps every tensor name of the lowered graph to the real interval [lo, hi] chosen by
calibration (edgesqueeze.calibrate.choose_range). The decisions made here, and why:

Input folding. The FP32 model takes (x - mean) / std. conv1 is linear, so
    W * ((x - mean) / std) + b = (W / std) * x + (b - sum_{c,i,j} W[o,c,i,j] * mean[c] / std[c])
exactly, provided conv1 has no padding (a padded border would be 0 in normalised space, i.e.
`mean` in pixel space, which the folded conv cannot see). v1.0 and v1.1 have none. The
quantized model then takes raw uint8 pixels: q = pixel - 128 with scale 1, zero point -128,
which represents every pixel exactly.

Concat. A Fire module concatenates its two expand convs. TFLite's CONCATENATION requires the
inputs and output to share one scale and zero point, and anything else would requantize one
branch (losing a rounding step) for no gain: both branches end in a ReLU and have similar
ranges. So both expand convs write straight into the concat's parameters, which come from the
concat's own calibrated range (the union of the two); the concat is then a copy in integers.

Max pool keeps its input's parameters (max commutes with a monotone requantization).

Bias correction (Nagel et al. 2019, "Data-free quantization", sec. 4.2). Rounding the weights
shifts each output channel's mean by E[(W_q - W) x] = sum_{c,i,j} (W_q - W)[o,c,i,j] * E[x_c]
(ignoring the padded border). With the per-channel means of each conv's input from calibration,
that shift is subtracted from the bias before it is quantized. It matters here: the released
v1.0 is pruned and weight-shared, and its top-1 flips on a few % of images from weight rounding
alone; bias correction removes most of that (see the README's measurements).

Adaptive rounding (`patch_moments`, quant/rounding.py; Nagel et al. 2020). Each weight goes to
floor or ceil of w/s, chosen per output row to minimise the layer's expected squared output
error e^T H e over the calibration patches instead of each weight's own error. The grid and the
scales are those of plain rounding; weights already on the grid (pruned zeros) do not move.
Bias correction then runs on the chosen weights, as it does on nearest-rounded ones.

Zero weight channels. A channel whose weights are all zero (fire7.expand1x1 channel 19 in the
released v1.0) would get scale max|w|/127 = 0: a division by zero and a bias that cannot be
represented. It takes the largest scale of its layer instead; its weights stay 0 and its bias
(the only thing it outputs) is quantized like any other.

Fewer weight levels (`weight_bits` b in 4..8, default 8). The weights are rounded to the
symmetric b-bit grid [-(2^(b-1)-1), 2^(b-1)-1] with scale max|w[o]| / (2^(b-1)-1) per channel
(ristretto: 2**-(b - il) per layer) and still stored as int8, so the TFLite/ONNX files, their
kernels and the integer reference are unchanged; only the set of values in the weight tensors
shrinks. That is what makes the update bundle smaller (edgesqueeze/formats/bundle.py: the lossless floor
for the released v1.0 at 8 bits is ~539 KB, because its nonzero weights carry ~7.3 bits each);
the Deep-Compression paper's 0.47 MB SqueezeNet is likewise the 6-bit one. Bias correction uses
the dequantized weights, so it corrects the larger rounding error of fewer bits as well. The
model's `calibration` dict records `weight_bits` when it is not 8 (absent means 8, as in every
file written before the option existed).
"""

from __future__ import annotations

import math

import numpy as np

from ..arch import Arch
from ..errors import OptionError, WeightsError
from ..graph import INPUT, OUTPUT, OpKind, lower
from .params import QConv, QParams, QuantizedModel, Scheme, f32, parse_enum, validate
from .rounding import PatchMoments, adaptive_round, check_covariance, rounding_objective

INPUT_QPARAMS = QParams(1.0, -128)  # q = pixel - 128: raw uint8 pixels as int8, exactly
WEIGHT_QMAX = 127  # TFLite: int8 weights are symmetric in [-127, 127]
WEIGHT_BITS_RANGE = (4, 8)  # below 4 bits SqueezeNet's per-channel grids are too coarse to be useful
MIN_RANGE = 1e-6  # a calibrated range narrower than this is widened, so no scale is 0


def fold_input_normalization(arch: Arch, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv1's (weight, bias) for raw pixels in the model's channel order (see module doc)."""
    if arch.conv1.pad != 0:
        raise OptionError(
            f"{arch.name}: conv1 has padding {arch.conv1.pad}, so folding the input normalisation "
            "into it is not exact; quantize a model whose first conv is unpadded (v1.0 and v1.1 are)"
        )
    mean = np.asarray(arch.preprocess.mean, np.float64)
    std = np.asarray(arch.preprocess.std, np.float64)
    w = weight.astype(np.float64) / std[None, :, None, None]
    b = bias.astype(np.float64) - (w * mean[None, :, None, None]).sum(axis=(1, 2, 3))
    return w, b


def affine_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric int8 over [lo, hi] widened to hold 0: scale = (hi - lo) / 255 and the zero
    point that maps real 0 to an integer exactly (so zero padding and ReLU are exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < MIN_RANGE:
        hi = lo + MIN_RANGE
    scale = f32((hi - lo) / 255.0)
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return QParams(scale, zp)


def power_of_two_qparams(lo: float, hi: float, *, unsigned: bool = False) -> QParams:
    """Ristretto's dynamic fixed point for activations: symmetric, zero point 0, integer
    length il = ceil(log2(max|x|)) + 1 (one bit for the sign), fractional length 8 - il,
    scale 2**-fl.

    `unsigned` (the ristretto default): a tensor that is never negative (lo >= 0: every ReLU
    output, pool and concat here) spends no bit on a sign. Its integer length is
    ceil(log2(max)), the same power-of-two scale 2**-(8 - il) covers [0, 255 * scale] as int8
    with zero point -128, and requantization stays a shift: the step halves for the same range,
    which is 6 dB less rounding noise on every such tensor. A tensor with negative values
    stays signed."""
    if unsigned and float(lo) >= 0.0:
        il = math.ceil(math.log2(max(float(hi), MIN_RANGE)))
        return QParams(2.0 ** -(8 - il), -128)
    m = max(abs(float(lo)), abs(float(hi)), MIN_RANGE)
    il = math.ceil(math.log2(m)) + 1
    return QParams(2.0 ** -(8 - il), 0)


def qparams_rule(scheme: Scheme, *, unsigned: bool = False):
    """The scheme's rule (lo, hi) -> QParams: affine_qparams, or power_of_two_qparams with
    `unsigned` (which affine, whose zero point already spends every level, ignores)."""
    if scheme is Scheme.RISTRETTO:
        return lambda lo, hi: power_of_two_qparams(lo, hi, unsigned=unsigned)
    return affine_qparams


def model_qparams_rule(qm: QuantizedModel):
    """qparams_rule of a quantized model's own scheme and options (its calibration record), for
    passes that choose new ranges after calibration (range search, reconstruction)."""
    return qparams_rule(qm.scheme, unsigned=bool(qm.calibration.get("unsigned_activations", False)))


def check_weight_bits(weight_bits) -> int:
    """`weight_bits` as an int in WEIGHT_BITS_RANGE, else OptionError naming the value and the fix."""
    lo, hi = WEIGHT_BITS_RANGE
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer)) or not lo <= weight_bits <= hi:
        raise OptionError(f"weight_bits={weight_bits!r} is not an integer in {lo}..{hi}; use 8 for full int8 "
                          f"weights (255 levels per channel), or fewer (6: 63 levels) for a smaller update "
                          f"bundle at some accuracy cost")
    return int(weight_bits)


def weight_qmax(weight_bits: int) -> int:
    """Largest weight magnitude on the symmetric `weight_bits` grid: 2^(b-1) - 1 (127 at 8 bits)."""
    return 2 ** (check_weight_bits(weight_bits) - 1) - 1


def _weight_scales(w: np.ndarray, scheme: Scheme, name: str, bits: int = 8,
                   per_channel: bool = False) -> np.ndarray:
    """Per-output-channel scales, float32. affine: max|w[o]| / qmax per channel, qmax =
    2^(bits-1) - 1 (zero channels take the layer's largest). ristretto: one power of two for the
    layer, 2**-(bits - il) with il = ceil(log2(max|w|)) + 1; with `per_channel`, one power of
    two per output channel from that channel's max (each channel's multiplier
    s_in * s_w[o] / s_out is still a power of two: a shift per channel)."""
    amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    if not amax.any():
        raise WeightsError(f"{name}: every weight is zero; nothing to quantize")
    if scheme is Scheme.RISTRETTO:
        if not per_channel:
            amax = np.full_like(amax, amax.max())
        amax = np.where(amax > 0, amax, amax.max())  # a zero channel: the layer's scale
        il = np.ceil(np.log2(amax)) + 1
        return (2.0 ** -(bits - il)).astype(np.float32)
    scales = amax / weight_qmax(bits)
    scales[amax == 0] = scales.max()
    return scales.astype(np.float32)


def _quantize_conv(name, spec, w, b, s_in: float, scheme: Scheme, inp: str, out: str,
                   input_mean: np.ndarray | None, bits: int = 8,
                   h: np.ndarray | None = None, per_channel: bool = False) -> tuple[QConv, float | None]:
    """(QConv, adaptive rounding's gain in dB or None). `h`, when given, is the (K, K) matrix
    of the conv's input patches (OHWI order) whose e^T h e adaptive rounding lowers."""
    ws = _weight_scales(w, scheme, name, bits, per_channel)
    qmax = weight_qmax(bits)
    r = w / ws.astype(np.float64)[:, None, None, None]  # the weights in steps, OIHW
    q = np.clip(np.rint(r), -qmax, qmax)  # nearest rounding
    gain = None
    if h is not None:  # adaptive rounding works on rows in the int8 weights' OHWI order
        o, i, kh, kw = w.shape
        rows = r.transpose(0, 2, 3, 1).reshape(o, -1)
        h = check_covariance(h, rows.shape[1], name)
        qa = adaptive_round(rows, h, qmax=qmax)
        before = float(rounding_objective(q.transpose(0, 2, 3, 1).reshape(o, -1) - rows, h).sum())
        after = float(rounding_objective(qa - rows, h).sum())
        gain = 10.0 * math.log10(before / after) if after > 0 and before > 0 else 0.0
        q = qa.reshape(o, kh, kw, i).transpose(0, 3, 1, 2).astype(np.float64)
    if input_mean is not None:  # bias correction (module doc)
        dw = q * ws.astype(np.float64)[:, None, None, None] - w
        b = b - (dw.sum(axis=(2, 3)) * np.asarray(input_mean, np.float64)[None, :]).sum(axis=1)
    q = q.astype(np.int8).transpose(0, 2, 3, 1)  # OIHW -> OHWI
    bias_scale = np.float32(s_in) * ws  # float32, as the runtimes derive it
    bq = np.rint(b.astype(np.float64) / bias_scale.astype(np.float64))
    if np.abs(bq).max() >= 2**31:
        raise WeightsError(f"{name}: a bias does not fit int32 at scale input*weight; the calibrated input range is too small")
    return QConv(name, spec, np.ascontiguousarray(q), ws, bq.astype(np.int32), inp, out), gain


def parameter_owners(nodes) -> dict[str, str]:
    """{tensor: the tensor whose range sets its quantization parameters}, for every node's
    output but the head's (its logits stay float): a conv feeding a concat writes in the
    concat's parameters (module doc), a max pool keeps its input's, every other tensor owns its
    own. `nodes`: the lowered graph (graph.lower), in order."""
    into_concat = {i: n.name for n in nodes if n.kind is OpKind.CONCAT for i in n.inputs}
    owner: dict[str, str] = {}
    for n in nodes:
        if n.kind is OpKind.MEAN:
            continue
        owner[n.name] = owner[n.inputs[0]] if n.kind is OpKind.MAXPOOL else into_concat.get(n.name, n.name)
    return owner


def quantize_model(
    arch: Arch,
    params: dict[str, tuple[np.ndarray, np.ndarray]],
    ranges: dict[str, tuple[float, float]],
    *,
    scheme: Scheme | str = Scheme.AFFINE,
    labels: tuple[str, ...] = (),
    calibration: dict | None = None,
    channel_means: dict[str, np.ndarray] | None = None,
    weight_bits: int = 8,
    patch_moments: dict[str, PatchMoments] | None = None,
    unsigned_activations: bool = False,
    per_channel_weights: bool = False,
) -> QuantizedModel:
    """`channel_means`, when given, maps tensor names (INPUT: the normalised input) to their
    per-channel means from calibration and turns on bias correction. `weight_bits` (4..8): the
    weights' symmetric grid, stored in int8 either way (module doc). `patch_moments`, when
    given, maps every conv name to the moments of its input patches and turns on adaptive
    rounding (quant/rounding.py): centred when bias correction is on (the bias then removes
    the mean error), raw otherwise. `unsigned_activations` and `per_channel_weights` are
    ristretto's (power_of_two_qparams, _weight_scales; affine is always both) and are recorded
    in the model's `calibration` dict, where later passes read them (model_qparams_rule)."""
    scheme = parse_enum(Scheme, scheme, "scheme")
    bits = check_weight_bits(weight_bits)
    if scheme is Scheme.AFFINE and (unsigned_activations or per_channel_weights):
        raise OptionError("unsigned_activations and per_channel_weights are options of the ristretto scheme; "
                          "affine activations already use all 256 levels and its weights are per channel")
    nodes = lower(arch)
    missing = [n.name for n in nodes if n.name != OUTPUT and n.name not in ranges]
    if missing:
        raise OptionError(f"calibrated ranges missing for: {', '.join(missing)}; calibrate this arch ({arch.name}) first")
    for name, (w, b) in params.items():
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise WeightsError(f"{name}: weights hold NaN or Inf")
    bad = [n for n, (lo, hi) in ranges.items() if not (math.isfinite(lo) and math.isfinite(hi))]
    if bad:
        raise OptionError(f"calibrated ranges are NaN/Inf for: {', '.join(bad)}; check the weights and images")

    make = qparams_rule(scheme, unsigned=unsigned_activations)
    owner = parameter_owners(nodes)
    tensors: dict[str, QParams] = {INPUT: INPUT_QPARAMS}
    convs: dict[str, QConv] = {}
    gains: dict[str, float | None] = {}
    for n in nodes:
        if n.name not in owner:
            continue  # the head dequantizes before averaging: logits stay float
        tensors[n.name] = make(*ranges[owner[n.name]])
        if n.kind is OpKind.CONV:
            w, b = params[n.name]
            mu = None if channel_means is None else channel_means.get(n.inputs[0])
            if n.name == "conv1":
                w, b = fold_input_normalization(arch, w, b)
                if mu is not None:  # the folded conv sees raw pixels: undo the normalisation
                    pre = arch.preprocess
                    mu = np.asarray(mu, np.float64) * np.asarray(pre.std) + np.asarray(pre.mean)
            if channel_means is not None and mu is None:
                raise OptionError(f"bias correction needs the channel means of {n.inputs[0]} (input of {n.name})")
            h = None
            if patch_moments is not None:
                if n.name not in patch_moments:
                    raise OptionError(f"adaptive rounding needs the input patch moments of {n.name}; "
                                      "collect them from this model (pipeline.conv_input_statistics)")
                h = patch_moments[n.name].objective(centred=channel_means is not None)
            convs[n.name], gains[n.name] = _quantize_conv(
                n.name, n.conv, w.astype(np.float64), b.astype(np.float64), tensors[n.inputs[0]].scale,
                scheme, n.inputs[0], n.name, mu, bits, h, per_channel_weights)
    info = dict(calibration or {})
    if scheme is Scheme.RISTRETTO:  # readable, and what model_qparams_rule reads back
        info["unsigned_activations"] = bool(unsigned_activations)
        info["per_channel_weights"] = bool(per_channel_weights)
    if patch_moments is not None:  # readable: how much each conv's output error fell
        info["adaptive_rounding_gain_db"] = {k: round(v, 2) for k, v in gains.items()}
    if bits != 8 or "weight_bits" in info:  # absent means 8, so 8-bit metadata stays as it was
        info["weight_bits"] = bits
    qm = QuantizedModel(arch, scheme, tensors, convs, tuple(labels), info)
    validate(qm)
    return qm


def float_conv_weights(arch: Arch, params: dict[str, tuple[np.ndarray, np.ndarray]],
                       names=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv name: (float32 weight OHWI, float32 bias)} of the float model `params` (OIHW, as
    quantize_model takes them) for the convs `names` (default: all), as a float-kept conv runs
    them: conv1 with the input normalisation folded in, since the quantized model takes raw
    pixels (fold_input_normalization)."""
    specs = [c.name for c in arch.convs()]
    names = specs if names is None else list(names)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise OptionError(f"{', '.join(map(repr, unknown))} is not a conv of {arch.name}; its convs are "
                          f"{', '.join(specs)}")
    out = {}
    for name in names:
        if name not in params:
            raise OptionError(f"no float weights for {name}: give the parameters of the model that was quantized")
        w, b = (np.asarray(a, np.float64) for a in params[name])
        if name == arch.conv1.name:
            w, b = fold_input_normalization(arch, w, b)
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise WeightsError(f"{name}: weights hold NaN or Inf")
        out[name] = (np.ascontiguousarray(w.transpose(0, 2, 3, 1).astype(np.float32)), b.astype(np.float32))
    return out


def with_float_convs(qm: QuantizedModel, names, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> QuantizedModel:
    """`qm` with the convs `names` (in graph order, whatever order they are given in) kept in
    float32 (params.py, "Float-kept convs"); `weights` as float_conv_weights gives them, for
    at least those convs. Empty `names`: the all-integer model, without float weights."""
    from dataclasses import replace

    order = [n.name for n in qm.nodes if n.kind is OpKind.CONV]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in order]
    if unknown:
        raise OptionError(f"{', '.join(map(repr, unknown))} is not a conv of {qm.arch.name}; its convs are "
                          f"{', '.join(order)}")
    missing = [n for n in names if n not in weights]
    if missing:
        raise OptionError(f"no float weights for {', '.join(missing)} (quant.quantize.float_conv_weights)")
    keep = tuple(n for n in order if n in names)
    out = replace(qm, float_convs=keep, float_weights={n: weights[n] for n in keep})
    validate(out)
    return out
