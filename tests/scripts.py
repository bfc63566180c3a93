"""Load a script of benchmarks/ or demos/ as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def load_script(relative: str):
    """The module of PROJECT/`relative` (e.g. "benchmarks/run.py"), executed once under a name
    of its own. Its dataclasses look their module up in sys.modules while it is executed, so it
    is registered for that time and removed afterwards."""
    path = PROJECT / relative
    name = "script_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod
