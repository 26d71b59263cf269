"""Conversation context's phrase rules, pure: the intent groups a follow-up may repeat, correct or undo, the words
for device kinds and colours, number words, and the regexes for "it", "too", "the other one", "no, the bedroom one",
"actually make it eighty" and "stop it" after a timer. ``ConversationContext`` (context.py) applies them.
"""

from __future__ import annotations

import re

TARGET_SLOTS = ("name", "area", "floor", "domain", "device_class")
TIMER_INTENTS = frozenset({"HassStartTimer", "HassCancelTimer", "HassPauseTimer", "HassUnpauseTimer",
                           "HassIncreaseTimer", "HassDecreaseTimer", "HassTimerStatus"})
# Intents that changed a device and may be repeated on another one or corrected (not questions).
ACTIONS = frozenset({"HassTurnOn", "HassTurnOff", "HassLightSet", "HassSetPosition", "HassClimateSetTemperature",
                     "HassMediaPause", "HassMediaUnpause", "HassSetVolume"})
REPEATABLE = ACTIONS | {"HassGetState"}
# A new number for the last device: which intent and slot it sets, per domain.
VALUE_FOR_DOMAIN = {"light": ("HassLightSet", "brightness"), "cover": ("HassSetPosition", "position"),
                    "valve": ("HassSetPosition", "position"), "climate": ("HassClimateSetTemperature", "temperature"),
                    "media_player": ("HassSetVolume", "volume_level")}
UNDO = {"HassTurnOn": "HassTurnOff", "HassTurnOff": "HassTurnOn", "HassMediaPause": "HassMediaUnpause",
        "HassMediaUnpause": "HassMediaPause"}
OFF_STATES = frozenset({"off", "closed", "unlocked", "paused", "idle"})
# Words for the kind of device in "the bedroom one" / "the hallway light": domain by word.
DOMAIN_WORDS = {"light": "light", "lights": "light", "lamp": "light", "lamps": "light", "fan": "fan", "fans": "fan",
                "blind": "cover", "blinds": "cover", "door": None, "lock": "lock", "switch": "switch",
                "thermostat": "climate", "heating": "climate", "tv": "media_player", "speaker": "media_player"}
COLORS = frozenset("white red orange yellow green blue purple brown pink turquoise".split())

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}

_ONE_UNITS = frozenset({"hour", "minute", "second", "percent", "%", "degree", "hundred"})
_LEAD = r"(?:(?:actually|oh|um|uh|hmm|well|okay|ok|sorry|and|please|hey|wait)[, ]+)*"
_PRONOUN = r"(?:it|that one|this one|that|this|them|those|these)"
# "too" means "as well" only where nothing it could qualify follows: "the kitchen one too", not "too dark"
_AGAIN = re.compile(r"\b(?:too(?! (?!please\b)\w)|as well|also|again)\b")
# A sentence about the room or the weather with "it" as its empty subject ("it is too dark in here", "it's cold"):
# not a reference to the device of the last turn.
_DUMMY_IT = re.compile(r"^(?:it(?:'s| is| s| was| feels| seems| looks| gets| got)|its)\b")

# "no, the bedroom one" / "not that one, the desk lamp" / "i meant the office" / "wrong one, the bedroom lamp"
_CORRECTION = re.compile(
    rf"^{_LEAD}(?:no|nope|not (?:that|this|the \w+)(?: one)?|wrong (?:one|light|lamp|device|room)|"
    r"i meant|i said)(?:[, ]+(?:no|i meant|i said|i want(?:ed)?|it'?s|its|make it|do|use))*[, ]+(?P<target>.+?)"
    r"(?:[, ]+(?:instead|please|i meant|not that one))*$")
# "actually make it eighty" / "make that 80 percent" / "set it to 30" / "eighty percent instead" / "make it red"
_VALUE = re.compile(
    rf"^{_LEAD}(?:no[, ]+)?(?:(?:make|set|change|turn|put|bring|dim|raise|lower)(?: {_PRONOUN})?(?: (?:up|down))?"
    r"(?: (?:to|at))?[, ]+)?(?P<value>\d+(?:\.\d+)?|" + "|".join(sorted(COLORS)) +
    r")(?: ?(?P<unit>%|percent|per cent|degrees?))?(?: (?:instead|please|then))*$")
# "stop it" / "pause that" / "cancel it" / "resume it" / "how much time is left on it" / "add 5 minutes to it"
_TIMER_VERB = {"stop": "HassCancelTimer", "cancel": "HassCancelTimer", "kill": "HassCancelTimer",
               "pause": "HassPauseTimer", "hold": "HassPauseTimer", "resume": "HassUnpauseTimer",
               "continue": "HassUnpauseTimer", "unpause": "HassUnpauseTimer", "restart": "HassUnpauseTimer"}
_TIMER_CMD = re.compile(rf"^{_LEAD}(?P<verb>stop|cancel|kill|pause|hold|resume|continue|unpause|restart) "
                        rf"{_PRONOUN}(?: (?:please|now|for me))*$")
_TIMER_LEFT = re.compile(rf"^{_LEAD}(?:how (?:much|long)(?: time)?(?: is| has it got| does it have)? "
                         rf"(?:left|to go)(?: on {_PRONOUN})?|how long (?:is left )?on {_PRONOUN})$")
_TIMER_ADD = re.compile(rf"^{_LEAD}(?P<verb>add|take off|remove) (?P<n>\d+) (?P<unit>seconds?|minutes?|hours?)"
                        rf"(?: (?:to|from|off) {_PRONOUN})?$")
# "and the bedroom one too" / "the desk lamp as well" / "also the office" / "what about the bedroom"
_ALSO = re.compile(rf"^{_LEAD}(?:also |what about |how about |and |same for |same with |do )*(?P<target>.+?)"
                   r"(?:[, ]+(?:too|as well|also|please))*$")
_OTHER = re.compile(r"\b(?:the )?other (?:one|ones|light|lamp|fan|device)\b")
_HAS_VERB = re.compile(r"\b(?:turn|switch|set|dim|brighten|open|close|shut|lock|unlock|start|stop|pause|resume|"
                       r"make|put|raise|lower|is|are|what|how|cut|kill|activate|deactivate)\b")
_PRONOUN_RX = re.compile(rf"\b{_PRONOUN}\b")
# Whisper's "close then" for "close them" (a spoken conversation): a bare verb and "then" is a follow-up's pronoun
_THEN_FOR_THEM = re.compile(r"^(?P<verb>close|open|shut|lock|unlock|dim|brighten|raise|lower|stop|pause|resume|"
                            r"cancel|(?:turn|switch) (?:on|off)|(?:turn|switch)) then(?P<rest> (?:on|off|up|down))?"
                            r"(?P<tail>(?: please| now)*)$")


def then_for_them(t: str) -> str:
    """"close then" -> "close them", "turn then off" -> "turn them off" (normalized text); anything else unchanged."""
    return _THEN_FOR_THEM.sub(lambda m: f"{m['verb']} them{m['rest'] or ''}{m['tail']}", t)


def words_to_number(text: str) -> str:
    """Number words to digits ("eighty five" -> "85", "a hundred" -> "100"); other words unchanged."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("hundred",) and out and out[-1] in ("a", "one"):
            out[-1] = "100"
        elif w in _TENS:
            n = _TENS[w]
            if i + 1 < len(words) and words[i + 1] in _UNITS and 0 < _UNITS[words[i + 1]] < 10:
                n += _UNITS[words[i + 1]]
                i += 1
            out.append(str(n))
        elif w == "one" and not (i + 1 < len(words) and words[i + 1] in _ONE_UNITS):
            out.append(w)  # "the bedroom one", "that one": a pronoun, not a number
        elif w in _UNITS:
            out.append(str(_UNITS[w]))
        elif w == "half":
            out.append("50")
        elif w == "full":
            out.append("100")
        else:
            out.append(w)
        i += 1
    return " ".join(out)


def normalize(text: str) -> str:
    """Lower case, words and digits, "%" kept; number words as digits."""
    t = text.casefold().replace("%", " % ")
    t = re.sub(r"[^\w%' ]+", " ", t)
    t = re.sub(r"(\d) %", r"\1%", " ".join(t.split()))
    return words_to_number(t).replace(" %", "%")
