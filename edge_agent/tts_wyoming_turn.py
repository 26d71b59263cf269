"""``WyomingTurn``: what one turn speaks through with ``tts.engine: wyoming`` (``WyomingTts.for_turn()``). The
server while it serves the turn; once it fails (or is already down), the local Piper voice for the rest of the turn,
or a ``TtsError`` without one (the responder then apologises). Repeated replies are cached from the server, fixed
phrases come from the local voice; ``turn_record()`` names the backend that served and why it fell back (the turn
log's ``stages.tts``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TtsError
from .llm_http import RemoteFailure
from .text import split_sentences
from .tts_phrases import PhraseCache

if TYPE_CHECKING:
    from .tts_wyoming import WyomingTts

log = logging.getLogger("edge_agent.tts_wyoming")  # the engine's log name, as before the split


class WyomingTurn:
    """What one turn speaks through: the server, or once it failed in this turn, the local voice for the rest of
    it; ``turn_record()`` names the backend that served and why it fell back."""

    def __init__(self, engine: WyomingTts) -> None:
        self.engine = engine
        self.name = engine.name
        self.served: dict[str, int] = {}  # backend -> sentences ("cache" for replayed ones)
        self.fallback_reason = ""
        self.fallback_detail = ""
        self.apologised = False

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    @property
    def phrases(self) -> PhraseCache:
        return self.engine.phrases

    def for_turn(self) -> WyomingTurn:
        return self

    def turn_record(self) -> dict[str, Any]:
        served = dict(self.served)
        remote = [b for b in ("wyoming", "piper") if b in served]
        rec: dict[str, Any] = {"backend": "+".join(remote) or ("cache" if served else self.engine.name)}
        if self.fallback_reason:
            rec["fallback_reason"] = self.fallback_reason
        if served:
            rec["sentences"] = served
        return rec

    def _count(self, backend: str) -> None:
        self.served[backend] = self.served.get(backend, 0) + 1

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for sentence in split_sentences(text):
            audio = self.synthesize_all(sentence)
            if len(audio):
                yield audio

    def synthesize_all(self, text: str) -> np.ndarray:
        """The text's audio: from the server while it serves this turn, else from the local voice; ``TtsError``
        when neither can (no local voice: the responder then apologises)."""
        eng = self.engine
        if not self.fallback_reason and eng.health.up:
            try:
                parts = [eng._remote(sentence) for sentence in split_sentences(text)]
            except RemoteFailure as e:
                eng.health.mark_down(e)
                self.fallback_reason, self.fallback_detail = e.reason, e.detail
                log.warning("tts: the Wyoming server %s failed (%s): %s", eng.address, e,
                            "the local voice speaks the rest of the turn" if eng.fallback else "no local voice")
            else:
                self._count("wyoming")
                return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        elif not self.fallback_reason:
            self.fallback_reason = eng.health.reason or "down"
            self.fallback_detail = "the server is down; retrying in the background"
        if eng.fallback is None:
            raise TtsError(f"the Wyoming TTS server {eng.address} failed ({self.fallback_reason}: "
                           f"{self.fallback_detail})", fix="check the server (edge-agent check), or set tts.fallback: "
                           "piper")
        self._count("piper")
        return eng.fallback.synthesize_all(text)

    def cached(self, text_or_key: str) -> np.ndarray:
        """Fixed phrases from the local voice when there is one; other repeated replies (and, without a local voice,
        the fixed phrases too) from the server once, then replayed. Fallback audio is not kept for a reply: the
        server's voice says it next time."""
        eng = self.engine
        if eng.fallback is not None and eng.fallback.phrases.is_fixed(text_or_key):
            self._count("cache")
            return eng.fallback.cached(text_or_key)
        cache = eng._cache
        audio = cache.lookup(text_or_key)
        if audio is not None:
            self._count("cache")
            return audio
        before = self.served.get("piper", 0)
        audio = self.synthesize_all(cache.text_of(text_or_key))
        if len(audio) == 0:
            raise TtsError(f"phrase {text_or_key!r} has nothing speakable", fix="give the phrase some words")
        if self.served.get("piper", 0) > before:
            return audio
        return cache.store(text_or_key, audio)

    def cue_tone(self, kind: str) -> np.ndarray:
        return self.engine.cue_tone(kind)
