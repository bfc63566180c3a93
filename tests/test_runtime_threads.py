"""One `Classifier` shared by several threads (a web app's request threads): every answer equal
to the single-threaded one, no errors, `last_inference_ms` per thread; and a runtime failure
after a model has run is an InferenceError, not "the file is corrupt"."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnx")  # the writers
cv2 = pytest.importorskip("cv2")

from conftest import _shared  # noqa: E402
from edgesqueeze.errors import DataError, InferenceError  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.runtime import Classifier, ModelFileError  # noqa: E402
from test_quant import minmax_ranges, tiny_arch, tiny_params  # noqa: E402

THREADS = 4
CALLS = 60  # per thread, each a logits call and a classify call
LABELS = tuple(f"thing {i}" for i in range(10))
FILES = ("int8.tflite", "int8-arm.onnx")  # the ARM target: integer kernels on every CPU


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path}: a tiny INT8 SqueezeNet (10 classes, 35x35) exported to TFLite and ONNX."""
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    arch = tiny_arch()
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=LABELS,
                        calibration={"method": "minmax", "images": 6})
    d = tmp_path_factory.mktemp("threads")
    to_tflite(qm, d / "int8.tflite")
    to_onnx(qm, d / "int8-arm.onnx", target="arm")
    return {name: d / name for name in FILES}


@pytest.fixture(scope="module")
def frames():
    """8 BGR photos: the shared ImageNet sample's first 8 when it is there, else smooth
    synthetic frames of several sizes."""
    from edgesqueeze.data import load_image, read_labels_csv

    shared = _shared()
    if shared is not None:
        return [load_image(i.path) for i in read_labels_csv(shared / "imagenet" / "sample_labels.csv")[:8]]
    rng = np.random.default_rng(3)
    return [cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (40 + 7 * i, 60 - 3 * i),
                       interpolation=cv2.INTER_LINEAR) for i in range(8)]


def _run_threads(worker) -> None:
    """`worker(t)` in THREADS threads released together (a barrier), joined."""
    start = threading.Barrier(THREADS)

    def run(t):
        start.wait()
        worker(t)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"


@pytest.mark.parametrize("name", FILES)
def test_one_classifier_shared_by_4_threads_gives_the_single_threaded_answers(files, frames, name):
    clf = Classifier.load(files[name], threads=1)
    pixels = [clf.preprocess(f) for f in frames]
    ref_logits = [clf.logits(p) for p in pixels]  # single-threaded, same classifier
    ref_top1 = [clf.classify(f, top_k=1)[0].index for f in frames]
    assert len(set(ref_top1)) > 1 or len({r.tobytes() for r in ref_logits}) == len(frames)  # images differ

    errors: list[str] = []
    wrong: list[str] = []
    calls = [0] * THREADS
    times: list[list[float]] = [[] for _ in range(THREADS)]

    def worker(t: int) -> None:
        for k in range(CALLS):
            i = (t + 3 * k) % len(frames)  # each thread its own image order
            try:
                got = clf.logits(pixels[i])
                times[t].append(clf.last_inference_ms)
                top1 = clf.classify(frames[i], top_k=1)[0].index
                times[t].append(clf.last_inference_ms)
            except Exception as e:  # noqa: BLE001 - every failure is counted, whatever its type
                errors.append(f"thread {t} call {k}: {type(e).__name__}: {e}")
                continue
            calls[t] += 2
            if not np.array_equal(got, ref_logits[i]):
                wrong.append(f"thread {t} image {i}: logits {got[0][:3]} != {ref_logits[i][0][:3]}")
            if top1 != ref_top1[i]:
                wrong.append(f"thread {t} image {i}: top-1 {top1} != {ref_top1[i]}")

    _run_threads(worker)
    assert errors == [], f"{len(errors)} errors, first: {errors[0]}"
    assert wrong == [], f"{len(wrong)} wrong answers, first: {wrong[0]}"
    assert calls == [2 * CALLS] * THREADS
    # every call recorded its own time: a positive, finite number of ms
    assert all(len(ts) == 2 * CALLS and all(0 < v < 60_000 for v in ts) for ts in times)


def test_last_inference_ms_is_each_threads_own(files, frames):
    clf = Classifier.load(files["int8.tflite"], threads=1)
    assert math.isnan(clf.last_inference_ms)  # nothing run yet
    clf.classify(frames[0])
    mine = clf.last_inference_ms
    assert 0 < mine < 60_000
    seen = {}

    def worker(t: int) -> None:
        seen[(t, "before")] = clf.last_inference_ms  # this thread has not run anything
        for _ in range(5):
            clf.classify(frames[t])
        seen[(t, "after")] = clf.last_inference_ms

    _run_threads(worker)
    assert all(math.isnan(seen[(t, "before")]) for t in range(THREADS))
    assert all(0 < seen[(t, "after")] < 60_000 for t in range(THREADS))
    assert clf.last_inference_ms == mine  # 20 calls in other threads did not overwrite it


def test_a_failure_after_a_successful_run_is_not_blamed_on_the_file(files, frames):
    """The pixels are checked before a run, so a file that has never run and fails is corrupt
    (ModelFileError, as tests/test_hardening.py checks on a real corrupt file); once it has run,
    a failure is the runtime's: InferenceError, which does not say the file is corrupt."""
    def fails(_pixels):
        raise RuntimeError("the interpreter gave up")

    fresh = Classifier.load(files["int8.tflite"], threads=1)
    fresh._run = fails  # before any successful run
    with pytest.raises(ModelFileError, match="cannot run it: the interpreter gave up; the file is corrupt"):
        fresh.classify(frames[0])

    clf = Classifier.load(files["int8.tflite"], threads=1)
    clf.classify(frames[0])
    clf._run = fails
    with pytest.raises(InferenceError) as e:
        clf.classify(frames[1])
    msg = str(e.value)
    assert not isinstance(e.value, DataError)  # not a file or data problem
    assert "int8.tflite" in msg and "the interpreter gave up" in msg and "the file is not the cause" in msg
    assert "corrupt" not in msg and "re-export" not in msg
