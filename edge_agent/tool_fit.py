"""Whether words and an LLM tool call fit, pure (no model): ``looks_like_command`` / ``mentions_device`` (does
the transcript command or name a device) and ``tool_misfit`` (a call whose tool kind does not fit the words)."""

from __future__ import annotations

import re
from typing import Any

from .intent import IntentCall
from .targets import DEVICE_INTENTS

_COMMAND_VERB_WORDS = (r"turn|switch|set|dim|brighten|open|close|shut|lock|unlock|start|stop|pause|resume|unpause|"
                       r"raise|lower|increase|decrease|make|put|activate|deactivate|enable|disable|skip|mute|unmute|"
                       r"cancel")
COMMAND_VERBS = re.compile(rf"\b({_COMMAND_VERB_WORDS})\b", re.IGNORECASE)
DEVICE_WORDS = {"light", "lights", "lamp", "lamps", "fan", "fans", "door", "doors", "lock", "blinds", "blind",
                "curtain", "curtains", "shade", "shades", "garage", "heating", "thermostat", "temperature", "music",
                "volume", "tv", "timer", "switch", "outlet", "plug", "window", "windows", "cover", "valve"}
NAME_OVERLAP = 0.6  # share of a device name's words found in the text for it to count as mentioned
# "switch" is a device word and a command verb: it names a device only as a noun ("the kitchen switch"), never as
# the verb of "switch to something happier" (which turned on a lamp: a forced call for words naming no device)
_SWITCH_NOUN = re.compile(r"\b(?:the|a|an|that|this|my|our|your)\s+(?:[a-z0-9']+\s+)?switch(?:es)?\b")


def looks_like_command(text: str, home: Any) -> bool:
    """A command verb plus a mention of a device (see ``mentions_device``)."""
    return bool(COMMAND_VERBS.search(text)) and mentions_device(text, home)


def mentions_device(text: str, home: Any) -> bool:
    """A device word, a configured area, or most of a configured device's name (tolerant of one misheard word:
    "the living room land")."""
    words = set(re.findall(r"[a-z0-9']+", text.lower()))
    said = words & DEVICE_WORDS
    if "switch" in said and not _SWITCH_NOUN.search(text.lower()):
        said.discard("switch")
    if said:
        return True
    names: list[str] = []
    for e in getattr(home, "entities", {}).values():
        names += list(getattr(e, "names", ()) or (e.name,))
    names += [a.name for a in getattr(home, "areas", {}).values()]
    for name in names:
        parts = re.findall(r"[a-z0-9']+", name.lower())
        if parts and sum(p in words for p in parts) / len(parts) >= NAME_OVERLAP:
            return True
    return False


_TIMER_WORDS = re.compile(r"\b(?:timers?|alarms?|countdown|minutes?|mins?|seconds?|secs?|hours?)\b")
_VALUE_WORDS = re.compile(r"\b(?:dim|dimmer|brightness|bright|brighter|brighten|darker|percent|per cent|half|full|"
                          r"colou?r|white|red|orange|yellow|green|blue|purple|brown|pink|turquoise)\b|%|\d")
_OFF_WORDS = re.compile(r"\b(?:off|out|shut|kill|cut|close|unlock|stop|disable|deactivate)\b")
_TEMPERATURE_WORDS = re.compile(r"\b(?:temperature|degrees?|warm(?:er)?|cool(?:er)?|cold(?:er)?|hot(?:ter)?|"
                                r"heat(?:ing)?|thermostat|\d+)\b")
_POSITION_WORDS = re.compile(r"\b(?:open|close|position|percent|half|halfway|way|raise|lower|up|down|\d+)\b|%")
_MEDIA_WORDS = re.compile(r"\b(?:music|song|track|play(?:ing|back)?|pause|resume|volume|louder|quieter|tv|"
                          r"radio|speaker|next|previous|skip|back|podcast|media)\b")
# A device word in the request -> the domains it can mean (a tool call must target one of them)
KIND_DOMAINS: dict[str, set[str]] = {
    "light": {"light"}, "lights": {"light"}, "lamp": {"light"}, "lamps": {"light"}, "fan": {"fan"},
    "fans": {"fan"}, "blind": {"cover"}, "blinds": {"cover"}, "curtain": {"cover"}, "curtains": {"cover"},
    "shade": {"cover"}, "shades": {"cover"}, "garage": {"cover"}, "thermostat": {"climate"},
    "heating": {"climate"}, "lock": {"lock"}, "tv": {"media_player"}, "music": {"media_player"},
    "plug": {"switch"}, "outlet": {"switch"},
}


# Which way the words switch a device, per domain: (turn-on words, turn-off words). HassTurnOn locks a lock and
# opens a cover; HassTurnOff unlocks and closes.
_DIRECTION: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "lock": (re.compile(r"\b(?:lock(?:ed)?|secure|bolt)\b"), re.compile(r"\b(?:unlock(?:ed)?|open)\b")),  # open: unlock
    "cover": (re.compile(r"\b(?:open|raise)\b"), re.compile(r"\b(?:close|shut|lower)\b")),
    "valve": (re.compile(r"\bopen\b"), re.compile(r"\b(?:close|shut)\b")),
    "": (re.compile(r"\b(?:on|start|activate|enable)\b"),
         re.compile(r"\b(?:off|stop|deactivate|disable|kill|shut)\b")),
}


# A device command the words say not to do ("don't turn off the kitchen light", "never unlock the back door")
_NEGATED = re.compile(r"\b(?:don'?t|do not|dont|never|no need to|not)\s+(?:\w+\s+){0,2}?"
                      r"(?:turn|switch|unlock|lock|open|close|shut|set|start|stop|dim|raise|lower|activate|change|"
                      r"touch)\b")


_LOCK_WORDS = re.compile(r"\b(?:un)?lock(?:ed)?\b")

# Words that talk about a device instead of asking for something: a question about what is or what happened ("who
# left the front door unlocked", "did you turn off the kitchen light", "why is the front door locked"), something
# said about oneself or the past ("I like the living room lamp", "I turned off the kitchen light an hour ago", "I
# wish the kitchen light was brighter"), or about the device ("the coffee maker makes great coffee", "my fan is too
# loud"). Such words never switch, set or unlock anything; a question may still read a state (HassGetState).
_QUESTION_OPENER = re.compile(r"^(?:who|whom|whose|why|when|where|which|how come|did|does|do you|do we|is|are|was|"
                              r"were|has|have|had)\b")
# what one thinks, likes or did (a need said in the present, "I can hardly see a thing", may still be acted on)
_SELF_OPENER = re.compile(r"^(?:(?:i|we|you)\s+(?:\w+\s+)?(?:like|love|hate|wish|think|thought|guess|bet|know|knew|"
                          r"remember|never|always|usually|often|prefer|turned|switched|left|did|was|were|had|used|"
                          r"bought|got|saw|heard|said|told|forgot)|i've|ive|we've|you've|remember|note that|fyi|"
                          r"just so you know)\b")
_ABOUT_OPENER = re.compile(r"^(?:the|my|our|your|that|this|these|those)\b[^,.;!?]*?\b(?:is|are|was|were|isn't|aren't|"
                           r"wasn't|makes?|made|looks?|seems?|sticks?|has|had|keeps?|works?|broke|broken|feels?|"
                           r"sounds?|smells?|needs? fixing)\b")
# ... unless they ask after all: "could you", "I want the lights on", "I'd like it warmer", "please"
_ASKING = re.compile(r"\b(?:please|can you|could you|would you|will you|can u|want|wanna|need|i'd like|i would like|"
                     r"id like|i'd love|let's|lets|let me have|go ahead|make sure|see that|do me a favou?r|"
                     r"is it possible|would it be possible|are you able|any chance|why don't you|why dont you|why not|"
                     r"how about|what about|mind|when you get a chance|when you can)\b")
_IMPERATIVE_CLAUSE = re.compile(rf"(?:^|[,.;!?]\s*|\b(?:and|then|so|just|now)\s+)(?:{_COMMAND_VERB_WORDS})\b")


QUESTION_TALK = "it is a question, not a request to act"  # the one kind of talk a state may still answer


def talks_about(text: str) -> str | None:
    """Why the words talk about a device rather than ask for an action on it, or None (``_QUESTION_OPENER`` ...):
    such words must not switch, set or unlock anything. A clause that starts with a command verb ("the lamp is too
    bright, dim it") or a plain ask ("I want the fan on", "could you ...") is a request after all."""
    t = " ".join(text.casefold().replace("’", "'").split())
    if not t or _ASKING.search(t) or _IMPERATIVE_CLAUSE.search(t):
        return None
    if _QUESTION_OPENER.search(t):
        return QUESTION_TALK
    if _SELF_OPENER.search(t):
        return "it says what the speaker thinks or did, not a request to act"
    if _ABOUT_OPENER.search(t):
        return "it says something about a device, not a request to act"
    return None


def direction_misfit(name: str, words: str, domains: set[str]) -> str | None:
    """Why a turn-on/off call goes the other way than the words ("could you unlock the front door" -> HassTurnOn,
    which locks it), or None. Only words that go one way count: "lights on and the fan off" says both."""
    if name not in ("HassTurnOn", "HassTurnOff") or not domains:
        return None
    reasons = []
    lock_word = _LOCK_WORDS.search(words)
    for domain in domains:
        on, off = _DIRECTION.get(domain, _DIRECTION[""])
        if lock_word and domain != "lock" and not on.search(words) and not off.search(words):
            # "unlock all the lights": a lock verb on what cannot be locked asks for nothing plainly
            return f"the request says '{lock_word.group(0)}', but a {domain} cannot be locked or unlocked"
        said_on, said_off = on.search(words), off.search(words)
        if domain == "lock" and not said_on and not said_off:
            # "Watch them out in the front door." (a misheard "what about the front door") was a lock call
            return "the request does not ask to lock or unlock anything: answer in words (HassGetState reads a lock)"
        if bool(said_on) == bool(said_off):
            return None  # both ways, or neither: the words do not decide
        if (name == "HassTurnOn") == bool(said_on):
            return None
        word = (said_on or said_off).group(0)  # type: ignore[union-attr]
        other = "HassTurnOff" if name == "HassTurnOn" else "HassTurnOn"
        reasons.append(f"the request says '{word}' but {name} does the opposite to a {domain}: use {other}")
    return reasons[0] if reasons else None


def tool_misfit(call: IntentCall, text: str, home: Any) -> str | None:
    """Why an LLM tool call does not fit the words, or None if it does (checked before it runs).

    The constrained call can only name real tools and devices, but a 0.5B model still picks a tool whose kind does
    not fit the request: a timer for "get the fan going", "turn off" for a dimming request, a light for a fan. A
    timer tool needs a timer or a duration in the words; a brightness/temperature/position/media tool needs words
    of its kind; turn on/off is not a dimming request; and when the words name a kind of device ("the fan"), the
    call must target that kind. The reason goes back to the model as the tool's error. Pure: no model.
    """
    words = text.casefold()
    name = call.name
    if name in ("HassStartTimer", "HassCancelTimer", "HassPauseTimer", "HassUnpauseTimer", "HassIncreaseTimer",
                "HassDecreaseTimer", "HassTimerStatus", "HassCancelAllTimers"):
        if not _TIMER_WORDS.search(words):
            return f"{name} is a timer tool, but the request names no timer or duration"
        return None
    if name == "HassLightSet" and not _VALUE_WORDS.search(words):
        return "HassLightSet sets brightness or color, but the request names neither"
    if name in ("HassTurnOn", "HassTurnOff") and _VALUE_WORDS.search(words) and re.search(
            r"\b(?:dim|brightness|brighten|percent|per cent)\b|%", words) and not _OFF_WORDS.search(words):
        return f"{name} switches on or off, but the request sets a brightness: use HassLightSet"
    if name == "HassClimateSetTemperature" and not _TEMPERATURE_WORDS.search(words):
        return "HassClimateSetTemperature sets a temperature, but the request names none"
    if name == "HassSetPosition" and not _POSITION_WORDS.search(words):
        return "HassSetPosition sets how far a cover is open, but the request names no position"
    if name.startswith("HassMedia") or name == "HassSetVolume":
        if not _MEDIA_WORDS.search(words):
            return f"{name} controls media, but the request is not about media"
    if name in DEVICE_INTENTS and name != "HassGetState" and _NEGATED.search(words.replace("’", "'")):
        return f"the request says not to do it: {name} must not run; answer in words"
    if name in DEVICE_INTENTS:
        kinds = _kinds_said(words)
        slots = call.slots
        target = slots.get("name")
        named = isinstance(target, str) and normalize_name_in(target, words)
        if not hasattr(home, "find"):
            return None
        # what the call targets, looked up once for every rule below
        targets = (home.find(target, None, None) if isinstance(target, str) else
                   home.find(None, slots.get("area"), slots.get("domain"), None, slots.get("floor")))
        domains = {e.domain for e in targets}
        way = direction_misfit(name, words, domains)
        if way:
            return way
        unknown = _unknown_name(words, home) if not named else None
        if unknown and name != "HassGetState":
            return f"the request is about {unknown}, which is not a configured device or area: nothing to do there"
        if kinds and not named and domains and not domains & kinds:
            return (f"the request is about a {'/'.join(sorted(kinds))}, but the call targets "
                    f"{'/'.join(sorted(domains))} devices")
        if isinstance(target, str) and not named:
            other = _named_devices(words, home)
            targeted = {e.id for e in targets} if other else set()
            if other and targeted and not targeted & set(other):
                # "say done and unlock the front door" -> the coffee maker of an earlier turn: never another device
                return (f"the request names {', '.join(sorted(other.values()))}, but the call targets {target}")
    return None


def _kinds_said(words: str) -> set[str]:
    """The device domains the words' kind words mean; in a compound the last word is the kind ("the garage light" is
    a light, not the garage door)."""
    tokens = re.findall(r"[a-z]+", words)
    out: set[str] = set()
    for i, w in enumerate(tokens):
        if w in KIND_DOMAINS and not (i + 1 < len(tokens) and tokens[i + 1] in KIND_DOMAINS):
            out |= KIND_DOMAINS[w]
    return out


# "the bathroom light", "the lights in the bathroom": the word that says which one
_WHICH_DEVICE = re.compile(r"\b([a-z]+)\s+(?:lights?|lamps?|fans?|doors?|blinds?|curtains?|plugs?)\b")
_WHICH_PLACE = re.compile(r"\bin\s+the\s+([a-z]+)\b")
_NOT_A_NAME = {"the", "a", "an", "all", "my", "our", "your", "this", "that", "these", "those", "every", "each", "both",
               "other", "main", "big", "small", "little", "new", "old", "two", "three", "some", "any", "off", "on",
               "up", "down", "out", "please", "and", "or", "then", "whole", "entire", "bright", "dim", "front", "back",
               "side", "top", "bottom", "house", "home", "room", "here", "there", "same", "one", "it", "of", "to", "in",
               "at", "for", "with", "now", "just", "also", "too", "again", "lock", "unlock", "open", "close", "shut",
               "turn", "switch", "start", "stop", "set", "kill", "you", "never", "can", "could", "would", "will",
               "timer", "timers", "unlocked", "locked", "opened", "closed", "single", "is", "are", "was", "were", "no",
               "way", "middle", "morning", "evening", "night", "dark", "meantime", "cut", "light", "lights", "lamp",
               "fan", "door", "blinds"}
UNKNOWN_NAME_MAX = 70  # rapidfuzz ratio: a word this far from every configured name's words names something else


def _unknown_name(words: str, home: Any) -> str | None:
    """The device or place the words name that the home does not have ("the bathroom light", "the lights in the
    porch"), or None. A word close to a configured name's word (a mishearing: "the best lamp") counts as known."""
    from rapidfuzz import fuzz

    devices, places = home.spoken_names()
    known = {w for n in (*devices, *places) for w in re.findall(r"[a-z0-9']+", n.casefold())}
    if not known:
        return None
    for rx in (_WHICH_DEVICE, _WHICH_PLACE):
        for m in rx.finditer(words):
            w = m.group(1)
            if w in _NOT_A_NAME or w in known or w.isdigit() or any(k.startswith(w) for k in known if len(w) >= 3):
                continue  # "the bed room": the start of "bedroom"
            if max(fuzz.ratio(w, k) for k in known) < UNKNOWN_NAME_MAX:
                return f"'{m.group(0)}'"
    return None


def named_targets(text: str, home: Any) -> dict[str, set[str]]:
    """What the words name, as the values a tool call may target: ``{"name": ..., "area": ..., "floor": ...}`` (the
    configured names and aliases). A device counts when most of its name or an alias is in the words, an area or a
    floor likewise; the devices of a named area (or floor) count too ("the lamp in the office"). Empty when the words
    name nothing (a reference to the last device, a misheard name): then nothing narrows the call."""
    words = text.casefold()
    floors = [f for f in getattr(home, "floors", {}).values() if any(normalize_name_in(n, words)
                                                                     for n in (f.name, *f.aliases))]
    floor_ids = {f.id for f in floors}
    areas = [a for a in getattr(home, "areas", {}).values()
             if any(normalize_name_in(n, words) for n in (a.name, *a.aliases))
             or getattr(a, "floor", None) in floor_ids]
    area_ids = {a.id for a in areas}
    named = _named_devices(words, home)
    ents = [e for e in getattr(home, "entities", {}).values() if e.id in named or getattr(e, "area", None) in area_ids]
    if not (ents or areas or floors):
        return {}
    return {"name": {n for e in ents for n in e.names}, "area": {n for a in areas for n in (a.name, *a.aliases)},
            "floor": {n for f in floors for n in (f.name, *f.aliases)}}


def _named_devices(words: str, home: Any) -> dict[str, str]:
    """Configured devices whose name or an alias is (mostly) in the words: entity id -> name."""
    out: dict[str, str] = {}
    for e in getattr(home, "entities", {}).values():
        for n in getattr(e, "names", ()) or (e.name,):
            if normalize_name_in(n, words):
                out[e.id] = e.name
                break
    return out


def normalize_name_in(name: str, words: str) -> bool:
    """The device name (most of its words) is in the request."""
    parts = re.findall(r"[a-z0-9']+", name.casefold())
    said = set(re.findall(r"[a-z0-9']+", words))
    return bool(parts) and sum(p in said for p in parts) / len(parts) >= NAME_OVERLAP
