"""One internal audio format, converted at the edges.

Inside edge-agent all captured audio is 16 kHz, mono, int16 (``SAMPLE_RATE``). Device audio (any rate, any channel
count, float or int) is converted on the way in by ``InputConverter``; files by ``read_wav``. TTS audio stays at the
voice's own rate until the output edge. ``Rechunker`` re-cuts a stream into the frame size each consumer wants
(openWakeWord 1280 samples, Silero 512, Vosk anything) and keeps the leftover.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import firwin, resample_poly

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


# Scale convention, one for every path: a float sample of 1.0 is int16 32768 (int32 2**31, uint8 128 steps above
# 128). ``to_float`` maps any sample type onto it, channel mixing and resampling happen in float, and ``to_int16``
# maps back once (rounding, clipping at the int16 limits). A 0.1 full-scale sine is +-3,277 whatever the device.
INT16_FULL_SCALE = 32768.0


def to_float(x: np.ndarray) -> np.ndarray:
    """Any sample type to float32 in [-1, 1) by the scale convention above (floats are taken as already scaled)."""
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype == np.int16:
        return x.astype(np.float32) / INT16_FULL_SCALE
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2.0 ** 31).astype(np.float32)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    raise AudioError(f"unsupported sample type {x.dtype}")


def to_int16(x: np.ndarray) -> np.ndarray:
    """Any sample type to int16 by the scale convention above (clipping, never wrapping)."""
    if x.dtype == np.int16:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return np.clip(np.rint(x * INT16_FULL_SCALE), -32768, 32767).astype(np.int16)
    if x.dtype == np.int32:
        return (x >> 16).astype(np.int16)
    if x.dtype == np.uint8:
        return ((x.astype(np.int16) - 128) << 8).astype(np.int16)
    raise AudioError(f"unsupported sample type {x.dtype}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,), averaging channels, same sample type and scale."""
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return x[:, 0]
    if np.issubdtype(x.dtype, np.floating):
        return x.mean(axis=1).astype(x.dtype)
    return np.rint(x.astype(np.float64).mean(axis=1)).astype(x.dtype)


def _ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    g = gcd(rate_in, rate_out)
    return rate_out // g, rate_in // g


def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing (and anti-imaging) FIR for resampling by up/down: a Kaiser-windowed sinc cut at the lower
    Nyquist, 10 zero crossings each side, gain ``up`` to make up for the zeros stuffed between input samples."""
    m = max(up, down)
    half = 10 * m
    return firwin(2 * half + 1, 1.0 / m, window=("kaiser", 5.0)) * up


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Whole-signal resampling (files, TTS output) with a polyphase anti-aliasing filter. int16 in, int16 out (same
    scale); anything else in, float32 out on the scale convention."""
    if rate_in == rate_out:
        return x
    up, down = _ratio(rate_in, rate_out)
    if x.dtype == np.int16:
        y = resample_poly(x.astype(np.float32), up, down, window=("kaiser", 5.0))
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)
    return resample_poly(to_float(x), up, down, window=("kaiser", 5.0)).astype(np.float32)


class StreamResampler:
    """Streaming polyphase resampler for capture blocks: float32 mono in, float32 mono out, any block sizes.

    The output is exactly the same whatever the blocks are cut like (every output sample is computed from the same
    input samples with the same filter phase; the position is kept in integers, so it never drifts), and it matches
    whole-signal ``resample`` (same filter, delay compensated). It holds back the last ~10 output periods of input
    (under 2 ms) until the filter has seen what follows them.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self.up, self.down = _ratio(rate_in, rate_out)
        if rate_in == rate_out:
            return
        h = _lowpass(self.up, self.down)
        self.delay = (len(h) - 1) // 2  # in upsampled samples; output m is centred on input time m * down + delay
        self.taps = -(-len(h) // self.up)  # input samples under the filter per output sample
        bank = np.zeros(self.taps * self.up, dtype=np.float64)
        bank[: len(h)] = h
        # bank[phase, j] multiplies input sample (t // up - j) for output position t with t % up == phase
        self.bank = bank.reshape(self.taps, self.up).T.astype(np.float32).copy()
        self._buf = np.zeros(self.taps - 1, dtype=np.float32)  # zeros before the first input sample
        self._buf_start = -(self.taps - 1)  # input index of _buf[0]
        self._n_in = 0  # input samples received
        self._m_next = 0  # index of the next output sample

    def process(self, x: np.ndarray) -> np.ndarray:
        x = to_float(np.asarray(x).reshape(-1))
        if self.rate_in == self.rate_out:
            return x
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        up, down = self.up, self.down
        # output m is ready once its newest input sample (m * down + delay) // up has arrived
        m_end = (self._n_in * up - 1 - self.delay) // down + 1
        if m_end <= self._m_next:
            return np.zeros(0, dtype=np.float32)
        t = np.arange(self._m_next, m_end, dtype=np.int64) * down + self.delay
        newest = t // up - self._buf_start
        idx = newest[:, None] - np.arange(self.taps)[None, :]
        y = np.einsum("ij,ij->i", self.bank[t % up], self._buf[idx])
        self._m_next = m_end
        oldest_needed = (m_end * down + self.delay) // up - (self.taps - 1)
        drop = min(max(0, oldest_needed - self._buf_start), len(self._buf))
        self._buf = self._buf[drop:]
        self._buf_start += drop
        return y.astype(np.float32)


class InputConverter:
    """Device block (frames x channels, int16 / int32 / float32 / uint8, any rate) -> internal int16 mono 16 kHz.

    Samples go to float on the one scale convention, the channels are averaged (a microphone array's channels carry
    the same sound, so the level is that of one channel), resampled, and converted to int16 once.
    """

    def __init__(self, rate: int, channels: int) -> None:
        self.rate, self.channels = rate, channels
        self.resampler = StreamResampler(rate, SAMPLE_RATE)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.ndim == 2 and block.shape[1] == 1:
            block = block[:, 0]
        if block.ndim == 1 and block.dtype == np.int16 and self.rate == SAMPLE_RATE:
            return block  # already the internal format
        x = to_float(block)
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float32)
        return to_int16(self.resampler.process(x))


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
