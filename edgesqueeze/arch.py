"""The SqueezeNet family as plain data (no torch).

One `Arch` describes a network completely: conv1, where the max pools sit, each Fire module, the
bypasses, the classifier conv and its padding, and the input it expects. The torch model
(`edgesqueeze.model`), the quantizer and both exporters walk the same description, so a layer's
shape is decided in one place.

Layer names follow torchvision's modules ("conv1", "fire2.squeeze", "fire2.expand1x1",
"fire2.expand3x3", "conv10"); `CAFFE_NAMES` maps them to the names in the released Caffe files.
Fire modules are numbered 2..9 as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from .errors import OptionError


def pool_output_size(size: int, kernel: int, stride: int, ceil_mode: bool, pad: int = 0) -> int:
    """Pooled length as Caffe and PyTorch compute it.

    ceil mode rounds (size + 2*pad - kernel) / stride up, then drops a last window that would
    start inside the right padding (it would see no input): 111 -> 55, 55 -> 27, 27 -> 13 for
    SqueezeNet's 3x3/2 pools, where floor mode gives the same; 56 -> 28 (ceil) vs 27 (floor)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Bypass(str, Enum):
    """The paper's macro-architectures (Section 6): no bypass, simple (identity) bypass around
    the Fire modules whose input and output widths match, or complex bypass (an extra 1x1 conv)
    on the others as well."""

    NONE = "none"
    SIMPLE = "simple"
    COMPLEX = "complex"


@dataclass(frozen=True)
class Preprocess:
    """How a camera frame becomes the network's input.

    `caffe`: BGR, resize to 256x256, centre crop, minus a per-channel mean, no scaling.
    `torchvision`: RGB, resize the short side to 256, centre crop, /255, minus mean, / std.
    `mean`/`std` are in the model's channel order and in the 0..255 pixel scale (torchvision's
    0.485 becomes 123.675), so folding them into conv1 is the same formula for both styles.
    """

    style: str  # "caffe" | "torchvision"
    channel_order: str  # "BGR" | "RGB"
    resize: tuple[int, int] | int  # (h, w) exact resize, or an int: the short side
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict:
        return {
            "style": self.style,
            "channel_order": self.channel_order,
            "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        resize = d["resize"]
        return cls(
            style=str(d["style"]),
            channel_order=str(d["channel_order"]),
            resize=tuple(int(v) for v in resize) if isinstance(resize, list) else int(resize),
            crop=int(d["crop"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d.get("std", (1.0, 1.0, 1.0))),
        )


NORM_SCALES = (1, 255)


def _three(values, what: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(x) for x in values)
    except (TypeError, ValueError):
        raise OptionError(f"{what} {values!r} must be three numbers, one per channel (e.g. 0.485,0.456,0.406)") from None
    if len(v) != 3 or not all(np.isfinite(v)):
        raise OptionError(f"{what} {values!r} must be three finite numbers, one per channel")
    return v  # type: ignore[return-value]


def override_preprocess(pre: Preprocess, *, input_size: int | None = None,
                        resize: int | tuple[int, int] | None = None,
                        mean=None, std=None, channel_order: str | None = None,
                        norm_scale: int | None = None) -> Preprocess:
    """`pre` with the parts a model was trained with otherwise replaced, checked once.

    `input_size`: the centre crop the network sees; `resize`: an int resizes the short side to
    it (torchvision's Resize(int)), (h, w) resizes to exactly that (Caffe); `channel_order`:
    "RGB" or "BGR". `mean`/`std` are written as the training code wrote them: `norm_scale` 1
    for torchvision (ToTensor's 0..1 pixels, then Normalize(mean, std)), 255 for raw 0..255
    pixels (Caffe). None follows `pre`'s own convention (1 for torchvision-style weights, 255
    for Caffe ones). Stored in 0..255 units, so folding them into conv1 is one formula."""
    if norm_scale is None:
        norm_scale = 1 if pre.style == "torchvision" else 255
    if norm_scale not in NORM_SCALES:
        raise OptionError(f"norm_scale={norm_scale!r} must be 1 (mean/std for 0..1 pixels, torchvision) "
                          "or 255 (for 0..255 pixels, Caffe)")
    k = 255.0 / norm_scale
    changes: dict = {}
    if input_size is not None:
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise OptionError(f"input size {input_size!r} must be a positive integer (pixels of the square crop)")
        changes["crop"] = int(input_size)
    if resize is not None:
        sides = resize if isinstance(resize, tuple) else (resize,)
        if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                                           for s in sides):
            raise OptionError(f"resize {resize!r} must be a positive integer (the short side) or (height, width)")
        changes["resize"] = tuple(int(s) for s in sides) if isinstance(resize, tuple) else int(resize)
    if channel_order is not None:
        order = str(channel_order).upper()
        if order not in ("RGB", "BGR"):
            raise OptionError(f"channel order {channel_order!r} must be RGB or BGR")
        changes["channel_order"] = order
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        v = _three(values, name)
        if norm_scale == 1 and any(abs(x) > 1 for x in v):
            raise OptionError(f"{name} {','.join(f'{x:g}' for x in v)} is outside 0..1, but is read for 0..1 pixels "
                              "(torchvision's ToTensor + Normalize); for means of 0..255 pixels (Caffe) set the "
                              "normalization scale to 255 (--norm-scale 255)")
        if name == "std" and any(x <= 0 for x in v):
            raise OptionError(f"std {values!r} must be positive")
        changes[name] = tuple(x * k for x in v)
    out = replace(pre, **changes)
    short = min(out.resize) if isinstance(out.resize, tuple) else out.resize
    if short < out.crop:
        raise OptionError(f"resize {out.resize} is smaller than the {out.crop}x{out.crop} crop; "
                          f"resize to at least {out.crop} (e.g. --resize {round(out.crop * 256 / 224)})")
    return out


CAFFE_PREPROCESS = Preprocess(
    style="caffe", channel_order="BGR", resize=(256, 256), crop=227, mean=(104.0, 117.0, 123.0)
)
TORCHVISION_PREPROCESS = Preprocess(
    style="torchvision",
    channel_order="RGB",
    resize=256,
    crop=224,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)


CHANNEL_ORDERS = ("RGB", "BGR")
DEFAULT_FILE_CHANNEL_ORDER = "RGB"  # what exported files take unless asked otherwise


def with_channel_order(arch: "Arch", params, order: str | None) -> tuple["Arch", dict]:
    """The same model taking its input channels in `order` ("RGB" | "BGR"; None: as it is).

    conv1 is the only layer that sees the input channels, and the mean/std are folded into it
    (per channel, in the model's channel order), so reversing conv1's input-channel axis and the
    order of the mean and std gives a model that computes exactly the same function of the
    reversed image: the released Caffe model (BGR) takes RGB this way. `params` maps a conv's
    name to (OIHW weight, bias); a new dict is returned, `params` is left as it is."""
    if order is None:
        return arch, params
    want = str(order).upper()
    if want not in CHANNEL_ORDERS:
        raise OptionError(f"channel order {order!r} must be RGB or BGR")
    pre = arch.preprocess
    if pre.channel_order == want:
        return arch, params
    first = arch.conv1.name
    if first not in params:
        raise OptionError(f"no weights for {first}: cannot reverse the input channels of {arch.name}")
    w, b = params[first]
    if np.asarray(w).ndim != 4 or np.asarray(w).shape[1] != 3:
        raise OptionError(f"{first}'s weight has shape {tuple(np.asarray(w).shape)}; reversing the channel "
                          "order needs 3 input channels (OIHW)")
    out = dict(params)
    out[first] = (np.ascontiguousarray(np.asarray(w)[:, ::-1]), b)
    flipped = replace(pre, channel_order=want, mean=tuple(pre.mean[::-1]), std=tuple(pre.std[::-1]))
    return arch.with_preprocess(flipped), out


@dataclass(frozen=True)
class FireSpec:
    """One Fire module: squeeze 1x1 -> ReLU -> (expand 1x1 | expand 3x3, pad 1) -> ReLU -> concat."""

    index: int  # 2..9, as in the paper
    in_channels: int
    squeeze: int
    expand1x1: int
    expand3x3: int
    bypass: Bypass = Bypass.NONE  # NONE, SIMPLE (identity) or COMPLEX (1x1 conv on the input)
    # > 0: the squeeze output is clamped to [0, squeeze_clip] after its ReLU. Only a range-split
    # Fire has it (quant/range_split.py): there the int8 grid saturates at exactly that value.
    squeeze_clip: float = 0.0

    @property
    def name(self) -> str:
        return f"fire{self.index}"

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True)
class ConvSpec:
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    relu: bool = True


@dataclass(frozen=True)
class Arch:
    """A whole SqueezeNet: conv1 -> pool -> fires (pools after `pool_after`) -> dropout ->
    conv10 -> ReLU -> global average pool."""

    name: str
    conv1: ConvSpec
    fires: tuple[FireSpec, ...]
    pool_after: tuple[str, ...]  # layer names followed by a 3x3/2 max pool: "conv1", "fire4", ...
    num_classes: int = 1000
    final_pad: int = 0  # the released Deep-Compression v1.0 pads conv10 by 1 (see README)
    ceil_mode: bool = True  # Caffe and torchvision round pooled sizes up
    preprocess: Preprocess = field(default=TORCHVISION_PREPROCESS)

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    @property
    def conv10(self) -> ConvSpec:
        return ConvSpec(
            "conv10", self.fires[-1].out_channels, self.num_classes, kernel=1, pad=self.final_pad
        )

    def convs(self) -> list[ConvSpec]:
        """Every convolution in execution order, with its full name."""
        out = [self.conv1]
        for f in self.fires:
            out.append(ConvSpec(f"{f.name}.squeeze", f.in_channels, f.squeeze, 1))
            out.append(ConvSpec(f"{f.name}.expand1x1", f.squeeze, f.expand1x1, 1))
            out.append(ConvSpec(f"{f.name}.expand3x3", f.squeeze, f.expand3x3, 3, pad=1))
            if f.bypass is Bypass.COMPLEX and f.in_channels != f.out_channels:
                out.append(
                    ConvSpec(f"{f.name}.bypass", f.in_channels, f.out_channels, 1, relu=False)
                )
        out.append(self.conv10)
        return out

    def num_parameters(self) -> int:
        return sum(c.out_channels * (c.in_channels * c.kernel * c.kernel + 1) for c in self.convs())

    def with_preprocess(self, preprocess: Preprocess) -> "Arch":
        return replace(self, preprocess=preprocess)

    def shapes(self, input_size: int | None = None) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) of every layer's output, for a square input."""
        s = input_size or self.input_size
        out: dict[str, tuple[int, int, int]] = {}
        c1 = self.conv1
        s = (s + 2 * c1.pad - c1.kernel) // c1.stride + 1
        out["conv1"] = (c1.out_channels, s, s)
        if "conv1" in self.pool_after:
            s = pool_output_size(s, 3, 2, self.ceil_mode)
            out["pool1"] = (c1.out_channels, s, s)
        for f in self.fires:
            out[f.name] = (f.out_channels, s, s)
            if f.name in self.pool_after:
                s = pool_output_size(s, 3, 2, self.ceil_mode)
                out[f"pool{f.index}"] = (f.out_channels, s, s)
        s = s + 2 * self.final_pad
        out["conv10"] = (self.num_classes, s, s)
        out["pool10"] = (self.num_classes, 1, 1)
        return out


def _fires(widths: list[tuple[int, int, int]], in_channels: int, bypass: Bypass) -> tuple[FireSpec, ...]:
    """FireSpecs from (squeeze, expand1x1, expand3x3) triples, chaining the input widths.

    Simple bypass goes around the modules whose input and output widths match (fire3/5/7/9 in
    v1.0); complex bypass adds a 1x1 conv on the others too."""
    fires = []
    for i, (s, e1, e3) in enumerate(widths):
        out = e1 + e3
        if bypass is Bypass.NONE:
            b = Bypass.NONE
        elif in_channels == out:
            b = Bypass.SIMPLE
        else:
            b = Bypass.COMPLEX if bypass is Bypass.COMPLEX else Bypass.NONE
        fires.append(FireSpec(i + 2, in_channels, s, e1, e3, b))
        in_channels = out
    return tuple(fires)


def _check_bypass(bypass: Bypass | str) -> Bypass:
    try:
        return Bypass(bypass)
    except ValueError:
        allowed = ", ".join(b.value for b in Bypass)
        raise OptionError(f"bypass={bypass!r} is not one of: {allowed}") from None


# (squeeze, expand1x1, expand3x3) of fire2..fire9: paper Table 1; v1.1 keeps the same widths
V1_FIRE_WIDTHS = ((16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
                  (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))


def squeezenet1_0_arch(
    *, bypass: Bypass | str = Bypass.NONE, num_classes: int = 1000, caffe: bool = False
) -> Arch:
    """SqueezeNet v1.0 (paper Table 1): conv1 96 7x7/2, pools after conv1, fire4 and fire8.

    `caffe=True` describes the released Caffe / Deep-Compression model: 227x227 BGR input
    minus the Caffe mean, and conv10 with pad 1 (a quirk of that release)."""
    bypass = _check_bypass(bypass)
    return Arch(
        name="squeezenet1_0" + ("" if bypass is Bypass.NONE else f"-{bypass.value}-bypass"),
        conv1=ConvSpec("conv1", 3, 96, kernel=7, stride=2),
        fires=_fires(V1_FIRE_WIDTHS, 96, bypass),
        pool_after=("conv1", "fire4", "fire8"),
        num_classes=num_classes,
        final_pad=1 if caffe else 0,
        preprocess=CAFFE_PREPROCESS if caffe else TORCHVISION_PREPROCESS,
    )


def squeezenet1_1_arch(*, bypass: Bypass | str = Bypass.NONE, num_classes: int = 1000) -> Arch:
    """SqueezeNet v1.1 (the SqueezeNet repo's v1.1): conv1 64 3x3/2, pools after conv1, fire3 and
    fire5; 2.4x less computation than v1.0 at the same accuracy."""
    bypass = _check_bypass(bypass)
    return Arch(
        name="squeezenet1_1" + ("" if bypass is Bypass.NONE else f"-{bypass.value}-bypass"),
        conv1=ConvSpec("conv1", 3, 64, kernel=3, stride=2),
        fires=_fires(V1_FIRE_WIDTHS, 64, bypass),
        pool_after=("conv1", "fire3", "fire5"),
        num_classes=num_classes,
    )


def metaparameter_arch(
    *,
    base_e: int = 128,
    incr_e: int = 128,
    pct3x3: float = 0.5,
    freq: int = 2,
    sr: float = 0.125,
    bypass: Bypass | str = Bypass.NONE,
    num_classes: int = 1000,
) -> Arch:
    """A SqueezeNet from the paper's metaparameters (Section 5).

    Fire module i (0-based) has e_i = base_e + incr_e * floor(i / freq) expand filters, of which
    e_i * pct3x3 are 3x3 and the rest 1x1, and s_i = SR * e_i squeeze filters. Pools sit where
    v1.0 has them. At the defaults this is exactly v1.0's layer table."""
    bypass = _check_bypass(bypass)
    problems = []
    if base_e < 1 or incr_e < 0:
        problems.append(f"base_e={base_e} must be >= 1 and incr_e={incr_e} >= 0")
    if not 0.0 <= pct3x3 <= 1.0:
        problems.append(f"pct3x3={pct3x3} must lie in [0, 1]")
    if freq < 1:
        problems.append(f"freq={freq} must be >= 1")
    if not 0.0 < sr <= 1.0:
        problems.append(f"SR={sr} must lie in (0, 1]")
    if problems:
        raise OptionError("bad SqueezeNet metaparameters: " + "; ".join(problems))
    widths = []
    for i in range(8):
        e = base_e + incr_e * (i // freq)
        e3 = int(round(e * pct3x3))
        s = max(1, int(round(sr * e)))
        widths.append((s, e - e3, e3))
    if any(e1 + e3 == 0 for _, e1, e3 in widths):
        raise OptionError("these metaparameters give a Fire module with no expand filters")
    tag = f"squeezenet-be{base_e}-ie{incr_e}-p{pct3x3:g}-f{freq}-sr{sr:g}"
    return Arch(
        name=tag + ("" if bypass is Bypass.NONE else f"-{bypass.value}-bypass"),
        conv1=ConvSpec("conv1", 3, 96, kernel=7, stride=2),
        fires=_fires(widths, 96, bypass),
        pool_after=("conv1", "fire4", "fire8"),
        num_classes=num_classes,
    )


def caffe_names(arch: Arch) -> dict[str, str]:
    """Our conv names -> the layer names of the released Caffe prototxt (DeepScale / Deep
    Compression): fireN/squeeze1x1 is "fireN/conv1x1_1", expand1x1 "fireN/conv1x1_2",
    expand3x3 "fireN/conv3x3_2", conv10 "conv_final". The SqueezeNet repo's own v1.0/v1.1 prototxt
    use "fireN/squeeze1x1", "fireN/expand1x1", "fireN/expand3x3", "conv10": see
    `caffe_name_aliases`."""
    m = {"conv1": "conv1", "conv10": "conv_final"}
    for f in arch.fires:
        m[f"{f.name}.squeeze"] = f"{f.name}/conv1x1_1"
        m[f"{f.name}.expand1x1"] = f"{f.name}/conv1x1_2"
        m[f"{f.name}.expand3x3"] = f"{f.name}/conv3x3_2"
    return m


def caffe_name_aliases(arch: Arch) -> dict[str, tuple[str, ...]]:
    """Every Caffe layer name a conv may carry, in order of preference."""
    dc = caffe_names(arch)
    out = {}
    for name, c in dc.items():
        if name.startswith("fire"):
            fire, part = name.split(".")
            repo = {"squeeze": "squeeze1x1", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}[part]
            out[name] = (c, f"{fire}/{repo}")
        elif name == "conv10":
            out[name] = (c, "conv10")
        else:
            out[name] = (c,)
    return out


__all__ = [
    "Arch",
    "Bypass",
    "CAFFE_PREPROCESS",
    "ConvSpec",
    "FireSpec",
    "Preprocess",
    "TORCHVISION_PREPROCESS",
    "caffe_name_aliases",
    "caffe_names",
    "override_preprocess",
    "pool_output_size",
    "metaparameter_arch",
    "squeezenet1_0_arch",
    "squeezenet1_1_arch",
]

