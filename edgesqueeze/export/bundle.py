"""Writing an update bundle file (`edgesqueeze pack`): the bundle of one model file
(`formats.bundle.pack_bytes`), unpacked and compared with the model before it is moved into
place, so a failure leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError
from ..formats.bundle import BUNDLE_SUFFIX, pack_bytes, read_manifest, unpack_bytes
from ..formats.files import MODEL_FILE_HINT, read_file_bytes
from .files import atomic_output


@dataclass(frozen=True)
class BundleInfo:
    """What `pack` wrote."""

    path: Path  # the bundle
    name: str  # the model file's name inside it
    model_bytes: int
    bundle_bytes: int
    sha256: str  # of the unpacked model file
    codec: str

    @property
    def ratio(self) -> float:
        """bundle size / model size."""
        return self.bundle_bytes / self.model_bytes


def default_bundle_path(model_path: str | os.PathLike) -> Path:
    """model.tflite -> model.tflite.esq (the model's own suffix stays visible)."""
    p = Path(model_path)
    return p.with_name(p.name + BUNDLE_SUFFIX)


def pack(model_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> BundleInfo:
    """Write the bundle of `model_path` to `out_path` (default: model_path + ".esq"), atomically:
    it is unpacked and compared with the model before it is moved into place, so a failure
    leaves nothing behind. Refuses to write over the model itself."""
    src = Path(model_path)
    out = default_bundle_path(src) if out_path is None else Path(out_path)
    model = read_file_bytes(src, MODEL_FILE_HINT)  # ModelFileError: not found, empty or unreadable
    if out.exists() and (out.resolve() == src.resolve() or os.path.samefile(out, src)):
        raise ModelFileError(f"{out}: is the model file itself; give another output path (default: "
                             f"{default_bundle_path(src)})")
    bundle = pack_bytes(model, name=src.name, source=str(src))
    with atomic_output(out) as tmp:
        tmp.write_bytes(bundle)
        name, back = unpack_bytes(tmp.read_bytes(), source=str(out))
        if back != model or name != src.name:  # pragma: no cover - the codec is lossless
            raise ModelFileError(f"{out}: the bundle did not unpack to {src}; nothing was written")
    return BundleInfo(path=out, name=src.name, model_bytes=len(model), bundle_bytes=len(bundle),
                      sha256=hashlib.sha256(model).hexdigest(), codec=read_manifest(bundle, source=str(out))[0]["codec"])


__all__ = ["BundleInfo", "default_bundle_path", "pack"]
