"""Where the live page listens and who may see it: the `--serve [HOST:]PORT` text, whether an
address is this machine only (loopback), and the access token kept in `--token-file`."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path

from ..errors import OptionError

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-]{16,256}")


def parse_listen(spec: str) -> tuple[str, int]:
    """`--serve` text -> (host, port): `8080` (127.0.0.1), `0.0.0.0:8080`, `[::1]:8080`."""
    text = str(spec).strip()
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise OptionError(f"--serve {spec}: write an IPv6 address in brackets with a port, e.g. [::1]:8080")
        host, port_text = text[1:end], text[end + 2:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise OptionError(f"--serve {spec}: write an IPv6 address in brackets, e.g. [::]:8080")
        if not host:
            raise OptionError(f"--serve {spec}: no host before ':'; use {port_text} (this machine only) or "
                              f"0.0.0.0:{port_text} (every network interface)")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise OptionError(f"--serve {spec}: the port must be a number from 0 to 65535, e.g. --serve 8080")
    if len(host) > 253 or any(c.isspace() or c in "/?#@" or ord(c) < 32 for c in host):
        raise OptionError(f"--serve {spec}: {host!r} is not a host name or address")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token_file(path: str | os.PathLike) -> str:
    """The token kept in `path`; a new random one written there (mode 0600) when it does not
    exist. OptionError for a file other users can read, or that holds no usable token."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_file():
            raise OptionError(f"--token-file {p}: not a file")
        mode = p.stat().st_mode & 0o777
        if mode & 0o077:
            raise OptionError(f"--token-file {p}: other users can read it (mode {mode:o}); run chmod 600 {p}")
        token = p.read_text(encoding="utf-8", errors="replace").strip()
        if not _TOKEN_CHARS.fullmatch(token):
            raise OptionError(f"--token-file {p}: does not hold a token (16 to 256 letters, digits, - or _); "
                              "delete it and a new one is made")
        return token
    if not p.parent.is_dir():
        raise OptionError(f"--token-file {p}: folder {p.parent} does not exist; create it first")
    token = secrets.token_urlsafe(32)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token
