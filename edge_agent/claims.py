"""What a sentence claims: the actions, device states, timer, value and clock facts an LLM sentence reports.

Each ``*_claim(s)`` reads one sentence (normalised by ``_norm``: contractions spelt out, lower case) and says what it
asserts, nothing about whether it is true: ``action_claims`` the kinds of action reported as done ('on', 'off',
'set', 'timer_start', ... or 'any'), ``state_claims`` the states asserted of a device, ``timer_claim`` /
``bare_duration_claim`` the numbers of a timer fact, ``value_claim`` a measured value's numbers, ``clock_claim`` a
clock time or date. A question claims nothing. ``truth.ReplyGuard`` checks the claims against what the intent handler
did and read in this turn. Pure logic: regular expressions, no model.
"""

from __future__ import annotations

import re

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
# "Time turned on for 20 minutes.", "The kitchen light switched off.": a device (or a timer) as the subject of a
# reported deed; only these kinds (a device word with "set"/"closed" after it is often a plain fact, "the shop closed")
_SUBJECT_KINDS = ("on", "off", "lock", "unlock", "open", "pause", "resume")
_SUBJECT_TIMER = re.compile(r"(?:started|set|created|is running|running|began)\b")
_NOT_SUBJECT = frozenset({"you", "i", "we", "they", "he", "she", "if", "when", "whether", "who", "which", "that",
                          "is", "are", "was", "were", "be", "been", "has", "have", "had", "not", "will", "can",
                          "could", "would", "should", "do", "does", "did"})  # "the door is locked": a state
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
    if not out:
        out |= _subject_deeds(head)
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


def _subject_deeds(head: str) -> set[str]:
    """A short subject that names a device or a timer, then the deed: "time turned on for 20 minutes" ({'on'}),
    "your pasta timer started" ({'timer_start'}). Not a person as the subject ("you turned it on")."""
    words = head.split()
    out: set[str] = set()
    for k in range(1, min(4, len(words) - 1) + 1):
        subject = " ".join(words[:k])
        if _NOT_SUBJECT & set(words[:k]):
            break
        rest = " ".join(words[k:])
        if _TIMER_WORD.search(subject) or re.search(r"\btime\b", subject):
            if _SUBJECT_TIMER.match(rest):
                out.add("timer_start")
        elif not _DEVICE_WORDS.search(subject):
            continue
        out |= {cat for cat in _SUBJECT_KINDS if _PAST[cat].match(rest)}
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


__all__ = ["action_claims", "bare_duration_claim", "clock_claim", "state_claims", "timer_claim", "value_claim"]
