"""Device commands: an entity + action + values -> the MQTT messages that carry it out (``DeviceMapper``).

Device command presets (``home.entities[].mqtt``, default ``home.mqtt_preset``):

- ``zigbee2mqtt``: topic ``zigbee2mqtt/<device>/set``, JSON payloads (``{"state": "ON"}``, ``{"brightness": 0-254}``,
  ``{"position": N}``, ``{"state": "LOCK"}``, ``{"color": {"r", "g", "b"}}``, ``{"current_heating_setpoint": T}``);
- ``tasmota``: topic ``cmnd/<device>/<Command>`` (``POWER`` ``ON``/``OFF``, ``Dimmer`` 0-100, ``Color`` r,g,b,
  ``ShutterPosition`` N, ``ShutterOpen``/``ShutterClose``);
- ``generic``: JSON ``{"entity_id", "action", ...values, "turn_id", "id"}`` to ``home.generic_topic``; ``id`` is
  the message's own id, the same on every redelivery, so a hub can drop a duplicate (QoS 1 is at-least-once).

Per entity, ``mqtt.topic`` (a template) replaces the preset's topic and ``mqtt.payloads.<action>`` (a template)
replaces one action's payload. Template fields: {entity_id} {domain} {object_id} {device} {site_id} {action}
{command} {brightness} {brightness_254} {position} {temperature} {color} {r} {g} {b} {hex} {volume}.
"""

from __future__ import annotations

import json
from typing import Any

from .config import HomeSettings
from .errors import ToolError
from .home import Entity
from .intent import DeviceCommand

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "orange": (255, 165, 0),
    "yellow": (255, 255, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (128, 0, 128),
    "brown": (165, 42, 42), "pink": (255, 192, 203), "turquoise": (64, 224, 208),
}


class DeviceMapper:
    """Entity + action + values -> MQTT messages, from presets and per-entity overrides."""

    def __init__(self, home_settings: HomeSettings, site_id: str = "default") -> None:
        self.hs = home_settings
        self.site_id = site_id

    def commands(self, entity: Entity, action: str, values: dict[str, Any]) -> list[DeviceCommand]:
        m = entity.mqtt or {}
        preset = m.get("preset", self.hs.mqtt_preset)
        object_id = entity.id.split(".", 1)[1]
        device = m.get("device") or (entity.name if preset == "zigbee2mqtt" else object_id)
        fields: dict[str, Any] = {"entity_id": entity.id, "domain": entity.domain, "object_id": object_id,
                                  "device": device, "site_id": self.site_id, "action": action, **values}
        if "brightness" in values:
            fields["brightness_254"] = round(values["brightness"] * 254 / 100)
        if "color" in values:
            r, g, b = COLOR_RGB[values["color"]]
            fields.update(r=r, g=g, b=b, hex=f"#{r:02x}{g:02x}{b:02x}")
        override = (m.get("payloads") or {}).get(action)
        if preset == "zigbee2mqtt":
            topic, payload = f"zigbee2mqtt/{device}/set", self._z2m(entity, action, fields)
        elif preset == "tasmota":
            command, payload = self._tasmota(entity, action, fields)
            fields["command"] = command
            topic = f"cmnd/{device}/{command}"
        else:
            topic = self.hs.generic_topic
            body = {"entity_id": entity.id, "action": action}
            body.update({k: v for k, v in values.items()})
            payload = json.dumps(body)
        fields.setdefault("command", action)
        if override is not None:
            payload = _fill(override, fields, f"{entity.id}: mqtt.payloads.{action}")
        elif payload is None:
            raise ToolError(f"{entity.id}: the {preset} preset has no mapping for '{action}'",
                            fix=f"add mqtt.payloads.{action} (a payload template) to this entity")
        if m.get("topic"):
            topic = m["topic"]
        topic = _fill(topic, fields, f"{entity.id}: mqtt.topic")
        return [DeviceCommand(entity=entity.id, topic=topic, payload=payload, retain=bool(m.get("retain", False)),
                              with_ids=preset == "generic" and override is None)]

    @staticmethod
    def _z2m(entity: Entity, action: str, f: dict[str, Any]) -> str | None:
        simple = {"turn_on": {"state": "ON"}, "turn_off": {"state": "OFF"}, "open": {"state": "OPEN"},
                  "close": {"state": "CLOSE"}, "lock": {"state": "LOCK"}, "unlock": {"state": "UNLOCK"}}
        if action in simple:
            return json.dumps(simple[action])
        if action == "set_brightness":
            if f["brightness"] <= 0:
                return json.dumps({"state": "OFF"})
            return json.dumps({"state": "ON", "brightness": f["brightness_254"]})
        if action == "set_color":
            return json.dumps({"state": "ON", "color": {"r": f["r"], "g": f["g"], "b": f["b"]}})
        if action == "set_position":
            return json.dumps({"position": f["position"]})
        if action == "set_temperature":
            return json.dumps({"current_heating_setpoint": f["temperature"]})
        return None

    @staticmethod
    def _tasmota(entity: Entity, action: str, f: dict[str, Any]) -> tuple[str, str | None]:
        table: dict[str, tuple[str, str]] = {"turn_on": ("POWER", "ON"), "turn_off": ("POWER", "OFF"),
                                             "open": ("ShutterOpen", ""), "close": ("ShutterClose", "")}
        if action in table:
            return table[action]
        if action == "set_brightness":
            return "Dimmer", str(int(f["brightness"]))
        if action == "set_color":
            return "Color", f"{f['r']},{f['g']},{f['b']}"
        if action == "set_position":
            return "ShutterPosition", str(int(f["position"]))
        return action, None


def _fill(template: str, fields: dict[str, Any], where: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ToolError(f"{where}: template {template!r} uses an unknown field {e}; "
                        f"allowed: {', '.join(sorted(fields))}") from None


__all__ = ["COLOR_RGB", "DeviceMapper"]
