"""Every MQTT topic this device uses, and the checks that make a name or topic safe to publish to."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MqttError

ARBITRATION_TOPIC_LEVEL = "_arbitration"


@dataclass(frozen=True)
class Topics:
    """Every topic this device uses, derived from the prefix and the site id."""

    prefix: str
    site_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site_id}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def last_transcript(self) -> str:
        return f"{self.base}/last_transcript"

    @property
    def say(self) -> str:
        return f"{self.base}/say"

    @property
    def mute(self) -> str:
        return f"{self.base}/mute"

    @property
    def mute_set(self) -> str:
        return f"{self.base}/mute/set"

    @property
    def sensitivity(self) -> str:
        return f"{self.base}/sensitivity"

    @property
    def sensitivity_set(self) -> str:
        return f"{self.base}/sensitivity/set"

    @property
    def timer_set(self) -> str:
        return f"{self.base}/timer/set"

    @property
    def ask(self) -> str:
        """An automation's question with its expected answers (``ask.parse_ask``)."""
        return f"{self.base}/ask"

    @property
    def ask_result(self) -> str:
        return f"{self.base}/ask/result"

    @property
    def conversation_start(self) -> str:
        return f"{self.base}/conversation/start"

    @property
    def event(self) -> str:
        """State topic of the Home Assistant event entity (one JSON with ``event_type`` per intent)."""
        return f"{self.base}/event"

    def intent(self, name: str) -> str:
        return f"{self.base}/intent/{topic_level(name)}"

    @property
    def arbitration(self) -> str:
        return f"{self.prefix}/{ARBITRATION_TOPIC_LEVEL}/wake"

    @property
    def device_id(self) -> str:
        return f"edge_agent_{self.site_id}"

    @property
    def discovery_config(self) -> str:
        return f"{self.discovery_prefix}/device/{self.device_id}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"


def topic_level(name: str) -> str:
    """Make ``name`` safe as one topic level (no '/', '+', '#', NUL)."""
    out = "".join("_" if ch in "/+#\0" else ch for ch in name.strip())
    return out or "_"


def check_publish_topic(topic: str) -> None:
    """Raise MqttError unless ``topic`` is a valid topic to publish to."""
    if not topic:
        raise MqttError("MQTT topic is empty", fix="give every entity's mqtt topic a value in the home config")
    if any(ch in topic for ch in "+#\0"):
        raise MqttError(f"MQTT topic {topic!r} contains a wildcard (+ or #) or NUL; one cannot publish to it",
                        fix="use a concrete topic such as zigbee2mqtt/kitchen_light/set")
    if len(topic.encode("utf-8")) > 65535:
        raise MqttError("MQTT topic is longer than 65535 bytes", fix="use a shorter topic")

