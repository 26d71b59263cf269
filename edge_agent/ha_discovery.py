"""Payloads for other systems: Home Assistant device discovery and the Rhasspy/Hermes intent mirror."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import SiteSettings
from .intent import IntentCall
from .intents import SUPPORTED_INTENTS
from .mqtt_inbound import is_number
from .mqtt_topics import Topics

# Event types announced for the Home Assistant event entity before any intent was seen: every intent the assistant
# can execute (a new name is added, and discovery re-sent, the first time it is published).
DEFAULT_INTENT_NAMES: tuple[str, ...] = SUPPORTED_INTENTS


def discovery_payload(topics: Topics, site: SiteSettings, *, sw_version: str,
                      intent_names: Sequence[str], qos: int = 1) -> dict[str, Any]:
    """Home Assistant device-based discovery: one config with ``dev``, ``o`` and ``cmps`` for all entities."""
    dev_id = topics.device_id
    avail = topics.availability

    def comp(platform: str, key: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"p": platform, "name": name, "unique_id": f"{dev_id}_{key}", "availability_topic": avail,
                "payload_available": "online", "payload_not_available": "offline", **extra}

    dev: dict[str, Any] = {"ids": [dev_id], "name": site.name, "mf": "edge-agent", "mdl": "Edge Agent voice assistant",
                           "sw": sw_version}
    if site.area:
        dev["sa"] = site.area  # suggested area
    return {
        "dev": dev,
        "o": {"name": "edge-agent", "sw": sw_version},
        "availability_topic": avail,
        "qos": qos,
        "cmps": {
            "state": comp("sensor", "state", "Assistant state", state_topic=topics.state,
                          icon="mdi:account-voice"),
            "last_transcript": comp("sensor", "last_transcript", "Last transcript",
                                    state_topic=topics.last_transcript, icon="mdi:text-to-speech"),
            "mute": comp("switch", "mute", "Mute", command_topic=topics.mute_set, state_topic=topics.mute,
                         payload_on="ON", payload_off="OFF", state_on="ON", state_off="OFF",
                         icon="mdi:microphone-off"),
            "sensitivity": comp("number", "sensitivity", "Wake word sensitivity",
                                command_topic=topics.sensitivity_set, state_topic=topics.sensitivity,
                                min=0.0, max=1.0, step=0.05, mode="slider", entity_category="config"),
            "intent": comp("event", "intent", "Intent", state_topic=topics.event,
                           event_types=list(dict.fromkeys(intent_names)), icon="mdi:gesture-tap"),
            "answer": comp("event", "answer", "Answer to a question", state_topic=topics.ask_result,
                           event_types=["answer", "no_match"], icon="mdi:comment-question"),
        },
    }


def hermes_intent_payload(call: IntentCall, *, text: str, site_id: str, session_id: str) -> dict[str, Any]:
    """Rhasspy/Hermes-style ``hermes/intent/<name>`` JSON."""
    slots = []
    for name, value in call.slots.items():
        slots.append({"entity": name, "slotName": name, "rawValue": str(value), "confidence": 1.0,
                      "value": {"kind": "Number" if is_number(value) else "Unknown", "value": value}})
    return {"input": text, "intent": {"intentName": call.name, "confidenceScore": 1.0}, "slots": slots,
            "siteId": site_id, "sessionId": session_id, "customData": None, "asrTokens": [],
            "asrConfidence": None}

