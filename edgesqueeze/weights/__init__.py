"""Weights: find them (`resolve_weights`), read them (three formats), as plain numpy.

    load_params(source) -> (arch, {conv name: (OIHW weight, bias)})

`source` is a registry name ("squeezenet1_0-dc", "squeezenet1_0-torchvision", ...) or a file:
`.net` (Deep-Compression), `.pth`/`.pt` (a torchvision-style state_dict; needs torch),
`.caffemodel` (Caffe NetParameter). The arch comes from the registry entry, or is given, or is
inferred from the weights' shapes (conv1's kernel tells v1.0 from v1.1).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..arch import Arch, caffe_name_aliases, squeezenet1_0_arch, squeezenet1_1_arch
from ..errors import WeightsError
from .infer import ARCH_NAMES, arch_by_name, caffe_classes, infer_state_dict_arch, state_dict_classes
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


@dataclass(frozen=True)
class LoadedWeights:
    """What a weights file holds: the arch (class count included), its params, and what was
    assumed: `alternatives` names the archs with the same weights that the file cannot be told
    from (a simple bypass adds no weights), so a caller can say which one was taken."""

    arch: Arch
    params: Params
    path: Path
    format: str
    alternatives: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes


def read_weights(
    source: str | os.PathLike = DEFAULT_WEIGHTS,
    *,
    arch: Arch | str | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedWeights:
    """Resolve and read weights; every conv of the arch must be present with its shape.

    `arch`: an Arch (used as it is), a name from `ARCH_NAMES` (its class count is then read from
    the weights), or None: the registry entry's, or told from the file (weights.infer)."""
    entry = KNOWN_WEIGHTS.get(str(source)) if not isinstance(source, WeightSource) else source
    if isinstance(arch, str):
        arch_by_name(arch)  # an unknown name fails before the file is read
    path = resolve_weights(source, download=download, cache_dir=cache_dir)
    fmt = entry.format if entry else FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}; use a .net (Deep-Compression), "
            f".pth/.pt (state_dict) or .caffemodel file, or a known name: {', '.join(KNOWN_WEIGHTS)}"
        )
    alternatives: tuple[str, ...] = ()
    if fmt == "deep-compression":
        # the file stores a fixed 1000-class v1.0 (its entry counts are checked by the decoder)
        arch = arch_by_name(arch) if isinstance(arch, str) else (arch or arch_for("squeezenet1_0", fmt))
        from .deep_compression import decode_deep_compression

        params = decode_deep_compression(path, arch)
    elif fmt == "state-dict":
        tensors = read_state_dict(path)
        if isinstance(arch, str):
            arch = arch_by_name(arch, num_classes=state_dict_classes(tensors, path))
        elif arch is None and entry:
            arch = arch_for(entry.arch, fmt)
        elif arch is None:
            guess = infer_state_dict_arch(tensors, path)
            arch, alternatives = guess.arch, guess.alternatives
        params = params_from_state_dict(tensors, arch, path)
    elif fmt == "caffemodel":
        from .caffe import read_caffemodel

        blobs = read_caffemodel(path)
        n = caffe_classes(blobs) or 1000
        if isinstance(arch, str):
            arch = arch_by_name(arch, num_classes=n)
        elif arch is None:
            arch = arch_for(entry.arch, fmt) if entry else _infer_caffe_arch(blobs, path)
            arch = replace(arch, num_classes=n)
        params = params_from_caffe(blobs, arch, path)
    else:  # pragma: no cover - registry formats are fixed
        raise WeightsError(f"{path}: format {fmt!r} is not supported")
    check_params(params, arch, path)
    return LoadedWeights(arch, params, path, fmt, alternatives)


def load_params(
    source: str | os.PathLike = DEFAULT_WEIGHTS,
    *,
    arch: Arch | str | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Arch, Params]:
    """(arch, params) of `read_weights`."""
    w = read_weights(source, arch=arch, download=download, cache_dir=cache_dir)
    return w.arch, w.params


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes in torch's messages


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
        text = _ANSI.sub("", str(e))
        if type(e).__name__ == "UnpicklingError" and "Weights only load failed" in text:
            # torch.save(model) pickles the Python class; loading that runs code from the file,
            # which is never done here: the weights alone are what is needed
            raise WeightsError(
                f"{path}: holds a whole pickled model (torch.save(model)), not a state_dict; a pickled "
                "model can run arbitrary code when loaded, so it is not opened here. Save its weights "
                "instead: torch.save(model.state_dict(), 'my_squeezenet.pth')") from None
        raise WeightsError(f"{path}: not a readable torch state_dict ({type(e).__name__}: "
                           f"{' '.join(text.split())[:200]})") from None
    for key in ("state_dict", "model_state_dict", "model"):  # common training-checkpoint wrappers
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(hasattr(v, "numpy") for v in sd.values()):
        raise WeightsError(f"{path}: holds a {type(sd).__name__}, not a state_dict of tensors")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in sd.items()}


def infer_arch(tensors: dict, path: Path) -> Arch:
    """The arch of a torchvision-layout state_dict (weights.infer.infer_state_dict_arch)."""
    return infer_state_dict_arch(tensors, path).arch


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
    "ARCH_NAMES",
    "DEFAULT_WEIGHTS",
    "LoadedWeights",
    "arch_by_name",
    "read_weights",
    "KNOWN_WEIGHTS",
    "Params",
    "WeightSource",
    "check_params",
    "load_params",
    "resolve_weights",
]
