"""Block reconstruction: learn weight rounding and activation step sizes per block (torch).

    qm2, report = reconstruct(qm, fp32_model, pixels, iterations=100)

Why. Calibration chooses each activation range alone (min/max of the tensor) and rounds each
conv's weights for that conv's own output error on FP32 inputs (rounding.py). Neither sees
what the quantized model actually feeds a layer: inputs that already carry the rounding error
of every activation before them. Block reconstruction (Li et al. 2021, "BRECQ"; Wei et al.
2022, "QDrop") fits the quantized block, fed its real quantized input, to the FP32 block's
output on the FP32 input, learning jointly
- the rounding of every weight, floor or ceil of w/s (AdaRound's soft relaxation, Nagel et al.
  2020: w = s (floor(w/s) + h(V)), h a rectified sigmoid driven to 0 or 1 by a regulariser
  1 - |2h - 1|^beta whose beta anneals from 20 to 2);
- the step size of every activation tensor of the block (LSQ, Esser et al. 2020: the fake
  quantizer s * clamp(round(y / s), 0, L) with a straight-through round, so d/ds sees both the
  rounding and the clipping error).
With `learn_rounding=False` the weights stay calibration's integers (rounding.py's choice) and
only the step sizes are learned: AdaRound from the FP32 weights needs thousands of steps per
block to settle on a rounding better than rounding.py's closed-form one, more than a
calibration run can spend on 2 cores.

With learned rounding the bias follows the weights as quantize.py's bias correction does,
b - sum_{c,i,j} (w_soft - w)[o,c,i,j] E[x_c] with the FP32 input means E[x_c] (differentiable
in the soft weights, so the rounding is learned with its mean shift already removed).

Biases are not learned. Adam moves every parameter by about its learning rate per step
whatever the size of its gradient, so a bias with a weak, noisy gradient drifts by a fraction
of an output step; that offset is the same at every position and in every image, so unlike
rounding noise it does not average out in the head (measured: learned biases lowered the logit
SQNR by ~3 dB on the tiny test model). The biases are calibration's, re-quantized to the new
input step, and empirical bias correction (empirical.py) afterwards matches each conv's mean
to FP32's, as without reconstruction.

Blocks: conv1, each Fire module (squeeze -> expand 1x1 | expand 3x3 -> concat), conv10. The
blocks are done in graph order; a finished block's hard-rounded, quantized output (max-pooled
where the graph pools) is the next block's input, so every block compensates the error the
blocks before it left. The loss is the block output's squared error relative to the FP32
output's power, so one learning rate fits every block.

What comes out is what the rest of the pipeline already handles: a QuantizedModel with the
same per-channel weight scales, new int8 weights (each still floor or ceil of w/s; weights on
the grid, the pruned zeros among them, never move), new int32 biases, and activation
parameters made from the learned ranges [0, L s] by the scheme's own rule (quantize.py:
affine L = 255 with zero point -128; ristretto L = 255 unsigned (127 signed) with a power-of-two s, learned in log2
and rounded to the integer exponent with a straight-through estimator). Concat inputs keep
sharing the concat's parameters and max pools their input's. So the integer reference and the
exporters compute it bit for bit like any other model.

Schedule per block (`iterations` steps of Adam on `batch_size` random calibration images, each
step on one random `crop` x `crop` window of the block's output: convolutions are local, so a
window costs its share of the work, and the FP32 and the quantized block see the same window
border). With learned rounding: the first fifth without the rounding regulariser, then the
regulariser with beta annealed to 2 until four fifths; then the weights are hard-rounded and
the last fifth tunes the step sizes alone, so the final state is the one that was optimised,
not a rounding of it. conv10's loss is on its spatial average, the logits (the head averages:
rounding noise averages out there, clipping does not).

Measured (benchmarks/cv_options.py, 2-fold CV on the calibration split of the released v1.0,
97 images per fold; docs/quantization.md has the rows):
- steps only, 100 steps per block, without range splitting: 28.13 dB against 28.42 dB without
  reconstruction (top-1 agreement 96.91 % both);
- steps and rounding, 300 steps, without range splitting: 27.73 dB. The logits came closer on
  77 % of the images, but a few images went much further (paired bootstrap interval of the
  pooled change [-2.12, +1.52] dB). Learned steps can clip; with calibration's steps kept, the
  same rounding search gains (next line);
- the rounding alone (`learn_steps=False`), 300 steps: +1.04 dB without range splitting (29.45
  dB, paired bootstrap interval [+0.70, +1.49]), +0.30 dB with it (30.36 dB, [+0.07, +0.67]).
  It costs about 7-8 minutes per calibration of 97 images on 2 cores (841 and 967 s for both
  folds, against 64 and 58 s without it), and on the evaluation split (measured afterwards)
  the split model lost 0.25 dB with it, so reconstruction stays off by default.
`learn_steps=False` keeps every tensor's parameters as calibration chose them, so it also runs
on a range-split model: the split squeeze's FP32 target is clamped at T as the model is.

Limits: archs without bypass (every conv followed by its ReLU, as v1.0 and v1.1 are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..errors import OptionError
from ..graph import INPUT, OpKind, lower
from .params import QConv, QuantizedModel, Scheme, validate
from .quantize import fold_input_normalization, model_qparams_rule, parameter_owners, weight_qmax
from .range_split import clamped

DEFAULT_ITERATIONS = 100
DEFAULT_BATCH = 16
DEFAULT_CROP = 32  # output positions per side of a training crop (module doc)
ZETA, GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch: h = clip(sigmoid(V)(zeta-gamma)+gamma, 0, 1)
LR_ROUNDING = 1e-2  # on V; h moves over [0, 1] in a few tens of steps
LR_SCALE = 2e-3  # on log(step size): up to ~e^0.2 over 100 steps
ROUND_WEIGHT = 1e-2  # regulariser weight against the relative squared error (about 1e-3 at 30 dB)
WARMUP, HARD_AT = 0.2, 0.8  # shares of the iterations: regulariser starts, weights frozen
BETA = (20.0, 2.0)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Block:
    """One reconstruction unit: its convs in graph order, the activation tensors it quantizes
    (`quantized`), the tensor it hands on (`output`) and the max pool after it (None: none)."""

    name: str
    convs: tuple[str, ...]
    quantized: tuple[str, ...]
    output: str
    pool: object = None  # graph Node of the pool, when one follows


def blocks(qm: QuantizedModel) -> list[Block]:
    """conv1, each Fire module, conv10 (module doc), from the lowered graph."""
    nodes = lower(qm.arch)
    if any(n.kind is OpKind.ADD for n in nodes) or not all(n.relu for n in nodes if n.kind is OpKind.CONV):
        raise OptionError(f"{qm.arch.name}: block reconstruction handles archs without bypass, every conv "
                          "followed by its ReLU (SqueezeNet v1.0/v1.1); turn reconstruction off for this one")
    out: list[Block] = []
    fire: list[str] = []
    for n in nodes:
        if n.kind is OpKind.CONV and n.name.endswith(".squeeze"):
            fire = [n.name]
        elif n.kind is OpKind.CONV and "." in n.name:
            fire.append(n.name)
        elif n.kind is OpKind.CONV:  # conv1, conv10
            out.append(Block(n.name, (n.name,), (n.name,), n.name))
        elif n.kind is OpKind.CONCAT:
            out.append(Block(n.name.split(".")[0], tuple(fire), (fire[0], n.name), n.name))
        elif n.kind is OpKind.MAXPOOL:
            out[-1] = replace(out[-1], pool=n)
    return out


class _Conv:
    """One conv's state: the FP32 weight and bias (the target's), AdaRound's V over the
    weights off the grid, the fixed scales and floors, the quantized conv's bias."""

    def __init__(self, torch, w: np.ndarray, b: np.ndarray, ws: np.ndarray, qmax: int, spec):
        self.spec = spec
        self.clip = 0.0  # > 0: a range-split squeeze's clamp T (FireSpec.squeeze_clip), set by reconstruct
        r = w / ws.astype(np.float64)[:, None, None, None]
        floor = np.floor(r)
        frac = r - floor
        self.fixed = torch.from_numpy(frac == 0)  # on the grid: never moves (pruned zeros stay 0)
        self.floor = torch.from_numpy(floor.astype(np.float32))
        self.qmax = qmax
        self.scale = torch.from_numpy(ws.astype(np.float32)).view(-1, 1, 1, 1)
        self.fp_weight = torch.from_numpy(w.astype(np.float32))
        self.fp_bias = torch.from_numpy(b.astype(np.float32))
        self.bias = self.fp_bias  # the quantized conv's (calibration's, without learned rounding)
        # V with h(V) = frac: the soft weights start at the FP32 weights (AdaRound's start)
        p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
        self.v = torch.tensor(np.log(p / (1 - p)).astype(np.float32), requires_grad=True)
        self.hard: object = None  # set when the weights are frozen: the int weights as float
        self.mean: object = None  # per input channel FP32 mean, for bias correction (learned rounding)

    def h(self, torch):
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def weight(self, torch):
        q = self.hard if self.hard is not None else self.floor + torch.where(self.fixed, 0.0, self.h(torch))
        return torch.clamp(q, -self.qmax, self.qmax) * self.scale

    def freeze(self, torch) -> None:
        with torch.no_grad():
            self.hard = torch.clamp(self.floor + torch.where(self.fixed, 0.0, (self.h(torch) >= 0.5).float()),
                                    -self.qmax, self.qmax)

    def clamp_fp(self, torch, y):
        """The FP32 output y (after its ReLU) as the model computes it: a range-split squeeze's
        clamped at T (arch.FireSpec.squeeze_clip), any other unchanged."""
        return torch.clamp(y, max=self.clip) if self.clip else y

    def regulariser(self, torch, beta: float):
        h = self.h(torch)[~self.fixed]
        return (1 - torch.abs(2 * h - 1) ** beta).sum(), h.numel()


class _Step:
    """One activation tensor's step size: affine s = s0 e^t; ristretto s = 2^round(t) with a
    straight-through round (module doc)."""

    def __init__(self, torch, s0: float, pow2: bool):
        self.pow2 = pow2
        self.t = torch.tensor(math.log2(s0) if pow2 else 0.0, requires_grad=True)
        self.s0 = s0

    def value(self, torch):
        if self.pow2:
            return 2.0 ** (self.t + (torch.round(self.t) - self.t).detach())
        return self.s0 * torch.exp(self.t)


def _fake_quant(torch, y, s, levels: int):
    """s * clamp(round(y / s), 0, levels): a ReLU tensor on its grid, round passed straight
    through (so d/ds is LSQ's: round(y/s) - y/s inside, `levels` above)."""
    z = y / s
    z = z + (torch.round(z) - z).detach()
    return s * torch.clamp(z, 0, levels)


def _forward(torch, block: Block, x, convs: dict, steps: dict | None, levels: int, *, fp: bool = False):
    """The block on input x (real values, NCHW): FP32 (`fp`: float weights and biases, no
    quantization) or quantized (soft or hard weights, the quantized biases, learned steps)."""
    F = torch.nn.functional

    def conv(name, inp):
        c = convs[name]
        if fp:
            w, b = c.fp_weight, c.fp_bias
        else:
            w, b = c.weight(torch), c.bias
            if c.mean is not None:  # bias correction of the soft weights (module doc)
                b = b - (w - c.fp_weight).sum((2, 3)) @ c.mean
        y = F.relu(F.conv2d(inp, w, b, stride=c.spec.stride, padding=c.spec.pad))
        return c.clamp_fp(torch, y) if fp else y  # quantized: the int8 grid saturates at T itself

    def q(name, y):
        return y if fp else _fake_quant(torch, y, steps[name].value(torch), levels)

    if len(block.convs) == 1:
        return q(block.output, conv(block.convs[0], x))
    squeeze, e1, e3 = block.convs
    s = q(squeeze, conv(squeeze, x))
    return q(block.output, torch.cat([conv(e1, s), conv(e3, s)], 1))


def reconstruct(qm: QuantizedModel, model, pixels: np.ndarray, *, iterations: int = DEFAULT_ITERATIONS,
                batch_size: int = DEFAULT_BATCH, seed: int = 0, learn_rounding: bool = False,
                learn_steps: bool = True, crop: int = DEFAULT_CROP, measure_start: bool = False,
                progress: Progress | None = None) -> tuple[QuantizedModel, dict]:
    """(reconstructed QuantizedModel, report). `qm`: the model calibration made from `model`
    (after equalization: the equalized FP32 SqueezeNet), its tensor scales and weight scales
    the starting point; `pixels`: uint8 (N, S, S, 3) calibration pixels (never evaluation
    images). report: {block: [SQNR dB of the block output against FP32 at the end]} on all
    `pixels`, each block fed the quantized output of the blocks before it. `learn_steps=False`
    keeps every tensor's quantization parameters as calibration chose them (only the rounding is
    learned): what a range-split model needs, whose split tensor's grid must end at its clamp
    (FireSpec.squeeze_clip, which the FP32 target applies). `measure_start`
    puts the SQNR of calibration's block (its weights and steps, on the same input) first.
    `progress(blocks done, blocks)` after each block. Memory: the FP32 and quantized inputs of
    one block for all images (float32; about 230 MB for fire3 at 97 images of v1.0)."""
    import torch

    if int(iterations) < 1 or int(batch_size) < 1:
        raise OptionError(f"reconstruction iterations={iterations} and batch_size={batch_size} must be at least 1")
    iterations, batch_size = int(iterations), int(batch_size)
    if not learn_rounding and not learn_steps:
        raise OptionError("reconstruction with learn_rounding=False and learn_steps=False has nothing to learn; "
                          "turn one of them on")
    clips = clamped(qm.arch)  # {range-split squeeze: its clamp T}
    if clips and learn_steps:
        raise OptionError(f"{', '.join(clips)} is range-split: its grid must end exactly at its clamp, which "
                          "learned steps cannot keep; use learn_steps=False (the rounding alone is learned)")
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.dtype != np.uint8 or len(pixels) == 0:
        raise OptionError(f"reconstruction takes uint8 calibration pixels (N, S, S, 3), got {pixels.dtype}{pixels.shape}")
    pow2 = qm.scheme is Scheme.RISTRETTO
    unsigned = not pow2 or bool(qm.calibration.get("unsigned_activations", False))
    levels = 255 if unsigned else 127
    for name, p in qm.tensors.items():  # ReLU tensors: zero point -128 (unsigned), signed ristretto 0
        if name != INPUT and p.zero_point != (-128 if unsigned else 0):
            raise OptionError(f"{name}: zero point {p.zero_point}; reconstruction needs ReLU tensors whose range starts at 0")
    arch = qm.arch
    params = model.numpy_params()
    qmax = weight_qmax(qm.weight_bits)
    gen = torch.Generator().manual_seed(int(seed))
    plan = blocks(qm)
    convs: dict[str, _Conv] = {}
    for blk in plan:
        for name in blk.convs:
            w, b = (np.asarray(a, np.float64) for a in params[name])
            if name == arch.conv1.name:  # the quantized conv1 reads raw pixels (quantize.py)
                w, b = fold_input_normalization(arch, w, b)
            c = _Conv(torch, w, b, qm.convs[name].weight_scale, qmax, qm.convs[name].spec)
            c.clip = clips.get(name, 0.0)
            if not learn_rounding:  # calibration's integers and its (bias-corrected) bias are kept
                old = qm.convs[name]
                c.hard = torch.from_numpy(old.weight.transpose(0, 3, 1, 2).astype(np.float32))
                s_in = np.float32(qm.tensors[old.input].scale)
                c.bias = torch.from_numpy((old.bias * (s_in * old.weight_scale).astype(np.float64)).astype(np.float32))
            convs[name] = c
    # both chains start at the raw pixels (conv1's input normalisation is folded into it); the
    # quantized chain is kept as its integer codes (uint8) and the step that scales them
    x_fp = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().contiguous()
    codes, step_in = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), 1.0
    report: dict[str, list[float]] = {}
    new_ranges: dict[str, tuple[float, float]] = {}
    count = len(pixels)
    chunk = max(1, min(count, 32))
    for k, blk in enumerate(plan):
        steps = {t: _Step(torch, float(qm.tensors[t].scale), pow2) for t in blk.quantized}
        own = [convs[n] for n in blk.convs]
        if learn_rounding:
            _input_means(torch, blk, x_fp, convs, chunk)
        if measure_start:  # the block as calibration left it: its own rounding, its scales
            kept = [c.hard for c in own]
            for c in own:
                c.hard = torch.from_numpy(qm.convs[c.spec.name].weight.transpose(0, 3, 1, 2).astype(np.float32))
            report[blk.name] = [_pass(torch, blk, x_fp, codes, step_in, convs, steps, levels, chunk)[0]]
            for c, h in zip(own, kept):
                c.hard = h
        opt = torch.optim.Adam([{"params": [c.v for c in own] if learn_rounding else [], "lr": LR_ROUNDING},
                                {"params": [s.t for s in steps.values()] if learn_steps else [], "lr": LR_SCALE}])
        warm, hard_at = int(WARMUP * iterations), int(HARD_AT * iterations)
        # conv10 (the last block) is fitted on its spatial average, the others on a random
        # window (module doc, "Schedule")
        last = blk is plan[-1]
        power = None
        for it in range(iterations):
            if learn_rounding and it == hard_at:
                for c in own:
                    c.freeze(torch)
            idx = torch.randint(0, count, (min(batch_size, count),), generator=gen)
            xf, xq = x_fp[idx], codes[idx]
            size = _crop_size(blk, convs, crop)
            if not last and size < xf.shape[2]:
                i, j = (int(torch.randint(0, xf.shape[d] - size + 1, (1,), generator=gen)) for d in (2, 3))
                xf, xq = xf[:, :, i:i + size, j:j + size], xq[:, :, i:i + size, j:j + size]
            with torch.no_grad():
                target = _forward(torch, blk, xf, convs, None, levels, fp=True)
            out = _forward(torch, blk, xq.float() * step_in, convs, steps, levels)
            if last:
                target, out = target.mean((2, 3)), out.mean((2, 3))
            if power is None:  # the normaliser: the FP32 output's power on the first batch
                power = float((target ** 2).mean()) or 1.0
            loss = ((out - target) ** 2).mean() / power
            if learn_rounding and warm <= it < hard_at:
                beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (it - warm) / max(1, hard_at - warm))
                reg, n = zip(*(c.regulariser(torch, beta) for c in own))
                loss = loss + ROUND_WEIGHT * sum(reg) / max(1, sum(n))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for c in own:
            if c.hard is None:
                c.freeze(torch)
        db, x_fp, codes, step_in = _pass(torch, blk, x_fp, codes, step_in, convs, steps, levels, chunk, keep=True)
        report.setdefault(blk.name, []).append(db)
        for t, s in steps.items():
            new_ranges[t] = (0.0, levels * float(s.value(torch).detach()))
        if progress is not None:
            progress(k + 1, len(plan))
    return _quantized_model(qm, convs, new_ranges if learn_steps else None), report


def _input_means(torch, blk: Block, x_fp, convs: dict, chunk: int) -> None:
    """Set each conv's FP32 input channel means on all images (padding left out, as
    quantize.py's bias correction does): the block input's, and for a Fire module's expand
    convs the FP32 squeeze output's."""
    F = torch.nn.functional
    first = convs[blk.convs[0]]
    with torch.no_grad():
        first.mean = x_fp.mean((0, 2, 3), dtype=torch.float64).float()
        if len(blk.convs) > 1:
            total = 0
            for i in range(0, len(x_fp), chunk):
                y = first.clamp_fp(torch, F.relu(F.conv2d(x_fp[i:i + chunk], first.fp_weight, first.fp_bias)))
                total = total + y.sum((0, 2, 3), dtype=torch.float64)
            mean = (total / (len(x_fp) * y.shape[2] * y.shape[3])).float()
            for name in blk.convs[1:]:
                convs[name].mean = mean


def _crop_size(blk: Block, convs: dict, out: int) -> int:
    """Input side that gives `out` output positions per side: (out - 1) stride + kernel for a
    single conv (conv1: 7x7/2 -> 69 for 32), `out` for a Fire module (1x1, then 3x3 padded)."""
    if len(blk.convs) > 1:
        return out
    spec = convs[blk.convs[0]].spec
    return (out - 1) * spec.stride + spec.kernel


def _pass(torch, blk: Block, x_fp, codes, step_in: float, convs, steps, levels: int, chunk: int, *,
          keep: bool = False):
    """(SQNR dB of the quantized block output against FP32 over all images, then with `keep`
    the next block's FP32 input, its quantized input as codes and their step, else the mean
    square of the FP32 output: the loss's normaliser), chunk by chunk, pooled where the graph
    pools."""
    F = torch.nn.functional
    err = power = 0.0
    size = 0
    fps, qs = [], []
    s_out = float(steps[blk.output].value(torch).detach())
    with torch.no_grad():
        for i in range(0, len(x_fp), chunk):
            fp = _forward(torch, blk, x_fp[i:i + chunk], convs, None, levels, fp=True)
            q = _forward(torch, blk, codes[i:i + chunk].float() * step_in, convs, steps, levels)
            err += float(((q - fp) ** 2).sum())
            power += float((fp ** 2).sum())
            size += fp.numel()
            if keep:
                if blk.pool is not None:
                    p = blk.pool
                    fp, q = (F.max_pool2d(a, p.kernel, p.stride, ceil_mode=p.ceil_mode) for a in (fp, q))
                fps.append(fp)
                qs.append(torch.round(q / s_out).to(torch.uint8))  # on the grid: exact codes 0..levels
    db = 10 * math.log10(power / err) if err > 0 else float("inf")
    return (db, torch.cat(fps), torch.cat(qs), s_out) if keep else (db, power / size or 1.0)


def _quantized_model(qm: QuantizedModel, convs: dict, ranges: dict | None) -> QuantizedModel:
    """qm with the learned ranges, int weights and biases (module doc: the scheme's own rule
    for the parameters, concat inputs sharing the concat's, pools their input's); `ranges`
    None: calibration's tensor parameters, unchanged."""
    if ranges is None:
        tensors = dict(qm.tensors)
    else:
        make = model_qparams_rule(qm)
        tensors = {INPUT: qm.tensors[INPUT]}
        for name, owner in parameter_owners(lower(qm.arch)).items():
            tensors[name] = make(*ranges[owner])
    new = {}
    for name, c in convs.items():
        old = qm.convs[name]
        s_in = np.float32(tensors[old.input].scale)
        bias_scale = (s_in * old.weight_scale.astype(np.float32)).astype(np.float64)
        b = c.bias.double().numpy()
        if c.mean is not None:  # bias correction of the learned rounding (module doc)
            dw = (c.hard.double() * c.scale.double() - c.fp_weight.double()).sum((2, 3)).numpy()
            b = b - dw @ c.mean.double().numpy()
        weight = c.hard.numpy().astype(np.int8).transpose(0, 2, 3, 1)
        bias = np.rint(b / bias_scale)
        if np.abs(bias).max() >= 2**31:
            raise OptionError(f"{name}: a reconstructed bias does not fit int32; turn reconstruction off")
        new[name] = QConv(name, old.spec, np.ascontiguousarray(weight), old.weight_scale,
                          bias.astype(np.int32), old.input, old.output)
    info = {**qm.calibration, "ranges": {**qm.calibration.get("ranges", {}),
                                         **{n: list(r) for n, r in (ranges or {}).items()}}}
    out = replace(qm, tensors=tensors, convs=new, calibration=info)
    validate(out)
    return out
