"""The fast path's template data: Home Assistant's English intents (home-assistant-intents) plus our supplement.

A few English phrasings that Home Assistant's 2025 tests use but the packaged 2026 templates no longer carry ("turn on
all the lights in the house", "is the phone battery low", "what is the furnace temperature") are added from
``SUPPLEMENT_YAML`` below, in the same template language (like Home Assistant's ``custom_sentences``); binary sensor
questions are built per device class (``_BINARY_SENSORS``). ``language_data`` and ``load_intents`` load and parse it
all once per process (``color_names``: the colour list); ``intents.py`` matches with it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import yaml

SUPPORTED_INTENTS: tuple[str, ...] = (
    "HassTurnOn", "HassTurnOff", "HassLightSet", "HassSetPosition", "HassClimateSetTemperature", "HassGetState",
    "HassStartTimer", "HassCancelTimer", "HassCancelAllTimers", "HassPauseTimer", "HassUnpauseTimer",
    "HassIncreaseTimer", "HassDecreaseTimer", "HassTimerStatus", "HassGetCurrentTime", "HassGetCurrentDate",
    "HassMediaPause", "HassMediaUnpause", "HassMediaNext", "HassMediaPrevious", "HassSetVolume", "HassNevermind",
)

# Extra English templates (hassil syntax, same rules and lists as the packaged data). Whole-house and floor
# commands, area-wide locks, state questions about groups, and sensor questions that the packaged 2026 templates do
# not carry. "Everywhere" commands always need an explicit <all> or <everywhere>: a bare "turn on the lights" on a
# device without an area must not switch on the whole house.
SUPPLEMENT_YAML = r"""
language: en
lists:
  sensor_quantity:
    wildcard: true
intents:
  HassTurnOn:
    data:
      - sentences:
          - "<turn> <all> [<home>] <light> on [<everywhere>]"
          - "<turn> [<the>] [<home>] <light> on <everywhere>"
          - "<turn> on <all> [<home>] <light> [<everywhere>]"
          - "<turn> on [<the>] [<home>] <light> <everywhere>"
          - "activate <all> [<home>] <light> [<everywhere>]"
          - "activate [<the>] [<home>] <light> <everywhere>"
          - "(light up|illuminate) <everywhere>"
          - "(light up|illuminate) <all> (room|area)[s] [<everywhere>]"
          - "make sure <all> <light> (is|are) on [<everywhere>]"
        slots: {domain: light}
        response: light_all
      - sentences:
          - "<turn> <all> fan[s] on [<everywhere>]"
          - "<turn> [<the>] fan[s] on <everywhere>"
          - "<turn> on <all> fan[s] [<everywhere>]"
          - "<turn> on [<the>] fan[s] <everywhere>"
          - "activate <all> fan[s] [<everywhere>]"
          - "activate [<the>] fan[s] <everywhere>"
        slots: {domain: fan}
      - sentences:
          - "<turn> [(<all>|<the>)] <light> <in> [<the>] {floor} [floor] on"
          - "<turn> [(<all>|<the>)] <light> on <in> [<the>] {floor} [floor]"
          - "<turn> on [(<all>|<the>)] <light> <in> [<the>] {floor} [floor]"
          - "activate [(<all>|<the>)] <light> <in> [<the>] {floor} [floor]"
        slots: {domain: light}
        response: lights_floor
      - sentences:
          - "lock [<all>] <lockable> <in> [<the>] {area}"
          - "lock [<all>] [<the>] {area} <lockable>"
        slots: {domain: lock}
        response: lock_area
      - sentences:
          - "(change|switch|transition) [<the>] {area} to [<the>] {name} [scene]"
        requires_context: {domain: scene}
        response: scene
  HassTurnOff:
    data:
      - sentences:
          - "<turn> <all> fan[s] off [<everywhere>]"
          - "<turn> [<the>] fan[s] off <everywhere>"
          - "<turn> off <all> fan[s] [<everywhere>]"
          - "<turn> off [<the>] fan[s] <everywhere>"
          - "deactivate <all> fan[s] [<everywhere>]"
          - "deactivate [<the>] fan[s] <everywhere>"
        slots: {domain: fan}
      - sentences:
          - "<turn> [(<all>|<the>)] <light> <in> [<the>] {floor} [floor] (off|out)"
          - "<turn> [(<all>|<the>)] <light> (off|out) <in> [<the>] {floor} [floor]"
          - "<turn> (off|out) [(<all>|<the>)] <light> <in> [<the>] {floor} [floor]"
          - "deactivate [(<all>|<the>)] <light> <in> [<the>] {floor} [floor]"
        slots: {domain: light}
        response: lights_floor
      - sentences:
          - "unlock [<all>] <lockable> <in> [<the>] {area}"
          - "unlock [<all>] [<the>] {area} <lockable>"
        slots: {domain: lock}
        response: lock_area
  HassClimateSetTemperature:
    data:
      - sentences:
          - "(<numeric_value_set>|adjust) [the] <temp> to {temperature}[([ ]°)|( degree[s])]"
        response: default
  HassGetState:
    data:
      - sentences:
          - "<is> [<the>] {name} [currently] {lock_states:state} [(currently|right now)]"
        requires_context: {domain: lock}
        response: one_yesno
      - sentences:
          - "do (I|we) have <any> {lock_states:state} <lockable>"
          - "<are_any> {lock_states:state} <lockable>"
          - "<are_any> <lockable> [currently] {lock_states:state} [right now]"
        slots: {domain: lock}
        response: any
      - sentences:
          - "<which> <lockable> <is> [currently] {lock_states:state} [right now]"
        slots: {domain: lock}
        response: which
      - sentences:
          - "<how_many> <lockable> <is> [currently] {lock_states:state} [right now]"
        slots: {domain: lock}
        response: how_many
      - sentences:
          - "(do you know|tell me|<what_is>) the [current] (status|state) of [<the>] {name}"
        requires_context:
          domain: [sensor, light, switch, fan, cover, lock, valve, climate, media_player, binary_sensor]
        response: one
      - sentences:
          - "tell me if there (is|are) <any> switch[es] [turned] {on_off_states:state} [<in>] [<the>] {area}"
          - "<are_any> switch[es] [turned] {on_off_states:state} <in> [<the>] {area}"
        slots: {domain: switch}
        response: any
      - sentences:
          - "tell me if there (is|are) <any> switch[es] [turned] {on_off_states:state} [<in>] [<the>] {floor} [floor]"
        slots: {domain: switch}
        response: any
      - sentences:
          - "<are_all> switch[es] [turned] {on_off_states:state} <in> [<the>] {area}"
          - "<are_all> switch[es] <in> [<the>] {area} [turned] {on_off_states:state}"
        slots: {domain: switch}
        response: all
      - sentences:
          - "<are_all> switch[es] [turned] {on_off_states:state} <in> [<the>] {floor} [floor]"
          - "<are_all> switch[es] <in> [<the>] {floor} [floor] [turned] {on_off_states:state}"
        slots: {domain: switch}
        response: all
      - sentences:
          - "<what_is> [the] {sensor_quantity:_quantity} (of|in|from|for|indicated by|measured by|on) [<the>] {name}"
          - "<what_is> [<the>] {name}[[']s] {sensor_quantity:_quantity}"
          - "how much {sensor_quantity:_quantity} (does|do) [<the>] {name} have [left]"
          - "when (is|will) [<the>] {name} [be]"
        requires_context: {domain: sensor}
        response: one
"""

# Binary sensors: what each device class's "on"/"off" is called, what a group of them is called, and phrasings that
# carry their state in the verb ("is there any smoke in the kitchen"). Built into template blocks below.
_BINARY_SENSORS: dict[str, dict[str, Any]] = {
    "battery": {"on": "low", "off": "(normal|charged|ok)", "noun": "batter(y|ies)", "after_name": "[battery]"},
    "battery_charging": {"on": "charging", "off": "not charging", "noun": "batter(y|ies)"},
    "carbon_monoxide": {"on": "(on|detected|triggered)", "off": "(off|clear)",
                        "noun": "(carbon monoxide|co) (sensor|detector)[s]",
                        "fixed_on": ["<is> <any> (carbon monoxide|co) [detected] <in> [<the>] {area}"]},
    "cold": {"on": "cold", "off": "(normal|warm)", "noun": "(thing|device)[s]"},
    "connectivity": {"on": "connected", "off": "disconnected", "noun": "device[s]"},
    "gas": {"on": "(on|detected|triggered)", "off": "(off|clear)", "noun": "gas (sensor|detector)[s]",
            "fixed_on": ["<is> <any> gas [detected] <in> [<the>] {area}"]},
    "heat": {"on": "hot", "off": "(normal|cool)", "noun": "(thing|device)[s]"},
    "light": {"on": "detected", "off": "(not detected|dark)", "noun": "light[s]"},
    "lock": {"on": "unlocked", "off": "locked", "noun": "lock[s]"},
    "moisture": {"on": "(wet|flooded|leaking)", "off": "dry", "noun": "(water|leak|moisture) sensor[s]",
                 "fixed_on": ["<is> <any> leak[s]", "<is> [<the>] floor wet"],
                 "area_state": True},
    "motion": {"on": "(triggered|detected|on)", "off": "(clear|off)", "noun": "motion sensor[s]",
               "fixed_on": ["<is> <any> motion [detected]", "<is> motion detected"]},
    "occupancy": {"on": "(triggered|detected|occupied|on)", "off": "(clear|empty|unoccupied)",
                  "noun": "occupancy sensor[s]", "fixed_on": ["<is> <any> occupancy [detected]"],
                  "area_state": True},
    "opening": {"on": "open", "off": "(closed|shut)", "noun": "opening[s]"},
    "plug": {"on": "plugged in", "off": "unplugged", "noun": "device[s]"},
    "power": {"on": "(powered [on]|detected|on)", "off": "(powered off|unpowered|off)", "noun": "device[s]",
              "after_name": "[power]"},
    "presence": {"on": "(home|present)", "off": "(away|gone)", "noun": "device[s]"},
    "problem": {"on": "(broken|failing)", "off": "(ok|fine)", "noun": "device[s]",
                "fixed_on_name": ["<are_any> problem[s] with [<the>] {name}"]},
    "running": {"on": "running", "off": "(stopped|not running)", "noun": "device[s]"},
    "safety": {"on": "unsafe", "off": "safe", "noun": "(thing|device)[s]"},
    "smoke": {"on": "(triggered|detected|on)", "off": "(clear|off)", "noun": "smoke (sensor|detector)[s]",
              "fixed_on": ["<is> [<any>] smoke [detected] <in> [<the>] {area}"]},
    "sound": {"on": "(triggered|detected|on)", "off": "(clear|off)", "noun": "sound sensor[s]",
              "fixed_on": ["<is> <any> (noise|sound) [detected] <in> [<the>] {area}"]},
    "tamper": {"on": "tampered [with]", "off": "clear", "noun": "tamper sensor[s]"},
    "update": {"on": "(out of date|outdated)", "off": "up to date", "noun": "update[s]",
               "fixed_on": ["<are_any> update[s] available", "<which> update[s] <is> available",
                            "<how_many> update[s] <is> available"]},
    "vibration": {"on": "vibrating", "off": "(still|not vibrating)", "noun": "(thing|device)[s]",
                  "fixed_on": ["is (anything|something) vibrating"]},
}


def _binary_sensor_blocks() -> list[dict[str, Any]]:
    """Template blocks for binary sensor questions, one set per device class."""
    blocks: list[dict[str, Any]] = []
    for cls, d in _BINARY_SENSORS.items():
        fixed = {"domain": "binary_sensor", "device_class": cls}
        states = {"bs_state": {"values": [{"in": d["on"], "out": "on"}, {"in": d["off"], "out": "off"}]}}
        rules = {"bs_noun": d["noun"]}
        after = d.get("after_name", "")
        blocks.append({"sentences": [f"<is> [<the>] {{name}} {after} {{bs_state:state}}",
                                     f"<is> [<the>] {{name}} {after} {{bs_state:state}} <in> [<the>] {{area}}"],
                       "slots": fixed, "lists": states, "requires_context": fixed, "response": "one_yesno"})
        group = ["<is> <bs_noun> {bs_state:state}", "<are_any> <bs_noun> {bs_state:state}",
                 "<are_all> <bs_noun> {bs_state:state}",
                 "<which> <bs_noun> <is> {bs_state:state}", "<how_many> <bs_noun> <is> {bs_state:state}"]
        group += [g + " [<in>] [<the>] {area}" for g in group]
        if d.get("area_state"):
            group.append("<is> [<the>] {area} {bs_state:state}")
        blocks.append({"sentences": group, "slots": fixed, "lists": states, "expansion_rules": rules,
                       "response": "any"})
        if d.get("fixed_on"):
            blocks.append({"sentences": d["fixed_on"], "slots": {**fixed, "state": "on"},
                           "expansion_rules": rules, "response": "any"})
        if d.get("fixed_on_name"):
            blocks.append({"sentences": d["fixed_on_name"], "slots": {**fixed, "state": "on"},
                           "requires_context": fixed, "response": "one_yesno"})
    return blocks


def supplement_dict() -> dict[str, Any]:
    """The supplementary templates as an intents dict (merged after the packaged ones)."""
    d = yaml.safe_load(SUPPLEMENT_YAML)
    d["intents"]["HassGetState"]["data"].extend(_binary_sensor_blocks())
    return d


@functools.lru_cache(maxsize=2)
def language_data(supplement: bool = True) -> dict[str, Any]:
    """The raw English intents dict (packaged templates + our supplement), loaded once."""
    from hassil.util import merge_dict
    from home_assistant_intents import get_intents

    data = get_intents("en")
    if data is None:  # pragma: no cover - broken install
        from .errors import ConfigError

        raise ConfigError("home-assistant-intents has no English data", fix="pip install home-assistant-intents")
    data = copy.deepcopy(data)
    if supplement:
        merge_dict(data, supplement_dict())
    return data


@functools.lru_cache(maxsize=2)
def load_intents(supplement: bool = True) -> Any:
    """The compiled hassil Intents for the supported intents only (parsed once per process)."""
    from hassil import Intents, filter_intents

    intents = filter_intents(Intents.from_dict(language_data(supplement)), intent_names=SUPPORTED_INTENTS)
    for intent in intents.intents.values():  # templates parse lazily: pay it here, not on a user's first command
        for data in intent.data:
            _ = data.sentences
    return intents


def color_names() -> list[str]:
    """Color names the English templates know (the HassLightSet ``color`` list)."""
    vals = language_data()["lists"]["color"]["values"]
    return [v["out"] if isinstance(v, dict) else v for v in vals]
