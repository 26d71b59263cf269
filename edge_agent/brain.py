"""The brain: from a transcript to intents and a spoken reply, fast path first, the LLM only when needed.

Flow of one ``respond(text)``:

1. A pending question is settled first (``Pending``): a sensitive action's "Unlock the front door?" (a yes runs
   the remembered call with ``confirmed=True``) or the tolerant matcher's ask-back "Did you mean the Bedroom Lamp?"
   (a yes runs it; "no, the desk lamp" runs it on that device). A "no" is acknowledged; other text cancels it and
   is handled as new; it expires after ``CONFIRM_TTL_S`` / ``CLARIFY_TTL_S``.
2. **Conversation context** (``context.py``): a follow-up that refers to what recent turns EXECUTED ("turn it
   off", "and the bedroom one too", "actually make it eighty", "stop it" after a timer, "no, the bedroom one" right
   after an action: undone and redone, both said) becomes calls, or words with the reference spelled out for the
   templates.
3. **Fast path**: Home Assistant's templates, then the tolerant tier (``IntentMatcher.match(..., ask_back=True)``)
   -> ``IntentHandler.handle`` -> its sentence is spoken at once; a match not sure enough asks back instead. No
   LLM, milliseconds. Then, for a spoken turn whose transcript all of that refused, the **sound tier**
   (``brain_sound.py``, ``sound_match.py``): the transcript with a word or two from a nearby template sentence,
   or a short follow-up the context resolves, scored against the turn's audio by the STT model; a clear winner is
   acted on, a near one asked back (tens to a few hundred ms, only on such turns).
4. **LLM path**, through the ``LlmBackend`` port (``llm_backend.py``; ``llm.backend`` picks one): the brain hands
   over chat messages and reads back text and one ``CallStats`` per call; the chat template, grammars and KV cache
   are the backend's. The model sees a FIXED prefix (system prompt, guardrail profile, this home's devices, worked
   examples, the tools) that is identical on every call, so a local backend keeps it in its KV cache (and on disk,
   ``llm.prefix_cache_dir``), then the spoken history, the context (the user's area; the device and timer of
   recent turns, from what ran) and the user's words. It either
   answers in free text, streamed to the voice as it is written, or begins a tool call (``stats.tool_call``): the
   call is then written under the tools' JSON schema (``complete_json(..., tool_call=True)``, after any words
   already said), so it can only name real tools and configured entities/areas. The call is checked again
   (``IntentHandler.validate`` inside ``handle``; area/domain arguments that contradict a named device are dropped
   first; a tool whose kind does not fit the words, ``tool_misfit``, never runs); a ``ToolError`` goes back to the
   model once as the tool's result, then we apologise. After the tool
   runs, the handler's own factual sentence is spoken at once; with ``llm.reply_after_tool`` its
   ``IntentResult.data`` is fed back instead and the model phrases the reply in words-only mode.

Everything the LLM says passes through ``SentenceBuffer``/``speakable`` and then the truth guard (``truth.py``),
sentence by sentence before TTS: an action it reports must have been executed in this turn, a state/timer/clock
fact read in this turn; otherwise an honest sentence is said instead (``Response.rewrites``). History holds only
what was actually spoken (``commit_turn``, called by the voice loop after playback); an interrupted reply ends in
"—", never in an annotation the model could copy. ``respond`` holds a turn lock while it runs: two turns (a timer's
delayed command and a spoken request) never interleave.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .ask_cli import cli_ask
from .brain_llm import REPLY_REQUEST, SORRY_TOOL, TOOL_CALL_MAX_TOKENS, LlmTurn  # noqa: F401 - re-exported
from .brain_preempt import Preemption
from .brain_sound import Sound, SoundTier
from .config import Settings
from .context import ConversationContext, Followup
from .errors import LlmError, ToolError
from .handlers import CONFIRM_PREFIX
from .history import HISTORY_TRIM_TO, Conversation, HistoryTurn  # noqa: F401 - re-exported
from .intent import IntentCall, IntentResult
from .llm_backend import CallStats, LlmBackend, create_backend
from .llm_tools import LLM_EXCLUDED_TOOLS, TARGET_SLOTS, TOOL_DOMAINS, select_tools, tool_call_schema  # noqa: F401
from .preempt import Preempted, preempt_key
from .response import Response, _pieces
from .stt_text import normalize_text
from .tool_fit import (  # noqa: F401 - re-exported
    COMMAND_VERBS,
    DEVICE_WORDS,
    KIND_DOMAINS,
    NAME_OVERLAP,
    looks_like_command,
    mentions_device,
    normalize_name_in,
    tool_misfit,
)
from .truth import NOT_CAUGHT

log = logging.getLogger(__name__)

CONFIRM_TTL_S = 30.0  # a pending "are you sure?" is forgotten after this long
CLARIFY_TTL_S = 20.0  # a pending "Did you mean the bedroom lamp?" is forgotten after this long
YES = re.compile(r"^\s*(yes|yeah|yep|yup|sure|ok|okay|confirm(ed)?|do it|go ahead|please do|correct|affirmative)\b",
                 re.I)
NO = re.compile(r"^\s*(no|nope|nah|cancel|stop|never ?mind|don'?t|do not)\b", re.I)
SORRY_NO_LLM = "Sorry, I can only control your devices right now."
SORRY_LLM = "Sorry, I couldn't work that out."
# An answer the LLM's time limit cut after some of it was said: what was said stands (whole sentences only: the cut
# one is never spoken), and the user hears that the rest is missing, not that nothing was worked out.
SORRY_CUT = "Sorry, I ran out of time for the rest."
SORRY_BUSY = "Sorry, I'm still busy with something else."
OKAY_NOT_DONE = "Okay, I won't."
# A bare yes or no (or "okay") when nothing was asked: the LLM, given the history, asked again about the sensitive
# action the user had just declined ("Do you want me to unlock the front door?"). Answered without it.
BARE_YES = re.compile(r"^\s*(yes|yeah|yep|yup|sure|confirm(ed)?|do it|go ahead|please do|affirmative)(,? please)?"
                      r"[\s.!]*$", re.I)
BARE_NO = re.compile(r"^\s*(no|nope|nah|ok|okay|never ?mind)(,? thanks?( you)?)?[\s.!]*$", re.I)
NOTHING_ASKED = "There's nothing to confirm right now."
# A turn waits at most this long for the one before it (LLM timeout + a long reply); beyond it the earlier response
# was abandoned without being closed, and waiting on would hang this turn for good.
TURN_WAIT_MAX_S = 120.0


# --------------------------------------------------------------------------------------------------- conversation


@dataclass
class Pending:
    """A call waiting for the user's next words: a sensitive action's "Are you sure?" (``kind`` "confirm": a yes
    runs it confirmed) or the tolerant matcher's "Did you mean the bedroom lamp?" ("clarify": a yes runs it as a
    normal request, "no, the desk lamp" runs it on the device named instead)."""

    call: IntentCall
    area: str | None
    t: float
    kind: str = "confirm"
    question: str = ""  # the words the user heard, when the LLM asked (an offer, or its own "Are you sure ...?")
    confirms: bool = False  # the question named the sensitive action itself ("Did you mean to lock the back door?")

    @property
    def ttl_s(self) -> float:
        return CONFIRM_TTL_S if self.kind == "confirm" else CLARIFY_TTL_S


# --------------------------------------------------------------------------------------------------- brain


class Brain(Preemption, LlmTurn, SoundTier):
    """Transcript -> intents + streamed reply. One turn at a time: a ``respond`` started while another runs (a
    timer's delayed command on its thread while the voice loop answers) waits until the first one's iteration ends.
    """

    def __init__(self, settings: Settings, home: Any, handler: Any, matcher: Any, llm: LlmBackend | None,
                 *, timers: Any = None, tools: list[dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.home = home
        self.handler = handler
        self.matcher = matcher
        self.llm = llm
        self.timers = timers
        self.fast_path = True  # False: every request goes to the LLM (tests, `ask --llm-only`)
        self.on_intent: Callable[[IntentCall, IntentResult], None] | None = None
        self.may_act: Callable[[IntentCall], bool] | None = None  # asked just before a call runs (the engine's gate)
        self.clock: Callable[[], float] = time.monotonic
        self.conversation = Conversation(settings.conversation,
                                         count_tokens=(llm.count_tokens if llm is not None else None))
        self._pending: Pending | None = None
        # the entity/area/timer of recent turns, from what the handler executed (never from what the LLM said)
        self.context = ConversationContext(home, clock=lambda: self.clock())
        self._turn_lock = threading.Lock()
        self._turn_context: tuple[str, str] = ("", "")  # (words, context line) of the last LLM prompt
        self._llm_area: str | None = None  # the area of the LLM turn in progress (offers are matched in it)
        self._turns_begun = 0  # counted before a turn waits for the lock: idle and preemptive prefills stop on it
        self._turn_words: tuple[str, str] | None = None  # (words, area) of the last turn begun (preempt.PreemptStop)
        self._preempted: Preempted | None = None  # the latest preemptive work (llm.preempt), claimed by the next turn
        self._preempt_lock = threading.Lock()
        self.idle_prefill_stats: CallStats | None = None
        self.headroom: Any = None  # the engine's Headroom: may the idle prefill run (llm.idle_prefill: auto)?
        self.warmup_stats: CallStats | None = None
        if tools is None:
            from .llm_tools import tool_specs

            tools = tool_specs(home)
        self.tools = select_tools(tools, home)
        names = [n.casefold() for e in getattr(home, "entities", {}).values() for n in e.names]
        self.tool_schema = tool_call_schema(self.tools, unique_names=len(names) == len(set(names)))
        self.instructions = ""  # the prompt's rules (set by _fixed_prefix): the reply guard never lets them be read out
        self.prefix = self._fixed_prefix()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Settings, home_file: str | None = None, use_llm: bool = True,
                      keep_timers: bool = False) -> Brain:
        """Home, matcher, handler, timers and (lazily loaded) LLM from the settings. ``keep_timers`` (the live
        daemon): timers are saved to ``conversation.timers_file`` and the ones saved before are restored."""
        from .handlers import IntentHandler
        from .home import Home
        from .intents import IntentMatcher
        from .timers import TimerManager

        home = Home.load(settings.home, file=home_file)
        store = settings.conversation.timers_file if keep_timers else None
        timers = TimerManager(store=settings.path(store) if store else None)
        timers.restore()
        handler = IntentHandler(home, settings.home, timers, dry_run=settings.mqtt.dry_run)
        matcher = IntentMatcher(home)
        llm = create_backend(settings) if use_llm else None  # llm.backend (default "local": llama.cpp)
        return cls(settings, home, handler, matcher, llm, timers=timers)

    def warmup(self) -> None:
        """Load the LLM and prepare the fixed prefix once, so the first request only pays for its own tokens."""
        if self.llm is not None:
            self.llm.load()
            self.warmup_stats = self.llm.warmup([{"role": "system", "content": self.prefix}])

    # ------------------------------------------------------------------ conversation
    def commit_turn(self, user_text: str, spoken_text: str, interrupted: bool = False) -> None:
        """Store what was actually spoken (after playback); an interrupted reply is kept as far as it was heard.

        Then, while the user has not spoken yet, the LLM evaluates the prefix and the history as the next prompt
        will begin (``_idle_prefill``): the next LLM turn evaluates only its own words."""
        if not user_text.strip():
            return
        words, context = self._turn_context
        context = context if words == user_text.strip() else ""
        self._turn_context = ("", "")
        self.conversation.add(user_text, spoken_text, interrupted, context=context)
        self._idle_prefill()

    def _pending_offer(self, call: IntentCall, area: str | None, question: str = "") -> None:
        """The LLM offered or asked to confirm ``call``: a yes in the next turn runs it as a normal request (a
        sensitive device then gets the handler's own "Are you sure?", unless ``question`` was that very question),
        a no drops it."""
        self._pending = Pending(call, area, self.clock(), "clarify", question)

    def reset(self) -> None:
        self.conversation.clear()
        self.context.clear()
        self._pending = None

    # ------------------------------------------------------------------ respond
    def respond(self, text: str, *, area: str | None = None, cancel: threading.Event | None = None,
                sound: Sound | None = None) -> Response:
        """Start handling ``text``; the work runs as the returned ``Response`` is iterated, holding the brain's turn
        lock from the first piece asked for until iteration ends (or the response is closed). ``sound``: scores
        sentences against the audio ``text`` was heard from (the STT stream's ``sentence_scores``), for the sound
        tier; None (typed text, an engine that cannot score) skips it."""
        return Response(lambda resp: self._locked_run(resp, text.strip(), area, cancel, sound))

    def _locked_run(self, resp: Response, text: str, area: str | None, cancel: threading.Event | None,
                    sound: Sound | None = None) -> Iterator[str]:
        if not text:
            return
        t0 = time.monotonic()
        self._turn_words = (preempt_key(text), area or "")  # a preemption of these words goes on: the turn waits
        self._turns_begun += 1  # an idle or preemptive prefill gives way (within one small batch or token)
        while not self._turn_lock.acquire(timeout=0.05):
            if cancel is not None and cancel.is_set():  # cancelled while waiting for the other turn: say nothing
                return
            if time.monotonic() - t0 > TURN_WAIT_MAX_S:  # a response left half-iterated and never closed
                log.error("the previous turn still holds the brain after %.0f s: %r not handled", TURN_WAIT_MAX_S,
                          text)
                resp.error = "busy: the previous turn never ended"
                yield from _pieces(SORRY_BUSY)
                return
        waited = time.monotonic() - t0
        if waited > 0.01:
            resp.timings["waited_for_turn_s"] = round(waited, 3)
        try:
            yield from self._run(resp, text, area, cancel, sound)
        finally:
            self._turn_lock.release()

    def _run(self, resp: Response, text: str, area: str | None, cancel: threading.Event | None,
             sound: Sound | None = None) -> Iterator[str]:
        self.context.begin_turn()
        pending, self._pending = self._pending, None
        if pending is not None and self.clock() - pending.t <= pending.ttl_s:
            settled = yield from self._settle(resp, pending, text)
            if settled:
                return
            log.info("pending %s (%s) cancelled by a new request", pending.call.name, pending.kind)
        yes = BARE_YES.match(text) is not None
        if (yes or BARE_NO.match(text)) and not self.conversation.last_reply().endswith("?"):
            resp.timings["context"] = "nothing_asked"
            yield from _pieces(NOTHING_ASKED if yes else "Okay.")
            return

        if self.fast_path and self.matcher is not None:
            t0 = time.monotonic()
            follow = self.context.resolve(text)
            call = None
            if follow is not None:
                resp.timings["context"] = follow.kind
                if follow.calls:
                    resp.timings["fast_path_s"] = round(time.monotonic() - t0, 4)
                    yield from self._run_followup(resp, follow, area)
                    return
                if follow.text:
                    call = self.matcher.match(follow.text, area, ask_back=True)
            if call is None:
                call = self.matcher.match(text, area, ask_back=True)
            resp.timings["fast_path_s"] = round(time.monotonic() - t0, 4)
            if call is not None and sound is not None and follow is None:  # the transcript as heard, not a rewrite
                call = self._second_look(resp, text, area, call, sound)  # its own time: timings["action_word"]
            if call is None and sound is not None:
                call = self._sound_tier(resp, text, area, sound)
            if call is None and sound is not None and follow is None:
                heard_follow = self._sound_followup(resp, text, area, sound)
                if heard_follow is not None:
                    resp.timings["context"] = heard_follow.kind
                    yield from self._run_followup(resp, heard_follow, area)
                    return
            if call is not None:
                clarify = getattr(call, "clarify", None)
                if clarify:  # not sure enough to act: ask, and act only on a yes in the next turn
                    sure = self._sensitive_question(call, area)
                    if sure:  # one question, which a yes answers for both: the device and the confirmation
                        clarify = sure
                    self._pending = Pending(call, area, self.clock(), "clarify", confirms=bool(sure))
                    resp.pending = call
                    resp.timings["ask_back"] = True
                    yield from _pieces(clarify)
                    return
                result = self._execute(resp, call, area)
                yield from _pieces(result.speech)
                return
        if self.llm is None:
            yield from _pieces(SORRY_NO_LLM)
            return
        resp.used_llm = True  # (the preempted work is claimed, or dropped, where the LLM turn builds its prompt)
        try:
            yield from self._llm_turn(resp, text, area, cancel)
            if not resp.text and not (cancel is not None and cancel.is_set()):  # all of it was the guard's to drop
                log.warning("the LLM turn left nothing to say for %r: saying %r", text, NOT_CAUGHT)
                resp.rewrites.append({"said": resp.llm_text.strip(), "spoken": NOT_CAUGHT, "reason": "nothing left"})
                yield from _pieces(NOT_CAUGHT)
        except LlmError as e:
            log.warning("LLM failed: %s", e)
            resp.error = f"llm: {e.message}"
            if not (cancel is not None and cancel.is_set()):
                yield from _pieces(SORRY_CUT if resp.text.strip() else SORRY_LLM)

    def _sensitive_question(self, call: IntentCall, area: str | None) -> str:
        """For an ask-back on a sensitive device ("lock up the mark door"): the handler's own question for the call,
        as "Did you mean to lock the back door?", so that one yes settles which device and confirms the action (a
        "Did you mean the Back Door?" followed by "Are you sure ...?" made the user say yes twice). Empty when the
        call needs no confirmation. Asking the handler unconfirmed acts on nothing."""
        ents = [self.home.entities.get(e) for e in getattr(call, "entities", ()) or ()]
        if not any(e is not None and self.home.is_sensitive(e) for e in ents):
            return ""
        probe = self.handler.handle(call, area, confirmed=False)
        if not probe.needs_confirmation:
            return ""
        if not probe.speech.startswith(CONFIRM_PREFIX):
            return probe.speech
        return "Did you mean to " + probe.speech[len(CONFIRM_PREFIX):]

    def _settle(self, resp: Response, pending: Pending, text: str) -> Iterator[str]:
        """The user's answer to a pending question; returns (StopIteration.value) True if it settled this turn."""
        if YES.match(text):
            result = self._execute(resp, pending.call, pending.area,
                                   confirmed=pending.kind == "confirm" or pending.confirms)
            asked = normalize_text(pending.question) if pending.question else None
            if result.needs_confirmation and asked is not None and normalize_text(result.speech) == asked:
                # the LLM had already asked the handler's own question for this very call, and the user said yes
                # to it: asking it a second time would make them confirm twice
                resp.results.remove(result)
                self._pending, resp.pending = None, None
                result = self._execute(resp, pending.call, pending.area, confirmed=True)
            yield from _pieces(result.speech)
            return True
        if pending.kind == "clarify":  # "no, the desk lamp": the same request on the device named instead
            other = self.context.retarget(pending.call, text)
            if other is not None:
                result = self._execute(resp, other, pending.area)
                yield from _pieces(result.speech)
                return True
        if NO.match(text):
            yield from _pieces(OKAY_NOT_DONE if pending.kind == "confirm" else "Okay.")
            return True
        return False

    def _run_followup(self, resp: Response, follow: Followup, area: str | None) -> Iterator[str]:
        """Calls resolved from the conversation context; a correction first reverses the action it corrects and
        says both ("Turned off the kitchen light and turned on the bedroom lamp.")."""
        done: list[IntentResult] = []
        asks: list[IntentResult] = []
        kept: list[str] = []
        for call in follow.undo:
            r = self._execute(resp, call, area)
            if r.needs_confirmation:  # reversing it is sensitive too (a lock): left as it is, never a 2nd question
                self._pending, resp.pending = None, None
                kept += [self.home.entities[e].name.lower() for e in r.data.get("entities", ())
                         if e in self.home.entities]
            else:
                done.append(r)
        for call in follow.calls:
            r = self._execute(resp, call, area)
            (asks if r.needs_confirmation else done).append(r)
        said = [r.speech.rstrip(". ") for r in done if r.speech]
        text = ""
        if said:
            text = said[0] + "".join(" and " + _lower_first(x) for x in said[1:]) + "."
        if kept:
            text = f"{text} I left the {' and the '.join(kept)} as it is.".strip()
        for r in asks:  # a question last: the next turn's yes answers it
            text = f"{text} {r.speech}".strip()
        yield from _pieces(text)

    # ------------------------------------------------------------------ tools
    def _execute(self, resp: Response, call: IntentCall, area: str | None, confirmed: bool = False) -> IntentResult:
        """Run a (validated) call; publish it through ``on_intent`` unless it waits for a spoken yes."""
        if self.may_act is not None and not self.may_act(call):  # the turn was dropped or cancelled meanwhile
            return IntentResult(call=call, success=False, speech="", data={"error": "cancelled before it ran"})
        state = getattr(self.handler, "state", None)
        before = dict(state) if isinstance(state, dict) else {}
        try:
            result = self.handler.handle(call, area, confirmed=confirmed)
        except ToolError as e:  # handle() reports errors as results; this is a safety net
            result = IntentResult(call=call, success=False, speech=f"Sorry, {e.message}",
                                  data={"error": e.message})
        resp.results.append(result)
        call = result.call or call  # the validated call, with its entities resolved
        if result.needs_confirmation:
            self._pending = Pending(call, area, self.clock(), "confirm")
            resp.pending = call
            return result
        if result.success:
            self.context.record(result, {e: before.get(e) for e in call.entities})
            resp.intents.append(call)
            if self.on_intent is not None:
                try:
                    self.on_intent(call, result)
                except Exception as e:  # noqa: BLE001 - a publishing problem never ends the turn
                    log.error("on_intent failed: %s", e)
        return result


# --------------------------------------------------------------------------------------------------- helpers



def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


__all__ = ["Brain", "Conversation", "HistoryTurn", "Pending", "Response", "cli_ask", "select_tools", "tool_call_schema",
           "tool_misfit"]
