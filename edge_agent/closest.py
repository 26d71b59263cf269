"""The closest template sentence: a transcript one small mishearing away from a sentence the templates know.

Whisper often gets every word of a request right but one: "what time in it", "sep brightness of the desk lamp to 25%".
The exact templates refuse such a sentence, the tolerant tier's rules (``fuzzy.py``) only know the words they were
written for, and the LLM, given a garbled sentence, mostly does nothing. Like the community's hass-closest-intent,
this tier expands the templates once per home and takes the closest sentence, but it never trusts the fuzzy match
with what the request *does*:

- **Skeletons.** Every sentence the supported templates can say (``SUPPORTED_INTENTS``, without the free-text timer
  names), expanded once, with the home's names, areas and floors left as ``{name}`` / ``{area}`` / ``{floor}`` and
  every number as ``#``; filed by that placeholder signature.
- **The transcript, written the same way**: its configured names (as said, or corrected by ``NameCorrector``)
  become placeholders, its numbers ``#``. Only skeletons with the same signature are compared (rapidfuzz), so a name
  or a number is never added or dropped.
- **Word rules** (``word_edits``): the transcript and the skeleton may differ only by words replaced with a similar
  word (``WORD_MIN``) and short function words (``SOFT``) added or left out; no word that decides the action
  (``PROTECTED``: on/off, lock/unlock, open/close, up/down, the timer verbs, all, ...) may differ at all; at most
  one hard edit per four words of the skeleton.
- **Filled back and matched for real**: the skeleton with the transcript's own names and numbers put back must match
  the templates through hassil, whose intent, slots and context rules (``requires_context``) are what acts.

Confidence is the sentence ratio (0..1); ``IntentMatcher`` acts at ``ACT_SCORE`` and above, asks back ("Did you mean:
what time is it?") from ``ASK_SCORE``. Pure string logic plus the template expansion; no hassil matching here.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

ACT_SCORE = 88.0  # ratio of the content words at or above which the closest sentence is acted on
ASK_SCORE = 80.0  # at or above (and below ACT_SCORE): asked back; below: not this tier's
WORD_MIN = 65.0  # a replaced word must be at least this close (rapidfuzz ratio) to the skeleton's word
MIN_WORDS = 3  # shorter transcripts are never matched by closeness: "top it" is not "stop it"
MIN_CONTENT = 2  # ... nor those with fewer content words (function words aside)
TOP_K = 8  # skeletons looked at per transcript, best ratio first
HOME_LISTS = {"name": "{name}", "area": "{area}", "floor": "{floor}"}
MAX_PER_SENTENCE = 100  # distinct wordings kept per template sentence: 49k in all, ~1.5 s to build (4000: 335k, 11 s)
MAX_LIST_VALUES = 40  # a language text list longer than this stays a placeholder no transcript has

# Words that decide what a request does or where: they never differ between the transcript and the skeleton.
PROTECTED = frozenset(
    "on off out open opened close closed shut lock locked unlock unlocked up down start stop pause resume unpause "
    "cancel continue all every everything no not don't never yes next previous skip back mute unmute increase "
    "decrease add remove raise lower brighter dimmer louder quieter more less warmer cooler higher "
    "timer timers minute minutes second seconds hour hours what who when how many which "
    "home house everywhere room here "
    # what kind of device: never swapped for another ("lock the kitchen lite" is not "lock the kitchen gate")
    "light lights lamp lamps fan fans door doors gate gates window windows garage blind blinds curtain curtains "
    "shade shades shutter shutters awning lock locks switch switches outlet plug thermostat heating heater "
    "temperature brightness color colour volume tv television speaker music media valve".split())
# Function words: left out of the comparison altogether (a mishearing adds, drops or swaps them freely).
SOFT = frozenset("the a an my our your it to of in at for this that please".split())
# The words that make a question of a statement: they may differ only inside a question that starts with the same
# question word ("what time in it" -> "what time is it"), never between "is the fan on" and "the fan on".
AUX = frozenset("is are does do".split())
WH = frozenset("what how when which who where".split())
_SOFT_RX = re.compile(r"(?<![\w'])(?:" + "|".join(sorted(SOFT)) + r")(?![\w'])")


def normalize(text: str) -> str:
    """Lower case, "percent" as "%", punctuation (but % ° # and placeholders) as spaces, single spaces."""
    t = text.casefold().replace("’", "'")
    t = re.sub(r"\bper ?cent\b", "%", t)
    t = re.sub(r"[^\w\s%°#{}']", " ", t)
    t = re.sub(r"(?<=[#\d])\s+([%°])", r"\1", t)
    return " ".join(t.split())


def content(text: str) -> str:
    """A normalized sentence without its function words (``SOFT``): what the closeness is measured on."""
    return " ".join(w for w in text.split() if w not in SOFT)


def signature(text: str) -> tuple[tuple[str, int], ...]:
    """The placeholders of a normalized sentence and how often each occurs: skeletons are compared within one."""
    counts: dict[str, int] = defaultdict(int)
    for tok in re.findall(r"\{\w+\}|#", text):
        counts[tok] += 1
    return tuple(sorted(counts.items()))


# ------------------------------------------------------------------------------------------------ expansion

Pair = tuple[str, str]  # (the content words so far, the full text so far): deduplicated on the first


def _dedup(pairs: Iterable[Pair], cap: int) -> list[Pair]:
    seen: dict[str, Pair] = {}
    for key, full in pairs:
        k = " ".join(key.split())
        if k not in seen:
            seen[k] = (key, full)  # as said, spaces and all: the next chunk is glued on to it
            if len(seen) >= cap:
                break
    return list(seen.values())


def _expand(expr: Any, rules: dict[str, Any], slot_lists: dict[str, Any], memo: dict[str, list[Pair]],
            cap: int) -> list[Pair]:
    """What an expression can say, as (content words, full text) pairs, one full text per distinct content (the
    first: optional words included), at most ``cap``; home lists and numbers as placeholders."""
    from hassil.expression import Alternative, ListReference, Permutation, RuleReference, Sequence, TextChunk
    from hassil.intents import RangeSlotList, TextSlotList

    if isinstance(expr, TextChunk):
        text = (expr.original_text or "").casefold()
        return [(" " + _SOFT_RX.sub(" ", text) + " " if text.strip() else text, text)]
    if isinstance(expr, ListReference):
        if expr.list_name in HOME_LISTS:
            tok = HOME_LISTS[expr.list_name]
            return [(tok, tok)]
        slot_list = None if expr.is_inline_range else slot_lists.get(expr.list_name)
        if expr.is_inline_range or isinstance(slot_list, RangeSlotList):
            return [("#", "#")]
        if isinstance(slot_list, TextSlotList) and len(slot_list.values) <= MAX_LIST_VALUES:
            out: list[Pair] = []
            for value in slot_list.values:
                out.extend(_expand(value.text_in, rules, slot_lists, memo, cap))
            return _dedup(out, cap)
        tok = "{" + expr.list_name + "}"  # a wildcard or a long list: a placeholder no transcript carries
        return [(tok, tok)]
    if isinstance(expr, RuleReference):
        if expr.rule_name not in memo:
            memo[expr.rule_name] = []  # a rule that refers to itself expands to nothing
            memo[expr.rule_name] = _expand(rules[expr.rule_name].expression, rules, slot_lists, memo, cap)
        return memo[expr.rule_name]
    if isinstance(expr, Alternative):
        out = []
        for item in expr.items:
            out.extend(_expand(item, rules, slot_lists, memo, cap))
        if expr.is_optional:
            out.append(("", ""))
        return _dedup(out, cap)
    if isinstance(expr, Permutation):
        parts = [_expand(item, rules, slot_lists, memo, cap) for item in expr.items]
        out = []
        for order in itertools.permutations(parts):
            for combo in itertools.islice(itertools.product(*order), cap):
                out.append((" ".join(k for k, _ in combo), " ".join(f for _, f in combo)))
        return _dedup(out, cap)
    if isinstance(expr, Sequence):
        pairs: list[Pair] = [("", "")]
        for item in expr.items:
            part = _expand(item, rules, slot_lists, memo, cap)
            pairs = _dedup(((a + b, fa + fb) for (a, fa), (b, fb) in itertools.product(pairs, part)), cap)
        return pairs
    raise TypeError(f"unexpected template expression {type(expr).__name__}")


_FOREIGN = re.compile(r"\{(?!(?:name|area|floor)\})")


def skeletons(intents: Any, intent_names: Iterable[str]) -> dict[str, str]:
    """The content words of every template sentence of the given intents (free-text wildcard sentences left out)
    -> one full normalized sentence that says them."""
    wanted = set(intent_names)
    out: dict[str, str] = {}
    for name, intent in intents.intents.items():
        if name not in wanted:
            continue
        for data in intent.data:
            rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
            slot_lists = {**intents.slot_lists, **(data.slot_lists or {})}
            memo: dict[str, list[Pair]] = {}
            for sentence in data.sentences:
                if any(n in data.wildcard_list_names for n in sentence.list_names(rules)):
                    continue
                for key, full in _expand(sentence.expression, rules, slot_lists, memo, MAX_PER_SENTENCE):
                    k, f = content(normalize(key)), normalize(full)
                    if k and not _FOREIGN.search(f):  # a wildcard or a long list: no transcript says it
                        out.setdefault(k, f)
    return out


# ------------------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Closest:
    """The closest skeleton to a transcript: the filled sentence hassil is to match, and how close it was."""

    sentence: str  # the skeleton with the transcript's names and numbers put back
    skeleton: str
    score: float  # rapidfuzz ratio of the placeholder forms, 0..100
    edits: list[tuple[str, str]] = field(default_factory=list)  # (heard words, skeleton words) that differ



def word_edits(heard: list[str], skeleton: list[str]) -> list[tuple[str, str]] | None:
    """The content words in which ``heard`` differs from ``skeleton`` (both without ``SOFT`` words) if every
    difference is allowed, else None.

    Allowed: a word replaced by a similar one (ratio >= ``WORD_MIN``, lengths within a third, neither word in
    ``PROTECTED`` nor a placeholder or number); an ``AUX`` word added, dropped or swapped inside a question that
    starts with the same question word in both. At most one replaced word per three content words of the skeleton.
    """
    edits: list[tuple[str, str]] = []
    hard = 0
    question = bool(heard and skeleton and heard[0] == skeleton[0] and heard[0] in WH)
    for op in Levenshtein.opcodes(heard, skeleton):
        if op.tag == "equal":
            continue
        a, b = heard[op.src_start:op.src_end], skeleton[op.dest_start:op.dest_end]
        if any(w in PROTECTED or _slot(w) for w in (*a, *b)):
            return None
        rest_a = [w for w in a if not (question and w in AUX)]
        rest_b = [w for w in b if not (question and w in AUX)]
        if rest_a or rest_b:
            if not rest_a or not rest_b or any(w in AUX for w in (*rest_a, *rest_b)):
                return None  # a content word added or dropped, or a statement made a question
            x, y = " ".join(rest_a), " ".join(rest_b)  # a split or merged word compared as a whole
            if fuzz.ratio(x, y) < WORD_MIN or abs(len(x) - len(y)) > max(1, len(y) // 3):
                return None
            hard += max(len(rest_a), len(rest_b))
        edits.append((" ".join(a), " ".join(b)))
    if hard > max(1, len(skeleton) // 3):
        return None
    return edits


def _slot(word: str) -> bool:
    return word.startswith("{") or "#" in word or any(ch.isdigit() for ch in word)


@dataclass
class ClosestSentences:
    """The home's template skeletons by placeholder signature and length, and the search for the closest one."""

    # (placeholder signature, content word count) -> {content words: a full skeleton sentence that says them}
    by_signature: dict[tuple[tuple[tuple[str, int], ...], int], dict[str, str]]

    @classmethod
    def build(cls, intents: Any, intent_names: Iterable[str]) -> ClosestSentences:
        by_sig: dict[tuple[tuple[tuple[str, int], ...], int], dict[str, str]] = defaultdict(dict)
        for key, full in skeletons(intents, intent_names).items():
            n = len(key.split())
            if n >= MIN_CONTENT:
                by_sig[(signature(key), n)][key] = full
        return cls(dict(by_sig))

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.by_signature.values())

    def texts(self) -> Iterable[str]:
        for bucket in self.by_signature.values():
            yield from bucket.values()

    def closest(self, form: str, values: dict[str, list[str]], *, cutoff: float = ASK_SCORE) -> list[Closest]:
        """Skeletons close to a transcript in placeholder form (``values``: placeholder -> the words it stands for,
        in order), best first, each with the sentence filled back; only those whose content words differ as
        ``word_edits`` allows. Empty when the transcript is too short or nothing is close."""
        key = content(form)
        heard = key.split()
        pool = self._pool(form)
        if not pool:
            return []
        found: list[Closest] = []
        for text, score, _ in process.extract(key, list(pool), scorer=fuzz.ratio, limit=TOP_K,
                                              score_cutoff=cutoff):
            full = pool[text]
            if full == form:
                continue  # the templates already refused it as it is (it needs its context, or names nothing)
            words = text.split()
            edits = word_edits(heard, words)
            if edits is None:
                continue
            if heard[0] == words[0] and heard[0] in WH:  # a question's aux is not counted against it
                score = fuzz.ratio(" ".join(w for w in heard if w not in AUX),
                                   " ".join(w for w in words if w not in AUX))
            found.append(Closest(fill(full, values), full, score, edits))
        found.sort(key=lambda c: (-c.score, -fuzz.ratio(form, c.skeleton)))  # a tie: the closer wording
        return found

    def near(self, form: str, *, cutoff: float, limit: int) -> list[tuple[str, float]]:
        """Skeletons of the transcript's placeholder signature, a word or two longer or shorter, whose content words
        are at least ``cutoff`` close (rapidfuzz ratio), best first, without ``word_edits``'s rules. (full
        skeleton, ratio) pairs; empty for a transcript too short to compare."""
        pool = self._pool(form)
        return [(pool[text], score) for text, score, _ in process.extract(
            content(form), list(pool), scorer=fuzz.ratio, limit=limit, score_cutoff=cutoff) if pool[text] != form]

    def _pool(self, form: str) -> dict[str, str]:
        """{content words: full skeleton} of the skeletons a transcript in placeholder form is compared with: the
        same placeholders, a word or two more or fewer content words (a question's aux, a split or merged word);
        empty when the transcript is too short to compare."""
        key = content(form)
        n = len(key.split())
        if len(form.split()) < MIN_WORDS or n < MIN_CONTENT:
            return {}
        sig = signature(key)
        pool: dict[str, str] = {}
        for k in range(n - 2, n + 3):
            pool.update(self.by_signature.get((sig, k), {}))
        return pool

    def substitutions(self, form: str, *, cutoff: float, limit: int, most: int = 1) -> list[str]:
        """The transcript's own words with at most ``most`` of them (one or two words each) replaced by what a near
        skeleton (``near``) says there: candidates for the sound tier (``sound_match.py``), where the audio, not the
        spelling, decides between "pause" and "post" or "on" and "off". Words the skeleton lacks and function words
        it adds stay as heard (the text tiers judge the result); a placeholder is never touched. So a candidate
        says what was heard but for a word or two, and its score against the audio compares like for like."""
        heard = form.split()
        out: list[str] = []
        for skeleton, _ in self.near(form, cutoff=cutoff, limit=limit):
            words = skeleton.split()
            skel = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]  # "is the the {name}": one "the"
            new, changes = list(heard), 0
            for op in reversed(Levenshtein.opcodes(heard, skel)):
                if op.tag == "equal":
                    continue
                a, b = heard[op.src_start:op.src_end], skel[op.dest_start:op.dest_end]
                if op.tag == "delete" or all(w in SOFT for w in (*a, *b)):
                    continue  # words the skeleton lacks, or a function word swapped or added: as heard
                if op.tag != "replace" or len(a) > 2 or len(b) > 2 or any(_slot(w) for w in (*a, *b)):
                    changes = most + 1
                    break
                if len(a) == len(b):  # word for word: a function word against a function word stays as heard
                    b = [x if x in SOFT and y in SOFT else y for x, y in zip(a, b, strict=True)]
                new[op.src_start:op.src_end] = b
                changes += 1
            sentence = " ".join(new)
            if 1 <= changes <= most and sentence not in out:
                out.append(sentence)
        return out


def fill(skeleton: str, values: dict[str, list[str]]) -> str:
    """The skeleton with each placeholder replaced by the transcript's words for it, in order."""
    taken: dict[str, int] = defaultdict(int)

    def put(m: re.Match[str]) -> str:
        tok = m.group(0)
        i = taken[tok]
        taken[tok] += 1
        return values[tok][i]

    return re.sub(r"\{\w+\}|#", put, skeleton)


def placeholder_forms(text: str, names: dict[str, list[str]], limit: int = 4) -> list[tuple[str, dict[str, list[str]]]]:
    """A normalized transcript with its configured names and its numbers as placeholders.

    ``names``: a spoken name (normalized) -> the kinds it is ("name", "area", "floor"). Longest names first, left
    to right; a name of several kinds gives one form per kind (at most ``limit`` forms)."""
    words = text.split()
    longest = max((len(n.split()) for n in names), default=0)
    spans: list[tuple[str, list[str]]] = []  # (words, kinds); kinds empty for a plain word
    i = 0
    while i < len(words):
        for j in range(min(len(words), i + longest), i, -1):
            span = " ".join(words[i:j])
            if span in names:
                spans.append((span, names[span]))
                i = j
                break
        else:
            spans.append((words[i], []))
            i += 1
    forms: list[tuple[str, dict[str, list[str]]]] = []
    kind_choices = [kinds for _, kinds in spans if kinds]
    for combo in itertools.islice(itertools.product(*kind_choices), limit):
        out: list[str] = []
        values: dict[str, list[str]] = defaultdict(list)
        k = 0
        for span, kinds in spans:
            if kinds:
                tok = HOME_LISTS[combo[k]]
                k += 1
                out.append(tok)
                values[tok].append(span)
                continue
            m = re.fullmatch(r"(\d+(?:\.\d+)?)(%|°)?", span)
            if m:
                out.append("#" + (m.group(2) or ""))
                values["#"].append(m.group(1))
            else:
                out.append(span)
        forms.append((" ".join(out), dict(values)))
    return forms
