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
from every sentence (``strip_annotations``). Pure logic: no model, tested with many sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


# ------------------------------------------------------------------------------------------------ sentence claims

_NORMALIZE = [(r"\bi'?ve\b", "i have"), (r"\bwe'?ve\b", "we have"), (r"\bi'm\b", "i am"), (r"\bi'll\b", "i will"),
              (r"\bwe'll\b", "we will"), (r"\bit's\b", "it is"), (r"\bthat's\b", "that is"),
              (r"\bthere's\b", "there is"), (r"\bn't\b", " not"), (r"n't\b", " not"), (r"\bcannot\b", "can not"),
              (r"[’‘]", "'")]
# Words that may stand between "I"/"we" and a reported verb ("I have just turned", "we will now switch").
_AUX = (r"(?:(?:have|has|had|will|am|are|just|already|now|also|successfully|gone ahead and|went ahead and|"
        r"go ahead and)\s+)*")
_FILLER = (r"(?:(?:ok(?:ay)?|sure(?: thing)?|alright|all right|great|certainly|of course|no problem|got it|yes|yep|"
           r"right|perfect|absolutely|there you go|and|then|also|now|done|good news)\b[\s,.!:;-]*)*")

# category -> reported forms (past / participle / progressive) and base forms (after "I will").
_T = r"(?:\s+(?:the|your|my|a|an|all|both|it|them|this|that|those|these|[\w'-]+)){0,5}?"  # a short object
_VERBS: dict[str, tuple[str, str]] = {
    "on": (rf"(?:turned|switched|turning|switching|flipped|flipping|put|putting){_T}\s+on\b|"
           r"(?:activated|activating|enabled|enabling)\b",
           rf"(?:turn|switch|flip|put){_T}\s+on\b|(?:activate|enable)\b"),
    "off": (rf"(?:turned|switched|turning|switching|shut|shutting|flipped|flipping|put|putting){_T}\s+off\b|"
            r"(?:deactivated|deactivating|disabled|disabling|killed)\b",
            rf"(?:turn|switch|shut|flip|put){_T}\s+off\b|(?:deactivate|disable|kill)\b"),
    "unlock": (r"(?:unlocked|unlocking)\b", r"unlock\b"),
    "lock": (r"(?:locked|locking)\b", r"lock\b"),
    "open": (r"(?:opened|opening)\b", r"open\b"),
    "close": (r"(?:closed|closing|shut)\b", r"(?:close|shut)\b"),
    "timer_start": (rf"(?:started|starting|set|setting|created|creating){_T}\s+timer\b",
                    rf"(?:start|set|create){_T}\s+timer\b"),
    "timer_cancel": (rf"(?:cancell?ed|cancell?ing|stopped|stopping|deleted|removed){_T}\s+timers?\b",
                     rf"(?:cancel|stop|delete|remove){_T}\s+timers?\b"),
    "set": (rf"(?:set|setting|dimmed|dimming|brightened|adjusted|adjusting|changed|changing|raised|lowered|"
            rf"increased|decreased|turned{_T}\s+(?:up|down)){_T}\s+(?:to|at|by)\b|(?:dimmed|brightened)\b",
            rf"(?:set|dim|brighten|adjust|change|raise|lower|increase|decrease){_T}\s+(?:to|by)\b|dim\b"),
    "pause": (r"(?:paused|pausing)\b", r"pause\b"),
    "resume": (r"(?:resumed|resuming|unpaused)\b", r"(?:resume|unpause)\b"),
}
_PAST = {k: re.compile(v[0]) for k, v in _VERBS.items()}
_BASE = {k: re.compile(v[1]) for k, v in _VERBS.items()}
_STATE_WORDS = {"on": "on", "off": "off", "locked": "lock", "unlocked": "unlock", "open": "open", "opened": "open",
                "closed": "close", "shut": "close", "paused": "pause", "playing": "resume"}
_STATE = re.compile(r"\b(?:is|are)\s+(now\s+|currently\s+|still\s+|all\s+)*(?:been\s+)?(?:turned\s+|switched\s+)?"
                    r"(on|off|locked|unlocked|open|opened|closed|shut|paused|playing)\b")
_SWITCHED = re.compile(r"\b(?:turned|switched)\s")  # "is turned on": a device's state, whatever the name
_STATE_NOW = re.compile(r"\b(?:is|are)\s+now\s+(?:set\s+)?(?:to|at)\s+\d")
_PASSIVE = re.compile(r"\b(?:has|have)\s+(?:now\s+|just\s+)?been\s+")
_DONE_ONLY = re.compile(rf"^{_FILLER}(?:done|all done|all set|it is done|that is done)\W*$")
_DEVICE_WORDS = re.compile(r"\b(lights?|lamps?|fans?|doors?|locks?|blinds?|curtains?|shades?|garage|heating|"
                           r"thermostat|switch(?:es)?|outlets?|plugs?|windows?|covers?|valves?|tv|music|volume|"
                           r"speaker|heater|kettle|coffee|coffee maker|oven|radio|heat|temperature)\b")
_TIMER_LEFT = re.compile(r"\b(left|remaining|to go)\b|\b(?:goes|go|will go|will ring|rings|ends|will end|"
                         r"finishes|will finish|is done|will be done)\s+(?:off\s+)?in\b")
_TIMER_WORD = re.compile(r"\btimers?\b")
_TIMER_TALK = re.compile(r"\b(?:timers?|alarms?|countdowns?)\b")
# a timer's state stated without a number: "All timers are done.", "Your timer is still running.", "You have no timers."
_TIMER_STATE = re.compile(
    r"\btimers?\b.*\b(?:is|are|has|have)\s+(?:all\s+)?(?:now\s+|still\s+|already\s+|currently\s+)?(?:been\s+)?"
    r"(?:done|finished|up|over|running|going|paused|ringing|expired|active|ticking|complete|completed)\b"
    r"|\b(?:no|zero)\s+(?:\w+\s+)?timers?\b(?:\s+(?:running|set|going|active))?"
    r"|\bthere\s+(?:is|are)\s+(?:a|one|\d+|\w+)\s+timers?\s+(?:running|set|going|active)\b")
_TIMER_SET_FOR = re.compile(r"\btimers?\b.*\b(?:is|are|was)\s+(?:currently\s+|still\s+|now\s+)?(?:set|running)\s+"
                            r"(?:for|to)\b")
# A measured value stated of the home: "the outside temperature is 22 degrees", "the humidity is 40%"
_VALUE = re.compile(r"\b(?:is|are|reads|shows|at|of)\s+(?:currently\s+|now\s+|about\s+|around\s+)*"
                    r"(?:minus\s+)?(\d+(?:\.\d+)?|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
                    r"(?:[ -]\w+)?|\w+teen|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b"
                    r"(?:\s*(?:degrees?|percent|%|°))?")
_DURATION = re.compile(r"\b(\w+(?:[ -]\w+)?)\s+(?:hours?|minutes?|mins?|seconds?|secs?)\b")
_CLOCK = re.compile(r"\b(?:it is|the time is|the current time is|time now is|right now it is)\s+"
                    r"(?:now\s+|about\s+|around\s+|exactly\s+|almost\s+|just\s+(?:after|before)\s+)?"
                    r"(\d{1,2}(?::\d{2})?|noon|midnight|half past|quarter (?:past|to)|"
                    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b)")
_DATE = re.compile(r"\b(?:today is|it is|the date is|today's date is)\s+(?:a\s+)?(?:monday|tuesday|wednesday|"
                   r"thursday|friday|saturday|sunday|january|february|march|april|may|june|july|august|"
                   r"september|october|november|december|the \d)")

_NUM_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUM_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "a": 1, "an": 1, "half": 30})
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
_TOOL_SYNTAX = re.compile(r"\bHass[A-Z]\w+|\b(?:function|tool)\b[^.]*\barguments?\b|\"(?:name|arguments)\"\s*:")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.casefold().replace("’", "'"))


def _norm(sentence: str) -> str:
    t = sentence.lower()
    for pat, rep in _NORMALIZE:
        t = re.sub(pat, rep, t)
    return re.sub(r"\s+", " ", t).strip()


def _is_question(t: str) -> bool:
    return t.rstrip(" \"'”’").endswith("?")


def action_claims(sentence: str) -> set[str]:
    """The kinds of action this sentence reports as done (or as being done / about to be done by the assistant):
    'on', 'off', 'lock', 'set', 'timer_start', ... plus 'any' for a bare "Done." Empty for anything else."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return set()
    if _DONE_ONLY.match(t):
        return {"any"}
    out: set[str] = set()
    # the assistant as subject: "I have turned on", "we just set", "I will switch off", "I am turning on"
    for m in re.finditer(rf"\b(?:i|we)\s+{_AUX}", t):
        rest = t[m.end():]
        said_will = "will" in m.group(0)
        for cat in _VERBS:
            if _PAST[cat].match(rest) or (said_will and _BASE[cat].match(rest)):
                out.add(cat)
    # no subject, at the start after fillers: "Turned on the kitchen light.", "Sure, switching it off now."
    m = re.match(_FILLER, t)
    head = t[m.end():] if m else t
    for cat in _VERBS:
        if _PAST[cat].match(head):
            out.add(cat)
    if not out and _DEVICE_WORDS.search(t) and _reports_a_deed(head):
        out.add("any")  # "Bumped the thermostat up to 23.", "Cranked the ceiling fan on.": some action, on a device
    # "the light has been turned on", "timer has been set", "the door is now locked", "the lamp is now at 40"
    for m in _PASSIVE.finditer(t):
        rest = t[m.end():]
        for cat in _VERBS:
            if _PAST[cat].match(rest) or (cat in ("set", "timer_start") and rest.startswith("set")):
                out.add(cat if not (cat == "set" and _TIMER_WORD.search(t[:m.start()])) else "timer_start")
    for m in _STATE.finditer(t):
        if m.group(1) and "now" in m.group(1):
            out.add(_STATE_WORDS[m.group(2)])
    if _STATE_NOW.search(t):
        out.add("set")
    if "timer" in t and re.search(r"\btimer\s+(?:is\s+)?(?:now\s+)?set\s+for\b", t):
        out.add("timer_start")
    return out


# Participles that describe rather than report ("Based on the thermostat, ...", "Connected to the lamp is ...").
_NOT_DEEDS = frozenset({"based", "located", "designed", "named", "called", "supposed", "used", "interested", "pleased",
                        "excited", "concerned", "related", "compared", "considered", "needed", "wanted", "listed",
                        "included", "connected", "installed", "mounted", "placed", "rated", "scheduled", "expected",
                        "allowed", "required", "recommended", "assumed", "tired", "bored", "confused", "sorry"})
_DEED_IRREGULAR = frozenset({"made", "got", "brought", "gave", "kept", "took", "threw", "ran", "sent", "began",
                             "fixed", "cranked"})
_HEAD_WORD = re.compile(r"^(?:i\s+(?:have\s+|just\s+|already\s+)*|we\s+(?:have\s+|just\s+)*)?([a-z]+)\b\s*([a-z']*)")
# after a reported deed comes its object ("Bumped the thermostat"), not a preposition ("Invented in 1879, ...")
_NOT_OBJECT = frozenset({"in", "by", "at", "from", "with", "for", "to", "as", "during", "since", "after", "before",
                         "into", "of", "than", "about", "and", "or", "but", "that", "when", "while", "if"})


def _reports_a_deed(head: str) -> bool:
    """The sentence opens with a verb in the past ("Bumped ...", "I cranked ..."): it reports something done."""
    m = _HEAD_WORD.match(head)
    if m is None:
        return False
    w, after = m.group(1), m.group(2)
    if after in _NOT_OBJECT:
        return False
    return w in _DEED_IRREGULAR or (w.endswith("ed") and len(w) > 4 and w not in _NOT_DEEDS)


def state_claims(sentence: str) -> set[str]:
    """States a sentence asserts of a device without "now" ("the front door is locked"): {'lock', 'on', ...}."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return set()
    device = bool(_DEVICE_WORDS.search(t))  # "the make more locked is turned on": a misheard name, still a state
    return {_STATE_WORDS[m.group(2)] for m in _STATE.finditer(t)
            if not (m.group(1) and "now" in m.group(1)) and (device or _SWITCHED.search(m.group(0)))}


def _numbers(text: str) -> set[int]:
    """Integers written as digits or (simple) number words: 'twenty five' -> 25, '10:30' -> {10, 30}."""
    t = _norm(text).replace("-", " ")
    out = {int(n) for n in re.findall(r"\d+", t)}
    words = re.findall(r"[a-z]+", t)
    i = 0
    while i < len(words):
        w = words[i]
        if w in _NUM_WORDS and w not in ("a", "an", "half"):
            v = _NUM_WORDS[w]
            if v >= 20 and i + 1 < len(words) and words[i + 1] in _NUM_WORDS and 0 < _NUM_WORDS[words[i + 1]] < 10 \
                    and words[i + 1] not in ("a", "an"):
                v += _NUM_WORDS[words[i + 1]]
                i += 1
            out.add(v)
        i += 1
    return out


def timer_claim(sentence: str) -> set[int] | None:
    """The numbers of a claimed timer fact ("5 minutes left", "your timer goes off in ten minutes"), an empty set for
    a timer's state said without a number ("All timers are done.", "You have no timers running."), or None."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return None
    if (_TIMER_LEFT.search(t) and (_DURATION.search(t) or _TIMER_WORD.search(t))) or (
            _TIMER_SET_FOR.search(t) and _DURATION.search(t)):
        return {n for m in _DURATION.finditer(t) for n in _numbers(m.group(1))}
    if _TIMER_STATE.search(t):
        return set()  # a state with no number: true only if a timer intent ran (and read it) in this turn
    return None


def bare_duration_claim(sentence: str) -> set[int] | None:
    """The numbers of any length of time a statement gives ("Target: 8 minutes.", "About five minutes."), or None.
    Asked only when the user spoke of a timer: then a bare duration is the timer's, whatever the sentence's shape."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return None
    nums = {n for m in _DURATION.finditer(t) for n in _numbers(m.group(1))}
    return nums or None


def value_claim(sentence: str) -> set[int] | None:
    """The numbers a sentence states as a value ("... is 22 degrees", "... reads 40 percent"), or None; the guard
    asks it only of sentences that name a configured device."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return None
    found = [m for m in _VALUE.finditer(t) if m.group(0).rstrip().endswith(("degrees", "degree", "percent", "%", "°"))
             or re.search(r"\b(?:temperature|humidity|thermostat|sensor|reading)\b", t)]
    nums = {n for m in found for n in _numbers(m.group(1))}
    return nums or None


def clock_claim(sentence: str) -> str | None:
    """'time' for a claimed clock time ("it's 3:15"), 'date' for a claimed date ("today is Monday"), or None."""
    t = _norm(sentence)
    if not t or _is_question(t):
        return None
    if _CLOCK.search(t):
        return "time"
    if _DATE.search(t):
        return "date"
    return None


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
        if len(words) >= ECHO_MIN_WORDS and f" {' '.join(words)} " in self._instructions:
            return Verdict("", rewritten=True, reason="the prompt's own words")  # "No JSON, no lists, no markdown."
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


__all__ = ["ACTION_NOT_DONE", "ReplyGuard", "Verdict", "action_claims", "spoken_history_text", "state_claims",
           "strip_annotations"]
