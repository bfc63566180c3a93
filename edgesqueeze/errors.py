"""The project's exceptions.

Every error a user can cause (a bad file, a bad option, a missing package) is raised as one of
these with a message that names the problem and the fix, so the CLI can print it without a
traceback from deep inside numpy or torch.
"""

from __future__ import annotations

import sys
from typing import Callable


class EdgeSqueezeError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class WeightsError(EdgeSqueezeError, ValueError):
    """A weights file is missing, truncated, of the wrong format or of the wrong shapes."""


class DataError(EdgeSqueezeError, ValueError):
    """An image, label file or image folder cannot be used."""


class OptionError(EdgeSqueezeError, ValueError):
    """An option has a value outside the allowed ones."""


def missing_extra(module: str, extra: str) -> ImportError:
    """The ImportError for an optional dependency that is not installed.

    Names the exact command that fixes it, e.g. ``pip install 'edgesqueeze[onnx]'``.
    """
    return ImportError(
        f"{module} is not installed; it comes with the '{extra}' extra: "
        f"pip install 'edgesqueeze[{extra}]'"
    )


def run_command(prog: str, command: Callable[[], int]) -> int:
    """The exit code of a command-line entry point: its own, or 2 after one line on stderr for
    an EdgeSqueezeError ("PROG: error: ...") or a missing package ("PROG: pip install ..."),
    130 on Ctrl-C. `edgesqueeze` and the stand-alone camera demo both end here."""
    try:
        return command()
    except EdgeSqueezeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
