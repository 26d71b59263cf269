"""Compose test recordings from real voices: wake word, pauses, requests, as a user would say them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge_agent.audio import SAMPLE_RATE, read_wav, write_wav

from .conftest import espeak_wav, piper_wav


def compose(store, parts: list[tuple[str, object]], path: Path) -> Path:
    """parts: ("piper", text) | ("espeak", text) | ("silence", seconds) | ("wav", path) | ("noise", (seconds, dbfs)).
    Cached by content: the same parts give the same file."""
    key = hashlib.sha1(repr(parts).encode()).hexdigest()[:12]
    out = path.with_name(f"{path.stem}-{key}.wav")
    if out.exists():
        return out
    pieces = []
    rng = np.random.default_rng(0)
    for i, (kind, arg) in enumerate(parts):
        if kind == "silence":
            pieces.append(np.zeros(int(float(arg) * SAMPLE_RATE), dtype=np.int16))
        elif kind == "noise":
            seconds, dbfs = arg  # type: ignore[misc]
            amp = 32768 * 10 ** (dbfs / 20)
            pieces.append((rng.standard_normal(int(seconds * SAMPLE_RATE)) * amp).astype(np.int16))
        elif kind == "piper":
            pieces.append(read_wav(piper_wav(store, str(arg), out.with_name(f"{out.stem}-p{i}.wav"))))
        elif kind == "espeak":
            pieces.append(read_wav(espeak_wav(str(arg), out.with_name(f"{out.stem}-e{i}.wav"))))
        elif kind == "wav":
            pieces.append(read_wav(arg))
        else:
            raise ValueError(kind)
    write_wav(out, np.concatenate(pieces))
    return out
