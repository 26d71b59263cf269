"""The daemon's glibc heap settings: fewer arenas, and free pages handed back after a turn."""

from __future__ import annotations

import ctypes.util
import threading
from pathlib import Path

import pytest

from edge_agent import memory

pytestmark = pytest.mark.skipif(not (ctypes.util.find_library("c") or "").startswith("libc.so"),
                                reason="glibc only")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_returns_a_freed_turns_pages():
    # a turn's worth of 4 KiB buffers from a worker thread, one in 64 kept alive (fragmentation), the rest freed
    kept: list[bytes] = []

    def turn() -> None:
        blocks = [bytes(4000) for _ in range(40_000)]  # about 160 MB below the mmap threshold: heap memory
        kept.extend(blocks[::64])

    t = threading.Thread(target=turn)
    t.start()
    t.join()
    before = _rss_mb()
    assert memory.trim() is True
    after = _rss_mb()
    assert before - after > 50, f"RSS {before:.0f} -> {after:.0f} MB: free pages were not returned"
    assert len(kept) == 625


def test_arena_cap_applies():
    assert memory.limit_arenas() is True
