"""When a turn may end: the words at the first pause decide how long a silence ends it (pure logic, no threads).

At the first pause the listener transcribes the utterance so far (a speculation). Its words get one of five
verdicts, and the verdict sets the silence that ends the turn:

- ``complete``: a fast-path device command whose target is in the words (a device's name or an area): the turn
  ends after ``EARLY_END_S`` (0.15 s) of silence (the early end).
- ``extendable``: a command that could still be narrowed: its target comes only from where the device stands ("turn
  off the light" ... "in the bedroom"), a device command that found no device where it stands, a timer ("ten
  minutes" ... "and thirty seconds"), a follow-up on "it" (Whisper hears "turn off the" ... as "turn off it"), or a
  number the next word could change ("to twenty" ... "two degrees"): ``EXTENDABLE_S`` (0.8 s). These are the
  fast path's: it would act at once. A request the fast path cannot parse goes to the LLM, which takes longer than a
  pause before it acts: it ends after the normal silence, and the continuation watch hears the rest.
- ``incomplete``: ends on a word that cannot end a request ("turn on the" ..., "set a timer for" ...):
  ``INCOMPLETE_S`` (1.2 s).
- ``question``: a question Whisper closed with "?" ("who wrote Hamlet?"), answered in words: ``QUESTION_END_S``
  (0.2 s). Nothing acts on it, and the LLM takes longer than a pause before it speaks, so a question that goes on
  ("what's the weather ..." "in Paris?") is simply heard again whole (the continuation).
- ``open``: anything else (a statement, a follow-up), or no verdict yet: ``vad.trailing_silence_s``.

A ``complete`` command is acted on at once (the early end). If speech resumes soon after any endpoint (before the
reply is heard, or within ``CONTINUE_WINDOW_S`` on an echo-cancelled source), the engine hears the whole utterance
again as one turn (a continuation), so a refinement ("... to thirty percent") corrects the action right after it was
sent instead of being lost or heard as a request of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .context_rules import TIMER_INTENTS
from .fuzzy import ACT

COMPLETE = "complete"
QUESTION = "question"
EXTENDABLE = "extendable"
INCOMPLETE = "incomplete"
OPEN = "open"

EARLY_END_S = 0.15  # silence after a complete command that ends the turn (the speculation's own latency comes on top)
QUESTION_END_S = 0.2  # after a question Whisper closed with "?": the LLM's answer takes longer than a pause anyway
EXTENDABLE_S = 0.8  # a command that may still be narrowed down by a place
INCOMPLETE_S = 1.2  # words that cannot end a request: the user is looking for the next one
SPECULATION_WAIT_MAX_S = 0.8  # past the normal silence, the endpoint waits this long for a running speculation
CONTINUE_WINDOW_S = 1.0  # after the endpoint, speech starting within this much silence continues the same request

# Words a request does not end on: articles, prepositions, conjunctions, possessives, hesitation sounds.
CONTINUATION_WORDS = frozenset({
    "the", "a", "an", "my", "our", "your", "this", "that", "these", "those", "to", "for", "of", "at", "in", "into",
    "onto", "with", "from", "by", "and", "or", "but", "so", "um", "uh", "er", "erm", "uhm", "hmm", "like", "some",
    "turn", "switch", "set", "make", "put", "dim", "open", "close", "lock", "unlock", "start",
})
# A verb at the end ("turn") is the start of a request.
COMMAND_START = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+|would you\s+)?(turn|switch|set|dim|brighten|open|close|shut|lock|"
    r"unlock|raise|lower|increase|decrease|make|put)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9'%]+")
# A number at the very end with no unit after it, which the next word could still change ("twenty" ... "two").
_OPEN_NUMBER = re.compile(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|\d+)[\s.,!?]*$",
                          re.IGNORECASE)


def silence_for(verdict: str | None, normal_s: float) -> float:
    """The silence (seconds) after which the turn ends, for a verdict (None: no verdict yet)."""
    if verdict == COMPLETE:
        return min(EARLY_END_S, normal_s)
    if verdict == QUESTION:
        return min(QUESTION_END_S, normal_s)
    if verdict == EXTENDABLE:
        return max(EXTENDABLE_S, normal_s)
    if verdict == INCOMPLETE:
        return max(INCOMPLETE_S, normal_s)
    return normal_s


def words_verdict(text: str) -> str | None:
    """What the words alone say: ``incomplete`` when they end on a continuation word, else None (ask the matcher)."""
    words = _WORD.findall(text.lower())
    if not words:
        return OPEN
    if words[-1] in CONTINUATION_WORDS:
        return INCOMPLETE
    return None


def match_verdict(text: str, match: Callable[[str, str | None], Any], area: str | None) -> str:
    """The verdict for ``text`` whose words alone decided nothing (``words_verdict`` gave None; see the module
    docstring). ``match(text, area)`` is the fast path's matcher (a call with ``name``, ``slots``, ``entities``,
    ``tier``, ``confidence``, or None); ``area`` is where the device stands."""
    if _OPEN_NUMBER.search(text):  # "set the thermostat to twenty" ... "two degrees"
        return EXTENDABLE
    call = match(text, area)
    asked = text.rstrip().endswith("?") and not COMMAND_START.search(text)
    if call is None:  # the LLM's: it takes longer than a pause before it acts, and the continuation watch hears more
        return QUESTION if asked else OPEN
    if call.name in TIMER_INTENTS:
        return EXTENDABLE  # "ten minutes" ... "and thirty seconds": never a wrong timer left running
    if not call.entities:  # a device command that found nothing here ("turn on the fan" ... "in the bedroom")
        return EXTENDABLE if COMMAND_START.search(text) else (QUESTION if asked else OPEN)
    if call.tier == "closest" or (call.tier != "exact" and call.confidence < ACT):
        return OPEN  # a "did you mean", or a sentence taken as the closest template's, is never acted on early
    spoken = call if area is None else match(text, None)  # without the device's own area: is the target in the words?
    if spoken is None or not spoken.entities or not ({"name", "area"} & set(spoken.slots)):
        return EXTENDABLE
    return COMPLETE

__all__ = ["COMPLETE", "CONTINUE_WINDOW_S", "EARLY_END_S", "EXTENDABLE", "EXTENDABLE_S", "INCOMPLETE", "INCOMPLETE_S",
           "OPEN", "QUESTION", "QUESTION_END_S", "SPECULATION_WAIT_MAX_S", "match_verdict", "silence_for",
           "words_verdict"]
