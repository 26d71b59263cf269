"""The stages' ports: small typed interfaces the engine is written against.

Each stage is chosen by name from a registry (STT: ``stt.stt_engines``; TTS: ``tts.tts_engines``; LLM:
``llm_backend``; wake words: ``wake``), so the engine never names an implementation. Tests pass their own
implementations of these protocols. Audio crosses every input port in the one internal format: 16 kHz mono int16
numpy arrays (``audio.AudioChunk``); speech comes out of TTS at the voice's own rate, converted at the output edge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .audio import AudioChunk
from .audio_io import Segment


@runtime_checkable
class AudioSource(Protocol):
    """The microphone (or a WAV file standing in for it)."""

    alive: bool  # False when the device vanished: the loop reopens it

    def open(self) -> None: ...

    def read(self, timeout: float = 1.0) -> AudioChunk | None: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    """The speaker: plays reply segments in short blocks on its own thread; ``flush`` stops within one block."""

    file: Any  # the output WAV path in file mode, else None
    t_any_audio: float | None  # when the last sample of anything was played (the echo tail)

    def play(self, seg: Segment) -> None: ...

    def flush(self, wait: float = 0.5) -> None: ...

    @property
    def busy(self) -> bool: ...

    def close(self, min_s: float | None = None) -> None: ...


class Detection(Protocol):
    model: str
    score: float
    t: float


@runtime_checkable
class WakeWordDetector(Protocol):
    threshold_boost: float  # raised while the assistant speaks (half-duplex guard)
    threshold_override: float | None  # set from MQTT (sensitivity)

    def process(self, samples: np.ndarray, t_end: float) -> Sequence[Detection]: ...

    def reset(self) -> None: ...


@runtime_checkable
class VoiceActivity(Protocol):
    def process(self, samples: np.ndarray) -> list[float]: ...  # one speech probability per 32 ms frame

    def reset(self) -> None: ...


@runtime_checkable
class SpeechStream(Protocol):
    def feed(self, samples: np.ndarray) -> str | None: ...

    def finish(self) -> Any: ...  # stt.SttResult

    def snapshot(self) -> np.ndarray | None: ...


@runtime_checkable
class SpeechToText(Protocol):
    def open_stream(self) -> SpeechStream: ...

    def transcribe(self, samples: np.ndarray, chunk_s: float | None = None) -> Any: ...  # stt.SttResult

    def prime(self, words: str) -> None: ...  # the home's names (stt.whisper.prompt); ignored where unusable

    def unprimed(self) -> SpeechToText: ...  # the same model without them (the wake word's second look)


@runtime_checkable
class TextToSpeech(Protocol):
    """A voice: int16 arrays at ``sample_rate`` (the voice's own; the speaker converts at the output edge).

    Chosen by ``tts.engine`` from the registry in ``tts.py``. ``for_turn()`` is what one turn speaks through: a
    remote engine's view keeps the local fallback for the rest of a turn once it fell back, and ``turn_record()``
    says which backend served (and why it fell back) for the turn log.
    """

    name: str

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str) -> Iterator[np.ndarray]: ...  # one array per sentence, each as it is ready

    def synthesize_all(self, text: str) -> np.ndarray: ...

    def cached(self, text_or_key: str) -> np.ndarray: ...  # fixed phrases by key ("not_understood") or text

    def cue_tone(self, kind: str) -> np.ndarray: ...

    def for_turn(self) -> TextToSpeech: ...

    def turn_record(self) -> dict[str, Any]: ...


@runtime_checkable
class Reply(Protocol):
    """What the brain returns: iterate it for speakable pieces; the attributes fill in as it runs."""

    used_llm: bool
    t_first_token: float | None

    def __iter__(self) -> Iterator[str]: ...


@runtime_checkable
class Responder(Protocol):
    """The brain as the engine sees it."""

    on_intent: Callable[[Any, Any], None] | None

    def respond(self, text: str, *, area: str | None = None, cancel: threading.Event | None = None,
                sound: Callable[[list[str]], list[float] | None] | None = None) -> Reply: ...

    def commit_turn(self, user_text: str, spoken_text: str, interrupted: bool = False) -> None: ...
