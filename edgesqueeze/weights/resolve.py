"""Find a pretrained SqueezeNet weights file by name or path, downloading it only when asked.

:func:`resolve_weights` turns what a user typed (a file path, or a name such as
``squeezenet1_0-dc``) into the path of a checked weights file on disk. It uses the standard
library alone, so it works on a board with nothing but numpy installed.

Resolution order
----------------
1. ``source`` is an existing file: that path is returned as it is (not checksummed: it may be
   the user's own fine-tuned file). A string that looks like a path (it contains a path
   separator or ends in a weights suffix such as ``.net`` or ``.pth``) but is not an existing
   file is an error naming it; it never falls through to the registry.
2. ``source`` is a registry name (or a :class:`WeightSource`): the folder given by
   ``$EDGESQUEEZE_WEIGHTS`` is searched, first ``<subdir>/<filename>`` then ``<filename>``.
   If ``$EDGESQUEEZE_WEIGHTS`` is set but is not a directory, that is an error.
3. The user cache: ``<cache_dir>/<filename>`` (``cache_dir`` defaults to
   :func:`default_cache_dir`).
4. Only with ``download=True``: the entry's URL is fetched with :mod:`urllib.request` into a
   temporary file in the cache dir, hashed while it streams, checked against the entry's
   sha256 (full digest or published prefix) and size, then moved into place with
   :func:`os.replace`. On any failure the temporary file is removed: nothing half-written is
   ever left in the cache.

A file found in steps 2 or 3 is checked against the entry's size and sha256; a mismatch is an
error that names the file and says to delete or replace it. When nothing is found and
``download`` is false, one error lists every place looked and the ways to fix it.

Every error is a :class:`edgesqueeze.errors.WeightsError`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import string
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgesqueeze.errors import WeightsError

__all__ = [
    "WeightSource",
    "KNOWN_WEIGHTS",
    "WEIGHTS_ENV",
    "CACHE_ENV",
    "resolve_weights",
    "default_cache_dir",
    "sha256_of",
]

WEIGHTS_ENV = "EDGESQUEEZE_WEIGHTS"
CACHE_ENV = "EDGESQUEEZE_CACHE"

FORMATS = ("deep-compression", "state-dict", "caffemodel")

# A string ending in one of these is taken as a file path, never as a registry name.
PATH_SUFFIXES = (".net", ".pth", ".pt", ".caffemodel", ".npz", ".npy", ".bin", ".onnx", ".tflite")

_CHUNK = 1 << 20
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class WeightSource:
    """One known weights file: where it usually lies, where to download it, how to check it."""

    name: str  # e.g. "squeezenet1_0-dc"
    arch: str  # "squeezenet1_0" or "squeezenet1_1"
    format: str  # "deep-compression" | "state-dict" | "caffemodel"
    filename: str  # file name on disk
    subdir: str  # folder under $EDGESQUEEZE_WEIGHTS where it usually lies ("" if none)
    url: str | None  # public download URL
    # Full hex digest, or a hex prefix (>= 8 chars) where only a prefix is published
    # (torchvision's file names carry the first 8 hex digits of the sha256).
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise WeightsError(
                f"weights entry {self.name!r}: format {self.format!r} is not one of {', '.join(FORMATS)}"
            )
        digest = self.sha256
        if not isinstance(digest, str) or not 8 <= len(digest) <= 64 or not set(digest) <= _HEX:
            raise WeightsError(
                f"weights entry {self.name!r}: sha256 {digest!r} must be 8 to 64 hex digits "
                "(the full digest, or the published prefix)"
            )
        if not self.filename or os.sep in self.filename or "/" in self.filename:
            raise WeightsError(
                f"weights entry {self.name!r}: filename {self.filename!r} must be a bare file name"
            )
        if self.size is not None and self.size < 0:
            raise WeightsError(f"weights entry {self.name!r}: size {self.size} is negative")


KNOWN_WEIGHTS: dict[str, WeightSource] = {
    s.name: s
    for s in (
        WeightSource(
            name="squeezenet1_0-dc",
            arch="squeezenet1_0",
            format="deep-compression",
            filename="compressed_SqueezeNet.net",
            subdir="squeezenet_v1.0_deep_compression",
            url="https://github.com/songhan/SqueezeNet-Deep-Compression/raw/master/compressed_SqueezeNet.net",
            sha256="e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261",
            size=675763,
        ),
        WeightSource(
            name="squeezenet1_0-torchvision",
            arch="squeezenet1_0",
            format="state-dict",
            filename="squeezenet1_0-b66bff10.pth",
            subdir="torchvision",
            url="https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth",
            sha256="b66bff10",
        ),
        WeightSource(
            name="squeezenet1_1-torchvision",
            arch="squeezenet1_1",
            format="state-dict",
            filename="squeezenet1_1-b8a52dc0.pth",
            subdir="torchvision",
            url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
            sha256="b8a52dc0",
        ),
    )
}


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user cache: ``$EDGESQUEEZE_CACHE``, else ``$XDG_CACHE_HOME/edgesqueeze``, else
    ``~/.cache/edgesqueeze``. Empty variables count as unset."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "edgesqueeze"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".cache" / "edgesqueeze"


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise WeightsError(f"cannot read weights file {os.fspath(path)}: {e.strerror or e}") from e
    return h.hexdigest()


def _digest_matches(actual: str, expected: str) -> bool:
    return actual.lower().startswith(expected.lower())


def _expected_text(entry: WeightSource) -> str:
    if len(entry.sha256) < 64:
        return f"a sha256 starting with {entry.sha256.lower()}"
    return f"sha256 {entry.sha256.lower()}"


def _looks_like_path(text: str) -> bool:
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in text for s in seps) or text.startswith("~"):
        return True
    return text.lower().endswith(PATH_SUFFIXES)


def _verify_found(path: Path, entry: WeightSource) -> Path:
    """Check a file found for a registry entry; raise a WeightsError naming it if it is bad."""
    fix = (
        f"delete it (rm '{path}') and run again with download=True / --download, "
        f"or put the right file there"
    )
    if entry.size is not None:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise WeightsError(f"cannot read weights file {path}: {e.strerror or e}") from e
        if size != entry.size:
            raise WeightsError(
                f"weights file {path} for {entry.name!r} is {size} bytes but should be {entry.size} "
                f"bytes: it is truncated or not the right file; {fix}"
            )
    actual = sha256_of(path)
    if not _digest_matches(actual, entry.sha256):
        raise WeightsError(
            f"weights file {path} for {entry.name!r} is corrupt or a different file: its sha256 is "
            f"{actual}, expected {_expected_text(entry)}; {fix}"
        )
    return path


def _remove_quietly(path: str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _download(entry: WeightSource, cache_dir: Path, timeout: float) -> Path:
    """Fetch ``entry.url`` into ``cache_dir/entry.filename``, verified, atomically."""
    manual = (
        f"download {entry.url} by hand and pass its path, or set {WEIGHTS_ENV} to the folder "
        "that holds it"
    )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(
            f"cannot create the weights cache {cache_dir}: {e.strerror or e}; set {CACHE_ENV} "
            "(or pass cache_dir) to a writable folder"
        ) from e
    target = cache_dir / entry.filename
    tmp_name: str | None = None
    done = False
    try:
        try:
            tmp = tempfile.NamedTemporaryFile(
                dir=cache_dir, delete=False, prefix=f".{entry.filename}.", suffix=".part"
            )
        except OSError as e:
            raise WeightsError(
                f"cannot write to the weights cache {cache_dir}: {e.strerror or e}; set {CACHE_ENV} "
                "(or pass cache_dir) to a writable folder"
            ) from e
        tmp_name = tmp.name
        h = hashlib.sha256()
        received = 0
        expected_len: int | None = None
        request = urllib.request.Request(
            entry.url, headers={"User-Agent": "edgesqueeze-weights/1 (+urllib)"}
        )
        try:
            with tmp, urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.strip().isdigit():
                    expected_len = int(length)
                while chunk := response.read(_CHUNK):
                    tmp.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
        except urllib.error.HTTPError as e:
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} failed: HTTP {e.code} {e.reason}; {manual}"
            ) from e
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                what = f"timed out after {timeout:g} s"
            else:
                what = f"failed: {reason}"
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} {what}; check the network, or {manual}"
            ) from e
        except TimeoutError as e:
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} timed out after {timeout:g} s "
                f"({received} bytes received); try again with a longer timeout, or {manual}"
            ) from e
        except (http.client.HTTPException, OSError, ValueError) as e:
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} failed after {received} bytes: "
                f"{type(e).__name__}: {e}; try again, or {manual}"
            ) from e

        if expected_len is not None and received != expected_len:
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} was cut short: received {received} of "
                f"{expected_len} bytes (truncated); try again, or {manual}"
            )
        if entry.size is not None and received != entry.size:
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url} gave {received} bytes but "
                f"{entry.size} were expected (truncated or a different file); try again, or {manual}"
            )
        actual = h.hexdigest()
        if not _digest_matches(actual, entry.sha256):
            raise WeightsError(
                f"downloading {entry.name!r} from {entry.url}: sha256 mismatch, got {actual}, "
                f"expected {_expected_text(entry)}; the download is corrupt or the file changed "
                f"upstream; nothing was saved; try again, or {manual}"
            )
        try:
            os.replace(tmp_name, target)
        except OSError as e:
            raise WeightsError(
                f"cannot move the downloaded weights into {target}: {e.strerror or e}; set "
                f"{CACHE_ENV} (or pass cache_dir) to a writable folder"
            ) from e
        done = True
        return target
    finally:
        if not done:
            _remove_quietly(tmp_name)


def resolve_weights(
    source: str | os.PathLike | WeightSource,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    registry: Mapping[str, WeightSource] | None = None,
    timeout: float = 60.0,
) -> Path:
    """The path of the weights file that ``source`` names.

    ``source`` is a file path, a registry name (see :data:`KNOWN_WEIGHTS`) or a
    :class:`WeightSource`. Places are tried in this order:

    1. an existing file path is returned as it is; a path-like string (one with a path
       separator, a leading ``~`` or a weights suffix such as ``.net``/``.pth``) that is not an
       existing file is an error naming it;
    2. for a registry name: ``$EDGESQUEEZE_WEIGHTS/<subdir>/<filename>``, then
       ``$EDGESQUEEZE_WEIGHTS/<filename>`` (the variable must name a directory if set);
    3. the user cache ``<cache_dir>/<filename>`` (default :func:`default_cache_dir`);
    4. only with ``download=True``: the entry's URL, streamed into a temporary file in the
       cache dir, checked against its sha256 (full digest or published prefix) and moved into
       place; on any failure nothing is left in the cache.

    Files found in steps 2-3 are checked against the entry's size and sha256. ``environ``
    (default :data:`os.environ`) and ``registry`` (default :data:`KNOWN_WEIGHTS`) can be
    replaced, e.g. in tests. ``timeout`` is the network timeout in seconds for each blocking
    operation of the download.

    Raises :class:`~edgesqueeze.errors.WeightsError` with a message naming the file or name and
    the fix.
    """
    env = os.environ if environ is None else environ
    reg = KNOWN_WEIGHTS if registry is None else registry

    # Step 1: an explicit file path.
    if isinstance(source, WeightSource):
        entry = source
    elif isinstance(source, (str, os.PathLike)):
        try:
            text = os.fspath(source)
        except TypeError as e:  # os.PathLike whose __fspath__ returns bytes or junk
            raise WeightsError(f"weights source {source!r} is not a usable path: {e}") from e
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if not text.strip():
            raise WeightsError(
                "the weights source is empty; pass a weights file path or one of the names: "
                + ", ".join(sorted(reg))
            )
        try:
            path = Path(text).expanduser()
        except RuntimeError as e:  # "~someone" naming no known user
            raise WeightsError(f"weights path {text} cannot be expanded: {e}; check the path") from e
        if path.is_file():
            return path.absolute()
        names = ", ".join(sorted(reg)) or "(none)"
        if isinstance(source, os.PathLike) or _looks_like_path(text):
            if path.is_dir():
                raise WeightsError(
                    f"weights source {text} is a directory, not a file; pass the weights file "
                    f"inside it, or set {WEIGHTS_ENV}={text} and pass a weights name ({names})"
                )
            raise WeightsError(
                f"weights file {text} does not exist; check the path, or pass one of the "
                f"weights names ({names})"
            )
        if text not in reg:
            dir_note = (
                f" ({text} is a directory: pass the weights file inside it, or set "
                f"{WEIGHTS_ENV} to it)"
                if path.is_dir()
                else ""
            )
            raise WeightsError(
                f"unknown weights name {text!r}; the known names are: {names}; a path to a "
                f"weights file is also accepted{dir_note}"
            )
        entry = reg[text]
        if not isinstance(entry, WeightSource):
            raise WeightsError(f"registry entry {text!r} is not a WeightSource: {entry!r}")
    else:
        raise WeightsError(
            f"weights source must be a path, a weights name or a WeightSource, not "
            f"{type(source).__name__}"
        )

    looked: list[str] = []

    # Step 2: $EDGESQUEEZE_WEIGHTS.
    root_text = env.get(WEIGHTS_ENV)
    if root_text:
        root = Path(root_text).expanduser()
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise WeightsError(
                f"{WEIGHTS_ENV}={root_text} {what}; set it to the folder that holds the weights "
                f"(e.g. the folder containing {entry.subdir or entry.filename}), or unset it"
            )
        candidates = []
        if entry.subdir:
            candidates.append(root / entry.subdir / entry.filename)
        candidates.append(root / entry.filename)
        for candidate in candidates:
            looked.append(f"{candidate} (from {WEIGHTS_ENV})")
            if candidate.is_file():
                return _verify_found(candidate.absolute(), entry)
    else:
        looked.append(f"{WEIGHTS_ENV} (not set)")

    # Step 3: the user cache.
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(env)
    cached = cache / entry.filename
    looked.append(f"{cached} (cache)")
    if cached.is_file():
        return _verify_found(cached.absolute(), entry)

    # Step 4: download, only when asked.
    if download:
        if not entry.url:
            raise WeightsError(
                f"weights {entry.name!r} ({entry.filename}) has no download URL and was not found "
                f"in: {'; '.join(looked)}; pass the file's path, or set {WEIGHTS_ENV} to the "
                "folder that holds it"
            )
        return _download(entry, cache, timeout)

    hint_dir = f"{entry.subdir}/{entry.filename}" if entry.subdir else entry.filename
    url_hint = " / --download" if entry.url else ""
    raise WeightsError(
        f"weights {entry.name!r} ({entry.filename}) not found; looked in: {'; '.join(looked)}. "
        f"Fix: pass the file's path, or set {WEIGHTS_ENV} to the folder that holds "
        f"{hint_dir} (or {entry.filename})"
        + (f", or pass download=True{url_hint} to fetch it from {entry.url}" if entry.url else "")
    )
