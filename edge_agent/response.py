"""``Response``: one reply of the brain, iterated for speakable pieces as they are produced."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .intent import IntentCall, IntentResult
from .text import speakable


class Response:
    """One reply: iterate it for speakable text pieces as they are produced; the attributes fill in as it runs.

    ``intents`` (calls executed, published through ``Brain.on_intent``), ``results`` (every handler result, also
    those waiting for confirmation), ``pending`` (the call awaiting a spoken yes), ``t_first_token``
    (``time.monotonic()`` of the first LLM token, None when no LLM ran), ``used_llm``, ``timings`` (seconds),
    ``rewrites`` (LLM sentences the truth guard did not let through as written: ``{"said", "spoken", "reason"}``),
    ``llm_text`` (everything the LLM wrote in words, before the guard), ``promise`` (the deed the LLM said it would
    do, held back until the turn knows whether it was done) and ``text`` (all pieces joined) are
    complete once iteration ends. Each piece ends with a space, so a downstream sentence splitter cuts at once.
    """

    def __init__(self, run: Callable[[Response], Iterator[str]]) -> None:
        self.intents: list[IntentCall] = []
        self.results: list[IntentResult] = []
        self.pending: IntentCall | None = None
        self.t_first_token: float | None = None
        self.used_llm = False
        self.error: str | None = None
        self.rewrites: list[dict[str, str]] = []
        self.llm_text = ""
        # what the LLM said it would do and the command that is ("unlock the front door"), held back (brain_llm)
        self.promise: tuple[str, IntentCall] | None = None
        self.timings: dict[str, Any] = {}
        self.t_start = time.monotonic()
        self._pieces: list[str] = []
        self._gen = run(self)

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self._gen:
                self._pieces.append(piece)
                yield piece
        finally:
            self._gen.close()
            self.timings.setdefault("total_s", round(time.monotonic() - self.t_start, 3))

    def wait(self) -> str:
        """Run to the end; the whole reply."""
        for _ in self:
            pass
        return self.text

    @property
    def text(self) -> str:
        return "".join(self._pieces).strip()


def _pieces(text: str) -> Iterator[str]:
    s = speakable(text)
    if s:
        yield s + " "
