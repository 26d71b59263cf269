"""``stt.fallback``: an STT server (``stt.engine: wyoming``) wrapped with a local engine (``whisper`` or ``vosk``), so
an utterance is never lost to a home server that is away. ``stt.make_engine`` does the wrapping.

Why it looks like this (as the LLM's fallback in ``llm_openai.py``):

* **The audio is kept.** While the server is believed up, each chunk goes to the server's stream and a copy stays
  here (a command is a few hundred kB). When the server fails (unreachable, no transcript within
  ``stt.wyoming.timeout_s``, garbage, an error event), the kept audio goes to the local engine. A failure seen while
  the user still speaks (the server killed mid-utterance) switches at once: the local stream gets the audio so far
  and then the live audio, so Whisper's speculation at the first pause works again and nothing waits at the end.
* **No timeout paid per turn while it is down.** The first failure marks the server down (``llm_http.Health``); a
  background probe (Wyoming ``describe``, back-off doubling from 0.5 s up to ``stt.wyoming.retry_max_s``) watches
  for it, and until it answers, utterances go straight to the local engine. Once it answers, the next utterance
  uses the server again.
* **The turn log says who served and why.** ``SttResult.engine`` names the engine whose text it is and
  ``SttResult.fallback_reason`` why the server did not serve (``unreachable``, ``timeout``, ``malformed``,
  ``connection``, ``error``; while it is known down, the reason it went down); the responder writes them to the
  turn's ``stages.stt`` as ``backend`` and ``fallback_reason``, the names the LLM's calls use.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .audio import SAMPLE_RATE
from .errors import SttError
from .llm_http import Health, RemoteFailure
from .stt import SttEngine, SttResult, SttStream
from .stt_confidence import Decoded

log = logging.getLogger(__name__)

WARMUP_S = 0.5  # the server's warm-up request: half a second of a quiet hum (no words)


def _hum() -> np.ndarray:
    t = np.arange(int(WARMUP_S * SAMPLE_RATE)) / SAMPLE_RATE
    return (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


class FallbackSttEngine(SttEngine):
    """A server engine with a local one behind it: see the module docstring."""

    def __init__(self, server: SttEngine, local: SttEngine, *, retry_max_s: float = 15.0) -> None:
        super().__init__(server.model_path)
        self.server, self.local = server, local
        self.name = server.name
        address = getattr(server, "address", str(server.model_path))
        self.health = Health(self.probe, retry_max_s, what=f"STT server {address}")
        self.fallbacks = 0  # utterances the local engine transcribed

    def _load(self) -> None:
        self.server.load()
        self.local.load()

    def warmup(self) -> float:
        """The local engine's warm-up, then one tiny request to the server: a server that fails it is marked down
        now, so the first turn goes straight to the local engine."""
        t = self.local.warmup()
        self.load()
        t0 = time.perf_counter()
        stream = self.server.open_stream()
        stream.feed(_hum())
        try:
            stream.finish()
        except SttError as e:
            self.health.mark_down(RemoteFailure(getattr(stream, "failure_reason", "") or "error", e.message))
        return t + time.perf_counter() - t0

    def probe(self) -> None:
        """The background check of a server marked down: Wyoming ``describe`` (any failure is ``RemoteFailure``)."""
        try:
            describe = getattr(self.server, "describe", None)
            if describe is not None:
                describe()
            else:
                self.server.transcribe(_hum())
        except Exception as e:  # noqa: BLE001 - anything short of an answer keeps it down; the prober must not die
            raise RemoteFailure("down", str(getattr(e, "message", e))) from None

    def close(self) -> None:
        self.health.close()

    def prime(self, words: str) -> None:
        self.server.prime(words)
        self.local.prime(words)

    def _open_stream(self) -> SttStream:
        if self.health.up:
            return FallbackStream(self, self.server.open_stream())
        return FallbackStream(self, None, reason=self.health.reason or "down")

    def word_probability(self, samples: np.ndarray, before: str, word: str) -> float | None:
        """The local model's forced decoding (loaded as the fallback anyway): the server cannot score words."""
        return self.local.word_probability(samples, before, word)

    def sentence_scores(self, samples: np.ndarray, sentences: list[str], before: str = "") -> list[float] | None:
        return self.local.sentence_scores(samples, sentences, before)

    def alternatives(self, samples: np.ndarray, n: int) -> list[str] | None:
        return self.local.alternatives(samples, n)


class FallbackStream(SttStream):
    """One utterance: to the server with a copy kept, or to the local engine (from the start, or from the moment the
    server failed)."""

    def __init__(self, engine: FallbackSttEngine, server_stream: SttStream | None, reason: str = "") -> None:
        super().__init__()
        self.engine = engine
        self.server_stream = server_stream
        self.local_stream: SttStream | None = None
        self.kept: list[np.ndarray] = []
        self.reason = reason
        self.engine_name = engine.server.name
        if server_stream is None:
            self._to_local(reason)

    def _to_local(self, reason: str) -> None:
        self.reason = reason
        self.server_stream = None
        self.local_stream = self.engine.local.open_stream()
        self.engine_name = self.local_stream.engine_name
        for audio in self.kept:
            self.local_stream.feed(audio)
        self.kept = []

    def _server_failed(self, error: SttError) -> None:
        reason = getattr(self.server_stream, "failure_reason", "") or "error"
        self.engine.health.mark_down(RemoteFailure(reason, error.message))
        log.warning("stt: the server failed (%s: %s); the local %s engine transcribes the utterance", reason,
                    error.message, self.engine.local.name)
        self._to_local(reason)

    def _feed(self, samples: np.ndarray) -> str | None:
        if self.server_stream is not None and getattr(self.server_stream, "failed", False):
            try:
                self.server_stream.finish()  # returns at once: the failure is already known
            except SttError as e:
                self._server_failed(e)
        if self.server_stream is not None:
            self.kept.append(samples.copy())
            return self.server_stream.feed(samples)
        assert self.local_stream is not None
        return self.local_stream.feed(samples)

    def snapshot(self) -> np.ndarray | None:
        return self.local_stream.snapshot() if self.local_stream is not None else None

    def sentence_scores(self, sentences: list[str], before: str = "") -> list[float] | None:
        """The local model scores (the server cannot): over the audio the server was sent, or the local stream's."""
        if self.local_stream is not None:
            return self.local_stream.sentence_scores(sentences, before)
        if not self.kept:
            return None
        return self.engine.local.sentence_scores(np.concatenate(self.kept), sentences, before)

    def decoded(self, text: str) -> Decoded | None:
        """The local decode's (the server's transcript comes with no token probabilities)."""
        return self.local_stream.decoded(text) if self.local_stream is not None else None

    def alternatives(self, n: int) -> list[str] | None:
        """The local model's n-best (the server gives one reading), over the same audio as ``sentence_scores``."""
        if self.local_stream is not None:
            return self.local_stream.alternatives(n)
        if not self.kept:
            return None
        return self.engine.local.alternatives(np.concatenate(self.kept), n)

    def finish(self) -> SttResult:
        if self._finished:
            raise SttError("finish() called twice: open a new stream for each utterance")
        self._finished = True
        t0 = time.perf_counter()
        if self.server_stream is not None:
            try:
                result = self.server_stream.finish()
            except SttError as e:
                self._server_failed(e)
            else:
                result.compute_s = time.perf_counter() - t0
                return result
        assert self.local_stream is not None
        result = self.local_stream.finish()
        self.engine.fallbacks += 1
        # the whole wait is the user's: a server's timeout before the local decode counts
        result.fallback_reason, result.compute_s = self.reason, time.perf_counter() - t0
        result.audio_s = self.audio_s
        return result


__all__ = ["FallbackSttEngine", "FallbackStream"]
