"""The standard TFLite metadata of an exported .tflite, and reading an exported file back.

Besides its own "edgesqueeze" JSON entry (`metadata.ModelMetadata`: what the runtime reads),
every .tflite the project writes carries the metadata the TFLite ecosystem reads (MediaPipe
Tasks' ImageClassifier, the TFLite Task Library, MetadataDisplayer, Android/iOS model
bindings), written here without tflite-support or mediapipe:

- `Model.metadata` gets an entry named "TFLITE_METADATA" whose buffer (inline in the model)
  holds a `ModelMetadata` flatbuffer of the metadata schema (file identifier "M001"), built with
  the `flatbuffers` package as the model itself is;
- the associated file `labels.txt` (one class name per line, line i = class i) is a zip archive
  appended after the flatbuffer, its entries stored uncompressed (MediaPipe refuses compressed
  ones) with fixed timestamps, so the same model gives the same bytes. Interpreters ignore bytes
  after the flatbuffer; LiteRT runs the file unchanged.

What is written (`standard_metadata`): model name, description, version (the exporter's),
author and license (the exporter does not know who made the weights or under which licence:
both say so), min_parser_version "1.0.0" (every field written exists in schema 1.0.0); one
subgraph with

- input "image": ImageProperties (default size = the input's H x W), Stats min 0 max 255, no
  NormalizationOptions (the uint8 input takes raw 0..255 pixels; the model normalises them
  itself). The colour space is RGB when the file takes RGB (the default, export/channels.py).
  The schema has no BGR, so a BGR file says UNKNOWN (written explicitly) and its description names the BGR order: tools
  that accept RGB images only (MediaPipe, the Task Library: "Only RGB color space is supported")
  refuse such a file instead of feeding it swapped channels;
- output "probability" (the name MediaPipe needs): FeatureProperties and labels.txt as
  TENSOR_AXIS_LABELS (left out when the model has no class names). The values are float32
  probabilities: the file ends in a float softmax of its logits, so the scores the tools show
  sum to 1, and classes whose integer sums are equal get equal scores.

The field numbers below are those of tflite-support's metadata_schema.fbs (unchanged up to its
1.5.0). `read_standard_metadata` reads the entry back with the standard library only, and
`standard_metadata_problems` is the check an export runs on its own bytes.

Reading an exported file (standard library; `tflite_ops` needs the schema module):

    read_tflite_metadata(path_or_bytes) -> metadata.ModelMetadata   # the "edgesqueeze" JSON
    tflite_ops(path_or_bytes) -> [(op name, version), ...]
    read_standard_metadata(path_or_bytes) -> StandardMetadata        # "TFLITE_METADATA"
    read_associated_files(bytes) -> (where the zip starts, {name: bytes})
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError, missing_extra
from ..metadata import METADATA_KEY, ModelMetadata
from .files import ExportError
from .tflite_schema import FlatbufferError, _Reader, read_metadata_entries

STANDARD_KEY = "TFLITE_METADATA"  # the Model.metadata entry the ecosystem looks for
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
SUBGRAPH_NAME = "image_classifier"
DEFAULT_AUTHOR = "the authors of the weights (converted and quantized by edgesqueeze)"
DEFAULT_LICENSE = "the licence of the weights the model was made from (not recorded by the exporter)"

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


# ---------------------------------------------------------------- what is written


def labels_text(labels: Sequence[str]) -> bytes:
    """labels.txt: one label per line, each line ended by a newline. ExportError for a label
    that would not stay one line."""
    for i, label in enumerate(labels):
        if "\n" in label or "\r" in label:
            raise ExportError(f"class {i}'s name {label!r} contains a line break; labels.txt holds one name "
                              "per line: give class names without line breaks")
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


def _resize_text(resize) -> str:
    if isinstance(resize, int):
        return f"resize the short side to {resize}"
    return f"resize to {resize[0]}x{resize[1]} (height x width)"


def standard_metadata(md: ModelMetadata, num_classes: int, *, author: str = DEFAULT_AUTHOR,
                      license: str = DEFAULT_LICENSE) -> StandardMetadata:  # noqa: A002 - the schema's name
    """The standard metadata of a file with edgesqueeze metadata `md` and `num_classes`
    outputs (module doc). ExportError when `md` has labels but not one per class."""
    if md.labels and len(md.labels) != num_classes:
        raise ExportError(f"the metadata has {len(md.labels)} class names for a model with {num_classes} "
                          "classes; give one name per class")
    pre, s = md.preprocess, md.input_size
    rgb = md.channel_order == "RGB"
    kind = "FP32" if md.scheme == "fp32" else f"INT8 ({md.scheme})"
    cal = md.calibration
    calibrated = ""
    if md.scheme != "fp32" and cal.get("method"):
        calibrated = f", calibrated ({cal['method']}" + (f", {cal['images']} images" if "images" in cal else "") + ")"
    norm = "subtracts the mean" + ("" if all(v == 1 for v in pre.std) else " and divides by the std")
    order = ("" if rgb else " The channels are in BGR order, which the metadata schema cannot express: its "
             "colour space says UNKNOWN, and tools that accept RGB images only refuse this file rather than "
             "feed it swapped channels.")
    image = TensorMetadata(
        name=INPUT_NAME,
        description=(f"uint8 pixels [1, {s}, {s}, 3], {md.channel_order} channel order, values 0..255: "
                     f"{_resize_text(pre.resize)} with bilinear interpolation, then centre-crop {s}x{s}. No normalisation is "
                     f"needed: the model {norm} itself.{order}"),
        content="image", color_space="RGB" if rgb else "UNKNOWN", default_size=(s, s),
        stats_min=(0.0,), stats_max=(255.0,))
    named = bool(md.labels)
    files = (AssociatedFile(LABELS_FILE, "TENSOR_AXIS_LABELS", "class names, one per line: line i names class i"),)
    scores = TensorMetadata(
        name=OUTPUT_NAME,
        description=(f"float32 probabilities [1, {num_classes}]: the softmax of the model's logits, one score per "
                     "class, summing to 1." + ("" if named else " No class names were given, so no label file.")),
        content="feature", files=files if named else ())
    return StandardMetadata(
        name=f"{md.arch} {kind}",
        description=(f"SqueezeNet image classifier ({md.arch}), {num_classes} classes, {kind} weights{calibrated}. "
                     f"Input: one {s}x{s} {md.channel_order} image as uint8. Output: float32 probabilities (softmax). "
                     f"Written by edgesqueeze {md.version}."),
        version=f"edgesqueeze {md.version}", author=author, license=license,
        min_parser_version=MIN_PARSER_VERSION, subgraph=SUBGRAPH_NAME, inputs=(image,), outputs=(scores,))


def associated_files(md: ModelMetadata) -> dict[str, bytes]:
    """The files appended to the model: labels.txt when the model has class names."""
    return {LABELS_FILE: labels_text(md.labels)} if md.labels else {}


# ---------------------------------------------------------------- building


def build_metadata_buffer(sm: StandardMetadata) -> bytes:
    """The "M001" ModelMetadata flatbuffer of `sm` (the buffer of the TFLITE_METADATA entry)."""
    try:
        import flatbuffers
    except ImportError as e:
        raise missing_extra("flatbuffers", "tflite") from e
    b = flatbuffers.Builder(1024)

    def table(fields: Sequence[tuple[str, int, object]]) -> int:
        """fields: (kind, slot, value) with kind "offset", "uint32", "uint8" or "uint8!" (written
        even when 0, the schema default); every offset made before this is called."""
        b.StartObject(max(slot for _, slot, _ in fields) + 1 if fields else 0)
        for kind, slot, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "uint32":
                b.PrependUint32Slot(slot, value, 0)
            else:
                b.ForceDefaults(kind == "uint8!")
                b.PrependUint8Slot(slot, value, 0)
                b.ForceDefaults(False)
        return b.EndObject()

    def text(value: str) -> int | None:
        return b.CreateString(value) if value else None

    def vector(offsets: Sequence[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def floats(values: Sequence[float]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def files(fs: Sequence[AssociatedFile]) -> int | None:
        if not fs:
            return None
        made = []
        for f in fs:
            name, desc = text(f.name), text(f.description)
            made.append(table([("offset", _AF_NAME, name), ("offset", _AF_DESCRIPTION, desc),
                               ("uint8", _AF_TYPE, FILE_TYPES.index(f.type))]))
        return vector(made)

    def tensor(t: TensorMetadata) -> int:
        name, desc = text(t.name), text(t.description)
        content = None
        if t.content is not None:
            if t.content == "image":
                size = None
                if t.default_size is not None:
                    size = table([("uint32", _SIZE_WIDTH, t.default_size[0]), ("uint32", _SIZE_HEIGHT, t.default_size[1])])
                props = table([("uint8!", _IMAGE_COLOR, COLOR_SPACES.index(t.color_space or "UNKNOWN")),
                               ("offset", _IMAGE_SIZE, size)])
            else:  # FeatureProperties (an empty table); the others are not written
                props = table([])
            content = table([("uint8", _CONTENT_TYPE, _CONTENT_CODES[t.content]), ("offset", _CONTENT_PROPS, props)])
        stats = None
        if t.stats_min or t.stats_max:
            hi = floats(t.stats_max) if t.stats_max else None
            lo = floats(t.stats_min) if t.stats_min else None
            stats = table([("offset", _STATS_MAX, hi), ("offset", _STATS_MIN, lo)])
        fs = files(t.files)
        return table([("offset", _TM_NAME, name), ("offset", _TM_DESCRIPTION, desc), ("offset", _TM_CONTENT, content),
                      ("offset", _TM_STATS, stats), ("offset", _TM_FILES, fs)])

    ins = vector([tensor(t) for t in sm.inputs])
    outs = vector([tensor(t) for t in sm.outputs])
    sg_name, sg_desc = text(sm.subgraph), None
    subgraph = table([("offset", _SG_NAME, sg_name), ("offset", _SG_DESCRIPTION, sg_desc),
                      ("offset", _SG_INPUTS, ins), ("offset", _SG_OUTPUTS, outs)])
    strings = {k: text(getattr(sm, k)) for k in ("name", "description", "version", "author", "license",
                                                 "min_parser_version")}
    model_files = files(sm.files)
    root = table([("offset", _MM_NAME, strings["name"]), ("offset", _MM_DESCRIPTION, strings["description"]),
                  ("offset", _MM_VERSION, strings["version"]), ("offset", _MM_SUBGRAPHS, vector([subgraph])),
                  ("offset", _MM_AUTHOR, strings["author"]), ("offset", _MM_LICENSE, strings["license"]),
                  ("offset", _MM_FILES, model_files), ("offset", _MM_MIN_PARSER, strings["min_parser_version"])])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def append_associated_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """`model` followed by a zip archive of `files`, stored uncompressed, with fixed timestamps
    and offsets counted from the start of the model (as tflite-support writes them)."""
    if not files:
        return bytes(model)
    out = io.BytesIO()
    out.write(model)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:  # starts at the current position
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # unix, whatever the platform writing it
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return out.getvalue()


# ---------------------------------------------------------------- reading


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
    """Typed access to an M001 flatbuffer over tflite_schema._Reader (bounds-checked reads)."""

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
    entry, source = _metadata_entry(path_or_bytes, STANDARD_KEY, "")
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


def _read_bytes(path_or_bytes) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "model bytes"
    p = Path(path_or_bytes)
    try:
        return p.read_bytes(), str(p)
    except OSError as e:
        raise DataError(f"{p}: cannot read the model file ({e.strerror or e})") from None


def read_tflite_metadata(path_or_bytes) -> ModelMetadata:
    """The `ModelMetadata` stored under "edgesqueeze" in a .tflite file (stdlib flatbuffer
    reader: no interpreter, no schema module, no TensorFlow)."""
    entry, source = _metadata_entry(path_or_bytes, METADATA_KEY, "; it was not written by edgesqueeze")
    return ModelMetadata.from_json(entry.decode("utf-8"), source=source)


def _metadata_entry(path_or_bytes, key: str, why: str) -> tuple[bytes, str]:
    """(the bytes of the Model.metadata entry `key`, the file's name for messages); DataError
    for an unreadable model or a missing entry."""
    buf, source = _read_bytes(path_or_bytes)
    try:
        entries = read_metadata_entries(buf)
    except FlatbufferError as e:
        raise DataError(f"{source}: not a readable TFLite model ({e})") from None
    if key not in entries:
        raise DataError(f"{source}: no '{key}' metadata{why} (re-export it with `edgesqueeze quantize`)")
    return entries[key], source


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise missing_extra("ai_edge_litert (the TFLite schema)", "tflite") from e
    return schema


def tflite_ops(path_or_bytes) -> list[tuple[str, int]]:
    """(builtin op name, version) of every operator code in the file, in file order."""
    s = _schema()
    buf, _ = _read_bytes(path_or_bytes)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.Model.GetRootAs(buf, 0)
    out = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        out.append((names.get(code, str(code)), oc.Version()))
    return out


__all__ = [
    "AssociatedFile", "COLOR_SPACES", "DEFAULT_AUTHOR", "DEFAULT_LICENSE", "FILE_IDENTIFIER", "INPUT_NAME",
    "LABELS_FILE", "MIN_PARSER_VERSION", "MetadataError", "OUTPUT_NAME", "STANDARD_KEY", "StandardMetadata",
    "TensorMetadata", "append_associated_files", "associated_files", "build_metadata_buffer", "labels_text",
    "parse_metadata_buffer", "read_associated_files", "read_standard_metadata", "read_tflite_metadata",
    "standard_metadata", "standard_metadata_problems", "tflite_ops",
]
