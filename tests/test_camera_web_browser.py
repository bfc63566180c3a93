"""The live page end to end: `demos/camera.py --serve` with a real (tiny) INT8 model in a
subprocess, then the page in headless Chromium (Debian's chromium-headless-shell): its rendered
DOM shows the top-1 label that /api/state reports. Binds 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from test_camera import tiny_models  # noqa: E402,F401 - the fixture

PROJECT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium-headless-shell", "/usr/lib/chromium-headless-shell/chromium-headless-shell",
                  "/usr/lib/chromium/headless_shell", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


class Demo:
    """demos/camera.py serving a looped single image; `url`, `state()`, `stop()`."""

    def __init__(self, tmp_path: Path, model: Path, *extra: str):
        image = tmp_path / "still.png"
        rng = np.random.default_rng(3)
        cv2.imwrite(str(image), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        self.out, self.err = open(tmp_path / "out.jsonl", "wb"), open(tmp_path / "err.txt", "wb")
        self.err_path, self.out_path = tmp_path / "err.txt", tmp_path / "out.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(PROJECT / "demos" / "camera.py"), "--model", str(model), "--source", str(image),
             "--loop", "--headless", "--serve", "127.0.0.1:0", *extra],
            stdout=self.out, stderr=self.err, cwd=tmp_path)
        self.url = None
        deadline = time.monotonic() + 60
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"live page at (http://\S+)", self.err_path.read_text())
            self.url = m.group(1) if m else time.sleep(0.1)
        assert self.url, self.err_path.read_text()
        self.base = self.url.split("?")[0]

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path.lstrip("/"))
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def state(self, token: str | None = None, *, min_frame: int = 0) -> dict:
        """/api/state once the demo has shown frame `min_frame` (or after 30 s)."""
        deadline = time.monotonic() + 30
        while True:
            status, body = self.get("/api/state", token)
            doc = json.loads(body)
            if (doc["frame"] is not None and doc["frame"] >= min_frame) or time.monotonic() > deadline:
                return doc
            time.sleep(0.1)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.err.close()
        return self.proc.returncode, self.err_path.read_text()


@pytest.fixture
def demo(tmp_path, tiny_models):  # noqa: F811
    d = Demo(tmp_path, tiny_models[0])
    yield d
    d.stop()


def test_demo_serves_the_page_and_keeps_printing_json_lines(demo):
    assert demo.url == demo.base  # loopback: no token
    state = demo.state(min_frame=2)  # stopped after a few frames: JSON lines kept coming while serving
    assert state["top"][0][0].startswith("class ") and state["frame"] >= 2, state
    assert state["fps"] is None or state["fps"] > 0, state
    assert demo.get("/")[0] == 200 and demo.get("/nope")[0] == 404
    code, err = demo.stop()
    assert code == 0 and "Traceback" not in err and "frames processed" in err, (code, err)
    text = demo.out_path.read_text()
    lines = [json.loads(s) for s in text.splitlines() if s.strip()]
    assert len(lines) > 2 and lines[-1]["summary"] is True and lines[0]["frame"] == 0, text[-500:]
    assert err.count("live page at") == 1, err  # printed once


def test_demo_with_a_token_file_requires_the_token_even_on_loopback(tmp_path, tiny_models):  # noqa: F811
    token_file = tmp_path / "token"
    d = Demo(tmp_path, tiny_models[0], "--token-file", str(token_file))
    try:
        token = token_file.read_text().strip()
        assert d.url.endswith(f"/?token={token}") and (token_file.stat().st_mode & 0o077) == 0
        assert d.get("/api/state")[0] == 401 and d.get("/api/state", "x" * 40)[0] == 403
        assert d.state(token)["frame"] is not None
    finally:
        code, err = d.stop()
    assert code == 0, err


def test_page_in_headless_chromium_shows_the_live_top1(demo, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium-headless-shell); the page is tested "
                    "over HTTP by test_camera_web.py")
    top1 = demo.state()["top"][0][0]  # a still image: the same top-1 on every frame
    profile = tmp_path / "chromium-profile"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", demo.url],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    m = re.search(r'<div id="top1">([^<]*)</div>', dom)
    assert m, (r.returncode, dom[:500], r.stderr[-1500:])
    import html

    assert html.unescape(m.group(1)) == top1
    fps = re.search(r'<dd id="fps">([^<]*)</dd>', dom).group(1)
    frame = re.search(r'<dd id="frame">([^<]*)</dd>', dom).group(1)
    assert frame.isdigit() and fps != ""  # the script filled in the numbers
    assert '<li class="k">' in dom and top1 in dom


def test_page_in_headless_chromium_with_the_token_url(tmp_path, tiny_models):  # noqa: F811
    """The printed URL with ?token=: the browser is sent to / with the cookie, and the page's
    own requests (state, stream) pass with that cookie."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium-headless-shell)")
    token_file = tmp_path / "token"
    d = Demo(tmp_path, tiny_models[0], "--token-file", str(token_file))
    try:
        top1 = d.state(token_file.read_text().strip())["top"][0][0]
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
                            d.url], capture_output=True, text=True, timeout=120)
        m = re.search(r'<div id="top1">([^<]*)</div>', r.stdout)
        assert m, (r.stdout[:500], r.stderr[-1500:])
        import html

        assert html.unescape(m.group(1)) == top1
        assert re.search(r'<dd id="frame">(\d+)</dd>', r.stdout)
        assert re.search(r'<span id="status"[^>]*>([^<]*)</span>', r.stdout).group(1) == "live"  # polls passed too
    finally:
        d.stop()
