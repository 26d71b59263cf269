"""One paho-mqtt client per connection attempt: make it, connect it (waiting for CONNACK), deliver the outbox over
it in order (``send_outbox``), close it cleanly.

Why a fresh client each time: paho would otherwise retransmit a previous connection's messages behind our back,
which would break the ordering the outbox guarantees. Callbacks of an old client only touch their own ``Conn``.
The supervisor that retries with ``backoff_delay`` lives in ``mqtt.MqttLink``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from .config import MqttSettings
from .outbox import Outbox

log = logging.getLogger("edge_agent.mqtt")
paho_log = logging.getLogger("edge_agent.mqtt.paho")
# paho logs this at ERROR when its loop runs once more after our own clean disconnect; it is not an error here.
paho_log.addFilter(lambda record: not str(record.msg).startswith("Client is not connected"))


def backoff_delay(attempt: int, min_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: attempt 0 -> ~min_s, doubling up to max_s (jitter 50..100 %), so many
    devices do not reconnect to a restarted broker in lockstep."""
    base = min(max_s, min_s * (2.0 ** min(attempt, 30)))
    return base * (0.5 + 0.5 * rand())


@dataclass
class Conn:
    """State of one connection attempt."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    acks: deque[tuple[int, Any]] = field(default_factory=deque)  # (mid, reason) of PUBACKs, for the sender


def make_client(m: MqttSettings, *, client_id: str, password: str | None, will_topic: str,
                on_event: Callable[[], None], on_message: Callable[[str, bytes], None]) -> Conn:
    """A configured client (auth, TLS, last will ``offline`` on ``will_topic``). ``on_event`` is called on a PUBACK
    or a disconnect (the sender has work); ``on_message(topic, payload)`` on paho's network thread."""
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol, "reconnect_on_failure": False}
    if protocol == mqtt.MQTTv311:
        kwargs["clean_session"] = True
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    conn = Conn(client)
    client.enable_logger(paho_log)
    client.connect_timeout = m.connect_timeout_s
    if m.username is not None:
        client.username_pw_set(m.username, password)
    if m.tls:
        client.tls_set(ca_certs=str(Path(m.ca_file).expanduser()) if m.ca_file else None)
    client.will_set(will_topic, "offline", qos=1, retain=True)
    client.max_inflight_messages_set(max(m.inflight_window, 1) + 4)  # + room for connection-scoped messages

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            conn.failure = f"the broker refused the connection: {reason}"
        conn.connack.set()

    def on_disconnect(_c: Any, _u: Any, _flags: Any, _reason: Any, _props: Any) -> None:
        conn.closed.set()
        on_event()

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        conn.acks.append((mid, reason))  # handled by the sender thread: paho holds its own lock here
        on_event()

    def on_msg(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        on_message(msg.topic, bytes(msg.payload))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    client.on_message = on_msg
    return conn


def connect_client(conn: Conn, m: MqttSettings, stop: threading.Event) -> str | None:
    """Connect and wait for the CONNACK; None when connected, else why not (the client is then closed)."""
    client = conn.client
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except OSError as e:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError is an OSError)
        close_client(conn, offline_topic=None)
        return e.strerror or str(e) or type(e).__name__
    client.loop_start()
    end = time.monotonic() + m.connect_timeout_s
    while not conn.connack.is_set() and not conn.closed.is_set() and time.monotonic() < end:
        if stop.is_set():
            break
        conn.connack.wait(0.02)
    if conn.connack.is_set() and conn.failure is None and not conn.closed.is_set():
        return None
    reason = conn.failure or ("the connection closed before CONNACK" if conn.closed.is_set()
                              else f"no CONNACK within {m.connect_timeout_s:g} s")
    if "authori" in reason.lower() or "password" in reason.lower():
        reason += " (fix: check mqtt.username and the password from mqtt.password_env / mqtt.password_file)"
    close_client(conn, offline_topic=None)
    return reason


def close_client(conn: Conn, *, offline_topic: str | None) -> None:
    """Disconnect and free the client. With ``offline_topic`` (a clean stop) publish availability ``offline``
    there first: a clean DISCONNECT suppresses the last will."""
    client = conn.client
    try:
        if offline_topic is not None and not conn.closed.is_set():
            info = client.publish(offline_topic, "offline", qos=1, retain=True)
            info.wait_for_publish(timeout=1.0)
        client.disconnect()
    except (OSError, RuntimeError, ValueError):
        pass
    client.loop_stop()
    try:
        if client.socket() is not None:
            client.socket().close()  # the loop thread is gone; make sure no half-open socket lingers
    except OSError:
        pass
    # Break the client <-> callback-closure cycle so the client is freed (and paho closes its wake-up socket
    # pair) now rather than at some later garbage collection: no file descriptors pile up over many outages.
    client.on_connect = client.on_disconnect = client.on_publish = client.on_message = None


def send_outbox(conn: Conn, outbox: Outbox, *, window: int, wake: threading.Event, stats: Any,
                done: Callable[[], bool]) -> None:
    """Deliver the outbox in order on this connection, up to ``window`` unacknowledged; ack each on its PUBACK.

    Returns when the connection closes or ``done()`` (a stop, after draining). ``wake`` is set on every new message,
    PUBACK and disconnect; ``stats`` counts ``delivered`` and ``rejected_by_broker``."""
    client = conn.client
    window = max(1, window)
    inflight: dict[int, str] = {}  # mid -> msg_id
    sent: set[str] = set()
    while not conn.closed.is_set():
        wake.clear()
        while conn.acks:
            mid, reason = conn.acks.popleft()
            msg_id = inflight.pop(mid, None)
            if msg_id is None:
                continue  # a connection-scoped message (availability, discovery)
            sent.discard(msg_id)
            if getattr(reason, "is_failure", False):
                stats.rejected_by_broker += 1
                log.warning("mqtt: the broker rejected message %s (%s); not retrying", msg_id, reason)
            if outbox.ack(msg_id):
                stats.delivered += 1
        if done():
            return
        if len(inflight) < window:
            for msg in outbox.peek_many(window):
                if len(inflight) >= window:
                    break
                if msg.msg_id in sent:
                    continue
                info = client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    conn.closed.wait(0.1)  # the connection is going down; the supervisor will reconnect
                    break
                inflight[info.mid] = msg.msg_id
                sent.add(msg.msg_id)
        wake.wait(0.5)
