"""How the C heap hands memory back: large blocks as their own mappings (glibc's mallopt).

The main job allocates and frees hundreds of float32 tensors of 1-30 MB (a batch's activations,
pass after pass). glibc serves a block of at least M_MMAP_THRESHOLD bytes with its own mmap and
returns it to the OS on free, but by default that threshold is dynamic: each freed mmapped
block raises it to the block's size (up to 32 MB on 64-bit), so after the first pass nearly
every tensor is carved from the heap instead, and the heap keeps the largest set of tensors
ever live at once plus its fragments. A fixed threshold keeps every large tensor a mapping of
its own. Measured on the main job (AMD EPYC, 2 cores, load 5-8 from other work, one run each):
peak RSS 770 MiB with a fixed 1 MiB threshold against 847 and 915 MiB with glibc's default
(`benchmarks/main_job.py`, `MALLOC_MMAP_THRESHOLD_=1048576`, which sets the same).
"""

from __future__ import annotations

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
DEFAULT_THRESHOLD = 1 << 20


def map_large_blocks(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve every heap block of `threshold` bytes or more with its own mapping from now on
    (fixed, not glibc's dynamic threshold). For a process's main job, not a library call: it
    changes how the whole process allocates. True when glibc took it; False elsewhere (another
    C library, or a value glibc refuses)."""
    if not isinstance(threshold, int) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold!r}")
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
