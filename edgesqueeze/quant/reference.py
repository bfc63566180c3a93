"""The integer reference: what an INT8 runtime computes for a QuantizedModel (numpy only).

This is the golden model both exporters are checked against (<= 1 LSB). It takes the same input
as the exported files — uint8 NHWC pixels in the model's channel order — and runs:

    input   q = pixel - 128 (scale 1, zero point -128)
    conv    int32 acc = sum((x - x_zp) * w) + bias, exact (kernels.conv2d_accumulate);
            requantized per output channel by M = s_in * s_w[c] / s_out, + s_out's zero point,
            clamped to [zp, 127] after a fused ReLU (the clamp is the ReLU), else [-128, 127]
    maxpool on the int8 values, ceil mode as the arch says
    concat  a copy: inputs and output share parameters (quantize.py)
    add     real sum of the two dequantized inputs, requantized (float32)
    float conv  a conv the model keeps in float (QuantizedModel.float_convs): its int8 input
            dequantized to float32, convolved with the float32 weights in float32, + bias,
            [ReLU], then quantized to the output tensor's parameters (x / s_out rounded half to
            even, + zero point, clamped to int8). The runtimes sum in another order, so a file
            with float convs matches this within 1 LSB per tensor, not bit for bit
    mean    the head: conv10's int8 output dequantized and averaged in float —
            logits = s * sum_hw(q - zp) / (H*W). Averaging in float keeps the resolution of the
            sum (s / 225 for v1.0), so top-1 is decided by the model, not by an int8 rounding of
            the logits. The exported files end in a float softmax of these logits (output
            "probability"); `IntRun.probabilities` / `softmax` is that step here. Equal integer
            sums give equal logits and so equal probabilities: ties stay ties.

Requantization (`Requant`): the runtimes do not agree bit for bit. LiteRT's default XNNPACK
kernels and onnxruntime's QLinearConv compute rint(float32(acc) * float32(M)) (half to even);
TFLite's reference kernels use a fixed-point multiplier and shift with gemmlowp's rounding
(kernels.requantize). Any two differ by at most 1 LSB per layer; FLOAT32 is the default because
that is what both deployed runtimes run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import numpy as np

from ..errors import DataError
from ..graph import INPUT, Node, OpKind
from . import kernels
from .params import QConv, QuantizedModel, parse_enum


class Requant(str, Enum):
    FLOAT32 = "float32"  # LiteRT (XNNPACK), onnxruntime
    FIXED_POINT = "fixed-point"  # TFLite reference kernels


@dataclass(frozen=True)
class IntRun:
    logits: np.ndarray  # float32 (N, classes)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # int8 NHWC, when kept

    @property
    def probabilities(self) -> np.ndarray:
        """softmax(logits): what the exported files output (float32 (N, classes))."""
        return softmax(self.logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (max subtracted first), returned as float32: the
    head's float softmax. Equal logits give equal probabilities, and the order of distinct
    logits is kept."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def pixels_to_int8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> int8 q = pixel - 128 (the input's parameters: scale 1, zero point -128)."""
    if pixels.dtype != np.uint8:
        raise DataError(f"the integer model takes uint8 pixels, got {pixels.dtype}; use data.to_uint8_input")
    # p ^ 0x80 read as int8 is p - 128 (two's complement), without int16 copies of the batch
    return np.bitwise_xor(pixels, np.uint8(0x80)).view(np.int8)


# Requantization runs on blocks of this many accumulators: its int64 and float32 temporaries
# then stay in cache. On a whole batch (conv1: 1.2 M values per image) they are hundreds of MB
# and the elementwise passes ran 3x slower (measured on conv1's accumulators, 2 cores).
_REQUANT_BLOCK = 1 << 18
# Images per conv chunk: about this many int32 accumulators exist at once.
_ACC_BUDGET = 1 << 20


class Requantizer:
    """One conv's requantization (int32 accumulators -> int8), its per-channel constants
    computed once: `scale` (float32 multipliers, Requant.FLOAT32), `zp`, `qmin` (qmax is 127)."""

    def __init__(self, conv: QConv, tensors, zp: int, qmin: int, how: Requant):
        self.zp, self.qmin, self.how = zp, qmin, how
        if how is Requant.FLOAT32:
            self.scale = conv.real_multiplier(tensors)
        else:
            self.mult, self.shift = kernels.quantize_multiplier(conv.real_multiplier(tensors, dtype=np.float64))

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """int8 outputs of int32 accumulators (..., O), block by block (the same values as in
        one call: every output depends on its own accumulator alone)."""
        flat = acc.reshape(-1, acc.shape[-1])
        out = np.empty(flat.shape, np.int8)
        rows = max(1, _REQUANT_BLOCK // flat.shape[1])
        for i in range(0, len(flat), rows):
            block = flat[i:i + rows]
            if self.how is Requant.FLOAT32:
                out[i:i + rows] = kernels.requantize_fp32(block, self.scale, self.zp, self.qmin, 127, np.int8)
            else:
                out[i:i + rows] = kernels.requantize(block, self.mult, self.shift, self.zp, self.qmin, 127, np.int8)
        return out.reshape(acc.shape)


# before_conv(node, conv, x) -> the QConv to run (or None: `conv` as it is). It sees the conv's
# whole int8 input `x` (all images) before anything of the conv is computed; empirical bias
# correction (quant/empirical.py) returns the conv with its bias corrected there.
BeforeConv = Callable[[Node, QConv, np.ndarray], "QConv | None"]
# progress(done, total): multiply-accumulates of the convs computed so far, of all of them
WorkProgress = Callable[[int, int], None]
# conv_kernel(x, node, conv, input_zero_point, requantize) -> int8 NHWC outputs of the conv on
# the int8 NHWC chunk x: what int8_conv computes, by other means (edgesqueeze/exact_conv.py)
ConvKernel = Callable[[np.ndarray, Node, QConv, int, "Requantizer"], np.ndarray]


def int8_conv(x: np.ndarray, node: Node, conv: QConv, input_zero_point: int, requantize: "Requantizer") -> np.ndarray:
    """One conv of the integer model on an int8 NHWC chunk: exact int32 accumulators
    (kernels.conv2d_accumulate), requantized to int8."""
    p = node.conv.pad
    acc = kernels.conv2d_accumulate(x, input_zero_point, conv.weight, conv.bias, stride=node.conv.stride,
                                    padding=(p, p, p, p))
    return requantize(acc)


class FloatConv:
    """A float-kept conv (module doc, "float conv"): int8 NHWC chunk -> int8 NHWC outputs."""

    def __init__(self, node: Node, weight: np.ndarray, bias: np.ndarray, s_in: float, zp_in: int,
                 s_out: float, zp_out: int, qmin: int):
        o, kh, kw, cin = weight.shape
        self.node, self.kh, self.kw, self.out_channels = node, kh, kw, o
        self.w_cols = np.ascontiguousarray(np.asarray(weight, np.float32).reshape(o, -1).T)  # (K, O), K = (kh, kw, c)
        self.bias = np.asarray(bias, np.float32)
        self.s_in, self.zp_in = np.float32(s_in), zp_in
        self.s_out, self.zp_out, self.qmin = np.float32(s_out), zp_out, qmin

    def __call__(self, x: np.ndarray) -> np.ndarray:
        spec = self.node.conv
        n, h, w, _ = x.shape
        p, s = spec.pad, spec.stride
        oh, ow = (h + 2 * p - self.kh) // s + 1, (w + 2 * p - self.kw) // s + 1
        # dequantize: (q - zp) * scale, one float32 rounding (kernels.dequantize)
        xf = ((x.astype(np.int32) - self.zp_in).astype(np.float64) * np.float64(self.s_in)).astype(np.float32)
        if self.kh == 1 and self.kw == 1 and p == 0:
            cols = kernels._cols_1x1(xf, s)
        else:
            cols = kernels._cols_im2col(xf, self.kh, self.kw, s, (p, p, p, p), oh, ow)
        y = cols.astype(np.float32, copy=False) @ self.w_cols
        y += self.bias
        if self.node.relu:
            np.maximum(y, np.float32(0), out=y)
        q = np.rint(y / self.s_out)  # float32 division, half to even (ONNX QuantizeLinear)
        np.clip(q, self.qmin - self.zp_out, 127 - self.zp_out, out=q)
        return (q.astype(np.int32) + self.zp_out).astype(np.int8).reshape(n, oh, ow, self.out_channels)


def float_conv(qm: QuantizedModel, node: Node) -> FloatConv:
    """The FloatConv of `node`, one of qm.float_convs."""
    w, b = qm.float_weights[node.name]
    t_in, t_out = qm.tensors[node.inputs[0]], qm.tensors[node.name]
    qmin = max(t_out.zero_point, -128) if node.relu else -128
    return FloatConv(node, w, b, t_in.scale, t_in.zero_point, t_out.scale, t_out.zero_point, qmin)


def run_int8(qm: QuantizedModel, pixels: np.ndarray, *, requant: Requant | str = Requant.FLOAT32,
             keep: bool = False, conv_kernel: ConvKernel | None = None, start: int = 0,
             tensors: dict[str, np.ndarray] | None = None) -> IntRun:
    """Run the quantized model on uint8 pixels (N, H, W, 3) or (H, W, 3). `conv_kernel`: the
    integer conv in another form that gives the same integers (exact_conv.ExactFloat32Conv).
    `start`, `tensors`: resume at node `start` of `qm.nodes`, reading what the nodes before it
    wrote from `tensors` (the `tensors` of a keep=True run on the same pixels, whose arrays are
    only read); a search that changes one tensor's parameters reruns the graph from there."""
    return _run(qm, pixels, parse_enum(Requant, requant, "requant"), keep=keep, conv_kernel=conv_kernel,
                start=start, tensors=tensors)


def _conv_out_shape(node: Node, conv: QConv, x_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    n, h, w, _ = x_shape
    o, kh, kw, _ = conv.weight.shape
    s, p = node.conv.stride, node.conv.pad
    return n, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1, o


def _shapes(qm: QuantizedModel, nodes, shape) -> dict[str, tuple[int, ...]]:
    """The NHWC shape of every tensor for an input batch of `shape` (N, S, S, 3)."""
    sizes = {INPUT: tuple(shape)}
    for n in nodes:
        if n.kind is OpKind.CONV:
            sizes[n.name] = _conv_out_shape(n, qm.convs[n.name], sizes[n.inputs[0]])
        elif n.kind is OpKind.MAXPOOL:
            b, h, w, c = sizes[n.inputs[0]]
            sizes[n.name] = (b, kernels.pool_output_size(h, n.kernel, n.stride, n.ceil_mode),
                             kernels.pool_output_size(w, n.kernel, n.stride, n.ceil_mode), c)
        elif n.kind is OpKind.CONCAT:
            parts = [sizes[i] for i in n.inputs]
            sizes[n.name] = (*parts[0][:3], sum(p[3] for p in parts))
        elif n.kind is OpKind.ADD:
            sizes[n.name] = sizes[n.inputs[0]]
    return sizes


def conv_macs(qm: QuantizedModel, pixels_shape: tuple[int, ...]) -> dict[str, int]:
    """{conv name: multiply-accumulates} for an input batch of `pixels_shape` (N, S, S, 3)."""
    nodes = qm.nodes
    sizes = _shapes(qm, nodes, pixels_shape)
    out = {}
    for n in nodes:
        if n.kind is OpKind.CONV:
            _, oh, ow, o = sizes[n.name]
            out[n.name] = sizes[n.name][0] * oh * ow * qm.convs[n.name].weight[0].size * o
    return out


def _mean_logits(q: np.ndarray, p) -> np.ndarray:
    """The head: int8 (N, H, W, C) dequantized and averaged over H, W in float (module doc)."""
    q = q.astype(np.int64) - p.zero_point
    hw = q.shape[1] * q.shape[2]
    return (q.sum(axis=(1, 2)) * (p.scale / hw)).astype(np.float32)


def _run(qm: QuantizedModel, pixels: np.ndarray, how: Requant, *, keep: bool = False,
         before_conv: BeforeConv | None = None, chunk: int | None = None,
         progress: WorkProgress | None = None, conv_kernel: ConvKernel | None = None, start: int = 0,
         tensors: dict[str, np.ndarray] | None = None) -> IntRun:
    """run_int8, plus what empirical bias correction (quant/empirical.py) needs: `before_conv`,
    `progress` after every chunk of images of every conv, and `conv_kernel` in place of int8_conv.

    Memory: a conv runs `chunk` images at a time (default: as many as make about _ACC_BUDGET
    int32 accumulators) and only int8 results are kept. Without `keep`, a tensor is dropped
    after its last reader, and a conv whose only reader is a max pool, a concat or the mean
    hands each chunk straight on: pooled (its full-size output never exists), written into its
    channels of the concat (no copy), or averaged into the logits; the convs of a concat that
    only a max pool reads (fire4, fire8 of v1.0) run together, and only the pool is kept. Every
    value is computed as in plain node-by-node order: each depends on its own image alone, and
    `before_conv` sees each conv's whole input before that conv runs."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    s = qm.arch.input_size
    if pixels.shape[1:] != (s, s, 3):
        raise DataError(f"input shape {pixels.shape[1:]} is not ({s}, {s}, 3); resize/crop with data.to_uint8_input")
    t = qm.tensors
    nodes = qm.nodes
    count = len(pixels)
    env: dict[str, np.ndarray] = {INPUT: pixels_to_int8(pixels)}
    if start:
        if not keep or tensors is None or not 0 < start < len(nodes):
            raise ValueError(f"resuming at node {start} needs keep=True and the tensors of an earlier run "
                             f"(0 < start < {len(nodes)})")
        # every tensor written at or after `start` is computed anew (never written into: a
        # concat found in `tensors` would otherwise be filled in place)
        later = {n.name for n in nodes[start:]}
        env = {k: v for k, v in tensors.items() if k not in later}
    logits = None
    # the last node that reads each tensor: past it the tensor is dropped (peak memory stays
    # at a few feature maps) unless `keep` asks for all of them
    last_use = {i: k for k, n in enumerate(nodes) for i in n.inputs}
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in nodes}
    sizes = _shapes(qm, nodes, pixels.shape)
    macs = conv_macs(qm, pixels.shape)
    total, done = sum(macs.values()), 0
    # channel offset of each conv output inside the concat that is its only reader
    concat_at = {}
    # a concat of convs that all read one tensor, read only by a max pool (a Fire module before
    # a pool): its convs run together chunk by chunk and only the pool of the concat is kept
    pooled_concat: dict[str, tuple[list[str], Node, Node]] = {}
    for n in nodes:
        if n.kind is OpKind.CONCAT and not keep:
            at = 0
            for i in n.inputs:
                if i in qm.convs and len(readers[i]) == 1:
                    concat_at[i] = (n.name, at)
                at += sizes[i][3]
            after = readers.get(n.name, [])
            if (all(i in concat_at for i in n.inputs) and len({by_name[i].inputs[0] for i in n.inputs}) == 1
                    and len(after) == 1 and after[0].kind is OpKind.MAXPOOL):
                pooled_concat[n.inputs[0]] = (list(n.inputs), n, after[0])
    floats = {name: float_conv(qm, by_name[name]) for name in qm.float_convs}
    fused: set[str] = set()  # nodes computed chunk by chunk together with a conv before them
    for k, n in enumerate(nodes):
        if k < start:
            continue
        if n.name in fused:
            pass
        elif n.kind is OpKind.CONV:
            x = env[n.inputs[0]]
            names, concat, pool = pooled_concat.get(n.name, ([n.name], None, None))
            convs = []
            for name in names:  # every conv of a group sees the same input: all hooks first
                c = qm.convs[name]
                if before_conv is not None:
                    c = before_conv(by_name[name], c, x) or c
                zp = t[name].zero_point
                convs.append((by_name[name], c, Requantizer(c, t, zp, max(zp, -128) if by_name[name].relu else -128, how)))
            after = readers.get(n.name, [])
            then = after[0] if len(after) == 1 and not keep and after[0].kind in (OpKind.MAXPOOL, OpKind.MEAN) else None
            if pool is not None:
                fused.update(names[1:])
                fused.update((concat.name, pool.name))
                out = env[pool.name] = np.empty(sizes[pool.name], np.int8)
            elif n.name in concat_at:
                name, at = concat_at[n.name]
                if name not in env:
                    env[name] = np.empty(sizes[name], np.int8)
                out = env[name][..., at:at + sizes[n.name][3]]
            elif then is not None:
                fused.add(then.name)
                if then.kind is OpKind.MAXPOOL:
                    out = env[then.name] = np.empty(sizes[then.name], np.int8)
                else:
                    out = logits = np.empty((count, sizes[n.name][3]), np.float32)
            else:
                out = env[n.name] = np.empty(sizes[n.name], np.int8)
            per_image = sum(sizes[name][1] * sizes[name][2] * sizes[name][3] for name in names)
            step = chunk or max(1, _ACC_BUDGET // per_image)
            for i in range(0, count, step):
                part = x[i:i + step]
                if pool is not None:
                    cat = np.empty((len(part), *sizes[concat.name][1:]), np.int8)
                for node, c, requantize in convs:
                    if node.name in floats:
                        q = floats[node.name](part)
                    else:
                        q = (conv_kernel or int8_conv)(part, node, c, t[c.input].zero_point, requantize)
                    if pool is not None:
                        at = concat_at[node.name][1]
                        cat[..., at:at + q.shape[3]] = q
                    elif then is None:
                        out[i:i + len(q)] = q
                    elif then.kind is OpKind.MAXPOOL:
                        out[i:i + len(q)] = kernels.max_pool(q, kernel=then.kernel, stride=then.stride,
                                                             ceil_mode=then.ceil_mode)
                    else:
                        out[i:i + len(q)] = _mean_logits(q, t[node.name])
                    done += macs[node.name] // count * len(q)
                    if progress is not None:
                        progress(done, total)
                if pool is not None:
                    out[i:i + len(part)] = kernels.max_pool(cat, kernel=pool.kernel, stride=pool.stride,
                                                            ceil_mode=pool.ceil_mode)
        elif n.kind is OpKind.MAXPOOL:
            env[n.name] = kernels.max_pool(env[n.inputs[0]], kernel=n.kernel, stride=n.stride, ceil_mode=n.ceil_mode)
        elif n.kind is OpKind.CONCAT:
            if n.name not in env:
                env[n.name] = np.concatenate([env[i] for i in n.inputs], axis=-1)
            else:  # its convs wrote their channels; copy the inputs that are not theirs
                at = 0
                for i in n.inputs:
                    if i not in concat_at:
                        env[n.name][..., at:at + sizes[i][3]] = env[i]
                    at += sizes[i][3]
        elif n.kind is OpKind.ADD:
            a, b = (kernels.dequantize(env[i], t[i].scale, t[i].zero_point) for i in n.inputs)
            out = t[n.name]
            env[n.name] = kernels.quantize(a + b, out.scale, out.zero_point, np.int8)
        elif n.kind is OpKind.MEAN:
            logits = _mean_logits(env[n.inputs[0]], t[n.inputs[0]])
        if not keep:
            for i in n.inputs:
                if last_use[i] == k:
                    env.pop(i, None)
    return IntRun(logits, env if keep else {})


def dequantize_tensor(qm: QuantizedModel, name: str, q: np.ndarray) -> np.ndarray:
    p = qm.tensors[name]
    return kernels.dequantize(q, p.scale, p.zero_point)
