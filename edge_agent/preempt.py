"""Preemptive work on the speculative transcript (``llm.preempt``), pure: the per-turn record and the decision the
turn makes on it.

At the first pause the speculation thread hands its words to ``Brain.preempt``. Words the fast path will not take
go to the LLM ahead of time: an answer's prompt is evaluated and its first tokens generated (up to the first clause
or ``PREEMPT_MAX_TOKENS``; ``Llm.pregenerate``), a device command's tool-call prompt is evaluated. What was done is
kept in one ``Preempted`` record. When the turn reaches the LLM with its final transcript, ``reuse_verdict`` decides:
the same words, area, history and prompt → the preempted tokens are reused (they go out first and generation goes on
from the KV cache after them), anything else → the record is dropped. Nothing in it is ever spoken, published or
written to the history by itself: only the turn yields its text, through the truth guard, after the turn ended.

Superseded work is cancelled, not queued: the record's ``stop`` is set when the user goes on (the speculation's
cancel token) or a turn with other words begins, and the generation stops at its next token. A turn with the SAME
words waits for the bounded run to finish instead (``PREEMPT_WAIT_MAX_S``): it is exactly the work the turn would
do first, and the turn's own call would have to wait for the model's lock anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

PREEMPT_MAX_TOKENS = 16  # at most this many tokens are generated at the pause (a first clause is usually fewer)
# A turn waits this long (at most; ``llm.timeout_s`` if shorter) for a running preemption of its own words, then
# drops it: the run is bounded (PREEMPT_MAX_TOKENS), and starting again would only redo its tokens, later.
PREEMPT_WAIT_MAX_S = 20.0

REUSE = "reused"


def preempt_key(text: str) -> str:
    """The words as the turn compares them: what ``Brain.respond`` puts in the prompt (stripped). The prompt is
    compared token for token anyway, so nothing looser (case, punctuation) could be reused."""
    return text.strip()


@dataclass
class Preempted:
    """One speculative transcript's preemptive work (at most one record, the latest, is kept by the brain)."""

    words: str  # preempt_key of the speculative transcript
    area: str | None
    version: int  # the history's version when the prompt was built (Conversation.version)
    messages: list[dict[str, Any]]  # the prompt exactly as the turn would build it
    kind: str  # "answer" (prompt + first tokens) or "tool_call" (the call's prompt only)
    done: threading.Event = field(default_factory=threading.Event)  # the work has ended (kept, stopped or failed)
    dropped: threading.Event = field(default_factory=threading.Event)  # no one wants it: stop at the next token
    work: Any = None  # the backend's kept generation (``llm_prefix.Pregen``) for an answer; None when stopped
    stopped: bool = False  # a prompt evaluation (a tool call's, or a backend's without generation) was stopped
    prompt_only: bool = False  # the backend only evaluates prompts (no ``pregenerate``): the KV cache is the gain

    @property
    def ok(self) -> bool:
        """Finished with something to reuse: an answer's first tokens, or a tool call's whole prompt evaluated."""
        if not self.done.is_set() or self.stopped:
            return False
        return self.kind == "tool_call" or self.prompt_only or self.work is not None


def reuse_verdict(pre: Preempted | None, words: str, area: str | None, version: int,
                  messages: list[dict[str, Any]], kind: str) -> str:
    """Does the turn reuse ``pre``? ``REUSE``, or why not (logged and recorded in the turn's timings)."""
    if pre is None:
        return "none"
    if pre.words != preempt_key(words):
        return "words changed"
    if (pre.area or "").casefold() != (area or "").casefold():
        return "area changed"
    if pre.version != version:
        return "history changed"
    if pre.kind != kind:
        return "another kind of call"
    if pre.messages != messages:
        return "prompt changed"
    if not pre.done.is_set():
        return "still running"
    if not pre.ok:
        return "stopped"
    return REUSE


class PreemptStop:
    """The cancel token of preemptive (and idle) work: set once the user went on (``cancel``, the speculation's
    token), the work was dropped, or a turn began since ``seq`` whose words are not ``words`` (a turn with the
    same words waits for the work instead). Only ``is_set`` is asked, between batches and after every token."""

    def __init__(self, brain: Any, seq: int, cancel: threading.Event | None, words: tuple[str, str] | None = None,
                 dropped: threading.Event | None = None) -> None:
        self.brain, self.seq, self.cancel, self.words, self.dropped = brain, seq, cancel, words, dropped

    def is_set(self) -> bool:
        if (self.cancel is not None and self.cancel.is_set()) or (self.dropped is not None and self.dropped.is_set()):
            return True
        if self.brain._turns_begun == self.seq:
            return False
        return self.words is None or self.brain._turn_words != self.words


__all__ = ["PREEMPT_MAX_TOKENS", "PREEMPT_WAIT_MAX_S", "REUSE", "PreemptStop", "Preempted", "preempt_key",
           "reuse_verdict"]
