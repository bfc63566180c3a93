"""Run models over labelled images and compare them (the FP32 side needs torch).

Library code never prints: progress goes through an optional callback `progress(n_done)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .data import LabelledImage, iter_batches, load_pixels, normalize
from .metrics import Accuracy, accuracy, agreement, sqnr_db

Progress = Callable[[int], None] | None


def fp32_logits(model, pixels: np.ndarray, *, batch_size: int = 32, progress: Progress = None) -> np.ndarray:
    """Logits of the PyTorch model for uint8 NHWC pixels (as data.load_pixels gives them),
    (len(pixels), classes) float32; `progress(n)` after each batch of n images."""
    import torch

    pre = model.arch.preprocess
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch_size):
            x = pixels[i:i + batch_size]
            out.append(model(torch.from_numpy(normalize(x, pre))).numpy())
            if progress:
                progress(len(x))
    return np.concatenate(out) if out else np.zeros((0, model.arch.num_classes), np.float32)


def fp32_scores(model, items: Sequence[LabelledImage], *, batch_size: int = 32, progress: Progress = None) -> np.ndarray:
    """Logits of the PyTorch model for each image, (len(items), classes) float32; each batch is
    decoded as it is needed."""
    out = [fp32_logits(model, load_pixels(batch, model.arch.preprocess), batch_size=batch_size, progress=progress)
           for batch in iter_batches(items, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.arch.num_classes), np.float32)


@dataclass(frozen=True)
class Comparison:
    """One model against the FP32 baseline on the same images."""

    accuracy: Accuracy
    drop_top1: float  # percentage points, baseline - this
    drop_top5: float
    agreement: float  # percent of images with the same top-1 as the baseline
    # SQNR of the logits against the baseline's, in dB: a continuous measure of the same thing
    # that agreement counts. On ~400 images one image is 0.25 pp of top-1 or agreement, and
    # float summation order alone moves a few; this moves by hundredths of a dB.
    logit_sqnr_db: float = float("nan")

    def to_dict(self) -> dict:
        return {**self.accuracy.to_dict(), "drop_top1_pp": self.drop_top1,
                "drop_top5_pp": self.drop_top5, "top1_agreement": self.agreement,
                "logit_sqnr_db": self.logit_sqnr_db}


def compare(name: str, scores: np.ndarray, baseline_scores: np.ndarray, labels: np.ndarray,
            baseline: Accuracy | None = None) -> Comparison:
    base = baseline or accuracy("fp32", baseline_scores, labels)
    acc = accuracy(name, scores, labels)
    return Comparison(acc, base.top1 - acc.top1, base.top5 - acc.top5, agreement(scores, baseline_scores),
                      sqnr_db(baseline_scores, scores))


def per_layer_sqnr(model, qm, items: Sequence[LabelledImage], *, batch_size: int = 16,
                   progress: Progress = None, pixels: np.ndarray | None = None,
                   conv_kernel=None) -> dict[str, float]:
    """SQNR in dB of every int8 tensor of `qm` (dequantized) against the FP32 model's same
    tensor, signal and noise power summed over all images: {name: dB}, graph order. `model`:
    the float model that was quantized (calibrate_and_quantize's third result).

    Each int8 tensor is the integer reference's, so the error includes everything upstream of
    it: the worst layers show where accuracy is lost. `pixels`: the items already decoded
    (data.load_pixels) in the FP32 model's channel order; `qm` may take the other order (the
    files' order, export/channels.py): it is given the pixels reversed. `conv_kernel`: the integer reference's conv in another form that gives
    the same integers (exact_conv.ExactFloat32Conv: torch's float32 convolutions, several times
    faster than numpy's)."""
    import torch

    from .quant.reference import dequantize_tensor, run_int8

    if model.arch.fires != qm.arch.fires:
        from .errors import OptionError

        raise OptionError("per-layer SQNR compares each int8 tensor with the float model that was quantized, "
                          "and this float model's Fire modules differ from the quantized model's (a range "
                          "split adds squeeze channels): pass calibrate_and_quantize's third result")
    pre = model.arch.preprocess
    names = [n for n in qm.tensors if n != "input"]
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    model.eval()
    if pixels is not None and len(pixels) != len(items):
        raise ValueError(f"{len(pixels)} decoded images for {len(items)} items")
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        px = pixels[start:start + batch_size] if pixels is not None else load_pixels(batch, pre)
        fp: dict[str, np.ndarray] = {}

        def tap(name, t):
            if name in signal:
                fp[name] = t.detach().numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC

        with torch.no_grad():
            model(torch.from_numpy(normalize(px, pre)), tap=tap)
        if qm.arch.preprocess.channel_order != pre.channel_order:  # qm turned to the files' order
            qpx = np.ascontiguousarray(px[..., ::-1])
        else:
            qpx = px
        run = run_int8(qm, qpx, keep=True, conv_kernel=conv_kernel)
        for name in names:
            # float32 differences, their squares summed in float64 (np.dot on float32 would sum
            # in float32): the float64 copies of every tensor cost more than the convs
            ref = fp[name].reshape(-1)
            err = np.asarray(dequantize_tensor(qm, name, run.tensors[name]), dtype=np.float32).reshape(-1) - ref
            signal[name] += _sum_squares(ref)
            noise[name] += _sum_squares(err)
        if progress:
            progress(len(batch))
    return {n: (float("inf") if noise[n] == 0 else 10.0 * float(np.log10(max(signal[n], 1e-300) / noise[n])))
            for n in names}


def _sum_squares(x: np.ndarray, chunk: int = 1 << 16) -> float:
    """sum(x * x) of a float32 vector, each chunk's products summed in float64."""
    total = 0.0
    for i in range(0, x.size, chunk):
        part = x[i:i + chunk]
        total += float(np.einsum("i,i->", part, part, dtype=np.float64))
    return total


def int8_scores(qm, items: Sequence[LabelledImage], *, batch_size: int = 16, progress: Progress = None) -> np.ndarray:
    """Logits of the integer reference for each image, (len(items), classes) float32."""
    from .quant.reference import run_int8

    pre = qm.arch.preprocess
    out = []
    for batch in iter_batches(items, batch_size):
        pixels = load_pixels(batch, pre)
        out.append(run_int8(qm, pixels).logits)
        if progress:
            progress(len(batch))
    return np.concatenate(out) if out else np.zeros((0, qm.arch.num_classes), np.float32)


def sqnr_plot_png(results: dict[str, dict[str, float]], path, *, width: int = 1100, row: int = 18) -> None:
    """A horizontal bar chart of per-layer SQNR (one colour per INT8 variant), drawn with
    OpenCV so no plotting library is needed."""
    import cv2

    variants = list(results)
    names = list(next(iter(results.values())))
    colours = [(200, 120, 40), (40, 140, 230), (60, 170, 60), (160, 60, 160)]
    left, top = 170, 40
    h = top + len(names) * row * max(1, len(variants)) // 2 + len(names) * 6 + 40
    img = np.full((h, width, 3), 255, np.uint8)
    finite = [v for r in results.values() for v in r.values() if np.isfinite(v)]
    vmax = max(50.0, max(finite) if finite else 50.0)
    scale = (width - left - 60) / vmax
    cv2.putText(img, "per-layer SQNR (dB) vs FP32", (left, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for k, v in enumerate(variants):
        cv2.rectangle(img, (width - 230, 10 + 16 * k), (width - 218, 22 + 16 * k), colours[k % 4], -1)
        cv2.putText(img, v, (width - 212, 21 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    y = top + 20
    bar = max(4, row // max(1, len(variants)))
    for name in names:
        cv2.putText(img, name, (6, y + bar), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for k, v in enumerate(variants):
            val = results[v][name]
            x1 = left + int(scale * (val if np.isfinite(val) else vmax))
            cv2.rectangle(img, (left, y + k * bar), (max(left + 1, x1), y + (k + 1) * bar - 1), colours[k % 4], -1)
        y += bar * len(variants) + 6
    for db in range(0, int(vmax) + 1, 10):
        x = left + int(scale * db)
        cv2.line(img, (x, top + 10), (x, y), (200, 200, 200), 1)
        cv2.putText(img, str(db), (x - 6, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img[: y + 30]):
        raise OSError(f"could not write {path}")
