"""Fixed phrases ("Sorry, I didn't catch that.", confirmations) by stable key, and ``PhraseCache``: synthesized
once by the voice and replayed from memory, so the answer to an error costs no synthesis time at all.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .errors import TtsError

if TYPE_CHECKING:
    from .ports import TextToSpeech

CLOCK_ENTRIES = 4  # the clock's replies kept warm on top (Handlers.clock_replies: two times, up to two dates)
PHRASE_CACHE_MAX = 64  # entries; fixed phrases plus a few recently repeated replies (plus tts.warm_replies)

# Phrases the assistant says without the LLM. Keys are stable names the engine uses; settings.tts.phrases may add
# to or replace them.
DEFAULT_PHRASES: dict[str, str] = {
    "not_understood": "Sorry, I didn't catch that.",
    "error": "Sorry, something went wrong.",
    "llm_timeout": "Sorry, that took too long.",
    "ok": "Okay.",
    "done": "Done.",
    "confirm": "Are you sure? Say yes to confirm.",
    "cancelled": "Okay, cancelled.",
    "not_allowed": "Sorry, I can't do that.",
}


class PhraseCache:
    """Fixed phrases synthesized once and replayed from memory (bounded, least recently used dropped first).

    ``phrases`` maps stable keys ("not_understood") to text; ``get`` accepts a key or any text. Counts of hits and
    misses are kept for the logs. Safe to call from several threads (a rare double synthesis is harmless).
    """

    def __init__(self, tts: TextToSpeech, phrases: dict[str, str] | None = None,
                 max_entries: int = PHRASE_CACHE_MAX) -> None:
        self.tts = tts
        self.phrases = dict(phrases if phrases is not None else DEFAULT_PHRASES)
        self.max_entries = max_entries
        self._audio: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def text_of(self, text_or_key: str) -> str:
        return self.phrases.get(text_or_key, text_or_key)

    def __contains__(self, text_or_key: str) -> bool:
        return self.text_of(text_or_key) in self._audio

    def __len__(self) -> int:
        return len(self._audio)

    def get(self, text_or_key: str) -> np.ndarray:
        """The phrase's int16 audio at the voice's rate (read-only array)."""
        audio = self.lookup(text_or_key)
        if audio is not None:
            return audio
        text = self.text_of(text_or_key)
        audio = self.tts.synthesize_all(text)
        if len(audio) == 0:
            raise TtsError(f"phrase {text_or_key!r} has nothing speakable", fix="give the phrase some words")
        return self.store(text, audio)

    def lookup(self, text_or_key: str) -> np.ndarray | None:
        """The cached audio of a key or text (a hit), or None (a miss); synthesizes nothing."""
        text = self.text_of(text_or_key)
        with self._lock:
            audio = self._audio.get(text)
            if audio is not None:
                self._audio.move_to_end(text)
                self.hits += 1
                return audio
            self.misses += 1
        return None

    def store(self, text_or_key: str, audio: np.ndarray) -> np.ndarray:
        """Keep ``audio`` as the phrase's (made read-only; the least recently used entry goes beyond the bound)."""
        text = self.text_of(text_or_key)
        audio.setflags(write=False)
        with self._lock:
            self._audio[text] = audio
            while len(self._audio) > self.max_entries:
                self._audio.popitem(last=False)
        return audio

    def discard(self, text_or_key: str) -> None:
        """Forget a phrase's audio (a warmed reply gone stale: the last minute's time); absent is fine."""
        with self._lock:
            self._audio.pop(self.text_of(text_or_key), None)

    def is_fixed(self, text_or_key: str) -> bool:
        """A key of the phrase table or one of its texts (not a reply that merely repeats)."""
        return text_or_key in self.phrases or text_or_key in self.phrases.values()

    def prewarm(self, texts: Iterable[str] | None = None) -> float:
        """Synthesize the given keys/texts (default: every phrase) now; returns seconds spent."""
        t0 = time.monotonic()
        for t in (list(self.phrases) if texts is None else texts):
            self.get(t)
        return time.monotonic() - t0
