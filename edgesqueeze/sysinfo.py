"""What machine this is, for benchmark tables (standard library only)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo "model name" (x86), else its "Model" line (a Raspberry Pi's
    board name), else platform.processor() / platform.machine()."""
    text = _cpuinfo_text()
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    """Logical cores of the machine."""
    return os.cpu_count() or 1


def usable_cores() -> int:
    """Cores this process may run on: len(os.sched_getaffinity(0)) where the OS has it (Linux;
    a container or `taskset` can allow fewer than the machine has), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return cpu_count()


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags: the first "flags" (x86) or "Features" (ARM) line of
    /proc/cpuinfo, or of the text given; empty where there is none."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("flags", "Features"):
            return frozenset(v.split())
    return frozenset()


def cpu_clock_ghz(cpuinfo: str | None = None, *,
                  cpufreq: Path = Path("/sys/devices/system/cpu/cpu0/cpufreq")) -> tuple[float | None, str]:
    """(GHz, where it came from): cpufreq's cpuinfo_max_freq (the fastest the kernel may clock a
    core), else the highest "cpu MHz" of /proc/cpuinfo or of the text given (under a hypervisor
    that is the nominal clock: turbo may run faster), else (None, why not)."""
    try:
        khz = int((cpufreq / "cpuinfo_max_freq").read_text().strip())
        if khz > 0:
            return khz / 1e6, f"{cpufreq / 'cpuinfo_max_freq'}"
    except (OSError, ValueError):
        pass
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    mhz = []
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() == "cpu MHz":
            try:
                mhz.append(float(v))
            except ValueError:
                pass
    if mhz:
        return max(mhz) / 1000.0, '/proc/cpuinfo "cpu MHz" (nominal under a hypervisor; turbo may be faster)'
    return None, "no cpufreq and no \"cpu MHz\" in /proc/cpuinfo"


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux: "5" to /proc/self/clear_refs), so
    the next `peak_rss_mb()` is the peak since now. False where the kernel does not allow it:
    the peak is then the process's peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    """A "Key:  N kB" line of /proc/self/status (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> float | None:
    """Resident memory now, in MiB (VmRSS), else None."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb() -> float | None:
    """Peak resident memory in MiB: VmHWM of /proc/self/status (since the last
    `reset_peak_rss`), else resource's ru_maxrss (the whole process's peak), else None."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return None
