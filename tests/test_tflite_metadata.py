"""The standard TFLite metadata ("TFLITE_METADATA", schema "M001") and the labels.txt zip of the
exported .tflite files, read back with a reader written here from metadata_schema.fbs on the
`flatbuffers` package's Table (not the exporter's own reader), and the zip checked byte by byte."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
flatbuffers = pytest.importorskip("flatbuffers")

from flatbuffers import number_types as N  # noqa: E402
from flatbuffers.table import Table  # noqa: E402

from edgesqueeze.errors import DataError  # noqa: E402
from edgesqueeze.export import tflite as T  # noqa: E402
from edgesqueeze.export import tflite_graph as G  # noqa: E402
from edgesqueeze.export import tflite_metadata as TM  # noqa: E402
from edgesqueeze.formats import standard_metadata as SM  # noqa: E402
from edgesqueeze.export.tflite_flatbuffer import _Graph  # noqa: E402
from edgesqueeze.formats.metadata import int8_metadata  # noqa: E402
from edgesqueeze.formats.tflite import _schema, read_tflite_metadata  # noqa: E402
from edgesqueeze.export.files import ExportError  # noqa: E402
from edgesqueeze.runtime import Classifier  # noqa: E402
from test_export_tflite import LABELS, make_tiny, run_tflite  # noqa: E402

# ModelMetadata, SubGraphMetadata, TensorMetadata, Content, ImageProperties, ImageSize, Stats,
# AssociatedFile: field ids in metadata_schema.fbs order
MM = dict(name=0, description=1, version=2, subgraph_metadata=3, author=4, license=5, associated_files=6,
          min_parser_version=7)
SG = dict(name=0, description=1, input_tensor_metadata=2, output_tensor_metadata=3, associated_files=4)
TMD = dict(name=0, description=1, dimension_names=2, content=3, process_units=4, stats=5, associated_files=6)
CONTENT = dict(content_properties_type=0, content_properties=1, range=2)
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # the ContentProperties union
RGB, UNKNOWN = 1, 0  # ColorSpaceType
TENSOR_AXIS_LABELS = 2  # AssociatedFileType


class Node:
    """One table of a flatbuffer, read through flatbuffers.table.Table."""

    def __init__(self, buf: bytearray, pos: int):
        self.t = Table(buf, pos)

    def _off(self, field: int) -> int:
        return self.t.Offset(4 + 2 * field)

    def has(self, field: int) -> bool:
        return self._off(field) != 0

    def string(self, field: int) -> str | None:
        o = self._off(field)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def scalar(self, field: int, flags, default=0):
        o = self._off(field)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def table(self, field: int) -> "Node | None":
        o = self._off(field)
        return Node(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, field: int) -> list["Node"]:
        o = self._off(field)
        if not o:
            return []
        start = self.t.Vector(o)
        return [Node(self.t.Bytes, self.t.Indirect(start + 4 * k)) for k in range(self.t.VectorLen(o))]

    def floats(self, field: int) -> list[float]:
        o = self._off(field)
        if not o:
            return []
        start = self.t.Vector(o)
        return [self.t.Get(N.Float32Flags, start + 4 * k) for k in range(self.t.VectorLen(o))]


def metadata_root(entry: bytes) -> Node:
    assert flatbuffers.util.BufferHasIdentifier(entry, 0, b"M001")
    buf = bytearray(entry)
    return Node(buf, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, buf, 0))


def model_entries(data: bytes) -> dict[str, bytes]:
    """The model's metadata entries, through the TFLite schema's generated reader."""
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAs(bytearray(data), 0)
    out = {}
    for i in range(m.MetadataLength()):
        e = m.Metadata(i)
        out[e.Name().decode()] = m.Buffers(e.Buffer()).DataAsNumpy().tobytes()
    return out


def zip_start(data: bytes) -> tuple[int, int]:
    """(start of the zip, offset of its central directory) from the raw end-of-central-directory record."""
    eocd = data.rfind(b"PK\x05\x06")
    assert eocd > 0 and len(data) - eocd == 22  # no archive comment
    cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    assert cd_offset + cd_size == eocd  # offsets count from the start of the file
    first = struct.unpack_from("<I", data, cd_offset + 42)[0]  # the first entry's local header offset
    return first, cd_offset


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    _, _, qm = make_tiny(35, 1)
    path = tmp_path_factory.mktemp("md") / "tiny-int8.tflite"
    report = T.to_tflite(qm, path)
    return qm, path, report


def rgb_fp32(tmp_path, labels=LABELS):
    arch, params, _ = make_tiny(41, 0)
    arch = replace(arch, preprocess=replace(arch.preprocess, channel_order="RGB"))
    path = tmp_path / "rgb-fp32.tflite"
    T.to_tflite_fp32(arch, params, path, metadata=T.fp32_metadata(arch, labels))
    return arch, params, path


# ---------------------------------------------------------------- fields, read independently


def test_int8_file_standard_metadata_field_by_field(tiny_int8):
    qm, path, report = tiny_int8
    data = path.read_bytes()
    assert report.bytes == len(data)
    entries = model_entries(data)
    assert list(entries) == ["edgesqueeze", "TFLITE_METADATA"]
    root = metadata_root(entries["TFLITE_METADATA"])
    arch = qm.arch.name
    assert root.string(MM["name"]) == f"{arch} INT8 (affine)"
    desc = root.string(MM["description"])
    assert "10 classes" in desc and "calibrated (minmax, 6 images)" in desc and "probabilities (softmax)" in desc
    assert root.string(MM["version"]) == "edgesqueeze 0.1.0"
    assert root.string(MM["author"]) == TM.DEFAULT_AUTHOR and root.string(MM["license"]) == TM.DEFAULT_LICENSE
    assert root.string(MM["min_parser_version"]) == "1.0.0"
    assert not root.has(MM["associated_files"])
    sgs = root.tables(MM["subgraph_metadata"])
    assert len(sgs) == 1
    inputs, outputs = sgs[0].tables(SG["input_tensor_metadata"]), sgs[0].tables(SG["output_tensor_metadata"])
    assert len(inputs) == len(outputs) == 1

    image = inputs[0]
    assert image.string(TMD["name"]) == "image"
    assert "BGR channel order" in image.string(TMD["description"])
    assert not image.has(TMD["process_units"])  # no NormalizationOptions: raw 0..255 pixels
    content = image.table(TMD["content"])
    assert content.scalar(CONTENT["content_properties_type"], N.Uint8Flags) == IMAGE_PROPERTIES
    props = content.table(CONTENT["content_properties"])
    # a BGR file claims no colour space: UNKNOWN, written explicitly
    assert props.has(0) and props.scalar(0, N.Int8Flags, default=-1) == UNKNOWN
    size = props.table(1)
    assert (size.scalar(0, N.Uint32Flags), size.scalar(1, N.Uint32Flags)) == (35, 35)
    stats = image.table(TMD["stats"])
    assert stats.floats(0) == [255.0] and stats.floats(1) == [0.0]  # max, min

    out = outputs[0]
    assert out.string(TMD["name"]) == "probability"
    assert "probabilities" in out.string(TMD["description"]) and "summing to 1" in out.string(TMD["description"])
    content = out.table(TMD["content"])
    assert content.scalar(CONTENT["content_properties_type"], N.Uint8Flags) == FEATURE_PROPERTIES
    files = out.tables(TMD["associated_files"])
    assert [(f.string(0), f.scalar(2, N.Int8Flags)) for f in files] == [("labels.txt", TENSOR_AXIS_LABELS)]


def test_rgb_file_says_rgb(tmp_path):
    arch, _, path = rgb_fp32(tmp_path)
    root = metadata_root(model_entries(path.read_bytes())["TFLITE_METADATA"])
    assert root.string(MM["name"]) == f"{arch.name} FP32"
    image = root.tables(MM["subgraph_metadata"])[0].tables(SG["input_tensor_metadata"])[0]
    props = image.table(TMD["content"]).table(CONTENT["content_properties"])
    assert props.scalar(0, N.Int8Flags) == RGB
    assert "BGR" not in image.string(TMD["description"])
    assert read_tflite_metadata(path).channel_order == "RGB"  # the project's own entry stays


def test_labels_zip_is_stored_after_the_flatbuffer(tiny_int8):
    qm, path, _ = tiny_int8
    data = path.read_bytes()
    start, cd_offset = zip_start(data)
    from ai_edge_litert import schema_py_generated as s

    s.ModelT.InitFromPackedBuf(bytearray(data[:start]), 0)  # the model lies entirely before the zip
    assert data[start:start + 4] == b"PK\x03\x04"
    method, = struct.unpack_from("<H", data, start + 8)
    name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
    assert method == 0 and data[start + 30:start + 30 + name_len] == b"labels.txt"
    assert struct.unpack_from("<H", data, cd_offset + 10)[0] == 0  # stored in the central directory too
    payload = data[start + 30 + name_len + extra_len:]
    text = "".join(f"{label}\n" for label in LABELS).encode()
    assert payload.startswith(text)  # uncompressed: the names as they are, in class order
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["labels.txt"]
        lines = zf.read("labels.txt").decode().splitlines()
    assert len(lines) == len(qm.labels) == 10 and tuple(lines) == qm.labels


def test_same_bytes_from_the_same_model(tiny_int8):
    qm, path, _ = tiny_int8
    assert T.build_tflite(qm) == T.build_tflite(qm) == path.read_bytes()


def test_litert_outputs_identical_without_the_zip_and_without_standard_metadata(tiny_int8):
    qm, path, _ = tiny_int8
    data = path.read_bytes()
    start, _ = zip_start(data)
    g, _ = G._build_int8(qm)
    bare = g.pack(inputs=[T.PIXELS], outputs=["probability"], metadata=G._metadata_entries(int8_metadata(qm)),
                  description="")
    images = T.synthetic_images(35, 6, seed=9)
    full = run_tflite(data, images)["probability"]
    np.testing.assert_array_equal(full, run_tflite(data[:start], images)["probability"])
    np.testing.assert_array_equal(full, run_tflite(bare, images)["probability"])
    clf = Classifier.load(path, threads=1)  # the runtime reads its own entry, labels included
    assert clf.metadata.labels == LABELS
    np.testing.assert_array_equal(clf.scores(images[:1]), full[:1])  # no second softmax


# ---------------------------------------------------------------- the module's reader and check


def test_own_reader_round_trip(tiny_int8, tmp_path):
    qm, path, _ = tiny_int8
    sm = TM.standard_metadata(int8_metadata(qm), 10)
    assert SM.read_standard_metadata(path) == sm == SM.parse_metadata_buffer(TM.build_metadata_buffer(sm))[0]
    assert sm.inputs[0].color_space == "UNKNOWN" and sm.outputs[0].files[0].type == "TENSOR_AXIS_LABELS"
    assert SM.read_associated_files(path.read_bytes())[1] == {"labels.txt": TM.labels_text(LABELS)}
    _, _, rgb = rgb_fp32(tmp_path)
    assert SM.read_standard_metadata(rgb).inputs[0].color_space == "RGB"


def test_export_check_accepts_the_file_and_rejects_broken_appended_bytes(tiny_int8):
    qm, path, _ = tiny_int8
    data = path.read_bytes()
    T.check_flatbuffer(data)
    start, _ = zip_start(data)
    entry = model_entries(data)["TFLITE_METADATA"]
    at = data.index(entry)

    def patched(pos, new):
        return data[:pos] + new + data[pos + len(new):]

    deflated = io.BytesIO()
    deflated.write(data[:start])
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labels.txt", TM.labels_text(LABELS))
    short = TM.append_associated_files(data[:start], {"labels.txt": TM.labels_text(LABELS[:9])})
    cases = {
        "zip cut short": (data[:-30], "labels.txt.*not in a zip archive"),
        "no zip": (data[:start], "labels.txt.*not in a zip archive"),
        "garbage instead of the zip": (data[:start] + bytes(range(256)) * 2, "not in a zip archive"),
        "compressed entry": (deflated.getvalue(), "compressed"),
        "9 labels for 10 classes": (short, "9 lines for 10 classes"),
        "bad identifier": (patched(at + 4, b"X001"), "M001"),
        "root offset out of range": (patched(at, b"\xff\xff\xff\x7f"), "TFLITE_METADATA"),
        "CRC mismatch": (patched(data.rindex(b"class 3"), b"klass 3"), "cannot be read"),  # the zip copy
    }
    for what, (buf, words) in cases.items():
        with pytest.raises(ExportError, match=words):
            T.check_flatbuffer(buf)
        print(what, "rejected")


def test_labels_must_stay_one_per_line_and_one_per_class(tmp_path):
    arch, params, _ = make_tiny(35, 1)
    md = T.fp32_metadata(arch, LABELS[:-1] + ("two\nlines",))
    with pytest.raises(ExportError, match=r"class 9's name 'two\\nlines' contains a line break"):
        T.to_tflite_fp32(arch, params, tmp_path / "f.tflite", metadata=md)
    with pytest.raises(ExportError, match="9 class names for a model with 10 classes"):
        T.to_tflite_fp32(arch, params, tmp_path / "f.tflite", metadata=T.fp32_metadata(arch, LABELS[:9]))
    assert list(tmp_path.iterdir()) == []


def test_no_labels_no_label_file(tmp_path):
    _, _, path = rgb_fp32(tmp_path, labels=())
    data = path.read_bytes()
    assert b"PK\x05\x06" not in data[-22:] and SM.read_associated_files(data) == (len(data), {})
    sm = SM.read_standard_metadata(path)
    assert sm.outputs[0].name == "probability" and sm.outputs[0].files == ()
    assert "No class names were given" in sm.outputs[0].description
    T.check_flatbuffer(data)


def test_read_standard_metadata_errors(tiny_int8):
    _, path, _ = tiny_int8
    data = path.read_bytes()
    entry = model_entries(data)["TFLITE_METADATA"]
    at = data.index(entry)
    with pytest.raises(DataError, match="TFLITE_METADATA' metadata is malformed.*M001"):
        SM.read_standard_metadata(data[:at + 4] + b"X001" + data[at + 8:])
    g = _Graph(_schema())
    g.tensor("x", (1, 4), "FLOAT32")
    g.tensor("axes", (1,), "INT32", data=np.array([1], np.int32))
    g.tensor("y", (1,), "FLOAT32")
    g.op("MEAN", ["x", "axes"], ["y"], g.s.ReducerOptionsT(), "ReducerOptions")
    with pytest.raises(DataError, match="no 'TFLITE_METADATA' metadata"):
        SM.read_standard_metadata(g.pack(inputs=["x"], outputs=["y"], metadata={}, description=""))
