"""An `Arch` lowered to a flat list of primitive ops (plain data, no torch).

Every consumer that is not PyTorch walks this list: the float and integer references, the
quantizer, the ONNX and TFLite writers. Tensor names are layer names ("conv1", "pool1",
"fire2.squeeze", "fire2.concat", ...); the graph input is "input" and its output "logits".

    conv      conv2d + bias (+ fused ReLU), params[name] = (OIHW weight, bias)
    maxpool   3x3/2 max pool, ceil or floor
    concat    along channels (the Fire module's two expand branches)
    add       elementwise sum (the paper's bypass)
    mean      global average pool over H, W -> (N, C) logits
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .arch import Arch, Bypass, ConvSpec

INPUT = "input"
OUTPUT = "logits"


class OpKind(str, Enum):
    CONV = "conv"
    MAXPOOL = "maxpool"
    CONCAT = "concat"
    ADD = "add"
    MEAN = "mean"


@dataclass(frozen=True)
class Node:
    kind: OpKind
    name: str  # the output tensor's name
    inputs: tuple[str, ...]
    conv: ConvSpec | None = None  # for CONV
    kernel: int = 0  # for MAXPOOL
    stride: int = 0
    ceil_mode: bool = False

    @property
    def relu(self) -> bool:
        return self.conv is not None and self.conv.relu


def lower(arch: Arch) -> tuple[Node, ...]:
    nodes: list[Node] = []
    convs = {c.name: c for c in arch.convs()}

    def conv(name: str, src: str) -> str:
        nodes.append(Node(OpKind.CONV, name, (src,), conv=convs[name]))
        return name

    def pool(name: str, src: str) -> str:
        nodes.append(Node(OpKind.MAXPOOL, name, (src,), kernel=3, stride=2, ceil_mode=arch.ceil_mode))
        return name

    x = conv("conv1", INPUT)
    if "conv1" in arch.pool_after:
        x = pool("pool1", x)
    for f in arch.fires:
        n = f.name
        s = conv(f"{n}.squeeze", x)
        e1 = conv(f"{n}.expand1x1", s)
        e3 = conv(f"{n}.expand3x3", s)
        nodes.append(Node(OpKind.CONCAT, f"{n}.concat", (e1, e3)))
        y = f"{n}.concat"
        if f.bypass is not Bypass.NONE:
            skip = conv(f"{n}.bypass", x) if f"{n}.bypass" in convs else x
            nodes.append(Node(OpKind.ADD, f"{n}.add", (y, skip)))
            y = f"{n}.add"
        x = y
        if n in arch.pool_after:
            x = pool(f"pool{f.index}", x)
    x = conv("conv10", x)
    nodes.append(Node(OpKind.MEAN, OUTPUT, (x,)))
    return tuple(nodes)
