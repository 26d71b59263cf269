"""The fast path: Home Assistant's English sentence templates (home-assistant-intents) matched with hassil.

Slot lists are built the way Home Assistant builds them, because that is what the templates expect:

- ``name``: every entity's name and each alias, with the entity's ``domain`` and ``device_class`` as *context*. The
  templates carry ``requires_context: {domain: [...]}``, so "open the curtain" only matches a name whose context says
  ``cover``; without context the name lists match the wrong blocks (that is why a naive build matched ~50 %).
- ``area`` / ``floor``: names and aliases; the value is the canonical name.
- the device's own area goes in as intent *context* (``{"area": name}``), so blocks with
  ``requires_context: {area: {slot: true}}`` ("turn on the lights") match only on a device that has an area, and copy
  it into the ``area`` slot.
- numbers, colors, states, device classes come from the language data's own lists (ranges and text lists).

Among several parses the one that names an entity wins (Home Assistant prefers ``name`` over ``area`` matches, for
an entity called like its room), then the most literal one (see ``IntentMatcher.recognize``). The intents data is
loaded and every template parsed once per process (~1 s here) and shared by all matchers.

A few English phrasings that Home Assistant's 2025 tests use but the packaged 2026 templates no longer carry ("turn on
all the lights in the house", "is the phone battery low", "what is the furnace temperature") are added from
``SUPPLEMENT_YAML`` (``intent_templates.py``), in the same template language (like Home Assistant's
``custom_sentences``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .home import Home, normalize_name
from .intent import IntentCall
from .intent_templates import (  # noqa: F401 - supplement_dict re-exported: callers import it from here
    SUPPORTED_INTENTS,
    load_intents,
    supplement_dict,
)
from .intents_sound import SoundCandidates
from .targets import DEVICE_INTENTS, resolve_targets

log = logging.getLogger(__name__)


def _number(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        return v.strip()
    return v


@dataclass
class FastMatch(IntentCall):
    """An ``IntentCall`` from the fast path, with how it was found and how sure it is (optional extra fields).

    ``tier``: "exact" (a template as spoken) or "tolerant" (``edge_agent/fuzzy.py``: fillers stripped, verbs
    rewritten, misheard names corrected). ``confidence``: 1.0 exact, 0.95 rewrites only, a corrected name's similarity
    otherwise. ``clarify``: set when the match is not sure enough to act on ("Did you mean the Bedroom Lamp?"): the
    caller should ask that and act only on a yes; such matches are returned only with ``match(..., ask_back=True)``.
    ``heard``: the sentence that matched the templates (after normalisation). ``corrections``: misheard -> canonical.
    """

    tier: str = "exact"
    confidence: float = 1.0
    clarify: str | None = None
    heard: str = ""
    corrections: dict[str, str] = field(default_factory=dict)


# Domains a corrected (misheard) name may have for each intent; a correction never crosses into another domain.
INTENT_DOMAINS: dict[str, frozenset[str]] = {
    "HassTurnOn": frozenset({"light", "switch", "fan", "cover", "lock", "valve", "scene", "script", "media_player",
                             "input_boolean", "vacuum", "climate", "humidifier", "water_heater"}),
    "HassLightSet": frozenset({"light"}),
    "HassSetPosition": frozenset({"cover", "valve"}),
    "HassClimateSetTemperature": frozenset({"climate"}),
    "HassSetVolume": frozenset({"media_player"}),
    "HassMediaPause": frozenset({"media_player"}), "HassMediaUnpause": frozenset({"media_player"}),
    "HassMediaNext": frozenset({"media_player"}), "HassMediaPrevious": frozenset({"media_player"}),
}
INTENT_DOMAINS["HassTurnOff"] = INTENT_DOMAINS["HassTurnOn"]


class IntentMatcher(SoundCandidates):
    """Text -> IntentCall with Home Assistant's templates and this home's names, areas and floors.

    Two tiers: the exact templates, then (``tolerant=True``, the default) the tolerant tier of ``edge_agent/fuzzy.py``
    on what the templates did not take. Either returns a ``FastMatch`` (an ``IntentCall`` with ``tier``,
    ``confidence`` and ``clarify``).
    """

    def __init__(self, home: Home, *, supplement: bool = True, tolerant: bool = True) -> None:
        from hassil import TextSlotList

        self.home = home
        self.tolerant = tolerant
        self.intents = load_intents(supplement)
        names: list[tuple[str, str, dict[str, Any]]] = []
        for e in home.entities.values():
            ctx: dict[str, Any] = {"domain": e.domain}
            if e.device_class:
                ctx["device_class"] = e.device_class
            for n in e.names:
                names.append((n, e.name, ctx))
        areas = [(n, a.name) for a in home.areas.values() for n in (a.name, *a.aliases)]
        floors = [(n, f.name) for f in home.floors.values() for n in (f.name, *f.aliases)]
        self.slot_lists = {
            "name": TextSlotList.from_tuples(names, allow_template=False, name="name"),
            "area": TextSlotList.from_tuples(areas, allow_template=False, name="area"),
            "floor": TextSlotList.from_tuples(floors, allow_template=False, name="floor"),
        }
        self.corrector = None
        if tolerant:
            from .fuzzy import Choice, NameCorrector

            choices = [Choice(normalize_name(n), "name", e.name, e.domain)
                       for e in home.entities.values() for n in e.names]
            choices += [Choice(normalize_name(n), "area", a.name) for a in home.areas.values()
                        for n in (a.name, *a.aliases)]
            choices += [Choice(normalize_name(n), "floor", f.name) for f in home.floors.values()
                        for n in (f.name, *f.aliases)]
            self.corrector = NameCorrector(choices)
            prepare_closest(self.intents)
            self._spoken: dict[str, list[str]] = {}
            for c in choices:
                if c.kind not in self._spoken.setdefault(c.text, []):
                    self._spoken[c.text].append(c.kind)

    def recognize(self, text: str, area: str | None = None) -> Any:
        """The best hassil RecognizeResult, or None.

        Ranking: a parse that names an entity wins (the longest name first: "water pump usage today" over "water
        pump usage"), as in Home Assistant; then the parse that binds the fewest slots to spoken text (the most
        literal reading: "open the garage door" is the garage-door class, not area Garage + class door; "all kitchen
        fans on" is a command, not the question "are all kitchen fans on"); then the most literal text matched.
        """
        from hassil import recognize_all

        context: dict[str, Any] = {}
        if area:
            a = self.home.area_by_name(area)
            context["area"] = a.name if a else area
        best = None
        best_key: tuple[int, ...] | None = None
        for result in recognize_all(text, self.intents, slot_lists=self.slot_lists, intent_context=context,
                                    language="en"):
            if self.tolerant and any(e.is_wildcard and hollow_name(str(e.text)) for e in result.entities_list):
                continue  # "cancel all my timer": no timer is named "all my" (the tolerant tier reads it)
            name = result.entities.get("name")
            has_name = name is not None and not name.is_wildcard
            spoken = sum(1 for e in result.entities_list if e.text and not e.name.startswith("_"))
            key = (0 if has_name else 1, -len(name.text) if has_name else 0, spoken, -result.text_chunks_matched)
            if best_key is None or key < best_key:
                best, best_key = result, key
        return best

    def match(self, text: str, area: str | None = None, *, ask_back: bool = False) -> FastMatch | None:
        """Text -> a call with slots (HA names and values) and the entity ids they resolve to, or None.

        The exact templates first; then the tolerant tier. A tolerant match below ``fuzzy.ACT`` confidence carries a
        ``clarify`` question and is returned only when ``ask_back`` is true (a caller that cannot ask leaves it to
        the LLM); below ``fuzzy.ASK`` it is never returned.
        """
        text = text.strip()
        if not text:
            return None
        if self.tolerant:
            from .fuzzy import join_split_number

            text = join_split_number(text)  # "to 20. 2 degrees": a number with a pause inside it
        result = self.recognize(text, area)
        if result is not None and self.tolerant and any(
                e.is_wildcard and swallowed_trail(str(e.text), text) for e in result.entities_list):
            # a free-text slot (a timer's name) swallowed trailing fillers: "... named pizza for me please", or
            # "pause my timer for a sec" (the template's "for {name}" took "a sec" as the name)
            from .fuzzy import strip_fillers

            stripped = strip_fillers(text)
            if stripped:
                again = self.recognize(stripped, area)
                if again is not None and again.intent.name == result.intent.name:
                    return self._call(again, text, stripped, "tolerant", 0.95)
        if result is not None:
            return self._call(result, text, text, "exact", 1.0)
        if not self.tolerant:
            return None
        call = self.match_tolerant(text, area)
        if call is None or (call.clarify and not ask_back):
            return None
        return call

    def _call(self, result: Any, text: str, heard: str, tier: str, confidence: float) -> FastMatch:
        # "_"-slots are template helpers (e.g. the free-text quantity in "what is the X of <sensor>")
        slots = {e.name: _number(e.value) for e in result.entities_list if not e.name.startswith("_")}
        call = FastMatch(name=result.intent.name, slots=slots, text=text, source="fast", tier=tier,
                         confidence=confidence, heard=heard)
        call.entities = [e.id for e in resolve_targets(self.home, call)]
        return call

    def match_tolerant(self, text: str, area: str | None = None) -> FastMatch | None:
        """The tolerant tier alone (``edge_agent/fuzzy.py``): a match with its confidence, or None.

        Candidates in order of cost: fillers stripped; then verbs/values rewritten; then misheard names corrected
        in those. The first candidate the templates take wins. A match must name configured devices (a device
        intent that resolves to none is dropped), and a corrected name must fit the intent's domains.
        """
        from . import fuzzy

        if fuzzy.refuses(text):
            return None
        stripped = fuzzy.strip_fillers(text)
        rewritten, _ = fuzzy.rewrite(stripped)
        variants = [v for v in dict.fromkeys((stripped, rewritten, self._area_cover(rewritten))) if v]
        for v in variants:
            if v == text:
                continue  # the exact tier already tried it
            result = self.recognize(v, area)
            if result is not None:
                call = self._call(result, text, v, "tolerant", fuzzy.REWRITE_CONFIDENCE)
                if self._targets_ok(call):
                    return call
        if self.corrector is None:
            return None
        for v in variants:
            for corrected, corrections in self.corrector.corrected_texts(v):
                result = self.recognize(corrected, area)
                if result is None:
                    continue
                score = min(c.score for c in corrections) / 100.0
                confidence = min(score, fuzzy.REWRITE_CONFIDENCE)
                if confidence < fuzzy.ASK:
                    continue
                call = self._call(result, text, corrected, "tolerant", round(confidence, 3))
                call.corrections = {c.heard: c.choice.canonical for c in corrections}
                if not self._targets_ok(call) or not self._corrections_fit(call, corrections):
                    continue
                ambiguous = [c for c in corrections if c.runner_up is not None]
                if ambiguous:
                    c = ambiguous[0]
                    call.clarify = f"Did you mean the {c.choice.canonical} or the {c.runner_up.canonical}?"
                    call.confidence = min(call.confidence, fuzzy.ACT - 0.01)
                elif confidence < fuzzy.ACT:
                    c = min(corrections, key=lambda c: c.score)
                    call.clarify = f"Did you mean the {c.choice.canonical}?"
                return call
        return self._match_tail(text, rewritten, area) or self._match_closest(text, variants, area)

    def _match_tail(self, text: str, rewritten: str, area: str | None) -> FastMatch | None:
        """A value command after a few misheard words (``fuzzy.junk_tails``), acted on when the rest names a
        configured device exactly; a degrees value for an unknown thing (``fuzzy.degrees_guess``) is asked back."""
        from . import fuzzy

        for tail in fuzzy.junk_tails(rewritten):
            result = self.recognize(tail, area)
            if result is not None:
                call = self._call(result, text, tail, "tolerant", fuzzy.TAIL_CONFIDENCE)
                if self._targets_ok(call):
                    return call
        guess = fuzzy.degrees_guess(rewritten)
        if guess and self.corrector is not None and self.corrector.candidates(rewritten):
            guess = None  # "set the ceiling fam to 20 degrees": a configured device was named, not the heating
        result = self.recognize(guess, area) if guess else None
        if result is not None:
            call = self._call(result, text, guess, "tolerant", fuzzy.ASK)
            if self._targets_ok(call):
                call.clarify = f"Did you mean: {guess}?"
                return call
        return None

    def _match_closest(self, text: str, variants: list[str], area: str | None) -> FastMatch | None:
        """The closest template sentence (``edge_agent/closest.py``) to the transcript, names as said or corrected:
        the filled sentence must match the templates, name configured devices and keep every corrected name."""
        from . import closest, fuzzy

        if self.corrector is None:
            return None
        skeletons = closest_sentences(self.intents)  # waits for the build if it is still running
        for v in variants:
            for sentence, corrections in [(v, []), *self.corrector.corrected_texts(v)]:
                name_score = min((c.score for c in corrections), default=100.0)
                if name_score < fuzzy.ASK * 100:
                    continue
                for form, values in closest.placeholder_forms(closest.normalize(sentence), self._spoken):
                    for near in skeletons.closest(form, values):
                        result = self.recognize(near.sentence, area)
                        if result is None:
                            continue
                        score = min(near.score, name_score)
                        call = self._call(result, text, near.sentence, "closest", round(score / 100.0, 3))
                        if corrections:
                            call.corrections = {c.heard: c.choice.canonical for c in corrections}
                            if not self._corrections_fit(call, corrections):
                                continue
                        if not self._targets_ok(call):
                            continue
                        if near.score < closest.ACT_SCORE or name_score < fuzzy.ACT * 100:
                            call.clarify = f"Did you mean: {near.sentence}?"
                        return call
        return None

    def _area_cover(self, text: str) -> str | None:
        """ "open the garage": an area named as the thing to open/close means its one cover, if it has exactly one."""
        m = re.match(r"^(open|close) (?:the )?(.+)$", text)
        area = self.home.area_by_name(m.group(2)) if m else None
        if m is None or area is None:
            return None
        covers = [e for e in self.home.entities.values() if e.area == area.id and e.domain == "cover"]
        return f"{m.group(1)} the {normalize_name(covers[0].name)}" if len(covers) == 1 else None

    def _targets_ok(self, call: FastMatch) -> bool:
        """A tolerant match of a device intent must resolve to configured devices of a domain the intent takes, and
        keep a colour the words name ("make the lamp red at 40 percent" is not brightness 40 alone: the LLM can
        write both)."""
        if call.name not in DEVICE_INTENTS:
            return True
        if not call.entities or not _colour_kept(call):
            return False
        allowed = INTENT_DOMAINS.get(call.name)
        return allowed is None or all(e.split(".", 1)[0] in allowed for e in call.entities)

    def _corrections_fit(self, call: FastMatch, corrections: list[Any]) -> bool:
        """Every corrected name ended up in the call, as the slot of its kind, in a domain the intent takes."""
        allowed = INTENT_DOMAINS.get(call.name)
        for c in corrections:
            slot = call.slots.get(c.choice.kind)
            if not isinstance(slot, str) or normalize_name(slot) != normalize_name(c.choice.canonical):
                return False
            if c.choice.kind == "name" and allowed is not None and c.choice.domain not in allowed:
                return False
        return True


_CLOSEST: dict[int, tuple[Any, Any]] = {}  # id(intents) -> (intents, ClosestSentences); hassil's Intents is unhashable
_CLOSEST_LOCK = threading.Lock()


def _colour_kept(call: FastMatch) -> bool:
    """Every colour the words name is the call's colour, or a word of one of its names ("the red lamp")."""
    from .intent_templates import color_names

    words = set(re.findall(r"[a-z]+", call.text.casefold()))
    said = {c.casefold() for c in color_names()} & words
    if not said:
        return True
    kept = {w for v in call.slots.values() if isinstance(v, str) for w in re.findall(r"[a-z]+", v.casefold())}
    return said <= kept


def closest_sentences(intents: Any) -> Any:
    """The template skeletons of the closest-sentence tier, expanded once per loaded template set (per process:
    ~1.5 s of one core here; other callers wait for the one building)."""
    from .closest import ClosestSentences

    with _CLOSEST_LOCK:
        held = _CLOSEST.get(id(intents))
        if held is None or held[0] is not intents:
            t0 = time.monotonic()
            held = (intents, ClosestSentences.build(intents, SUPPORTED_INTENTS))
            _CLOSEST[id(intents)] = held
            log.info("closest-sentence tier: %d template skeletons in %.2f s", held[1].size, time.monotonic() - t0)
        return held[1]


def prepare_closest(intents: Any) -> None:
    """Expand the skeletons on a background thread at nice 10 (started with a matcher), so that the first transcript
    to reach the tier finds them built; one that comes sooner waits for the build."""
    from .priority import lower_this_thread

    def build() -> None:
        lower_this_thread()
        try:
            closest_sentences(intents)
        except Exception:  # noqa: BLE001 - the tier then builds (and fails loudly) on first use
            log.exception("closest-sentence tier: building the skeletons failed")

    with _CLOSEST_LOCK:
        if id(intents) in _CLOSEST:
            return
    threading.Thread(target=build, name="closest-build", daemon=True).start()


def fuzzy_trails(words: str) -> bool:
    """True if ``words`` end in politeness/filler words ("pizza for me please")."""
    from .fuzzy import _TRAIL

    return _TRAIL.search(" " + " ".join(words.casefold().split())) is not None


def swallowed_trail(value: str, text: str) -> bool:
    """True if a free-text slot's ``value`` may hold the sentence's trailing fillers: it ends in fillers itself
    ("pizza for me please"), or it ends the sentence and the sentence ends in fillers, which the template's own words
    cut into ("pause timer for {name}" on "pause my timer for a sec": the name "a sec")."""
    if fuzzy_trails(value):
        return True
    v = " ".join(value.casefold().strip(" .,!?").split())
    t = " ".join(text.casefold().strip(" .,!?").split())
    return bool(v) and t.endswith(v) and fuzzy_trails(t)


_HOLLOW = frozenset("all my the a an me us it that this those these some any every".split())


def hollow_name(words: str) -> bool:
    """True if a free-text name is only determiners and pronouns ("all my", "me a"): a misheard or plural-less
    request, never a name someone gave a timer."""
    w = [x.strip(".,!?") for x in words.casefold().split()]
    return bool(w) and all(x in _HOLLOW for x in w)
