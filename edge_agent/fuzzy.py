"""The tolerant tier of the fast path: everyday paraphrases and misheard names, before the LLM.

Home Assistant's templates match whole sentences literally. People (and Whisper) do not speak them: "cut the kitchen
light", "set the bedroom lamp to forty percent if you can", "living room lab". This module turns such a transcript
into candidate sentences the templates know, each with a cost that becomes the match's confidence:

1. ``strip_fillers``: politeness and filler words around the request ("could you", "please", "for me", "for a sec",
   "if you can", "hey", "thanks"), punctuation, "percent" -> "%", "colour" -> "color".
2. ``rewrite``: phrasings mapped onto the templates' verbs and values, one small rule each (``TIMER_RULES``,
   ``COMMON_RULES``, ``DEVICE_RULES``): cut/kill/shut
   off -> turn off; get ... going / fire up / start -> turn on; continue / carry on -> resume; "see that X is locked"
   -> lock X; "to full" -> 100 %, "at half" -> 50 %; "a bit cooler, 19 degrees" -> set the temperature to 19 degrees.
   Rules are anchored on the verb at the start of the request, so they never reach into a question or a story.
3. ``NameCorrector``: a word span that is *close* to a configured entity/area/floor name or alias (rapidfuzz ratio,
   also compared without spaces: "bed room") is replaced by that name ("living room lab" -> "Living Room Lamp").
   The corrected sentence must still match a template, whose ``requires_context`` keeps a name in domains that fit
   the verb ("lock" only takes locks); a corrected name must also fit the intent (``INTENT_DOMAINS``).

Safety: the tolerant tier never runs on a transcript that negates, speaks of the past or carries instruction-like
words (``REFUSE``), nor on one that chains several commands; it only ever names configured devices (the templates'
slot lists are the home's). Anything it cannot place with confidence goes to the LLM.

Confidence: exact template 1.0; fillers/rewrites only 0.95 (act); a corrected name costs its similarity (score/100);
two candidates for one span that are nearly as close make it a question. ``ACT`` and ``ASK`` are the thresholds.
Pure string logic (no hassil here): ``IntentMatcher`` runs the candidates through the templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from rapidfuzz import fuzz

ACT = 0.85  # at or above: act on it
ASK = 0.70  # at or above (and below ACT): ask back "Did you mean ...?"; below: the LLM's
REWRITE_CONFIDENCE = 0.95  # only fillers stripped / verbs and values rewritten: no word of a name was changed
NAME_CUTOFF = 70.0  # rapidfuzz ratio below which a span is not taken for a configured name
AMBIGUOUS_MARGIN = 4.0  # a second, different name this close to the best one: ask which

# Words that make the tolerant tier stand aside (the exact templates still apply): negation, the past, hypotheticals,
# and instruction-like words that prompt injections use. Such a transcript is not a plain request.
REFUSE = re.compile(
    r"\b(?:don'?t|do not|doesn'?t|never(?! ?mind)|not|didn'?t|did|was|were|had|yesterday|ago|tomorrow|earlier|last|"
    r"would have|if i|when i|who|why|ignore|instructions?|override|pretend|mode|system|admin(?:istrator)?|"
    r"developer|authori[sz]ed|repeat after|jailbreak|everything|every|prompt|assistant|owner|message|"
    r"immediately|command)\b")
# Two commands chained ("unlock the front door and turn on ..."): the tolerant tier never splits or drops one.
CHAINED = re.compile(r"\b(?:and|then|also)\s+(?:then\s+)?(?:turn|switch|unlock|lock|open|close|set|start|stop|"
                     r"disable|enable|cut|kill|shut|raise|lower|make|put|cancel|do)\b")

_LEAD = re.compile(
    r"^(?:(?:hey|hi|hello|ok|okay|so|um+|uh+|er+|well|please|kindly|just|now|oh|right|alright)\s+)+")
_POLITE = re.compile(
    r"^(?:(?:can|could|would|will)\s+you\s+(?:please\s+|kindly\s+|just\s+|quickly\s+)*|"
    r"(?:i\s+want|i'?d\s+like|i\s+would\s+like|i\s+need)\s+you\s+to\s+|go\s+ahead\s+and\s+|"
    r"would\s+you\s+mind\s+|be\s+a\s+dear\s+and\s+|(?:i\s+)?need\s+(?:you\s+)?to\s+|"
    # "could you put ...": Whisper often keeps only the "you" of a polite request
    r"you\s+(?=(?:turn|switch|set|put|make|change|lock|unlock|open|close|dim|start|stop|cancel|pause)\b))")
_TRAIL = re.compile(
    r"(?:\s+(?:please|thanks|thank\s+you|cheers|if\s+you\s+can|if\s+you\s+could|if\s+you\s+would|"
    r"if\s+you\s+don'?t\s+mind|if\s+possible|for\s+me|for\s+a\s+sec(?:ond)?|for\s+a\s+moment|for\s+a\s+minute|"
    r"would\s+you|could\s+you|will\s+you|can\s+you|ok|okay|now|quickly|real\s+quick|right\s+away|"
    r"when\s+you\s+can|mate|buddy|right\s+now))+$")
_INNER = re.compile(r"\s+(?:please|kindly|just|quickly|still)(?=\s)")

NUMBER = r"\d+(?:\.\d+)?"


_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}
_NUMBER_WORDS = re.compile(
    r"\b(?:(?:a|one)\s+hundred(?:\s+and)?(?:\s+(?:{})(?:\s+(?:{}))?|\s+(?:{}))?|(?:{})(?:\s+(?:{}))?|(?:{}))\b".format(
        "|".join(_TENS), "|".join(list(_UNITS)[1:10]), "|".join(_UNITS), "|".join(_TENS),
        "|".join(list(_UNITS)[1:10]), "|".join(_UNITS)))


def words_to_digits(text: str) -> str:
    """Number words up to one hundred as digits: "twenty two" -> "22", "a hundred" -> "100"."""

    def value(m: re.Match[str]) -> str:
        total = 0
        for w in m.group(0).split():
            if w == "hundred":
                total = 100
            elif w in _TENS:
                total += _TENS[w]
            elif w in _UNITS:
                total += _UNITS[w]
        return str(total)

    return re.sub(r"\b(\d+) point (\d+)\b", r"\1.\2", _NUMBER_WORDS.sub(value, text))


_SPLIT_NUMBER = re.compile(r"\b([2-9]0)[.,]\s+([1-9])\b")


def join_split_number(text: str) -> str:
    """A number said with a pause inside it, as Whisper writes it: "set the thermostat to 20. 2 degrees" (twenty ...
    two) is 22, "to 50. 5%" is 55%. Only tens followed by the pause's punctuation and one digit."""
    return _SPLIT_NUMBER.sub(lambda m: str(int(m.group(1)) + int(m.group(2))), text)


def strip_fillers(text: str) -> str:
    """Lower-case, punctuation and politeness/filler words stripped; number words as digits; "percent" -> "%"."""
    t = text.casefold().replace("’", "'").replace("colour", "color")
    t = re.sub(r"[^\w\s%'°.]", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # sentence dots go, decimal points stay
    t = words_to_digits(" ".join(t.split()))
    t = re.sub(r"(?<=\d)\s*(?:percent|per cent|%)", "%", t)
    t = re.sub(r"\bpercent\b", "%", t)
    for _ in range(3):
        before = t
        t = _LEAD.sub("", t)
        t = _POLITE.sub("", t)
        t = _TRAIL.sub("", t)
        t = _INNER.sub("", " " + t + " ").strip()
        if t == before:
            break
    return t


# Rewrites: (pattern, replacement), applied in order, each at most once, to the filler-stripped text. Timer rules
# come before the device verbs ("kill the timer" cancels a timer, "kill the fan" turns a fan off).
_OBJ = r"(?P<obj>(?:the|my|that|this|a|an|all|all the|all my)\s+.+?|.+?)"
_TIMER = r"(?P<t>(?:the|my|that|this)\s+(?:\w+\s+)?timer)"
TIMER_RULES: list[tuple[str, str]] = [
    (rf"^(?:kill|scrap|stop|delete|remove|drop|end|clear|abort|bin)\s+{_TIMER}$", r"cancel \g<t>"),
    (r"^(?:get rid of|scrap|kill|stop|delete|remove|clear)\s+(?P<all>all\s+)?(?P<d>the|my)\s+timers$",
     r"cancel all \g<d> timers"),
    (r"^cancel all\s+(?P<d>the|my)\s+timer$", r"cancel all \g<d> timers"),  # Whisper drops the plural's "s"
    (r"^get rid of\s+(?P<t>(?:the|my|that)\s+(?:\w+\s+)?timer)$", r"cancel \g<t>"),
    (rf"^(?:hold|freeze)\s+{_TIMER}$", r"pause \g<t>"),
    (rf"^(?:let|have)\s+{_TIMER}\s+(?:continue|keep going|carry on|go on|run|resume)$", r"resume \g<t>"),
    (rf"^(?:continue|carry on with|keep going with|go on with|unfreeze|unpause|restart)\s+{_TIMER}$",
     r"resume \g<t>"),
    (rf"^give\s+{_TIMER}\s+(?P<d>.+?)\s+more$", r"add \g<d> to \g<t>"),
    (rf"^(?:take|knock|shave)\s+(?P<d>.+?)\s+off\s+{_TIMER}$", r"remove \g<d> from \g<t>"),
    # Whisper drops a verb's "s" ("until the timer go off")
    (rf"^how long\s+(?:until|till|til|before)\s+{_TIMER}\s+(?:goes off|go off|rings?|is done|be done|finish(?:es)?|"
     r"ends?|is up)$", r"how much time is left on \g<t>"),
    # "N more minutes" on a timer is always an increase, whatever was (mis)heard before "timer" (at most 3 words)
    (r"^(?:give\s+|add\s+|put\s+)?(?:(?:the|my|that|this)\s+)?(?:[a-z]+\s+){0,3}?timer\s+(?:(?:for|by)\s+)?"
     r"(?P<n>\d+)\s+more\s+(?P<u>(?:second|minute|hour)s?)$", r"add \g<n> \g<u> to my timer"),
    (rf"^(?:give|add)\s+{_TIMER}\s+(?:another\s+)?(?P<n>\d+)\s+(?:more\s+)?(?P<u>(?:second|minute|hour)s?)$",
     r"add \g<n> \g<u> to \g<t>"),
    (rf"^how (?:long|much time) is left on\s+{_TIMER}$", r"how much time is left on \g<t>"),
    # "timer for 8 minutes", "a timer for ...", and Whisper's "and a timer for ..." for a "set" it lost
    (r"^(?:and\s+)?(?:an?\s+)?timer for\s+(?P<d>.+)$", r"set a timer for \g<d>"),
    (r"^(?:put|set|start|get)\s+(?:a|an)\s+timer\s+(?:on|going|up|running)\s+for\s+(?P<d>.+)$",
     r"set a timer for \g<d>"),
    (rf"^how much longer\s+(?:on|for|until|till)\s+{_TIMER}$", r"how much time is left on \g<t>"),
    (r"^(?:time|count down)\s+(?P<d>.+?(?:second|minute|hour)s?)$", r"set a timer for \g<d>"),
    (r"^(?P<v>set|start)\s+(?:a|an)\s+(?P<n>[a-z]+)\s+timer\s+for\s+(?P<d>.+)$", r"set a timer for \g<d> named \g<n>"),
]
# Rules for any request (durations, time and date, never mind).
COMMON_RULES: list[tuple[str, str]] = [
    (r"\ban hour and a half\b", "1 and a half hours"),
    (r"\b(?P<n>\d+) (?P<u>hour|minute)s? and a half\b", r"\g<n> and a half \g<u>s"),
    (r"\b(?:a|an|one) (?P<u>second|minute|hour)\b", r"1 \g<u>"),
    # time and date, never mind
    (r"^(?:got|have you got|do you have|you got) the time$", "what time is it"),
    (r"^(?:what|which) (?:day|date) is (?:it(?: today)?|today)$", "what is the date"),
    (r"^what(?:'s| is) today's day$", "what is the date"),  # Whisper's "day" for "date"
    (r"^what's the (?:time|time now)$", "what time is it"),
    (r"^how much longer$", "how much time is left on my timer"),
    (r"^forget (?:it|that|about it)$", "never mind"),
    (r"^never mind (?:that|it|then)$", "never mind"),
    (r"^(?:cancel|scratch|skip) (?:that|it)$", "never mind"),
    (r"^how (?:much time|long) (?:is )?left$", "how much time is left on my timer"),
]
# Rules for device requests (never applied to a sentence about a timer).
DEVICE_RULES: list[tuple[str, str]] = [
    # Whisper's "It's the" for "Is the": "It's the garage door open" asks for a state (reading it acts on nothing)
    (r"^it'?s\s+(?P<obj>the\s+.+?)\s+(?P<s>open|closed|shut|on|off|locked|unlocked|running)$", r"is \g<obj> \g<s>"),
    # an indirect question: "tell me if the back door is unlocked", "can you check whether the fan is on"
    (rf"^(?:tell me|let me know|check|see|find out|do you know|you know)\s+(?:if|whether)\s+{_OBJ}\s+"
     r"(?P<v>is|are)\s+(?P<s>[a-z]+)$", r"\g<v> \g<obj> \g<s>"),
    # Whisper's "til"/"till" for "to" before a value: "change the temperature til 18"
    (r"\b(?:til|till)\s+(?=\d)", "to "),
    # temperature
    (r"\b(?:the\s+)?(?:heating|heater|heat)\b", "the temperature"),
    (rf"^(?:(?:a|a bit|a little|a tad|bit|little)\s+)?(?:cooler|warmer|colder|hotter)\s+(?:to\s+)?(?P<n>{NUMBER})"
     r"\s*(?:degrees?|°)?$", r"set the temperature to \g<n> degrees"),
    (rf"^make it\s+(?P<n>{NUMBER})\s*(?:degrees?|°)(?:\s+in here)?$", r"set the temperature to \g<n> degrees"),
    # locks: "see that / make sure X is locked"
    (rf"^(?:see|make sure|ensure|be sure)\s+(?:that\s+)?{_OBJ}\s+(?:is|are|gets|get)\s+(?P<s>locked|unlocked)$",
     r"\g<s> \g<obj>"),
    (rf"^(?:see|make sure|ensure|be sure)\s+(?:that\s+)?{_OBJ}\s+(?:is|are|gets|get)\s+(?P<s>open|opened|closed|shut)$",
     r"\g<s> \g<obj>"),
    (r"^locked ", "lock "),
    (r"^unlocked ", "unlock "),
    (r"^(?:opened) ", "open "),
    (r"^(?:closed|shut) (?!off\b|down\b|.*\b(?:off|down|out)$)", "close "),
    (rf"^lock up\s+{_OBJ}$", r"lock \g<obj>"),
    (rf"^lock\s+{_OBJ}\s+up$", r"lock \g<obj>"),
    # a value for a device: "bump the thermostat to 20", "turn the heat up to 23", "dim X to 10%"
    (rf"^(?:put|change|make|bring|move|adjust|bump|raise|lower|increase|decrease|drop|crank|dim|brighten|turn up|"
     rf"turn down)\s+{_OBJ}\s+(?:up\s+|down\s+)?(?:at|on|to)\s+(?P<v>\d+(?:\.\d+)?(?:%|\s*degrees?)?)$",
     r"set \g<obj> to \g<v>"),
    (rf"^turn\s+{_OBJ}\s+(?:up|down)\s+to\s+(?P<v>\d+(?:\.\d+)?(?:%|\s*degrees?)?)$", r"set \g<obj> to \g<v>"),
    (rf"^(?:turn|switch|put)\s+on\s+{_OBJ}\s+(?:to|at)\s+(?P<v>\d+%)$", r"set \g<obj> to \g<v>"),  # "on ... to 30%"
    # covers
    (rf"^(?:pull up|raise|roll up|lift|draw up|open up)\s+{_OBJ}$", r"open \g<obj>"),
    (rf"^(?:pull down|lower|roll down|draw down)\s+{_OBJ}$", r"close \g<obj>"),
    (rf"^(?P<v>open|close)\s+{_OBJ}\s+(?:halfway|half way)$", r"open \g<obj> to 50%"),
    # brightness values
    (r"\b(?P<p>to|at|on)\s+(?:full|max|maximum)(?:\s+brightness)?$", r"\g<p> 100%"),
    (r"\b(?P<p>to|at|on)\s+half(?:\s+brightness)?$", r"\g<p> 50%"),
    (r"\b(?P<p>to|at)\s+(?P<n>\d+%)\s+brightness$", r"\g<p> \g<n>"),
    (r"\bfull brightness$", "100%"),
    # device verbs
    (rf"^(?:cut|kill|shut|power|switch|turn)\s+{_OBJ}\s+(?:off|down|out)$", r"turn off \g<obj>"),
    (rf"^(?:cut|kill|shut off|shut down|power down|power off|switch off|cut off|stop|disable|deactivate)\s+{_OBJ}$",
     r"turn off \g<obj>"),
    (r"^lights (?P<v>on|off|out)(?:\s+in\s+(?P<obj>.+))?$", r"turn \g<v> the lights in \g<obj>"),
    (rf"^get\s+{_OBJ}\s+(?:going|running|started|on)$", r"turn on \g<obj>"),
    (rf"^(?:fire up|start up|start|power on|power up|switch on|boot up|enable|activate)\s+{_OBJ}$",
     r"turn on \g<obj>"),
    (rf"^(?:put|switch|power|fire|get)\s+{_OBJ}\s+on$", r"turn on \g<obj>"),
    (rf"^(?:dim|brighten|turn up|turn down)\s+{_OBJ}\s+to\s+(?P<v>\d+%)$", r"set \g<obj> to \g<v>"),
    (rf"^turn\s+{_OBJ}\s+(?:up|down)\s+to\s+(?P<v>\d+%)$", r"set \g<obj> to \g<v>"),
    (rf"^make\s+{_OBJ}\s+(?:(?:a\s+)?(?:bit|little|tad)\s+)?(?:brighter|dimmer|darker|lighter)\s+(?P<v>\d+%)$",
     r"set \g<obj> to \g<v>"),
    (rf"^make\s+{_OBJ}\s+(?P<v>\d+%)$", r"set \g<obj> to \g<v>"),
    (rf"^(?:put|change|make|bring|move|adjust)\s+{_OBJ}\s+(?:at|on|to)\s+(?P<v>.+)$", r"set \g<obj> to \g<v>"),
    (rf"^(?:turn|make|change)\s+{_OBJ}\s+(?P<c>red|green|blue|yellow|orange|purple|pink|white|brown|black)$",
     r"set \g<obj> to \g<c>"),
    (rf"^(?:change|adjust)\s+{_OBJ}\s+color to\s+(?P<c>.+)$", r"set \g<obj> color to \g<c>"),
    (r"^(?P<obj>(?!set |turn |open |close |what |how |is |are |when |where )[a-z].+?)\s+(?:to|at)\s+(?P<v>\d+%)$",
     r"set the \g<obj> to \g<v>"),
]
_TIMER_RX = [(re.compile(p), r) for p, r in TIMER_RULES]
_COMMON_RX = [(re.compile(p), r) for p, r in COMMON_RULES]
_DEVICE_RX = [(re.compile(p), r) for p, r in DEVICE_RULES]


def rewrite(text: str) -> tuple[str, list[str]]:
    """Apply the rewrite rules to a filler-stripped text: (new text, the patterns that fired)."""
    fired: list[str] = []
    t = text
    timer = re.search(r"\btimers?\b|^(?:time|count down) ", t) is not None
    for pat, rep in (_TIMER_RX + _COMMON_RX if timer else _COMMON_RX + _DEVICE_RX):
        new = pat.sub(rep, t)
        if new != t:
            fired.append(pat.pattern)
            t = " ".join(new.split())
    t = re.sub(r"\s+in\s*$", "", t)
    t = re.sub(r"\bthe the\b", "the", t)
    return t, fired


_TAIL_VALUE = re.compile(r"\s(?:to|at|on)\s+(?P<v>\d+(?:\.\d+)?(?:%|\s*degrees?))$")
# words that make the start of a sentence more than a misheard verb: a question, a condition, a refusal
_NOT_JUNK = re.compile(r"\b(?:what|how|is|are|was|why|when|where|which|who|does|do|can|could|should|would|if|"
                       r"whether|no|tell|ask|say|wonder|think|know|check|see)\b")
TAIL_CONFIDENCE = 0.9  # a value command after a few misheard words: the device and the value were heard as said
MAX_JUNK_WORDS = 4


def junk_tails(text: str) -> list[str]:
    """A value command after a misheard start: "right on the kitchen light to 80%" (Whisper's "brighten") or "set
    right the shop the living room lamp to 25%" -> "set the kitchen light to 80%", ... One candidate per "the" within
    the first ``MAX_JUNK_WORDS`` + 1 words, only when the sentence ends with a value ("to 80%", "on 22 degrees") and
    the words dropped are no question, condition or refusal."""
    m = _TAIL_VALUE.search(text)
    if m is None:
        return []
    words = text.split()
    out: list[str] = []
    for k in range(1, min(MAX_JUNK_WORDS, len(words) - 4) + 1):
        if _NOT_JUNK.search(" ".join(words[:k])):
            break
        if words[k] == "the":
            obj = " ".join(words[k:])[: -len(m.group(0))].strip()
            out.append(f"set {obj} to {m.group('v')}")
    return out


def degrees_guess(text: str) -> str | None:
    """ "set the feeding to 22 degrees" (a misheard "heating"): a degrees value for something the templates do not
    know -> "set the temperature to 22 degrees", to be asked back, never acted on."""
    m = _TAIL_VALUE.search(text)
    if m is None or "degree" not in m.group("v") or _NOT_JUNK.search(text):
        return None
    if not re.match(r"^(?:set|put|make|change|turn|bring|move|adjust)\b", text):
        return None
    return f"set the temperature to {m.group('v')}"


def refuses(text: str) -> bool:
    """True when the tolerant tier must stand aside (negation, the past, instruction-like words, chained commands)."""
    t = text.casefold().replace("’", "'")
    return bool(REFUSE.search(t) or CHAINED.search(t))


# ------------------------------------------------------------------------------------------------ names


@dataclass(frozen=True)
class Choice:
    """A configured spoken name: an entity's name or alias, an area's or a floor's."""

    text: str  # normalised (lower case, single spaces)
    kind: str  # "name" | "area" | "floor"
    canonical: str  # the configured canonical name the slot gets
    domain: str | None = None  # for entity names


@dataclass(frozen=True)
class Correction:
    heard: str
    choice: Choice
    score: float  # rapidfuzz ratio, 0..100
    runner_up: Choice | None = None  # a different name nearly as close (ambiguous)


# Words that never start or end a spoken name span (function words and the templates' verbs/nouns).
_EDGE_STOP = frozenset(
    "the a an in on off to at of my for is are and up down all it set turn switch open close lock unlock what how "
    "timer timers please brightness color temperature degrees percent % by with from into onto that this".split())


@dataclass
class NameCorrector:
    """Corrects misheard configured names in a transcript with rapidfuzz (word spans vs names/aliases/areas)."""

    choices: list[Choice]
    cutoff: float = NAME_CUTOFF
    max_words: int = 4
    _exact: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._exact = {c.text for c in self.choices}
        self.max_words = max([self.max_words, *(len(c.text.split()) + 1 for c in self.choices)])

    @staticmethod
    def similarity(a: str, b: str) -> float:
        """Ratio of the spoken span and a name, the better of with and without spaces ("bed room" = "bedroom")."""
        s = fuzz.ratio(a, b)
        a2, b2 = a.replace(" ", ""), b.replace(" ", "")
        if a2 != a or b2 != b:
            s = max(s, fuzz.ratio(a2, b2) - 2.0)  # a split/joined word is a small, not a free, difference
        return s

    def spans(self, words: list[str]) -> Iterable[tuple[int, int, str]]:
        n = len(words)
        for i in range(n):
            if words[i] in _EDGE_STOP:
                continue
            for j in range(i + 1, min(n, i + self.max_words) + 1):
                if words[j - 1] in _EDGE_STOP:
                    continue
                yield i, j, " ".join(words[i:j])

    def candidates(self, text: str) -> list[tuple[int, int, Correction]]:
        """Spans close to (but not exactly) a configured name, best first, non-overlapping."""
        words = text.split()
        found: list[tuple[float, int, int, Correction]] = []
        for i, j, span in self.spans(words):
            if span in self._exact or len(span) < 3:
                continue
            scored = []
            for c in self.choices:
                if abs(len(c.text) - len(span)) > max(3, 0.4 * len(c.text)):
                    continue
                s = self.similarity(span, c.text)
                if s >= self.cutoff:
                    scored.append((s, c))
            if not scored:
                continue
            scored.sort(key=lambda x: -x[0])
            best_s, best = scored[0]
            runner = next((c for s, c in scored[1:] if c.canonical != best.canonical and c.kind == best.kind
                           and s >= best_s - AMBIGUOUS_MARGIN), None)
            found.append((best_s, i, j, Correction(span, best, best_s, runner)))
        found.sort(key=lambda x: (-x[0], -(x[2] - x[1])))
        taken: list[tuple[int, int, Correction]] = []
        for _, i, j, corr in found:
            if any(i < tj and ti < j for ti, tj, _ in taken):
                continue
            # a span inside an exactly spoken name is not a misheard name
            if _inside_exact_name(words, i, j, self._exact):
                continue
            taken.append((i, j, corr))
        return taken

    def corrected_texts(self, text: str, limit: int = 4) -> list[tuple[str, list[Correction]]]:
        """Candidate corrected sentences: all corrections at once, then each alone (best first)."""
        words = text.split()
        cands = self.candidates(text)
        if not cands:
            return []
        out: list[tuple[str, list[Correction]]] = []

        def apply(sel: list[tuple[int, int, Correction]]) -> str:
            w = list(words)
            for i, j, c in sorted(sel, key=lambda x: -x[0]):
                w[i:j] = [c.choice.text]
            return " ".join(w)

        out.append((apply(cands), [c for _, _, c in cands]))
        if len(cands) > 1:
            for one in cands[:limit]:
                out.append((apply([one]), [one[2]]))
        return out


def _inside_exact_name(words: list[str], i: int, j: int, exact: set[str]) -> bool:
    n = len(words)
    for a in range(max(0, i - 4), i + 1):
        for b in range(j, min(n, j + 4) + 1):
            if (a, b) != (i, j) and " ".join(words[a:b]) in exact:
                return True
    return False
