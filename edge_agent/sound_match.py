"""The sound tier: when every text tier refused a transcript, let the audio choose between it and the same words
with one or two of them taken from a nearby template sentence.

Whisper tiny.en mishears one word of a request now and then ("Wights out in the office.", "Watch the outside
temperature."), and the text tiers must refuse those: a word that decides the action may never be guessed from
spelling ("post" is as near to "pause" as "off" is to "on"). The audio can tell, though. Like Home Assistant's
speech-to-phrase, which only ever hears sentences of its templates, this tier asks the speech model itself how
likely each candidate is given the same audio (forced decoding: ``SttEngine.sentence_scores``, the log-probability
of the sentence, summed over its tokens) and compares that with the transcript it wrote:

- the candidates (``IntentMatcher.sound_candidates``, ``intents_sound.py``) are the transcript with at most
  ``SUBSTITUTIONS`` of its words (one or two words each) replaced by what a template sentence close in spelling says
  there, with the same names and numbers, and up to ``ALTERNATIVES`` of the speech model's other readings of the
  audio (its n-best) with the transcript's numbers (and, as rivals, the numbers Whisper confuses with them:
  ``confusable_numbers``); each must match the text tiers for real and name configured devices only;
- the best candidate must fit the audio nearly as well as the transcript itself (at most ``HEARD_MARGIN`` below it:
  Whisper's own greedy decode is close to the likeliest wording, so a candidate far below it is not what was said);
- and clearly better than any candidate that does something else (``ACT_LEAD`` ahead of the best rival meaning,
  e.g. "turn off" against "turn on" the same lamp); a smaller lead (``ASK_LEAD``) asks back ("Did you mean: pause
  my timer for a sec?"), and a yes does it.

Everything else goes on to the LLM as before. Pure decisions on numbers; the scores come from the STT port. The
margins were set on the dev half of tests/data/paraphrases.yaml spoken (``tools/sound_tier_eval.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MIN_RATIO = 60.0  # rapidfuzz ratio of the content words below which a template sentence lends no words
CANDIDATES = 10  # distinct sentences scored at most (one decoder pass each)
ALTERNATIVES = 4  # the speech model's other readings of the audio that may be candidates (n-best, after the first)
SUBSTITUTIONS = 2  # words (or pairs of words) of the transcript one candidate may replace
HEARD_MARGIN = 2.0  # nats the best candidate's log-probability may fall below the transcript's (e^2: ~7x less likely)
ACT_LEAD = 3.0  # nats ahead of the best candidate that does something else: acted on
ASK_LEAD = 1.0  # ... at least this far ahead (and below ACT_LEAD): asked back
QUESTION_WORDS = frozenset("what what's whats how how's hows when which who where is are does do can".split())
# the skeletons are written without apostrophes ("hows the kitchen light"); Whisper writes them
APOSTROPHES = {"whats": "what's", "hows": "how's", "wheres": "where's", "whos": "who's", "thats": "that's",
               "dont": "don't", "isnt": "isn't", "arent": "aren't", "im": "I'm", "ive": "I've"}


def spoken_form(sentence: str) -> str:
    """A template sentence written as Whisper writes speech: capitalised, with a full stop or a question mark (the
    scores of a sentence without them would all pay for the missing end the same way, but not as the transcript)."""
    s = " ".join(APOSTROPHES.get(w, w) for w in sentence.split())
    if not s:
        return s
    end = "?" if s.split()[0].casefold() in QUESTION_WORDS else "."
    return s[0].upper() + s[1:] + ("" if s[-1] in ".?!" else end)


# Short follow-ups ("pause it" heard "Pull it.", "resume it" heard "review it."): the verbs a follow-up of the
# conversation context may take, each with the pronoun heard; the context must resolve the candidate.
FOLLOW_VERBS = ("pause {p}", "resume {p}", "stop {p}", "cancel {p}", "close {p}", "open {p}", "lock {p}",
                "unlock {p}", "turn {p} on", "turn {p} off")
PRONOUNS = ("it", "that", "them", "this")
FOLLOW_MAX_WORDS = 4  # longer transcripts are not a short follow-up misheard


def followup_sentences(said: str) -> list[str]:
    """The short follow-ups a transcript of at most ``FOLLOW_MAX_WORDS`` normalized words with a pronoun may have
    been (``said`` lower case, no punctuation): each of ``FOLLOW_VERBS`` with that pronoun, but ``said`` itself."""
    words = said.split()
    pronoun = next((w for w in words if w in PRONOUNS), None)
    if pronoun is None or not 2 <= len(words) <= FOLLOW_MAX_WORDS:
        return []
    return [s for s in (v.format(p=pronoun) for v in FOLLOW_VERBS) if s != said]


def numbers(sentence: str) -> list[str]:
    """The numbers written in digits in a normalized sentence, in order."""
    return re.findall(r"\d+", sentence)


def same_numbers(reading: str, said: str) -> bool:
    """Whether another reading of the audio has the transcript's numbers, in words or digits ("to IIT" read as "to
    80" brings a number the transcript does not have: the beam's guess, never a candidate)."""
    from .fuzzy import words_to_digits

    return numbers(words_to_digits(reading)) == numbers(words_to_digits(said))


def confusable_numbers(sentence: str) -> list[str]:
    """``sentence`` with one of its numbers replaced by one Whisper confuses it with in speech: seven, seventeen and
    seventy ("seventy percent" heard "seven to percent"). Scored as rivals, they stop the tier from acting on a
    number the audio does not settle."""
    out: list[str] = []
    for m in re.finditer(r"\b\d+\b", sentence):
        n = int(m.group())
        if 1 <= n <= 9:
            others = [n + 10, n * 10]
        elif 11 <= n <= 19:
            others = [n - 10, (n - 10) * 10]
        elif n % 10 == 0 and 20 <= n <= 90:
            others = [n // 10, n // 10 + 10]
        else:
            others = []
        out += [sentence[:m.start()] + str(o) + sentence[m.end():] for o in others]
    return out


# The second look at an action word: Whisper writes "off" for a spoken "on" now and then ("Turn off the bed lamp."
# for "turn on the bed lamp"), and the text tiers act on it as written. Forced decoding tells better than the greedy
# decode did: on both such mishearings of the spoken paraphrases the opposite word scored ~2 nats above the
# transcript, and on every rightly heard on/off command (74) at least 3.2 nats below it (docs/benchmarks.md,
# "Twentieth session"). So before a spoken on/off command is acted on, the same words with the opposite word are
# scored beside it: a lead of the opposite asks back, a lead of ``ACT_LEAD`` acts on it.
OPPOSITE_WORDS = {"on": "off", "off": "on"}  # the opposite intents are context_rules.UNDO's
# ... unless the decode itself was this much surer (nats) of its word than of the opposite (``decoded``'s margin): the
# two mishearings had 0.09 and 0.22, the 69 rightly heard on/off commands 1.1 to 13 (median 6.8); 4 looks again at
# 7 of the 71 and at both mishearings (docs/benchmarks.md, "Twenty-first session")
SURE_MARGIN = 4.0
# The whole tier is skipped (no n-best beam search, nothing scored: ~100-200 ms here) where the decode's least sure
# word token had at least this log-probability (``decoded``'s ``least_sure``, nats): every transcript the tier acted
# on rightly had a word below -0.46 (the dev half spoken twice, seed 2; the held-out half: below -0.66), and of the
# transcripts above -0.40 all but one were heard word for word (docs/benchmarks.md, "Twenty-second session")
SURE_WORDS = -0.35


def flipped(sentence: str) -> str | None:
    """``sentence`` with its one on/off word turned into the other, as written ("Turn off the bed lamp." -> "Turn on
    the bed lamp."); None without exactly one ("turn off the light on the desk" is not guessed at)."""
    found = list(re.finditer(r"\b(on|off)\b", sentence, flags=re.IGNORECASE))
    if len(found) != 1:
        return None
    m = found[0]
    other = OPPOSITE_WORDS[m.group(1).casefold()]
    if m.group(1)[0].isupper():
        other = other.capitalize()
    return sentence[:m.start()] + other + sentence[m.end():]


def second_look(heard: float, opposite: float) -> str:
    """"keep" the action as heard, "ask" about the opposite, or "act" on it: from the log-probabilities of the
    transcript and of the same words with the opposite action word, given the audio."""
    lead = opposite - heard
    if lead >= ACT_LEAD:
        return "act"
    return "ask" if lead > 0 else "keep"


@dataclass(frozen=True)
class Calls:
    """Several calls as one candidate (a follow-up's), with what ``meaning`` reads."""

    heard: str
    calls: tuple[Any, ...]

    @property
    def name(self) -> str:
        return "+".join(c.name for c in self.calls)

    @property
    def slots(self) -> dict[str, Any]:
        return {f"{i}.{k}": v for i, c in enumerate(self.calls) for k, v in (c.slots or {}).items()}

    @property
    def entities(self) -> list[str]:
        return sorted({e for c in self.calls for e in (getattr(c, "entities", None) or [])})


def meaning(call: Any) -> tuple[Any, ...]:
    """What a call does: its intent, slots and target entities (two wordings of one action are one meaning)."""
    slots = tuple(sorted((k, str(v)) for k, v in (call.slots or {}).items()))
    return call.name, slots, tuple(sorted(getattr(call, "entities", []) or []))


@dataclass(frozen=True)
class Verdict:
    """The sound tier's decision: ``action`` "act", "ask" or "pass" (to the LLM), with the numbers it went by."""

    action: str
    call: Any = None
    reason: str = ""
    heard: float = 0.0  # the transcript's own score
    best: float | None = None  # the best candidate's
    rival: float | None = None  # the best candidate of another meaning's

    def log(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "reason": self.reason, "heard": round(self.heard, 3)}
        if self.best is not None:
            out["best"] = round(self.best, 3)
            out["sentence"] = getattr(self.call, "heard", "")
        if self.rival is not None:
            out["rival"] = round(self.rival, 3)
        return out


def choose(heard: float, scored: list[tuple[Any, float]]) -> Verdict:
    """Decide from the transcript's score ``heard`` and each candidate call's score (log-probabilities in nats,
    higher is likelier)."""
    best_by: dict[tuple[Any, ...], tuple[Any, float]] = {}
    for call, score in scored:
        key = meaning(call)
        if key not in best_by or score > best_by[key][1]:
            best_by[key] = (call, score)
    if not best_by:
        return Verdict("pass", reason="no candidate", heard=heard)
    ranked = sorted(best_by.values(), key=lambda cs: -cs[1])
    call, best = ranked[0]
    rival = ranked[1][1] if len(ranked) > 1 else None
    if heard - best > HEARD_MARGIN:
        return Verdict("pass", call, "the transcript fits the audio better", heard, best, rival)
    lead = best - rival if rival is not None else float("inf")
    if lead >= ACT_LEAD:
        return Verdict("act", call, "clearly the likeliest", heard, best, rival)
    if lead >= ASK_LEAD:
        return Verdict("ask", call, "likeliest, not by much", heard, best, rival)
    return Verdict("pass", call, "two meanings fit alike", heard, best, rival)
