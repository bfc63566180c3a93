"""The camera package: one job per file, small files, the names other code imports, the CLI
options beside the other commands, and --shadow-every on recorded footage."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgesqueeze import camera as C  # noqa: E402
from edgesqueeze.cli import camera as CLI  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "edgesqueeze" / "camera"
JOBS = ("sources", "capture", "shadow", "loop", "overlay", "web", "systemd")


def test_one_job_per_file_and_no_file_over_400_lines():
    files = {p.stem: p for p in PACKAGE.glob("*.py")}
    assert set(JOBS) <= set(files), sorted(files)
    assert not (PROJECT / "edgesqueeze" / "camera.py").exists()  # the package, not a module beside it
    for path in [*files.values(), PROJECT / "edgesqueeze" / "cli" / "camera.py"]:
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 400, f"{path.name}: {n} lines"


def test_names_other_code_imports_stay_on_the_package():
    for name in ("FrameSource", "EndOfStream", "SourceFailed", "CameraSource", "VideoSource", "FolderSource",
                 "Picamera2Source", "open_source", "LatestFrame", "Backoff", "ShadowTracker", "lower_thread_priority",
                 "run_loop", "FrameResult", "Summary", "format_summary", "draw_overlay", "gui_unavailable",
                 "CvWindow", "VideoOut", "check_frame", "systemd_quote", "UNIT_NAME"):
        assert hasattr(C, name), name


def test_the_command_line_options_live_with_the_cli():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    CLI.add_camera_parser(sub)
    args = p.parse_args(["camera", "--model", "m.tflite", "--serve", "8080"])
    assert args.func is CLI.run_camera and args.serve == "8080" and args.serve_fps == 10.0 and args.token_file is None
    from edgesqueeze.cli import build_parser

    args = build_parser().parse_args(["camera", "--model", "m.tflite", "--serve", "0.0.0.0:9000", "--token-file", "t"])
    assert args.func is CLI.run_camera and args.serve == "0.0.0.0:9000"


def test_package_modules_do_not_import_torch():
    mods = [f"edgesqueeze.camera.{m}" for m in (*JOBS, "live", "page", "access")] + ["edgesqueeze.cli.camera"]
    code = ("import sys, importlib\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------- --shadow-every on recorded footage


class Fixed:
    """Top-1 from the frame's value; `delay` seconds per call (sleep: releases the GIL)."""

    def __init__(self, delay: float = 0.0):
        import types

        self.delay, self.calls, self.last_inference_ms = delay, 0, 1.0
        self.metadata = types.SimpleNamespace(labels=tuple(f"class {i}" for i in range(10)))

    def classify(self, frame, top_k=5):
        import time
        import types

        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        top = int(frame[0, 0, 0]) % 10
        return [types.SimpleNamespace(index=(top + k) % 10, label=f"class {(top + k) % 10}", score=0.5 / (k + 1))
                for k in range(top_k)]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip")
    for i in range(23):
        cv2.imwrite(str(d / f"f{i:03d}.png"), np.full((48, 64, 3), i * 10, np.uint8))
    return d


@pytest.mark.parametrize("every", [1, 4, 5, 23])
def test_shadow_every_on_a_folder_compares_exactly_ceil_n_over_every(clip_folder, every):
    """A slow FP32 model (20x the INT8 time) and the command's rate cap: read frame by frame, a
    23-frame folder still gets exactly ceil(23 / N) comparisons, all agreeing."""
    shadow = C.ShadowTracker(Fixed(0.02), every=every, max_load=0.25)
    with C.FolderSource(clip_folder) as src:
        summary = C.run_loop(src, Fixed(0.001), shadow=shadow)
    shadow.close()
    assert summary.frames == 23 and summary.comparisons == math.ceil(23 / every) == shadow.submitted
    assert summary.shadow_skipped == 0 and summary.agreement == 100.0


def test_shadow_every_live_source_keeps_the_rate_cap(clip_folder):
    """The same folder played as a camera (capture thread): the cap stays, frames are skipped."""
    shadow = C.ShadowTracker(Fixed(0.02), every=1, max_load=0.25)
    with C.FolderSource(clip_folder, fps=200.0) as src:
        summary = C.run_loop(src, Fixed(0.005), shadow=shadow, threaded=True)
    shadow.close()
    assert summary.comparisons < summary.frames and summary.shadow_skipped > 0


def test_run_camera_tracks_a_recorded_folder_completely(clip_folder, monkeypatch, capsys):
    import types

    runtime = types.ModuleType("edgesqueeze.runtime")

    class Classifier(Fixed):
        @classmethod
        def load(cls, path, *, threads=None, backend=None):
            return cls(0.02 if "fp32" in str(path) else 0.001)

    runtime.Classifier = Classifier
    monkeypatch.setitem(sys.modules, "edgesqueeze.runtime", runtime)
    args = CLI.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--model", "m.tflite", "--fp32", "fp32.onnx", "--source", str(clip_folder), "--headless", "--shadow-every", "3"])
    assert CLI.run_camera(args) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert lines[-1]["summary"] and lines[-1]["frames"] == 23 and lines[-1]["comparisons"] == math.ceil(23 / 3)
    assert all({"dropped", "bad"} <= set(ln) for ln in lines[:-1])
