"""The brain's work ahead of a turn (``Preemption``, a base of ``Brain``): at the first pause, the prompt of the
speculative words evaluated and the first tokens of their reply generated (``preempt``), which the turn then reuses
or drops (``_claim_preempted``), and how long a silence ends the turn (``ending_verdict``); between turns, the prefix
and the history evaluated as the next prompt will begin (``_idle_prefill``). The pure rules are ``preempt.py``'s and
``ending.py``'s."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import ending
from .config import Settings
from .context import ConversationContext
from .headroom import choose
from .history import Conversation
from .llm_backend import CallStats, LlmBackend
from .preempt import PREEMPT_MAX_TOKENS, PREEMPT_WAIT_MAX_S, REUSE, Preempted, PreemptStop, preempt_key, reuse_verdict
from .text import SentenceBuffer

log = logging.getLogger("edge_agent.brain")  # the records keep the logger name they had before the move


class Preemption:
    """The work ``Brain`` does before a turn asks for it; ``Brain`` supplies the attributes below."""

    settings: Settings
    llm: LlmBackend | None
    matcher: Any
    fast_path: bool
    conversation: Conversation
    context: ConversationContext
    prefix: str
    headroom: Any
    idle_prefill_stats: CallStats | None
    _pending: Any
    _turn_lock: threading.Lock
    _turns_begun: int
    _preempted: Preempted | None
    _preempt_lock: threading.Lock
    _messages: Callable[..., list[Any]]
    _forces_tool: Callable[[str], bool]
    _context: Callable[[str | None], str]

    def preempt(self, text: str, *, area: str | None = None, cancel: threading.Event | None = None) -> bool:
        """Preemptive work on a speculative transcript (the first pause, before the endpoint; ``preempt.py``): when
        ``text`` would go to the LLM, its prompt is evaluated now and, for words answered in words first, the first
        tokens of the reply are generated (up to the first clause or ``PREEMPT_MAX_TOKENS``) and kept in
        ``self._preempted`` for the turn. A device command's tool-call prompt is only evaluated. Nothing is spoken,
        published or written to the history. Stops when ``cancel`` is set (the user went on) or a turn with other
        words starts; False when nothing was kept (a fast-path command, a pending question, no local cache, the
        brain busy, stopped)."""
        text = preempt_key(text)
        llm = self.llm
        if not self.settings.llm.preempt or not text or llm is None or not llm.loaded:
            return False
        pregenerate = getattr(llm, "pregenerate", None)
        prefill = getattr(llm, "prefill", None)
        if prefill is None and pregenerate is None:
            return False
        seq = self._turns_begun
        if (cancel is not None and cancel.is_set()) or not self._turn_lock.acquire(blocking=False):
            return False
        try:  # the decision reads the turn state: under the lock; the evaluation only needs the model's own lock
            if self._pending is not None or (self.fast_path and self.matcher is not None and (
                    self.context.resolve(text) is not None
                    or self.matcher.match(text, area, ask_back=True) is not None)):
                return False  # the turn will not ask the LLM (or its first words are not these)
            messages = self._messages(text, area, record=False)
            kind = "tool_call" if self._forces_tool(text) else "answer"
            pre = Preempted(text, area, self.conversation.version, messages, kind)
            with self._preempt_lock:  # registered before the lock is free: a turn of these words finds it
                old, self._preempted = self._preempted, pre
        finally:
            self._turn_lock.release()
        if old is not None:
            old.dropped.set()
        stop = PreemptStop(self, seq, cancel, words=(text, area or ""), dropped=pre.dropped)
        t0 = time.monotonic()
        try:
            if kind == "answer" and pregenerate is not None:
                words = self.settings.tts.first_clause_words
                pre.work = pregenerate(messages, max_tokens=PREEMPT_MAX_TOKENS, cancel=stop,
                                       enough=lambda said: _first_piece(said, words))
                st = pre.work.stats if pre.work is not None else None
                log.info("preempt: %s", "stopped (the user went on or other words came)" if st is None else
                         f"{st.n_evaluated} of {st.n_prompt} prompt tokens evaluated, {st.n_gen} tokens generated "
                         f"({st.stopped}) in {time.monotonic() - t0:.3f} s: {pre.work.text!r}")
                return pre.work is not None
            call = [*messages, {"role": "assistant", "content": ""}]  # as the tool call's prompt begins
            fill = getattr(llm, "prefill_tool_call", None) if kind == "tool_call" else None
            pre.prompt_only = kind == "answer"
            stats = fill(call, cancel=stop) if fill is not None else prefill(messages, cancel=stop)  # type: ignore[misc]
            halted = stats.stopped in ("cancelled", "yielded")  # yielded: another call wanted the model
            log.info("preempt (%s): %d of %d prompt tokens evaluated in %.3f s%s", kind, stats.n_evaluated,
                     stats.n_prompt, time.monotonic() - t0, f" ({stats.stopped})" if halted else "")
            if halted:
                pre.stopped = True
                return False
            return True
        finally:
            pre.done.set()

    def _claim_preempted(self, text: str, area: str | None, messages: list[Any], kind: str,
                         cancel: threading.Event | None) -> tuple[Any, str, float]:
        """The turn's decision on the preemptive work (``preempt.reuse_verdict``): (the kept generation or None,
        the verdict, how long the turn waited for it). The record is taken either way (one turn, one use); one of
        other words is stopped. A preemption of these very words still running is waited for (bounded), not started
        again."""
        with self._preempt_lock:
            pre, self._preempted = self._preempted, None
        if pre is None:
            return None, "none", 0.0
        waited = 0.0
        verdict = reuse_verdict(pre, text, area, self.conversation.version, messages, kind)
        if verdict == "still running":
            t0 = time.monotonic()
            wait_max = min(PREEMPT_WAIT_MAX_S, self.settings.llm.timeout_s)
            while not pre.done.wait(0.02):
                if (cancel is not None and cancel.is_set()) or time.monotonic() - t0 > wait_max:
                    break
            waited = round(time.monotonic() - t0, 3)
            log.info("the turn waited %.3f s for the preemptive work on its words", waited)
            verdict = reuse_verdict(pre, text, area, self.conversation.version, messages, kind)
        if verdict != REUSE:
            pre.dropped.set()
            if verdict != "none":
                log.info("preempted work dropped: %s", verdict)
            return None, verdict, waited
        return pre.work, verdict, waited

    def ending_verdict(self, text: str, area: str | None = None) -> str:
        """How long a silence ends a turn that has said ``text`` so far (``edge_agent/ending.py``), asked at the first
        pause on the speculation's thread: the words first (no lock needed), then the matcher. Only the matcher and
        the context are read; a turn in progress or a pending question means ``open`` (the normal silence), so an
        answer ("yes") is never judged as a command."""
        text = text.strip()
        by_words = ending.words_verdict(text)
        if by_words is not None:
            return by_words
        if not (self.fast_path and self.matcher is not None) or not self._turn_lock.acquire(blocking=False):
            return ending.OPEN
        try:
            if self._pending is not None:
                return ending.OPEN
            if self.context.resolve(text) is not None:  # "turn it off": or Whisper's "turn off it" for "turn off the"
                return ending.EXTENDABLE
            return ending.match_verdict(text, lambda t, a: self.matcher.match(t, a), area)
        finally:
            self._turn_lock.release()

    def _idle_prefill(self) -> None:
        """Between turns, the LLM evaluates the prefix and the history as the next prompt will begin. It holds only
        the model's own lock (a fast-path turn never waits for it); a turn's start stops it within one batch."""
        prefill = getattr(self.llm, "prefill", None)  # optional: backends with a local KV cache
        headroom = self.headroom  # the engine's measured figures (edge_agent/headroom.py); None: no engine
        if not choose(self.settings.llm.idle_prefill, headroom.affordable if headroom is not None else True):
            log.debug("idle prefill skipped (llm.idle_prefill: %s; this machine cannot afford it now)",
                      self.settings.llm.idle_prefill)
            return
        if prefill is None or self.llm is None or not self.llm.loaded:
            return
        cancel = PreemptStop(self, self._turns_begun, None)

        def run() -> None:
            try:
                if not cancel.is_set():
                    self.idle_prefill_stats = prefill(self._next_prompt_start(), cancel=cancel)
            except Exception as e:  # noqa: BLE001 - an optimisation: the next turn evaluates it instead
                log.warning("idle prefill of the history failed: %s", e)

        threading.Thread(target=run, name="llm-idle-prefill", daemon=True).start()

    def _next_prompt_start(self) -> list[dict[str, str]]:
        """What the next LLM prompt begins with, as far as it is known between turns: the prefix, the history and
        the context line of a request in the device's own area (the device and timer of recent turns, ~30 tokens
        a turn would otherwise evaluate after the user spoke). A turn elsewhere, or after the context changed,
        shares the cache up to the history, as before."""
        messages = [{"role": "system", "content": self.prefix}, *self.conversation.messages()]
        context = self._context(self.settings.site.area or None)
        if context:
            messages.append({"role": "system", "content": context})
        return messages


def _first_piece(said: str, first_clause_words: int) -> bool:
    """Preemptive generation has done enough once its text holds a speakable first piece (a clause or sentence, by
    the same rule as the voice's buffer)."""
    return bool(SentenceBuffer(first_clause_words=first_clause_words).push(said))
