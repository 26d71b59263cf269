"""What the LLM is offered: one JSON-schema tool per supported intent (``tool_specs``, names, areas and floors as
enums of this home's), the tools worth offering for this home (``select_tools``), the tool call's JSON schema
(``tool_call_schema``, the grammar's source), and the fixed prefix's parts: one-line tool signatures, worked examples
with this home's names, the device list."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .intent_templates import SUPPORTED_INTENTS, color_names

if TYPE_CHECKING:
    from .home import Home


# Tools offered to the LLM only when the home has a device of one of these domains (None = always offered).
TOOL_DOMAINS: dict[str, set[str] | None] = {
    "HassLightSet": {"light"},
    "HassSetPosition": {"cover", "valve"},
    "HassClimateSetTemperature": {"climate"},
    "HassMediaPause": {"media_player"}, "HassMediaUnpause": {"media_player"}, "HassMediaNext": {"media_player"},
    "HassMediaPrevious": {"media_player"}, "HassSetVolume": {"media_player"},
}
# Tools the LLM is never offered: "never mind" is the fast path's; the rest are rare enough that the fast path's
# templates cover them, and every tool offered costs prompt tokens and decision accuracy on a 0.5B model.
LLM_EXCLUDED_TOOLS = frozenset({"HassNevermind", "HassPauseTimer", "HassUnpauseTimer", "HassIncreaseTimer",
                                "HassDecreaseTimer", "HassCancelAllTimers"})


INTENT_DESCRIPTIONS: dict[str, str] = {
    "HassTurnOn": "Turn on, open, lock or activate a device (light, switch, fan, cover, lock, scene, script).",
    "HassTurnOff": "Turn off, close or unlock a device.",
    "HassLightSet": "Set a light's brightness (percent) or color.",
    "HassSetPosition": "Set a cover's or valve's position (percent open).",
    "HassClimateSetTemperature": "Set a thermostat's target temperature.",
    "HassGetState": "Ask the state of a device or sensor (is it on, open, locked; what is its value).",
    "HassStartTimer": "Start a timer (hours/minutes/seconds, optional name).",
    "HassCancelTimer": "Cancel a timer.",
    "HassCancelAllTimers": "Cancel all timers.",
    "HassPauseTimer": "Pause a timer.",
    "HassUnpauseTimer": "Resume a paused timer.",
    "HassIncreaseTimer": "Add time to a running timer.",
    "HassDecreaseTimer": "Remove time from a running timer.",
    "HassTimerStatus": "How much time is left on timers.",
    "HassGetCurrentTime": "The current time.",
    "HassGetCurrentDate": "Today's date.",
    "HassMediaPause": "Pause media playback.",
    "HassMediaUnpause": "Resume media playback.",
    "HassMediaNext": "Skip to the next track.",
    "HassMediaPrevious": "Go back to the previous track.",
    "HassSetVolume": "Set a media player's volume (percent).",
    "HassNevermind": "The user cancels the request; do nothing.",
}


def tool_specs(home: Home) -> list[dict[str, Any]]:
    """One JSON-schema tool per supported intent; name/area/floor are enums of what this home has configured."""
    names = sorted({n for e in home.entities.values() for n in e.names})
    areas = sorted({n for a in home.areas.values() for n in (a.name, *a.aliases)})
    floors = sorted({n for f in home.floors.values() for n in (f.name, *f.aliases)})
    domains = home.domains()

    def enum_str(values: list[str], desc: str) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "string", "description": desc}
        if values:
            d["enum"] = values
        return d

    target = {"name": enum_str(names, "Device name as configured."),
              "area": enum_str(areas, "Area (room)."), }
    if floors:
        target["floor"] = enum_str(floors, "Floor.")
    pct = {"type": "integer", "minimum": 0, "maximum": 100}
    dur = {"hours": {"type": "integer", "minimum": 0, "maximum": 24},
           "minutes": {"type": "integer", "minimum": 0, "maximum": 1440},
           "seconds": {"type": "integer", "minimum": 0, "maximum": 86400}}
    timer_sel = {"name": {"type": "string", "description": "Timer name."},
                 "area": enum_str(areas, "Area of the timer.")}
    props: dict[str, dict[str, Any]] = {
        "HassTurnOn": {**target, "domain": enum_str(domains, "Device type, e.g. light.")},
        "HassTurnOff": {**target, "domain": enum_str(domains, "Device type, e.g. light.")},
        "HassLightSet": {**target, "brightness": {**pct, "description": "Brightness in percent."},
                         "color": enum_str(color_names(), "Color name.")},
        "HassSetPosition": {**target, "position": {**pct, "description": "Percent open."}},
        "HassClimateSetTemperature": {**target, "temperature": {"type": "number", "description": "Degrees."}},
        "HassGetState": {**target, "domain": enum_str(domains, "Device type."),
                         "state": {"type": "string", "description": "State asked about, e.g. on, open, locked."}},
        "HassStartTimer": {**dur, "name": {"type": "string", "description": "Optional timer name."}},
        "HassCancelTimer": timer_sel, "HassCancelAllTimers": {"area": timer_sel["area"]},
        "HassPauseTimer": timer_sel, "HassUnpauseTimer": timer_sel,
        "HassIncreaseTimer": {**dur, **timer_sel}, "HassDecreaseTimer": {**dur, **timer_sel},
        "HassTimerStatus": timer_sel, "HassGetCurrentTime": {}, "HassGetCurrentDate": {},
        "HassMediaPause": target, "HassMediaUnpause": target, "HassMediaNext": target, "HassMediaPrevious": target,
        "HassSetVolume": {**target, "volume_level": {**pct, "description": "Volume in percent."}},
        "HassNevermind": {},
    }
    required = {"HassLightSet": [], "HassSetPosition": ["position"], "HassClimateSetTemperature": ["temperature"],
                "HassSetVolume": ["volume_level"]}
    return [{"name": n, "description": INTENT_DESCRIPTIONS[n],
             "parameters": {"type": "object", "properties": props[n], "required": required.get(n, []),
                            "additionalProperties": False}}
            for n in SUPPORTED_INTENTS]


def select_tools(tools: Sequence[dict[str, Any]], home: Any) -> list[dict[str, Any]]:
    """The tools worth offering the LLM for this home (see ``TOOL_DOMAINS``, ``LLM_EXCLUDED_TOOLS``)."""
    domains = set(home.domains()) if hasattr(home, "domains") else set()
    out = []
    for t in tools:
        if t["name"] in LLM_EXCLUDED_TOOLS:
            continue
        need = TOOL_DOMAINS.get(t["name"])
        if need is not None and not (need & domains):
            continue
        out.append(t)
    return out


TARGET_SLOTS = ("area", "floor", "domain")


def tool_call_schema(tools: Sequence[dict[str, Any]], *, unique_names: bool = True) -> dict[str, Any]:
    """``{"name": <tool>, "arguments": {...}}`` as an anyOf with one branch per tool (the grammar's source).

    A tool that targets devices gets two argument shapes: by ``name`` (plus the non-target arguments; plus ``area``
    when two devices share a name) or by ``area``/``floor``/``domain``. The small model otherwise fills every
    optional argument (the user's area, the domain), which costs ~10 tokens (~1 s on a Pi) per call and can
    contradict the name.
    """
    branches = []
    for t in tools:
        params = t.get("parameters") or {"type": "object", "properties": {}}
        props = params.get("properties") or {}
        if "name" in props and any(k in props for k in TARGET_SLOTS):
            required = [r for r in params.get("required") or () if r not in ("name", *TARGET_SLOTS)]
            keep = () if unique_names else ("area",)
            by_name = {k: v for k, v in props.items() if k not in TARGET_SLOTS or k in keep}
            by_target = {k: v for k, v in props.items() if k != "name"}
            args: dict[str, Any] = {"anyOf": [
                {"type": "object", "properties": by_name, "required": ["name", *required],
                 "additionalProperties": False},
                {"type": "object", "properties": by_target, "required": required, "additionalProperties": False},
            ]}
        else:
            args = params
        branches.append({"type": "object",
                         "properties": {"name": {"const": t["name"]}, "arguments": args},
                         "required": ["name", "arguments"], "additionalProperties": False})
    return {"anyOf": branches}


def narrowed_call_schema(schema: dict[str, Any], keep: dict[str, set[str]]) -> dict[str, Any]:
    """The tool-call schema with its target enums (device ``name``, ``area``, ``floor``) cut to ``keep``, what the
    words name (``tool_fit.named_targets``): the constrained call can then only target those, where before a
    call on another device was refused after the fact (``tool_misfit``) and the model asked again. An argument left
    without values is dropped, and a shape that requires it; a tool left without any shape keeps its own. ``keep``
    empty (the words name nothing): the schema itself."""
    if not keep:
        return schema
    branches = []
    for b in schema["anyOf"]:
        args = b["properties"]["arguments"]
        shapes = []
        for sh in args.get("anyOf") or [args]:
            props = dict(sh.get("properties") or {})
            required = set(sh.get("required") or ())
            fits = True
            for key, values in keep.items():
                spec = props.get(key)
                if not isinstance(spec, dict) or "enum" not in spec:
                    continue
                vals = [v for v in spec["enum"] if v in values]
                if vals:
                    props[key] = {**spec, "enum": vals}
                else:
                    del props[key]
                    fits = fits and key not in required
            if fits:
                shapes.append({**sh, "properties": props})
        if not shapes:
            branches.append(b)
            continue
        new_args = shapes[0] if "anyOf" not in args else {**args, "anyOf": shapes}
        branches.append({**b, "properties": {**b["properties"], "arguments": new_args}})
    return {**schema, "anyOf": branches}


def _signature(tool: dict[str, Any]) -> str:
    """One line per tool, ``Name(arg, arg*): description``: a tenth of the tokens of the JSON specs (the prompt
    prefix is evaluated at ~80 tokens/s on a Pi); the types and allowed values are enforced by the grammar."""
    params = tool.get("parameters") or {}
    required = set(params.get("required") or ())
    args = ", ".join(k + ("*" if k in required else "") for k in (params.get("properties") or {}))
    desc = tool.get("description", "").strip()
    return f"{tool['name']}({args}): {desc}"


def _plain_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A call in a worked example when no backend says how its model writes calls (no LLM: never sent)."""
    return f"call {json.dumps({'name': name, 'arguments': arguments})}"


def _plain_tools_prompt(signatures: str) -> str:
    return f"# Tools\n{signatures}"


def _examples(home: Any, tools: set[str], fmt: Callable[[str, dict[str, Any]], str] = _plain_tool_call) -> str:
    """A few worked examples with this home's own names: they lift a 0.5B model's choice of tool and arguments
    (without them it answered "kill all the lights" with HassTurnOn and a dimming request with HassTurnOn)."""
    ents = list(home.entities.values())
    light = next((e for e in ents if e.domain == "light"), None)
    other = next((e for e in ents if e is not light and e.domain in ("light", "switch", "fan")), light)
    area = next(iter(home.areas.values()), None)
    shots: list[tuple[str, str]] = []

    def call(name: str, args: dict[str, Any]) -> str:
        return fmt(name, args)

    if light is not None and "HassLightSet" in tools:
        shots.append((f"dim the {light.name.lower()} to 30 percent",
                      call("HassLightSet", {"name": light.name, "brightness": 30})))
        shots.append((f"{(other or light).name.lower()} at half brightness please",
                      call("HassLightSet", {"name": (other or light).name, "brightness": 50})))
    if other is not None and "HassTurnOff" in tools:
        shots.append((f"switch the {other.name.lower()} off", call("HassTurnOff", {"name": other.name})))
    if area is not None and light is not None and "HassTurnOn" in tools:
        shots.append((f"it's too dark in the {area.name.lower()}",
                      call("HassTurnOn", {"area": area.name, "domain": "light"})))
    if light is not None and "HassGetState" in tools:
        shots.append((f"is the {light.name.lower()} on?", call("HassGetState", {"name": light.name})))
    if "HassStartTimer" in tools:
        shots.append(("set a timer for ten minutes", call("HassStartTimer", {"minutes": 10})))
    shots.append(("what is the capital of Italy?", "Rome is the capital of Italy."))
    shots.append(("how are you today?", "I'm doing well, thanks for asking!"))
    if not shots:
        return ""
    return "Examples:\n" + "\n".join(f"User: {q}\nAssistant: {a}" for q, a in shots)


def _device_list(home: Any) -> str:
    """One line per configured entity (name, aliases, type, area) and the areas: said once, in the fixed prefix."""
    lines = ["Devices in this home (name: type, area):"]
    for e in home.entities.values():
        area = home.area_name(e.area) if hasattr(home, "area_name") else e.area
        aliases = f" (also called {', '.join(e.aliases)})" if e.aliases else ""
        lines.append(f"- {e.name}{aliases}: {e.domain}{', ' + area if area else ''}")
    areas = [a.name for a in home.areas.values()]
    if areas:
        lines.append("Areas: " + ", ".join(areas) + ".")
    return "\n".join(lines)
