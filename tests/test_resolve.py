"""Tests for edgesqueeze.weights.resolve: every step of the resolution order, and downloads
against a real HTTP server on 127.0.0.1 (never anything else).

Everything is written under tmp_path; the real environment and ~/.cache are never used: each
test passes ``environ=`` and ``registry=`` (and ``cache_dir=`` where it matters).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from edgesqueeze.errors import WeightsError
from edgesqueeze.weights.resolve import (
    KNOWN_WEIGHTS,
    WeightSource,
    default_cache_dir,
    resolve_weights,
    sha256_of,
)

PAYLOAD = bytes(range(256)) * 1000 + b"edgesqueeze"  # 256 011 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
BIG = os.urandom(3 * (1 << 20) + 17)  # larger than the 1 MiB read chunk
BIG_SHA = hashlib.sha256(BIG).hexdigest()


def make_entry(
    url: str | None = None,
    *,
    sha256: str = PAYLOAD_SHA,
    size: int | None = len(PAYLOAD),
    name: str = "fake-net",
    filename: str = "fake_weights.net",
    subdir: str = "fake_sub",
) -> WeightSource:
    return WeightSource(
        name=name,
        arch="squeezenet1_0",
        format="deep-compression",
        filename=filename,
        subdir=subdir,
        url=url,
        sha256=sha256,
        size=size,
    )


def reg_of(*entries: WeightSource) -> dict[str, WeightSource]:
    return {e.name: e for e in entries}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours *_proxy variables; loopback must be reached directly."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def cache(tmp_path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """An environment with nothing set but a HOME inside tmp_path."""
    return {"HOME": str(tmp_path / "home")}


# ---------------------------------------------------------------------------- the loopback server


class Server:
    def __init__(self, routes):
        self.routes = routes  # path -> callable(handler)
        self.release = threading.Event()
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                route(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        assert host == "127.0.0.1"
        return f"http://127.0.0.1:{port}{path}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve_bytes(data: bytes):
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def serve_short(data: bytes, claimed: int):
    """Announce ``claimed`` bytes, send ``data`` (fewer), then close the connection."""

    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(claimed))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
        h.close_connection = True

    return route


def serve_stall(server_ref: list, head: bytes):
    """Send headers and a few bytes, then stall until the test is over."""

    def route(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(PAYLOAD)))
        h.end_headers()
        h.wfile.write(head)
        h.wfile.flush()
        server_ref[0].release.wait(10)
        h.close_connection = True

    return route


@pytest.fixture
def server(request):
    srv = Server({})
    request.addfinalizer(srv.close)
    return srv


# ---------------------------------------------------------------------------- helpers


def test_sha256_of(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(BIG)
    assert sha256_of(p) == BIG_SHA
    assert sha256_of(str(p)) == BIG_SHA
    with pytest.raises(WeightsError, match="cannot read"):
        sha256_of(tmp_path / "missing.bin")


def test_default_cache_dir(tmp_path):
    assert default_cache_dir({"EDGESQUEEZE_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    assert default_cache_dir(
        {"EDGESQUEEZE_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    ) == tmp_path / "c"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "edgesqueeze"
    assert default_cache_dir({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "edgesqueeze"
    # Empty variables count as unset.
    assert (
        default_cache_dir({"EDGESQUEEZE_CACHE": "", "XDG_CACHE_HOME": "", "HOME": str(tmp_path)})
        == tmp_path / ".cache" / "edgesqueeze"
    )


def test_registry_entries():
    dc = KNOWN_WEIGHTS["squeezenet1_0-dc"]
    assert dc.arch == "squeezenet1_0" and dc.format == "deep-compression"
    assert dc.filename == "compressed_SqueezeNet.net"
    assert dc.subdir == "squeezenet_v1.0_deep_compression"
    assert dc.sha256 == "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261"
    assert dc.size == 675763
    assert dc.url.startswith("https://github.com/songhan/SqueezeNet-Deep-Compression/")
    for arch in ("squeezenet1_0", "squeezenet1_1"):
        tv = KNOWN_WEIGHTS[f"{arch}-torchvision"]
        assert tv.arch == arch and tv.format == "state-dict" and tv.subdir == "torchvision"
        # torchvision's file names carry the first 8 hex digits of the sha256
        assert tv.filename == f"{arch}-{tv.sha256}.pth" and len(tv.sha256) == 8
        assert tv.url == f"https://download.pytorch.org/models/{tv.filename}"
    for name, entry in KNOWN_WEIGHTS.items():
        assert entry.name == name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": "z" * 64}, "sha256"),
        ({"sha256": "a" * 65}, "sha256"),
        ({"filename": "a/b.net"}, "bare file name"),
        ({"size": -1}, "negative"),
    ],
)
def test_weight_source_validation(kwargs, match):
    with pytest.raises(WeightsError, match=match):
        make_entry(**kwargs)
    with pytest.raises(WeightsError, match="format"):
        WeightSource("x", "squeezenet1_0", "pickle", "x.net", "", None, "a" * 8)


# ---------------------------------------------------------------------------- step 1: a file path


def test_existing_path_returned_as_is(tmp_path, env, cache):
    p = tmp_path / "mine.net"
    p.write_bytes(b"not checked: the user's own file")
    reg = reg_of(make_entry())
    assert resolve_weights(p, environ=env, registry=reg, cache_dir=cache) == p
    assert resolve_weights(str(p), environ=env, registry=reg, cache_dir=cache) == p


def test_existing_file_named_like_a_registry_name_wins(tmp_path, env, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake-net").write_bytes(b"local")
    got = resolve_weights("fake-net", environ=env, registry=reg_of(make_entry()), cache_dir=cache)
    assert got == tmp_path / "fake-net"


@pytest.mark.parametrize("text", ["does/not/exist.bin", "missing.net", "missing.pth", "~/nope"])
def test_missing_pathlike_string_is_an_error(tmp_path, env, cache, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="does not exist") as ei:
        resolve_weights(text, environ=env, registry=reg_of(make_entry()), cache_dir=cache)
    assert text in str(ei.value)
    assert "fake-net" in str(ei.value)


def test_missing_pathlike_never_falls_through_to_registry(tmp_path, env, cache, monkeypatch):
    # Even when the cache holds a good file with that file name.
    monkeypatch.chdir(tmp_path)
    entry = make_entry()
    (cache / entry.filename).write_bytes(PAYLOAD)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(
            f"elsewhere/{entry.filename}", environ=env, registry=reg_of(entry), cache_dir=cache
        )


def test_missing_pathlike_object_is_an_error(tmp_path, env, cache):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tmp_path / "fake-net", environ=env, registry=reg_of(make_entry()), cache_dir=cache)


def test_directory_is_an_error(tmp_path, env, cache):
    with pytest.raises(WeightsError, match="is a directory"):
        resolve_weights(tmp_path, environ=env, registry=reg_of(make_entry()), cache_dir=cache)


def test_unknown_name_lists_known_names(env, cache):
    reg = reg_of(make_entry(), make_entry(name="other-net", filename="other.net"))
    with pytest.raises(WeightsError) as ei:
        resolve_weights("squeezenet9", environ=env, registry=reg, cache_dir=cache)
    msg = str(ei.value)
    assert "squeezenet9" in msg and "fake-net" in msg and "other-net" in msg
    assert "path" in msg


def test_bad_source_types(env, cache):
    with pytest.raises(WeightsError):
        resolve_weights("", environ=env, registry=reg_of(make_entry()), cache_dir=cache)
    with pytest.raises(WeightsError, match="int"):
        resolve_weights(3, environ=env, registry=reg_of(make_entry()), cache_dir=cache)


# ---------------------------------------------------------------------------- step 2: $EDGESQUEEZE_WEIGHTS


def test_env_weights_subdir_first(tmp_path, env, cache):
    entry = make_entry()
    root = tmp_path / "weights"
    (root / entry.subdir).mkdir(parents=True)
    in_sub = root / entry.subdir / entry.filename
    in_sub.write_bytes(PAYLOAD)
    (root / entry.filename).write_bytes(PAYLOAD)
    (cache / entry.filename).write_bytes(PAYLOAD)
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    got = resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)
    assert got == in_sub


def test_env_weights_flat(tmp_path, env, cache):
    entry = make_entry()
    root = tmp_path / "weights"
    root.mkdir()
    (root / entry.filename).write_bytes(PAYLOAD)
    (cache / entry.filename).write_bytes(b"junk: must not be reached")
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache) == (
        root / entry.filename
    )


def test_weight_source_object_accepted(tmp_path, env, cache):
    entry = make_entry()
    root = tmp_path / "weights"
    root.mkdir()
    (root / entry.filename).write_bytes(PAYLOAD)
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    # Not in the registry at all: a WeightSource stands for itself.
    assert resolve_weights(entry, environ=env, registry={}, cache_dir=cache) == root / entry.filename


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_env_weights_not_a_directory(tmp_path, env, cache, kind):
    target = tmp_path / "weights"
    if kind == "file":
        target.write_bytes(b"x")
    env["EDGESQUEEZE_WEIGHTS"] = str(target)
    with pytest.raises(WeightsError, match="EDGESQUEEZE_WEIGHTS") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(make_entry()), cache_dir=cache)
    assert str(target) in str(ei.value)


def test_env_weights_empty_counts_as_unset(env, cache):
    entry = make_entry()
    (cache / entry.filename).write_bytes(PAYLOAD)
    env["EDGESQUEEZE_WEIGHTS"] = ""
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache) == (
        cache / entry.filename
    )


def test_env_weights_corrupt_file(tmp_path, env, cache):
    entry = make_entry()
    root = tmp_path / "weights"
    root.mkdir()
    bad = root / entry.filename
    bad.write_bytes(bytes(len(PAYLOAD)))  # right size, wrong content
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    with pytest.raises(WeightsError, match="sha256") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)
    assert str(bad) in str(ei.value) and "delete" in str(ei.value)


def test_env_weights_truncated_file(tmp_path, env, cache):
    entry = make_entry()
    root = tmp_path / "weights"
    (root / entry.subdir).mkdir(parents=True)
    bad = root / entry.subdir / entry.filename
    bad.write_bytes(PAYLOAD[:1000])
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    with pytest.raises(WeightsError, match="truncated") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)
    assert str(bad) in str(ei.value)


# ---------------------------------------------------------------------------- step 3: the cache


def test_cache_hit(env, cache):
    entry = make_entry()
    (cache / entry.filename).write_bytes(PAYLOAD)
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache) == (
        cache / entry.filename
    )


def test_cache_dir_defaults_from_environ(tmp_path, env):
    entry = make_entry()
    c = tmp_path / "envcache"
    c.mkdir()
    (c / entry.filename).write_bytes(PAYLOAD)
    env["EDGESQUEEZE_CACHE"] = str(c)
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry)) == c / entry.filename
    env2 = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    (tmp_path / "xdg" / "edgesqueeze").mkdir(parents=True)
    (tmp_path / "xdg" / "edgesqueeze" / entry.filename).write_bytes(PAYLOAD)
    assert resolve_weights("fake-net", environ=env2, registry=reg_of(entry)) == (
        tmp_path / "xdg" / "edgesqueeze" / entry.filename
    )


def test_cache_corrupt_file_names_it(env, cache):
    entry = make_entry()
    bad = cache / entry.filename
    bad.write_bytes(b"\0" * len(PAYLOAD))
    with pytest.raises(WeightsError, match="sha256") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert str(bad) in str(ei.value) and "delete" in str(ei.value)


def test_cache_truncated_file(env, cache):
    entry = make_entry()
    (cache / entry.filename).write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsError, match="truncated"):
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)


def test_cache_prefix_sha_accepted(env, cache):
    entry = make_entry(sha256=PAYLOAD_SHA[:8].upper(), size=None)
    (cache / entry.filename).write_bytes(PAYLOAD)
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache) == (
        cache / entry.filename
    )


# ---------------------------------------------------------------------------- not found


def test_not_found_lists_every_place_and_fix(tmp_path, env, cache):
    entry = make_entry(url="http://127.0.0.1:9/never-contacted")
    root = tmp_path / "weights"
    root.mkdir()
    env["EDGESQUEEZE_WEIGHTS"] = str(root)
    with pytest.raises(WeightsError, match="not found") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)
    msg = str(ei.value)
    for place in (root / entry.subdir / entry.filename, root / entry.filename, cache / entry.filename):
        assert str(place) in msg
    assert "EDGESQUEEZE_WEIGHTS" in msg and "--download" in msg and "path" in msg
    assert list(cache.iterdir()) == []


def test_not_found_without_env_var(env, cache):
    entry = make_entry()
    with pytest.raises(WeightsError, match="EDGESQUEEZE_WEIGHTS") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache)
    assert str(cache / entry.filename) in str(ei.value)


def test_download_without_url(env, cache):
    with pytest.raises(WeightsError, match="no download URL"):
        resolve_weights("fake-net", environ=env, registry=reg_of(make_entry(url=None)), cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []


# ---------------------------------------------------------------------------- step 4: download


def test_download_good(server, env, tmp_path):
    server.routes["/w.net"] = serve_bytes(PAYLOAD)
    entry = make_entry(server.url("/w.net"))
    cache = tmp_path / "new" / "cache"  # created on demand
    got = resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert got == cache / entry.filename
    assert got.read_bytes() == PAYLOAD
    assert sha256_of(got) == PAYLOAD_SHA
    assert sorted(p.name for p in cache.iterdir()) == [entry.filename]  # no stray temp files
    # A second call finds it in the cache and does not download again.
    n = len(server.requests)
    assert resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True) == got
    assert len(server.requests) == n


def test_download_big_file_in_chunks(server, env, cache):
    server.routes["/big.net"] = serve_bytes(BIG)
    entry = make_entry(server.url("/big.net"), sha256=BIG_SHA, size=len(BIG))
    got = resolve_weights(entry, environ=env, registry={}, cache_dir=cache, download=True)
    assert got.read_bytes() == BIG
    assert [p.name for p in cache.iterdir()] == [entry.filename]


def test_download_sha_prefix_accepted(server, env, cache):
    server.routes["/w.pth"] = serve_bytes(PAYLOAD)
    entry = make_entry(server.url("/w.pth"), sha256=PAYLOAD_SHA[:8], size=None, filename="w-x.pth")
    got = resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert got.read_bytes() == PAYLOAD
    assert [p.name for p in cache.iterdir()] == ["w-x.pth"]


def test_download_checksum_mismatch(server, env, cache):
    server.routes["/w.net"] = serve_bytes(PAYLOAD)
    entry = make_entry(server.url("/w.net"), sha256="0" * 64)
    with pytest.raises(WeightsError, match="sha256") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert "fake-net" in str(ei.value)
    assert list(cache.iterdir()) == []


def test_download_prefix_mismatch(server, env, cache):
    server.routes["/w.net"] = serve_bytes(PAYLOAD)
    wrong = "f" * 8 if not PAYLOAD_SHA.startswith("ffffffff") else "0" * 8
    entry = make_entry(server.url("/w.net"), sha256=wrong, size=None)
    with pytest.raises(WeightsError, match="sha256"):
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []


def test_download_404(server, env, cache):
    entry = make_entry(server.url("/missing.net"))
    with pytest.raises(WeightsError, match="404") as ei:
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert entry.url in str(ei.value)
    assert list(cache.iterdir()) == []


def test_download_short_body(server, env, cache):
    half = PAYLOAD[: len(PAYLOAD) // 2]
    server.routes["/short.net"] = serve_short(half, claimed=len(PAYLOAD))
    entry = make_entry(server.url("/short.net"))
    with pytest.raises(WeightsError, match="truncated|cut short|IncompleteRead"):
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []


def test_download_wrong_size_without_content_length_mismatch(server, env, cache):
    # The server is consistent but serves fewer bytes than the registry's size.
    server.routes["/w.net"] = serve_bytes(PAYLOAD[:-5])
    entry = make_entry(server.url("/w.net"), sha256=hashlib.sha256(PAYLOAD[:-5]).hexdigest())
    with pytest.raises(WeightsError, match="truncated"):
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []


def test_download_timeout(server, env, cache):
    ref = [server]
    server.routes["/slow.net"] = serve_stall(ref, PAYLOAD[:100])
    entry = make_entry(server.url("/slow.net"))
    with pytest.raises(WeightsError, match="timed out"):
        resolve_weights(
            "fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True, timeout=0.5
        )
    assert list(cache.iterdir()) == []


def test_download_connection_refused(tmp_path, env, cache):
    # Bind a port on loopback, then close it: nothing listens there any more.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    entry = make_entry(f"http://127.0.0.1:{port}/w.net")
    with pytest.raises(WeightsError, match="failed"):
        resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True, timeout=5)
    assert list(cache.iterdir()) == []


def test_download_keeps_existing_good_file_untouched(server, env, cache):
    # A good cached file is returned without contacting the server at all.
    entry = make_entry(server.url("/w.net"))
    (cache / entry.filename).write_bytes(PAYLOAD)
    resolve_weights("fake-net", environ=env, registry=reg_of(entry), cache_dir=cache, download=True)
    assert server.requests == []


# ---------------------------------------------------------------------------- the real data


def test_real_deep_compression_weights_resolve_from_env(tmp_path):
    root = os.environ.get("EDGESQUEEZE_WEIGHTS")
    if not root or not os.path.isdir(root):
        pytest.skip("EDGESQUEEZE_WEIGHTS is not set to an existing folder")
    entry = KNOWN_WEIGHTS["squeezenet1_0-dc"]
    candidates = [Path(root) / entry.subdir / entry.filename, Path(root) / entry.filename]
    if not any(c.is_file() for c in candidates):
        pytest.skip(f"{entry.filename} is not in $EDGESQUEEZE_WEIGHTS ({root})")
    env = {"EDGESQUEEZE_WEIGHTS": root, "HOME": str(tmp_path / "home")}
    got = resolve_weights("squeezenet1_0-dc", environ=env, cache_dir=tmp_path / "cache")
    assert got.is_file() and got.name == entry.filename
    assert got.stat().st_size == entry.size
    assert sha256_of(got) == entry.sha256
    assert not (tmp_path / "cache").exists()
