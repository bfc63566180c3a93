"""heap.map_large_blocks: glibc's fixed mmap threshold for the main job."""

import platform

import pytest

from edgesqueeze.heap import DEFAULT_THRESHOLD, map_large_blocks

glibc = platform.libc_ver()[0] == "glibc"


def rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_a_freed_large_block_goes_back_to_the_os():
    """With the fixed threshold, an 8 MiB block freed, allocated and freed again leaves the
    process's RSS where it was each time (glibc's dynamic threshold would serve the second one
    from the heap and keep it)."""
    import numpy as np

    assert map_large_blocks() is True
    for _ in range(3):
        before = rss_bytes()
        a = np.ones(2 << 20, np.float32)  # 8 MiB, every page touched
        assert rss_bytes() - before > 6 << 20
        del a
        assert rss_bytes() - before < 1 << 20


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1M", None])
def test_a_threshold_that_is_not_a_positive_byte_count_is_refused(bad):
    with pytest.raises(ValueError, match="positive number of bytes"):
        map_large_blocks(bad)
