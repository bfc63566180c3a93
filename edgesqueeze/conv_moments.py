"""Moments of conv input patches, accumulated batch by batch (torch, float64).

Adaptive rounding (quant/rounding.py) needs, for every conv, H = E[x x^T] over its input
patches x (K = kh * kw * C values, OHWI order, zero padding included) and E[x]. Building every
patch (im2col) and multiplying costs K^2 per output position: for v1.0 on 194 images about
1.8 G multiply-adds per image, most of it in the 3x3 expands, where each input value is copied
into 9 patches.

The lag form. For a stride-1 conv, block (a, b) of H (kernel offsets a, b; b - a = d) is

    H[a][b] = sum over images and output positions p of x~[p + a - pad] x~[p + b - pad]^T

(x~: x with zeros outside the image). With u = p + a - pad this is sum_u x[u] x[u + d]^T over
the u whose pair lies inside the image and whose output position lies inside the output grid.
Without the last condition it is the lag-d cross-product G(d) of the whole tensor, the same for
every pair with that d; the condition only removes a few border rows and columns (those a tap
never reads). So

    H[a][b] = G(d) - (border rows) - (border columns) + (their corners)

and a 3x3 conv needs 13 lags (G(-d) = G(d)^T) instead of 81 blocks, each block C x C. G(d) is
one matrix product on two shifted views of the input laid out with zero rows and columns
(no patch is copied). A strided conv (conv1, 7x7/2 on 3 channels) has no shared lags to speak
of and few channels: its patches are built (im2col) and multiplied directly; on raw pixels
(small integers) in float32 over row blocks short enough for every sum to be exact.

Products with a long inner dimension and few channels (C <= 64) run as batched products over
blocks of rows, summed: as one product they were 3-7x slower on 2 cores (MKL, 1e5 rows x 32
columns). Sums are float64 over chunks of images (about _CHUNK_ELEMENTS values each); their
order differs from one im2col product per image by rounding only (measured on v1.0: at most
7e-14 of the largest entry); integer inputs (conv1 on raw pixels) are summed exactly either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .calibrate import Scratch
from .exact_conv import ieee_float32
from .quant.rounding import PatchMoments

# float64 values of one chunk of the laid-out input or of its patches: 8 MB (at least one image)
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    stride: int
    pad: int


@dataclass(frozen=True)
class _Reader:
    """A stride-1 conv reading the tensor: kernel, pad, output size."""

    kernel: tuple[int, int]
    pad: int
    out_hw: tuple[int, int]


def _interval(lo: int, hi: int, lo2: int, hi2: int) -> tuple[int, int]:
    lo, hi = max(lo, lo2), min(hi, hi2)
    return lo, max(lo, hi)


class _LagSums:
    """sum over images of x[u] x[u + d]^T (lags d), border rows/columns and plane sums of one
    NHWC float64 tensor, for the stride-1 readers given."""

    def __init__(self, readers: dict[str, _Reader], h: int, w: int, c: int):
        self.readers, self.h, self.w, self.c = readers, h, w, c
        self.kh = max(r.kernel[0] for r in readers.values())
        self.kw = max(r.kernel[1] for r in readers.values())
        lags, rows, cols, corners = set(), set(), set(), set()
        for r in readers.values():
            for a, b in self._pairs(r):
                d = (b[0] - a[0], b[1] - a[1])
                lags.add(d)
                er, ec = self._excluded(r, a, d)
                rows.update((d, i) for i in er)
                cols.update((d, j) for j in ec)
                corners.update((d, i, j) for i in er for j in ec)
        self.lags, self.rows, self.cols, self.corners = sorted(lags), sorted(rows), sorted(cols), sorted(corners)
        self.sums: dict[tuple, torch.Tensor] = {}
        self.plane = torch.zeros(h, w, c, dtype=torch.float64)
        self.images = 0

    @staticmethod
    def _pairs(r: _Reader):
        """Kernel offset pairs (a, b), a <= b in row-major order (b - a in the upper half-plane)."""
        offs = [(i, j) for i in range(r.kernel[0]) for j in range(r.kernel[1])]
        return [(a, b) for k, a in enumerate(offs) for b in offs[k:]]

    def _excluded(self, r: _Reader, a, d) -> tuple[list[int], list[int]]:
        """Rows and columns u of the lag-d pairs inside the image that offset a never reads."""
        (dr, dc), (oh, ow) = d, r.out_hw
        rows_f = (0, self.h - dr)
        cols_f = (max(0, -dc), min(self.w, self.w - dc))
        rows_r = _interval(*rows_f, a[0] - r.pad, a[0] - r.pad + oh)
        cols_r = _interval(*cols_f, a[1] - r.pad, a[1] - r.pad + ow)
        er = [i for i in range(*rows_f) if not rows_r[0] <= i < rows_r[1]]
        ec = [j for j in range(*cols_f) if not cols_r[0] <= j < cols_r[1]]
        return er, ec

    def _add(self, key, value: torch.Tensor) -> None:
        have = self.sums.get(key)
        self.sums[key] = value if have is None else have.add_(value)

    def layout(self, m: int) -> tuple[int, int, int, int]:
        """The shape of `update`'s buffer for m images: the tensor with kh - 1 zero rows below
        and kw - 1 zero columns right, so a shifted view never pairs values wrongly."""
        return m, self.h + self.kh - 1, self.w + self.kw - 1, self.c

    def update(self, buf: torch.Tensor) -> None:
        """buf: float64 (m, hp, wp, c) of `layout(m)`, the images in [:, :h, :w], zeros elsewhere."""
        m, hp, wp, c = buf.shape
        self.images += m
        self.plane += buf[:, :self.h, :self.w].sum(dim=0)
        flat = buf.view(-1, c)
        n = flat.shape[0]
        for d in self.lags:
            shift = d[0] * wp + d[1]
            if d == (0, 0):
                self._add(d, _gram(flat))
            else:
                self._add(d, _tn(flat[:n - shift], flat[shift:]))
        for d, i in self.rows:
            dr, dc = d
            lo, hi = max(0, -dc), wp - max(0, dc)
            a = buf[:, i, lo:hi].reshape(-1, c)
            b = buf[:, i + dr, lo + dc:hi + dc].reshape(-1, c)
            self._add(("r", d, i), _tn(a, b))
        for d, j in self.cols:
            dr, dc = d
            a = buf[:, :hp - dr, j].reshape(-1, c)
            b = buf[:, dr:, j + dc].reshape(-1, c)
            self._add(("c", d, j), _tn(a, b))
        for d, i, j in self.corners:
            self._add(("x", d, i, j), buf[:, i, j].T @ buf[:, i + d[0], j + d[1]])

    def moments(self, name: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(sum of patches (K,), sum of patch outer products (K, K), patches) of reader `name`,
        in the OHWI order of its weights."""
        r = self.readers[name]
        kh, kw = r.kernel
        c = self.c
        k = kh * kw * c
        second = torch.zeros(k, k, dtype=torch.float64)
        first = torch.zeros(k, dtype=torch.float64)
        oh, ow = r.out_hw
        offs = [(i, j) for i in range(kh) for j in range(kw)]
        for a in offs:
            ia = (a[0] * kw + a[1]) * c
            rows = _interval(0, self.h, a[0] - r.pad, a[0] - r.pad + oh)
            cols = _interval(0, self.w, a[1] - r.pad, a[1] - r.pad + ow)
            first[ia:ia + c] = self.plane[rows[0]:rows[1], cols[0]:cols[1]].sum(dim=(0, 1))
        for a, b in self._pairs(r):
            d = (b[0] - a[0], b[1] - a[1])
            block = self.sums[d].clone()
            er, ec = self._excluded(r, a, d)
            for i in er:
                block -= self.sums[("r", d, i)]
            for j in ec:
                block -= self.sums[("c", d, j)]
            for i in er:
                for j in ec:
                    block += self.sums[("x", d, i, j)]
            ia, ib = (a[0] * kw + a[1]) * c, (b[0] * kw + b[1]) * c
            second[ia:ia + c, ib:ib + c] = block
            second[ib:ib + c, ia:ia + c] = block.T
        return first.numpy(), second.numpy(), self.images * oh * ow


def _gram(x: torch.Tensor) -> torch.Tensor:
    """x^T x, symmetric: for wide x three of the four column-half products (25 % fewer
    multiply-adds), the fourth mirrored."""
    c = x.shape[1]
    if c < 128:
        return _tn(x, x)
    h = c // 2
    a, b = x[:, :h], x[:, h:]
    out = x.new_empty(c, c)
    out[:h, :h] = a.T @ a
    out[:h, h:] = a.T @ b
    out[h:, :h] = out[:h, h:].T
    out[h:, h:] = b.T @ b
    return out


class _Patches:
    """Sums of im2col patches and their outer products, for a strided conv."""

    def __init__(self, kernel: tuple[int, int], stride: int, pad: int, out_hw: tuple[int, int], c: int):
        self.kernel, self.stride, self.pad, self.out_hw = kernel, stride, pad, out_hw
        k = kernel[0] * kernel[1] * c
        self.first = torch.zeros(k, dtype=torch.float64)
        self.second = torch.zeros(k, k, dtype=torch.float64)
        self.count = 0

    def update(self, x: torch.Tensor, scratch: Scratch) -> None:
        """x: float64 NHWC (m, h + 2 pad, w + 2 pad, c), contiguous, zeros in the padding."""
        (kh, kw), s, (oh, ow) = self.kernel, self.stride, self.out_hw
        m, _, _, c = x.shape
        sn, sh, sw, sc = x.stride()
        # (m, oh, ow, kh, kw, c): a view; copied into OHWI-ordered patches
        win = x.as_strided((m, oh, ow, kh, kw, c), (sn, sh * s, sw * s, sh, sw, sc))
        block = _exact_float32_rows(x)
        if block:  # small integers (raw pixels): float32 products of row blocks are exact
            cols = scratch.get("patches32", (m, oh, ow, kh, kw, c), dtype=torch.float32).copy_(win)
            cols = cols.view(-1, kh * kw * c)
            self.first += cols.sum(dim=0, dtype=torch.float64)
            self.second += _blocked_gram32(cols, block)
            self.count += cols.shape[0]
            return
        cols = scratch.get("patches", (m, oh, ow, kh, kw, c)).copy_(win).view(-1, kh * kw * c)
        self.first += cols.sum(dim=0)
        self.second += _gram(cols)
        self.count += cols.shape[0]


def _exact_float32_rows(x: torch.Tensor) -> int:
    """For integer-valued x with |x| <= M: the rows r = 2^24 // M^2 (at least 64) whose products
    sum exactly in float32 (every partial sum an integer below 2^24), else 0."""
    if x.numel() == 0 or not ieee_float32():
        return 0
    m = float(x.abs().max())
    if m == 0 or m > 512 or not torch.equal(x, torch.round(x)):
        return 0
    rows = int(2**24 // (m * m))
    return rows if rows >= 64 else 0


def _blocked_gram32(cols: torch.Tensor, rows: int) -> torch.Tensor:
    """cols^T cols in float64, exactly, for float32 cols whose blocks of `rows` rows have exact
    float32 products (_exact_float32_rows): 2.5-3x faster than the float64 product (conv1's
    patches of v1.0, 2 cores), and equal to it bit for bit since every sum is an exact integer."""
    n = cols.shape[0] // rows * rows
    blocks = cols[:n].view(-1, rows, cols.shape[1])
    out = torch.bmm(blocks.transpose(1, 2), blocks).sum(dim=0, dtype=torch.float64)
    if n < cols.shape[0]:
        rest = cols[n:].double()
        out += rest.T @ rest
    return out


def _fill(region: torch.Tensor, x: torch.Tensor, scale, shift) -> None:
    """region = float64(x) [* scale + shift]: the same values as x.double() * scale + shift."""
    region.copy_(x)
    if scale is not None:
        region.mul_(scale.reshape(-1)).add_(shift.reshape(-1))


def _tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T b for tall a, b (rows, C): few columns go through batched products of row blocks."""
    rows, c = a.shape
    if c > 64 or rows < 2 * _BLOCK_ROWS:
        return a.T @ b
    whole = rows // _BLOCK_ROWS * _BLOCK_ROWS
    out = (a[:whole].reshape(-1, _BLOCK_ROWS, c).transpose(1, 2) @ b[:whole].reshape(-1, _BLOCK_ROWS, b.shape[1])).sum(0)
    return out + a[whole:].T @ b[whole:] if whole < rows else out


_BLOCK_ROWS = 4096


class TensorPatchMoments:
    """Patch moments for every conv that reads one tensor (NCHW batches in, in any float
    dtype), e.g. a Fire's squeeze output read by its 1x1 and 3x3 expands: the stride-1 readers
    share one set of lag sums."""

    def __init__(self, readers: dict[str, ConvGeometry]):
        self.geometry = dict(readers)
        self.lags: _LagSums | None = None
        self.strided: dict[str, _Patches] = {}
        self.planned = False

    def _plan(self, c: int, h: int, w: int) -> None:
        lag_readers = {}
        for name, g in self.geometry.items():
            (kh, kw), s, p = g.kernel, g.stride, g.pad
            out_hw = ((h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1)
            if s == 1:
                lag_readers[name] = _Reader((kh, kw), p, out_hw)
            else:
                self.strided[name] = _Patches((kh, kw), s, p, out_hw, c)
        self.lags = _LagSums(lag_readers, h, w, c) if lag_readers else None
        self.planned = True

    def update(self, x: torch.Tensor, *, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
               scratch: Scratch | None = None) -> None:
        """x: (N, C, H, W). `scale`/`shift` (C values, float64): x * scale + shift per channel is
        what the convs see (conv1 of a folded model: raw pixels). The chunks' float64 layouts
        are built in `scratch` (module doc)."""
        x = x.detach()
        n, c, h, w = x.shape
        if not self.planned:
            self._plan(c, h, w)
        scratch = scratch or Scratch()
        pads = {p.pad for p in self.strided.values()}
        per_image = max([math.prod(self.lags.layout(1)) if self.lags else 0]
                        + [p.out_hw[0] * p.out_hw[1] * p.second.shape[0] for p in self.strided.values()]
                        + [(h + 2 * p) * (w + 2 * p) * c for p in pads])
        step = max(1, _CHUNK_ELEMENTS // per_image)
        for i in range(0, n, step):
            part = x[i:i + step].permute(0, 2, 3, 1)
            m = part.shape[0]
            if self.lags is not None:
                buf = scratch.get("layout", self.lags.layout(m), zero=True)
                _fill(buf[:, :h, :w], part, scale, shift)
                self.lags.update(buf)
            for pad in pads:
                buf = scratch.get("padded", (m, h + 2 * pad, w + 2 * pad, c), zero=pad > 0)
                _fill(buf[:, pad:pad + h, pad:pad + w], part, scale, shift)
                for p in self.strided.values():
                    if p.pad == pad:
                        p.update(buf, scratch)

    def moments(self) -> dict[str, PatchMoments]:
        out = {}
        if self.lags is not None:
            for name in self.lags.readers:
                first, second, count = self.lags.moments(name)
                out[name] = PatchMoments(first / count, second / count, count)
        for name, p in self.strided.items():
            out[name] = PatchMoments(p.first.numpy() / p.count, p.second.numpy() / p.count, p.count)
        return out
