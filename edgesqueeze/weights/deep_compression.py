"""Decoder for the Deep-Compression SqueezeNet file (`compressed_SqueezeNet.net`, 660 KB).

The file (songhan/SqueezeNet-Deep-Compression) stores each conv layer pruned and weight-shared:

    uint32[L]                      stored entries per conv layer, L = 26, prototxt order
    then per layer, in that order:
      float32[256]                 codebook (shared weight values)
      float32[num_output]          bias
      uint8[n]                     codebook index of each stored entry (8 bits for conv layers)
      uint8[(n - 1) // 2 + 1]      4-bit gap to the previous stored entry, low nibble first

The absolute position of entry k in the flattened (out, in, kh, kw) weight is
cumsum(gap + 1) - 1. A gap is at most 15, so a longer run of zeros is bridged by filler entries
whose codebook index is 0; positions never listed also hold codebook[0]. Decoding is correct
exactly when the whole file is consumed, which is checked.

numpy only: boards never need this, but nothing here needs torch either.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..arch import Arch, caffe_names, squeezenet1_0_arch
from ..errors import WeightsError

CODEBOOK_SIZE = 256


def _layer_order(arch: Arch) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(our conv name, OIHW shape) in the prototxt's order: conv1, fire2 squeeze/expand1x1/
    expand3x3, ..., conv_final."""
    return [
        (c.name, (c.out_channels, c.in_channels, c.kernel, c.kernel))
        for c in arch.convs()
    ]


def decode_deep_compression(
    path: str | os.PathLike, arch: Arch | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode the file into {conv name: (weight OIHW float32, bias float32)}.

    Raises WeightsError naming the file for a missing, truncated, padded or foreign file."""
    arch = arch or squeezenet1_0_arch(caffe=True)
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file; pass the path of compressed_SqueezeNet.net") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read it ({e.strerror})") from None

    layers = _layer_order(arch)
    caffe = caffe_names(arch)
    hint = ("it is not the Deep-Compression SqueezeNet v1.0 file (compressed_SqueezeNet.net, "
            "675,763 bytes); re-download it or pass the right file")
    header = 4 * len(layers)
    if len(data) < header:
        raise WeightsError(f"{path}: {len(data)} bytes is shorter than the {header}-byte header; {hint}")
    counts = np.frombuffer(data, dtype="<u4", count=len(layers))

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pos = header

    def take(nbytes: int, what: str) -> memoryview:
        nonlocal pos
        if pos + nbytes > len(data):
            raise WeightsError(
                f"{path}: truncated: {what} needs bytes {pos}..{pos + nbytes} but the file has "
                f"{len(data)}; {hint}"
            )
        chunk = memoryview(data)[pos : pos + nbytes]
        pos += nbytes
        return chunk

    for (name, shape), n in zip(layers, counts.tolist()):
        size = int(np.prod(shape))
        if n == 0 or n > size:
            raise WeightsError(
                f"{path}: layer {caffe[name]} claims {n} stored entries for a weight of {size} "
                f"values; {hint}"
            )
        codebook = np.frombuffer(take(4 * CODEBOOK_SIZE, f"{caffe[name]} codebook"), dtype="<f4")
        bias = np.frombuffer(take(4 * shape[0], f"{caffe[name]} bias"), dtype="<f4")
        index = np.frombuffer(take(n, f"{caffe[name]} indices"), dtype=np.uint8)
        packed = np.frombuffer(take((n - 1) // 2 + 1, f"{caffe[name]} positions"), dtype=np.uint8)
        gaps = np.empty(2 * packed.size, dtype=np.int64)
        gaps[0::2] = packed & 0x0F  # low nibble first
        gaps[1::2] = packed >> 4
        positions = np.cumsum(gaps[:n] + 1) - 1
        if positions[-1] >= size:
            raise WeightsError(
                f"{path}: layer {caffe[name]} places a weight at {positions[-1]}, past its "
                f"{size} values; {hint}"
            )
        if not (np.isfinite(codebook).all() and np.isfinite(bias).all()):
            raise WeightsError(f"{path}: layer {caffe[name]} holds NaN or Inf; {hint}")
        flat_index = np.zeros(size, dtype=np.uint8)
        flat_index[positions] = index
        weight = codebook[flat_index].reshape(shape).astype(np.float32)
        out[name] = (weight, bias.astype(np.float32))

    if pos != len(data):
        raise WeightsError(
            f"{path}: {len(data) - pos} bytes left over after the last layer (decoded "
            f"{pos} of {len(data)}); {hint}"
        )
    return out
