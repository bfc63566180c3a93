"""Accuracy and error measures (numpy only): scores -> top-k -> accuracy, drop, agreement, SQNR.

Small functions that compose; the CLI formats their results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def top_k(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the k highest scores per row, best first. Ties go to the lower class index
    (a stable sort on -score), so the same scores always give the same answer on every machine."""
    scores = np.asarray(scores)
    if scores.ndim == 1:
        scores = scores[None]
    return np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]


@dataclass(frozen=True)
class Accuracy:
    name: str
    images: int
    top1: float  # percent
    top5: float  # percent

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy(name: str, scores: np.ndarray, labels: np.ndarray) -> Accuracy:
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return Accuracy(name, 0, float("nan"), float("nan"))
    top = top_k(scores[known], 5)
    lab = labels[known]
    return Accuracy(
        name,
        int(known.sum()),
        100.0 * float((top[:, 0] == lab).mean()),
        100.0 * float((top == lab[:, None]).any(axis=1).mean()),
    )


def agreement(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Percent of rows whose top-1 class is the same."""
    return 100.0 * float((top_k(scores_a, 1)[:, 0] == top_k(scores_b, 1)[:, 0]).mean())


def top1_ties(scores: np.ndarray, tolerance: float = 0.0) -> int:
    """Rows whose best two scores are within `tolerance` (0: exactly equal)."""
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return int((s[:, -1] - s[:, -2] <= tolerance).sum())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - test)^2), in dB."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = ref - np.asarray(test, dtype=np.float64)
    p_noise = float((noise * noise).sum())
    p_sig = float((ref * ref).sum())
    if p_noise == 0.0:
        return float("inf")
    if p_sig == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(p_sig / p_noise))


def format_table(headers: list[str], rows: list[list], *, floatfmt: str = ".2f", compact: bool = False) -> str:
    """A GitHub-markdown table, its columns padded to one width for a terminal; `compact`: unpadded,
    as pasted into docs."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "n/a" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    if compact:
        return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                          *("| " + " | ".join(r) + " |" for r in body)])
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])
