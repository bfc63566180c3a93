"""What machine this is, for benchmark tables (standard library only)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo "model name" (x86), else its "Model" line (a Raspberry Pi's
    board name), else platform.processor() / platform.machine()."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    return os.cpu_count() or 1
