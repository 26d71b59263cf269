"""Cue chimes: short numpy-made two-tone chimes ("listening", "timeout", ...), not speech: instant and
unmistakable. ``PiperTts.cue_tone`` plays them at the voice's rate and volume.
"""

from __future__ import annotations

import numpy as np

from .errors import TtsError

# Cue chimes: (tone frequencies in Hz, played in order). Rising = "I'm listening", falling = "I stopped listening".
CUE_TONES: dict[str, tuple[float, ...]] = {
    "listening": (659.25, 880.0),  # E5 -> A5
    "timeout": (880.0, 587.33),  # A5 -> D5
    "done": (783.99, 1046.5),  # G5 -> C6
    "error": (440.0, 349.23),  # A4 -> F4
    "announce": (523.25, 659.25),  # C5 -> E5: an announcement follows
}
CUE_TONE_S = 0.09  # each tone
CUE_GAP_S = 0.035  # silence between the two tones
CUE_FADE_S = 0.015  # raised-cosine attack and release: no clicks
CUE_PEAK = 0.3  # linear peak amplitude (about -10 dBFS): audible, not startling


def cue_tone(kind: str, rate: int, volume: float = 1.0) -> np.ndarray:
    """A soft two-tone chime as int16 at ``rate``: 'listening' rises, 'timeout' falls; also 'done', 'error'."""
    if kind not in CUE_TONES:
        raise TtsError(f"unknown cue {kind!r}", fix=f"use one of: {', '.join(CUE_TONES)}")
    n_tone = int(CUE_TONE_S * rate)
    n_fade = int(CUE_FADE_S * rate)
    t = np.arange(n_tone) / rate
    env = np.ones(n_tone)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_fade))
    env[:n_fade] = ramp
    env[-n_fade:] = ramp[::-1]
    parts = []
    for i, f in enumerate(CUE_TONES[kind]):
        # a little second harmonic makes a sine sound like a soft bell rather than a test signal
        tone = (np.sin(2 * np.pi * f * t) + 0.12 * np.sin(4 * np.pi * f * t)) / 1.12
        if i:
            parts.append(np.zeros(int(CUE_GAP_S * rate)))
        parts.append(tone * env)
    parts.append(np.zeros(int(0.02 * rate)))
    x = np.concatenate(parts) * CUE_PEAK * volume
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
