"""A model file's bytes and what kind of file they are: reading them with one clear error per
problem, telling TFLite from ONNX, and parsing the edgesqueeze metadata a file carries. Every
problem is a `ModelFileError` naming the file and the fix (standard library only)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, ModelFileError
from .flatbuffer import FILE_IDENTIFIER
from .metadata import METADATA_KEY, ModelMetadata

TFLITE_SUFFIXES = (".tflite",)
ONNX_SUFFIXES = (".onnx",)
MODEL_FILE_HINT = "give the path of a .onnx or .tflite file written by `edgesqueeze quantize`"
MODEL_HINT = MODEL_FILE_HINT + " (or its .esq bundle)"
_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
          b"BM": "a BMP image", b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip file",
          b"%PDF": "a PDF document", b"\x7fELF": "an executable"}


def looks_like(data: bytes) -> str | None:
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            return what
    if data[:1] in (b"{", b"[") or data[:5].lower() in (b"<?xml", b"<html"):
        return "a text file"
    return None


def not_a_model(path: Path, data: bytes, fmt: str, detail: str) -> ModelFileError:
    what = looks_like(data)
    what = f"; it looks like {what}" if what else ""
    return ModelFileError(f"{path}: not a usable {fmt} model ({detail}){what}; re-export it with "
                          "`edgesqueeze quantize` or copy the file again (it may be truncated or corrupt)")


def read_file_bytes(path: Path, hint: str = MODEL_HINT) -> bytes:
    """The bytes of a model file; ModelFileError naming the file and `hint` (what to give
    instead) when it is not found, a folder, not a regular file, unreadable or empty."""
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; {hint}")
    if not path.exists():
        folder = path.parent
        where = "" if folder.is_dir() else f"; the folder {folder} does not exist either"
        raise ModelFileError(f"{path}: not found (no such model file{where}); {hint}")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file; {hint}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file ({e.strerror or e})") from None
    if not data:
        raise ModelFileError(f"{path}: the file is empty (0 bytes); re-export it or copy it again")
    return data


def format_of(path: Path, data: bytes) -> str:
    """'tflite' or 'onnx', from the bytes first (the TFL3 identifier), then the suffix."""
    suffix = path.suffix.lower()
    if len(data) >= 8 and data[4:8] == FILE_IDENTIFIER:
        return "tflite"
    if suffix in TFLITE_SUFFIXES:
        raise not_a_model(path, data, "TFLite", "no 'TFL3' identifier at bytes 4..8")
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if data[:1] == b"\x08" and looks_like(data) is None:  # ModelProto starts with ir_version (field 1)
        return "onnx"
    raise ModelFileError(f"{path}: unknown model format (suffix {suffix or 'none'!r}, and the bytes are "
                         f"neither TFLite nor ONNX); {MODEL_HINT}")


def parse_metadata(path: Path, text: str | None) -> ModelMetadata:
    """The file's ModelMetadata from its JSON text; ModelFileError when absent or malformed."""
    if not text:
        raise ModelFileError(f"{path}: no '{METADATA_KEY}' metadata (labels, input size, preprocessing), so "
                             "it was not written by edgesqueeze; re-export it with `edgesqueeze quantize`")
    try:
        return ModelMetadata.from_json(text, source=str(path))
    except DataError as e:
        raise ModelFileError(str(e)) from None



__all__ = ["MODEL_FILE_HINT", "MODEL_HINT", "ONNX_SUFFIXES", "TFLITE_SUFFIXES", "format_of", "looks_like",
           "not_a_model", "parse_metadata", "read_file_bytes"]
