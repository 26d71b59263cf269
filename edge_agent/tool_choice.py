"""A tool call written as a few choices (``llm_choice.ChoiceDecoder``) instead of token by token under a grammar:
first the tool (an enum of the offered tools' names: one or two model steps), then its arguments one entry at a
time, each entry a choice among whole ``"key": value`` strings of the configured values (a device by its
configured name, an area, a domain: the model picks by the first letters, the rest is forced) or a key whose value is
a number in its range, and after each entry the choice to add another or close. Same JSON as before, in the same
form (``{"name": "HassTurnOff", "arguments": {"name": "Living Room Blinds"}}``), so the prompt's worked examples and
a retry's repeated call still match what the model writes.

``tool_plan`` reads the plan from the tool-call schema (``llm_tools.tool_call_schema``: one branch per tool, the
arguments a plain object or an ``anyOf`` of shapes, e.g. a device by ``name`` or by ``area``/``domain``); it returns
None for a schema it cannot write as choices (then the grammar writes the call). Optional free-text arguments
(a timer's name, the state asked about) are never written, nor a shape that needs one (a timer by its name: the one
by area remains); the handler needs neither. A tool whose arguments have alternative shapes gets at least one
argument: ``{}`` fits every shape and names no target.
A number the words state outright with its unit ("thirty percent", "for 5 minutes", "21 degrees": ``said_values``)
is written for that argument without a model step once the model has chosen the argument (on this machine a digit
is a step of ~0.1 s); a number said any other way, or two numbers with one unit, are the model's to write. Where the
words give a length of time in some units, the others are not offered ("for 45 seconds" was written as 45 minutes,
"for two hours" as 2 hours, 0 minutes and 0 seconds).
What the words settle costs no step either (``_without_choice``, ``_all_written``): a device they name alone (the
narrowed schema leaves the tool one name) is written as its target without choosing between name and area; after
the target, a number they state for the tool; and once both are in, the call closes without a step unless the words
name a value of another argument (a colour) or a number is still the model's to write. The forced text after the
tool's name is then never evaluated: "The living room lamp should be at about forty percent." took five steps
(0.46 s here), now one (0.19 s).
Pure: the output is validated against the whole schema by the caller (``parse_json_output``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .context_rules import words_to_number
from .llm_choice import ChoiceDecoder

CALL_START = '{"name": "'  # the call's first characters: part of the prompt, so the first choice is the tool
NUMBER_MAX = 999  # a number without a maximum in the schema (a temperature): the handler checks the real range
ARGS_OPEN = b', "arguments": {'
CLOSE = b"}}"  # the arguments and the call end together


# a unit word after a number -> the arguments such a number fills
UNIT_KEYS = {"percent": ("brightness", "position", "volume_level"), "degrees": ("temperature",),
             "hours": ("hours",), "minutes": ("minutes",), "seconds": ("seconds",)}
TIME_KEYS = frozenset({"hours", "minutes", "seconds"})  # where the words said one, the others are not offered
TARGET_KEYS = frozenset({"name", "area", "floor"})  # what a call acts on
_UNIT = re.compile(r"(?<![\d.])(?<!point )(\d+) (percent|per cent|degrees?|hours?|minutes?|seconds?)\b(?![.,]\d)")


def said_values(text: str) -> dict[str, int]:
    """The numbers ``text`` states with their unit, by the arguments they fill: "dim it to thirty percent" ->
    {"brightness": 30, "position": 30, "volume_level": 30}. A unit said with two different numbers ("5 minutes ...
    10 minutes") fills nothing; a decimal ("21.5 degrees", "21 point 5 degrees") is not taken."""
    t = " ".join(re.sub(r"[^a-z0-9.% ]+", " ", text.lower().replace("%", " percent")).split())
    found: dict[str, set[int]] = {}
    for m in _UNIT.finditer(words_to_number(t)):
        unit = m.group(2).replace("per cent", "percent")
        unit = unit if unit.endswith("s") or unit == "percent" else unit + "s"
        found.setdefault(unit, set()).add(int(m.group(1)))
    return {k: next(iter(ns)) for unit, ns in found.items() if len(ns) == 1 for k in UNIT_KEYS[unit]}


@dataclass(frozen=True)
class Shape:
    """One allowed form of a tool's arguments: the keys it may have (in order) and those it must."""

    props: dict[str, dict[str, Any]]
    required: frozenset[str]


@dataclass(frozen=True)
class ToolPlan:
    tools: dict[str, tuple[Shape, ...]]  # tool name -> the shapes of its arguments


def tool_plan(schema: dict[str, Any]) -> ToolPlan | None:
    """The tools and their argument shapes from a tool-call schema, or None if some part cannot be a choice."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or not branches:
        return None
    tools: dict[str, tuple[Shape, ...]] = {}
    for b in branches:
        props = b.get("properties") or {}
        name = (props.get("name") or {}).get("const")
        args = props.get("arguments")
        if not isinstance(name, str) or not isinstance(args, dict):
            return None
        shapes = []
        for a in args.get("anyOf") or [args]:
            if a.get("type") != "object":
                return None
            required = frozenset(a.get("required") or ())
            keep = {k: v for k, v in (a.get("properties") or {}).items() if _kind(v) is not None}
            if required <= set(keep):  # else a required argument is free text (a timer's name): not offered
                shapes.append(Shape(keep, required))
        if shapes:
            tools[name] = tuple(shapes)
    return ToolPlan(tools) if tools else None


def _kind(spec: dict[str, Any]) -> str | None:
    if "enum" in spec or "const" in spec:
        return "enum"
    if spec.get("type") in ("integer", "number"):
        return spec["type"]
    return None


def _values(spec: dict[str, Any]) -> list[Any]:
    return list(spec["enum"]) if "enum" in spec else [spec["const"]]


def _dump(v: Any) -> bytes:
    return json.dumps(v, ensure_ascii=False).encode()


def write_tool_call(dec: ChoiceDecoder, plan: ToolPlan, said: dict[str, int] | None = None, words: str = "") -> str:
    """The call's JSON text (it starts with ``CALL_START``, already in the prompt): the tool, then entry by entry.
    ``said``: numbers the words state (``said_values``), written for their argument without a model step.
    ``words``: the request; once a target and every number it states are written, the call closes without a model
    step unless it names a value of another argument (a colour, "lights")."""
    names = {_dump(t)[1:]: t for t in plan.tools}  # 'HassTurnOff"': the name as it follows CALL_START
    tool = names[dec.choose(list(names))]
    dec.force(ARGS_OPEN)
    shapes = plan.tools[tool]
    out: list[bytes] = []
    used: list[str] = []
    sep = b""
    comma = False  # a number was followed by a comma: another entry must come, not the close

    def offered(fits: list[Shape], can_close: bool) -> list[str]:
        keys = list(dict.fromkeys(k for s in fits for k in s.props if k not in used))
        if said and TIME_KEYS & set(said):  # "for 45 seconds": a timer's length only in the units said
            narrowed = [k for k in keys if k not in TIME_KEYS or k in said]
            return narrowed if narrowed or can_close else keys
        return keys

    while True:
        fits = [s for s in shapes if set(used) <= set(s.props)]
        can_close = any(s.required <= set(used) for s in fits) and (bool(used) or len(shapes) == 1)
        keys = offered(fits, can_close and not comma)
        entries: dict[bytes, tuple[str, Any]] = {}
        for k in keys:
            spec = next(s.props[k] for s in fits if k in s.props)
            head = sep + _dump(k) + b": "
            if _kind(spec) == "enum":
                for v in _values(spec):
                    entries[head + _dump(v)] = (k, v)
            else:
                entries[head] = (k, None)
        if can_close and not comma:
            entries[CLOSE] = ("", None)
        entries = _without_choice(entries, used, said) or entries
        if CLOSE in entries and _all_written(fits, used, said, words):
            break  # nothing the words gave is left: no model step to close (the forced text is never evaluated)
        picked = dec.choose(list(entries))
        comma = False
        if picked == CLOSE:
            break
        key, _ = entries[picked]
        out.append(picked)
        used.append(key)
        sep = b", "
        spec = next(s.props[key] for s in fits if key in s.props)
        if _kind(spec) == "enum":
            continue
        # a number, then its end: close, or a comma before the next entry
        fits_after = [s for s in shapes if set(used) <= set(s.props)]
        close_after = any(s.required <= set(used) for s in fits_after)
        more = bool(offered(fits_after, close_after))
        owed = more and bool(set(said or {}) & set(offered(fits_after, close_after)))  # a said number still to come
        ends = ([CLOSE] if close_after and not owed else []) + ([b","] if more else [])
        if CLOSE in ends and _all_written(fits_after, used, said, words):
            ends = [CLOSE]
        lo = int(spec.get("minimum", 0))
        hi = int(spec.get("maximum", NUMBER_MAX))
        value = (said or {}).get(key)
        if value is not None and max(0, lo) <= value <= hi:
            digits = str(value)
            dec.force(digits.encode())
            end = dec.choose(ends)
        else:
            digits, end = dec.number(max(0, lo), hi, decimal=spec.get("type") == "number", ends=ends)
        out.append(digits.encode())
        if end == CLOSE:
            break
        out.append(b",")
        sep = b" "
        comma = True
    return (CALL_START.encode() + _dump(tool)[1:] + ARGS_OPEN + b"".join(out) + CLOSE).decode()


def _without_choice(entries: dict[bytes, tuple[str, Any]], used: list[str], said: dict[str, int] | None
                    ) -> dict[bytes, tuple[str, Any]] | None:
    """The one entry that is not the model's to choose, if any: before any target, the device when one configured
    name is left to the call (the words named it: ``narrowed_call_schema``); after the target (the order of the
    prompt's examples), a number the words stated for an argument of the tool (``said``), before the call may
    close. None: the model chooses among ``entries``."""
    if not set(used) & TARGET_KEYS:
        names = [e for e, (k, _) in entries.items() if k == "name"]
        return {names[0]: entries[names[0]]} if len(names) == 1 else None
    owed = [e for e, (k, v) in entries.items() if said and k in said and v is None]
    return {owed[0]: entries[owed[0]]} if owed else None


def _all_written(fits: list[Shape], used: list[str], said: dict[str, int] | None, words: str) -> bool:
    """A target is written, every number the words stated for the tool too, and no value of another argument the
    shapes still offer is in the words (``write_tool_call``'s close without a model step)."""
    if not set(used) & TARGET_KEYS:
        return False
    left = {k: s.props[k] for s in fits for k in s.props if k not in used and k not in TARGET_KEYS}
    if set(said or {}) & set(left) or any(_kind(spec) != "enum" for spec in left.values()):
        return False  # a number still to write: the words' own, or the model's to choose
    said_words = f" {' '.join(re.sub(r'[^a-z0-9 ]+', ' ', words.lower()).split())} "
    return not any(f" {str(v).lower().replace('_', ' ')} " in said_words or f" {str(v).lower()}s " in said_words
                   for spec in left.values() if _kind(spec) == "enum" for v in _values(spec))


__all__ = ["CALL_START", "Shape", "ToolPlan", "said_values", "tool_plan", "write_tool_call"]
