"""Weights: find them (`resolve_weights`), read them (three formats), as plain numpy.

    load_params(source) -> (arch, {conv name: (OIHW weight, bias)})

`source` is a registry name ("squeezenet1_0-dc", "squeezenet1_0-torchvision", ...) or a file:
`.net` (Deep-Compression), `.pth`/`.pt` (a torchvision-style state_dict; needs torch),
`.caffemodel` (Caffe NetParameter). The arch comes from the registry entry, or is given, or is
inferred from the weights' shapes (conv1's kernel tells v1.0 from v1.1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..arch import Arch, caffe_name_aliases, squeezenet1_0_arch, squeezenet1_1_arch
from ..errors import WeightsError
from .resolve import KNOWN_WEIGHTS, WeightSource, resolve_weights

Params = dict[str, tuple[np.ndarray, np.ndarray]]

FORMAT_BY_SUFFIX = {".net": "deep-compression", ".pth": "state-dict", ".pt": "state-dict",
                    ".caffemodel": "caffemodel"}

DEFAULT_WEIGHTS = "squeezenet1_0-dc"


def arch_for(name: str, fmt: str) -> Arch:
    """The arch a registry entry or file format implies."""
    if name == "squeezenet1_1":
        return squeezenet1_1_arch()
    # Deep-Compression and Caffe releases of v1.0 are the Caffe variant (227 BGR, conv10 pad 1)
    return squeezenet1_0_arch(caffe=fmt in ("deep-compression", "caffemodel"))


def load_params(
    source: str | os.PathLike = DEFAULT_WEIGHTS,
    *,
    arch: Arch | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Arch, Params]:
    """Resolve and read weights; every conv of the arch must be present with its shape."""
    entry = KNOWN_WEIGHTS.get(str(source)) if not isinstance(source, WeightSource) else source
    path = resolve_weights(source, download=download, cache_dir=cache_dir)
    fmt = entry.format if entry else FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}; use a .net (Deep-Compression), "
            f".pth/.pt (state_dict) or .caffemodel file, or a known name: {', '.join(KNOWN_WEIGHTS)}"
        )
    if fmt == "deep-compression":
        arch = arch or arch_for("squeezenet1_0", fmt)
        from .deep_compression import decode_deep_compression

        params = decode_deep_compression(path, arch)
    elif fmt == "state-dict":
        tensors = read_state_dict(path)
        arch = arch or (arch_for(entry.arch, fmt) if entry else infer_arch(tensors, path))
        params = params_from_state_dict(tensors, arch, path)
    elif fmt == "caffemodel":
        from .caffe import read_caffemodel

        blobs = read_caffemodel(path)
        arch = arch or (arch_for(entry.arch, fmt) if entry else _infer_caffe_arch(blobs, path))
        params = params_from_caffe(blobs, arch, path)
    else:  # pragma: no cover - registry formats are fixed
        raise WeightsError(f"{path}: format {fmt!r} is not supported")
    check_params(params, arch, path)
    return arch, params


def check_params(params: Params, arch: Arch, path: str | os.PathLike = "weights") -> None:
    """All convs present with the arch's shapes and finite values; every problem at once."""
    problems = []
    for c in arch.convs():
        want = (c.out_channels, c.in_channels, c.kernel, c.kernel)
        if c.name not in params:
            problems.append(f"{c.name} is missing")
            continue
        w, b = params[c.name]
        if tuple(w.shape) != want or tuple(b.shape) != (c.out_channels,):
            problems.append(f"{c.name} has weight {tuple(w.shape)} / bias {tuple(b.shape)}, {arch.name} needs {want} / ({c.out_channels},)")
        elif not (np.isfinite(w).all() and np.isfinite(b).all()):
            problems.append(f"{c.name} holds NaN or Inf")
    if problems:
        raise WeightsError(f"{path}: does not fit {arch.name}: " + "; ".join(problems))


# ------------------------------------------------------------------ state_dict


def _torchvision_keys(arch: Arch) -> dict[str, str]:
    """Our conv names -> torchvision's state_dict prefixes (features.N.*, classifier.1)."""
    keys = {"conv1": "features.0"}
    i = 2  # features.0 conv, features.1 relu
    if "conv1" in arch.pool_after:
        i += 1
    for f in arch.fires:
        for part in ("squeeze", "expand1x1", "expand3x3", "bypass"):
            keys[f"{f.name}.{part}"] = f"features.{i}.{part}"
        i += 1
        if f.name in arch.pool_after:
            i += 1
    keys["conv10"] = "classifier.1"
    return keys


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A torch state_dict file -> {key: numpy array} (keys as stored, `module.` stripped)."""
    try:
        import torch
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("torch (to read .pth state_dict files)", "quantize") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: not a readable torch state_dict ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(hasattr(v, "numpy") for v in sd.values()):
        raise WeightsError(f"{path}: holds a {type(sd).__name__}, not a state_dict of tensors")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in sd.items()}


def infer_arch(tensors: dict, path: Path) -> Arch:
    w = tensors.get("features.0.weight")
    if w is None:
        raise WeightsError(f"{path}: no 'features.0.weight'; not a torchvision SqueezeNet state_dict")
    if tuple(w.shape) == (96, 3, 7, 7):
        return squeezenet1_0_arch()
    if tuple(w.shape) == (64, 3, 3, 3):
        return squeezenet1_1_arch()
    raise WeightsError(f"{path}: conv1 weight {tuple(w.shape)} is neither v1.0 (96,3,7,7) nor v1.1 (64,3,3,3)")


def params_from_state_dict(sd: dict[str, np.ndarray], arch: Arch, path: Path) -> Params:
    keys = _torchvision_keys(arch)
    out, problems = {}, []
    for c in arch.convs():
        k = keys[c.name]
        if f"{k}.weight" not in sd or f"{k}.bias" not in sd:
            problems.append(f"{k}.weight/.bias missing (for {c.name})")
            continue
        out[c.name] = (sd[f"{k}.weight"].astype(np.float32), sd[f"{k}.bias"].astype(np.float32))
    known = {f"{keys[c.name]}.{p}" for c in arch.convs() for p in ("weight", "bias")}
    extra = sorted(set(sd) - known)
    if extra:
        problems.append("unexpected keys " + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    if problems:
        raise WeightsError(f"{path}: state_dict does not fit {arch.name}: " + "; ".join(problems))
    return out


# ------------------------------------------------------------------ caffemodel


def _infer_caffe_arch(blobs: dict[str, list[np.ndarray]], path: Path) -> Arch:
    w = blobs.get("conv1", [None])[0]
    if w is not None and tuple(w.shape) == (64, 3, 3, 3):
        return squeezenet1_1_arch()
    return squeezenet1_0_arch(caffe=True)


def params_from_caffe(blobs: dict[str, list[np.ndarray]], arch: Arch, path: Path) -> Params:
    out, problems = {}, []
    for name, aliases in caffe_name_aliases(arch).items():
        hit = next((a for a in aliases if a in blobs), None)
        if hit is None:
            problems.append(f"no layer {' or '.join(aliases)} (for {name})")
            continue
        layer = blobs[hit]
        if len(layer) != 2:
            problems.append(f"layer {hit} has {len(layer)} blobs, expected weight and bias")
            continue
        w, b = layer
        out[name] = (np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1))
    if problems:
        raise WeightsError(f"{path}: caffemodel does not fit {arch.name}: " + "; ".join(problems))
    return out


__all__ = [
    "DEFAULT_WEIGHTS",
    "KNOWN_WEIGHTS",
    "Params",
    "WeightSource",
    "check_params",
    "load_params",
    "resolve_weights",
]
