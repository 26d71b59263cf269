"""MQTT link that loses nothing: durable ordered delivery, supervised reconnects, validated inbound, HA discovery.

Shape (why):
- Every outgoing fact (intent, device command, state, transcript) goes through the on-disk ``Outbox`` first, so a
  broker outage of any length or a power cut loses nothing. ``publish`` does not write it on the caller's thread
  (the audio loop, a turn's responder): it hands it to an ``OutboxWriter``, whose thread fsyncs it into the outbox in
  order a few ms later. So a message is durable once the writer has written it, not at the return of ``publish``;
  ``stop()`` waits for the writer before anything else. One sender delivers the outbox IN ORDER with up to
  ``inflight_window`` messages ahead of their PUBACK and acks each only after the broker's PUBACK. After a reconnect it
  starts again from the oldest unacknowledged message, so a message may arrive twice (QoS 1 semantics); every JSON
  payload carries an ``"id"`` so consumers drop duplicates.
- A supervisor thread owns the connection: it makes a fresh paho client per connection attempt (``mqtt_client``:
  paho's loop thread for the network I/O, paho's own auto-reconnect off) and retries forever with exponential
  backoff and jitter. A fresh client per connection means paho never retransmits a previous connection's messages
  behind our back, which would break the ordering the outbox guarantees.
- Connection-scoped messages (availability, HA discovery, wake arbitration) are re-derived on each connect and are
  published directly, not through the outbox: a stale "online" replayed after an outage would be a lie.
- Inbound payloads are validated (size, UTF-8, JSON shape, ranges) by pure functions (``mqtt_inbound``); invalid
  ones are logged with the reason and ignored. Valid ones are handed to the engine's callbacks on a dispatcher thread
  with a bounded queue (``mqtt_router``), so a slow callback never stalls the network loop (and with it the PUBACKs).

Elsewhere: topics in ``mqtt_topics``, wake arbitration in ``arbitration``, HA discovery and the Hermes intent payload
in ``ha_discovery``, the outbox and its writer in ``outbox`` / ``outbox_writer``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from . import __version__
from .arbitration import WakeArbiter
from .config import REPO_ROOT, MqttSettings, Settings, SiteSettings, mqtt_password
from .errors import MqttError
from .ha_discovery import DEFAULT_INTENT_NAMES, discovery_payload, hermes_intent_payload
from .intent import DeviceCommand, IntentCall
from .mqtt_client import Conn, backoff_delay, close_client, connect_client, make_client, send_outbox
from .mqtt_router import HERMES_SAY, InboundRouter
from .mqtt_topics import Topics, check_publish_topic, topic_level
from .outbox import Outbox, OutMessage
from .outbox_writer import OutboxWriter

log = logging.getLogger(__name__)

HA_STATE_MAX_CHARS = 255  # Home Assistant rejects sensor states longer than this


def _noop(*_args: Any) -> None:
    return None


# =========================================================================================== the link


@dataclass
class LinkStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    delivered: int = 0  # PUBACKs for outbox messages
    rejected_by_broker: int = 0  # MQTT 5 PUBACK with a failure reason (acked anyway: a retry would not help)
    inbound_ok: int = 0
    inbound_rejected: int = 0
    inbound_dropped: int = 0  # callbacks dropped because the engine did not keep up
    callback_errors: int = 0
    last_connected_at: float | None = None  # monotonic


class MqttLink:
    """The device's MQTT connection. Construct, set the ``on_*`` callbacks, ``start()``, publish, ``stop()``.

    Callbacks (plain attributes, default no-ops, run on a dispatcher thread; exceptions are logged):
    ``on_say(text)``, ``on_mute(bool)``, ``on_sensitivity(float)``, ``on_timer(dict)``, and
    ``on_state_change(state)`` with state one of "connecting", "connected", "disconnected", "stopped".

    ``outbox`` replaces the one made from the settings (a test passes one with a slow fsync).
    """

    def __init__(self, mqtt_settings: MqttSettings, site_settings: SiteSettings, *, password: str | None = None,
                 outbox_dir: str | Path | None = None, intent_names: Sequence[str] | None = None,
                 sw_version: str = __version__, outbox: Outbox | None = None) -> None:
        self._m = mqtt_settings
        self._site = site_settings
        self.__password = password  # name-mangled and never in repr/logs
        self.topics = Topics(mqtt_settings.topic_prefix, site_settings.site_id, mqtt_settings.discovery_prefix)
        self.site_id = site_settings.site_id
        self._client_id = mqtt_settings.client_id or f"edge-agent-{site_settings.site_id}"
        self._sw_version = sw_version
        self._intent_names = list(intent_names or DEFAULT_INTENT_NAMES)
        outbox_path: Path | None = None
        if mqtt_settings.enabled:
            base = Path(outbox_dir) if outbox_dir is not None else Path(mqtt_settings.outbox_dir).expanduser()
            if not base.is_absolute():
                base = REPO_ROOT / base
            outbox_path = base / topic_level(site_settings.site_id)
        self.outbox = outbox if outbox is not None else Outbox(
            outbox_path, max_messages=mqtt_settings.outbox_max_messages, max_bytes=mqtt_settings.outbox_max_bytes)
        self._wake = threading.Event()  # new message, PUBACK, disconnect or stop: the sender has work
        self._writer = OutboxWriter(self.outbox, max_queued=mqtt_settings.outbox_max_messages,
                                    on_written=self._wake.set, name=f"mqtt-outbox-{site_settings.site_id}")
        self.stats = LinkStats()
        self.arbiter = WakeArbiter(self, mqtt_settings.arbitration_window_s)

        self.on_say: Callable[[str], None] = _noop
        self.on_mute: Callable[[bool], None] = _noop
        self.on_sensitivity: Callable[[float], None] = _noop
        self.on_timer: Callable[[dict[str, Any]], None] = _noop
        # say with "preannounce", an automation's question, a conversation it starts (edge_agent/ask.py)
        self.on_announce: Callable[[str, bool], None] = lambda text, _pre: self.on_say(text)
        self.on_ask: Callable[[Any], None] = _noop
        self.on_conversation: Callable[[Any], None] = _noop
        self.on_state_change: Callable[[str], None] = _noop

        self._state = "stopped"
        self._stop_evt = threading.Event()
        self._drain_deadline = 0.0
        self._conn: Conn | None = None
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._inbound = InboundRouter(self)
        self._last_failure: str | None = None
        self._last_failure_log = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> MqttLink:
        """The usual construction: password from inline/env/file (ConfigError if unreadable), outbox under the
        configured directory (relative paths from the repository root)."""
        return cls(settings.mqtt, settings.site, password=mqtt_password(settings.mqtt),
                   outbox_dir=settings.path(settings.mqtt.outbox_dir), **kw)

    # ------------------------------------------------------------------ lifecycle
    def __repr__(self) -> str:
        return (f"MqttLink(site_id={self.site_id!r}, broker={self._m.host}:{self._m.port}, "
                f"user={self._m.username!r}, tls={self._m.tls}, state={self._state!r}, pending={self.pending})")

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def settings(self) -> MqttSettings:
        return self._m

    @property
    def state(self) -> str:
        return self._state

    @property
    def pending(self) -> int:
        """Messages accepted but not yet acknowledged by the broker ("I'll send that when the hub is back"), including
        those the writer has not yet put on disk."""
        return len(self.outbox) + len(self._writer)

    def start(self) -> None:
        """Connect in the background and keep reconnecting until ``stop()``; never raises for network trouble
        (only MqttError for a missing CA file, a configuration mistake that no retry would fix)."""
        if not self._m.enabled:
            log.info("mqtt: disabled (mqtt.enabled: false); nothing will be published")
            return
        if self._thread is not None:
            return
        if self._m.tls and self._m.ca_file and not Path(self._m.ca_file).expanduser().is_file():
            raise MqttError(f"mqtt.ca_file: {self._m.ca_file} does not exist",
                            fix="set mqtt.ca_file to the broker's CA certificate (PEM), or null for the system store")
        self._stop_evt.clear()
        self._writer.open()
        self._inbound.start(f"mqtt-dispatch-{self.site_id}")
        self._thread = threading.Thread(target=self._supervise, name=f"mqtt-{self.site_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ordered shutdown: put every published message on disk (the writer drains first, within ``timeout``; from
        then on ``publish`` writes before it returns), deliver what can be delivered in the rest of ``timeout`` (if
        connected), publish availability ``offline``, disconnect, join the threads. Undelivered messages stay in
        the outbox for the next start."""
        self._drain_deadline = time.monotonic() + max(0.0, timeout)
        self._writer.close(timeout)  # meanwhile the sender keeps delivering what is already on disk
        thread = self._thread
        if thread is None:
            return
        self._stop_evt.set()
        self._wake.set()
        thread.join(timeout + self._m.connect_timeout_s + 2.0)
        if thread.is_alive():
            log.warning("mqtt: the connection thread did not stop in time")
        self._inbound.stop(2.0)
        self._thread = None
        if self.pending:
            log.info("mqtt: stopped with %d undelivered message(s) kept in %s", self.pending,
                     self.outbox.directory or "memory")

    def wait_connected(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self.connected and time.monotonic() < end:
            time.sleep(0.01)
        return self.connected

    def wait_delivered(self, timeout: float) -> bool:
        """Block until the outbox is empty (every message PUBACKed) or ``timeout``; True if empty."""
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            time.sleep(0.01)
        return not self.pending

    # ------------------------------------------------------------------ outgoing (through the outbox)
    def _new_id(self) -> str:
        return f"{self.site_id}-{uuid.uuid4().hex[:16]}"

    def publish(self, topic: str, payload: dict[str, Any] | str | bytes, qos: int | None = None,
                retain: bool = False, *, critical: bool = True, coalesce: bool = False) -> str:
        """Queue one message for durable delivery and return its msg_id, without waiting for the disk (the writer
        thread fsyncs it into the outbox a few ms later). A dict payload becomes JSON with ``"id": msg_id``.

        ``critical=False`` marks state updates that may be dropped first when the outbox is full;
        ``coalesce=True`` (retained states) replaces an older undelivered message on the same topic.
        """
        check_publish_topic(topic)
        msg_id = self._new_id()
        body: str | bytes
        if isinstance(payload, dict):
            body = json.dumps({**payload, "id": msg_id}, ensure_ascii=False, default=str)
        else:
            body = payload
        if not self._m.enabled:
            return msg_id
        # Returns at once; the writer thread fsyncs it into the outbox (in order) and wakes the sender.
        self._writer.submit(OutMessage(topic=topic, payload=body, qos=self._m.qos if qos is None else qos,
                                       retain=retain, critical=critical, coalesce=coalesce, msg_id=msg_id))
        return msg_id

    def publish_intent(self, call: IntentCall, *, turn_id: str, text: str, commands: Sequence[DeviceCommand],
                       dry_run: bool = False) -> str:
        """Publish the intent JSON, then each device command (unless dry run), then the HA event and the Hermes
        mirror. Returns the intent message's id. A command with an unusable topic is logged and skipped."""
        dry = dry_run or self._m.dry_run
        msg_id = self.publish(self.topics.intent(call.name), {
            "intent": call.name, "slots": call.slots, "entities": call.entities, "text": text,
            "site_id": self.site_id, "turn_id": turn_id, "ts": round(time.time(), 3), "source": call.source,
            "dry_run": dry,
        }, critical=True)
        if not dry:
            for cmd in commands:
                try:
                    payload: dict[str, Any] | str = cmd.payload
                    if getattr(cmd, "with_ids", False):
                        payload = {**json.loads(cmd.payload), "turn_id": turn_id}  # publish() adds "id"
                    self.publish(cmd.topic, payload, retain=cmd.retain, critical=True)
                except MqttError as e:
                    log.error("mqtt: command for %s not sent: %s", cmd.entity, e.message)
        self._ensure_event_type(call.name)
        self.publish(self.topics.event, {"event_type": call.name, "text": text, "slots": call.slots,
                                         "entities": call.entities, "turn_id": turn_id}, critical=False)
        if self._m.hermes:
            self.publish(f"hermes/intent/{topic_level(call.name)}",
                         hermes_intent_payload(call, text=text, site_id=self.site_id, session_id=turn_id),
                         critical=True)
        return msg_id

    def publish_state(self, state: str) -> str:
        """Retained assistant state (idle, listening, thinking, speaking, ...) for the HA sensor."""
        return self.publish(self.topics.state, state[:HA_STATE_MAX_CHARS], retain=True, critical=False,
                            coalesce=True)

    def publish_transcript(self, text: str, *, session_id: str | None = None) -> str:
        """Retained last transcript (cut to HA's 255-character state limit); Hermes ``asr/textCaptured`` too."""
        msg_id = self.publish(self.topics.last_transcript, text[:HA_STATE_MAX_CHARS], retain=True, critical=False,
                              coalesce=True)
        if self._m.hermes:
            self.publish("hermes/asr/textCaptured", {"text": text, "likelihood": 1.0, "seconds": 0.0,
                                                     "siteId": self.site_id, "sessionId": session_id},
                         critical=False)
        return msg_id

    def publish_mute(self, muted: bool) -> str:
        return self.publish(self.topics.mute, "ON" if muted else "OFF", retain=True, critical=False, coalesce=True)

    def publish_sensitivity(self, value: float) -> str:
        return self.publish(self.topics.sensitivity, f"{float(value):.3g}", retain=True, critical=False,
                            coalesce=True)

    def publish_hotword(self, model_id: str, score: float, *, session_id: str | None = None) -> str | None:
        """Hermes ``hotword/<id>/detected`` (only with mqtt.hermes)."""
        if not self._m.hermes:
            return None
        return self.publish(f"hermes/hotword/{topic_level(model_id)}/detected", {
            "modelId": model_id, "modelVersion": "", "modelType": "universal", "currentSensitivity": score,
            "siteId": self.site_id, "sessionId": session_id, "sendAudioCaptured": None}, critical=False)

    def subscribe(self, topic_filter: str, callback: Callable[[str, str], None]) -> None:
        """Also deliver messages matching ``topic_filter`` (wildcards allowed), e.g. an entity's state topic, as
        ``callback(topic, text)`` on the dispatcher thread. Payloads over the size limit or not UTF-8 are ignored
        (logged). Kept across reconnects; may be called before or after ``start()``."""
        if not topic_filter or "\0" in topic_filter:
            raise MqttError(f"cannot subscribe to {topic_filter!r}", fix="give a topic such as zigbee2mqtt/lamp")
        self._inbound.add(topic_filter, callback)
        conn = self._conn
        if conn is not None and self.connected:
            conn.client.subscribe(topic_filter, 1)

    def publish_direct(self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Publish now, bypassing the outbox (connection-scoped messages only); False when not connected."""
        conn = self._conn
        if conn is None or not self.connected:
            return False
        info = conn.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _ensure_event_type(self, name: str) -> None:
        if name not in self._intent_names:
            self._intent_names.append(name)
            if self._m.discovery:
                self.publish_discovery()

    def publish_discovery(self) -> None:
        """Send the Home Assistant device discovery config (retained; on each connect and when HA comes online)."""
        if not self._m.discovery:
            return
        body = json.dumps(discovery_payload(self.topics, self._site, sw_version=self._sw_version,
                                            intent_names=self._intent_names, qos=self._m.qos))
        self.publish_direct(self.topics.discovery_config, body, qos=1, retain=True)

    # ------------------------------------------------------------------ supervisor
    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        log.debug("mqtt: %s", state)
        try:
            self.on_state_change(state)
        except Exception:  # noqa: BLE001 - an engine callback must never take the link down
            self.stats.callback_errors += 1
            log.exception("mqtt: on_state_change callback failed")

    def _supervise(self) -> None:
        attempt = 0
        while not self._stop_evt.is_set():
            self._set_state("connecting")
            try:
                conn = make_client(self._m, client_id=self._client_id, password=self.__password,
                                   will_topic=self.topics.availability, on_event=self._wake.set,
                                   on_message=self._inbound.on_message)
                failure = connect_client(conn, self._m, self._stop_evt)
                if failure is not None:
                    self._note_failure(failure)
                    conn = None
            except Exception as e:  # noqa: BLE001 - e.g. a bad TLS file: log, back off, retry (never crash)
                self._note_failure(f"{type(e).__name__}: {e}")
                conn = None
            if conn is None:
                self.stats.connect_failures += 1
                self._set_state("disconnected")
                self._stop_evt.wait(backoff_delay(attempt, self._m.reconnect_min_s, self._m.reconnect_max_s))
                attempt += 1
                continue
            attempt = 0
            self.stats.connects += 1
            self.stats.last_connected_at = time.monotonic()
            if self._last_failure is not None:
                log.info("mqtt: connected to %s:%d again; %d message(s) to deliver", self._m.host, self._m.port,
                         self.pending)
            else:
                log.info("mqtt: connected to %s:%d as %s", self._m.host, self._m.port, self._client_id)
            self._last_failure = None
            with self._conn_lock:
                self._conn = conn
            self._set_state("connected")
            try:
                self._on_connected(conn)
                send_outbox(conn, self.outbox, window=self._m.inflight_window, wake=self._wake, stats=self.stats,
                            done=lambda: self._stop_evt.is_set() and (
                                not self.pending or time.monotonic() >= self._drain_deadline))
            except Exception:  # noqa: BLE001 - a bug here must mean a reconnect, not a dead link
                log.exception("mqtt: unexpected error in the sender; reconnecting")
            finally:
                close_client(conn, offline_topic=self.topics.availability if self._stop_evt.is_set() else None)
                with self._conn_lock:
                    self._conn = None
                if not self._stop_evt.is_set():
                    self.stats.disconnects += 1
                    self._note_failure("connection lost")
                    self._set_state("disconnected")
        self._set_state("stopped")

    def _note_failure(self, reason: str) -> None:
        """Log a connection problem once when it starts or changes, then at most once a minute."""
        now = time.monotonic()
        if reason != self._last_failure or now - self._last_failure_log > 60.0:
            log.warning("mqtt: broker %s:%d: %s; retrying with backoff (%d message(s) waiting)", self._m.host,
                        self._m.port, reason, self.pending)
            self._last_failure_log = now
        else:
            log.debug("mqtt: broker %s:%d: %s", self._m.host, self._m.port, reason)
        self._last_failure = reason

    def _on_connected(self, conn: Conn) -> None:
        t = self.topics
        subs = [(t.say, 1), (t.mute_set, 1), (t.sensitivity_set, 1), (t.timer_set, 1), (t.ask, 1),
                (t.conversation_start, 1)]
        if self._m.discovery:
            subs.append((t.ha_status, 1))
        if self._m.hermes:
            subs.append((HERMES_SAY, 1))
        if self._m.arbitration_window_s > 0:
            subs.append((t.arbitration, 0))
        subs += [(f, 1) for f in self._inbound.filters() if f not in {s for s, _q in subs}]
        conn.client.subscribe(subs)
        self.publish_discovery()
        conn.client.publish(t.availability, "online", qos=1, retain=True)
