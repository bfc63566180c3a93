"""The board runtime (`edgesqueeze.runtime.Classifier`) and the `classify` / `bench` / `eval
--models` commands, on tiny SqueezeNets exported in the test (ONNX x86 + ARM targets, TFLite,
FP32 files), plus corrupt files, missing runtimes and a torch-free subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnx")  # the writers (the runtime itself never imports it)
cv2 = pytest.importorskip("cv2")

from edgesqueeze.arch import Preprocess  # noqa: E402
from edgesqueeze.cli import main  # noqa: E402
from edgesqueeze.data import to_uint8_input  # noqa: E402
from edgesqueeze.errors import DataError, EdgeSqueezeError, OptionError  # noqa: E402
from edgesqueeze.graph import OUTPUT  # noqa: E402
from edgesqueeze.formats.metadata import ModelMetadata  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.quant.reference import run_int8  # noqa: E402
from edgesqueeze.runtime import (  # noqa: E402
    Backend,
    Class,
    Classifier,
    ModelFileError,
    get_classes,
    get_scores,
    log_probabilities,
)
from edgesqueeze.export.ops import max_score_diff  # noqa: E402
from test_quant import float_forward, minmax_ranges, tiny_arch, tiny_params  # noqa: E402

LABELS = tuple(f"critter{i} sp." for i in range(10))
CALIBRATION = {"method": "minmax", "images": 6, "split": "random test images"}
INT8_FILES = ("int8-x86.onnx", "int8-arm.onnx", "int8.tflite")
ALL_FILES = INT8_FILES + ("fp32.onnx", "fp32.tflite")
RGB_PRE = Preprocess(style="torchvision", channel_order="RGB", resize=40, crop=35,
                     mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def assert_logits_equal(got, ref, kind="logits"):
    """Equal to float32 rounding (the runtimes sum the head in another order than the reference):
    1e-5 relative, and 1e-6 of the largest logit for values near zero. kind "log-probabilities"
    (a .tflite Classifier's `logits`): against the reference's log-softmax, to 1e-5."""
    if kind == "log-probabilities":
        np.testing.assert_allclose(got, log_probabilities(ref), rtol=0, atol=1e-5)
        return
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(arch, params, QuantizedModel, {name: path}) — every file written once for the module."""
    from edgesqueeze.export.onnx import to_onnx, to_onnx_fp32
    from edgesqueeze.export.tflite import to_tflite, to_tflite_fp32

    arch = tiny_arch()
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=LABELS, calibration=CALIBRATION)
    d = tmp_path_factory.mktemp("runtime")
    meta = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=LABELS, scheme="fp32")
    files = {name: d / name for name in ALL_FILES + ("fp32-rgb.onnx",)}
    to_onnx(qm, files["int8-x86.onnx"], target="x86")
    to_onnx(qm, files["int8-arm.onnx"], target="arm")
    to_tflite(qm, files["int8.tflite"])
    to_onnx_fp32(arch, params, files["fp32.onnx"], metadata=meta)
    to_tflite_fp32(arch, params, files["fp32.tflite"], metadata=meta)
    rgb = replace(arch, preprocess=RGB_PRE)
    to_onnx_fp32(rgb, params, files["fp32-rgb.onnx"], metadata=replace(meta, preprocess=RGB_PRE))
    return arch, params, qm, files


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(7).integers(0, 256, (5, 35, 35, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def frames():
    """BGR frames of sizes other than the model's (smooth, so resizing matters)."""
    rng = np.random.default_rng(3)
    out = []
    for h, w in ((48, 64), (35, 35), (90, 50)):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        out.append(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


@pytest.fixture(scope="module")
def clfs(tiny):
    return {name: Classifier.load(tiny[3][name], threads=1) for name in ALL_FILES}


# ---------------------------------------------------------------- loading and metadata


@pytest.mark.parametrize("name", ALL_FILES)
def test_load_picks_backend_and_reads_metadata(clfs, name):
    clf = clfs[name]
    assert clf.backend is (Backend.LITERT if name.endswith(".tflite") else Backend.ONNXRUNTIME)
    assert clf.labels == LABELS and clf.input_size == 35 and clf.num_classes == 10
    assert clf.metadata.channel_order == "BGR"
    assert clf.metadata.scheme == ("fp32" if name.startswith("fp32") else "affine")
    if name.startswith("int8"):
        assert clf.metadata.calibration["method"] == "minmax"
    assert clf.threads == 1 and clf.path.name == name


def test_arm_onnx_file_gets_the_integer_session_config(clfs):
    assert clfs["int8-arm.onnx"].info["target"] == "arm"
    assert clfs["int8-arm.onnx"].info["session_config"] == {"session.qdqisint8allowed": "1"}
    assert clfs["int8-x86.onnx"].info["session_config"] == {}
    # the session itself was configured (onnxruntime then runs s8s8 QLinearConv on x86 too)
    opts = clfs["int8-arm.onnx"]._session.get_session_options()
    assert opts.get_session_config_entry("session.qdqisint8allowed") == "1"
    assert opts.intra_op_num_threads == 1


def test_content_decides_over_suffix(tiny, tmp_path, pixels):
    """A TFLite file named .onnx (or with no suffix) still opens in LiteRT."""
    for name in ("model.onnx", "model"):
        p = tmp_path / name
        p.write_bytes(tiny[3]["int8.tflite"].read_bytes())
        clf = Classifier.load(p, threads=1)
        assert clf.backend is Backend.LITERT
        assert_logits_equal(clf.logits(pixels[:1]), run_int8(tiny[2], pixels[:1]).logits, clf.logits_kind)
    p = tmp_path / "model.bin"
    p.write_bytes(tiny[3]["int8-x86.onnx"].read_bytes())
    assert Classifier.load(p, threads=1).backend is Backend.ONNXRUNTIME


def test_threads_default_to_every_core(tiny, monkeypatch):
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert Classifier.load(tiny[3]["int8.tflite"]).threads == usable
    assert Classifier.load(tiny[3]["int8-x86.onnx"]).threads == usable
    if hasattr(os, "sched_getaffinity"):  # a process allowed 3 cores (taskset, a container) uses 3
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
        assert Classifier.load(tiny[3]["int8.tflite"]).threads == 3
        monkeypatch.delattr(os, "sched_getaffinity")  # no affinity API (macOS): every core
    assert Classifier.load(tiny[3]["int8.tflite"]).threads == (os.cpu_count() or 1)
    assert Classifier.load(tiny[3]["int8.tflite"], threads=2).threads == 2
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(OptionError, match="threads"):
            Classifier.load(tiny[3]["int8.tflite"], threads=bad)


def test_backend_option(tiny):
    assert Classifier.load(tiny[3]["int8.tflite"], threads=1, backend="ai-edge-litert").backend is Backend.LITERT
    assert Classifier.load(tiny[3]["int8-x86.onnx"], threads=1, backend=Backend.ONNXRUNTIME).backend \
        is Backend.ONNXRUNTIME
    with pytest.raises(OptionError, match="TFLite file"):
        Classifier.load(tiny[3]["int8.tflite"], backend="onnxruntime")
    with pytest.raises(OptionError, match="ONNX file"):
        Classifier.load(tiny[3]["int8-x86.onnx"], backend="ai-edge-litert")
    with pytest.raises(OptionError, match="not one of"):
        Classifier.load(tiny[3]["int8.tflite"], backend="tensorflow")


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("name", INT8_FILES)
def test_int8_logits_equal_the_integer_reference(tiny, clfs, pixels, name):
    ref = run_int8(tiny[2], pixels)
    clf = clfs[name]
    assert clf.logits_kind == ("log-probabilities" if name.endswith(".tflite") else "logits")
    got = clf.logits(pixels)
    assert got.dtype == np.float32 and got.shape == (5, 10)
    assert_logits_equal(got, ref.logits, clf.logits_kind)
    one = clf.logits(pixels[2])  # (S, S, 3): one image
    assert one.shape == (1, 10)
    assert_logits_equal(one, ref.logits[2:3], clf.logits_kind)
    assert clf.last_inference_ms > 0
    scores = clf.scores(pixels)
    assert scores.dtype == np.float32 and scores.shape == (5, 10)
    hw = run_int8(tiny[2], pixels[:1], keep=True).tensors["conv10"].shape[1] ** 2
    assert np.abs(scores - ref.probabilities).max() <= max_score_diff(tiny[2].tensors["conv10"].scale, hw)
    assert (scores.argmax(1) == ref.logits.argmax(1)).all()


@pytest.mark.parametrize("name", ["fp32.onnx", "fp32.tflite"])
def test_fp32_logits_equal_the_float_model(tiny, clfs, pixels, name):
    arch, params, _, _ = tiny
    ref = float_forward(arch, params, pixels)[OUTPUT]
    clf = clfs[name]
    if clf.logits_kind == "log-probabilities":
        ref = log_probabilities(ref)
    np.testing.assert_allclose(clf.logits(pixels), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    np.testing.assert_allclose(clf.scores(pixels), get_scores(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ALL_FILES)
def test_scores_are_the_files_probabilities_with_no_second_softmax(tiny, clfs, pixels, name):
    """`scores` and `classify` give the file's "probability" output as it is."""
    clf = clfs[name]
    assert clf.outputs == (("probability",) if name.endswith(".tflite") else ("probability", "logits"))
    if name.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(tiny[3][name]), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], pixels[:1])
        it.invoke()
        raw = it.get_tensor(it.get_output_details()[0]["index"])
    else:  # the Classifier's own session (an ARM file's integer session config)
        raw = clf._session.run(["probability"], {"pixels": pixels[:1]})[0]
    got = clf.scores(pixels[:1])
    np.testing.assert_allclose(got, raw, rtol=1e-6, atol=1e-9)
    assert not np.allclose(got, get_scores(raw), atol=1e-4)  # a second softmax would flatten them
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_log_probabilities_make_logits_and_log_probabilities_comparable(clfs, pixels):
    x = np.array([[2.0, -1.0, 0.5], [1000.0, 999.0, 0.0]])
    lp = log_probabilities(x)
    assert lp.dtype == np.float32 and np.isfinite(lp).all()
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(log_probabilities(lp), lp, atol=1e-6)  # idempotent
    np.testing.assert_allclose(lp[0] - lp[0, 0], x[0] - x[0, 0], atol=1e-6)  # differences kept
    onnx_lp = log_probabilities(clfs["int8-x86.onnx"].logits(pixels))
    tfl_lp = log_probabilities(clfs["int8.tflite"].logits(pixels))
    np.testing.assert_allclose(onnx_lp, tfl_lp, atol=1e-4)


def test_a_file_with_logits_only_gets_softmax_scores(tiny, tmp_path, pixels):
    """A file whose one output is logits (another name, or "logits" alone): scores are their
    softmax, logits as they are."""
    import onnx

    model = onnx.load(tiny[3]["int8-x86.onnx"])
    keep = [n for n in model.graph.node if n.op_type != "Softmax"]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    outs = [o for o in model.graph.output if o.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(outs)
    onnx.save(model, tmp_path / "logits-only.onnx")
    clf = Classifier.load(tmp_path / "logits-only.onnx", threads=1)
    assert clf.outputs == ("logits",) and clf.logits_kind == "logits"
    ref = run_int8(tiny[2], pixels).logits
    assert_logits_equal(clf.logits(pixels), ref)
    np.testing.assert_allclose(clf.scores(pixels), get_scores(ref), atol=1e-5)


def test_get_scores_is_a_stable_softmax():
    s = get_scores(np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]]))
    assert s.dtype == np.float32 and np.isfinite(s).all()
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(s[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(s[1], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(get_scores(np.array([3.0, 1.0])), get_scores(np.array([[3.0, 1.0]]))[0])


def test_get_classes_ties_go_to_the_lower_index_and_unlabelled_classes_get_their_index():
    classes = get_classes(np.array([0.1, 0.3, 0.3, 0.2], np.float32), ("a", "b", "c"), top_k=3)
    assert [c.index for c in classes] == [1, 2, 3]
    assert [c.label for c in classes] == ["b", "c", "3"]
    assert all(isinstance(c, Class) for c in classes) and classes[0].score == pytest.approx(0.3)
    assert len(get_classes(np.ones(4), (), top_k=10)) == 4
    with pytest.raises(OptionError):
        get_classes(np.ones(4), (), top_k=0)


def test_get_classes_is_metrics_top_k_on_rows_with_ties_nan_and_inf():
    from edgesqueeze.metrics import top_k

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 1001))
        row = (rng.integers(0, 40, n) / 7).astype((np.float32, np.float64, np.float16)[trial % 3])
        if trial % 5 == 0:
            row[rng.random(n) < 0.05] = (np.nan, np.inf, -np.inf)[trial % 3]
        k = int(rng.integers(1, 12))
        got = get_classes(row, (), top_k=k)
        want = top_k(row, min(k, n))[0]
        assert [c.index for c in got] == want.tolist()
        assert [c.score for c in got] == [float(row[i]) for i in want]


@pytest.mark.parametrize("name", ["int8-x86.onnx", "int8.tflite", "fp32.tflite"])
def test_classify_returns_sorted_top_k_probabilities(clfs, frames, name):
    clf = clfs[name]
    res = clf.classify(frames[0], top_k=4)
    assert len(res) == 4 and all(isinstance(c, Class) for c in res)
    scores = [c.score for c in res]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert len({c.index for c in res}) == 4 and all(c.label == LABELS[c.index] for c in res)
    expect = clf.scores(clf.preprocess(frames[0]))[0]
    assert res[0].index == int(np.argmax(expect)) and res[0].score == pytest.approx(float(expect.max()), rel=1e-6)
    full = clf.classify(frames[0], top_k=50)  # more than there are classes
    assert len(full) == 10 and sum(c.score for c in full) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", ["int8-x86.onnx", "int8-arm.onnx", "int8.tflite"])
def test_classify_batch_equals_classify_per_frame(clfs, frames, name):
    clf = clfs[name]
    batch = clf.classify_batch(frames, top_k=3)
    assert len(batch) == len(frames)
    for frame, got in zip(frames, batch):
        single = clf.classify(frame, top_k=3)
        assert [c.index for c in got] == [c.index for c in single]
        np.testing.assert_allclose([c.score for c in got], [c.score for c in single], rtol=1e-5)
    assert clf.classify_batch([], top_k=3) == []


def test_preprocess_is_the_files_own_contract(tiny, clfs, frames):
    arch = tiny[0]
    for frame in frames:
        got = clfs["int8.tflite"].preprocess(frame)
        assert got.dtype == np.uint8 and got.shape == (35, 35, 3)
        np.testing.assert_array_equal(got, to_uint8_input(frame, arch.preprocess))
    rgb = Classifier.load(tiny[3]["fp32-rgb.onnx"], threads=1)
    assert rgb.metadata.channel_order == "RGB"
    got = rgb.preprocess(frames[0])
    np.testing.assert_array_equal(got, to_uint8_input(frames[0], RGB_PRE))
    # torchvision style on a 48x64 frame: short side 40 -> 40x53, crop 35; channels reversed
    bgr = cv2.resize(frames[0], (53, 40), interpolation=cv2.INTER_LINEAR_EXACT)[2:37, 9:44]
    np.testing.assert_array_equal(got, bgr[:, :, ::-1])


def test_grey_bgra_and_16_bit_frames(clfs, frames):
    clf = clfs["int8.tflite"]
    grey = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    as_bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    np.testing.assert_array_equal(clf.preprocess(grey), clf.preprocess(as_bgr))
    np.testing.assert_array_equal(clf.preprocess(grey[:, :, None]), clf.preprocess(as_bgr))
    bgra = np.dstack([frames[0], np.full(frames[0].shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(clf.preprocess(bgra), clf.preprocess(frames[0]))
    wide = frames[0].astype(np.uint16) << 8 | 0xAB
    np.testing.assert_array_equal(clf.preprocess(wide), clf.preprocess(frames[0]))
    top = clf.classify(grey, top_k=2)
    assert [c.index for c in top] == [c.index for c in clf.classify(as_bgr, top_k=2)]


@pytest.mark.parametrize("bad, words", [
    (None, "None"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((10, 0), np.uint8), "empty"),
    (np.zeros((20, 20, 3), np.float32), "float32"),
    (np.zeros((20, 20, 3), np.int64), "int64"),
    (np.zeros((20, 20, 3), bool), "bool"),
    (np.zeros((20, 20, 2), np.uint8), "shape"),
    (np.zeros((1, 20, 20, 3), np.uint8), "shape"),
    (np.zeros(20, np.uint8), "shape"),
    ([[1, 2], [3, 4]], "numpy"),
    ("frame.jpg", "numpy"),
], ids=["none", "empty3", "empty2", "float", "int64", "bool", "2ch", "4d", "1d", "list", "str"])
@pytest.mark.parametrize("name", ["int8-x86.onnx", "int8.tflite"])
def test_bad_frames_raise_data_error_and_the_classifier_goes_on(clfs, frames, bad, words, name):
    clf = clfs[name]
    with pytest.raises(DataError, match=words):
        clf.classify(bad)
    assert len(clf.classify(frames[1], top_k=1)) == 1  # still usable


@pytest.mark.parametrize("name", ["int8-x86.onnx", "int8.tflite"])
def test_bad_pixels_and_batches_raise_data_error(clfs, frames, pixels, name):
    clf = clfs[name]
    for bad in (pixels.astype(np.float32), pixels[:, :34], pixels[:0], pixels[..., :2], None, pixels.tolist()):
        with pytest.raises(DataError, match="uint8"):
            clf.logits(bad)
    with pytest.raises(DataError, match="frame 1"):
        clf.classify_batch([frames[0], None])
    with pytest.raises(DataError):
        clf.classify_batch(None)
    with pytest.raises(DataError, match="list of frames"):
        clf.classify_batch(frames[0])


# ---------------------------------------------------------------- bad files


def _corrupt_files(tiny, d: Path, suffix: str, source: str) -> dict[str, Path]:
    good = tiny[3][source].read_bytes()
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    flipped = bytearray(good)
    for i in range(0, 64):
        flipped[i] ^= 0xFF
    cases = {
        "empty": b"",
        "half": good[: len(good) // 2],
        "head": good[:100],
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "png": png,
        "flipped": bytes(flipped),
    }
    if suffix == ".tflite":  # the TFL3 identifier present, everything after it garbage
        cases["tfl3-random"] = good[:8] + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    out = {}
    for k, data in cases.items():
        p = d / f"{k}{suffix}"
        p.write_bytes(data)
        out[k] = p
    return out


def test_corrupt_onnx_files_raise_model_file_error(tiny, tmp_path):
    for kind, p in _corrupt_files(tiny, tmp_path, ".onnx", "int8-x86.onnx").items():
        with pytest.raises(ModelFileError) as e:
            Classifier.load(p)
        msg = str(e.value)
        assert p.name in msg, kind
        assert ("re-export" in msg or "copy" in msg), kind
        assert isinstance(e.value, EdgeSqueezeError)
    with pytest.raises(ModelFileError, match="PNG image"):
        Classifier.load(tmp_path / "png.onnx")
    with pytest.raises(ModelFileError, match="empty"):
        Classifier.load(tmp_path / "empty.onnx")
    with pytest.raises(ModelFileError, match="missing.onnx: not found"):
        Classifier.load(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="folder"):
        Classifier.load(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ModelFileError, match="unknown model format"):
        Classifier.load(tmp_path / "weights.bin")


def test_corrupt_tflite_files_fail_cleanly_in_a_subprocess(tiny, tmp_path):
    """LiteRT can abort the process on a malformed flatbuffer: each load runs in a child that
    must exit normally, printing the ModelFileError for every corrupt file."""
    files = _corrupt_files(tiny, tmp_path, ".tflite", "int8.tflite")
    # byte flips inside the flatbuffer's tables (not the identifier): any outcome but an abort
    good = bytearray(tiny[3]["int8.tflite"].read_bytes())
    rng = np.random.default_rng(5)
    fuzzed = []
    for k in range(12):
        b = bytearray(good)
        for i in rng.integers(8, min(len(b), 4096), 3):
            b[int(i)] = int(rng.integers(0, 256))
        p = tmp_path / f"fuzz{k}.tflite"
        p.write_bytes(bytes(b))
        fuzzed.append(p)
    semantic = _semantic_corruptions(tiny[3]["int8.tflite"], tmp_path)
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from edgesqueeze.runtime import Classifier, ModelFileError
        for p in sys.argv[1:]:
            try:
                clf = Classifier.load(p, threads=1)
                clf.classify(np.zeros((40, 40, 3), np.uint8))
                print("LOADED", p, flush=True)
            except ModelFileError as e:
                print("ERROR", p, "::", e, flush=True)
        print("DONE", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code, *map(str, files.values()), *map(str, fuzzed),
                        *map(str, semantic.values())], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"the child died (rc {r.returncode}): {r.stderr[-2000:]}"
    lines = r.stdout.splitlines()
    assert lines[-1] == "DONE"
    for kind, p in files.items():
        line = next(ln for ln in lines if ln.split(" ")[1] == str(p))
        assert line.startswith("ERROR") and p.name in line.split("::", 1)[1], (kind, line)
    assert "PNG image" in next(ln for ln in lines if "png.tflite" in ln)
    assert "empty" in next(ln for ln in lines if "empty.tflite" in ln)
    assert sum(ln.startswith(("LOADED", "ERROR")) for ln in lines) == len(files) + len(fuzzed) + len(semantic)
    # well-formed flatbuffers that point outside themselves: caught by check_tflite_bytes, before LiteRT
    for kind, words in (("op-input", "operator 3: tensor 100000 out of range"),
                        ("tensor-buffer", "buffer 100000 out of range"), ("opcode", "opcode index 999 out of range"),
                        ("output", "output tensor 77777 out of range"), ("data-size", "bytes of data"),
                        ("zero-scale", "not positive and finite")):
        line = next(ln for ln in lines if ln.split(" ")[1] == str(semantic[kind]))
        assert line.startswith("ERROR") and words in line, (kind, line)


def _semantic_corruptions(src: Path, d: Path) -> dict[str, Path]:
    """Valid flatbuffers (re-packed with the schema's object API) with one index, size or
    scale that is wrong."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    def first_per_channel(m):
        return next(t for t in m.subgraphs[0].tensors if t.quantization is not None
                    and t.quantization.scale is not None and len(t.quantization.scale) > 1)

    def grow_constant(m):
        t = next(t for t in m.subgraphs[0].tensors if t.buffer and m.buffers[t.buffer].data is not None)
        t.shape[0] *= 4

    edits = {
        "op-input": lambda m: m.subgraphs[0].operators[3].inputs.__setitem__(0, 100000),
        "tensor-buffer": lambda m: setattr(m.subgraphs[0].tensors[5], "buffer", 100000),
        "opcode": lambda m: setattr(m.subgraphs[0].operators[2], "opcodeIndex", 999),
        "output": lambda m: m.subgraphs[0].outputs.__setitem__(0, 77777),
        "data-size": grow_constant,
        "zero-scale": lambda m: first_per_channel(m).quantization.scale.__setitem__(0, 0.0),
    }
    out = {}
    for kind, edit in edits.items():
        m = S.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
        edit(m)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        out[kind] = d / f"sem-{kind}.tflite"
        out[kind].write_bytes(bytes(b.Output()))
    return out


def test_a_model_without_edgesqueeze_metadata(tiny, tmp_path):
    import onnx

    m = onnx.load(tiny[3]["int8-x86.onnx"])
    del m.metadata_props[:]
    onnx.save(m, tmp_path / "plain.onnx")
    with pytest.raises(ModelFileError, match="no 'edgesqueeze' metadata"):
        Classifier.load(tmp_path / "plain.onnx")
    data = tiny[3]["int8.tflite"].read_bytes().replace(b"edgesqueeze", b"xdgesqueeze")
    (tmp_path / "plain.tflite").write_bytes(data)
    with pytest.raises(ModelFileError, match="no 'edgesqueeze' metadata"):
        Classifier.load(tmp_path / "plain.tflite")


# ---------------------------------------------------------------- missing runtimes


def test_missing_onnxruntime_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'edgesqueeze\[onnx\]'"):
        Classifier.load(tiny[3]["int8-x86.onnx"])


def test_missing_tflite_runtimes_name_the_extra(tiny, monkeypatch):
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError) as e:
        Classifier.load(tiny[3]["int8.tflite"])
    msg = str(e.value)  # both ways out: LiteRT, or the legacy runtime
    assert "pip install 'edgesqueeze[tflite]'" in msg and "pip install 'edgesqueeze[legacy]'" in msg
    assert "tried ai-edge-litert, tflite-runtime" in msg  # the fallback order
    with pytest.raises(ImportError, match=r"tflite_runtime .*pip install 'edgesqueeze\[legacy\]'"):
        Classifier.load(tiny[3]["int8.tflite"], backend="tflite-runtime")
    with pytest.raises(ImportError, match=r"pip install 'edgesqueeze\[tflite\]'"):
        Classifier.load(tiny[3]["int8.tflite"], backend="ai-edge-litert")


def test_tflite_fallback_order_is_litert_first(tiny, monkeypatch):
    from edgesqueeze.runtime import TFLITE_FALLBACK_ORDER

    assert TFLITE_FALLBACK_ORDER == (Backend.LITERT, Backend.TFLITE_RUNTIME)
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = None  # would fail if it were used: LiteRT is installed and comes first
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert Classifier.load(tiny[3]["int8.tflite"], threads=1).backend is Backend.LITERT


def test_installed_but_broken_tflite_runtime_is_named(tiny, monkeypatch, tmp_path):
    """tflite-runtime under numpy 2 fails inside its own import: the error says so, not "not
    installed"."""
    pkg = tmp_path / "tflite_runtime"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "interpreter.py").write_text("raise ImportError('numpy.core.multiarray failed to import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError) as e:
        Classifier.load(tiny[3]["int8.tflite"])
    msg = str(e.value)
    assert "tflite-runtime is installed but does not import (numpy.core.multiarray failed to import)" in msg
    assert "edgesqueeze[legacy]" in msg and "edgesqueeze[tflite]" in msg


def test_legacy_extra_pins_what_tflite_runtime_needs():
    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    legacy = {r.split("=")[0].split("<")[0].split(">")[0]: r for r in doc["project"]["optional-dependencies"]["legacy"]}
    assert legacy["tflite-runtime"] == "tflite-runtime==2.14.0"  # the last release
    assert "<2" in legacy["numpy"]  # its C extension is built against numpy 1.x
    assert "<4.12" in legacy["opencv-python-headless"]  # OpenCV 4.12+ requires numpy >= 2
    assert not any(name in legacy for name in ("torch", "ai-edge-litert", "onnxruntime"))


def test_falls_back_to_tflite_runtime_without_litert(tiny, monkeypatch, pixels):
    from ai_edge_litert.interpreter import Interpreter

    fake = types.ModuleType("tflite_runtime")
    fake_interp = types.ModuleType("tflite_runtime.interpreter")
    fake_interp.Interpreter = Interpreter  # the same API as tflite-runtime's
    fake.interpreter = fake_interp
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake_interp)
    clf = Classifier.load(tiny[3]["int8.tflite"], threads=1)
    assert clf.backend is Backend.TFLITE_RUNTIME
    assert_logits_equal(clf.logits(pixels[:2]), run_int8(tiny[2], pixels[:2]).logits, clf.logits_kind)


def test_cli_reports_a_missing_runtime_in_one_line(tiny, tmp_path, monkeypatch, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["classify", str(tiny[3]["int8-x86.onnx"]), str(img)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'edgesqueeze[onnx]'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- no torch on the board


def test_the_runtime_never_imports_torch_or_the_writers(tiny):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from edgesqueeze.runtime import Classifier
        frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for p in sys.argv[1:]:
            res = Classifier.load(p, threads=1).classify(frame, top_k=2)
            print("TOP", p, res[0].label)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "tensorflow")
                       or m in ("edgesqueeze.export.onnx", "edgesqueeze.export.onnx_graph",
                                "edgesqueeze.export.onnx_verify", "edgesqueeze.export.tflite",
                                "edgesqueeze.export.tflite_graph", "edgesqueeze.export.tflite_flatbuffer",
                                "edgesqueeze.export.tflite_verify", "edgesqueeze.quant"))
        print("HEAVY", ",".join(heavy))
    """)
    files = [tiny[3]["int8.tflite"], tiny[3]["int8-arm.onnx"]]
    r = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(ln.startswith("TOP") and "critter" in ln for ln in r.stdout.splitlines()) == 2
    heavy = next(ln for ln in r.stdout.splitlines() if ln.startswith("HEAVY"))
    assert heavy == "HEAVY ", f"imported on the board: {heavy}"


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def images(tmp_path_factory, frames):
    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, f in enumerate(frames):
        p = d / f"frame{i}.png"
        assert cv2.imwrite(str(p), f)
        paths.append(p)
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    return paths, d / "broken.jpg"


@pytest.mark.parametrize("name", ["int8.tflite", "int8-x86.onnx"])
def test_cli_classify_prints_top_k_labels(tiny, clfs, images, name, capsys):
    good, _ = images
    assert main(["classify", str(tiny[3][name]), *map(str, good), "--top-k", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for p, frame in zip(good, (cv2.imread(str(q)) for q in good)):
        assert str(p) in out
        best = clfs[name].classify(frame, top_k=1)[0]
        assert best.label in out and f"{100 * best.score:6.2f} %" in out
    assert out.count("critter") == 3 * len(good)


def test_cli_classify_goes_on_after_a_bad_image(tiny, images, capsys):
    good, broken = images
    rc = main(["classify", str(tiny[3]["int8.tflite"]), str(broken), str(good[0]), str(broken.parent / "missing.png")])
    cap = capsys.readouterr()
    assert rc == 2  # every user error is exit code 2; the good image still printed
    assert "broken.jpg" in cap.err and "missing.png: not found" in cap.err and "Traceback" not in cap.err
    assert str(good[0]) in cap.out and "critter" in cap.out


def test_cli_classify_json(tiny, images, capsys):
    good, broken = images
    rc = main(["classify", str(tiny[3]["int8-arm.onnx"]), str(good[0]), str(broken), "--json", "--top-k", "2"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 2 and doc["backend"] == "onnxruntime"
    ok, bad = doc["results"]
    assert len(ok["top"]) == 2 and ok["top"][0]["label"] in LABELS and ok["top"][0]["score"] >= ok["top"][1]["score"]
    assert "broken.jpg" in bad["error"]


def test_cli_classify_bad_model_is_one_line_exit_2(tiny, images, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 50)
    assert main(["classify", str(bad), str(images[0][0])]) == 2
    err = capsys.readouterr().err
    assert "bad.tflite" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_bench_prints_a_table(tiny, capsys, tmp_path):
    files = [str(tiny[3]["int8.tflite"]), str(tiny[3]["int8-x86.onnx"])]
    report = tmp_path / "bench.json"
    assert main(["bench", *files, "--runs", "5", "--warmup", "1", "--threads", "1", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "p90 ms" in out and "FPS" in out and "peak RSS" in out
    assert "int8.tflite" in out and "int8-x86.onnx" in out and "CPU:" in out
    from edgesqueeze.sysinfo import cpu_model, usable_cores

    assert f"CPU: {cpu_model()} " in out and f"{usable_cores()} usable by this process" in out
    assert "threads: 1" in out  # the thread count each row ran with
    assert "ai-edge-litert" in out and "onnxruntime" in out
    doc = json.loads(report.read_text())
    assert [r["threads"] for r in doc["results"]] == [1, 1]
    for r in doc["results"]:
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["fps"] == pytest.approx(1000 / r["median_ms"])
        assert r["bytes"] == Path(r["file"]).stat().st_size
        assert r["peak_rss_kb"] and 10_000 < r["peak_rss_kb"] < 4_000_000


def test_cli_bench_default_threads_are_one_and_every_usable_core(tiny, capsys, tmp_path, monkeypatch):
    import edgesqueeze.cli.classify as cli

    monkeypatch.setattr(cli, "usable_cores", lambda: 3)
    report = tmp_path / "bench.json"
    assert main(["bench", str(tiny[3]["int8.tflite"]), "--runs", "2", "--warmup", "0", "--no-rss",
                 "--report", str(report)]) == 0
    assert "threads: 1, 3" in capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert [r["threads"] for r in doc["results"]] == [1, 3] and doc["usable_cores"] == 3


def test_cli_bench_rejects_bad_options(tiny, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", str(tiny[3]["int8.tflite"]), "--runs", "0"])
    assert e.value.code == 2
    assert main(["bench", str(tiny[3]["int8.tflite"]) + ".missing", "--runs", "1", "--no-rss"]) == 2
    assert ".missing: not found" in capsys.readouterr().err


# ---------------------------------------------------------------- eval --models on real data


@pytest.mark.shared
def test_cli_eval_models_on_real_images(dc_quantized, eval_pixels, shared, tmp_path, capsys):
    """The real Deep-Compression INT8 exported to both formats, evaluated through Classifier
    against FP32 on the same evaluation-split images."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    px, _ = eval_pixels
    tfl = tmp_path / "dc-int8.tflite"
    onx = tmp_path / "dc-int8.onnx"
    to_tflite(dc_quantized, tfl, verify_images=px[:2])
    to_onnx(dc_quantized, onx, verify_images=px[:2])
    report = tmp_path / "eval.json"
    rc = main(["eval", "--split", "eval", "--limit", "8", "--quiet", "--models", str(tfl), str(onx),
               "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0 and "dc-int8.tflite" in out and "dc-int8.onnx" in out
    doc = json.loads(report.read_text())
    fp, a, b = doc["results"]
    assert fp["name"] == "fp32" and a["file"] == str(tfl) and b["file"] == str(onx)
    assert a["backend"] == "ai-edge-litert" and b["backend"] == "onnxruntime"
    for r in (a, b):
        assert r["images"] == 8 and r["top1_agreement"] >= 75.0
        assert r["drop_top1_pp"] == pytest.approx(fp["top1"] - r["top1"])
        # like with like: the .tflite's log-probabilities against the FP32 log-probabilities
        # (against raw logits they would differ by each image's log-sum-exp: a few dB at best)
        assert r["logit_sqnr_db"] > 15
    # both files run the same integer model: the same top-1 on these images (the reference's)
    ref = run_int8(dc_quantized, px[:8]).logits.argmax(1)
    got = Classifier.load(tfl).logits(px[:8]).argmax(1)
    assert (got == ref).all()
    assert a["top1"] == b["top1"]
