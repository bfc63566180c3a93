"""Where the defaults come from: environment variables first, then `../shared` beside the project.

    EDGESQUEEZE_SHARED   the shared data folder (weights/, imagenet/, images/)
    EDGESQUEEZE_WEIGHTS  a folder of weight files (default: <shared>/weights)

Nothing here reads a hard-coded absolute path: the fallback is `../shared` relative to the
current folder, then to the project checkout this package was imported from.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

_PROJECT = Path(__file__).resolve().parent.parent


def shared_dir(environ=None) -> Path | None:
    env = os.environ if environ is None else environ
    if env.get("EDGESQUEEZE_SHARED"):
        p = Path(env["EDGESQUEEZE_SHARED"])
        return p if p.is_dir() else None
    for base in (Path.cwd(), _PROJECT):
        p = base.parent / "shared"
        if (p / "imagenet").is_dir():
            return p
    return None


def require_shared(what: str, environ=None) -> Path:
    p = shared_dir(environ)
    if p is None:
        raise DataError(
            f"{what} not given and no shared data folder found; pass them (--images LABELS.csv or "
            "a folder of <synset>_*.JPEG images), or set "
            "EDGESQUEEZE_SHARED to the folder holding imagenet/ and weights/ (../shared beside "
            "the project is found by itself)"
        )
    return p


def ensure_weights_env(environ=None) -> None:
    """Point EDGESQUEEZE_WEIGHTS at <shared>/weights when it is unset and that folder exists."""
    env = os.environ if environ is None else environ
    if env.get("EDGESQUEEZE_WEIGHTS"):
        return
    s = shared_dir(env)
    if s is not None and (s / "weights").is_dir():
        env["EDGESQUEEZE_WEIGHTS"] = str(s / "weights")


def default_labels_csv(environ=None) -> Path:
    return require_shared("labelled images", environ) / "imagenet" / "sample_labels.csv"


def default_synset_words(environ=None) -> Path | None:
    s = shared_dir(environ)
    p = s / "imagenet" / "synset_words.txt" if s else None
    return p if p and p.is_file() else None
