"""The spoken history the LLM sees: ``Conversation`` (bounded by turns and tokens, forgotten when idle) of
``HistoryTurn``s, holding only what was actually spoken."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .config import ConversationSettings
from .llm_backend import Message
from .truth import spoken_history_text

HISTORY_TRIM_TO = 0.5  # over a history limit, drop the oldest turns down to this fraction of it


@dataclass
class HistoryTurn:
    user: str
    assistant: str
    interrupted: bool
    t: float
    context: str = ""  # the context line the LLM saw before these words (rendered again: the cached prompt matches)


class Conversation:
    """Bounded spoken history: at most ``max_turns`` turns and ``max_history_tokens`` tokens; forgotten when idle.

    Over a limit, the oldest turns go until the history is back to half of it (``HISTORY_TRIM_TO``), not just
    under it: the history's start then changes only every few turns, and in between llama.cpp reuses the whole
    cached prompt up to the new exchange. Dropping one turn at a time shifted the start on every turn and made each
    answer evaluate the whole history again: in the soak, LLM answers' first audio went from 1.9 s on the first
    question to 4.2 s median once the history was full. Measured over 24 alternating questions and commands: first
    token 2.7 s median with one-at-a-time, 0.7 s with trim-to-half (1.8-1.9 s on the one turn in two that trims).

    Pure logic: the clock and the token counter are injected, so the limits are tested with plain numbers.
    """

    def __init__(self, settings: ConversationSettings, count_tokens: Callable[[str], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.count_tokens = count_tokens or (lambda s: max(1, len(s) // 4))
        self.clock = clock
        self.turns: deque[HistoryTurn] = deque()
        self.version = 0  # counts changes (a turn added, cleared, forgotten): preemptive work built on another is stale
        self._lock = threading.Lock()  # a timer's command may run on another thread than the voice loop

    def add(self, user: str, assistant: str, interrupted: bool = False, context: str = "") -> None:
        with self._lock:
            self._add(user, assistant, interrupted, context)

    def _add(self, user: str, assistant: str, interrupted: bool, context: str) -> None:
        self._expire()
        self.version += 1
        if self.settings.max_turns == 0:
            return
        self.turns.append(HistoryTurn(user.strip(), assistant.strip(), interrupted, self.clock(), context.strip()))
        max_turns, max_tokens = self.settings.max_turns, self.settings.max_history_tokens
        if len(self.turns) > max_turns:
            while len(self.turns) > max(1, math.ceil(max_turns * HISTORY_TRIM_TO)):
                self.turns.popleft()
        if self._tokens() > max_tokens:
            while self.turns and self._tokens() > max_tokens * HISTORY_TRIM_TO:
                self.turns.popleft()

    def messages(self) -> list[Message]:
        """The history as chat messages, oldest first (empty after ``expire_s`` of silence)."""
        with self._lock:
            self._expire()
            turns = list(self.turns)
        out: list[Message] = []
        for t in turns:
            if t.context:
                out.append({"role": "system", "content": t.context})
            out.append({"role": "user", "content": t.user})
            out.append({"role": "assistant", "content": _assistant_text(t)})
        return out

    def last_reply(self) -> str:
        """What the assistant said last (stripped), or "" when the history is empty or forgotten."""
        with self._lock:
            self._expire()
            return _assistant_text(self.turns[-1]).strip() if self.turns else ""

    def clear(self) -> None:
        with self._lock:
            self.turns.clear()
            self.version += 1

    def _tokens(self) -> int:
        return sum(self.count_tokens(t.user) + self.count_tokens(_assistant_text(t)) + 8
                   + (self.count_tokens(t.context) + 4 if t.context else 0) for t in self.turns)

    def _expire(self) -> None:
        if self.turns and self.settings.expire_s > 0 and self.clock() - self.turns[-1].t > self.settings.expire_s:
            self.turns.clear()
            self.version += 1


def _assistant_text(t: HistoryTurn) -> str:
    """What the assistant said, and nothing else: an interruption is only the words breaking off ("—"). An
    annotation such as "(interrupted by the user)" was copied into later answers and spoken."""
    return spoken_history_text(t.assistant, t.interrupted)
