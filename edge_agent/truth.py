"""Truthful replies: an LLM sentence may report only what the intent handler did or read in this turn.

The small model answering in words copies the shape of earlier fast-path replies from the history ("Turned on the
kitchen lamp.") when nothing was executed, and makes up facts it never read (a timer's remaining time). Sentences are
checked one by one as they stream, before they reach TTS (``ReplyGuard.check``):

* an **action report** ("turned on", "I've switched off", "set the ... to", "locked", "started a timer", "the light
  is now on", "I'll turn it off") passes only when an intent of the same kind ran successfully in this turn, on the
  device the sentence names (if it names one);
* a **state fact** about a device ("the front door is locked") passes only when the handler read or changed that
  device in this turn, with that state;
* a **timer fact** ("five minutes left", "your timer goes off in 3 minutes") only when a timer intent ran in this
  turn, with those numbers; a **clock/date fact** ("it's 3:15", "today is Monday") only after the time/date intent,
  with that hour.

Anything else that reads as such a report is replaced by an honest sentence (``ACTION_NOT_DONE`` and friends, each at
most once per reply); a question ("Shall I turn on the light?"), a refusal ("I can't unlock doors") and plain
knowledge ("The capital of France is Paris.") pass. Parenthesised annotations, stage directions and JSON are dropped
from every sentence (``strip_annotations``). What a sentence claims is read by ``claims.py``; this module checks it
against what ran. Pure logic: no model, tested with many sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .claims import (
    _FILLER,
    _STATE_WORDS,
    _is_question,
    _norm,
    _numbers,
    _reports_a_deed,
    action_claims,
    bare_duration_claim,
    clock_claim,
    state_claims,
    timer_claim,
    value_claim,
)
from .intent import IntentResult
from .text import speakable

ACTION_NOT_DONE = "I didn't change anything. Which device did you mean?"
STATE_NOT_READ = "I haven't checked that device just now."
TIMER_NOT_READ = "I haven't checked the timers. Ask me how much time is left."
TIME_NOT_READ = "I haven't checked the clock. Ask me what time it is."
NOT_CAUGHT = "Sorry, I didn't catch that."
ECHO_MIN_REPLY_WORDS = 2
# words the user may well hear back: a greeting ("good morning" -> "Good morning!"), thanks, or a request to say it
_SAY_BACK = re.compile(r"^(?:hello|hi|hey|good (?:morning|afternoon|evening|night)|thanks|thank you|bye|goodbye|"
                       r"merry|happy)\b|\b(?:say|repeat|spell|read|pronounce|sing)\b")
_TIMER_TALK = re.compile(r"\b(?:timers?|alarms?|countdowns?)\b")
INTERRUPTED_MARK = "—"  # how an interrupted reply ends in the history: the words break off, nothing else

# ------------------------------------------------------------------------------------------------ annotations

_PARENS = re.compile(r"\s*(\([^()]*\)|\[[^\[\]]*\])")
_STAGE = re.compile(r"\*[^*\n]{1,60}\*")
# the two halves of an aside that the sentence splitter cut apart: "(I checked the" ... "state) The door is shut."
_ASIDE_END = re.compile(r"^[^()\[\]]*[)\]]")
_ASIDE_START = re.compile(r"[(\[][^()\[\]]*$")
_TRAILING_MARK = re.compile(r"\s*[—–]+\s*$")


def strip_annotations(text: str) -> str:
    """Drop what is not meant to be said: parenthesised or bracketed asides ("(interrupted by the user)"),
    *stage directions*, JSON/markup (``speakable``) and a dangling dash. '' when nothing speakable is left."""
    t = text
    for _ in range(3):  # nested parentheses, innermost first
        t2 = _PARENS.sub("", t)
        if t2 == t:
            break
        t = t2
    t = _ASIDE_START.sub("", _ASIDE_END.sub("", t))  # an unmatched bracket: the rest of an aside
    t = _STAGE.sub("", t)
    t = _TRAILING_MARK.sub(".", t) if t.strip().rstrip("—–").strip() else ""
    return speakable(t)


def spoken_history_text(assistant: str, interrupted: bool) -> str:
    """The history's assistant turn: only what was said; an interruption is the words breaking off ("—")."""
    said = assistant.strip()
    if not interrupted:
        return said
    said = said.rstrip(" .,;:…—–-")
    return f"{said}{INTERRUPTED_MARK}" if said else INTERRUPTED_MARK


# ------------------------------------------------------------------------------------------------ what ran

_ACTION_CATEGORY = {"turn_on": "on", "turn_off": "off", "lock": "lock", "unlock": "unlock", "open": "open",
                    "close": "close", "activate": "on", "set_brightness": "set", "set_color": "set",
                    "set_position": "set", "set_temperature": "set", "set_volume": "set", "media_pause": "pause",
                    "media_play": "resume"}
_INTENT_CATEGORY = {"HassStartTimer": "timer_start", "HassCancelTimer": "timer_cancel",
                    "HassCancelAllTimers": "timer_cancel", "HassPauseTimer": "pause", "HassUnpauseTimer": "resume",
                    "HassIncreaseTimer": "set", "HassDecreaseTimer": "set"}
_TIMER_INTENTS = {"HassStartTimer", "HassTimerStatus", "HassCancelAllTimers", "HassIncreaseTimer", "HassDecreaseTimer",
                  "HassCancelTimer", "HassPauseTimer", "HassUnpauseTimer"}


ECHO_MIN_WORDS = 4  # a reply sentence this long found word for word in the instructions is the prompt read back
# ... or shorter, down to two words, when it names what the rules are about: "no markdown." (a spoken conversation,
# seventeenth session: the whole reply to a garbled "is the make more locked.")
PROMPT_WORDS = frozenset("json markdown lists list emoji rules prompt instructions tool tools mqtt topics".split())
_TOOL_SYNTAX = re.compile(r"\bHass[A-Z]\w+|\b(?:function|tool)\b[^.]*\barguments?\b|\"(?:name|arguments)\"\s*:")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.casefold().replace("’", "'"))


# ------------------------------------------------------------------------------------------------ the guard


@dataclass
class Verdict:
    text: str  # what to say instead ('' = nothing)
    rewritten: bool = False
    reason: str = ""


def _flat_values(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _flat_values(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat_values(v)
    else:
        yield value


class ReplyGuard:
    """Checks an LLM reply sentence by sentence against ``results``: the handler's results of THIS turn (a live
    list: the brain appends to it as tool calls run). ``home`` (optional) lets it see which device a sentence names.
    """

    def __init__(self, results: Sequence[IntentResult], home: Any = None, instructions: str = "",
                 heard: str = "") -> None:
        self.results = results
        self.home = home
        self._heard = _words(heard)  # the user's transcript: a reply that only parrots it is no answer
        self._may_echo = bool(_SAY_BACK.search(" ".join(self._heard)))  # a greeting, thanks, "say ..."
        # the user spoke of a timer: any length of time in the answer is then a timer fact ("Target: 8 minutes.")
        self._about_timer = bool(_TIMER_TALK.search(" ".join(self._heard)))
        self._said: set[str] = set()
        self._instructions = " " + " ".join(_words(instructions)) + " "  # the system prompt's rules, as words
        self._read_out: list[str] = []  # the words of the prompt just read out (the last piece dropped for it)

    # ---- what the handler did and read
    def _done(self) -> list[IntentResult]:
        return [r for r in self.results if r.success and not r.needs_confirmation]

    def _categories(self, r: IntentResult) -> set[str]:
        cat = _INTENT_CATEGORY.get(r.call.name) or _ACTION_CATEGORY.get(str((r.data or {}).get("action", "")))
        return {cat} if cat else set()

    def _named(self, sentence: str) -> tuple[set[str], set[str]]:
        """(entity ids, area ids) the sentence names by configured name/alias or area name."""
        ents: set[str] = set()
        areas: set[str] = set()
        if self.home is None:
            return ents, areas
        t = " " + re.sub(r"[^a-z0-9 ]+", " ", sentence.lower()) + " "
        for e in getattr(self.home, "entities", {}).values():
            for n in getattr(e, "names", (e.name,)):
                if f" {re.sub(r'[^a-z0-9 ]+', ' ', n.lower()).strip()} " in t:
                    ents.add(e.id)
        for aid, a in getattr(self.home, "areas", {}).items():
            if f" {a.name.lower()} " in t:
                areas.add(aid)
        return ents, areas

    def _targets_match(self, sentence: str, results: list[IntentResult]) -> bool:
        ents, areas = self._named(sentence)
        if not ents and not areas:
            return True
        touched = {e for r in results for e in r.call.entities}
        if ents:
            return bool(ents & touched)
        home_ents = getattr(self.home, "entities", {})
        return any(getattr(home_ents.get(e), "area", None) in areas for e in touched)

    # ---- the check
    def check(self, sentence: str) -> Verdict:
        """What may be said of ``sentence`` (one sentence or first clause of the LLM's reply)."""
        text = strip_annotations(sentence)
        if text and _TOOL_SYNTAX.search(text):  # "... call the HassTurnOff function with the arguments ..."
            return Verdict("", rewritten=True, reason="tool syntax")
        words = _words(text)
        read_on = self._read_out + words  # a piece that goes on with the prompt piece just dropped ("... about:"
        # then "Kitchen Light.": the splitter cuts at the colon) is the prompt too, however short
        if ((len(words) >= ECHO_MIN_WORDS or (len(words) >= 2 and PROMPT_WORDS & set(words)))
                and f" {' '.join(words)} " in self._instructions) \
                or (self._read_out and words and f" {' '.join(read_on)} " in self._instructions):
            self._read_out = read_on
            return Verdict("", rewritten=True, reason="the prompt's own words")  # "No JSON, no lists, no markdown."
        self._read_out = []
        if text and self._echoes(words):  # "Board it." for a misheard "pause it": the small model parrots
            return Verdict(NOT_CAUGHT, rewritten=True, reason="echo of the transcript")
        dropped = text != speakable(sentence)
        verdict = self._check_claims(text) if text else Verdict("")
        if verdict.rewritten or not dropped:
            return verdict
        return Verdict(verdict.text, rewritten=True, reason="annotation dropped")

    def _echoes(self, words: list[str]) -> bool:
        """The sentence is the user's own words back, in order (two words or more, nothing of its own added), or
        the whole transcript back however short ("Pogit." for a misheard "pause it", "1112"): what the 0.5B model
        does with a transcript it cannot make sense of ("4-8 test air comes.")."""
        if not words or not self._heard or self._may_echo:
            return False
        if words == self._heard:
            return True
        if len(words) < ECHO_MIN_REPLY_WORDS:
            return False
        it = iter(self._heard)
        return all(w in it for w in words)  # a subsequence of the transcript

    def _check_claims(self, text: str) -> Verdict:
        done = self._done()
        claimed = action_claims(text)
        norm = _norm(text)
        if not claimed and not _is_question(norm) and any(self._named(text)) \
                and _reports_a_deed(re.sub(_FILLER, "", norm, count=1)):
            claimed = {"any"}  # "Brewed some coffee with the coffee maker.": a deed on a configured device
        if claimed:
            matching = [r for r in done if ("any" in claimed and self._categories(r)) or claimed & self._categories(r)]
            if not matching or not self._targets_match(text, matching):
                if done:  # something else was done: say that, truthfully
                    return self._rewrite(" ".join(r.speech for r in done), "action report does not match what ran")
                return self._rewrite(ACTION_NOT_DONE, "action report with no executed intent")
            return Verdict(text)
        states = state_claims(text)
        if states:
            known = self._known_states(text, done)
            if not states <= known:
                return self._rewrite(STATE_NOT_READ, "device state not read in this turn")
        values = value_claim(text) if self._named(text)[0] else None
        if values is not None and not values <= self._read_numbers(done):
            return self._rewrite(STATE_NOT_READ, "device value not read in this turn")
        nums = timer_claim(text)
        if nums is None and self._about_timer:
            nums = bare_duration_claim(text)
        if nums is not None:
            timer_results = [r for r in done if r.call.name in _TIMER_INTENTS]
            read: set[int] = set()
            for r in timer_results:
                read |= _numbers(r.speech) | {int(v) for v in _flat_values(r.data) if isinstance(v, (int, float))
                                             and not isinstance(v, bool)}
                for v in list(_flat_values(r.data)):  # seconds also as minutes/hours
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        read |= {round(v / 60), int(v // 60), round(v / 3600), int(v // 3600)}
            if not timer_results or not nums <= read:
                return self._rewrite(TIMER_NOT_READ, "timer fact not read in this turn")
        kind = clock_claim(text)
        if kind is not None:
            intent = "HassGetCurrentTime" if kind == "time" else "HassGetCurrentDate"
            read_results = [r for r in done if r.call.name == intent]
            if not read_results or (kind == "time" and not self._same_hour(text, read_results)):
                return self._rewrite(TIME_NOT_READ, f"{kind} not read in this turn")
        return Verdict(text)

    @staticmethod
    def _read_numbers(done: list[IntentResult]) -> set[int]:
        """Every number the handler said or returned in this turn (a state read, a value set)."""
        read: set[int] = set()
        for r in done:
            read |= _numbers(r.speech)
            for v in _flat_values(r.data):
                try:
                    f = float(v) if not isinstance(v, bool) else None
                except (TypeError, ValueError):
                    f = None
                if f is not None:
                    read |= {int(f), round(f)}
        return read

    def _known_states(self, text: str, done: list[IntentResult]) -> set[str]:
        ents, _ = self._named(text)
        known: set[str] = set()
        for r in done:
            if ents and not ents & set(r.call.entities):
                continue
            known |= self._categories(r)
            for st in (r.data or {}).get("states") or ():
                word = str(st.get("state", "")).lower()
                if word in _STATE_WORDS:
                    known.add(_STATE_WORDS[word])
        return known

    @staticmethod
    def _same_hour(text: str, results: list[IntentResult]) -> bool:
        said = re.search(r"\b(\d{1,2})(?::(\d{2}))?", _norm(text))
        if said is None:  # in words ("it's three o'clock"): the hour must appear among the read numbers
            hours = _numbers(text)
            read = {int(h) % 12 for r in results for h in re.findall(r"\b(\d{1,2}):", r.speech)}
            return bool({h % 12 for h in hours} & read)
        h, mnt = int(said.group(1)) % 12, said.group(2)
        for r in results:
            m = re.search(r"\b(\d{1,2}):(\d{2})", r.speech)
            if m and int(m.group(1)) % 12 == h and (mnt is None or mnt == m.group(2)):
                return True
        return False

    def _rewrite(self, honest: str, reason: str) -> Verdict:
        if honest in self._said:  # the honest sentence once per reply
            return Verdict("", rewritten=True, reason=reason)
        self._said.add(honest)
        return Verdict(honest, rewritten=True, reason=reason)


__all__ = ["ACTION_NOT_DONE", "ReplyGuard", "Verdict", "spoken_history_text", "strip_annotations"]
