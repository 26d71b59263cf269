"""Shared types for recognized intents, their results and the device commands they map to.

Intent names and slot names follow Home Assistant's conventions (HassTurnOn with ``name``/``area``/``domain``,
HassLightSet with ``brightness``, HassStartTimer with ``hours``/``minutes``/``seconds``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class IntentCall:
    """An intent recognized from what the user said (by the fast path or the LLM)."""

    name: str
    slots: dict[str, Any] = field(default_factory=dict)
    entities: list[str] = field(default_factory=list)  # resolved entity ids, e.g. ["light.kitchen"]
    text: str = ""  # the transcript it came from
    source: str = "fast"  # "fast" (template match) or "llm" (tool call)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "slots": self.slots, "entities": self.entities}


@dataclass
class DeviceCommand:
    """One MQTT message to a device (Zigbee2MQTT, Tasmota, generic JSON), mapped from an intent."""

    entity: str
    topic: str
    payload: str
    retain: bool = False
    with_ids: bool = False  # our own JSON (generic preset): published with "id" and "turn_id" so a hub can dedupe


@dataclass
class IntentResult:
    """What handling an intent did and what to say about it."""

    call: IntentCall
    success: bool
    speech: str  # natural language, never JSON
    data: dict[str, Any] = field(default_factory=dict)  # facts fed back to the LLM as the tool result
    commands: list[DeviceCommand] = field(default_factory=list)
    needs_confirmation: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["call"] = self.call.to_json()
        return d
