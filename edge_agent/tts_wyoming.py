"""A Wyoming text-to-speech server as a TTS engine (``tts.engine: wyoming``): Home Assistant's protocol, served by
``wyoming-piper`` (or any Wyoming TTS) on a home server, so a small board only plays the audio.

Why it looks like this:

* **One request per sentence, on its own connection.** The responder hands over whole sentences as the LLM writes
  them, and the first one must be heard at once. A server that supports streaming (its ``info`` says
  ``supports_synthesize_streaming``, Wyoming >= 1.7) gets ``synthesize-start`` / ``synthesize-chunk`` /
  ``synthesize`` (for older servers) / ``synthesize-stop`` and answers with ``synthesize-stopped``; any other gets one
  ``synthesize``. One long stream per turn would not do: a streaming server holds the last sentence back until the
  next text or the stop tells it the sentence is over, so the first sentence would wait for the LLM's second.
* **The audio is the port's**: ``audio-start`` / ``audio-chunk`` / ``audio-stop`` at the server's rate, width and
  channels become one int16 mono array per sentence at ``sample_rate`` (the local voice's when there is a fallback,
  else the rate the server spoke at the first time it answered); the speaker converts to the device at the edge.
* **Every wait has a deadline** (``tts.wyoming.timeout_s`` per sentence, enforced by shutting the socket), and every
  line and payload read is bounded: the package's ``read_event`` cannot tell garbage from a closed connection and
  would read any length a broken server announces, so events are read with limits (wyoming_wire.py).
* **Fallback, never silence.** Unreachable, slower than the deadline, or garbage: that sentence and the rest of the
  turn are spoken by the local Piper voice (``tts.fallback: piper``), the server is marked down and probed in the
  background (``describe``) with a back-off doubling up to ``retry_max_s``; until it answers, sentences go straight
  to the local voice (no deadline paid per sentence); once it answers, the next turn uses it again. Without a local
  voice the turn says its fixed apology (cached from the server at start) or plays the error cue. Fixed phrases
  always come from the local voice when there is one: the answer to an error never depends on the network.
* ``for_turn()`` gives the responder a ``WyomingTurn`` (tts_wyoming_turn.py), which keeps a fallback for the rest of
  its turn and records which backend served and why it fell back (``turn_record()``, the turn log's ``stages.tts``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import resample, to_int16
from .cues import cue_tone
from .errors import TtsError
from .llm_http import Health, RemoteFailure, shutdown_socket
from .text import split_sentences
from .tts import SynthStats, TtsSpec, register_tts, synthesize_timed
from .tts_phrases import CLOCK_ENTRIES, DEFAULT_PHRASES, PHRASE_CACHE_MAX, PhraseCache
from .tts_wyoming_turn import WyomingTurn
from .wyoming_wire import pcm_to_int16, read_event

if TYPE_CHECKING:
    from .config import Settings, TtsSettings, WyomingTtsSettings
    from .tts import PiperTts

log = logging.getLogger(__name__)

DEFAULT_RATE = 22050  # Hz: the rate assumed without a local voice until the server has spoken once
MAX_SENTENCE_S = 120.0  # seconds of audio for one sentence: more is a broken server, not speech
WARMUP_TEXT = "Hello."


class WyomingTts:
    """A Wyoming TTS server with an optional local Piper voice as its fallback (see the module doc)."""

    name = "wyoming"

    def __init__(self, settings: WyomingTtsSettings, tts: TtsSettings, fallback: PiperTts | None = None) -> None:
        self.settings = settings
        self.tts_settings = tts
        self.fallback = fallback
        self.health = Health(self.probe, settings.retry_max_s, what="Wyoming TTS server")
        self.load_s = 0.0
        self.last_stats: SynthStats | None = None
        self.last_first_audio_s: float | None = None  # request sent -> first audio chunk, of the last remote sentence
        self.streaming: bool | None = None  # what the server's info says; None until it has been asked
        self.server_rate: int | None = None
        self._rate: int | None = None
        self._cache = PhraseCache(self, {**DEFAULT_PHRASES, **tts.phrases},
                                  max_entries=PHRASE_CACHE_MAX + tts.warm_replies + CLOCK_ENTRIES)
        self._cues: dict[str, np.ndarray] = {}
        self._last_record: dict[str, Any] = {}
        self._loaded = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WyomingTts:
        fallback = None
        if settings.tts.fallback == "piper":
            from .tts import from_settings

            fallback = from_settings(settings)
        return cls(settings.tts.wyoming, settings.tts, fallback)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Loads the local fallback voice (so a fallback sentence is prompt); without one, asks the server once for
        the rate it speaks at (a server that is away is only logged: the first turn falls back or apologises)."""
        if self._loaded:
            return
        t0 = time.monotonic()
        try:
            import wyoming  # noqa: F401
        except ImportError as e:  # pragma: no cover - installation problem
            raise TtsError(f"wyoming is not installed ({e})", fix="pip install wyoming==1.10.2") from None
        if self.fallback is not None:
            self.fallback.load()
            self._rate = self.fallback.sample_rate
        else:
            try:
                self._remote(WARMUP_TEXT)
            except RemoteFailure as e:
                log.warning("tts: the Wyoming server %s did not answer at start (%s); assuming %d Hz", self.address,
                            e, DEFAULT_RATE)
                self.health.mark_down(e)
            self._rate = self.server_rate or DEFAULT_RATE
        self._loaded = True
        self.load_s = time.monotonic() - t0

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def sample_rate(self) -> int:
        """The rate of every array this engine returns (the local voice's, or the server's first)."""
        if self._rate is None:
            raise TtsError("the Wyoming TTS engine is not loaded", fix="call load() first")
        return self._rate

    def warmup(self) -> float:
        """The local voice's warm-up, and one sentence through the server (a failure only marks it down)."""
        t0 = time.monotonic()
        if self.fallback is not None:
            self.fallback.warmup()
        if self.health.up:
            try:
                self._remote(WARMUP_TEXT)
            except RemoteFailure as e:
                log.warning("tts: the Wyoming server %s did not answer the warm-up: %s", self.address, e)
                self.health.mark_down(e)
        return time.monotonic() - t0

    def close(self) -> None:
        self.health.close()

    # ------------------------------------------------------------------ the port
    def for_turn(self) -> WyomingTurn:
        return WyomingTurn(self)

    def turn_record(self) -> dict[str, Any]:
        """The record of the last ``synthesize`` call (``edge-agent say``)."""
        return dict(self._last_record)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """One int16 array per sentence at ``sample_rate``, each as soon as it is ready (through a turn's view)."""
        turn = self.for_turn()

        def one(sentence: str) -> np.ndarray:
            audio = turn.synthesize_all(sentence)
            self._last_record = turn.turn_record()
            return audio

        yield from synthesize_timed(self, split_sentences(text), one)

    def synthesize_all(self, text: str) -> np.ndarray:
        chunks = list(self.synthesize(text))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def cached(self, text_or_key: str) -> np.ndarray:
        return self.for_turn().cached(text_or_key)

    @property
    def phrases(self) -> PhraseCache:
        """Fixed phrases: the local voice's cache when there is one, else this engine's (from the server)."""
        return self.fallback.phrases if self.fallback is not None else self._cache

    def prewarm(self, texts: list[str] | None = None) -> float:
        """Fixed phrases synthesized now: by the local voice, or else by the server (one that is away is logged)."""
        t0 = time.monotonic()
        if self.fallback is not None:
            self.fallback.prewarm(texts)
            return time.monotonic() - t0
        for key in (list(self._cache.phrases) if texts is None else texts):
            try:
                self.cached(key)
            except TtsError as e:
                log.warning("tts: phrase %r not cached: %s", key, e.message)
        return time.monotonic() - t0

    def cue_tone(self, kind: str) -> np.ndarray:
        if self.fallback is not None:
            return self.fallback.cue_tone(kind)
        if kind not in self._cues:
            audio = cue_tone(kind, self.sample_rate, self.tts_settings.volume)
            audio.setflags(write=False)
            self._cues[kind] = audio
        return self._cues[kind]

    # ------------------------------------------------------------------ the wire
    def describe(self) -> tuple[dict[str, Any], float]:
        """The server's ``info`` and the round-trip time in seconds; ``TtsError`` naming the server otherwise."""
        t0 = time.monotonic()
        try:
            info = self._describe()
        except RemoteFailure as e:
            raise TtsError(f"the Wyoming TTS server {self.address} failed describe ({e})",
                           fix="start the server (README: One server, several rooms) or check tts.wyoming") from None
        return info, time.monotonic() - t0

    def probe(self) -> None:
        """The background health probe: ``describe`` answered with ``info`` (which may have changed)."""
        self._describe()

    def _connect(self, deadline: float) -> socket.socket:
        s = self.settings
        try:
            sock = socket.create_connection((s.host, s.port), timeout=max(0.05, min(s.connect_timeout_s,
                                                                                   deadline - time.monotonic())))
        except TimeoutError:
            raise RemoteFailure("timeout", f"no connection to {self.address} within "
                                f"{s.connect_timeout_s:g} s") from None
        except OSError as e:
            raise RemoteFailure("unreachable", f"cannot connect to {self.address} ({e.strerror or e})") from None
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        return sock

    def _describe(self) -> dict[str, Any]:
        from wyoming.event import write_event
        from wyoming.info import Describe

        deadline = time.monotonic() + self.settings.timeout_s
        with self._connect(deadline) as sock, sock.makefile("rwb") as f:
            write_event(Describe().event(), f)
            event = read_event(f)
        if event.type != "info":
            raise RemoteFailure("malformed", f"describe was answered with {event.type!r}, not info")
        self._learn(event.data)
        return event.data

    def _learn(self, info: dict[str, Any]) -> None:
        programs = [p for p in info.get("tts") or [] if isinstance(p, dict)]
        if not programs:
            raise RemoteFailure("malformed", "the server offers no text-to-speech (its info lists no tts)")
        self.streaming = any(p.get("supports_synthesize_streaming") for p in programs)

    def _remote(self, sentence: str) -> np.ndarray:
        """One sentence through the server, as int16 at the server's rate converted to ``sample_rate`` (or at the
        server's rate before load has fixed it); ``RemoteFailure`` for anything but audio within the deadline."""
        from wyoming.event import write_event
        from wyoming.info import Describe
        from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

        s = self.settings
        t0 = time.monotonic()
        deadline = t0 + s.timeout_s
        sock = self._connect(deadline)
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), shutdown_socket, args=(sock,))
        timer.daemon = True
        timer.start()
        try:
            with sock, sock.makefile("rwb") as f:
                if self.streaming is None:  # asked once per server start: on this connection, before the request
                    write_event(Describe().event(), f)
                    event = read_event(f)
                    if event.type != "info":
                        raise RemoteFailure("malformed", f"describe was answered with {event.type!r}, not info")
                    self._learn(event.data)
                voice = SynthesizeVoice(name=s.voice) if s.voice else None
                if self.streaming:
                    write_event(SynthesizeStart(voice=voice).event(), f)
                    write_event(SynthesizeChunk(text=sentence).event(), f)
                    write_event(Synthesize(text=sentence, voice=voice).event(), f)  # for servers without streaming
                    write_event(SynthesizeStop().event(), f)
                else:
                    write_event(Synthesize(text=sentence, voice=voice).event(), f)
                f.flush()
                audio, rate = self._receive(f, t0, end="synthesize-stopped" if self.streaming else "audio-stop")
        except RemoteFailure as e:
            if time.monotonic() >= deadline - 0.01 and e.reason != "malformed":
                raise RemoteFailure("timeout", f"no complete audio within {s.timeout_s:g} s ({e.detail})") from None
            raise
        except OSError as e:  # a write to a closed or reset connection
            raise RemoteFailure("closed", f"the connection failed ({e})") from None
        finally:
            timer.cancel()
        self.server_rate = self.server_rate or rate
        out_rate = self._rate or rate
        if rate != out_rate:
            audio = to_int16(resample(audio, rate, out_rate))
        gain = self.tts_settings.volume
        if gain != 1.0:
            audio = np.clip(audio.astype(np.float32) * gain, -32768, 32767).astype(np.int16)
        silence = np.zeros(int(self.tts_settings.sentence_silence_s * out_rate), dtype=np.int16)
        return np.concatenate([audio, silence]) if len(silence) else audio

    def _receive(self, f: Any, t0: float, end: str) -> tuple[np.ndarray, int]:
        """Audio events until ``end`` (``audio-stop``, or ``synthesize-stopped`` after a streamed request)."""
        parts: list[np.ndarray] = []
        rate: int | None = None
        samples = 0
        while True:
            event = read_event(f)
            kind, data = event.type, event.data
            if kind == "error":
                raise RemoteFailure("error", f"the server reported: {data.get('text', data)}")
            if kind == "audio-start" or kind == "audio-chunk":
                try:
                    r, width, channels = int(data["rate"]), int(data["width"]), int(data["channels"])
                except (KeyError, TypeError, ValueError):
                    raise RemoteFailure("malformed", f"{kind} without rate, width and channels: {data}") from None
                if not 4000 <= r <= 192000 or (rate is not None and r != rate):
                    raise RemoteFailure("malformed", f"{kind} at {r} Hz")
                rate = r
                if kind == "audio-chunk" and event.payload:
                    if not parts:
                        self.last_first_audio_s = time.monotonic() - t0
                    chunk = pcm_to_int16(event.payload, width, channels)
                    parts.append(chunk)
                    samples += len(chunk)
                    if samples > MAX_SENTENCE_S * r:
                        raise RemoteFailure("malformed", f"more than {MAX_SENTENCE_S:g} s of audio for one sentence")
            elif kind == end:
                break
        if not parts or rate is None:
            raise RemoteFailure("malformed", "the server ended the sentence without any audio")
        return np.concatenate(parts), rate


def _create(settings: Settings) -> WyomingTts:
    return WyomingTts.from_settings(settings)


register_tts(TtsSpec(
    name="wyoming",
    create=_create,
    local_voice=lambda s: s.tts.fallback == "piper",  # the fallback loads tts.voice
    package="wyoming",
))
