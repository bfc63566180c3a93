"""The SqueezeNet family in PyTorch, built from an `edgesqueeze.arch.Arch`.

`Fire`, `SqueezeNet`, then factories that spell out their hyperparameters. Parameter names
follow torchvision (`features.N.squeeze.weight`, `classifier.1.weight`) so a torchvision
state_dict loads as it is; `named_convs()` gives the same convs under the arch's names
("fire2.squeeze", "conv10"), which is how weights move between this model and plain numpy.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
    from .errors import missing_extra

    raise missing_extra("torch", "quantize") from e

Tap = Callable[[str, "torch.Tensor"], None] | None

from .arch import (  # noqa: E402
    Arch,
    Bypass,
    FireSpec,
    metaparameter_arch,
    squeezenet1_0_arch,
    squeezenet1_1_arch,
)


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> concat(ReLU(expand 1x1), ReLU(expand 3x3, pad 1)) [+ bypass]."""

    def __init__(self, spec: FireSpec):
        super().__init__()
        self.spec = spec
        self.squeeze = nn.Conv2d(spec.in_channels, spec.squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(spec.squeeze, spec.expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(spec.squeeze, spec.expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        # The paper's complex bypass: a 1x1 conv where input and output widths differ.
        self.bypass = (
            nn.Conv2d(spec.in_channels, spec.out_channels, kernel_size=1)
            if spec.bypass is Bypass.COMPLEX and spec.in_channels != spec.out_channels
            else None
        )

    def forward(self, x: torch.Tensor, tap: Tap = None) -> torch.Tensor:
        n = self.spec.name
        s = self.squeeze_activation(self.squeeze(x))
        if self.spec.squeeze_clip > 0:  # a range-split squeeze (arch.FireSpec.squeeze_clip)
            s = torch.clamp(s, max=self.spec.squeeze_clip)
        e1 = self.expand1x1_activation(self.expand1x1(s))
        e3 = self.expand3x3_activation(self.expand3x3(s))
        y = torch.cat([e1, e3], 1)
        if tap is not None:
            tap(f"{n}.squeeze", s)
            tap(f"{n}.expand1x1", e1)
            tap(f"{n}.expand3x3", e3)
            tap(f"{n}.concat", y)
        if self.spec.bypass is Bypass.NONE:
            return y
        skip = self.bypass(x) if self.bypass is not None else x
        if tap is not None and self.bypass is not None:
            tap(f"{n}.bypass", skip)
        y = y + skip
        if tap is not None:
            tap(f"{n}.add", y)
        return y


def _is_channels_last(w: torch.Tensor) -> bool:
    """True when a conv weight is stored channels-last (and that is not also NCHW order)."""
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


class SqueezeNet(nn.Module):
    """conv1 -> ReLU -> [max pool 3x3/2] -> Fire x 8 (pools where the arch says) ->
    dropout -> conv10 -> ReLU -> global average pool -> logits (N, classes)."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        c1 = arch.conv1
        layers: list[nn.Module] = [
            nn.Conv2d(3, c1.out_channels, kernel_size=c1.kernel, stride=c1.stride, padding=c1.pad),
            nn.ReLU(inplace=True),
        ]
        pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=arch.ceil_mode)  # noqa: E731
        if "conv1" in arch.pool_after:
            layers.append(pool())
        for f in arch.fires:
            layers.append(Fire(f))
            if f.name in arch.pool_after:
                layers.append(pool())
        self.features = nn.Sequential(*layers)
        # The released Deep-Compression v1.0 pads conv10 by 1: its border is relu(bias) and it
        # enters the average, so `final_pad` must be reproduced, not dropped.
        final = nn.Conv2d(arch.fires[-1].out_channels, arch.num_classes, 1, padding=arch.final_pad)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), final, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's init: final conv N(0, 0.01), the rest Kaiming uniform, biases 0.
        final = self.classifier[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, tap: Tap = None) -> torch.Tensor:
        """Logits (N, classes). `tap(name, tensor)`, when given, sees every tensor of the
        lowered graph (edgesqueeze.graph) under its name, after its fused ReLU: "conv1",
        "pool1", "fire2.squeeze", ..., "fire2.concat", "conv10", "logits"."""
        if x.dim() == 4 and _is_channels_last(self.features[0].weight):
            x = x.contiguous(memory_format=torch.channels_last)  # see from_params
        if tap is None:
            return torch.flatten(self.classifier(self.features(x)), 1)
        pools = iter(self.arch.pool_after)
        for m in self.features:
            if isinstance(m, Fire):
                x = m(x, tap)
            else:
                x = m(x)
                if isinstance(m, nn.ReLU):
                    tap("conv1", x)
                elif isinstance(m, nn.MaxPool2d):
                    after = next(pools)
                    tap("pool1" if after == "conv1" else f"pool{after.removeprefix('fire')}", x)
        x = self.classifier[2](self.classifier[1](self.classifier[0](x)))
        tap("conv10", x)
        y = torch.flatten(self.classifier[3](x), 1)
        tap("logits", y)
        return y

    @classmethod
    def from_params(cls, arch: Arch, params: dict[str, tuple[np.ndarray, np.ndarray]]) -> "SqueezeNet":
        """The model of `arch` with these weights, in eval mode, its tensors in channels-last
        memory order (NHWC in memory, NCHW in shape: every caller sees the same shapes). On CPU
        torch's convolutions and max pools run faster on that layout: a forward pass of v1.0 on
        32 images took 0.65x the time of the NCHW layout (AMD EPYC, 2 threads, torch 2.13); the
        logits differ in float rounding only (3.6e-7 at most on random input)."""
        model = cls(arch)
        model.load_numpy_params(params)
        return model.to(memory_format=torch.channels_last).eval()

    def named_convs(self) -> Iterator[tuple[str, nn.Conv2d]]:
        """(arch name, conv) in execution order: conv1, fireN.squeeze/expand1x1/expand3x3
        [/bypass], conv10."""
        yield "conv1", self.features[0]
        for m in self.features:
            if isinstance(m, Fire):
                n = m.spec.name
                yield f"{n}.squeeze", m.squeeze
                yield f"{n}.expand1x1", m.expand1x1
                yield f"{n}.expand3x3", m.expand3x3
                if m.bypass is not None:
                    yield f"{n}.bypass", m.bypass
        yield "conv10", self.classifier[1]

    def numpy_params(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{arch conv name: (weight OIHW float32, bias float32)} — the plain-data form of the
        weights that the quantizer and the exporters use."""
        return {
            name: (
                np.array(conv.weight.detach().cpu().numpy(), dtype=np.float32, order="C"),  # a C-order copy
                np.array(conv.bias.detach().cpu().numpy(), dtype=np.float32, order="C"),
            )
            for name, conv in self.named_convs()
        }

    def load_numpy_params(self, params: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Set every conv from {name: (weight, bias)}; all names and shapes are checked first
        and every problem is reported at once."""
        from .errors import WeightsError

        convs = dict(self.named_convs())
        problems = [f"missing weights for {n}" for n in convs if n not in params]
        problems += [f"unexpected weights {n!r}" for n in params if n not in convs]
        for n, conv in convs.items():
            if n not in params:
                continue
            w, b = params[n]
            if tuple(w.shape) != tuple(conv.weight.shape):
                problems.append(f"{n}.weight has shape {tuple(w.shape)}, the model needs {tuple(conv.weight.shape)}")
            if tuple(b.shape) != tuple(conv.bias.shape):
                problems.append(f"{n}.bias has shape {tuple(b.shape)}, the model needs {tuple(conv.bias.shape)}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                problems.append(f"{n} holds NaN or Inf")
        if problems:
            raise WeightsError(f"weights do not fit {self.arch.name}: " + "; ".join(problems))
        with torch.no_grad():
            for n, conv in convs.items():
                w, b = params[n]
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
                conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)))


def load_pretrained(source: str = "squeezenet1_0-dc", *, download: bool = False) -> SqueezeNet:
    """Released weights by name or path (edgesqueeze.weights.load_params), as a model in eval mode."""
    from .weights import load_params

    return SqueezeNet.from_params(*load_params(source, download=download))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def squeezenet1_0(*, bypass: Bypass | str = Bypass.NONE, num_classes: int = 1000, caffe: bool = False) -> SqueezeNet:
    """SqueezeNet v1.0: conv1 96x7x7/2; fire2-9 with squeeze 16,16,32,32,48,48,64,64 and
    expand (1x1 + 3x3) 64+64, 64+64, 128+128, 128+128, 192+192, 192+192, 256+256, 256+256;
    max pools after conv1, fire4, fire8 (ceil mode). 1,248,424 parameters.
    `caffe=True`: the released Caffe / Deep-Compression variant (227 BGR input, conv10 pad 1)."""
    return SqueezeNet(squeezenet1_0_arch(bypass=bypass, num_classes=num_classes, caffe=caffe))


def squeezenet1_1(*, bypass: Bypass | str = Bypass.NONE, num_classes: int = 1000) -> SqueezeNet:
    """SqueezeNet v1.1: conv1 64x3x3/2; the same Fire widths as v1.0; max pools after conv1,
    fire3, fire5 (ceil mode). 1,235,496 parameters, 2.4x fewer FLOPs than v1.0."""
    return SqueezeNet(squeezenet1_1_arch(bypass=bypass, num_classes=num_classes))


def squeezenet_from_metaparameters(
    *,
    base_e: int = 128,
    incr_e: int = 128,
    pct3x3: float = 0.5,
    freq: int = 2,
    sr: float = 0.125,
    bypass: Bypass | str = Bypass.NONE,
    num_classes: int = 1000,
) -> SqueezeNet:
    """A SqueezeNet from the paper's metaparameters; the defaults give v1.0."""
    return SqueezeNet(
        metaparameter_arch(
            base_e=base_e, incr_e=incr_e, pct3x3=pct3x3, freq=freq, sr=sr,
            bypass=bypass, num_classes=num_classes,
        )
    )
