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

The field numbers, enums and dataclasses are the reader's (`formats/standard_metadata.py`: those
of tflite-support's metadata_schema.fbs, unchanged up to its 1.5.0); `standard_metadata_problems`
there is the check an export runs on its own bytes.
"""

from __future__ import annotations

import io
import zipfile
from typing import Sequence

from ..errors import missing_extra
from ..formats.metadata import ModelMetadata
from ..formats.standard_metadata import (_AF_DESCRIPTION, _AF_NAME, _AF_TYPE, _CONTENT_CODES, _CONTENT_PROPS,
                                         _CONTENT_TYPE, _IMAGE_COLOR, _IMAGE_SIZE, _MM_AUTHOR, _MM_DESCRIPTION,
                                         _MM_FILES, _MM_LICENSE, _MM_MIN_PARSER, _MM_NAME, _MM_SUBGRAPHS,
                                         _MM_VERSION, _SG_DESCRIPTION, _SG_INPUTS, _SG_NAME, _SG_OUTPUTS,
                                         _SIZE_HEIGHT, _SIZE_WIDTH, _STATS_MAX, _STATS_MIN, _TM_CONTENT,
                                         _TM_DESCRIPTION, _TM_FILES, _TM_NAME, _TM_STATS, COLOR_SPACES,
                                         FILE_IDENTIFIER, FILE_TYPES, AssociatedFile, StandardMetadata,
                                         TensorMetadata)
from .files import ExportError

MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
SUBGRAPH_NAME = "image_classifier"
DEFAULT_AUTHOR = "the authors of the weights (converted and quantized by edgesqueeze)"
DEFAULT_LICENSE = "the licence of the weights the model was made from (not recorded by the exporter)"


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


__all__ = ["DEFAULT_AUTHOR", "DEFAULT_LICENSE", "INPUT_NAME", "LABELS_FILE", "MIN_PARSER_VERSION", "OUTPUT_NAME",
           "SUBGRAPH_NAME", "append_associated_files", "associated_files", "build_metadata_buffer", "labels_text",
           "standard_metadata"]
