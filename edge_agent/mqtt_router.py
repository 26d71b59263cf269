"""Inbound MQTT messages: validate and route each one, then run the engine's callback on a dispatcher thread.

Runs on paho's network thread, so it never raises and never blocks: a valid command is queued (bounded; the oldest is
dropped when the engine does not keep up) and a dispatcher thread calls ``link.on_say`` / ``on_mute`` / ... (looked
up when it runs, so the engine may set them after ``start()``). An invalid payload is counted and logged with the
reason, at most ``REJECT_LOGS_PER_MIN`` warnings a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from .arbitration import parse_wake_claim
from .ask import parse_ask, parse_conversation_start
from .mqtt_inbound import (
    InboundError,
    decode_text,
    parse_hermes_say,
    parse_say_request,
    parse_sensitivity,
    parse_switch,
    parse_timer,
)

if TYPE_CHECKING:
    from .mqtt import MqttLink

log = logging.getLogger(__name__)

INBOUND_QUEUE_LEN = 64
REJECT_LOGS_PER_MIN = 20
HERMES_SAY = "hermes/tts/say"


class InboundRouter:
    """The link's inbound side: extra subscriptions, topic routing, the bounded callback queue and its thread."""

    def __init__(self, link: MqttLink) -> None:
        self._link = link
        self._extra_subs: dict[str, list[Callable[[str, str], None]]] = {}
        self._subs_lock = threading.Lock()
        self._inbox: deque[tuple[str | Callable[..., None], tuple[Any, ...]]] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_evt = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reject_window_start = 0.0
        self._reject_logged = 0

    # ------------------------------------------------------------------ subscriptions
    def add(self, topic_filter: str, callback: Callable[[str, str], None]) -> None:
        with self._subs_lock:
            self._extra_subs.setdefault(topic_filter, []).append(callback)

    def filters(self) -> list[str]:
        with self._subs_lock:
            return list(self._extra_subs)

    # ------------------------------------------------------------------ routing (paho's network thread)
    def on_message(self, topic: str, payload: bytes) -> None:
        """Validate and route one inbound message; never raises."""
        link = self._link
        t, limit, stats = link.topics, link.settings.max_inbound_bytes, link.stats
        try:
            if topic == t.say:
                text, preannounce = parse_say_request(payload, limit)
                if preannounce is None:
                    self.dispatch("on_say", text)
                else:
                    self.dispatch("on_announce", text, preannounce)
            elif topic == t.ask:
                self.dispatch("on_ask", parse_ask(payload, limit))
            elif topic == t.conversation_start:
                self.dispatch("on_conversation", parse_conversation_start(payload, limit))
            elif topic == t.mute_set:
                muted = parse_switch(payload, limit)
                self.dispatch("on_mute", muted)
                link.publish_mute(muted)
            elif topic == t.sensitivity_set:
                value = parse_sensitivity(payload, limit)
                self.dispatch("on_sensitivity", value)
                link.publish_sensitivity(value)
            elif topic == t.timer_set:
                self.dispatch("on_timer", parse_timer(payload, limit))
            elif topic == t.ha_status:
                status = decode_text(payload, limit).strip().lower()
                if status == "online":
                    log.info("mqtt: Home Assistant came online; re-sending discovery")
                    link.publish_discovery()
                stats.inbound_ok += 1
            elif topic == t.arbitration:
                claim = parse_wake_claim(payload, limit)
                if claim.site_id != link.site_id:
                    link.arbiter.receive(claim)
            elif topic == HERMES_SAY and link.settings.hermes:
                text = parse_hermes_say(payload, limit, link.site_id)
                if text is not None:
                    self.dispatch("on_say", text)
            else:
                with self._subs_lock:
                    callbacks = [cb for f, cbs in self._extra_subs.items() if mqtt.topic_matches_sub(f, topic)
                                 for cb in cbs]
                if not callbacks:
                    log.debug("mqtt: message on unexpected topic %s ignored", topic)
                    return
                text = decode_text(payload, limit)
                for cb in callbacks:
                    self.dispatch(cb, topic, text)
        except InboundError as e:
            stats.inbound_rejected += 1
            now = time.monotonic()
            if now - self._reject_window_start > 60.0:
                self._reject_window_start, self._reject_logged = now, 0
            self._reject_logged += 1
            if self._reject_logged <= REJECT_LOGS_PER_MIN:  # a flood of junk must not flood the log too
                log.warning("mqtt: ignored message on %s: %s", topic[:200], e)
            else:
                log.debug("mqtt: ignored message on %s: %s", topic[:200], e)
        except Exception:  # noqa: BLE001 - never let a payload take the network thread down
            stats.inbound_rejected += 1
            log.exception("mqtt: error handling a message on %s", topic)

    def dispatch(self, callback: str | Callable[..., None], *args: Any) -> None:
        """Queue a callback (an ``on_*`` attribute name of the link, looked up when it runs, or a function)."""
        stats = self._link.stats
        with self._inbox_lock:
            if len(self._inbox) >= INBOUND_QUEUE_LEN:
                self._inbox.popleft()
                stats.inbound_dropped += 1
                log.warning("mqtt: inbound queue full; dropped the oldest command (%d so far)", stats.inbound_dropped)
            self._inbox.append((callback, args))
        stats.inbound_ok += 1
        self._inbox_evt.set()

    # ------------------------------------------------------------------ the dispatcher thread
    def start(self, name: str) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Run what is queued, then end the thread (call after the network side has stopped)."""
        self._stopping.set()
        self._inbox_evt.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            self._inbox_evt.wait(0.5)
            self._inbox_evt.clear()
            while True:
                with self._inbox_lock:
                    if not self._inbox:
                        break
                    callback, args = self._inbox.popleft()
                fn = getattr(self._link, callback) if isinstance(callback, str) else callback
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001 - an engine callback must never take the link down
                    self._link.stats.callback_errors += 1
                    log.exception("mqtt: %s callback failed for %r",
                                  callback if isinstance(callback, str) else getattr(fn, "__name__", "a"), args)
            if self._stopping.is_set():
                return
