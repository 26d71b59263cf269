"""Voice activity detection and endpointing: Silero VAD, a pure endpointing state machine, and a pre-roll buffer.

* ``SileroVad`` runs the Silero VAD ONNX model (the v4-style model with LSTM state ``h``/``c`` and an ``sr`` input that
  openWakeWord 0.5.1 ships) on ONNX Runtime directly: one speech probability per 512-sample (32 ms) frame. It uses
  one thread because it runs next to the wake word on a 2-4 core board.
* ``Segmenter`` decides when a spoken command started and ended from ``(chunk_seconds, is_speech)`` alone: no audio,
  no model, no clock, so its timing rules are tested with plain numbers.
* ``listener.Listener`` glues the two for the engine (with the wake-tail gate and the STT feed).
* ``PreRoll`` keeps the last fraction of a second of audio so a command spoken right on the heels of the wake word
  (``"hey jarvis turn on…"``) reaches speech-to-text whole.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from .audio import SAMPLE_RATE, AudioChunk, Rechunker
from .errors import ModelError

if TYPE_CHECKING:
    from .config import Settings, VadSettings

VAD_FRAME_SAMPLES = 512  # Silero VAD at 16 kHz: 32 ms frames
VAD_FRAME_S = VAD_FRAME_SAMPLES / SAMPLE_RATE
STATE_SHAPE = (2, 1, 64)  # Silero v4 LSTM state (layers, batch, units), for h and c alike
_EPS_S = 1e-6  # chunk durations add up in floating point; compare times with this slack


class SileroVad:
    """Silero VAD on ONNX Runtime: speech probabilities per 512-sample frame, state kept across calls."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"Silero VAD model {model_path} does not exist",
                             fix="run `edge-agent models fetch silero_vad`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types for a corrupt or foreign file
            raise ModelError(f"cannot load the Silero VAD model {model_path} ({e})",
                             fix="run `edge-agent models fetch silero_vad --force`") from None
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "sr", "h", "c"}:
            raise ModelError(
                f"{model_path} is not a Silero VAD v4 model (inputs {sorted(names)}, expected input, sr, h, c)",
                fix="use the silero_vad model from the manifest (`edge-agent models fetch silero_vad`)",
            )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._rechunker = Rechunker(VAD_FRAME_SAMPLES)
        self.cpu_s = 0.0  # process CPU time spent in inference, for benchmarks
        self.frames = 0
        self.reset()

    @classmethod
    def from_settings(cls, settings: Settings) -> SileroVad:
        from .preflight import resolve_model

        return cls(resolve_model(settings, settings.vad.model, "vad"))

    def process(self, samples: np.ndarray) -> list[float]:
        """Speech probability (0..1) of every complete 512-sample frame; leftover samples wait for the next call."""
        out = []
        cpu0 = time.process_time()
        for frame in self._rechunker.push(np.asarray(samples, dtype=np.int16).reshape(-1)):
            x = (frame.astype(np.float32) / 32768.0)[None, :]
            prob, self._h, self._c = self._session.run(None, {"input": x, "sr": self._sr, "h": self._h, "c": self._c})
            out.append(float(prob[0][0]))
        self.cpu_s += time.process_time() - cpu0
        self.frames += len(out)
        return out

    def reset(self) -> None:
        """Forget the LSTM state and any buffered samples (a new utterance)."""
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._rechunker.reset()


# --------------------------------------------------------------------------------------------------- endpointing

EventKind = Literal["speech_start", "endpoint", "timeout", "max_length"]


@dataclass(frozen=True)
class SegmentEvent:
    """What the segmenter decided, and when (seconds since it started).

    ``speech_start``: t = when the voiced run that started the speech began (``min_speech_s`` before it counted);
    ``endpoint``: t = end of the last voiced audio; ``timeout``: t = when the no-speech timeout ran out;
    ``max_length``: t = when the utterance reached ``max_utterance_s``.
    """

    kind: EventKind
    t: float

    SPEECH_START: ClassVar[str] = "speech_start"
    ENDPOINT: ClassVar[str] = "endpoint"
    TIMEOUT: ClassVar[str] = "timeout"
    MAX_LENGTH: ClassVar[str] = "max_length"


class Segmenter:
    """Endpointing as a pure state machine fed ``(chunk_seconds, is_speech)``.

    Before speech: voiced chunks add up; a non-voiced chunk resets the run, so short blips (a cough, a click) never
    start speech. After ``min_speech_s`` voiced seconds in a row, speech has started. During speech, a silence run
    of ``trailing_silence_s`` ends the turn (a shorter pause does not). ``no_speech_timeout_s`` ends the wait if
    speech never starts; ``max_utterance_s`` caps an utterance (counted from its start). After the final event
    (endpoint, timeout or max_length) ``done`` is true and further input is ignored.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.min_speech_s = settings.min_speech_s
        self.trailing_silence_s = settings.trailing_silence_s
        self.max_utterance_s = settings.max_utterance_s
        self.no_speech_timeout_s = settings.no_speech_timeout_s
        self.reset()

    def reset(self) -> None:
        self.t = 0.0
        self.in_speech = False
        self.done = False
        self.speech_start: float | None = None
        self.last_voiced: float | None = None
        self._voiced_run = 0.0
        self._silence_run = 0.0

    def process(self, chunk_seconds: float, is_speech: bool) -> list[SegmentEvent]:
        """Advance by one chunk; return the events it caused (usually none)."""
        if self.done:
            return []
        self.t += chunk_seconds
        events: list[SegmentEvent] = []
        if not self.in_speech:
            if is_speech:
                self._voiced_run += chunk_seconds
                if self._voiced_run >= self.min_speech_s - _EPS_S:
                    self.in_speech = True
                    self.speech_start = self.t - self._voiced_run
                    self.last_voiced = self.t
                    events.append(SegmentEvent("speech_start", self.speech_start))
            else:
                self._voiced_run = 0.0
                if self.t >= self.no_speech_timeout_s - _EPS_S:
                    self.done = True
                    events.append(SegmentEvent("timeout", self.t))
                    return events
            if not self.in_speech:
                return events
        else:
            if is_speech:
                self.last_voiced = self.t
                self._silence_run = 0.0
            else:
                self._silence_run += chunk_seconds
                if self._silence_run >= self.trailing_silence_s - _EPS_S:
                    self.done = True
                    assert self.last_voiced is not None
                    events.append(SegmentEvent("endpoint", self.last_voiced))
                    return events
        assert self.speech_start is not None
        if self.t - self.speech_start >= self.max_utterance_s - _EPS_S:
            self.done = True
            events.append(SegmentEvent("max_length", self.t))
        return events

    feed = process  # the name the engine uses

    def resume(self) -> None:
        """Start in speech: a continued request whose first part was heard by an earlier turn."""
        self.reset()
        self.in_speech = True
        self.speech_start = self.last_voiced = 0.0


# --------------------------------------------------------------------------------------------------- pre-roll


class PreRoll:
    """A ring buffer of the most recent audio, at most ``max_s`` seconds, dropping the oldest chunks.

    While waiting for the wake word, every captured chunk is pushed; when it fires, ``drain()`` hands the recent
    audio to the next stage so words spoken before the detection are not lost.
    """

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.max_samples = int(round(max_s * SAMPLE_RATE))
        self._chunks: deque[AudioChunk] = deque()
        self._samples = 0

    def push(self, chunk: AudioChunk) -> None:
        self._chunks.append(chunk)
        self._samples += len(chunk.samples)
        # drop whole chunks while what remains still covers max_s (drain() trims to the exact length)
        while self._chunks and self._samples - len(self._chunks[0].samples) >= self.max_samples:
            self._samples -= len(self._chunks.popleft().samples)

    @property
    def seconds(self) -> float:
        return min(self._samples, self.max_samples) / SAMPLE_RATE

    @property
    def t_start(self) -> float | None:
        """Stream time of the first sample ``drain()`` would return (None when empty)."""
        if not self._chunks:
            return None
        return self._chunks[-1].t_end - self.seconds

    def drain(self) -> np.ndarray:
        """The buffered audio (at most ``max_s`` seconds, oldest first) as int16; the buffer is empty afterwards."""
        if not self._chunks or self.max_samples == 0:
            self.clear()
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate([c.samples for c in self._chunks]).astype(np.int16, copy=False)
        self.clear()
        return audio[-self.max_samples:]

    def recent(self, seconds: float, until: float | None = None) -> np.ndarray:
        """A copy of the last ``seconds`` of audio ending at stream time ``until`` (None: the newest sample), the
        buffer left as it is (the wake word's second look reads it while the pre-roll goes on)."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate([c.samples for c in self._chunks]).astype(np.int16, copy=False)
        if until is not None:
            cut = int(round((self._chunks[-1].t_end - until) * SAMPLE_RATE))
            audio = audio[:len(audio) - max(0, min(cut, len(audio)))]
        return audio[-int(round(seconds * SAMPLE_RATE)):].copy() if seconds > 0 else audio[:0].copy()

    def clear(self) -> None:
        self._chunks.clear()
        self._samples = 0
