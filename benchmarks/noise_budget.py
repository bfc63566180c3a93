"""Where the logit error of the default affine 8-bit model comes from: a noise budget per tensor.

    python benchmarks/noise_budget.py --markdown     # about 6 min on 1 core (341 s, 97 + 97 images)
    python benchmarks/noise_budget.py --no-range-split --markdown
    python benchmarks/noise_budget.py --limit 16     # a smoke run on the first 16 calibration images

The default `QuantizeOptions.make()` model (`--no-range-split`: without range splitting, the
analysis that chose it) is calibrated on the even-numbered half of the
calibration split and measured on the odd half (the evaluation split is never read). The
equalized FP32 model that was quantized is run in float32 with chosen tensors fake-quantized,
`(clamp(round(x / s) + zp, -128, 127) - zp) * s`, and each row gives the logit SQNR against FP32
with ONE tensor that owns quantization parameters (quantize.parameter_owners: a concat's grid is
written by its expand convs, a max pool keeps its input's) on the integer model's grid, all
others and the weights float; its share of the summed noise power of those rows; and the SQNR
with that tensor alone on per-channel grids (each channel's own min/max on the calibration half).
Summary rows: every activation per tensor, every activation per channel, the int8 weights alone.

The fake quantization is checked first: every activation on the model's grids with its int8
weights and int32 biases dequantized must give the integer reference's logit SQNR (what the
exported files compute) within 1 dB, else the script exits 1 without a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

for _p in (Path(__file__).resolve().parent.parent, Path(__file__).resolve().parent):  # the project, benchmarks/
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from cv_options import NO_SHARED_DATA, calibration_split  # noqa: E402  (benchmarks/cv_options.py)

TOLERANCE_DB = 1.0  # fake quantization against the integer reference
Grid = tuple[np.ndarray, np.ndarray]  # (scale float32, zero point): shape () per tensor, (C,) per channel
Params = dict[str, tuple[np.ndarray, np.ndarray]]  # conv name -> (OIHW weight, bias), float32


def producers(qm) -> dict[str, list[str]]:
    """{tensor owning quantization parameters: the conv/add outputs written on its grid}, owners
    in graph order (a concat's are its two expand convs; a max pool's grid is its input's)."""
    from edgesqueeze.graph import OpKind
    from edgesqueeze.quant.quantize import parameter_owners
    from edgesqueeze.quant.range_search import owners

    kinds = {n.name: n.kind for n in qm.nodes}
    out: dict[str, list[str]] = {o: [] for o in owners(qm)}
    for tensor, owner in parameter_owners(qm.nodes).items():
        if kinds[tensor] in (OpKind.CONV, OpKind.ADD):
            out[owner].append(tensor)
    return out


def tensor_grids(qm, selected: list[str]) -> dict[str, Grid]:
    """The integer model's grids of the `selected` owners, keyed by the tensors written on them."""
    prod = producers(qm)
    return {t: (np.float32(qm.tensors[t].scale), np.float32(qm.tensors[t].zero_point))
            for o in selected for t in prod[o]}


def fake_quant(x, grid: Grid):
    """x (N, C, H, W) torch float32 rounded to the int8 grid (per tensor or per channel)."""
    import torch

    shape = (1, -1, 1, 1) if np.ndim(grid[0]) else ()
    s, z = (torch.as_tensor(np.asarray(g, np.float32)).reshape(shape) for g in grid)
    return (torch.clamp(torch.round(x / s) + z, -128, 127) - z) * s


def forward(arch, params: Params, pixels: np.ndarray, grids: dict[str, Grid], *, raw_input: bool = False,
            tap: Callable | None = None, batch: int = 16) -> np.ndarray:
    """Logits (N, classes) float64 of the float graph (graph.lower) on uint8 NHWC `pixels`, each
    tensor named in `grids` fake-quantized where it is computed. `raw_input`: conv1 takes the
    pixels unnormalized (the integer model's folded conv1). `tap(name, y)` sees every float output."""
    import torch
    import torch.nn.functional as F

    from edgesqueeze.data import normalize
    from edgesqueeze.graph import INPUT, OUTPUT, OpKind, lower
    from edgesqueeze.quant.range_split import clamped

    nodes = lower(arch)
    clip = clamped(arch)  # range-split squeezes
    w = {k: (torch.from_numpy(np.array(a, np.float32)), torch.from_numpy(np.array(b, np.float32)))
         for k, (a, b) in params.items()}
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            p = pixels[i:i + batch]
            x = torch.from_numpy(np.ascontiguousarray(p.transpose(0, 3, 1, 2), np.float32) if raw_input
                                 else normalize(p, arch.preprocess))
            env = {INPUT: x}
            for n in nodes:
                a = env[n.inputs[0]]
                if n.kind is OpKind.CONV:
                    y = F.conv2d(a, *w[n.name], stride=n.conv.stride, padding=n.conv.pad)
                    y = F.relu(y) if n.relu else y
                    if n.name in clip:  # what the model's Fire does (quant/range_split.py)
                        y = torch.clamp(y, max=clip[n.name])
                elif n.kind is OpKind.MAXPOOL:
                    y = F.max_pool2d(a, n.kernel, n.stride, ceil_mode=n.ceil_mode)
                elif n.kind is OpKind.CONCAT:
                    y = torch.cat([env[k] for k in n.inputs], 1)
                elif n.kind is OpKind.ADD:
                    y = a + env[n.inputs[1]]
                else:  # MEAN
                    y = a.mean(dim=(2, 3))
                if tap is not None:
                    tap(n.name, y)
                env[n.name] = fake_quant(y, grids[n.name]) if n.name in grids else y
            out.append(env[OUTPUT].double().numpy())
    return np.concatenate(out)


def channel_grids(qm, params: Params, pixels: np.ndarray) -> dict[str, Grid]:
    """Per-channel affine grids of every conv/add output from each channel's min/max on `pixels`."""
    from edgesqueeze.quant.quantize import affine_qparams

    wanted = {t for ts in producers(qm).values() for t in ts}
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}

    def tap(name: str, y) -> None:
        if name in wanted:
            a, b = y.amin(dim=(0, 2, 3)).double().numpy(), y.amax(dim=(0, 2, 3)).double().numpy()
            lo[name], hi[name] = (np.minimum(lo[name], a), np.maximum(hi[name], b)) if name in lo else (a, b)

    forward(qm.arch, params, pixels, {}, tap=tap)
    grids = {}
    for t in wanted:
        qp = [affine_qparams(a, b) for a, b in zip(lo[t], hi[t])]
        grids[t] = (np.array([q.scale for q in qp], np.float32), np.array([q.zero_point for q in qp], np.float32))
    return grids


def dequantized_params(qm) -> Params:
    """The integer model's int8 weights and int32 biases as float OIHW convs on raw pixels."""
    if qm.float_convs:
        raise ValueError("a model with float convs is not supported here")
    out = {}
    for name, c in qm.convs.items():
        ws = np.asarray(c.weight_scale, np.float32)
        w = c.weight.astype(np.float32).transpose(0, 3, 1, 2) * ws[:, None, None, None]
        b = c.bias.astype(np.float64) * (np.float64(qm.tensors[c.input].scale) * ws.astype(np.float64))
        out[name] = (w, b.astype(np.float32))
    return out


def noise_power(ref: np.ndarray, test: np.ndarray) -> float:
    d = np.asarray(ref, np.float64) - np.asarray(test, np.float64)
    return float((d * d).sum())


def budget(qm, params: Params, channels: dict[str, Grid], pixels: np.ndarray, fp32: np.ndarray,
           on_tensor: Callable[[str], None] | None = None) -> list[tuple[str, float, float, float]]:
    """(owner, SQNR alone on the model's grid, share of the summed noise in %, SQNR alone per
    channel) for every owner, largest share first. `params`: the equalized float model's."""
    from edgesqueeze.metrics import sqnr_db

    alone, per_channel, noise = {}, {}, {}
    for owner, tensors in producers(qm).items():
        out = forward(qm.arch, params, pixels, tensor_grids(qm, [owner]))
        alone[owner], noise[owner] = sqnr_db(fp32, out), noise_power(fp32, out)
        per_channel[owner] = sqnr_db(fp32, forward(qm.arch, params, pixels, {t: channels[t] for t in tensors}))
        if on_tensor is not None:
            on_tensor(owner)
    total = sum(noise.values())
    rows = [(o, alone[o], 100.0 * noise[o] / total, per_channel[o]) for o in alone]
    return sorted(rows, key=lambda r: -r[2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="the first N calibration images only (a smoke run)")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--no-range-split", action="store_true",
                    help="the affine model without range splitting (QuantizeOptions.make(range_split=()))")
    args = ap.parse_args(argv)

    import torch

    from edgesqueeze import sysinfo
    from edgesqueeze.evaluate import fp32_logits
    from edgesqueeze.metrics import format_table, sqnr_db
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
    from edgesqueeze.quant.sensitivity import reference_logits

    t0 = time.perf_counter()
    data = calibration_split(args.limit)
    if data is None:
        print(NO_SHARED_DATA, file=sys.stderr)
        return 2
    model, calib, pixels = data
    train_px, test_px = pixels[0::2], pixels[1::2]
    print(f"CPU: {sysinfo.cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"calibrated on {len(train_px)} calibration-split images (even-numbered), measured on "
          f"{len(test_px)} (odd-numbered)", flush=True)
    options = QuantizeOptions.make(range_split=() if args.no_range_split else None)
    qm, _, eq = calibrate_and_quantize(model, calib[0::2], options, pixels=train_px)
    params = eq.numpy_params()
    fp32 = fp32_logits(model, test_px)
    ref_db = sqnr_db(fp32, reference_logits(qm, test_px))
    all_owners = list(producers(qm))
    fake_db = sqnr_db(fp32, forward(qm.arch, dequantized_params(qm), test_px, tensor_grids(qm, all_owners),
                                    raw_input=True))
    print(f"logit SQNR vs FP32: integer reference {ref_db:.2f} dB, fake quantization (int8 weights, every "
          f"activation) {fake_db:.2f} dB; float graph unquantized "
          f"{sqnr_db(fp32, forward(qm.arch, params, test_px, {})):.1f} dB", flush=True)
    if not abs(fake_db - ref_db) <= TOLERANCE_DB:
        print(f"fake quantization is {abs(fake_db - ref_db):.2f} dB off the integer reference "
              f"(> {TOLERANCE_DB} dB): no table", file=sys.stderr)
        return 1
    channels = channel_grids(qm, params, train_px)
    rows = budget(qm, params, channels, test_px, fp32, on_tensor=lambda o: print(f"  {o}", file=sys.stderr,
                                                                                  flush=True))
    every_tensor = sqnr_db(fp32, forward(qm.arch, params, test_px, tensor_grids(qm, all_owners)))
    every_channel = sqnr_db(fp32, forward(qm.arch, params, test_px, channels))
    weights = sqnr_db(fp32, forward(qm.arch, dequantized_params(qm), test_px, {}, raw_input=True))
    headers = ["tensor(s) quantized (others and weights float)", "logit SQNR", "share of summed noise",
               "logit SQNR, per-channel grid"]
    table = [[o, f"{a:.2f} dB", f"{s:.1f} %", f"{c:.2f} dB"] for o, a, s, c in rows]
    table += [["**every activation**", f"{every_tensor:.2f} dB", "", f"{every_channel:.2f} dB"],
              ["**int8 weights only** (activations float)", f"{weights:.2f} dB", "", ""]]
    print(format_table(headers, table, compact=args.markdown))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
