"""Reading the standard TFLite metadata of a .tflite file with the standard library: the
"TFLITE_METADATA" entry (a `ModelMetadata` flatbuffer of tflite-support's metadata schema, file
identifier "M001") and the associated files in the zip archive after the flatbuffer, which
MediaPipe Tasks, the TFLite Task Library and Android/iOS model bindings read.

    read_standard_metadata(path_or_bytes) -> StandardMetadata
    parse_metadata_buffer(entry bytes) -> (StandardMetadata, ...)   # one per subgraph
    read_associated_files(bytes) -> (where the zip starts, {name: bytes})
    standard_metadata_problems(...)                                  # the check of a written file

The field numbers below are those of tflite-support's metadata_schema.fbs (unchanged up to its
1.5.0); `export/tflite_metadata.py` writes what this module reads.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Sequence

from ..errors import DataError
from .flatbuffer import FlatbufferError, _Reader
from .tflite import metadata_entry

STANDARD_KEY = "TFLITE_METADATA"  # the Model.metadata entry the ecosystem looks for
FILE_IDENTIFIER = b"M001"

# schema enums: ColorSpaceType, the ContentProperties union, AssociatedFileType
COLOR_SPACES = ("UNKNOWN", "RGB", "GRAYSCALE")
CONTENT_TYPES = {1: "feature", 2: "image", 3: "bounding_box", 4: "audio"}
_CONTENT_CODES = {v: k for k, v in CONTENT_TYPES.items()}
FILE_TYPES = ("UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS",
              "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE")

# field numbers (metadata_schema.fbs)
_MM_NAME, _MM_DESCRIPTION, _MM_VERSION, _MM_SUBGRAPHS, _MM_AUTHOR, _MM_LICENSE, _MM_FILES, _MM_MIN_PARSER = range(8)
_SG_NAME, _SG_DESCRIPTION, _SG_INPUTS, _SG_OUTPUTS, _SG_FILES = range(5)
_TM_NAME, _TM_DESCRIPTION, _TM_DIM_NAMES, _TM_CONTENT, _TM_UNITS, _TM_STATS, _TM_FILES = range(7)
_CONTENT_TYPE, _CONTENT_PROPS = 0, 1
_IMAGE_COLOR, _IMAGE_SIZE = 0, 1
_SIZE_WIDTH, _SIZE_HEIGHT = 0, 1
_STATS_MAX, _STATS_MIN = 0, 1
_AF_NAME, _AF_DESCRIPTION, _AF_TYPE = 0, 1, 2


class MetadataError(ValueError):
    """The standard metadata or its associated files are malformed."""


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    type: str = "TENSOR_AXIS_LABELS"  # a FILE_TYPES name
    description: str = ""


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output. `color_space` and `default_size` ((width, height)) are those of
    ImageProperties, None for another content."""

    name: str
    description: str = ""
    content: str | None = None  # "image" | "feature" | ... (CONTENT_TYPES) | None
    color_space: str | None = None
    default_size: tuple[int, int] | None = None
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()
    files: tuple[AssociatedFile, ...] = ()
    process_units: int = 0  # how many (none are written)


@dataclass(frozen=True)
class StandardMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    min_parser_version: str
    subgraph: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    files: tuple[AssociatedFile, ...] = ()  # model-level associated files (none are written)



def read_associated_files(buf: bytes) -> tuple[int, dict[str, bytes]]:
    """(where the zip archive after the flatbuffer starts, {name: contents}); (len(buf), {}) when
    no zip archive ends the file. MetadataError for an archive that is corrupt, compressed or
    overlaps the start of the file."""
    view = io.BytesIO(buf)
    try:
        zf = zipfile.ZipFile(view)
    except zipfile.BadZipFile:
        return len(buf), {}
    except (OSError, ValueError, EOFError) as e:  # a central directory pointing outside the file
        raise MetadataError(f"the zip archive after the model is corrupt ({e})") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            return len(buf), {}
        start = min(i.header_offset for i in infos)
        if start < 8:
            raise MetadataError(f"the zip archive after the model claims to start at byte {start}")
        out = {}
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise MetadataError(f"{info.filename} is compressed in the zip archive after the model "
                                    "(MediaPipe reads uncompressed entries only)")
            try:
                out[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
                raise MetadataError(f"{info.filename} cannot be read from the zip archive after the model "
                                    f"({e})") from None
    return start, out


class _MetaReader:
    """Typed access to an M001 flatbuffer over flatbuffer._Reader (bounds-checked reads)."""

    def __init__(self, buf: bytes):
        if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
            raise MetadataError(f"no '{FILE_IDENTIFIER.decode()}' file identifier")
        self.r = _Reader(buf)

    def text(self, table: int, index: int) -> str:
        raw = self.r.bytes_of(table, index)
        if raw is None:
            return ""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MetadataError(f"a string at byte {table} is not UTF-8") from None

    def sub(self, table: int, index: int) -> int | None:
        pos = self.r.field(table, index)
        return None if pos is None else self.r.indirect(pos)

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.r.field(table, index)
        return default if pos is None else self.r._unpack(fmt, pos)

    def tables(self, table: int, index: int) -> list[int]:
        v = self.r.vector(table, index)
        if v is None:
            return []
        start, n = v
        if start + 4 * n > self.r.n:
            raise MetadataError(f"a vector of {n} tables runs past the end of the metadata")
        return [self.r.table_at(start, k) for k in range(n)]

    def floats(self, table: int, index: int) -> tuple[float, ...]:
        v = self.r.vector(table, index)
        if v is None:
            return ()
        start, n = v
        if start + 4 * n > self.r.n:
            raise MetadataError(f"a vector of {n} floats runs past the end of the metadata")
        return tuple(self.r._unpack("<f", start + 4 * k) for k in range(n))

    def files(self, table: int, index: int) -> tuple[AssociatedFile, ...]:
        out = []
        for f in self.tables(table, index):
            code = self.scalar(f, _AF_TYPE, "<B")
            out.append(AssociatedFile(self.text(f, _AF_NAME), FILE_TYPES[code] if code < len(FILE_TYPES) else str(code),
                                      self.text(f, _AF_DESCRIPTION)))
        return tuple(out)

    def tensor(self, t: int) -> TensorMetadata:
        content = color = size = None
        c = self.sub(t, _TM_CONTENT)
        if c is not None:
            code = self.scalar(c, _CONTENT_TYPE, "<B")
            content = CONTENT_TYPES.get(code, str(code)) if code else None
            props = self.sub(c, _CONTENT_PROPS)
            if content == "image" and props is not None:
                cs = self.scalar(props, _IMAGE_COLOR, "<b")
                color = COLOR_SPACES[cs] if 0 <= cs < len(COLOR_SPACES) else str(cs)
                sz = self.sub(props, _IMAGE_SIZE)
                if sz is not None:
                    size = (self.scalar(sz, _SIZE_WIDTH, "<I"), self.scalar(sz, _SIZE_HEIGHT, "<I"))
        stats = self.sub(t, _TM_STATS)
        units = self.r.vector(t, _TM_UNITS)
        return TensorMetadata(
            name=self.text(t, _TM_NAME), description=self.text(t, _TM_DESCRIPTION), content=content,
            color_space=color, default_size=size,
            stats_min=self.floats(stats, _STATS_MIN) if stats is not None else (),
            stats_max=self.floats(stats, _STATS_MAX) if stats is not None else (),
            files=self.files(t, _TM_FILES), process_units=units[1] if units else 0)


def parse_metadata_buffer(buf: bytes) -> tuple[StandardMetadata, ...]:
    """The ModelMetadata of an "M001" flatbuffer, one StandardMetadata per subgraph metadata
    (standard library only). MetadataError when it is malformed."""
    m = _MetaReader(buf)
    try:
        root = m.r.indirect(0)
        common = {k: m.text(root, i) for k, i in (("name", _MM_NAME), ("description", _MM_DESCRIPTION),
                                                  ("version", _MM_VERSION), ("author", _MM_AUTHOR),
                                                  ("license", _MM_LICENSE), ("min_parser_version", _MM_MIN_PARSER))}
        files = m.files(root, _MM_FILES)
        out = tuple(StandardMetadata(**common, subgraph=m.text(sg, _SG_NAME),
                                     inputs=tuple(m.tensor(t) for t in m.tables(sg, _SG_INPUTS)),
                                     outputs=tuple(m.tensor(t) for t in m.tables(sg, _SG_OUTPUTS)), files=files)
                    for sg in m.tables(root, _MM_SUBGRAPHS))
    except FlatbufferError as e:
        raise MetadataError(str(e)) from None
    if not out:
        raise MetadataError("no subgraph metadata")
    return out


def read_standard_metadata(path_or_bytes) -> StandardMetadata:
    """The first subgraph's standard metadata of a .tflite file. DataError when the file has
    none or it is malformed."""
    entry, source = metadata_entry(path_or_bytes, STANDARD_KEY, "")
    try:
        return parse_metadata_buffer(entry)[0]
    except MetadataError as e:
        raise DataError(f"{source}: its '{STANDARD_KEY}' metadata is malformed ({e}); re-export it") from None


def standard_metadata_problems(buf: bytes, entry: bytes, input_shapes: Sequence[Sequence[int]],
                               output_shapes: Sequence[Sequence[int]]) -> list[str]:
    """What is wrong with a model's TFLITE_METADATA `entry` and the associated files after the
    flatbuffer, for a model whose subgraph has these input and output shapes (an empty list:
    nothing). Used by the export's own check of the bytes it wrote."""
    try:
        sgs = parse_metadata_buffer(entry)
        _, archive = read_associated_files(buf)
    except MetadataError as e:
        return [f"{STANDARD_KEY}: {e}"]
    problems = []
    sm = sgs[0]
    if len(sgs) != 1:
        problems.append(f"{STANDARD_KEY}: {len(sgs)} subgraph metadata for 1 subgraph")
    if not sm.min_parser_version:
        problems.append(f"{STANDARD_KEY}: no min_parser_version")
    if len(sm.inputs) != len(input_shapes) or len(sm.outputs) != len(output_shapes):
        problems.append(f"{STANDARD_KEY}: {len(sm.inputs)} inputs and {len(sm.outputs)} outputs described, the "
                        f"model has {len(input_shapes)} and {len(output_shapes)}")
    for t, shape in zip(sm.inputs, input_shapes):
        if t.content == "image" and t.default_size is not None and len(shape) == 4 \
                and t.default_size != (shape[2], shape[1]):
            problems.append(f"{STANDARD_KEY}: input {t.name!r} default size {t.default_size} is not the "
                            f"input's {shape[2]}x{shape[1]}")
    for t, shape in [*zip(sm.inputs, input_shapes), *zip(sm.outputs, output_shapes)]:
        for f in t.files:
            if f.name not in archive:
                problems.append(f"{STANDARD_KEY}: {f.name}, an associated file of {t.name!r}, is not in a zip "
                                "archive after the model (missing or truncated)")
            elif f.type == "TENSOR_AXIS_LABELS":
                lines = archive[f.name].decode("utf-8", "replace").splitlines()
                if shape and len(lines) != shape[-1]:
                    problems.append(f"{STANDARD_KEY}: {f.name} has {len(lines)} lines for {shape[-1]} classes")
    return problems



__all__ = ["AssociatedFile", "COLOR_SPACES", "CONTENT_TYPES", "FILE_IDENTIFIER", "FILE_TYPES", "MetadataError",
           "STANDARD_KEY", "StandardMetadata", "TensorMetadata", "parse_metadata_buffer", "read_associated_files",
           "read_standard_metadata", "standard_metadata_problems"]
