"""Transcript text as it is compared: numbers spelled out, punctuation gone; word error rate.

Shared by the tests, the benchmark and ``tools/wer.py``.
"""

from __future__ import annotations

import re

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}


def number_to_words(n: int) -> str:
    """Cardinal English words for a non-negative integer ("42" -> "forty two"), as STT references spell numbers."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return f"{number_to_words(n // value)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number_token(m: re.Match[str]) -> str:
    whole, frac, suffix = m.group(1).replace(",", ""), m.group(2), (m.group(3) or "").lower()
    if len(whole) > 12:
        return " ".join(_ONES[int(d)] for d in whole)
    if suffix in ("st", "nd", "rd", "th") and not frac:
        return " " + _ordinal_words(int(whole)) + " "
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix == "%":
        words += " percent"
    return f" {words} "


def normalize_text(s: str) -> str:
    """Lowercase words without punctuation, numbers spelled out: the form in which transcripts are compared.

    Whisper writes "Mr. Dashwood", "ill-disposed" and "8 of spades"; references say "mister dashwood", "ill disposed"
    and "eight of spades". Apostrophes inside words stay ("don't"); sentence markers like ``<s>`` go.
    """
    s = re.sub(r"</?s>|<sil>", " ", s)
    s = s.lower().replace("’", "'")
    s = re.sub(r"(\d+):(\d\d)\b", lambda m: f"{m.group(1)} {m.group(2)}", s)  # 7:30 -> seven thirty
    s = re.sub(r"\$(\d[\d,]*)", r"\1 dollars", s)
    s = re.sub(r"(\d[\d,]*\d|\d)(?:\.(\d+))?(st|nd|rd|th|%)?", _number_token, s)
    s = re.sub(r"[^\w\s']|_", " ", s)  # hyphens and punctuation split words
    words = []
    for w in s.split():
        w = w.strip("'")
        if w:
            words.append(_ABBREVIATIONS.get(w, w))
    return " ".join(words)


def word_error_rate(ref: str, hyp: str) -> float:
    """(substitutions + deletions + insertions) / words in the reference, after ``normalize_text`` of both.

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise (so the result is always finite).
    """
    r, h = normalize_text(ref).split(), normalize_text(hyp).split()
    if not r:
        return 0.0 if not h else 1.0
    return edit_distance(r, h) / len(r)


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance over tokens (one row of the table at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# What the prompt says after the names: the product's kinds of request in plain words, so Whisper expects a command
# ("add two minutes", not "and two minutes"; "cut the lights", not "cart of the lights"). Chosen on the dev half of
# the paraphrase set (docs/benchmarks.md, "Whisper primed with the home's names"); a list of bare verbs made Whisper
# read words into white noise, this sentence did not.
PRIME_REQUESTS = ("Turn on the lights, switch off, set it to fifty percent, start a timer, add a minute, "
                  "cancel my timer, lock or unlock the door.")


def prime_text(setting: str, devices: list[str], areas: list[str] | None = None) -> str:
    """The words an STT engine is primed with (``stt.whisper.prompt``). ``auto``: the home's devices and areas in
    lower case, each with "the" ("the desk lamp, ..., in the kitchen, the office."), then ``PRIME_REQUESTS``
    (Title Case names made Whisper write whole requests in Title Case and mishear more); "" = none; any other text
    is taken as written."""
    if setting.strip().casefold() != "auto":
        return " ".join(setting.split())
    names = [f"the {' '.join(n.split()).lower()}" for n in devices if n.strip()]
    rooms = [f"the {' '.join(n.split()).lower()}" for n in areas or [] if n.strip()]
    if rooms:
        rooms[0] = "in " + rooms[0]
    listed = ", ".join(names + rooms)
    return f"{listed}. {PRIME_REQUESTS}" if listed else PRIME_REQUESTS
