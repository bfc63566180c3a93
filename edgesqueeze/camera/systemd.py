"""Autostart: the text of a systemd service that runs the camera demo at boot.

`unit_text(argv, ...)` builds the unit from a finished command line; the CLI
(`edgesqueeze camera ... --print-systemd-unit`) decides which options go into it. The checks
here (`unit_model`, `unit_source`, `unit_user`) make a unit fail now, where the user sees it,
instead of at boot in the journal. demos/edgesqueeze-camera.service is an example.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import DataError, OptionError

UNIT_NAME = "edgesqueeze-camera.service"
_SYSTEMD_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@")


def systemd_quote(arg: str) -> str:
    """One ExecStart= word: as is when it has only safe characters, else double-quoted with \\
    and " escaped. `%` (a unit specifier) is written %% and `$` (variable expansion) $$, so
    systemd passes the text through unchanged. Control characters (a newline would end the
    line and could add a directive) are refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise OptionError(f"{arg!r}: a control character (newline, tab, ...) cannot go into a systemd unit; "
                          "rename the file or folder")
    text = arg.replace("%", "%%").replace("$", "$$")
    if arg and set(arg) <= _SYSTEMD_SAFE:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_model(option: str, path: str) -> str:
    """The absolute path of a model file that exists and is a .tflite/.onnx model (its bytes are
    checked as Classifier.load checks them, without loading a runtime): ModelFileError if not."""
    from ..formats.bundle import read_model_file
    from ..formats.files import format_of

    p = Path(path).expanduser().absolute()
    try:
        format_of(p, read_model_file(p)[0])
    except DataError as e:
        raise type(e)(f"{option}: {e}") from None
    return str(p)


def unit_source(spec: str) -> str:
    """A camera index, /dev/videoN, URL or picamera2 as it is; a file or folder made absolute
    (the service starts in WorkingDirectory, not here); DataError when it does not exist."""
    if spec == "picamera2" or spec.isdigit() or spec.startswith("/dev/video") or "://" in spec:
        return spec
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataError(f"--source {spec}: no such file or folder, and not a camera index (0, 1, ...), "
                        "/dev/videoN, a stream URL or 'picamera2'")
    return str(p.absolute())


def unit_user(user: str | None = None) -> str:
    """User= of the service: `user`, or who runs this (under sudo, $SUDO_USER); OptionError when
    no such user exists here."""
    import getpass

    if not user:
        sudo_user = os.environ.get("SUDO_USER")
        user = sudo_user if sudo_user and hasattr(os, "geteuid") and os.geteuid() == 0 else getpass.getuser()
    try:
        import pwd
    except ImportError:  # pragma: no cover - not POSIX: no systemd either
        return user
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise OptionError(f"--unit-user {user}: no such user on this machine; name an existing user "
                          "(the one in the 'video' group that owns the camera)") from None
    return user


def _option(argv: Sequence[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def unit_text(argv: Sequence[str], *, user: str, workdir: str | os.PathLike, network: bool = False) -> str:
    """A systemd service that runs `argv` at boot: restarted 5 s after any failure (exit 1: the
    camera is gone; 2: it could not be opened, e.g. not yet there at boot), never given up;
    `systemctl stop` sends SIGTERM, which ends the loop like Ctrl-C (summary, exit 0).
    `network`: start once the network is up (a stream source, a page served on the LAN).
    OptionError for a control character in any word."""
    workdir = Path(workdir).absolute()
    for value in (user, str(workdir)):
        systemd_quote(value)  # refuses control characters
    exec_start = " ".join(systemd_quote(str(a)) for a in argv)
    model, source, serve = _option(argv, "--model") or "?", _option(argv, "--source") or "?", _option(argv, "--serve")
    page = []
    if serve is not None:
        page = ["# The live page: the address of --serve (`journalctl -u edgesqueeze-camera | grep http` shows",
                "# the full URL, with the access token when it listens beyond this machine)."]
    lines = [
        f"# {UNIT_NAME}: the edgesqueeze camera demo at boot.",
        "# Written by `edgesqueeze camera ... --print-systemd-unit`. Install it with",
        f"#   sudo cp THIS_FILE /etc/systemd/system/{UNIT_NAME}",
        "#   sudo systemctl daemon-reload && sudo systemctl enable --now edgesqueeze-camera",
        "# Its JSON lines (one per frame, summary last): journalctl -u edgesqueeze-camera -f -o cat",
        "# The user needs the camera: on Raspberry Pi OS, membership of the 'video' group.",
        *page,
        "[Unit]",
        f"Description=edgesqueeze camera demo ({Path(model).name} on {source})".replace("%", "%%"),
        "After=network-online.target" if network else "After=network.target",
        *(["Wants=network-online.target"] if network else []),
        "# restart however often it fails (by default systemd gives up after 5 starts in 10 s)",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"WorkingDirectory={systemd_quote(str(workdir))}",
        "Environment=PYTHONUNBUFFERED=1",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=edgesqueeze-camera",
        "# SIGTERM ends the loop like Ctrl-C: a summary line, exit 0 (not restarted)",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=15",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
