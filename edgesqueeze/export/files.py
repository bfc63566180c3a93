"""Atomic output: write beside the target, verify, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import EdgeSqueezeError


class ExportError(EdgeSqueezeError, RuntimeError):
    """An export could not be written or did not verify; nothing was left at the target."""


def check_output_path(path: str | os.PathLike) -> Path:
    """The target's folder must exist and be writable: say so before any work is done."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"{path}: folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{path}: folder {parent} is not writable; choose another path")
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give a file name")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on a clean exit it replaces `path`
    (os.replace is atomic on one file system), on any exception it is removed and the target
    is left as it was, so a reader never sees a half-written or unverified file."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
