"""The live page's server (`edgesqueeze.camera.web`, `.live`, `.page`): endpoints, the access
token, limits, bad requests, viewers that stall or leave. Everything binds to 127.0.0.1 only
(the token requirement of a LAN address is forced through `require_token`), with bounded
loops; the demo loop runs on a scripted source and a fake classifier."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from test_camera import FakeClassifier, ScriptedSource, synthetic_frame  # noqa: E402

from edgesqueeze import camera as C  # noqa: E402
from edgesqueeze.camera.live import LiveView  # noqa: E402
from edgesqueeze.camera.access import is_loopback, parse_listen, read_token_file  # noqa: E402
from edgesqueeze.camera.web import WebServer  # noqa: E402
from edgesqueeze.errors import OptionError  # noqa: E402

TOKEN = "t0ken-for-tests-0123456789abcdef"


class Running:
    """The demo loop in a thread (scripted 320x240 frames, a 5 ms fake model, an FP32 shadow)
    publishing to a LiveView served on 127.0.0.1; `stop()` ends it."""

    def __init__(self, *, delay: float = 0.005, period: float = 0.0, noise: bool = False, **server_kw):
        self.stop_flag = threading.Event()
        self.frames: list = []
        self.view = LiveView(serve_fps=server_kw.pop("serve_fps", 10.0), shadow_window=50, title="fake <b>model</b>")
        self.server = WebServer(self.view, host="127.0.0.1", port=0, **server_kw).start()
        self.shadow = C.ShadowTracker(FakeClassifier(0.01), every=5, max_load=0.25)
        rng = np.random.default_rng(0)
        noisy = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(4)]  # ~60 KB JPEGs
        make = (lambda i: noisy[i % 4].copy()) if noise else (lambda i: synthetic_frame(i, 240, 320))
        src = ScriptedSource(10**9, make=make, live=False, period=period)

        def on_frame(r):
            self.frames.append(time.perf_counter())
            return not self.stop_flag.is_set()

        self.thread = threading.Thread(target=lambda: setattr(self, "summary", C.run_loop(
            src, FakeClassifier(delay), shadow=self.shadow, on_frame=on_frame, publish=self.view.publish,
            shadow_wait=False)), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.view.published == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def fps_over(self, seconds: float) -> float:
        n0, t0 = len(self.frames), time.perf_counter()
        time.sleep(seconds)
        return (len(self.frames) - n0) / (time.perf_counter() - t0)

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)
        self.server.close()
        self.view.close()
        self.shadow.close()


@contextmanager
def running(**kw):
    r = Running(**kw)
    try:
        yield r
    finally:
        r.stop()


def get(server: WebServer, path: str, headers: dict | None = None, method: str = "GET"):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read() if not path.startswith("/stream") else b""
    c.close()
    return r.status, dict(r.getheaders()), body


def raw(server: WebServer, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send bytes as they are; what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        if data:
            s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def read_parts(sock_file, n: int) -> list[bytes]:
    """n JPEG parts of a multipart/x-mixed-replace stream."""
    parts = []
    while len(parts) < n:
        line = sock_file.readline()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            sock_file.readline()  # the blank line
            parts.append(sock_file.read(length))
    return parts


def open_stream(server: WebServer, path: str = "/stream.mjpg"):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    f = s.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += f.readline()
    return s, f, head


# ---------------------------------------------------------------- endpoints


def test_page_state_and_stream():
    with running() as r:
        status, headers, body = get(r.server, "/")
        page = body.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "script-src 'nonce-" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
        for external in ("http://", "https://", "<link", "@import", "//cdn", "url("):
            assert external not in page, external  # self-contained: works on a board with no internet
        assert "fake &lt;b&gt;model&lt;/b&gt;" in page and "<b>model</b>" not in page  # the title is escaped
        assert '<img id="stream" src="/stream.mjpg"' in page

        status, headers, body = get(r.server, "/api/state")
        state = json.loads(body)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert {"top", "fps", "infer_ms", "frame", "agreement", "comparisons", "warnings", "dropped", "bad"} <= set(state)
        assert state["frame"] >= 0 and len(state["top"]) == 3 and state["shadow"] is True
        label, score = state["top"][0]
        assert label.startswith("class ") and state["top"][0][1] >= state["top"][1][1] > 0

        s, f, head = open_stream(r.server)
        assert head.startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace; boundary=edgesqueezeframe" in head
        parts = read_parts(f, 3)
        s.close()
        img = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
        assert len(parts) == 3 and img.shape == (240, 320, 3)
        assert get(r.server, "/favicon.ico")[0] == 204
        assert get(r.server, "/", method="HEAD")[2] == b""


def test_jpeg_encoded_once_per_frame_for_all_viewers_at_the_capped_rate():
    with running(serve_fps=5.0) as r:
        assert r.view.encoded == 0  # nobody watches: nothing is encoded
        streams = [open_stream(r.server) for _ in range(5)]
        t0 = time.monotonic()
        got = [read_parts(f, 4) for _, f, _ in streams]
        elapsed = time.monotonic() - t0
        for s, _, _ in streams:
            s.close()
        assert all(len(g) == 4 for g in got)
        # five viewers, one encoding per frame shown: every viewer saw the same JPEGs
        assert len({bytes(g[-1]) for g in got}) <= 2
        assert r.view.encoded <= 5.0 * elapsed + 2, (r.view.encoded, elapsed)
        assert r.view.encoded < r.view.published


# ---------------------------------------------------------------- token


def test_loopback_needs_no_token_but_refuses_a_foreign_host_header():
    with running() as r:
        assert r.server.token is None and r.server.url == f"http://127.0.0.1:{r.server.port}/"
        assert get(r.server, "/api/state")[0] == 200
        assert get(r.server, "/api/state", {"Host": f"localhost:{r.server.port}"})[0] == 200
        status, _, body = get(r.server, "/api/state", {"Host": "attacker.example:80"})  # DNS rebinding
        assert status == 403 and body == b""


def test_token_required_beyond_loopback():
    """require_token=True stands in for a LAN address (the tests bind 127.0.0.1 only)."""
    with running(token=TOKEN, require_token=True) as r:
        assert r.server.url.endswith(f"/?token={TOKEN}")
        for path in ("/", "/api/state", "/stream.mjpg", "/nope", "/../../etc/passwd"):
            status, headers, body = get(r.server, path)
            assert status == 401 and body == b"" and "Bearer" in headers["WWW-Authenticate"], path
            status, _, body = get(r.server, path + "?token=wrong-token-0123456789")
            assert status == 403 and body == b"", path
        assert get(r.server, f"/api/state?token={TOKEN}")[0] == 200
        assert get(r.server, "/api/state", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(r.server, "/api/state", {"Authorization": "Bearer x" + TOKEN})[0] == 403
        status, headers, body = get(r.server, f"/?token={TOKEN}")  # first visit: cookie, token out of the URL
        assert status == 303 and headers["Location"] == "/" and body == b""
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        for path in ("/", "/api/state"):  # the page's own requests carry the cookie
            assert get(r.server, path, {"Cookie": f"other=1; {cookie}"})[0] == 200
        s, f, head = open_stream(r.server, f"/stream.mjpg?token={TOKEN}")
        assert head.startswith(b"HTTP/1.1 200") and len(read_parts(f, 1)) == 1
        s.close()


def test_a_random_token_per_start_when_none_is_given():
    view = LiveView()
    try:
        a = WebServer(view, host="127.0.0.1", port=0, require_token=True)
        b = WebServer(view, host="127.0.0.1", port=0, require_token=True)
        assert a.token and b.token and a.token != b.token and len(a.token) >= 32
    finally:
        view.close()


def test_token_file_is_created_private_and_kept(tmp_path):
    path = tmp_path / "token"
    token = read_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert read_token_file(path) == token  # kept across restarts
    path.chmod(0o644)
    with pytest.raises(OptionError, match="chmod 600"):
        read_token_file(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(OptionError, match="does not hold a token"):
        read_token_file(path)
    with pytest.raises(OptionError, match="does not exist"):
        read_token_file(tmp_path / "missing" / "token")


def test_listen_address_parsing():
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("raspberrypi.local:80") == ("raspberrypi.local", 80)
    for bad, why in [("http", "number"), (":8080", "no host"), ("99999", "number"), ("::1:80", "brackets"),
                     ("[::1]8080", "brackets"), ("a/b:80", "not a host"), ("-1", "number")]:
        with pytest.raises(OptionError, match=why):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("raspberrypi.local")
    assert WebServer(LiveView(), host="0.0.0.0", port=0).require_token  # not bound: the policy only


def test_port_in_use_is_a_clear_error():
    view = LiveView()
    first = WebServer(view, host="127.0.0.1", port=0).start()
    try:
        with pytest.raises(OptionError, match="in use"):
            WebServer(view, host="127.0.0.1", port=first.port).start()
    finally:
        first.close()
        view.close()


# ---------------------------------------------------------------- viewers that stall or leave


def wait_for(predicate, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_viewers_that_leave_leave_no_thread_behind():
    with running(keepalive=0.5) as r:
        get(r.server, "/api/state")
        assert wait_for(lambda: r.server.connections == 0)
        baseline = threading.active_count()
        for _ in range(3):  # come and go, three times over
            streams = [open_stream(r.server) for _ in range(4)]
            assert all(len(read_parts(f, 2)) == 2 for _, f, _ in streams)
            assert r.view.viewers == 4 and threading.active_count() >= baseline + 4
            for s, f, _ in streams:
                f.close()
                s.close()
            assert wait_for(lambda: threading.active_count() == baseline and r.view.viewers == 0), \
                [t.name for t in threading.enumerate()]
        assert r.server.connections == 0


def test_a_viewer_that_stops_reading_is_dropped_and_others_keep_up():
    with running(send_timeout=1.0, noise=True, serve_fps=20.0) as r:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        stuck.connect(("127.0.0.1", r.server.port))
        stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\n\r\n")  # and never reads
        s, f, _ = open_stream(r.server)
        t0 = time.monotonic()
        assert len(read_parts(f, 30)) == 30  # the reading viewer gets frames at the normal pace
        assert time.monotonic() - t0 < 8
        s.close()
        # the stuck one: its socket buffers fill, the send times out, its thread ends
        assert wait_for(lambda: r.server.connections == 0 and r.view.viewers == 0, timeout=15)
        stuck.close()


# ---------------------------------------------------------------- bad input


def test_bad_requests_get_4xx_and_the_loop_keeps_its_pace():
    """Hammering on 127.0.0.1 with bounded loops: unknown paths, bad tokens, a huge header,
    malformed and half-open requests, more connections than allowed. Each gets its answer (or
    is closed); the loop's frame rate stays within noise of its rate when nobody asks."""
    with running(token=TOKEN, require_token=True, max_connections=8, head_timeout=0.5, period=0.01) as r:
        quiet = r.fps_over(1.5)
        answers: dict[str, list[int]] = {}
        errors: list[BaseException] = []

        def hammer(name, data, times):
            try:
                for _ in range(times):
                    for _ in range(100):  # over the connection limit (503): try again shortly
                        code = status_of(raw(r.server, data))
                        if code != 503:
                            break
                        time.sleep(0.02)
                    answers.setdefault(name, []).append(code)
            except BaseException as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)

        cases = {
            "unknown path": (f"GET /etc/passwd?token={TOKEN} HTTP/1.1\r\n\r\n".encode(), 40),
            "traversal": (f"GET /../../../../etc/passwd?token={TOKEN} HTTP/1.1\r\n\r\n".encode(), 20),
            "no token": (b"GET /api/state HTTP/1.1\r\n\r\n", 40),
            "bad token": (b"GET /api/state?token=0123456789abcdef0123 HTTP/1.1\r\n\r\n", 40),
            "huge header": (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 10),
            "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20 + b"\r\n\r\n", 20),
            "bad version": (b"GET / HTTP/9.9\r\n\r\n", 10),
            "post": (f"POST /api/state?token={TOKEN} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".encode(), 10),
            "bad header": (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 10),
            "bad target": (b"GET //[x HTTP/1.1\r\n\r\n", 5),
            "many fields": (b"GET /?" + b"&".join(b"a%d=1" % i for i in range(50)) + b" HTTP/1.1\r\n\r\n", 5),
            "relative target": (b"GET api/state HTTP/1.1\r\n\r\n", 5),
            "half open": (b"", 4),  # connects, sends nothing
            "half a head": (b"GET / HTTP/1.1\r\nHost: x", 4),
        }
        # many connections at once, held open: 8 wait for a request (closed after the head
        # timeout), the others are answered 503 and closed at once
        flood = [socket.create_connection(("127.0.0.1", r.server.port)) for _ in range(30)]
        over_limit = []
        for s in flood:
            s.settimeout(5)
            try:
                over_limit.append(status_of(s.recv(200)))
            except (socket.timeout, ConnectionResetError):
                over_limit.append(-1)
            s.close()
        # (the listen backlog is 16: connections past it are accepted later, once slots are free)
        assert over_limit.count(503) >= 8 and set(over_limit) <= {503, 0, -1}, over_limit
        assert r.server.rejected >= 8
        threads = [threading.Thread(target=hammer, args=(name, data, n)) for name, (data, n) in cases.items()]
        for t in threads:
            t.start()
        busy = r.fps_over(1.5)
        for t in threads:
            t.join(60)
        assert not errors, errors
        expect = {"unknown path": {404}, "traversal": {404}, "no token": {401}, "bad token": {403},
                  "huge header": {431}, "garbage": {400}, "bad version": {505}, "post": {405}, "bad header": {400},
                  "bad target": {400}, "many fields": {400}, "relative target": {400},
                  "half open": {0}, "half a head": {0}}
        assert set(answers) == set(expect)
        for name, codes in answers.items():
            assert set(codes) == expect[name], (name, codes)
        assert r.thread.is_alive() and quiet > 0
        assert busy > 0.7 * quiet, (quiet, busy)  # a 2-core machine shared with other work: noise allowed
        assert wait_for(lambda: r.server.connections == 0)
        assert get(r.server, f"/api/state?token={TOKEN}")[0] == 200  # still serving


def test_a_failing_view_never_stops_the_loop():
    calls = []

    def publish(image, result, annotated):
        calls.append(result.frame)
        raise RuntimeError("viewer side broke")

    summary = C.run_loop(ScriptedSource(20), FakeClassifier(), publish=publish)
    assert summary.frames == 20 and summary.stop_reason == "end-of-stream" and len(calls) == 20


def test_state_before_any_frame_and_after_close():
    view = LiveView(title="t")
    s = view.state()
    assert s["frame"] is None and s["top"] == [] and s["running"] is True and s["shadow"] is False
    result = C.FrameResult(frame=0, seq=0, top3=(("a", 0.9),), top1_index=0, infer_ms=float("nan"), total_ms=1.0,
                           fps=None, age_ms=0.0, agreement=None, comparisons=0)
    view.publish(synthetic_frame(0), result, False)
    assert view.state()["infer_ms"] is None and json.dumps(view.state(), allow_nan=False)
    view.close()
    assert view.state()["running"] is False and view.open_stream() is False
    assert not os.environ.get("EDGESQUEEZE_NEVER_SET")  # nothing global was touched
