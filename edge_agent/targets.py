"""The devices an intent call acts on: the intents that take devices (``DEVICE_INTENTS``, with the domains they
default to) and ``resolve_targets``, a call's name/area/floor/domain/device_class slots resolved to the home's
configured entities. The fast path, the handler's validation and the LLM's misfit checks all read it."""

from __future__ import annotations

from typing import Any

from .home import Home
from .intent import IntentCall

# Intents that act on (or ask about) entities, with the domains they default to when no name is given.
DEVICE_INTENTS: dict[str, list[str] | None] = {
    "HassTurnOn": None, "HassTurnOff": None, "HassLightSet": ["light"], "HassSetPosition": ["cover", "valve"],
    "HassClimateSetTemperature": ["climate"], "HassGetState": None,
    "HassMediaPause": ["media_player"], "HassMediaUnpause": ["media_player"], "HassMediaNext": ["media_player"],
    "HassMediaPrevious": ["media_player"], "HassSetVolume": ["media_player"],
}


def resolve_targets(home: Home, call: IntentCall) -> list[Any]:
    """The entities an intent's name/area/floor/domain/device_class slots select (empty if it targets none)."""
    s = call.slots
    if call.name not in DEVICE_INTENTS:
        return []
    domain = s.get("domain") or DEVICE_INTENTS[call.name]
    name = s.get("name")
    if isinstance(name, str) and name.casefold() == "all":
        name = None
    if name is not None:
        domain = s.get("domain")  # a named entity: any domain
    if call.name == "HassGetState" and name is None and domain is None:
        return []
    return home.find(name, s.get("area"), domain, s.get("device_class"), s.get("floor"))
