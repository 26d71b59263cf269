"""One internal audio format, converted at the edges.

Inside edge-agent all captured audio is 16 kHz, mono, int16 (``SAMPLE_RATE``). Device audio (any rate, any channel
count, float or int) is converted on the way in by ``InputConverter``; files by ``read_wav``. TTS audio stays at the
voice's own rate until the output edge. ``Rechunker`` re-cuts a stream into the frame size each consumer wants
(openWakeWord 1280 samples, Silero 512, Vosk anything) and keeps the leftover.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly

from .errors import AudioError

SAMPLE_RATE = 16000  # Hz, internal format
SAMPLE_WIDTH = 2  # bytes, int16


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the internal stream: int16 mono samples at 16 kHz and the monotonic time of its first sample."""

    samples: np.ndarray
    t: float = 0.0

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def t_end(self) -> float:
        return self.t + self.seconds


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float [-1, 1] or any integer array to int16 (clipping, never wrapping)."""
    if x.dtype == np.int16:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    if x.dtype == np.int32:
        return (x >> 16).astype(np.int16)
    if x.dtype == np.uint8:
        return ((x.astype(np.int16) - 128) << 8).astype(np.int16)
    raise AudioError(f"unsupported sample type {x.dtype}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,), averaging channels."""
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float32).astype(x.dtype) if x.dtype != np.int16 else (
        x.astype(np.int32).mean(axis=1).astype(np.int16)
    )


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Whole-signal resampling (files, TTS output) with a polyphase anti-aliasing filter."""
    if rate_in == rate_out:
        return x
    from math import gcd

    g = gcd(rate_in, rate_out)
    y = resample_poly(x.astype(np.float32), rate_out // g, rate_in // g)
    if x.dtype == np.int16:
        return np.clip(y, -32768, 32767).astype(np.int16)
    return y.astype(np.float32)


class StreamResampler:
    """Streaming resampler for capture blocks: a stateful low-pass (no clicks at block edges) and a carried phase."""

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self.step = rate_in / rate_out
        self.pos = 0.0  # position of the next output sample, in input samples relative to the current block
        self.prev = np.zeros(1, dtype=np.float32)  # last input sample of the previous block (for interpolation)
        if rate_in > rate_out:
            # 4th-order Butterworth-like low-pass via scipy's IIR design at 0.9 x the output Nyquist.
            from scipy.signal import butter

            self.b, self.a = butter(6, 0.9 * rate_out / rate_in)
            self.zi = np.zeros(max(len(self.a), len(self.b)) - 1)
        else:
            self.b = self.a = None
            self.zi = None

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.rate_in == self.rate_out:
            return to_int16(x)
        xf = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
        if self.b is not None:
            xf, self.zi = lfilter(self.b, self.a, xf, zi=self.zi)
        # prepend the previous block's last sample so interpolation spans the block boundary
        buf = np.concatenate([self.prev, xf.astype(np.float32)])
        n = len(xf)
        positions = np.arange(self.pos, n, self.step)
        idx = positions + 1.0  # buf index (buf[0] is the previous sample at position -1)
        lo = np.floor(idx).astype(np.int64)
        frac = (idx - lo).astype(np.float32)
        hi = np.minimum(lo + 1, len(buf) - 1)
        y = buf[lo] * (1 - frac) + buf[hi] * frac
        self.pos = (positions[-1] + self.step - n) if len(positions) else self.pos - n
        self.prev = buf[-1:]
        return to_int16(y)


class InputConverter:
    """Device block (frames x channels, any dtype, any rate) -> internal int16 mono 16 kHz."""

    def __init__(self, rate: int, channels: int) -> None:
        self.channels = channels
        self.resampler = StreamResampler(rate, SAMPLE_RATE)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        mono = block.mean(axis=1) if block.ndim == 2 and block.shape[1] > 1 else block.reshape(-1)
        return self.resampler.process(mono)


class Rechunker:
    """Re-cut a stream into frames of exactly ``size`` samples, keeping the leftover for next time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = np.zeros(0, dtype=np.int16)

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        self._buf = np.concatenate([self._buf, samples]) if len(self._buf) else samples
        n = len(self._buf) // self.size
        frames = [self._buf[i * self.size:(i + 1) * self.size] for i in range(n)]
        self._buf = self._buf[n * self.size:]
        return frames

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a WAV (or raw 16 kHz s16le ``.raw``) file as int16 mono at ``rate``; a clear AudioError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    if p.suffix.lower() == ".raw":  # pocketsphinx test data: headerless 16 kHz s16le mono
        return resample(np.fromfile(p, dtype="<i2"), 16000, rate)
    try:
        with wave.open(str(p), "rb") as w:
            ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            data = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise AudioError(f"{p}: not a readable PCM WAV file ({e})",
                         fix="convert it, e.g. `sox in.mp3 -r 16000 -c 1 -b 16 out.wav`") from None
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise AudioError(f"{p}: {8 * width}-bit samples are not supported; use 8, 16 or 32-bit PCM")
    x = np.frombuffer(data, dtype=dtype)
    if ch > 1:
        x = x[: len(x) - len(x) % ch].reshape(-1, ch)
    x = to_int16(to_mono(np.asarray(x)))
    return resample(x, sr, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(rate)
        w.writeframes(to_int16(np.asarray(samples)).tobytes())


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 samples in dBFS (-inf for silence)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")
