"""Which SqueezeNet a weights file holds: the architecture by name, or told from its shapes.

A user's fine-tuned SqueezeNet differs from the released one in its class count (conv10's
output channels) and sometimes in its bypasses; everything else is one of two layer tables.
What a torchvision-layout state_dict says about itself:

- conv1's weight: (96, 3, 7, 7) is v1.0, (64, 3, 3, 3) is v1.1;
- conv10's weight rows (`classifier.1.weight`): the number of classes;
- `features.N.bypass.weight` keys: the paper's complex bypass (a 1x1 conv where a Fire
  module's input and output widths differ).

A simple (identity) bypass adds no weights, so a state_dict cannot tell it from no bypass:
the plain network is assumed and the alternative is named, so a caller can say so (`--arch`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..arch import Arch, Bypass, squeezenet1_0_arch, squeezenet1_1_arch
from ..errors import OptionError, WeightsError

# name -> factory(num_classes): every SqueezeNet a weights file can hold, spelled out.
ARCH_FACTORIES: dict[str, Callable[[int], Arch]] = {
    "squeezenet1_0": lambda n: squeezenet1_0_arch(num_classes=n),
    "squeezenet1_1": lambda n: squeezenet1_1_arch(num_classes=n),
    "squeezenet1_0-simple-bypass": lambda n: squeezenet1_0_arch(bypass=Bypass.SIMPLE, num_classes=n),
    "squeezenet1_0-complex-bypass": lambda n: squeezenet1_0_arch(bypass=Bypass.COMPLEX, num_classes=n),
    "squeezenet1_1-simple-bypass": lambda n: squeezenet1_1_arch(bypass=Bypass.SIMPLE, num_classes=n),
    "squeezenet1_1-complex-bypass": lambda n: squeezenet1_1_arch(bypass=Bypass.COMPLEX, num_classes=n),
    # the released Caffe / Deep-Compression v1.0: 227x227 BGR minus the Caffe mean, conv10 pad 1
    "squeezenet1_0-caffe": lambda n: squeezenet1_0_arch(num_classes=n, caffe=True),
}
ARCH_NAMES = tuple(ARCH_FACTORIES)

CONV1_SHAPES = {(96, 3, 7, 7): "squeezenet1_0", (64, 3, 3, 3): "squeezenet1_1"}


def arch_by_name(name: str, *, num_classes: int = 1000) -> Arch:
    """The arch called `name` (ARCH_NAMES) with `num_classes` outputs."""
    factory = ARCH_FACTORIES.get(str(name))
    if factory is None:
        raise OptionError(f"arch {name!r} is not one of: {', '.join(ARCH_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise OptionError(f"num_classes={num_classes!r} must be a positive integer")
    return factory(int(num_classes))


@dataclass(frozen=True)
class ArchGuess:
    """The arch a state_dict's shapes imply, and the names it cannot be told from."""

    arch: Arch
    alternatives: tuple[str, ...] = ()


def state_dict_classes(tensors: Mapping[str, np.ndarray], path) -> int:
    """conv10's output channels of a torchvision-layout state_dict."""
    w = tensors.get("classifier.1.weight")
    if w is None or np.ndim(w) != 4:
        raise WeightsError(f"{path}: no 4-D 'classifier.1.weight' (conv10), so the class count cannot be read; "
                           "is this a torchvision-layout SqueezeNet state_dict? (keys features.N.*, classifier.1.*)")
    return int(np.shape(w)[0])


def infer_state_dict_arch(tensors: Mapping[str, np.ndarray], path) -> ArchGuess:
    """The arch of a torchvision-layout state_dict, class count included (module doc)."""
    w = tensors.get("features.0.weight")
    if w is None:
        raise WeightsError(f"{path}: no 'features.0.weight' (conv1); not a torchvision-layout SqueezeNet "
                           f"state_dict. Known architectures: {', '.join(ARCH_NAMES)}")
    family = CONV1_SHAPES.get(tuple(np.shape(w)))
    if family is None:
        known = "; ".join(f"{v} {k}" for k, v in CONV1_SHAPES.items())
        raise WeightsError(f"{path}: conv1 weight {tuple(np.shape(w))} matches no known SqueezeNet ({known}); "
                           f"pass --arch with one of: {', '.join(ARCH_NAMES)}")
    n = state_dict_classes(tensors, path)
    if any(re.fullmatch(r"features\.\d+\.bypass\.weight", k) for k in tensors):
        return ArchGuess(arch_by_name(f"{family}-complex-bypass", num_classes=n))
    return ArchGuess(arch_by_name(family, num_classes=n), alternatives=(f"{family}-simple-bypass",))


def caffe_classes(blobs: Mapping[str, list[np.ndarray]]) -> int | None:
    """conv10's output channels in a caffemodel (layer conv_final or conv10), if present."""
    for name in ("conv_final", "conv10"):
        layer = blobs.get(name)
        if layer:
            return int(np.shape(layer[0])[0])
    return None


__all__ = ["ARCH_NAMES", "ArchGuess", "arch_by_name", "caffe_classes", "infer_state_dict_arch",
           "state_dict_classes"]
