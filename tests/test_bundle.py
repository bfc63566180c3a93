"""Update bundles (`edgesqueeze.formats.bundle`, `edgesqueeze pack`): exact round trips, Classifier.load
of a bundle, every kind of damage a clear ModelFileError (never another exception), the CLI, and
the real Deep-Compression v1.0 INT8 files' bundle sizes."""

from __future__ import annotations

import hashlib
import json
import lzma
import struct

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnx")  # the writers (the bundle module itself never imports it)
cv2 = pytest.importorskip("cv2")

from edgesqueeze.export.bundle import default_bundle_path, pack  # noqa: E402
from edgesqueeze.formats import bundle as B  # noqa: E402
from edgesqueeze.cli import main  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.runtime import Classifier, ModelFileError  # noqa: E402
from test_quant import minmax_ranges, tiny_arch, tiny_params  # noqa: E402

LABELS = tuple(f"thing {i}" for i in range(10))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{name: path} of a tiny INT8 SqueezeNet (2/3 of its weights pruned to 0, as the released
    v1.0) written as .tflite and .onnx, plus pixels to run it on."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    arch = tiny_arch()
    rng = np.random.default_rng(5)
    params = {k: (np.where(rng.random(w.shape) < 2 / 3, 0, w).astype(np.float32), b)
              for k, (w, b) in tiny_params(arch).items()}
    calib = rng.integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=LABELS,
                        calibration={"method": "minmax", "images": 6})
    d = tmp_path_factory.mktemp("bundle")
    files = {"int8.tflite": d / "int8.tflite", "int8.onnx": d / "int8.onnx"}
    to_tflite(qm, files["int8.tflite"])
    to_onnx(qm, files["int8.onnx"], target="x86")
    return files, rng.integers(0, 256, (3, 35, 35, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def packed(tiny):
    """{model name: bundle bytes}."""
    files, _ = tiny
    return {name: B.pack_bytes(p.read_bytes(), name=name) for name, p in files.items()}


def reseal(data: bytes, edit) -> bytes:
    """A bundle whose manifest was changed by `edit(manifest dict)` and whose header checksum
    was recomputed: damage that only the deeper checks can find."""
    m, start = B.read_manifest(data, source="t")
    edit(m)
    raw = json.dumps(m, sort_keys=True).encode()
    return struct.pack("<8sI32s", B.MAGIC, len(raw), hashlib.sha256(raw).digest()) + raw + data[start:]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["int8.tflite", "int8.onnx"])
def test_round_trip_is_exact_and_the_manifest_says_what_is_inside(tiny, packed, name):
    model = tiny[0][name].read_bytes()
    data = packed[name]
    assert B.is_bundle(data) and not B.is_bundle(model)
    assert B.unpack_bytes(data, source="b") == (name, model)
    m, _ = B.read_manifest(data, source="b")
    assert m["size"] == len(model) and m["sha256"] == hashlib.sha256(model).hexdigest()
    assert m["format_version"] == 1
    # the split byte is the file's most frequent one: 0 for int8 weights, 0x80 for the x86 ONNX
    # file's uint8 weights (zero point 128)
    background = B.split_byte(model)
    assert background == int(np.argmax(np.bincount(np.frombuffer(model, np.uint8), minlength=256)))
    if background == 0:
        assert m["codec"] == B.CODEC and "split_byte" not in m
    else:
        assert m["codec"] == B.CODEC_BYTE and m["split_byte"] == background
    assert m["model_format"] == name.rsplit(".", 1)[1]
    assert m["metadata"]["classes"] == 10 and m["metadata"]["scheme"] == "affine"
    assert m["metadata"]["input_size"] == 35
    assert len(data) < len(model)  # 2/3 zeros: the bundle is smaller


@pytest.mark.parametrize("data", [b"\x00", b"\x01", b"\x00" * 17, bytes(range(256)) * 3,
                                  bytes(np.random.default_rng(0).integers(0, 256, 4099, dtype=np.uint8)),
                                  bytes(np.where(np.random.default_rng(1).random(1001) < .7, 0, 7).astype(np.uint8))])
def test_the_codec_reproduces_any_bytes(data):
    """Whatever the length (not a multiple of 8 included) and the share of zeros."""
    assert B._zsplit_decode(B._zsplit_encode(data), len(data), "t") == data


# ---------------------------------------------------------------- the runtime


@pytest.mark.parametrize("name", ["int8.tflite", "int8.onnx"])
def test_classifier_loads_a_bundle_with_identical_logits(tiny, packed, tmp_path, name):
    files, pixels = tiny
    p = tmp_path / (name + ".esq")
    p.write_bytes(packed[name])
    clf, ref = Classifier.load(p, threads=1), Classifier.load(files[name], threads=1)
    assert clf.backend is ref.backend and clf.path == p and clf.labels == LABELS
    assert clf.info["bundle"] == {"name": name, "bundle_bytes": len(packed[name]),
                                  "model_bytes": files[name].stat().st_size,
                                  "sha256": hashlib.sha256(files[name].read_bytes()).hexdigest()}
    assert "bundle" not in ref.info
    np.testing.assert_array_equal(clf.logits(pixels), ref.logits(pixels))


def test_a_bundle_is_told_by_its_bytes_not_its_name(tiny, packed, tmp_path):
    p = tmp_path / "renamed.tflite"
    p.write_bytes(packed["int8.onnx"])
    assert Classifier.load(p, threads=1).info["bundle"]["name"] == "int8.onnx"


# ---------------------------------------------------------------- damage


def _cases(data: bytes):
    """(description, damaged bytes): truncations, bit flips, wrong checksums, foreign bytes."""
    m, start = B.read_manifest(data, source="t")
    n = len(data)
    cuts = sorted(set(range(0, start + 2)) | set(np.linspace(start, n - 1, 40).astype(int).tolist()) | {n - 1})
    for k in cuts:
        yield f"truncated to {k} bytes", data[:k]
    for pos in list(range(start)) + np.random.default_rng(2).integers(start, n, 60).tolist():
        for bit in ((0, 7) if pos >= start else range(8)):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            yield f"bit {bit} of byte {pos} flipped", bytes(b)
    yield "a byte appended", data + b"\x00"
    yield "zero length", b""
    yield "random bytes", bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8))
    yield "magic then random bytes", B.MAGIC + bytes(np.random.default_rng(4).integers(0, 256, 5000, dtype=np.uint8))
    yield "wrong model sha256", reseal(data, lambda m: m.update(sha256="0" * 64))
    yield "wrong model size", reseal(data, lambda m: m.update(size=m["size"] + 1))
    yield "wrong payload length", reseal(data, lambda m: m.update(payload_bytes=m["payload_bytes"] - 1))
    yield "no name", reseal(data, lambda m: m.pop("name"))
    yield "a path as name", reseal(data, lambda m: m.update(name="../../etc/x.tflite"))
    yield "size not an integer", reseal(data, lambda m: m.update(size="12"))
    other = B._zsplit_encode(b"\x01\x02\x00" * 50)
    yield "another payload, resealed", reseal(data[:start] + other, lambda m: m.update(
        payload_bytes=len(other), payload_sha256=hashlib.sha256(other).hexdigest()))
    junk = b"\xfd7zXZ\x00" + bytes(40)
    yield "a payload that is not xz, resealed", reseal(data[:start] + junk, lambda m: m.update(
        payload_bytes=len(junk), payload_sha256=hashlib.sha256(junk).hexdigest()))
    bomb = lzma.compress(b"\x01" * (10 * m["size"]), format=lzma.FORMAT_XZ)
    yield "a payload longer than the model, resealed", reseal(data[:start] + bomb, lambda m: m.update(
        payload_bytes=len(bomb), payload_sha256=hashlib.sha256(bomb).hexdigest()))


@pytest.mark.parametrize("name", ["int8.tflite", "int8.onnx"])
def test_every_damaged_bundle_is_one_model_file_error(packed, name):
    data = packed[name]
    seen = 0
    for what, bad in _cases(data):
        with pytest.raises(ModelFileError, match="^bundle.esq: ") as e:  # any other type fails the test
            B.unpack_bytes(bad, source="bundle.esq")
        assert len(str(e.value)) < 400, what
        seen += 1
    assert seen > 900


@pytest.mark.parametrize("what, edit, words", [
    ("truncated", lambda d: d[:-100], "truncated: .* 100 bytes of the compressed model are missing"),
    ("manifest flip", lambda d: d[:60] + bytes([d[60] ^ 4]) + d[61:], "manifest is corrupt"),
    ("payload flip", lambda d: d[:-50] + bytes([d[-50] ^ 1]) + d[-49:], "compressed model is corrupt"),
    ("wrong checksum", lambda d: reseal(d, lambda m: m.update(sha256="ab" * 32)), "does not match the manifest's size "
     "and sha256"),
    ("newer format", lambda d: reseal(d, lambda m: m.update(format_version=2)), "upgrade edgesqueeze"),
    ("unknown codec", lambda d: reseal(d, lambda m: m.update(codec="zstd")), "codec 'zstd'"),
    ("not a bundle", lambda d: b"PK\x03\x04" + d[4:], "not an edgesqueeze bundle"),
    ("cut in the magic", lambda d: d[:5], "truncated: 5 bytes"),
])
def test_damage_is_named_with_the_fix(packed, tmp_path, what, edit, words):
    """Through Classifier.load, as a board sees it: the file, the problem and the fix."""
    p = tmp_path / "m.tflite.esq"
    p.write_bytes(edit(packed["int8.tflite"]))
    with pytest.raises(ModelFileError, match=words) as e:
        Classifier.load(p, threads=1)
    msg = str(e.value)
    assert msg.startswith(str(p)) and ("edgesqueeze pack" in msg or "upgrade" in msg)


def test_an_empty_bundle_file_says_empty(tmp_path):
    p = tmp_path / "m.esq"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        Classifier.load(p)


# ---------------------------------------------------------------- packing and the CLI


def test_split_byte_codec_round_trips_and_checks_its_byte(packed):
    """An x86 ONNX file stores pruned weights as 128: the bundle splits on that byte."""
    data = packed["int8.onnx"]
    m, _ = B.read_manifest(data, source="b")
    assert m["codec"] == B.CODEC_BYTE and m["split_byte"] == 128
    for bad in (300, -1, "128", True, None):
        with pytest.raises(ModelFileError, match="split_byte"):
            B.unpack_bytes(reseal(data, lambda m, b=bad: m.update(split_byte=b)), source="b")
    with pytest.raises(ModelFileError, match="bitmap and values"):  # the values hold the split byte itself
        B.unpack_bytes(reseal(data, lambda m: m.update(split_byte=0)), source="b")


def test_pack_writes_the_bundle_and_refuses_non_models(tiny, packed, tmp_path):
    files, _ = tiny
    info = pack(files["int8.tflite"], tmp_path / "x.esq")
    assert info.path.read_bytes() == packed["int8.tflite"]  # deterministic
    assert (info.name, info.model_bytes, info.bundle_bytes, info.codec) == \
        ("int8.tflite", files["int8.tflite"].stat().st_size, len(packed["int8.tflite"]), B.CODEC)
    assert info.ratio == pytest.approx(info.bundle_bytes / info.model_bytes)
    assert default_bundle_path(files["int8.onnx"]).name == "int8.onnx.esq"
    with pytest.raises(ModelFileError, match="already an edgesqueeze bundle"):
        B.pack_bytes(packed["int8.onnx"], name="x.esq")
    with pytest.raises(ModelFileError, match="looks like a PNG image"):
        B.pack_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100), name="photo.png")
    with pytest.raises(ModelFileError, match="empty"):
        B.pack_bytes(b"", name="m.tflite")
    # another tool's model (no edgesqueeze metadata) packs, but Classifier refuses it as it would the file
    no_meta = files["int8.onnx"].read_bytes().replace(b"edgesqueeze", b"edgeSqueeze")  # key no longer found
    data = B.pack_bytes(no_meta, name="m.onnx")
    assert B.read_manifest(data, source="t")[0]["metadata"] is None
    assert B.unpack_bytes(data, source="t") == ("m.onnx", no_meta)
    (tmp_path / "m.onnx.esq").write_bytes(data)
    with pytest.raises(ModelFileError, match="not written by edgesqueeze"):
        Classifier.load(tmp_path / "m.onnx.esq")
    broken = files["int8.tflite"].read_bytes().replace(b'"labels"', b'"label5"')  # malformed metadata
    with pytest.raises(ModelFileError, match="metadata is malformed"):
        B.pack_bytes(broken, name="m.tflite")


def test_cli_pack_prints_sizes_and_classify_loads_the_bundle(tiny, tmp_path, capsys):
    files, _ = tiny
    model = tmp_path / "m.tflite"
    model.write_bytes(files["int8.tflite"].read_bytes())
    assert main(["pack", str(model)]) == 0
    out = capsys.readouterr().out
    bundle = tmp_path / "m.tflite.esq"
    size = bundle.stat().st_size
    assert f"{model.stat().st_size:,} bytes" in out and f"{size:,} bytes" in out
    assert hashlib.sha256(model.read_bytes()).hexdigest() in out and "%" in out
    img = tmp_path / "frame.png"
    assert cv2.imwrite(str(img), np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert main(["classify", str(bundle), str(img), "--json", "--top-k", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == str(bundle) and len(doc["results"][0]["top"]) == 2


def test_cli_pack_errors_write_nothing(tiny, tmp_path, capsys):
    files, _ = tiny
    model = tmp_path / "m.onnx"
    model.write_bytes(files["int8.onnx"].read_bytes())
    before = model.read_bytes()
    (tmp_path / "notes.txt").write_text("hello")
    runs = [(["pack", str(model), "-o", str(model)], "is the model file itself"),
            (["pack", str(tmp_path / "missing.tflite")], "no such model file"),
            (["pack", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "n.esq")], "neither a TFLite nor an ONNX"),
            (["pack", str(model), "-o", str(tmp_path / "nofolder" / "m.esq")], "does not exist")]
    for argv, words in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "notes.txt"]  # no bundle, no .partial


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real_files(dc_quantized, eval_pixels, tmp_path_factory):
    """The real Deep-Compression v1.0, affine INT8, exported to both formats."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    d = tmp_path_factory.mktemp("real")
    px, _ = eval_pixels
    files = {"tflite": d / "squeezenet1_0-affine-int8.tflite", "onnx": d / "squeezenet1_0-affine-int8.onnx"}
    to_tflite(dc_quantized, files["tflite"], verify_images=px[:2])
    to_onnx(dc_quantized, files["onnx"], verify_images=px[:2])
    return files, px[:4]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_real_v1_0_bundles(real_files, fmt, tmp_path):
    """Exact, loadable, under 42 % of the file, and smaller than plain xz of the same file
    (the zero split earns its place)."""
    files, px = real_files
    model = files[fmt].read_bytes()
    info = pack(files[fmt], tmp_path / "real.esq")
    assert B.unpack_bytes(info.path.read_bytes(), source="real") == (files[fmt].name, model)
    plain = len(lzma.compress(model, preset=9 | lzma.PRESET_EXTREME))
    assert info.bundle_bytes < plain - 10_000
    assert info.ratio < 0.42
    np.testing.assert_array_equal(Classifier.load(info.path, threads=1).logits(px),
                                  Classifier.load(files[fmt], threads=1).logits(px))


@pytest.mark.xfail(strict=True, reason="a bundle under 500,000 bytes is below what any lossless codec can reach "
                   "for this model: the nonzero int8 weights carry 7.27 bits each (~378,600 bytes), their positions "
                   "~116,000 and the rest of the file ~44,600 compressed (edgesqueeze/formats/bundle.py's docstring)")
def test_real_v1_0_tflite_bundle_under_500_000_bytes(real_files, tmp_path):
    assert pack(real_files[0]["tflite"], tmp_path / "real.esq").bundle_bytes < 500_000
