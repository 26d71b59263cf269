"""Validating an intent call against the configured home: known intent and arguments, values in range, targets
resolved to configured entities (``CallValidator.validate``, the base of ``IntentHandler``). A bad argument is a
``ToolError`` naming it and what is allowed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .config import HomeSettings
from .errors import ToolError
from .home import Entity, Home
from .intent import IntentCall
from .intents import SUPPORTED_INTENTS
from .presets import COLOR_RGB
from .targets import DEVICE_INTENTS, resolve_targets

TEMPERATURE_RANGE = {"C": (5.0, 35.0), "F": (40.0, 95.0)}

_TARGET_SLOTS = {"name", "area", "floor", "domain", "device_class"}
_TIMER_SEL = {"name", "area", "start_hours", "start_minutes", "start_seconds"}
_DURATION = {"hours", "minutes", "seconds"}
ALLOWED_SLOTS: dict[str, set[str]] = {
    "HassTurnOn": _TARGET_SLOTS, "HassTurnOff": _TARGET_SLOTS,
    "HassLightSet": _TARGET_SLOTS | {"brightness", "color", "temperature"},
    "HassSetPosition": _TARGET_SLOTS | {"position"},
    "HassClimateSetTemperature": _TARGET_SLOTS | {"temperature"},
    "HassGetState": _TARGET_SLOTS | {"state"},
    "HassStartTimer": _DURATION | {"name", "area", "conversation_command"},
    "HassCancelTimer": _TIMER_SEL, "HassCancelAllTimers": {"area"}, "HassPauseTimer": _TIMER_SEL,
    "HassUnpauseTimer": _TIMER_SEL, "HassIncreaseTimer": _TIMER_SEL | _DURATION,
    "HassDecreaseTimer": _TIMER_SEL | _DURATION, "HassTimerStatus": _TIMER_SEL,
    "HassGetCurrentTime": set(), "HassGetCurrentDate": set(), "HassNevermind": set(),
    "HassMediaPause": _TARGET_SLOTS, "HassMediaUnpause": _TARGET_SLOTS, "HassMediaNext": _TARGET_SLOTS,
    "HassMediaPrevious": _TARGET_SLOTS, "HassSetVolume": _TARGET_SLOTS | {"volume_level"},
}


def _num(value: Any, slot: str) -> float:
    if isinstance(value, bool):
        raise ToolError(f"{slot}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%°").strip())
        except ValueError:
            pass
    raise ToolError(f"{slot}: expected a number, got {value!r}")


def _int_if_whole(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


class CallValidator:
    """``validate``: the checks every call passes before ``IntentHandler`` acts on it."""

    home: Home
    settings: HomeSettings

    def validate(self, call: IntentCall) -> IntentCall:
        """The call with values checked and entities resolved, or ToolError naming the bad argument."""
        if call.name not in SUPPORTED_INTENTS:
            raise ToolError(f"unknown tool {call.name!r}; allowed: {', '.join(SUPPORTED_INTENTS)}")
        allowed = ALLOWED_SLOTS[call.name]
        slots = dict(call.slots)
        for key in list(slots):
            if slots[key] is None or slots[key] == "":
                del slots[key]
            elif key not in allowed:
                raise ToolError(f"{call.name}: unknown argument {key!r}; allowed: "
                                f"{', '.join(sorted(allowed)) or 'none'}")
        for key in ("brightness", "position", "volume_level"):
            if key in slots:
                v = _num(slots[key], key)
                if not 0 <= v <= 100:
                    raise ToolError(f"{key}: {_int_if_whole(v)} is out of range; allowed: 0 to 100 (percent)")
                slots[key] = _int_if_whole(round(v))
        if call.name == "HassClimateSetTemperature" and "temperature" in slots:
            v = _num(slots["temperature"], "temperature")
            lo, hi = TEMPERATURE_RANGE[self.settings.temperature_unit]
            if not lo <= v <= hi:
                raise ToolError(f"temperature: {_int_if_whole(v)} is out of range; allowed: {lo:g} to {hi:g} °"
                                f"{self.settings.temperature_unit}")
            slots["temperature"] = _int_if_whole(v)
        if call.name == "HassLightSet":
            if "color" in slots:
                c = str(slots["color"]).strip().lower()
                if c not in COLOR_RGB:
                    raise ToolError(f"color: {slots['color']!r} is not a known color; allowed: "
                                    f"{', '.join(sorted(COLOR_RGB))}")
                slots["color"] = c
            if "temperature" in slots:
                raise ToolError("temperature: color temperature is not supported; use brightness or color")
            if "brightness" not in slots and "color" not in slots:
                raise ToolError("HassLightSet: give brightness (0-100) or color")
        for key in _DURATION | {"start_hours", "start_minutes", "start_seconds"}:
            if key in slots:
                v = _num(slots[key], key)
                if v < 0:
                    raise ToolError(f"{key}: {v:g} is negative; allowed: 0 or more")
                slots[key] = _int_if_whole(v)
        out = replace(call, slots=slots)
        if call.name in DEVICE_INTENTS:
            out.entities = [e.id for e in self._targets(out)]
        else:
            out.entities = []
        return out

    def _targets(self, call: IntentCall) -> list[Entity]:
        s = call.slots
        if call.entities:
            unknown = [e for e in call.entities if e not in self.home.entities]
            if unknown:
                raise ToolError(f"entity {unknown[0]!r} is not configured; configured: "
                                f"{', '.join(sorted(self.home.entities)) or 'none'}")
            ents = [self.home.entities[e] for e in call.entities]
        else:
            if "name" in s and str(s["name"]).casefold() != "all" and not self.home.find(str(s["name"]), None, None):
                names = sorted({n for e in self.home.entities.values() for n in e.names})
                raise ToolError(f"name: no configured device is called {s['name']!r}; allowed: "
                                f"{', '.join(names) or 'none'}")
            if "area" in s and self.home.area_by_name(str(s["area"])) is None:
                raise ToolError(f"area: unknown area {s['area']!r}; allowed: "
                                f"{', '.join(a.name for a in self.home.areas.values()) or 'none'}")
            if "floor" in s and self.home.floor_by_name(str(s["floor"])) is None:
                raise ToolError(f"floor: unknown floor {s['floor']!r}; allowed: "
                                f"{', '.join(f.name for f in self.home.floors.values()) or 'none'}")
            if "domain" in s and s["domain"] not in self.home.domains():
                raise ToolError(f"domain: no {s['domain']!r} devices are configured; allowed: "
                                f"{', '.join(self.home.domains()) or 'none'}")
            ents = resolve_targets(self.home, call)
        wanted = DEVICE_INTENTS[call.name]
        if wanted:
            ents = [e for e in ents if e.domain in wanted]
        if not ents:
            what = ", ".join(f"{k} {v!r}" for k, v in s.items() if k in _TARGET_SLOTS) or "this request"
            allowed = f" ({'/'.join(wanted)} devices)" if wanted else ""
            raise ToolError(f"no configured device matches {what}{allowed}")
        return ents
