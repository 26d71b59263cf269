"""Validation of inbound MQTT payloads: pure functions, each turns raw bytes into a clean value or raises
``InboundError`` with the reason (the link logs it and ignores the message; nothing reaches the engine)."""

from __future__ import annotations

import json
import math
from typing import Any

from .timers import MAX_TIMER_S  # one limit for spoken and MQTT timers

TIMER_ACTIONS = ("start", "cancel", "pause", "resume", "add", "remove", "status")
MAX_SAY_CHARS = 2000


class InboundError(ValueError):
    """An inbound payload was rejected; the message says why (it is logged, never raised to the engine)."""


def decode_text(payload: bytes, max_bytes: int) -> str:
    if len(payload) > max_bytes:
        raise InboundError(f"payload of {len(payload)} bytes exceeds mqtt.max_inbound_bytes ({max_bytes})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InboundError(f"payload is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
        raise InboundError("payload contains control characters")
    return text


def maybe_json(text: str) -> Any:
    """JSON value if ``text`` looks like JSON (object, array, string, number, bool), else the text itself."""
    s = text.strip()
    if s[:1] in ('{', '[', '"'):
        try:
            return json.loads(s)
        except ValueError:
            raise InboundError("payload looks like JSON but does not parse") from None
    return text


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_say(payload: bytes, max_bytes: int) -> str:
    """``say``: plain text, a JSON string, or ``{"text": "..."}`` -> the text to speak."""
    value = maybe_json(decode_text(payload, max_bytes))
    if isinstance(value, dict):
        if "text" not in value:
            raise InboundError('JSON object has no "text" key')
        value = value["text"]
    if not isinstance(value, str):
        raise InboundError(f"text must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InboundError("text is empty")
    if len(text) > MAX_SAY_CHARS:
        raise InboundError(f"text of {len(text)} characters is longer than {MAX_SAY_CHARS}")
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
        raise InboundError("text contains control characters")
    return text


def parse_say_request(payload: bytes, max_bytes: int) -> tuple[str, bool | None]:
    """``say`` with its options: (text, preannounce), preannounce None when the payload does not say."""
    value = maybe_json(decode_text(payload, max_bytes))
    pre = value.get("preannounce") if isinstance(value, dict) else None
    if pre is not None and not isinstance(pre, bool):
        raise InboundError("preannounce must be true or false")
    return parse_say(payload, max_bytes), pre


def parse_switch(payload: bytes, max_bytes: int) -> bool:
    """``mute/set``: ``ON``/``OFF`` (also true/false, 1/0, any case) -> bool."""
    s = decode_text(payload, max_bytes).strip().lower()
    if s in ("on", "true", "1"):
        return True
    if s in ("off", "false", "0"):
        return False
    raise InboundError(f"expected ON or OFF, got {s[:40]!r}")


def parse_sensitivity(payload: bytes, max_bytes: int) -> float:
    """``sensitivity/set``: a number 0..1 (plain or ``{"value": x}``) -> float."""
    text = decode_text(payload, max_bytes).strip()
    value: Any = maybe_json(text)
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InboundError(f"expected a number 0..1, got {text[:40]!r}") from None
    if not is_number(value):
        raise InboundError(f"expected a finite number 0..1, got {text[:40]!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InboundError(f"sensitivity {value} is out of range 0..1")
    return float(value)


def parse_timer(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """``timer/set``: ``{"action": ..., "hours"/"minutes"/"seconds": n, "name": s, "timer_id": s}`` -> a clean dict.

    Only known keys with the right types come through; ``start``/``add``/``remove`` carry ``seconds`` (the total).
    """
    value = maybe_json(decode_text(payload, max_bytes))
    if not isinstance(value, dict):
        raise InboundError("expected a JSON object like {\"action\": \"start\", \"minutes\": 5}")
    action = value.get("action")
    if not isinstance(action, str) or action not in TIMER_ACTIONS:
        raise InboundError(f"action must be one of {', '.join(TIMER_ACTIONS)}; got {action!r}")
    out: dict[str, Any] = {"action": action}
    total = 0.0
    has_duration = False
    for key, mult in (("hours", 3600.0), ("minutes", 60.0), ("seconds", 1.0)):
        if key in value:
            v = value[key]
            if not is_number(v) or v < 0:
                raise InboundError(f"{key} must be a number >= 0, got {v!r}")
            total += float(v) * mult
            has_duration = True
    if action in ("start", "add", "remove"):
        if not has_duration or total <= 0:
            raise InboundError(f"action {action} needs a positive duration (hours/minutes/seconds)")
        if total > MAX_TIMER_S:
            raise InboundError(f"duration {total:.0f} s is longer than {MAX_TIMER_S:.0f} s")
        out["seconds"] = total
    for key in ("name", "timer_id"):
        if key in value:
            v = value[key]
            if not isinstance(v, str) or len(v) > 100:
                raise InboundError(f"{key} must be a string of at most 100 characters")
            out[key] = v
    return out


def parse_hermes_say(payload: bytes, max_bytes: int, site_id: str) -> str | None:
    """``hermes/tts/say``: ``{"text", "siteId"}`` -> the text if it is for ``site_id`` (Hermes default: "default")."""
    value = maybe_json(decode_text(payload, max_bytes))
    if not isinstance(value, dict):
        raise InboundError("expected a JSON object with text and siteId")
    target = value.get("siteId", "default")
    if not isinstance(target, str):
        raise InboundError("siteId must be a string")
    if target != site_id:
        return None
    return parse_say(json.dumps({"text": value.get("text")}).encode(), max_bytes)

