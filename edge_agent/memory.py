"""Keep a months-long daemon's resident memory flat on glibc: few malloc arenas, freed pages given back.

Each thread that allocates (capture, responder, synthesis, speculative STT, the MQTT loop, onnxruntime and
CTranslate2 pools) may get its own glibc arena, up to 8 per core, and an arena keeps the high-water mark of the
turns it served. Over hours RSS then climbs in steps although nothing leaks. Two arenas serve this process's few
busy threads (the heavy compute runs in the models' own native buffers), and ``malloc_trim`` after each turn
returns the free pages (a few milliseconds, after playback, off the latency path).

Elsewhere (musl, macOS) both calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt() parameter from glibc's malloc.h
ARENA_MAX = 2

_libc: Any = None
_looked = False


def _glibc() -> Any:
    global _libc, _looked
    if not _looked:
        _looked = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
        except OSError:
            _libc = None
    return _libc


def limit_arenas(n: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas; call before threads start allocating. True when applied."""
    lib = _glibc()
    if lib is None:
        return False
    ok = bool(lib.mallopt(M_ARENA_MAX, n))
    log.debug("malloc arenas capped at %d: %s", n, ok)
    return ok


def trim() -> bool:
    """Give free heap pages back to the system. True when glibc released memory."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
