"""Conversation context: what earlier turns actually did, and what a short follow-up refers to.

People do not repeat the device or the timer they named a moment ago: "turn it off", "that one", "the other one",
"... and the bedroom one too", "as well", "actually make it eighty", "stop it" after a timer, and a correction
right after an action, "no, the bedroom one". ``ConversationContext`` keeps the intents the handler *executed* in
recent turns (``record``: a successful ``IntentResult``, never what the LLM only said) for ``CONTEXT_TTL_S`` and
turns such a follow-up into intent calls (``resolve``):

* ``Followup.text``: the words with the reference spelled out ("turn it off" -> "turn off the Kitchen Light"), for
  the fast path's templates to match as usual;
* ``Followup.calls``: calls built here (the last action again on a new target, a new value for the last action's
  device, a timer selected by what it was started with), and ``Followup.undo`` for a correction (the wrong action
  reversed: turned off again what was turned on).

The LLM gets the same facts as one context line (``describe``). Pure logic: the clock is injected and the home is
plain data; tested with plain values in tests/test_context.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .context_rules import (
    _AGAIN,
    _ALSO,
    _CORRECTION,
    _DUMMY_IT,
    _HAS_VERB,
    _OTHER,
    _PRONOUN_RX,
    _TIMER_ADD,
    _TIMER_CMD,
    _TIMER_LEFT,
    _TIMER_VERB,
    _VALUE,
    ACTIONS,
    COLORS,
    DOMAIN_WORDS,
    OFF_STATES,
    REPEATABLE,
    TARGET_SLOTS,
    TIMER_INTENTS,
    UNDO,
    VALUE_FOR_DOMAIN,
    normalize,
    then_for_them,
    words_to_number,
)
from .home import normalize_name
from .intent import IntentCall, IntentResult

CONTEXT_TTL_S = 180.0  # a device or timer named this long ago is still "it"
CORRECTION_TTL_S = 60.0  # "no, the bedroom one" changes the previous action only this soon after it
_TWO_AT_END = re.compile(r"\s+two\s*[.!?]*\s*$", re.IGNORECASE)  # Whisper's "two" for a last "too"


IT_MEANS = '"It" or "that one" means the most recent of these.'  # the context line's rule (never spoken back)


@dataclass
class Done:
    """One intent the handler executed (successfully) in an earlier turn."""

    call: IntentCall
    data: dict[str, Any]
    before: dict[str, str | None]  # the entities' states before it ran (for undoing it)
    turn: int
    t: float

    @property
    def entities(self) -> list[str]:
        return list(self.call.entities)

    @property
    def is_timer(self) -> bool:
        return self.call.name in TIMER_INTENTS


@dataclass
class Followup:
    """What a follow-up refers to: words to match again, or calls to run (a correction first runs ``undo``)."""

    kind: str  # "pronoun", "timer", "value", "also", "other", "correction"
    text: str | None = None
    calls: list[IntentCall] = field(default_factory=list)
    undo: list[IntentCall] = field(default_factory=list)


class ConversationContext:
    """The executed intents of recent turns and the rules that resolve a follow-up against them."""

    def __init__(self, home: Any, *, ttl_s: float = CONTEXT_TTL_S, correction_ttl_s: float = CORRECTION_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self.ttl_s = ttl_s
        self.correction_ttl_s = correction_ttl_s
        self.clock = clock
        self.turn = 0
        self.done: list[Done] = []

    # ------------------------------------------------------------------ recording
    def begin_turn(self) -> None:
        self.turn += 1

    def record(self, result: IntentResult, before: dict[str, str | None] | None = None) -> None:
        """Remember an executed intent (only a success that did not wait for a yes)."""
        if not result.success or result.needs_confirmation:
            return
        call = result.call
        if call.name not in REPEATABLE and call.name not in TIMER_INTENTS:
            return
        if call.name in REPEATABLE and not call.entities:
            return
        data = dict(result.data or {})
        if call.name in TIMER_INTENTS:
            ref = data.get("timer", data.get("cancelled"))
            if isinstance(ref, int):  # pause/resume/cancel name the timer by id: keep what it was started with
                first = next((d for d in self.done if isinstance(d.data.get("timer"), dict)
                              and d.data["timer"].get("id") == ref), None)
                if first is not None:
                    data["timer"] = first.data["timer"]
            if call.name == "HassCancelTimer":  # gone: nothing to point at any more
                gone = data.get("cancelled")
                self.done = [d for d in self.done if not (d.is_timer and isinstance(d.data.get("timer"), dict)
                                                          and d.data["timer"].get("id") == gone)]
                return
        self.done.append(Done(call, data, dict(before or {}), self.turn, self.clock()))
        del self.done[:-8]

    def clear(self) -> None:
        self.done.clear()

    def _recent(self) -> list[Done]:
        now = self.clock()
        return [d for d in self.done if now - d.t <= self.ttl_s]

    def last(self) -> Done | None:
        recent = self._recent()
        return recent[-1] if recent else None

    def last_device(self) -> Done | None:
        return next((d for d in reversed(self._recent()) if not d.is_timer), None)

    def last_timer(self) -> Done | None:
        return next((d for d in reversed(self._recent()) if d.is_timer), None)

    def refers(self, text: str) -> bool:
        """The words point back ("it", "that one", "too") and there is something recent to point at."""
        t = then_for_them(normalize(text))
        return self.last() is not None and bool(_PRONOUN_RX.search(t) or _AGAIN.search(t) or _OTHER.search(t))

    # ------------------------------------------------------------------ for the LLM
    def describe(self) -> str:
        """One line for the LLM: the device and timer the user may mean by "it" (only what was executed)."""
        parts = []
        dev = self.last_device()
        if dev is not None:
            names = [self._entity_name(e) for e in dev.entities]
            parts.append(f"The device last acted on or asked about: {', '.join(names)}.")
        tim = self.last_timer()
        if tim is not None:
            parts.append(f"The timer last mentioned: {self._timer_words(tim)}.")
        if not parts:
            return ""
        return " ".join(parts) + " " + IT_MEANS

    # ------------------------------------------------------------------ resolving
    def resolve(self, text: str) -> Followup | None:
        """A follow-up's meaning from the recent executed intents, or None (not a follow-up, or nothing to refer to).
        A last "two" that leaves nothing to resolve is tried as "too", which it sounds like ("And the office one
        two.", heard so in a spoken conversation)."""
        out = self._followup(text)
        if out is None and _TWO_AT_END.search(text):
            out = self._followup(_TWO_AT_END.sub(" too", text))
        return out

    def _followup(self, text: str) -> Followup | None:
        last = self.last()
        if last is None:
            return None
        t = then_for_them(normalize(text))
        if not t or _DUMMY_IT.match(t):
            return None
        for rule in (self._correction, self._timer, self._value, self._other, self._also, self._pronoun):
            out = rule(t)
            if out is not None:
                return out
        return None

    def retarget(self, call: IntentCall, text: str) -> IntentCall | None:
        """``call`` on the device the words name instead ("no, the desk lamp" to "Did you mean the ...?")."""
        m = _CORRECTION.match(normalize(text))
        target = self._target(m.group("target") if m else normalize(text), self._domain_of(call))
        if target is None:
            return None
        return _with_target(call, target)

    # ---- the rules
    def _correction(self, t: str) -> Followup | None:
        m = _CORRECTION.match(t)
        last = self.last_device()
        if m is None or last is None or last.call.name not in ACTIONS:
            return None
        if last.turn != self.turn - 1 or self.clock() - last.t > self.correction_ttl_s:
            return None  # only right after the action
        target = self._target(m.group("target"), self._domain_of(last.call))
        if target is None:
            return None
        new = _with_target(last.call, target)
        if set(self._resolve(new)) == set(last.entities):
            return None
        return Followup("correction", calls=[new], undo=self._undo(last))

    def _timer(self, t: str) -> Followup | None:
        tim, last = self.last_timer(), self.last()
        if tim is None or last is None:
            return None
        if not last.is_timer and not _TIMER_LEFT.match(t) and not _TIMER_ADD.match(t):
            return None  # "stop it" right after a device is about the device, not an older timer
        sel = self._timer_selector(tim)
        if sel is None:
            return None
        m = _TIMER_CMD.match(t)
        if m:
            return Followup("timer", calls=[IntentCall(_TIMER_VERB[m.group("verb")], dict(sel), source="context")])
        if _TIMER_LEFT.match(t):
            return Followup("timer", calls=[IntentCall("HassTimerStatus", dict(sel), source="context")])
        m = _TIMER_ADD.match(t)
        if m:
            unit = m.group("unit").rstrip("s") + "s"
            name = "HassIncreaseTimer" if m.group("verb") == "add" else "HassDecreaseTimer"
            return Followup("timer", calls=[IntentCall(name, {**sel, unit: int(m.group("n"))}, source="context")])
        return None

    def _value(self, t: str) -> Followup | None:
        m = _VALUE.match(t)
        last = self.last_device()
        if m is None or last is None or last.call.name not in ACTIONS:
            return None
        ents = [e for e in (self.home.entities.get(x) for x in last.entities) if e is not None]
        if not ents:
            return None
        value = m.group("value")
        target = {k: v for k, v in last.call.slots.items() if k in TARGET_SLOTS}
        if value in COLORS:
            if any(e.domain != "light" for e in ents):
                return None
            return Followup("value", calls=[IntentCall("HassLightSet", {**target, "color": value},
                                                       source="context")])
        domain = ents[0].domain
        if domain not in VALUE_FOR_DOMAIN or any(e.domain != domain for e in ents):
            return None
        unit = m.group("unit") or ""
        intent, slot = VALUE_FOR_DOMAIN[domain]
        if unit.startswith("degree") and domain != "climate":
            return None
        number = float(value)
        return Followup("value", calls=[IntentCall(intent, {**target, slot: int(number) if number.is_integer()
                                                            else number}, source="context")])

    def _other(self, t: str) -> Followup | None:
        if not _OTHER.search(t):
            return None
        last = self.last_device()
        if last is None or not last.entities:
            return None
        ents = [self.home.entities[e] for e in last.entities if e in self.home.entities]
        domains = {e.domain for e in ents}
        areas = {e.area for e in ents}
        others = [e for e in self.home.entities.values() if e.domain in domains and e.id not in last.entities]
        near = [e for e in others if e.area in areas]
        pick = near if len(near) == 1 else others
        if len(pick) != 1:
            return None
        name = pick[0].name
        rest = _OTHER.sub(f"the {name}", t)
        if _HAS_VERB.search(_OTHER.sub("", t)) and last.call.name in REPEATABLE:
            return Followup("other", text=rest)
        if last.call.name not in REPEATABLE:
            return None
        return Followup("other", calls=[_with_target(last.call, {"name": name})])

    def _also(self, t: str) -> Followup | None:
        last = self.last_device()
        if last is None or last.call.name not in REPEATABLE:
            return None
        had_also = bool(_AGAIN.search(t)) or bool(re.match(r"^(?:and|also|what about|how about|same for) ", t))
        if not had_also:
            return None
        m = _ALSO.match(t)
        if m is None:
            return None
        words = m.group("target")
        if _HAS_VERB.search(words):
            stripped = " ".join(_AGAIN.sub(" ", t).split())
            stripped = re.sub(r"^(?:and|also) ", "", stripped)
            if stripped == t:
                return None
            spelled = self._pronoun(stripped)  # "turn it off again"
            return Followup("also", text=spelled.text if spelled is not None else stripped)
        target = self._target(words, self._domain_of(last.call))
        if target is None:
            return None
        return Followup("also", calls=[_with_target(last.call, target)])

    def _pronoun(self, t: str) -> Followup | None:
        last = self.last()
        if last is None or last.is_timer or not _PRONOUN_RX.search(t):
            return None
        phrase = self._target_phrase(last)
        if phrase is None:
            return None
        text = _PRONOUN_RX.sub(phrase, t, count=1)
        return Followup("pronoun", text=re.sub(r"\bback (?=on\b|off\b|up\b|down\b)", "", text))

    # ---- helpers
    def _target(self, words: str, domain: str | None) -> dict[str, Any] | None:
        """Target slots for "the bedroom one" / "the desk lamp" / "the office" / "in the kitchen", or None."""
        w = re.sub(r"^(?:in |on |at )?(?:the |my |that |this )?", "", words.strip())
        w = re.sub(r"(?: one| ones| please| instead| too| as well)+$", "", w).strip()
        if not w:
            return None
        for e in self.home.entities.values():
            if any(normalize_name(n) == w for n in e.names):
                return {"name": e.name}
        # "<area> [kind]": the one device of that kind (or the last one's kind) in the area
        parts = w.split()
        kind = DOMAIN_WORDS.get(parts[-1], "?") if len(parts) > 1 else "?"
        area_words = " ".join(parts[:-1]) if kind != "?" else w
        want = kind if kind not in ("?", None) else domain
        area = self.home.area_by_name(area_words) if hasattr(self.home, "area_by_name") else None
        if area is None:
            return None
        found = [e for e in self.home.entities.values() if e.area == area.id and (want is None or e.domain == want)]
        if kind is None:  # "the kitchen door": any door-like device
            found = [e for e in found if "door" in normalize_name(e.name)]
        if len(found) == 1:
            return {"name": found[0].name}
        if found and want is not None:
            return {"area": area.name, "domain": want}
        return None

    def _resolve(self, call: IntentCall) -> list[str]:
        s = call.slots
        if s.get("name"):
            return [e.id for e in self.home.find(str(s["name"]), None, None)]
        return [e.id for e in self.home.find(None, s.get("area"), s.get("domain"))]

    def _domain_of(self, call: IntentCall) -> str | None:
        doms = {e.split(".", 1)[0] for e in call.entities}
        if len(doms) == 1:
            return next(iter(doms))
        return call.slots.get("domain") if isinstance(call.slots.get("domain"), str) else None

    def _undo(self, d: Done) -> list[IntentCall]:
        """Calls that reverse ``d`` where that is known: the opposite on/off, or off again for a device that was
        off before a value was set. A value set on a device that was already on cannot be restored (unknown)."""
        out = []
        for eid in d.entities:
            e = self.home.entities.get(eid)
            if e is None:
                continue
            if d.call.name in UNDO:
                before = d.before.get(eid)
                now_off = d.call.name in ("HassTurnOff", "HassMediaPause")
                if before is not None and (before in OFF_STATES) == now_off:
                    continue  # it was like that already: nothing to reverse
                out.append(IntentCall(UNDO[d.call.name], {"name": e.name}, source="context"))
            elif d.before.get(eid) in OFF_STATES:
                out.append(IntentCall("HassTurnOff", {"name": e.name}, source="context"))
        return out

    def _target_phrase(self, d: Done) -> str | None:
        s = d.call.slots
        if len(d.entities) == 1:
            return "the " + self._entity_name(d.entities[0])
        if s.get("area") and s.get("domain"):
            noun = {"light": "lights", "fan": "fans", "cover": "blinds"}.get(str(s["domain"]))
            return f"the {s['area']} {noun}" if noun else None
        return None

    def _entity_name(self, entity_id: str) -> str:
        e = self.home.entities.get(entity_id)
        return e.name if e is not None else entity_id

    @staticmethod
    def _timer_selector(d: Done) -> dict[str, Any] | None:
        st = d.data.get("timer")
        if not isinstance(st, dict):
            return {k: v for k, v in d.call.slots.items() if k in ("name", "start_hours", "start_minutes",
                                                                     "start_seconds")} or {}
        if st.get("name"):
            return {"name": st["name"]}
        sel = {k: st[k] for k in ("start_hours", "start_minutes", "start_seconds") if st.get(k)}
        return sel or None

    @staticmethod
    def _timer_words(d: Done) -> str:
        st = d.data.get("timer") or {}
        if st.get("name"):
            return f"the {st['name']} timer"
        parts = [f"{st[k]} {u}" for k, u in (("start_hours", "hours"), ("start_minutes", "minutes"),
                                              ("start_seconds", "seconds")) if st.get(k)]
        return "the " + " ".join(parts) + " timer" if parts else "the timer"


def _with_target(call: IntentCall, target: dict[str, Any]) -> IntentCall:
    """The same intent and values on another target."""
    slots = {k: v for k, v in call.slots.items() if k not in TARGET_SLOTS}
    return IntentCall(call.name, {**slots, **target}, text=call.text, source="context")


__all__ = ["CONTEXT_TTL_S", "CORRECTION_TTL_S", "ConversationContext", "Done", "Followup", "normalize",
           "words_to_number"]
