"""The project's exceptions.

Every error a user can cause (a bad file, a bad option, a missing package) is raised as one of
these with a message that names the problem and the fix, so the CLI can print it without a
traceback from deep inside numpy or torch.
"""

from __future__ import annotations

import os
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


class ModelFileError(DataError):
    """A model file cannot be used: missing, empty, truncated, not a model, or not one written
    by edgesqueeze. The message names the file and the fix."""


class InferenceError(EdgeSqueezeError, RuntimeError):
    """The runtime failed while running a model that has already run in this process: the file
    loads and runs, so the failure is the runtime's (memory, threads, the runtime itself), not
    the file's."""


def missing_extra(module: str, extra: str) -> ImportError:
    """The ImportError for an optional dependency that is not installed.

    Names the exact command that fixes it, e.g. ``pip install 'edgesqueeze[onnx]'``.
    """
    return ImportError(
        f"{module} is not installed; it comes with the '{extra}' extra: "
        f"pip install 'edgesqueeze[{extra}]'"
    )


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s writer


def run_command(prog: str, command: Callable[[], int]) -> int:
    """The exit code of a command-line entry point (`edgesqueeze` and the stand-alone camera
    demo both end here):

    - the command's own code;
    - 2 after one line on stderr for an EdgeSqueezeError ("PROG: error: ...") or a missing
      package ("PROG: pip install ...");
    - 130 after "PROG: interrupted" on Ctrl-C;
    - 141 (EXIT_BROKEN_PIPE, 128 + SIGPIPE, as a shell reports for a writer killed by a closed
      pipe) and nothing printed when stdout was closed early, e.g. `edgesqueeze info | head -1`.

    Output is flushed here, inside the handler: printed text waits in stdout's buffer, and a
    closed pipe would otherwise raise at the interpreter's own flush on exit, out of reach.
    After a broken pipe stdout is pointed at os.devnull (the Python documentation's recipe,
    "Note on SIGPIPE" in the signal module), so that flush at exit has nowhere to fail."""
    try:
        code = command()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except EdgeSqueezeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point file descriptor 1 at os.devnull: what is still in stdout's buffer then goes
    nowhere instead of raising BrokenPipeError again at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
