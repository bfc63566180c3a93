"""Camera demo (`edgesqueeze.camera`): fixtures built in code (a synthetic MJPG video, an image
folder, scripted sources and a fake classifier); writes only to tmp_path."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import types
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgesqueeze import camera as C  # noqa: E402
from edgesqueeze.cli import camera as CLI  # noqa: E402
from edgesqueeze.errors import DataError, OptionError  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
FRAME_FIELDS = {"frame", "seq", "top3", "infer_ms", "total_ms", "fps", "age_ms", "agreement", "comparisons",
                "warnings"}
SUMMARY_FIELDS = {"frames", "dropped", "bad", "median_infer_ms", "median_frame_ms", "fps", "agreement",
                  "comparisons", "stop_reason"}


# ---------------------------------------------------------------- fakes and fixtures


@dataclass(frozen=True)
class FakeClass:
    index: int
    label: str
    score: float


def frame_value(frame: np.ndarray) -> int:
    """The value a synthetic frame was made with (frames are filled with one value per frame,
    plus a small pattern; the top-left pixel keeps the value, even after MJPG)."""
    return int(round(float(frame[:8, :8].mean())))


class FakeClassifier:
    """Deterministic: top-1 = value of the frame // 16 % 10 (the frame index for 16 frames);
    `delay` seconds per call (a sleep, which releases the GIL as the real runtimes do); raises
    KeyboardInterrupt on call `interrupt_on`."""

    def __init__(self, delay: float = 0.0, *, interrupt_on: int | None = None, offset=None):
        self.delay, self.interrupt_on = delay, interrupt_on
        self.offset = offset or (lambda value: 0)
        self.calls = 0
        self.last_inference_ms = float("nan")
        self.metadata = types.SimpleNamespace(labels=tuple(f"class {i}" for i in range(10)))

    def classify(self, frame, top_k=5):
        if self.interrupt_on is not None and self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        self.calls += 1
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise DataError("fake: not a frame")
        t0 = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        v = frame_value(frame)
        top = (v // 16 + self.offset(v)) % 10
        self.last_inference_ms = 1e3 * (time.perf_counter() - t0)
        return [FakeClass((top + k) % 10, f"class {(top + k) % 10}", 0.5 / (k + 1)) for k in range(top_k)]


def synthetic_frame(i: int, h: int = 120, w: int = 160) -> np.ndarray:
    img = np.full((h, w, 3), (i * 16 + 8) % 256, np.uint8)
    img[h // 2:, w // 2:] = 255 - img[h // 2:, w // 2:]
    return img


class ScriptedSource(C.FrameSource):
    """Frames from a function of the read count: a frame, None, or an exception to raise;
    EndOfStream after `n` reads."""

    def __init__(self, n: int, make=synthetic_frame, *, live: bool = False, period: float = 0.0):
        super().__init__()
        self.name, self.n, self.make, self.live, self.period = "scripted", n, make, live, period
        self.i = 0

    def read(self):
        if self.i >= self.n:
            raise C.EndOfStream("done")
        i, self.i = self.i, self.i + 1
        if self.period:
            time.sleep(self.period)
        out = self.make(i)
        if isinstance(out, BaseException):
            raise out
        return out


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    assert w.isOpened()
    for i in range(30):
        w.write(synthetic_frame(i))
    w.release()
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    for i in range(5):
        cv2.imwrite(str(d / f"img{i}.png"), synthetic_frame(i))
    (d / "img2_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return d


def run_collect(source, classifier, **kw):
    lines = []
    summary = C.run_loop(source, classifier, on_frame=lambda r: lines.append(json.loads(json.dumps(r.to_dict()))),
                         **kw)
    return summary, lines


# ---------------------------------------------------------------- video and folder sources


def test_video_headless_json_lines_and_summary(video):
    with C.VideoSource(video) as src:
        summary, lines = run_collect(src, FakeClassifier(0.001))
    assert summary.frames == 30 and len(lines) == 30
    assert summary.stop_reason == "end-of-stream" and summary.ok
    assert summary.bad == 0 and summary.dropped == 0
    assert [ln["frame"] for ln in lines] == list(range(30))
    for ln in lines:
        assert FRAME_FIELDS <= set(ln)
        assert len(ln["top3"]) == 3 and all(isinstance(s, str) and isinstance(p, float) for s, p in ln["top3"])
        assert ln["infer_ms"] >= 1.0 and ln["total_ms"] >= ln["infer_ms"]
        assert ln["agreement"] is None and ln["warnings"] == []
    # the class follows the frame content, through MJPG
    assert [ln["top3"][0][0] for ln in lines[:3]] == ["class 0", "class 1", "class 2"]
    assert lines[-1]["fps"] > 0
    d = summary.to_dict()
    assert SUMMARY_FIELDS <= set(d) and json.loads(json.dumps(d))["frames"] == 30
    assert d["median_frame_ms"] >= d["median_infer_ms"] >= 1.0


def test_video_loop_and_max_frames(video):
    with C.VideoSource(video, loop=True) as src:
        summary, lines = run_collect(src, FakeClassifier(), max_frames=45)
    assert summary.frames == 45 and summary.stop_reason == "max-frames"
    assert lines[30]["top3"] == lines[0]["top3"]  # back at the first frame


def test_video_threaded_plays_in_real_time_and_ends_cleanly(video):
    """A capture thread on a file paces it at its fps (30): a slow model drops frames, and the
    end of the video still ends the loop cleanly."""
    with C.VideoSource(video) as src:
        summary, lines = run_collect(src, FakeClassifier(0.07), threaded=True)
    assert summary.stop_reason == "end-of-stream"
    assert 5 <= summary.frames < 30 and summary.dropped > 0
    assert summary.frames + summary.dropped <= 30


def test_folder_skips_unreadable_image_with_warning(folder):
    with C.FolderSource(folder) as src:
        summary, lines = run_collect(src, FakeClassifier())
    assert summary.frames == 5 and summary.bad == 1 and summary.stop_reason == "end-of-stream"
    warned = [w for ln in lines for w in ln["warnings"]]
    assert any("img2_broken.jpg" in w for w in warned)
    assert any("img2_broken.jpg" in w for w in summary.warnings)


def test_folder_loop_cycles(folder):
    with C.FolderSource(folder, loop=True) as src:
        summary, lines = run_collect(src, FakeClassifier(), max_frames=12)
    assert summary.frames == 12 and summary.bad == 2  # the broken file, on each of 2 passes
    assert [ln["top3"][0][0] for ln in lines[:6]] == ["class 0", "class 1", "class 2", "class 3", "class 4",
                                                       "class 0"]


def test_open_source_picks_the_kind(video, folder, tmp_path):
    assert isinstance(C.open_source(str(video)), C.VideoSource)
    assert isinstance(C.open_source(str(folder)), C.FolderSource)
    one = C.open_source(str(folder / "img0.png"))
    assert isinstance(one, C.FolderSource) and len(one.files) == 1
    with pytest.raises(DataError, match="no such file"):
        C.open_source(str(tmp_path / "missing.avi"))
    with pytest.raises(DataError, match="OpenCV cannot open"):
        (tmp_path / "bad.avi").write_bytes(b"garbage" * 10)
        C.open_source(str(tmp_path / "bad.avi"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        C.open_source(str(tmp_path / "empty"))
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="picamera2"):
            C.open_source("picamera2")


def test_folder_of_only_unreadable_images_ends_even_when_looped(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    (tmp_path / "b.png").write_bytes(b"")
    with C.FolderSource(tmp_path, loop=True) as src:
        summary, _ = run_collect(src, FakeClassifier())
    assert summary.frames == 0 and summary.bad == 2 and summary.stop_reason == "end-of-stream"


def test_picamera2_source_with_a_stand_in_module(monkeypatch):
    """The picamera2 path (not installable here): configured for RGB888 (= BGR bytes), read live."""
    calls = []

    class Picamera2:
        def create_video_configuration(self, main):
            calls.append(("config", main))
            return {"main": main}

        def configure(self, cfg):
            calls.append(("configure", cfg))

        def start(self):
            calls.append(("start",))

        def capture_array(self, name="main"):
            n = sum(1 for c in calls if c[0] == "capture")
            calls.append(("capture",))
            if n == 2:
                raise RuntimeError("libcamera: frame timeout")
            return synthetic_frame(n, 48, 64)

        def stop(self):
            calls.append(("stop",))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    src = C.open_source("picamera2", width=64, height=48)
    assert src.live and calls[0] == ("config", {"size": (64, 48), "format": "RGB888"})
    summary, lines = run_collect(src, FakeClassifier(0.002), max_frames=4, threaded=False)
    src.close()
    assert summary.frames == 4 and summary.bad == 1 and ("stop",) in calls and ("close",) in calls


# ---------------------------------------------------------------- robustness


def _flaky(i):
    """Every 4th read None, every 5th raises, every 7th a wrong type or an empty array; after
    read 12 the resolution changes, and some frames are grey or BGRA (converted, not bad)."""
    if i % 4 == 3:
        return None
    if i % 5 == 4:
        return OSError("USB hiccup")
    if i % 7 == 6:
        return "not a frame" if i % 2 else np.zeros((0, 0, 3), np.uint8)
    f = synthetic_frame(i, *((120, 160) if i < 12 else (96, 200)))
    if i == 13:
        return f[:, :, 0]  # grey
    if i == 14:
        return np.dstack([f, np.full(f.shape[:2], 255, np.uint8)])  # BGRA
    return f


@pytest.mark.parametrize("threaded", [False, True], ids=["direct", "capture-thread"])
def test_bad_frames_are_counted_and_skipped(threaded):
    n = 40
    kinds = [_flaky(i) for i in range(n)]
    bad = sum(1 for k in kinds if k is None or isinstance(k, (BaseException, str)) or getattr(k, "size", 1) == 0)
    src = ScriptedSource(n, _flaky, period=0.002 if threaded else 0.0)
    summary, lines = run_collect(src, FakeClassifier(), threaded=threaded)
    assert summary.stop_reason == "end-of-stream"
    assert summary.bad == bad
    assert summary.frames + summary.dropped == n - bad
    if not threaded:
        assert summary.frames == n - bad
        warned = " ".join(w for ln in lines for w in ln["warnings"])
        assert "USB hiccup" in warned and "None" in warned and "str" in warned and "empty" in warned


def test_model_refusing_a_frame_is_a_bad_frame():
    class Refuses(FakeClassifier):
        def classify(self, frame, top_k=5):
            if frame_value(frame) == 40:
                raise DataError("fake: refused")
            return super().classify(frame, top_k)

    summary, _ = run_collect(ScriptedSource(6), Refuses())
    assert summary.frames == 5 and summary.bad == 1 and summary.ok


def test_a_runtime_failure_on_one_frame_is_a_bad_frame():
    from edgesqueeze.errors import InferenceError

    class FailsOnce(FakeClassifier):
        def classify(self, frame, top_k=5):
            if frame_value(frame) == 40:
                raise InferenceError("fake: the runtime failed once")
            return super().classify(frame, top_k)

    summary, _ = run_collect(ScriptedSource(6), FailsOnce())
    assert summary.frames == 5 and summary.bad == 1 and summary.ok


def test_endless_bad_frames_stop_with_source_failed():
    summary, _ = run_collect(ScriptedSource(10**6, lambda i: None), FakeClassifier(), max_consecutive_bad=50)
    assert summary.frames == 0 and summary.bad == 50
    assert summary.stop_reason.startswith("source-failed") and not summary.ok


def test_check_frame():
    f = synthetic_frame(1)
    assert C.check_frame(f) is f
    assert C.check_frame(f[:, :, 0]).shape == (120, 160, 3)
    assert C.check_frame(f.astype(np.uint16) * 256).dtype == np.uint8
    for bad in (None, "x", np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.int64)):
        with pytest.raises(DataError):
            C.check_frame(bad)


# ---------------------------------------------------------------- latest-frame holder


def test_latest_frame_holder_keeps_only_the_newest():
    h = C.LatestFrame()
    assert h.get(timeout=0.01) is None
    for i in range(5):
        h.put(np.full((2, 2, 3), i, np.uint8))
    got = h.get(timeout=0.01)
    assert got.seq == 4 and int(got.image[0, 0, 0]) == 4 and h.dropped == 4
    assert h.get(timeout=0.01) is None
    h.put(np.zeros((2, 2, 3), np.uint8))
    h.close(C.EndOfStream("bye"))
    assert h.get(timeout=0.01).seq == 5  # the last frame is still delivered
    with pytest.raises(C.EndOfStream):
        h.get(timeout=0.01)


def test_fast_producer_slow_consumer_sees_no_backlog():
    """A 1 kHz 'camera' and a 25 ms model: the loop always gets a fresh frame (age well under one
    model run), and the frames it could not process are counted as dropped."""
    src = ScriptedSource(10**6, synthetic_frame, live=True, period=0.001)
    summary, lines = run_collect(src, FakeClassifier(0.025), max_frames=12)
    assert summary.frames == 12 and summary.stop_reason == "max-frames"
    assert summary.dropped > 50
    ages = sorted(ln["age_ms"] for ln in lines[1:])
    assert ages[len(ages) // 2] < 10.0, ages  # median: ~1 producer period, not a growing queue
    assert max(ages) < 25.0, ages
    seqs = [ln["seq"] for ln in lines]
    assert all(b - a > 5 for a, b in zip(seqs[1:], seqs[2:]))  # skips ahead, never replays a backlog


# ---------------------------------------------------------------- shadow FP32 tracker


def test_rolling_agreement_is_exact_and_warns(caplog):
    t = C.ShadowTracker(FakeClassifier(), every=1, window=4, warn_below=60.0, min_comparisons=4, start=False)
    assert t.agreement is None
    expected = []
    pattern = [True, True, False, True, False, False, True, True, True]
    window: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="edgesqueeze.camera"):
        for k, same in enumerate(pattern):
            t.record(3, 3 if same else 4)
            window = (window + [same])[-4:]
            expected.append(100.0 * sum(window) / len(window))
            assert t.agreement == pytest.approx(expected[-1], abs=1e-12)
            want_warning = len(window) >= 4 and expected[-1] < 60.0
            assert (t.warning is not None) == want_warning, (k, expected[-1])
    assert [round(e, 2) for e in expected] == [100.0, 100.0, 66.67, 75.0, 50.0, 25.0, 50.0, 50.0, 75.0]
    below = [r.getMessage() for r in caplog.records if "below" in r.getMessage()]
    assert len(below) == 1 and "50.0 %" in below[0]  # logged once when it first fell below
    assert any("back to 75.0" in r.getMessage() for r in caplog.records)
    assert t.comparisons == 9


def test_shadow_thread_compares_the_same_frame():
    """FP32 disagrees on frames whose value // 16 is a multiple of 3: through the worker thread
    the rolling agreement is exactly the expected fraction."""
    fp32 = FakeClassifier(offset=lambda v: 1 if (v // 16) % 3 == 0 else 0)
    t = C.ShadowTracker(fp32, every=2, window=50, warn_below=90.0, min_comparisons=10)
    int8 = FakeClassifier()
    same = []
    for i in range(40):
        f = synthetic_frame(i)
        top1 = int8.classify(f, 1)[0].index
        if t.submit(i, f, top1):
            same.append((frame_value(f) // 16) % 3 != 0)
            assert t.wait_idle(5.0)
    t.close()
    assert t.submitted == 20 and t.skipped == 0 and t.errors == 0 and t.comparisons == 20
    assert sum(same) == 12  # frames 0, 2, .., 38 -> values // 16 = i % 16: 8 of 20 are multiples of 3
    assert t.agreement == 60.0
    assert t.warning is not None and "60.0 %" in t.warning
    assert t.priority_lowered in (True, False)


def test_warning_reaches_json_lines():
    fp32 = FakeClassifier(offset=lambda v: 1)  # never agrees
    t = C.ShadowTracker(fp32, every=1, window=50, warn_below=90.0, min_comparisons=10)
    int8 = FakeClassifier(0.004)
    summary, lines = run_collect(ScriptedSource(60), int8, shadow=t)
    t.close()
    assert summary.agreement == 0.0 and summary.comparisons >= 10
    warned = [ln for ln in lines if any("agreement" in w for w in ln["warnings"])]
    assert warned and all(ln["comparisons"] >= 10 for ln in warned)
    assert lines[-1]["agreement"] == 0.0


def test_slow_shadow_never_slows_the_loop():
    """INT8 5 ms, FP32 10x slower on every frame: per-frame time stays ~5 ms; the work the busy
    worker could not take is dropped and counted."""
    delay = 0.005
    t = C.ShadowTracker(FakeClassifier(10 * delay), every=1, window=50)
    summary, lines = run_collect(ScriptedSource(60), FakeClassifier(delay), shadow=t, shadow_wait=False)
    t.close()
    assert summary.frames == 60
    assert summary.median_frame_ms < 1e3 * delay + 3.0, summary
    assert summary.shadow_skipped > 20 and 1 <= summary.comparisons < 20
    assert summary.shadow_median_ms >= 1e3 * 10 * delay
    baseline, _ = run_collect(ScriptedSource(60), FakeClassifier(delay))
    assert summary.median_frame_ms < baseline.median_frame_ms + 2.0


def test_shadow_rests_to_keep_its_duty_cycle():
    """max_load 0.25: after a 1 s run the worker takes no frame for 3 s; frames offered while it
    rests are skipped and counted as rate-limited, frames offered while it is busy as skipped."""
    now = [0.0]
    t = C.ShadowTracker(FakeClassifier(), every=1, max_load=0.25, clock=lambda: now[0], start=False)
    assert t.rest_after(10.0, 11.0) == pytest.approx(3.0)
    now[0] = 13.9
    assert not t.submit(0, synthetic_frame(0), 0) and (t.skipped, t.rate_limited) == (1, 1)
    now[0] = 14.0
    assert t.submit(1, synthetic_frame(1), 0)  # rested: taken
    assert not t.submit(2, synthetic_frame(2), 0)  # busy (not started): skipped, not rate-limited
    assert (t.skipped, t.rate_limited, t.submitted) == (2, 1, 1)
    assert C.ShadowTracker(FakeClassifier(), max_load=None, start=False).rest_after(0.0, 5.0) == 0.0
    for bad in (0, -0.5, 1.5):
        with pytest.raises(OptionError, match="shadow-max-load"):
            C.ShadowTracker(FakeClassifier(), max_load=bad, start=False)


def test_shadow_busy_at_most_max_load_of_the_time():
    """A 20 ms FP32 model offered every frame of a 5 ms loop: with max_load 0.25 each comparison
    costs at least 80 ms of wall time (20 ms run + 60 ms rest), so the count is bounded by the
    elapsed time; without the cap the worker runs back to back."""
    fp32_s = 0.02
    t0 = time.perf_counter()
    capped = C.ShadowTracker(FakeClassifier(fp32_s), every=1, max_load=0.25)
    summary, _ = run_collect(ScriptedSource(60), FakeClassifier(0.005), shadow=capped, shadow_wait=False)
    capped.close()
    elapsed = time.perf_counter() - t0
    assert summary.frames == 60 and capped.rate_limited > 0 and capped.errors == 0
    assert 1 <= capped.comparisons <= elapsed / (fp32_s / 0.25) + 1, (capped.comparisons, elapsed)
    free = C.ShadowTracker(FakeClassifier(fp32_s), every=1, max_load=None)
    summary_free, _ = run_collect(ScriptedSource(60), FakeClassifier(0.005), shadow=free, shadow_wait=False)
    free.close()
    assert free.rate_limited == 0 and free.comparisons > capped.comparisons


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux behaviour")
def test_lower_thread_priority_changes_only_the_calling_thread():
    import os
    import threading

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def worker():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        seen["ok"] = C.lower_thread_priority(5)
        seen["change"] = (before, os.getpriority(os.PRIO_PROCESS, tid))

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    before, after = seen["change"]
    assert seen["ok"] is True and after == min(before + 5, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    assert C.lower_thread_priority(0) is False


# ---------------------------------------------------------------- reconnect


class FakeCap:
    def __init__(self, frames: int):
        self.frames, self.released = frames, False

    def isOpened(self):
        return True

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, synthetic_frame(self.frames)

    def release(self):
        self.released = True


class ClosedCap(FakeCap):
    def isOpened(self):
        return False


def test_backoff_schedule():
    b = C.Backoff()
    assert [b.next() for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next() == 0.5


def test_camera_reconnects_with_exponential_backoff():
    """2 good frames, then the camera dies; 4 reopen attempts fail, the 5th works."""
    opens = []
    script = [FakeCap(2)] + [ClosedCap(0)] * 4 + [FakeCap(3)]

    def opener(device):
        opens.append(device)
        return script[len(opens) - 1]

    slept = []
    cam = C.CameraSource(0, opener=opener, sleep=slept.append, fail_threshold=1, max_reconnects=10).open()
    got = [cam.read() for _ in range(6)]
    assert [g is not None for g in got] == [True, True, False, True, True, True]
    assert slept == [0.5, 1, 2, 4, 8] and cam.backoff_log == slept and cam.reconnects == 5
    assert script[0].released and len(opens) == 6
    # a good frame resets the back-off: the next failure starts at 0.5 s again
    script.append(FakeCap(1))
    assert cam.read() is None and cam.read() is not None
    assert slept[-1] == 0.5


def test_camera_gives_up_after_max_reconnects_and_loop_ends_cleanly():
    slept = []
    cam = C.CameraSource(0, opener=lambda d: ClosedCap(0), sleep=slept.append, max_reconnects=3)
    summary, _ = run_collect(cam, FakeClassifier(), threaded=True)
    assert summary.stop_reason.startswith("source-failed") and "3 reconnect attempts" in summary.stop_reason
    assert slept == [0.5, 1, 2] and summary.reconnects == 3 and summary.frames == 0
    with pytest.raises(DataError, match="cannot open"):
        C.CameraSource(0, opener=lambda d: ClosedCap(0)).open()


def test_camera_close_interrupts_a_backoff_wait():
    cam = C.CameraSource(0, opener=lambda d: ClosedCap(0), max_reconnects=-1)
    t = threading.Timer(0.2, cam.close)
    t.start()
    t0 = time.perf_counter()
    with pytest.raises(C.EndOfStream):
        while True:
            cam.read()
    assert time.perf_counter() - t0 < 2.0  # not the 0.5 + 1 + 2 + ... s of waiting


# ---------------------------------------------------------------- Ctrl-C, output, command line


@pytest.mark.parametrize("threaded", [False, True], ids=["direct", "capture-thread"])
def test_keyboard_interrupt_gives_a_clean_summary(threaded):
    t = C.ShadowTracker(FakeClassifier(), every=1)
    src = ScriptedSource(100, live=threaded, period=0.001 if threaded else 0.0)
    summary, lines = run_collect(src, FakeClassifier(interrupt_on=5), shadow=t, threaded=threaded)
    t.close()
    assert summary.stop_reason == "interrupted" and summary.ok
    assert summary.frames == 5 and len(lines) == 5
    assert summary.median_infer_ms is not None and summary.comparisons >= 1
    assert "5 frames processed" in C.format_summary(summary)
    time.sleep(0.05)
    assert not any(th.name == "edgesqueeze-capture" and th.is_alive() for th in threading.enumerate())


def test_overlay_and_video_out(video, tmp_path):
    out = tmp_path / "annotated.avi"
    writer = C.VideoOut(out, fps=30)
    t = C.ShadowTracker(FakeClassifier(), every=3)
    with C.VideoSource(video) as src:
        summary = C.run_loop(src, FakeClassifier(), shadow=t, writer=writer, max_frames=12)
    writer.close()
    t.close()
    assert summary.frames == 12 and writer.frames == 12
    cap = cv2.VideoCapture(str(out))
    n, first = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        first = f if first is None else first
        n += 1
    assert n == 12 and first.shape == (120, 160, 3)
    assert first[:20, :20].mean() < 40  # the dark text box is drawn (frame 0's pixels are 0 there anyway)
    assert first[5:60, 5:100].max() > 200  # white text on it


class FakeRuntime(types.ModuleType):
    """Stands in for edgesqueeze.runtime in run_camera tests."""

    def __init__(self, delay=0.0):
        super().__init__("edgesqueeze.runtime")
        self.loaded = []
        runtime = self

        class Classifier(FakeClassifier):
            @classmethod
            def load(cls, path, *, threads=None, backend=None):
                runtime.loaded.append((str(path), threads))
                return cls(delay)

        self.Classifier = Classifier


def camera_args(**kw) -> Namespace:
    import argparse

    p = CLI.configure_parser(argparse.ArgumentParser())
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return p.parse_args(argv)


def test_run_camera_headless_prints_json_lines_and_summary(video, monkeypatch, capsys):
    rt = FakeRuntime()
    monkeypatch.setitem(sys.modules, "edgesqueeze.runtime", rt)
    args = camera_args(model="int8.tflite", fp32="fp32.onnx", source=video, headless=True, max_frames=20,
                       shadow_every=2)
    assert CLI.run_camera(args) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(s) for s in out.splitlines()]
    assert len(lines) == 21 and all(FRAME_FIELDS <= set(ln) for ln in lines[:-1])
    assert lines[-1]["summary"] is True and SUMMARY_FIELDS <= set(lines[-1])
    assert lines[-1]["frames"] == 20 and lines[-1]["stop_reason"] == "max-frames"
    assert lines[-1]["comparisons"] >= 1 and lines[-1]["agreement"] == 100.0
    assert "20 frames processed" in err and "Traceback" not in err
    assert rt.loaded == [("int8.tflite", None), ("fp32.onnx", 1)]  # the shadow runs single-threaded


def test_run_camera_caps_the_shadow_load(video, monkeypatch, capsys):
    made = []

    class Recording(C.ShadowTracker):
        def __init__(self, *a, **kw):
            made.append(kw)
            super().__init__(*a, **kw)

    monkeypatch.setitem(sys.modules, "edgesqueeze.runtime", FakeRuntime())
    monkeypatch.setattr(CLI, "ShadowTracker", Recording)
    assert CLI.run_camera(camera_args(model="m.tflite", fp32="f.onnx", source=video, headless=True, max_frames=3)) == 0
    assert CLI.run_camera(camera_args(model="m.tflite", fp32="f.onnx", source=video, headless=True, max_frames=3,
                                    shadow_max_load=0.5)) == 0
    assert [kw["max_load"] for kw in made] == [0.25, 0.5]  # the command's default caps it
    capsys.readouterr()
    for bad in (0, 2):
        with pytest.raises(OptionError, match="shadow-max-load"):
            CLI.run_camera(camera_args(model="m", source=video, headless=True, shadow_max_load=bad))


def test_run_camera_ctrl_c_exits_cleanly(video, monkeypatch, capsys):
    rt = FakeRuntime()
    orig = rt.Classifier.load.__func__

    def load(cls, path, *, threads=None, backend=None):
        c = orig(cls, path, threads=threads)
        c.interrupt_on = 5
        return c

    rt.Classifier.load = classmethod(load)
    monkeypatch.setitem(sys.modules, "edgesqueeze.runtime", rt)
    assert CLI.run_camera(camera_args(model="m.tflite", source=video, headless=True)) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.splitlines()[-1])
    assert summary["summary"] is True and summary["stop_reason"] == "interrupted" and summary["frames"] == 5
    assert "Traceback" not in err and "interrupted" in err


def test_run_camera_option_errors(video, monkeypatch):
    from edgesqueeze.errors import OptionError

    monkeypatch.setitem(sys.modules, "edgesqueeze.runtime", FakeRuntime())
    with pytest.raises(OptionError, match="shadow-every"):
        CLI.run_camera(camera_args(model="m", source=video, headless=True, shadow_every=0))
    with pytest.raises(OptionError, match="warn-below"):
        CLI.run_camera(camera_args(model="m", source=video, headless=True, warn_below=120))
    with pytest.raises(DataError, match="no such file"):
        CLI.run_camera(camera_args(model="m", source="no/such/clip.avi", headless=True))
    if C.gui_unavailable() is not None:  # here: headless OpenCV and no display
        with pytest.raises(OptionError, match="--headless"):
            CLI.run_camera(camera_args(model="m", source=video))
    if sys.platform.startswith("linux"):
        assert C.gui_unavailable({}) is not None  # no DISPLAY: refused before any window call


def test_add_camera_parser():
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    CLI.add_camera_parser(sub)
    args = p.parse_args(["camera", "--model", "m.tflite", "--source", "0", "--fp32", "f.onnx", "--headless"])
    assert args.func is CLI.run_camera and args.shadow_every == 10 and args.window == 50 and args.warn_below == 90.0


def test_camera_module_does_not_import_torch():
    code = ("import sys, edgesqueeze.camera, edgesqueeze.runtime\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == ""


def test_demo_help_runs():
    out = subprocess.run([sys.executable, str(PROJECT / "demos" / "camera.py"), "--help"], capture_output=True,
                         text=True, check=True)
    assert "--shadow-every" in out.stdout and "--headless" in out.stdout


# ---------------------------------------------------------------- the real runtime


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny SqueezeNet exported to INT8 .tflite and FP32 .onnx (built as in test_quant)."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnx")
    from dataclasses import replace

    from test_quant import PRE, minmax_ranges, tiny_arch, tiny_params

    from edgesqueeze.export.onnx import to_onnx_fp32
    from edgesqueeze.export.tflite import fp32_metadata, to_tflite
    from edgesqueeze.quant.quantize import quantize_model

    labels = tuple(f"class {i}" for i in range(10))
    arch = replace(tiny_arch(), preprocess=replace(PRE, crop=35))
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=labels,
                        calibration={"method": "minmax", "images": 6, "split": "random test images"})
    d = tmp_path_factory.mktemp("models")
    int8 = to_tflite(qm, d / "tiny-int8.tflite").path
    fp32 = to_onnx_fp32(arch, params, d / "tiny-fp32.onnx", metadata=fp32_metadata(arch, labels))
    return Path(int8), Path(fp32)


def test_real_classifier_over_the_video(video, tiny_models):
    from edgesqueeze.runtime import Classifier

    int8, fp32 = tiny_models
    clf = Classifier.load(int8, threads=1)
    t = C.ShadowTracker(Classifier.load(fp32, threads=1), every=1, window=50)
    with C.VideoSource(video) as src:
        summary, lines = run_collect(src, clf, shadow=t)
    t.close()
    assert summary.frames == 30 and summary.bad == 0 and summary.stop_reason == "end-of-stream"
    assert all(ln["top3"][0][0].startswith("class ") and 0 < ln["infer_ms"] < 1000 for ln in lines)
    assert summary.comparisons >= 1 and summary.agreement is not None
    assert summary.median_frame_ms >= summary.median_infer_ms


def test_demo_script_headless_smoke(video, tiny_models, tmp_path):
    int8, fp32 = tiny_models
    out_video = tmp_path / "out.avi"
    r = subprocess.run([sys.executable, str(PROJECT / "demos" / "camera.py"), "--model", str(int8), "--fp32", str(fp32),
                        "--source", str(video), "--headless", "--max-frames", "10", "--out", str(out_video)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    assert len(lines) == 11 and lines[-1]["summary"] is True and lines[-1]["frames"] == 10
    assert "10 frames processed" in r.stderr and out_video.stat().st_size > 0


def test_demo_script_sigint_exits_cleanly_with_summary(video, tiny_models, tmp_path):
    """A real Ctrl-C (SIGINT) to the running demo: exit code 0, a summary, no traceback."""
    import os
    import signal

    int8, _ = tiny_models
    proc = subprocess.Popen([sys.executable, str(PROJECT / "demos" / "camera.py"), "--model", str(int8),
                             "--source", str(video), "--loop", "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()  # running: one frame done
        assert json.loads(first)["frame"] == 0
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["summary"] is True and summary["stop_reason"] == "interrupted" and summary["frames"] >= 1
    assert "Traceback" not in err and "frames processed" in err
