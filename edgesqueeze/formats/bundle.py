"""Update bundles: one exported model file, losslessly compressed, with a checked manifest.

    pack_bytes(model bytes, name="m.tflite") -> bundle bytes      # export/bundle.py writes the file
    read_model_file("m.tflite.esq") -> (model bytes, what the bundle held)   # verified, in memory

numpy + the standard library only (a board unpacks it; no torch, no onnx). A bundle is

    offset 0        8 bytes   MAGIC  89 45 53 51 0D 0A 1A 0A  ("\\x89ESQ\\r\\n\\x1a\\n")
    offset 8        4 bytes   uint32 little-endian: manifest length M
    offset 12      32 bytes   sha256 of the manifest bytes
    offset 44       M bytes   manifest: UTF-8 JSON (below)
    offset 44 + M   payload   `payload_bytes` bytes, sha256 `payload_sha256`

The magic is PNG's trick: a non-ASCII first byte (not a text file), then CR LF, ^Z and LF, so a
transfer that rewrites line endings is caught at the header, not deep inside the payload. The
manifest says: format ("edgesqueeze-bundle"), format_version (1), name (the model file's name),
model_format (tflite | onnx), size and sha256 of the unpacked file, codec, payload_bytes,
payload_sha256, and a summary of the model's edgesqueeze metadata (arch, scheme, input size,
classes, calibration method, version; null for a model without it, which packs but does not
load in `Classifier`). Everything is checked before the model bytes are used:
the manifest's own checksum, the payload length (a truncated copy says how many bytes are
missing) and checksum, then the unpacked file's size and sha256. Any problem is a
`BundleError` (a `ModelFileError`) naming the file and the fix; nothing else escapes.

Codec "zsplit-xz" (the manifest names the codec). 2/3 of the released v1.0's weights are
pruned to exactly 0, and a general compressor spends bits telling those zeros apart from the
values around them. The file's bytes are split, reversibly, into

    bitmap   numpy.packbits(byte != 0)   (ceil(size / 8) bytes, most significant bit first)
    values   the nonzero bytes, in file order

Codec "bsplit-xz" is the same split on another byte, the manifest's `split_byte`: the file's
most frequent byte, 0x80 in an INT8 ONNX file for x86, whose uint8 weights store 0 as 128.

and `bitmap + values` is one xz stream (LZMA2, preset 9 extreme, lc=0 lp=0 pb=0: int8 weights have
no byte-to-byte context for the literal coder to use, so a context-free literal model adapts
best). Unpacking puts the values back where the bitmap has ones. It knows nothing about TFLite
or ONNX, so any file round-trips; the sha256 proves the bytes are the original ones.

Measured on the real Deep-Compression v1.0 INT8 files (affine, defaults; bytes; CRC32 xz
containers; the bundle adds its 44-byte header and a ~560-byte manifest):

    option                                   .tflite (1,344,512)   .onnx (1,394,151)
    zlib -9                                            641,335             643,941
    bz2 -9                                             667,940             661,744
    xz preset 9e                                       586,036             572,244
    xz preset 9e, lc=0 lp=0 pb=0                       563,232             565,800
    xz with a delta filter (dist 1)                    700,368             696,220
    zero split, bitmap xz + values bz2                 575,716             580,775
    zero split, one xz stream (this codec)             548,764             550,896
    the whole bundle                                   549,323             551,451

The 500,000-byte goal is out of reach for any lossless codec: the nonzero int8 weights carry
7.27 bits each (the order-0 entropy of the Deep-Compression codebook indices themselves,
378,026 bytes for 415,921 weights; of the int8 values per layer 378,646), their positions about
116,000 bytes (per-layer density, 3x3 kernels coded jointly), and the rest of the file (biases,
scales, labels, graph) compresses to 44,600 — about 539,000 bytes at best. A codec that parses
the weight tensors (values and bitmap per tensor in OIHW order, the rest apart; xz each) measured
544,300: 5,000 bytes less than this one, not worth a TFLite and an ONNX parser. The paper's
0.47 MB model has 6-bit codebooks: a different model, not a compression of this one.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .files import looks_like, parse_metadata, read_file_bytes
from .flatbuffer import FILE_IDENTIFIER, FlatbufferError, read_metadata_entries
from .metadata import METADATA_KEY
from .onnx import onnx_metadata_props
from .tflite import check_tflite_bytes

MAGIC = b"\x89ESQ\r\n\x1a\n"
BUNDLE_SUFFIX = ".esq"  # appended to the model's own name: model.tflite -> model.tflite.esq
BUNDLE_SUFFIXES = (BUNDLE_SUFFIX,)
FORMAT = "edgesqueeze-bundle"
FORMAT_VERSION = 1
CODEC = "zsplit-xz"  # the split byte is 0
CODEC_BYTE = "bsplit-xz"  # the split byte is the manifest's "split_byte" (0x80 for uint8 weights)
CODECS = (CODEC, CODEC_BYTE)

_HEADER = struct.Struct("<8sI32s")  # magic, manifest length, sha256 of the manifest
_MAX_MANIFEST = 1 << 20  # a manifest is a few hundred bytes; a larger length is a corrupt header
_MAX_MODEL = 1 << 31  # 2 GiB: TFLite's and protobuf's own limit for one file
_XZ_MEMLIMIT = 256 << 20  # the decoder needs ~dict_size (<= 64 MiB); a crafted header cannot ask for more
_FIX = "re-download or copy the bundle again, or re-run `edgesqueeze pack` on the model file"


class BundleError(ModelFileError):
    """An update bundle cannot be used: not a bundle, truncated, corrupt, or of a newer format.
    The message names the file and the fix."""


def is_bundle(data: bytes) -> bool:
    """True when the bytes start with the bundle magic (the rest is checked by unpack_bytes)."""
    return bytes(data[:len(MAGIC)]) == MAGIC


# ---------------------------------------------------------------- codec


def _xz_filters(n: int) -> list[dict]:
    # The dictionary only needs to cover the stream; a small one keeps the board's decoder
    # memory small (preset 9 alone would make every decoder reserve 64 MiB).
    dict_size = min(64 << 20, 1 << max(12, (max(n, 1) - 1).bit_length()))
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size,
             "lc": 0, "lp": 0, "pb": 0}]


def split_byte(model: bytes) -> int:
    """The byte the codec splits on: the file's most frequent byte (0 for int8 weights, whose
    pruned zeros dominate; 0x80 for uint8 weights with zero point 128, where a pruned weight is
    stored as 128)."""
    return int(np.argmax(np.bincount(np.frombuffer(model, dtype=np.uint8), minlength=256)))


def _zsplit_encode(model: bytes, background: int = 0) -> bytes:
    a = np.frombuffer(model, dtype=np.uint8)
    nonzero = a != background
    stream = np.packbits(nonzero).tobytes() + a[nonzero].tobytes()
    return lzma.compress(stream, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=_xz_filters(len(stream)))


def _zsplit_decode(payload: bytes, size: int, source: str, background: int = 0) -> bytes:
    n_bitmap = (size + 7) // 8
    limit = n_bitmap + size  # the longest a valid stream can be (every byte nonzero)
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
    try:
        stream = d.decompress(payload, max_length=limit + 1)
    except lzma.LZMAError as e:
        raise BundleError(f"{source}: the compressed model does not decompress ({e}); {_FIX}") from None
    if not d.eof or d.unused_data or len(stream) > limit:
        raise BundleError(f"{source}: the compressed model is incomplete or longer than its manifest says; {_FIX}")
    bits = np.unpackbits(np.frombuffer(stream[:n_bitmap], dtype=np.uint8), count=size).astype(bool) \
        if len(stream) >= n_bitmap else None
    values = np.frombuffer(stream[n_bitmap:], dtype=np.uint8)
    if bits is None or int(bits.sum()) != len(values) or (values == background).any():
        raise BundleError(f"{source}: the compressed model's bitmap and values do not match; {_FIX}")
    out = np.full(size, background, dtype=np.uint8)
    out[bits] = values
    return out.tobytes()


# ---------------------------------------------------------------- packing


def _model_summary(model: bytes, source: str) -> tuple[str, dict | None]:
    """(model_format, summary of its edgesqueeze metadata, None for a model without any, e.g.
    onnxruntime's quantize_static) of a .tflite/.onnx file whose structure is checked as the
    runtime checks it; ModelFileError for anything else or for malformed edgesqueeze metadata."""
    label = Path(source)
    if is_bundle(model):
        raise ModelFileError(f"{source}: is already an edgesqueeze bundle; pack the .tflite or .onnx model file")
    if len(model) >= 8 and model[4:8] == FILE_IDENTIFIER:
        fmt = "tflite"
        try:
            check_tflite_bytes(model)
            text = (read_metadata_entries(model).get(METADATA_KEY) or b"").decode("utf-8", "replace")
        except FlatbufferError as e:
            raise ModelFileError(f"{source}: not a usable TFLite model ({e}); re-export it with "
                                 "`edgesqueeze quantize`") from None
    else:
        fmt = "onnx"
        try:
            text = onnx_metadata_props(model).get(METADATA_KEY)
        except ValueError as e:
            what = looks_like(model)
            raise ModelFileError(f"{source}: neither a TFLite nor an ONNX model ("
                                 f"{f'it looks like {what}' if what else e}); give a .tflite or .onnx "
                                 "file written by `edgesqueeze quantize`") from None
    if not text:
        return fmt, None
    meta = parse_metadata(label, text)
    summary = {"arch": meta.arch, "scheme": meta.scheme, "input_size": meta.input_size,
               "channel_order": meta.channel_order, "classes": len(meta.labels),
               "calibration": meta.calibration.get("method"), "version": meta.version}
    return fmt, summary


def pack_bytes(model: bytes, *, name: str, source: str | None = None) -> bytes:
    """The bundle of one model file's bytes (an edgesqueeze .tflite or .onnx; `name` is its file
    name, recorded in the manifest; `source` names it in errors, default `name`).
    ModelFileError for anything that is not such a model."""
    model = bytes(model)
    name = Path(str(name)).name
    if not name:
        raise ModelFileError("pack_bytes needs the model's file name (name='model.tflite')")
    source = source or name
    if not model:
        raise ModelFileError(f"{source}: the model is empty (0 bytes); re-export it with `edgesqueeze quantize`")
    if len(model) >= _MAX_MODEL:
        raise ModelFileError(f"{source}: {len(model)} bytes is over the 2 GiB a model file can have")
    fmt, summary = _model_summary(model, source)
    background = split_byte(model)
    payload = _zsplit_encode(model, background)
    codec = {"codec": CODEC} if background == 0 else {"codec": CODEC_BYTE, "split_byte": background}
    manifest = json.dumps({
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "model_format": fmt,
        "size": len(model), "sha256": hashlib.sha256(model).hexdigest(), **codec,
        "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "metadata": summary}, sort_keys=True).encode("utf-8")
    return _HEADER.pack(MAGIC, len(manifest), hashlib.sha256(manifest).digest()) + manifest + payload


# ---------------------------------------------------------------- unpacking


def read_model_file(path: str | os.PathLike) -> tuple[bytes, dict | None]:
    """(model bytes, None) of a model file, or for an update bundle (told by its magic bytes or
    its .esq suffix) the verified unpacked model and {name, bundle_bytes, model_bytes, sha256}.
    ModelFileError (BundleError for a bundle) naming the file and the fix: not found, a folder,
    empty, unreadable, or a damaged bundle."""
    path = Path(path)
    data = read_file_bytes(path)
    if not (is_bundle(data) or path.suffix.lower() in BUNDLE_SUFFIXES):
        return data, None
    name, model = unpack_bytes(data, source=str(path))
    return model, {"name": name, "bundle_bytes": len(data), "model_bytes": len(model),
                   "sha256": hashlib.sha256(model).hexdigest()}


def read_manifest(data: bytes, *, source: str) -> tuple[dict, int]:
    """(manifest, payload offset) of a bundle, with the header and the manifest checked."""
    if not is_bundle(data):
        if len(data) < len(MAGIC) and MAGIC.startswith(bytes(data)):
            raise BundleError(f"{source}: truncated: {len(data)} bytes, not even the bundle header; {_FIX}")
        raise BundleError(f"{source}: not an edgesqueeze bundle (no {MAGIC!r} header at byte 0); give a bundle "
                          "written by `edgesqueeze pack`, or the .tflite/.onnx model file itself")
    if len(data) < _HEADER.size:
        raise BundleError(f"{source}: truncated: {len(data)} bytes, the bundle header alone is {_HEADER.size}; {_FIX}")
    _, m_len, m_sha = _HEADER.unpack_from(data)
    if m_len > _MAX_MANIFEST:
        raise BundleError(f"{source}: corrupt header (manifest length {m_len}); {_FIX}")
    end = _HEADER.size + m_len
    if len(data) < end:
        raise BundleError(f"{source}: truncated: {len(data)} bytes, the manifest alone ends at byte {end}; {_FIX}")
    raw = bytes(data[_HEADER.size:end])
    if hashlib.sha256(raw).digest() != m_sha:
        raise BundleError(f"{source}: the manifest is corrupt (its sha256 does not match the header); {_FIX}")
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # pragma: no cover - the checksum matched
        raise BundleError(f"{source}: the manifest is not JSON ({e}); {_FIX}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{source}: the manifest is not an {FORMAT} manifest; {_FIX}")
    version = m.get("format_version")
    if version != FORMAT_VERSION or m.get("codec") not in CODECS:
        raise BundleError(f"{source}: bundle format {version!r}, codec {m.get('codec')!r}; this edgesqueeze reads "
                          f"format {FORMAT_VERSION} with codec {', '.join(CODECS)}: upgrade edgesqueeze, or pack the "
                          "model with this version")
    checks = {"name": lambda v: isinstance(v, str) and v and Path(v).name == v,
              "size": lambda v: type(v) is int and 0 < v < _MAX_MODEL,
              "payload_bytes": lambda v: type(v) is int and v >= 0,
              "sha256": lambda v: isinstance(v, str) and len(v) == 64,
              "payload_sha256": lambda v: isinstance(v, str) and len(v) == 64}
    bad = [k for k, ok in checks.items() if not ok(m.get(k))]
    if bad:
        raise BundleError(f"{source}: the manifest's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} missing "
                          f"or invalid; {_FIX}")
    return m, end


def unpack_bytes(data: bytes, *, source: str) -> tuple[str, bytes]:
    """(model file name, model bytes) of a bundle, verified: header, manifest checksum, payload
    length and checksum, then the unpacked size and sha256. BundleError (a ModelFileError)
    naming `source` and the fix for anything wrong; nothing else is raised."""
    m, start = read_manifest(data, source=source)
    payload = bytes(data[start:])
    want = m["payload_bytes"]
    if len(payload) < want:
        raise BundleError(f"{source}: truncated: {len(data)} bytes, {want - len(payload)} bytes of the compressed "
                          f"model are missing ({start + want} expected); {_FIX}")
    if len(payload) > want:
        raise BundleError(f"{source}: {len(payload) - want} unexpected bytes after the compressed model "
                          f"({start + want} expected, {len(data)} found); {_FIX}")
    if hashlib.sha256(payload).hexdigest() != m["payload_sha256"]:
        raise BundleError(f"{source}: the compressed model is corrupt (its sha256 does not match the manifest); {_FIX}")
    background = m.get("split_byte") if m["codec"] == CODEC_BYTE else 0
    if isinstance(background, bool) or not isinstance(background, int) or not 0 <= background <= 255:
        raise BundleError(f"{source}: the manifest's split_byte {background!r} is not a byte value; {_FIX}")
    model = _zsplit_decode(payload, m["size"], source, background)
    if len(model) != m["size"] or hashlib.sha256(model).hexdigest() != m["sha256"]:
        raise BundleError(f"{source}: the unpacked model does not match the manifest's size and sha256 "
                          f"({m['size']} bytes, sha256 {m['sha256'][:16]}...); {_FIX}")
    return m["name"], model


__all__ = ["BUNDLE_SUFFIX", "BundleError", "CODEC", "CODEC_BYTE", "MAGIC", "is_bundle", "pack_bytes", "read_manifest",
           "read_model_file", "split_byte", "unpack_bytes"]
