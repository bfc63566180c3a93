"""Hardening: mutated model files, extreme images, degenerate calibration, exports
killed mid-write, and a 10,000-frame camera soak.

Already covered elsewhere (not repeated here): zero-byte, non-image, truncated, grey, RGBA,
16-bit and 1x1 image files (test_data.py); grey/BGRA/uint16 frames and a handful of corrupt or
semantically wrong model files (test_runtime.py); an empty image folder (test_data.py); the
range choice on all-black activations (test_calibrate.py); a failed verification leaving the
old file (test_export_onnx.py, test_export_tflite.py); a source that returns None, raises,
gives a wrong type or changes resolution, over 40 frames (test_camera.py).

The mutant campaigns run in one worker process per file (tests/model_mutants.py): a mutant
that kills the worker is a crash, recorded, and the worker restarts at the next mutant. Their
counts are printed (`pytest -s`) and written to <pytest basetemp>/hardening-mutants.json.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnx")  # the writers
cv2 = pytest.importorskip("cv2")

import model_mutants as M  # noqa: E402
from edgesqueeze.data import LabelledImage, load_dataset, load_image, to_uint8_input  # noqa: E402
from edgesqueeze.errors import DataError, WeightsError  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.runtime import Classifier  # noqa: E402
from test_quant import minmax_ranges, tiny_arch, tiny_params  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
MUTANTS_PER_FILE = 520
MUTANT_SEED = 20240607
TINY_LABELS = tuple(f"thing {i}" for i in range(10))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), *filter(None, [env.get("PYTHONPATH")])])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


# ---------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny INT8 SqueezeNet (10 classes, 35x35) built in code: {"onnx": path, "tflite": path,
    "qm": its QuantizedModel}; runs without the shared data."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    arch = tiny_arch()
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=TINY_LABELS,
                        calibration={"method": "minmax", "images": 6, "split": "random"})
    d = tmp_path_factory.mktemp("tiny-models")
    to_onnx(qm, d / "tiny-int8.onnx")
    to_tflite(qm, d / "tiny-int8.tflite")
    return {"onnx": d / "tiny-int8.onnx", "tflite": d / "tiny-int8.tflite", "qm": qm, "classes": 10}


@pytest.fixture(scope="session")
def real_files(dc_quantized, tmp_path_factory):
    """The real Deep-Compression v1.0 INT8 (conftest's dc_quantized) written by the v1.0
    writers, as `edgesqueeze quantize` writes them (verified on 2 synthetic images here)."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import synthetic_images, to_tflite

    d = tmp_path_factory.mktemp("real-models")
    px = synthetic_images(dc_quantized.arch.input_size)[:2]
    to_onnx(dc_quantized, d / "squeezenet1_0-affine-int8.onnx", verify_images=px)
    to_tflite(dc_quantized, d / "squeezenet1_0-affine-int8.tflite", verify_images=px)
    return {"onnx": d / "squeezenet1_0-affine-int8.onnx", "tflite": d / "squeezenet1_0-affine-int8.tflite",
            "classes": 1000}


def test_structure_maps_find_the_structure_and_the_weights(tiny_files):
    """The mutant generator aims at the right bytes: the structure maps cover the fields the
    loaders follow and leave the weight payloads as data."""
    for fmt in ("onnx", "tflite"):
        buf = tiny_files[fmt].read_bytes()
        sm = M.structure_of(buf, fmt)
        whats = {w.split(".")[-1] for _, _, w in sm.spots}
        data_bytes = sum(b - a for a, b in sm.data)
        weights = sum(c.weight.size for c in tiny_files["qm"].convs.values())
        assert weights <= data_bytes < len(buf), fmt  # int8 weights (+ biases, scales) are data
        assert all(0 <= p and p + w <= len(buf) for p, w, _ in sm.spots)
        assert sm.floats and all(a < b for a, b in sm.floats)
        if fmt == "tflite":
            assert {"vtable", "soffset", "uoffset", "length", "element"} <= whats
        else:
            assert {"key", "length", "varint"} <= whats
        specs = M.make_specs(buf, fmt, MUTANTS_PER_FILE, MUTANT_SEED)
        assert specs == M.make_specs(buf, fmt, MUTANTS_PER_FILE, MUTANT_SEED)  # fixed by the seed
        assert len(specs) == MUTANTS_PER_FILE and {s["kind"] for s in specs} == set(M.KINDS)
        struct_writes = [s for s in specs if s["kind"] == "struct-overwrite"]
        assert not any(sm.in_data(s["at"]) for s in struct_writes)
        for s in specs:
            out = M.apply(s, buf)
            assert out != buf or s["kind"].endswith("overwrite")  # an overwrite may write the same value


def _campaign(files: dict, fmt: str, tmp_path: Path, label: str, report: Path) -> dict:
    src = files[fmt]
    buf = src.read_bytes()
    specs = [{"kind": "control"}] + M.make_specs(buf, fmt, MUTANTS_PER_FILE, MUTANT_SEED)
    d = tmp_path / "mutants"
    d.mkdir()
    t0 = time.perf_counter()
    outcomes = M.run_campaign({"source": str(src), "suffix": src.suffix, "dir": str(d), "specs": specs},
                              tmp_path / "job.json")
    seconds = time.perf_counter() - t0
    assert [o.i for o in outcomes] == list(range(len(specs)))
    control, outcomes = outcomes[0], outcomes[1:]
    assert control.status == "ok", f"the unmutated {src.name} did not load: {control.detail}"

    by_kind: dict[str, Counter] = {}
    for o in outcomes:
        by_kind.setdefault(specs[o.i]["kind"], Counter())[o.status] += 1
    counts = Counter(o.status for o in outcomes)
    summary = {"file": f"{label} {src.name}", "bytes": len(buf), "tried": len(outcomes), "ok": counts["ok"],
               "clean_error": counts["error"], "crash": counts["crash"], "hang": counts["hang"],
               "seconds": round(seconds, 1), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}}
    print(f"\nmutants {json.dumps(summary)}")
    doc = json.loads(report.read_text()) if report.is_file() else {}
    doc[f"{label}-{fmt}"] = summary
    report.write_text(json.dumps(doc, indent=1))

    dead = [o for o in outcomes if o.status in ("crash", "hang")]
    for o in dead:  # keep the bytes that killed it, for the bug report
        (tmp_path / f"crash-{o.i:04d}{src.suffix}").write_bytes(M.apply(specs[o.i], buf))
    assert not dead, f"{len(dead)} mutants killed or hung the process: " + "; ".join(
        f"#{o.i} {o.status} rc={o.detail.get('rc')} {json.dumps(o.detail['spec'])}" for o in dead[:5])
    for o in outcomes:
        d = o.detail
        name = f"mutant-{o.i:04d}{src.suffix}"
        if o.status == "error":
            assert d["type"] == "ModelFileError" and d["project_error"], \
                f"#{o.i} {json.dumps(d['spec'])}: {d['type']}: {d['message']}\n{d.get('traceback', '')}"
            assert name in d["message"], f"#{o.i}: the error does not name the file: {d['message']}"
        else:
            assert d["shape"] == [1, files["classes"]] and d["finite"], (o.i, d)
    assert by_kind["zero-length"] == {"error": 1} and by_kind["random-bytes"]["ok"] == 0
    assert counts["ok"] > 0 and counts["error"] > 0  # both outcomes really happen
    return summary


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_tiny_model_mutants_load_or_fail_cleanly(tiny_files, fmt, tmp_path, tmp_path_factory):
    _campaign(tiny_files, fmt, tmp_path, "tiny", tmp_path_factory.getbasetemp() / "hardening-mutants.json")


@pytest.mark.shared
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_real_v1_0_mutants_load_or_fail_cleanly(real_files, fmt, tmp_path, tmp_path_factory):
    _campaign(real_files, fmt, tmp_path, "real", tmp_path_factory.getbasetemp() / "hardening-mutants.json")


def _standard_regions(buf: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, end) of the TFLITE_METADATA buffer and of the labels zip after the flatbuffer."""
    from edgesqueeze.formats.flatbuffer import read_metadata_entries
    from edgesqueeze.formats.standard_metadata import STANDARD_KEY, read_associated_files

    entry = read_metadata_entries(buf)[STANDARD_KEY]
    assert buf.count(entry) == 1
    at = buf.index(entry)
    start, files = read_associated_files(buf)
    assert list(files) == ["labels.txt"] and start < len(buf)
    return (at, at + len(entry)), (start, len(buf))


def test_standard_metadata_mutants_load_through_own_metadata(tiny_files, tmp_path):
    """Mutants of the bytes only other tools read (the TFLITE_METADATA buffer, the labels zip):
    truncations through the zip, bit flips and special values over both. The runtime reads its
    own metadata, so each must load and classify (in a child: a crash is recorded, not fatal);
    the export's own check must refuse every truncated zip and every changed label byte."""
    from edgesqueeze.export.files import ExportError
    from edgesqueeze.export.tflite import check_flatbuffer

    src = tiny_files["tflite"]
    buf = src.read_bytes()
    (m0, m1), (z0, z1) = _standard_regions(buf)
    rng = np.random.default_rng(MUTANT_SEED)
    labels_at = buf.rindex(b"thing 0\n")  # the zip's stored copy (the JSON holds the names too)
    specs = [{"kind": "truncate", "at": int(a)} for a in sorted({z0, z0 + 1, z0 + 30, z1 - 22, z1 - 1,
                                                                 *rng.integers(z0, z1, 12).tolist()})]
    specs += [{"kind": "bit-flip", "bits": [int(p) * 8 + int(rng.integers(8))]} for p in rng.integers(m0, m1, 30)]
    specs += [{"kind": "bit-flip", "bits": [int(p) * 8 + int(rng.integers(8))]} for p in rng.integers(z0, z1, 30)]
    specs += [{"kind": "bit-flip", "bits": [int(p) * 8], "target": "label"}
              for p in rng.integers(labels_at, labels_at + 60, 6)]
    specs += [{"kind": "struct-overwrite", "at": int(p), "hex": struct.pack("<I", int(v)).hex()}
              for p, v in zip(rng.integers(m0 // 4, (m1 - 4) // 4, 30) * 4,
                              rng.choice([0, 1, 4, 0x7FFFFFFF, 0xFFFFFFFF, 2**31], 30))]
    specs.append({"kind": "struct-overwrite", "at": m0 + 4, "hex": b"X001".hex()})  # the identifier
    specs.append({"kind": "random-bytes", "size": z1, "keep": z0, "seed": 5})  # noise instead of the zip
    d = tmp_path / "mutants"
    d.mkdir()
    outcomes = M.run_campaign({"source": str(src), "suffix": src.suffix, "dir": str(d), "specs": specs},
                              tmp_path / "job.json")
    assert [o.i for o in outcomes] == list(range(len(specs)))
    bad = [(o.i, o.status, o.detail.get("message") or o.detail.get("rc")) for o in outcomes
           if o.status != "ok" or o.detail["shape"] != [1, 10] or not o.detail["finite"]]
    assert not bad, bad[:5]
    refused = Counter()
    for s in specs:
        try:
            check_flatbuffer(M.apply(s, buf))
        except ExportError:
            refused[s.get("target", s["kind"])] += 1
    print(f"\nstandard-metadata mutants: {len(specs)} loaded; refused by the export check: {dict(refused)}")
    n_trunc = sum(s["kind"] == "truncate" for s in specs)
    assert refused["truncate"] == n_trunc and refused["random-bytes"] == 1
    assert refused["label"] == 6  # a changed label byte fails the zip's CRC


def _head_spots(buf: bytes) -> dict[str, list[int]]:
    """Byte positions of what the XNNPACK head adds: conv10's quantization (output scale 1 and
    zero point, its weight scales carrying the real scale), the MUL scale constant, SOFTMAX's
    beta and the DEQUANTIZE/SOFTMAX operator codes."""
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAs(buf, 0)
    sg = m.Subgraphs(0)
    spots: dict[str, list[int]] = {"quant": [], "const": [], "options": [], "opcode": []}
    for ti in range(sg.TensorsLength()):
        t = sg.Tensors(ti)
        name = t.Name().decode()
        q = t.Quantization()
        if name in ("conv10", "conv10.weight", "conv10.bias") and q is not None:
            for field, width in ((8, 4), (10, 8)):  # scale (float32), zero_point (int64)
                o = q._tab.Offset(field)
                if o:
                    start = q._tab.Vector(o)
                    spots["quant"] += list(range(start, start + width * min(q._tab.VectorLen(o), 4), width))
        if name == "conv10.scale":
            b = m.Buffers(t.Buffer())
            spots["const"].append(b._tab.Vector(b._tab.Offset(4)))
    codes = {m.OperatorCodes(i).BuiltinCode(): i for i in range(m.OperatorCodesLength())}
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        if op.OpcodeIndex() == codes[s.BuiltinOperator.SOFTMAX]:
            tab = op.BuiltinOptions()
            o = tab.Offset(4)
            if o:
                spots["options"].append(tab.Pos + o)
    for code in (s.BuiltinOperator.DEQUANTIZE, s.BuiltinOperator.SOFTMAX):
        oc = m.OperatorCodes(codes[code])
        spots["opcode"] += [oc._tab.Pos + oc._tab.Offset(10)]  # builtin_code (int32)
    return spots


def test_head_mutants_load_or_fail_cleanly(tiny_files, tmp_path):
    """Special values over the bytes of the INT8 .tflite's head (conv10's scale-1 output
    quantization and folded weight scales, the MUL scale, SOFTMAX's beta, the DEQUANTIZE and
    SOFTMAX operator codes): each mutant loads and gives finite scores of the right shape, or
    fails with one EdgeSqueezeError (ModelFileError). Never a crash or a hang."""
    src = tiny_files["tflite"]
    buf = src.read_bytes()
    spots = _head_spots(buf)
    assert len(spots["quant"]) >= 8 and spots["const"] and spots["options"] and len(spots["opcode"]) == 2
    f32 = (0x7F800000, 0xFF800000, 0x7FC00000, 0x00000000, 0xBF800000, 0x7F7FFFFF, 0x00000001, 0x3F800000,
           0x4B000000)
    specs = [{"kind": "float-overwrite", "at": int(p), "hex": struct.pack("<I", v).hex()}
             for p in spots["quant"] + spots["const"] + spots["options"] for v in f32]
    specs += [{"kind": "struct-overwrite", "at": int(p), "hex": struct.pack("<i", v).hex()}
              for p in spots["opcode"] for v in (0, 1, 53, 25, 127, 255, -1, 10_000)]
    d = tmp_path / "mutants"
    d.mkdir()
    outcomes = M.run_campaign({"source": str(src), "suffix": src.suffix, "dir": str(d), "specs": specs},
                              tmp_path / "job.json")
    assert [o.i for o in outcomes] == list(range(len(specs)))
    counts = Counter(o.status for o in outcomes)
    print(f"\nhead mutants: {len(specs)}: {dict(counts)}")
    dead = [(o.i, o.status, specs[o.i]) for o in outcomes if o.status in ("crash", "hang")]
    assert not dead, dead[:5]
    unclear = [(o.i, o.detail.get("type"), o.detail.get("message", "")[:200]) for o in outcomes
               if o.status == "error" and not o.detail["project_error"]]
    assert not unclear, unclear[:5]
    wrong = [o.i for o in outcomes if o.status == "ok" and (o.detail["shape"] != [1, 10] or not o.detail["finite"])]
    assert not wrong
    assert counts["ok"] and counts["error"]  # both outcomes happen: the campaign reaches what it aims at


def test_truncated_zip_and_malformed_standard_metadata_load_in_process(tiny_files, tmp_path):
    """The two cases named on their own, in this process: the runtime loads both files through
    its own metadata, with the original's labels and logits, and `describe` reads them."""
    from edgesqueeze.runtime import describe

    buf = tiny_files["tflite"].read_bytes()
    (m0, _), (z0, _) = _standard_regions(buf)
    frame = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    want = Classifier.load(tiny_files["tflite"], threads=1).logits(
        Classifier.load(tiny_files["tflite"], threads=1).preprocess(frame))
    for name, data in (("cut-zip.tflite", buf[:z0 + 40]),
                       ("bad-standard.tflite", buf[:m0] + b"\xff\xff\xff\x7fX001" + buf[m0 + 8:])):
        p = tmp_path / name
        p.write_bytes(data)
        clf = Classifier.load(p, threads=1)
        assert clf.metadata.labels == TINY_LABELS
        np.testing.assert_array_equal(clf.logits(clf.preprocess(frame)), want)
        assert describe(p).metadata.labels == TINY_LABELS


def test_litert_failures_found_by_the_campaigns_are_clean_errors(tiny_files, tmp_path):
    """The LiteRT failures the campaigns found on the real v1.0 file, rebuilt on the tiny one:
    each is now a ModelFileError naming the file, in a child that must exit normally."""
    from ai_edge_litert import schema_py_generated as S
    import flatbuffers

    src = tiny_files["tflite"]

    def edited(name, edit):
        m = S.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
        edit(m)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        p = tmp_path / f"{name}.tflite"
        p.write_bytes(bytes(b.Output()))
        return p

    def has_data(m, t):
        return t.buffer > 0 and m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data) > 0

    def concat(m):
        return next(op for op in m.subgraphs[0].operators
                    if m.operatorCodes[op.opcodeIndex].builtinCode == S.BuiltinOperator.CONCATENATION)

    def act(m):  # an int8 activation (per-tensor zero point, no data)
        return next(t for t in m.subgraphs[0].tensors if t.type == S.TensorType.INT8 and not has_data(m, t)
                    and t.quantization is not None and t.quantization.zeroPoint is not None
                    and len(t.quantization.zeroPoint) == 1)

    def no_data(m):
        t = next(t for t in m.subgraphs[0].tensors if has_data(m, t))
        m.buffers.append(S.BufferT())
        t.buffer = len(m.buffers) - 1  # a weight tensor now points at an empty buffer

    def bad_name(m):
        m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]].name = b"p\xf6xels"

    # before the fixes: a segfault; an out-of-bounds read in LiteRT (a segfault on the real file,
    # an error here); RuntimeError at invoke; UnicodeDecodeError from get_input_details
    cases = {
        "zero-point": (edited("zero-point", lambda m: act(m).quantization.zeroPoint.__setitem__(0, 128)),
                       "zero point 128 outside [-128, 127]"),
        "absent-input": (edited("absent-input", lambda m: concat(m).inputs.__setitem__(0, -1)),
                         "a required input or output is absent"),
        "no-data": (edited("no-data", no_data), "has no data and nothing writes it"),
        "name": (edited("name", bad_name), "its name is not UTF-8 text"),
    }
    code = ("import sys, numpy as np\nfrom edgesqueeze.runtime import Classifier, ModelFileError\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        Classifier.load(p, threads=1).classify(np.zeros((40, 40, 3), np.uint8))\n"
            "        print('LOADED', p)\n"
            "    except ModelFileError as e:\n        print('ERROR', p, '::', e)\n")
    r = subprocess.run([sys.executable, "-c", code, *(str(p) for p, _ in cases.values())], capture_output=True,
                       text=True, timeout=120, env=_env(), cwd=PROJECT)
    assert r.returncode == 0, f"the child died (rc {r.returncode}): {r.stderr[-1500:]}"
    lines = r.stdout.splitlines()
    for kind, (p, words) in cases.items():
        line = next(ln for ln in lines if ln.split(" ")[1] == str(p))
        assert line.startswith("ERROR") and words in line and p.name in line.split("::", 1)[1], (kind, line)


def test_runtime_failures_after_loading_are_model_file_errors(tiny_files, tmp_path):
    """A file that loads but cannot run, or runs to NaN, is a ModelFileError naming the file
    (an onnxruntime Fail/InvalidArgument or a NaN head scale, found by the ONNX campaigns)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(tiny_files["onnx"])
    conv = next(n for n in m.graph.node if n.op_type == "Conv" or n.op_type == "QLinearConv")
    w_dq = next(n for n in m.graph.node if n.output[0] == conv.input[1])  # DequantizeLinear of the weight
    w = next(t for t in m.graph.initializer if t.name == w_dq.input[0])
    arr = numpy_helper.to_array(w)
    w.CopyFrom(numpy_helper.from_array(np.concatenate([arr, arr], axis=1), w.name))  # twice the input channels
    shape_path = tmp_path / "conv-shape.onnx"
    onnx.save(m, shape_path)

    m = onnx.load(tiny_files["onnx"])
    # the head's scale: Mul(mean - zero point, scale) -> "logits", before the Softmax (export/onnx.py)
    head_mul = next(n for n in m.graph.node if n.output[0] == "logits")
    assert head_mul.op_type == "Mul" and m.graph.node[-1].op_type == "Softmax"
    last_scale = head_mul.input[1]
    s = next(t for t in m.graph.initializer if t.name == last_scale)
    s.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(s).shape, np.inf, np.float32), s.name))
    nan_path = tmp_path / "inf-scale.onnx"
    onnx.save(m, nan_path)

    frame = np.zeros((40, 40, 3), np.uint8)
    from edgesqueeze.runtime import ModelFileError

    for path, words in ((shape_path, "cannot run it"), (nan_path, "non-finite outputs")):
        clf = Classifier.load(path, threads=1)  # both load: the problem shows only when run
        with pytest.raises(ModelFileError, match=words) as e:
            clf.classify(frame)
        assert path.name in str(e.value) and "re-export" in str(e.value)


# ---------------------------------------------------------------- images


def _palette_png(path: Path, width: int, height: int, quadrants_rgb) -> None:
    """A 2-bit palette PNG of four constant quadrants, written directly (25 MB of rows for
    10000 x 10000 instead of encoding a 300 MB BGR array)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    assert width % 8 == 0 and height % 2 == 0
    half = width // 8  # bytes per half row at 4 pixels per byte
    top = b"\x00" + b"\x00" * half + b"\x55" * half  # filter 0, indices 0 | 1
    bottom = b"\x00" + b"\xaa" * half + b"\xff" * half  # indices 2 | 3
    z = zlib.compressobj(6)
    idat = z.compress(top * (height // 2)) + z.compress(bottom * (height // 2)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 2, 3, 0, 0, 0))
                     + chunk(b"PLTE", bytes(v for rgb in quadrants_rgb for v in rgb)) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def test_10000x10000_image_is_decoded_and_resized_correctly(tiny_files, tmp_path):
    from edgesqueeze.arch import squeezenet1_0_arch

    rgb = [(30, 20, 10), (50, 100, 200), (128, 255, 0), (177, 7, 77)]
    bgr = [tuple(reversed(c)) for c in rgb]
    p = tmp_path / "huge.png"
    _palette_png(p, 10000, 10000, rgb)
    img = load_image(p)
    assert img.shape == (10000, 10000, 3) and img.dtype == np.uint8
    assert [tuple(img[y, x]) for y, x in ((0, 0), (0, 9999), (9999, 0), (9999, 9999))] == bgr
    # a 250x (Caffe 256, v1.0) and 40x (the tiny model) downscale: bilinear between two
    # neighbouring pixels of one quadrant keeps its colour exactly, away from the centre lines
    for pre in (squeezenet1_0_arch(caffe=True).preprocess, tiny_arch().preprocess):
        out = to_uint8_input(img, pre)
        c, m = pre.crop, pre.crop // 2 - 3
        assert out.shape == (c, c, 3)
        for (ys, xs), colour in zip([(slice(0, m), slice(0, m)), (slice(0, m), slice(-m, None)),
                                     (slice(-m, None), slice(0, m)), (slice(-m, None), slice(-m, None))], bgr):
            assert (out[ys, xs] == colour).all(), (pre.crop, colour)
    clf = Classifier.load(tiny_files["tflite"], threads=1)
    top = clf.classify(img, top_k=3)
    assert len(top) == 3 and all(np.isfinite(t.score) for t in top)
    np.testing.assert_array_equal(clf.preprocess(img), to_uint8_input(img, clf.metadata.preprocess))


def test_tiny_and_thin_frames_are_classified(tiny_files):
    clf = Classifier.load(tiny_files["onnx"], threads=1)
    for shape in ((1, 1, 3), (1, 4000, 3), (4000, 1), (2, 2, 4)):
        frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
        px = clf.preprocess(frame)
        assert px.shape == (35, 35, 3)
        top = clf.classify(frame, top_k=1)
        assert top[0].label in TINY_LABELS
    one = clf.preprocess(np.array([[[9, 99, 199]]], np.uint8))
    assert (one == (9, 99, 199)).all()  # a 1x1 frame upsamples to its colour


# ---------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def tiny_torch_model():
    torch = pytest.importorskip("torch")
    from edgesqueeze.arch import TORCHVISION_PREPROCESS, squeezenet1_1_arch
    from edgesqueeze.model import SqueezeNet

    torch.manual_seed(0)
    pre = replace(TORCHVISION_PREPROCESS, resize=72, crop=64)
    return SqueezeNet(squeezenet1_1_arch(num_classes=10).with_preprocess(pre))


def test_calibration_folder_of_non_images_is_a_data_error(tiny_torch_model, tmp_path):
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "a_notes.jpg").write_text("a text file with a .jpg name\n")
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "c_noise.JPEG").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    items = load_dataset(folder)
    assert len(items) == 3  # listed by suffix: only decoding shows they are not images
    with pytest.raises(DataError, match="a_notes.jpg") as e:
        calibrate_and_quantize(tiny_torch_model, items, QuantizeOptions.make())
    assert "not a readable image" in str(e.value)
    with pytest.raises(DataError, match="too few"):
        calibrate_and_quantize(tiny_torch_model, [], QuantizeOptions.make())


@pytest.mark.parametrize("scheme", ["affine", "ristretto"])
def test_all_black_calibration_gives_finite_positive_scales_and_working_files(tiny_torch_model, scheme, tmp_path):
    """Black images, zero biases and a conv1 that maps black (negative after the mean is
    subtracted) below 0: after the first ReLU every activation is exactly 0, so every range is
    degenerate. Every scale must still be finite and > 0, and both files must export
    (verified against the integer reference) and classify."""
    import torch
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    model = SqueezeNet(tiny_torch_model.arch)
    model.load_state_dict(tiny_torch_model.state_dict())
    with torch.no_grad():
        for name, conv in model.named_convs():
            conv.bias.zero_()
            if name == "conv1":
                conv.weight.abs_()
    items = []
    for i, (h, w) in enumerate(((64, 64), (80, 120), (300, 200))):
        p = tmp_path / f"black{i}.png"
        cv2.imwrite(str(p), np.zeros((h, w, 3), np.uint8))
        items.append(LabelledImage(p, -1))
    # 9 items (each file three times): ristretto's default KL ranges need at least 8
    qm, stats, _ = calibrate_and_quantize(model, items * 3, QuantizeOptions.make(scheme=scheme))
    degenerate = [n for n, s in stats.items() if s.max == s.min]
    assert len(degenerate) == len(stats) - 1 and "conv1" in degenerate  # all but the input
    scales = {n: q.scale for n, q in qm.tensors.items()}
    assert all(np.isfinite(s) and s > 0 for s in scales.values()), scales
    for name, c in qm.convs.items():
        assert np.isfinite(c.weight_scale).all() and (c.weight_scale > 0).all(), name
    black = np.zeros((64, 64, 3), np.uint8)
    for path, write in ((tmp_path / "black.onnx", to_onnx), (tmp_path / "black.tflite", to_tflite)):
        write(qm, path)  # verified against the integer reference before it is moved into place
        logits = Classifier.load(path, threads=1).logits(Classifier.load(path, threads=1).preprocess(black))
        assert logits.shape == (1, 10) and np.isfinite(logits).all()

    with torch.no_grad():  # nothing at all to quantize is an error naming the layer, not a 0 scale
        for _, conv in model.named_convs():
            conv.weight.zero_()
    with pytest.raises(WeightsError, match="conv1: every weight is zero"):
        calibrate_and_quantize(model, items[:1], QuantizeOptions.make(scheme=scheme, equalize=0, method="minmax"))


# ---------------------------------------------------------------- exports killed mid-write


_STALLING_EXPORT = r"""
import os, pathlib, sys, time
from edgesqueeze.quant.params import QuantizedModel

qm, target, fmt = QuantizedModel.load(sys.argv[1]), sys.argv[2], sys.argv[3]

def stall(tmp, data):
    # half the file on disk, then wait to be killed: the moment a crash or power cut can hit
    with open(tmp, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    print("HALF", tmp, len(data), flush=True)
    time.sleep(300)

if fmt == "tflite":
    real = pathlib.Path.write_bytes
    pathlib.Path.write_bytes = lambda self, data: (stall(self, data) if self.name.endswith(".partial")
                                                   else real(self, data))
    from edgesqueeze.export.tflite import to_tflite as export
else:
    import onnx
    onnx.save = lambda model, f, *a, **k: stall(f, model.SerializeToString())
    from edgesqueeze.export.onnx import to_onnx as export
export(qm, target)
print("FINISHED", flush=True)
"""


@pytest.mark.parametrize("previous", [False, True], ids=["new-file", "replacing"])
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_killed_mid_write_leaves_no_partial_file_at_the_target(tiny_files, fmt, previous, tmp_path):
    qm_path, _ = tiny_files["qm"].save(tmp_path / "qm")
    out = tmp_path / "export"
    out.mkdir()
    target = out / f"model.{fmt}"
    old = None
    if previous:  # a good earlier export that must survive
        target.write_bytes(tiny_files[fmt].read_bytes())
        old = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _STALLING_EXPORT, str(qm_path), str(target), fmt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=PROJECT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=120)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"the export never started writing: {proc.stderr.read()[-1500:]}")
    try:
        assert line.startswith("HALF"), line
        _, tmp, size = line.split()
        tmp = Path(tmp)
        assert tmp.parent == out and tmp.stat().st_size == int(size) // 2 > 0  # really mid-write
        assert (target.read_bytes() == old) if previous else not target.exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if previous:
        assert target.read_bytes() == old
        assert Classifier.load(target, threads=1).classify(np.zeros((40, 40, 3), np.uint8))
    else:
        assert not target.exists()
    # what a kill leaves is the hidden temporary beside it, never a file a loader would pick up
    left = sorted(p.name for p in out.iterdir() if p != target)
    assert left == [tmp.name] and tmp.name.startswith(f".{target.name}.") and tmp.name.endswith(".partial")


# ---------------------------------------------------------------- camera soak


_SOAK = r"""
import json, sys
import numpy as np
from edgesqueeze import camera as C
from edgesqueeze.runtime import Classifier

FRAMES, N, K_FAIL, K_NONE, SWITCH = 10_000, 20_000, 7, 11, 1000
SIZES = [(120, 160), (96, 200), (240, 320), (60, 60)]

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (__import__("os").sysconf("SC_PAGE_SIZE") // 1024)

class Flaky(C.FrameSource):
    # fails every K_FAIL-th read, returns None every K_NONE-th, changes resolution every SWITCH reads
    def __init__(self):
        super().__init__()
        self.name, self.live, self.i = "flaky", False, 0
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    def read(self):
        i, self.i = self.i, self.i + 1
        if i >= N:
            raise C.EndOfStream("done")
        if i % K_FAIL == K_FAIL - 1:
            raise OSError("USB hiccup")
        if i % K_NONE == K_NONE - 1:
            return None
        return self.frames[(i // SWITCH) % len(SIZES)].copy()

clf = Classifier.load(sys.argv[1], threads=1)
marks = {}
def on_frame(r):
    if r.frame % 500 == 0:
        marks[r.frame] = rss_kb()
summary = C.run_loop(Flaky(), clf, on_frame=on_frame, threaded=False, max_frames=FRAMES, max_consecutive_bad=10)
after = rss_kb()  # also holds the summary's medians over the 10,000-entry histories
good = bad = i = 0
while good < FRAMES:  # the bad reads before the 10,000th good frame
    is_bad = i % K_FAIL == K_FAIL - 1 or i % K_NONE == K_NONE - 1
    bad, good, i = bad + is_bad, good + (not is_bad), i + 1
print(json.dumps({"summary": summary.to_dict(), "rss_kb": marks, "after_kb": after, "expected_bad": bad}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="measures memory with /proc/self/statm (Linux)")
def test_camera_soak_10000_frames_flaky_source_memory_flat(tiny_files):
    """10,000 frames through the real runtime in a fresh process, from a source whose every
    7th read raises and every 11th is None, and whose resolution changes every 1000 reads.
    Resident memory, sampled every 500 frames in the loop, stays within 5 % of its value at
    frame 1000 (everything warmed up)."""
    r = subprocess.run([sys.executable, "-c", _SOAK, str(tiny_files["tflite"])], capture_output=True, text=True,
                       timeout=400, env=_env(), cwd=PROJECT)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    s, rss = doc["summary"], doc["rss_kb"]
    assert s["stop_reason"] == "max-frames" and s["frames"] == 10_000 and s["dropped"] == 0
    assert s["bad"] == doc["expected_bad"] > 2500
    base = rss["1000"]
    peak = max(v for k, v in rss.items() if int(k) >= 1000)  # every 500 frames to the last
    growth = (peak - base) / base
    print(f"\nsoak: {s['frames']} frames, {s['bad']} bad reads, RSS {base} kB at frame 1000, at most {peak} kB "
          f"later ({100 * growth:+.2f} %), {doc['after_kb']} kB after the summary; {s['fps']} fps")
    assert len(rss) >= 15 and growth < 0.05, rss


@pytest.mark.parametrize("bad", [-0.05, 0.0, np.inf, np.nan])
def test_onnx_quantization_scales_are_checked_before_onnxruntime(tiny_files, tmp_path, bad):
    """onnxruntime runs a QDQ file with a negative or zero scale to wrong but finite logits;
    Classifier.load refuses it, naming the scale (the TFLite byte check does the same)."""
    import onnx
    from onnx import numpy_helper

    from edgesqueeze.errors import ModelFileError
    from edgesqueeze.formats.onnx import check_onnx_scales

    m = onnx.load(tiny_files["onnx"])
    check_onnx_scales(m.SerializeToString())  # the good file passes
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0])
    s = next(t for t in m.graph.initializer if t.name == dq.input[1])
    arr = numpy_helper.to_array(s).copy()
    arr.flat[arr.size // 2] = bad
    s.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), s.name))
    path = tmp_path / "bad-scale.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelFileError, match=rf"{path.name}.*quantization scale '{s.name}' holds .*positive and finite"):
        Classifier.load(path, threads=1)


def test_a_requantization_multiplier_out_of_range_is_refused_before_loading(tiny_files, tmp_path):
    """A conv whose input scale x weight scale / output scale is >= 256 (a scale overwritten
    with a huge positive float): XNNPACK refuses the conv, and LiteRT then aborted the process
    with the whole graph in one delegate partition. check_tflite_bytes refuses it first."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    from edgesqueeze.runtime import ModelFileError

    m = s.ModelT.InitFromPackedBuf(bytearray(tiny_files["tflite"].read_bytes()), 0)
    t = next(t for t in m.subgraphs[0].tensors if t.name == b"fire3.expand1x1.weight")
    t.quantization.scale = np.full(len(t.quantization.scale), 1e36, np.float32)
    b = flatbuffers.Builder(1 << 16)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    bad = tmp_path / "huge-scale.tflite"
    bad.write_bytes(bytes(b.Output()))
    with pytest.raises(ModelFileError, match=r"requantization multiplier .* outside \[2\^-32, 256\)") as e:
        Classifier.load(bad, threads=1)
    assert bad.name in str(e.value) and "re-export" in str(e.value)
