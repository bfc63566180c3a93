"""The web server of the live view: standard library sockets only, no file system.

    GET /              the page (page.py: one self-contained HTML file, no CDN, no fonts)
    GET /stream.mjpg   multipart/x-mixed-replace JPEG frames (the newest, at most serve_fps)
    GET /api/state     JSON of the newest frame (LiveView.state)

Safety: bound to anything but loopback, every request needs the access token (a query
parameter `?token=`, then the cookie the first page visit sets, or `Authorization: Bearer`),
compared with hmac.compare_digest; without it 401, with a wrong one 403, with no page content.
On loopback without a token, a Host header naming another machine gets 403 (a web page cannot
reach the demo through DNS rebinding). The request head is read with a size limit and a
deadline, connections and streams are counted and limited, only three fixed paths exist (no
URL reaches the file system), and anything malformed gets a 4xx and a closed connection. A
failure in a request thread is logged and ends that connection only. Plain HTTP: the token and
the pictures cross the network readable by anyone on the path.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import re
import secrets
import socket
import socketserver
import threading
import time
from urllib.parse import parse_qs, urlsplit

from ..errors import OptionError
from .access import is_loopback
from .live import LiveView
from .page import render_page

log = logging.getLogger("edgesqueeze.camera")

COOKIE = "edgesqueeze_token"
BOUNDARY = "edgesqueezeframe"
MAX_HEAD_BYTES = 8192  # request line + headers
MAX_HEADERS = 40
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class BadRequest(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def read_head(sock: socket.socket, *, limit: int = MAX_HEAD_BYTES, timeout: float = 5.0):
    """(method, target, headers) of one request; BadRequest(4xx) for a malformed, oversized or
    too slow one (`timeout` is for the whole head, so a client sending a byte at a time cannot
    hold the connection), ConnectionError when the client closed first."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        m = _HEAD_END.search(buf)
        if m:
            break
        if len(buf) > limit:
            raise BadRequest(431)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BadRequest(408)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise BadRequest(408) from None
        if not chunk:
            raise ConnectionError("closed before the request was complete")
        buf += chunk
    if m.start() > limit:
        raise BadRequest(431)
    lines = buf[:m.start()].decode("latin-1").splitlines()
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not parts[0].isalpha():
        raise BadRequest(400)
    method, target, version = parts
    if not re.fullmatch(r"HTTP/1\.[01]", version):
        raise BadRequest(505 if version.startswith("HTTP/") else 400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise BadRequest(400)  # also obsolete line folding (a line starting with a space)
        key = name.lower()
        headers[key] = f"{headers[key]}; {value.strip()}" if key == "cookie" and key in headers else value.strip()
    if len(headers) > MAX_HEADERS:
        raise BadRequest(431)
    if not target.startswith("/") or len(target) > 2048:
        raise BadRequest(414 if len(target) > 2048 else 400)
    return method, target, headers


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip()
    return None


class _Listener(socketserver.TCPServer):
    """One thread per connection, at most `owner.max_connections` at once (the next ones get
    a 503 from the accepting thread and are closed); errors are logged, never printed."""

    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address, owner: "WebServer"):
        self.owner = owner
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        if not self.owner._enter(request):
            try:
                request.settimeout(0.2)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        t = threading.Thread(target=self._one, args=(request, client_address), name="edgesqueeze-web", daemon=True)
        t.start()

    def _one(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as e:  # noqa: BLE001 - one connection's failure ends that connection only
            log.debug("live page: %s: %s: %s", client_address, type(e).__name__, e)
        finally:
            self.shutdown_request(request)
            self.owner._leave(request)

    def handle_error(self, request, client_address) -> None:
        log.debug("live page: error on a connection from %s", client_address, exc_info=True)


class _Handler(socketserver.BaseRequestHandler):
    server: _Listener

    def handle(self) -> None:
        owner, sock = self.server.owner, self.request
        self.method = "GET"
        try:
            method, target, headers = read_head(sock, timeout=owner.head_timeout)
        except BadRequest as e:
            if e.status != 408:  # a client that sends nothing gets nothing
                self.send(e.status)
            return
        except (ConnectionError, OSError):
            return
        self.method = method
        if method not in ("GET", "HEAD"):
            return self.send(405, extra=[("Allow", "GET, HEAD")])
        try:
            url = urlsplit(target)
            query = parse_qs(url.query, max_num_fields=8) if url.query else {}
        except ValueError:  # "//[x" (a broken IPv6 host), too many query fields
            return self.send(400)
        status = owner.check_access(query.get("token", [None])[0], headers)
        if status:
            return self.send(status, extra=[("WWW-Authenticate", 'Bearer realm="edgesqueeze"')] if status == 401 else [])
        if url.path == "/" and "token" in query and owner.token:  # keep the token out of the address bar
            return self.send(303, extra=[("Location", "/"), ("Set-Cookie", owner.cookie())])
        if url.path == "/":
            nonce = secrets.token_urlsafe(16)
            body = render_page(owner.view.state(), nonce=nonce).encode("utf-8")
            csp = (f"default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'nonce-{nonce}'; "
                   f"style-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            return self.send(200, body, "text/html; charset=utf-8", [("Content-Security-Policy", csp)])
        if url.path == "/api/state":
            body = json.dumps(owner.view.state(), allow_nan=False).encode("utf-8")
            return self.send(200, body, "application/json")
        if url.path == "/stream.mjpg":
            return self.stream()
        if url.path == "/favicon.ico":
            return self.send(204)
        return self.send(404)

    def send(self, status: int, body: bytes = b"", ctype: str | None = None, extra=()) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Length: {len(body)}",
                "Cache-Control: no-store", "X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer",
                "X-Frame-Options: DENY", "Connection: close"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head += [f"{k}: {v}" for k, v in extra]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.request.settimeout(self.server.owner.send_timeout)
        self.request.sendall(data + (body if self.method != "HEAD" else b""))

    def stream(self) -> None:
        owner, view, sock = self.server.owner, self.server.owner.view, self.request
        if not owner._stream_slot():
            return self.send(503, extra=[("Retry-After", "5")])
        try:
            if not view.open_stream():
                return self.send(503)
            try:
                sock.settimeout(owner.send_timeout)  # a viewer that stops reading is dropped, not waited for
                # a small kernel buffer: a slow viewer holds a frame or two there, not seconds of them
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, owner.stream_buffer)
                sock.sendall((f"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
                              "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
                              "\r\n").encode("latin-1"))
                if self.method == "HEAD":
                    return
                last, last_sent = 0, time.monotonic()
                while not owner.closing and not view.closed:
                    got, data = view.next_jpeg(last, timeout=0.5)
                    if data is None:
                        # no new frame (source stalled, loop ended): re-send the last one now and
                        # then, so a viewer that left is noticed and its thread ends
                        data = view.latest_jpeg() if time.monotonic() - last_sent > owner.keepalive else None
                        if data is None:
                            continue
                    sock.sendall(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                 % (BOUNDARY.encode(), len(data), data))
                    last, last_sent = got, time.monotonic()
            finally:
                view.close_stream()
        except OSError:  # the viewer went away (reset, broken pipe, send timeout)
            pass
        finally:
            owner._stream_done()


class WebServer:
    """Serves `view` at http://host:port/ from a background thread; `start()`, `url`, `close()`.

    require_token: None -> required when `host` is not loopback (then a random token is made
    if none is given); True forces it on any address (tests, --token-file). `token` is printed
    by the caller only (as part of `url`)."""

    def __init__(self, view: LiveView, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
                 require_token: bool | None = None, max_connections: int = 16, max_streams: int = 8,
                 head_timeout: float = 5.0, send_timeout: float = 10.0, keepalive: float = 2.0,
                 stream_buffer: int = 128 * 1024):
        self.view, self.host, self.port = view, host, port
        self.require_token = (not is_loopback(host)) if require_token is None else bool(require_token)
        self.token = (token or secrets.token_urlsafe(32)) if self.require_token else None
        self.max_connections, self.max_streams = max_connections, max_streams
        self.head_timeout, self.send_timeout, self.keepalive = head_timeout, send_timeout, keepalive
        self.stream_buffer = stream_buffer
        self.closing = False
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._streams = 0
        self._listener: _Listener | None = None
        self._thread: threading.Thread | None = None
        self.rejected = 0  # connections over the limit

    def start(self) -> "WebServer":
        """Bind and serve; OptionError naming the fix when the address cannot be used."""
        try:
            self._listener = _Listener((self.host, self.port), self)
        except socket.gaierror:
            raise OptionError(f"--serve {self.host}:{self.port}: unknown host {self.host!r}; use an address of this "
                              "machine, 0.0.0.0 (every interface) or 127.0.0.1") from None
        except OSError as e:
            why = {errno.EADDRINUSE: "the port is in use (another program, or the demo already running); choose "
                                     "another port",
                   errno.EACCES: "ports below 1024 need root; use a port such as 8080",
                   errno.EADDRNOTAVAIL: "this machine has no such address; use 0.0.0.0 (every interface) or "
                                        "127.0.0.1"}.get(e.errno, e.strerror or str(e))
            raise OptionError(f"--serve {self.host}:{self.port}: cannot listen there: {why}") from None
        self.port = self._listener.server_address[1]
        self._thread = threading.Thread(target=self._listener.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgesqueeze-web-accept", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        """The page's address (with ?token=... when one is required)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def cookie(self) -> str:
        return f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"

    def check_access(self, query_token: str | None, headers: dict[str, str]) -> int:
        """0 when the request may go on, else its status: 401 without a token, 403 with a
        wrong one (or a foreign Host on an open loopback server)."""
        if not self.require_token:
            host = headers.get("host")
            if host is not None:
                name = host[1:host.find("]")] if host.startswith("[") else host.rpartition(":")[0] or host
                if not is_loopback(name):
                    return 403
            return 0
        auth = headers.get("authorization", "")
        given = query_token or _cookie(headers, COOKIE) or (auth[7:].strip() if auth[:7].lower() == "bearer " else None)
        if not given:
            return 401
        return 0 if hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8")) else 403

    # -- connection accounting
    def _enter(self, sock) -> bool:
        with self._lock:
            if self.closing or len(self._conns) >= self.max_connections:
                self.rejected += 1
                return False
            self._conns.add(sock)
            return True

    def _leave(self, sock) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _stream_slot(self) -> bool:
        with self._lock:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def _stream_done(self) -> None:
        with self._lock:
            self._streams -= 1

    @property
    def connections(self) -> int:
        return len(self._conns)

    def close(self, timeout: float = 3.0) -> None:
        """Stop accepting, end every open connection, wait for their threads (at most `timeout`)."""
        if self._listener is None or self.closing:
            return
        self.closing = True
        self._listener.shutdown()
        self._listener.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # wakes threads blocked in recv/send
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._thread is not None:
            self._thread.join(timeout)
