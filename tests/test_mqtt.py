"""MqttLink against a REAL Mosquitto (tests/broker.py): delivery in order through outages and restarts, last will,
HA discovery, validated inbound, auth without leaking the password, wake arbitration between two rooms.
Pure logic (payload validation, arbitration, backoff, discovery shape) is unit-tested with plain values first."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent.arbitration import WakeClaim, arbitrate, parse_wake_claim
from edge_agent.config import SiteSettings, load_settings
from edge_agent.errors import MqttError
from edge_agent.ha_discovery import discovery_payload, hermes_intent_payload
from edge_agent.intent import DeviceCommand, IntentCall
from edge_agent.mqtt import MqttLink
from edge_agent.mqtt_client import backoff_delay
from edge_agent.mqtt_inbound import (
    InboundError,
    parse_hermes_say,
    parse_say,
    parse_sensitivity,
    parse_switch,
    parse_timer,
)
from edge_agent.mqtt_topics import Topics, check_publish_topic
from edge_agent.outbox import Outbox

from .broker import Broker, make_tls_files

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 16384


# =========================================================================================== pure logic


@pytest.mark.parametrize("payload,expected", [
    (b"turn it down", "turn it down"),
    (b'{"text": "hello"}', "hello"),
    (b'"quoted"', "quoted"),
    ("caf\u00e9 ouvert".encode(), "caf\u00e9 ouvert"),
    (b"  padded \n", "padded"),
])
def test_parse_say_accepts(payload: bytes, expected: str) -> None:
    assert parse_say(payload, LIMIT) == expected


@pytest.mark.parametrize("payload,reason", [
    (b"\xff\xfe\x00\x01", "not UTF-8"),
    (b"x" * (LIMIT + 1), "exceeds"),
    (b'{"text": 5}', "must be a string"),
    (b'{"txt": "hi"}', 'no "text"'),
    (b"[1, 2]", "must be a string"),
    (b"   ", "empty"),
    (b'{"text": ""}', "empty"),
    (b'{"text": "a', "does not parse"),
    (b"bell\x07", "control characters"),
])
def test_parse_say_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(InboundError, match=reason):
        parse_say(payload, LIMIT)


def test_parse_switch() -> None:
    assert parse_switch(b"ON", LIMIT) is True and parse_switch(b"off", LIMIT) is False
    assert parse_switch(b" true\n", LIMIT) is True
    for bad in (b"MAYBE", b"", b'{"state": "ON"}', b"\xff"):
        with pytest.raises(InboundError):
            parse_switch(bad, LIMIT)


def test_parse_sensitivity() -> None:
    assert parse_sensitivity(b"0.7", LIMIT) == 0.7
    assert parse_sensitivity(b"0", LIMIT) == 0.0 and parse_sensitivity(b"1", LIMIT) == 1.0
    assert parse_sensitivity(b'{"value": 0.25}', LIMIT) == 0.25
    for bad in (b"1.5", b"-0.1", b"nan", b"inf", b"true", b'"abc"', b'{"value": 2}', b"", b"[0.5]", b"1e400"):
        with pytest.raises(InboundError):
            parse_sensitivity(bad, LIMIT)


def test_parse_timer() -> None:
    assert parse_timer(b'{"action": "start", "minutes": 5, "name": "pasta"}', LIMIT) == {
        "action": "start", "seconds": 300.0, "name": "pasta"}
    assert parse_timer(b'{"action": "cancel", "timer_id": "t1", "junk": [1]}', LIMIT) == {
        "action": "cancel", "timer_id": "t1"}
    bad = [b"[]", b'{"action": 5}', b'{"action": "start", "seconds": -3}', b'{"action": "start"}',
           b'{"action": "start", "minutes": "5"}', b'{"action": "explode"}', b'{"action": "start", "hours": 100}',
           b'{"action": "start", "seconds": true}', b'{"action": "cancel", "name": 7}', b"start 5 minutes"]
    for payload in bad:
        with pytest.raises(InboundError):
            parse_timer(payload, LIMIT)


def test_parse_hermes_say_only_for_our_site() -> None:
    assert parse_hermes_say(b'{"text": "hi", "siteId": "kitchen"}', LIMIT, "kitchen") == "hi"
    assert parse_hermes_say(b'{"text": "hi", "siteId": "attic"}', LIMIT, "kitchen") is None
    assert parse_hermes_say(b'{"text": "hi"}', LIMIT, "default") == "hi"
    with pytest.raises(InboundError):
        parse_hermes_say(b'{"text": 3, "siteId": "kitchen"}', LIMIT, "kitchen")


def test_arbitrate_best_score_wins_ties_by_site_id() -> None:
    me = WakeClaim("kitchen", 0.80, received=10.00)
    assert arbitrate(me, [], 0.15)  # alone: answer
    assert not arbitrate(me, [WakeClaim("living", 0.90, received=10.05)], 0.15)
    assert arbitrate(me, [WakeClaim("living", 0.70, received=10.05)], 0.15)
    # Equal scores: the smaller site_id answers, on both devices.
    assert arbitrate(me, [WakeClaim("living", 0.80, received=10.01)], 0.15)
    assert not arbitrate(WakeClaim("living", 0.80, received=10.0), [WakeClaim("kitchen", 0.80, received=9.99)],
                         0.15)
    # Claims outside the window belong to another wake event.
    assert arbitrate(me, [WakeClaim("living", 0.99, received=9.5), WakeClaim("living", 0.99, received=10.5)], 0.15)
    # Our own echo does not count against us.
    assert arbitrate(me, [WakeClaim("kitchen", 0.99, received=10.0)], 0.15)
    # Three rooms: exactly one winner whichever device computes it.
    claims = [WakeClaim("a", 0.6, received=1.0), WakeClaim("b", 0.9, received=1.02), WakeClaim("c", 0.9, received=1.04)]
    winners = [c.site_id for c in claims if arbitrate(c, claims, 0.15)]
    assert winners == ["b"]


def test_parse_wake_claim() -> None:
    c = parse_wake_claim(b'{"site_id": "x", "score": 0.5, "t": 1.5}', LIMIT)
    assert (c.site_id, c.score, c.t) == ("x", 0.5, 1.5)
    for bad in (b'{"site_id": "", "score": 0.5}', b'{"site_id": "x", "score": 2}', b'{"site_id": "x"}', b"[]"):
        with pytest.raises(InboundError):
            parse_wake_claim(bad, LIMIT)


def test_backoff_grows_to_max_with_jitter() -> None:
    assert backoff_delay(0, 0.5, 10, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 10, rand=lambda: 1.0) == 4.0
    assert backoff_delay(50, 0.5, 10, rand=lambda: 1.0) == 10.0
    assert backoff_delay(50, 0.5, 10, rand=lambda: 0.0) == 5.0


def test_check_publish_topic() -> None:
    check_publish_topic("zigbee2mqtt/kitchen/set")
    for bad in ("", "a/+/b", "a/#", "a\0b"):
        with pytest.raises(MqttError) as e:
            check_publish_topic(bad)
        assert e.value.fix


def test_discovery_payload_shape() -> None:
    t = Topics("edge-agent", "kitchen")
    d = discovery_payload(t, SiteSettings(site_id="kitchen", name="Kitchen", area="Kitchen"), sw_version="1.2",
                          intent_names=["HassTurnOn", "HassTurnOn", "HassLightSet"])
    check_discovery(d, t)
    assert d["cmps"]["intent"]["event_types"] == ["HassTurnOn", "HassLightSet"]
    assert d["dev"]["sa"] == "Kitchen"


def check_discovery(d: dict[str, Any], t: Topics) -> None:
    """What Home Assistant's device-based discovery needs: dev (ids, name), o (name), cmps with platform p and
    unique_id; state/command topics; availability on every component."""
    assert set(d) >= {"dev", "o", "cmps"}
    assert d["dev"]["ids"] == [t.device_id] and d["dev"]["name"] and {"mf", "mdl", "sw"} <= set(d["dev"])
    assert d["o"]["name"] == "edge-agent"
    platforms = sorted(c["p"] for c in d["cmps"].values())
    assert platforms == ["event", "event", "number", "sensor", "sensor", "switch"]
    assert d["cmps"]["answer"]["state_topic"] == t.ask_result  # answers to an automation's questions (ask.py)
    assert d["cmps"]["answer"]["event_types"] == ["answer", "no_match"]
    uids = [c["unique_id"] for c in d["cmps"].values()]
    assert len(set(uids)) == len(uids) and all(u.startswith(t.device_id) for u in uids)
    for c in d["cmps"].values():
        assert c["availability_topic"] == t.availability and c["name"] and c["state_topic"].startswith(t.base)
    sw = d["cmps"]["mute"]
    assert (sw["command_topic"], sw["state_topic"], sw["payload_on"], sw["payload_off"]) == (
        t.mute_set, t.mute, "ON", "OFF")
    num = d["cmps"]["sensitivity"]
    assert num["command_topic"] == t.sensitivity_set and num["min"] == 0 and num["max"] == 1
    assert d["cmps"]["intent"]["state_topic"] == t.event and "HassTurnOn" in d["cmps"]["intent"]["event_types"]
    assert d["cmps"]["state"]["state_topic"] == t.state
    assert d["cmps"]["last_transcript"]["state_topic"] == t.last_transcript


def test_hermes_intent_payload() -> None:
    call = IntentCall("HassLightSet", {"name": "lamp", "brightness": 40})
    h = hermes_intent_payload(call, text="lamp to 40", site_id="kitchen", session_id="turn-1")
    assert h["intent"] == {"intentName": "HassLightSet", "confidenceScore": 1.0}
    assert h["siteId"] == "kitchen" and h["sessionId"] == "turn-1" and h["input"] == "lamp to 40"
    slots = {s["slotName"]: s for s in h["slots"]}
    assert slots["brightness"]["value"] == {"kind": "Number", "value": 40} and slots["name"]["rawValue"] == "lamp"


# =========================================================================================== real broker helpers


def settings_for(broker: Broker, site: str = "kitchen", **mqtt: Any):
    data = {"site": {"site_id": site, "name": f"Edge {site}"},
            "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
                     "connect_timeout_s": 2.0, **mqtt}}
    return load_settings(data=data)


class Sub:
    """A test subscriber (real paho client) that records every message with its receive time."""

    def __init__(self, broker: Broker, topics: list[str], *, client_id: str | None = None, durable: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        self.msgs: list[tuple[str, bytes, bool, float]] = []
        self.cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sub-{uuid.uuid4().hex}",
                                  clean_session=not durable)
        self.client.reconnect_delay_set(0.05, 0.3)
        if username:
            self.client.username_pw_set(username, password)

        def on_connect(c, _u, _f, rc, _p):
            if not rc.is_failure:
                c.subscribe([(t, 1) for t in topics])

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "test subscriber could not subscribe"

    def _on_message(self, _c, _u, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool, float]]], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.msgs), timeout)

    def on(self, topic: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _r, _ts in self.msgs if t == topic]

    def clear(self) -> None:
        with self.cond:
            self.msgs.clear()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def links():
    """Every MqttLink made through this fixture is stopped at teardown, whatever the test did."""
    made: list[MqttLink] = []

    def make(settings, outbox_dir: Path, **kw: Any) -> MqttLink:
        link = MqttLink(settings.mqtt, settings.site, outbox_dir=outbox_dir, **kw)
        made.append(link)
        return link

    yield make
    for link in made:
        link.stop(timeout=0.5)


@pytest.fixture
def subs():
    made: list[Sub] = []

    def make(*a: Any, **k: Any) -> Sub:
        s = Sub(*a, **k)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def ids_and_ns(payloads: list[bytes]) -> list[tuple[str, int]]:
    out = []
    for p in payloads:
        d = json.loads(p)
        out.append((d["id"], d["n"]))
    return out


def dedupe(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    seen: set[str] = set()
    out = []
    for mid, n in pairs:
        if mid not in seen:
            seen.add(mid)
            out.append((mid, n))
    return out


# =========================================================================================== integration


def test_from_settings_resolves_password_and_outbox(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_TEST_PW2", "pw-from-env")
    s = load_settings(data={"site": {"site_id": "den"},
                            "mqtt": {"username": "u", "password_env": "EDGE_TEST_PW2", "outbox_dir": str(tmp_path)}})
    link = MqttLink.from_settings(s)
    assert link.outbox.directory == tmp_path / "den"
    assert link._MqttLink__password == "pw-from-env" and "pw-from-env" not in repr(link)
    link.publish_state("idle")
    assert link.pending == 1  # queued for the writer or already on disk: pending either way
    link.stop(timeout=5)  # never started: stop() still waits for the writer to put it on disk
    assert link.pending == 1 and len(list((tmp_path / "den").glob("*.json"))) == 1
    off = MqttLink.from_settings(load_settings(data={"mqtt": {"enabled": False, "outbox_dir": str(tmp_path / "o")}}))
    off.start()  # disabled: a no-op, and publishing queues nothing
    off.publish_state("idle")
    assert off.pending == 0 and not off.connected


def test_intent_publish_arrives_with_topic_and_json(broker, links, subs, tmp_path) -> None:
    s = settings_for(broker, hermes=True)
    sub = subs(broker, ["edge-agent/kitchen/#", "zigbee2mqtt/#", "hermes/#"])
    link = links(s, tmp_path / "ob")
    states: list[str] = []
    link.on_state_change = states.append
    link.start()
    assert link.wait_connected(5)
    call = IntentCall("HassTurnOn", {"name": "kitchen light"}, ["light.kitchen"], text="turn on the kitchen light")
    cmds = [DeviceCommand("light.kitchen", "zigbee2mqtt/kitchen_light/set", '{"state": "ON"}'),
            DeviceCommand("light.hall", "zigbee2mqtt/hall_light/set", '{"state": "ON"}'),
            DeviceCommand("light.sofa", "edge-agent/kitchen/command/light.sofa",
                          '{"entity_id": "light.sofa", "action": "turn_on"}', with_ids=True)]
    mid = link.publish_intent(call, turn_id="turn-7", text="turn on the kitchen light", commands=cmds)
    link.publish_state("thinking")
    link.publish_transcript("turn on the kitchen light")
    link.publish_hotword("hey_jarvis", 0.93)
    assert link.wait_delivered(5) and link.pending == 0
    assert sub.wait_for(lambda m: any(t == "hermes/hotword/hey_jarvis/detected" for t, *_ in m), 5)

    (raw,) = sub.on("edge-agent/kitchen/intent/HassTurnOn")
    d = json.loads(raw)
    assert set(d) >= {"id", "intent", "slots", "entities", "text", "site_id", "turn_id", "ts"}
    assert d["id"] == mid and mid.startswith("kitchen-")
    assert (d["intent"], d["slots"], d["entities"], d["site_id"], d["turn_id"]) == (
        "HassTurnOn", {"name": "kitchen light"}, ["light.kitchen"], "kitchen", "turn-7")
    assert abs(d["ts"] - time.time()) < 10
    # The intent first, then the commands in order, exactly as given (device payloads are not rewritten).
    order = [t for t, *_ in sub.msgs if not t.endswith("/availability") and not t.startswith("hermes/")]
    assert order[:4] == ["edge-agent/kitchen/intent/HassTurnOn", "zigbee2mqtt/kitchen_light/set",
                         "zigbee2mqtt/hall_light/set", "edge-agent/kitchen/command/light.sofa"]
    assert sub.on("zigbee2mqtt/kitchen_light/set") == [b'{"state": "ON"}']
    # our own (generic) command JSON carries the turn and a message id a hub can dedupe on
    (gen,) = sub.on("edge-agent/kitchen/command/light.sofa")
    g = json.loads(gen)
    assert (g["entity_id"], g["action"], g["turn_id"]) == ("light.sofa", "turn_on", "turn-7")
    assert g["id"].startswith("kitchen-") and g["id"] != mid
    (ev,) = sub.on("edge-agent/kitchen/event")
    assert json.loads(ev)["event_type"] == "HassTurnOn"
    (h,) = sub.on("hermes/intent/HassTurnOn")
    assert json.loads(h)["siteId"] == "kitchen" and json.loads(h)["intent"]["intentName"] == "HassTurnOn"
    assert sub.on("edge-agent/kitchen/state") == [b"thinking"]
    (hw,) = sub.on("hermes/hotword/hey_jarvis/detected")
    assert json.loads(hw)["modelId"] == "hey_jarvis" and json.loads(hw)["siteId"] == "kitchen"
    assert sub.on("edge-agent/kitchen/last_transcript") == [b"turn on the kitchen light"]
    assert sub.on("edge-agent/kitchen/availability")[-1] == b"online"
    assert states[:2] == ["connecting", "connected"]

    # dry run: the intent goes out, the device commands do not.
    sub.clear()
    link.publish_intent(call, turn_id="turn-8", text="x", commands=cmds, dry_run=True)
    assert link.wait_delivered(5)
    time.sleep(0.2)
    assert json.loads(sub.on("edge-agent/kitchen/intent/HassTurnOn")[0])["dry_run"] is True
    assert sub.on("zigbee2mqtt/kitchen_light/set") == []

    # A clean stop says "offline" itself (a clean DISCONNECT suppresses the last will).
    link.stop(timeout=2)
    assert sub.wait_for(lambda m: sub.on("edge-agent/kitchen/availability")[-1:] == [b"offline"], 5)
    assert states[-1] == "stopped"


def test_last_will_offline_when_client_killed(broker, subs, tmp_path) -> None:
    """A real process runs the link and is SIGKILLed: the broker publishes our retained last will."""
    sub = subs(broker, ["edge-agent/attic/availability"])
    cfg = {"site": {"site_id": "attic"}, "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5}}
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from edge_agent.config import load_settings
        from edge_agent.mqtt import MqttLink
        s = load_settings(data=json.loads(sys.argv[1]))
        link = MqttLink(s.mqtt, s.site, outbox_dir=sys.argv[2])
        link.start()
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg), str(tmp_path / "ob")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert sub.wait_for(lambda m: sub.on("edge-agent/attic/availability")[-1:] == [b"online"], 20), \
            proc.stderr.read1().decode() if proc.poll() is not None else "no online"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        assert sub.wait_for(lambda m: sub.on("edge-agent/attic/availability")[-1:] == [b"offline"], 10)
        print(f"last will seen {time.monotonic() - t0:.3f} s after SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()
    # Retained: a newcomer (Home Assistant restarting) learns we are offline too.
    late = subs(broker, ["edge-agent/attic/availability"])
    assert late.wait_for(lambda m: late.on("edge-agent/attic/availability") == [b"offline"], 5)


def test_broker_outage_during_50_publishes_loses_nothing_in_order(broker, links, subs, tmp_path) -> None:
    s = settings_for(broker)
    sub = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-sub", durable=True)
    link = links(s, tmp_path / "ob")
    states: list[str] = []
    link.on_state_change = states.append
    link.start()
    assert link.wait_connected(5)

    published: list[str] = []
    seen_offline: list[tuple[bool, int]] = []
    t_up: list[float] = []

    def outage() -> None:  # the broker goes away mid-run, whatever is in flight at that moment
        time.sleep(0.2)
        broker.stop()
        time.sleep(0.5)
        seen_offline.append((link.connected, link.pending))
        broker.start()
        t_up.append(time.monotonic())

    th = threading.Thread(target=outage)
    th.start()
    for n in range(50):
        published.append(link.publish("edge-agent/kitchen/data", {"n": n}))
        time.sleep(0.02)
    th.join()
    assert seen_offline[0][0] is False and seen_offline[0][1] > 0  # "I'll send that when the hub is back"
    assert sub.wait_for(lambda m: len({json.loads(p)["id"] for _t, p, *_ in m}) >= 50, 20), len(sub.msgs)
    assert link.wait_delivered(5)
    pairs = ids_and_ns([p for _t, p, *_ in sub.msgs])
    unique = dedupe(pairs)
    assert [n for _i, n in unique] == list(range(50))  # every message, exact order
    assert [i for i, _n in unique] == published
    assert len({i for i, _n in unique}) == 50  # none twice after dedupe by id
    print(f"outage: {len(pairs) - len(unique)} duplicate(s) on the wire, dropped by id; reconnected "
          f"{link.stats.last_connected_at - t_up[0]:.3f} s after the broker came back (backoff max 0.5 s)")
    assert "disconnected" in states and states.count("connected") >= 2
    assert link.stats.connects >= 2 and link.outbox.stats.dropped == 0


def test_outbox_survives_link_restart_while_broker_down(broker, links, subs, tmp_path) -> None:
    s = settings_for(broker)
    sub = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-sub-2", durable=True)
    sub.client.disconnect()  # the broker keeps the durable session (and saves it when stopped)
    sub.client.loop_stop()
    broker.stop()

    first = links(s, tmp_path / "ob")
    first.start()
    ids = [first.publish("edge-agent/kitchen/data", {"n": n}) for n in range(10)]
    assert first.pending == 10 and not first.connected
    first.stop(timeout=0.2)  # the process "restarts": nothing delivered yet

    second = links(s, tmp_path / "ob")  # a new link on the same outbox directory
    assert second.pending == 10
    ids += [second.publish("edge-agent/kitchen/data", {"n": n}) for n in range(10, 15)]
    second.start()
    time.sleep(0.3)
    broker.start()
    assert second.wait_delivered(10)
    sub2 = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-sub-2", durable=True)
    assert sub2.wait_for(lambda m: len(m) >= 15, 10), len(sub2.msgs)
    unique = dedupe(ids_and_ns(sub2.on("edge-agent/kitchen/data")))
    assert [n for _i, n in unique] == list(range(15)) and [i for i, _n in unique] == ids
    assert not list((tmp_path / "ob" / "kitchen").glob("*.json"))  # every file acked away


def test_discovery_well_formed_and_resent_when_ha_online(broker, links, subs, tmp_path) -> None:
    s = settings_for(broker)
    sub = subs(broker, ["homeassistant/device/+/config"])
    link = links(s, tmp_path / "ob")
    link.start()
    t = link.topics
    assert sub.wait_for(lambda m: len(m) >= 1, 5)
    topic, raw, retained, _ts = sub.msgs[0]
    assert topic == "homeassistant/device/edge_agent_kitchen/config"
    d = json.loads(raw)
    check_discovery(d, t)
    assert d["dev"]["name"] == "Edge kitchen"

    late = subs(broker, ["homeassistant/device/+/config"])  # retained: Home Assistant started later sees it
    assert late.wait_for(lambda m: len(m) == 1 and m[0][2], 5)

    sub.clear()
    ha = subs(broker, ["unused/none"])
    ha.publish("homeassistant/status", "online")
    assert sub.wait_for(lambda m: len(m) >= 1, 5), "discovery not re-sent on homeassistant/status online"
    check_discovery(json.loads(sub.msgs[0][1]), t)
    sub.clear()
    ha.publish("homeassistant/status", "offline")
    time.sleep(0.3)
    assert sub.msgs == []

    # A new intent name joins the event entity's event_types (else HA would reject the event).
    link.publish_intent(IntentCall("OrderPizza"), turn_id="t", text="order pizza", commands=[])
    assert sub.wait_for(lambda m: any("OrderPizza" in json.loads(p)["cmps"]["intent"]["event_types"]
                                      for _t, p, *_ in m), 5)


def test_malformed_inbound_never_crashes_nor_reaches_callbacks(broker, links, subs, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    s = settings_for(broker, hermes=True, max_inbound_bytes=4096)
    sub = subs(broker, ["edge-agent/kitchen/mute", "edge-agent/kitchen/sensitivity"])
    link = links(s, tmp_path / "ob")
    got: dict[str, list[Any]] = {"say": [], "mute": [], "sens": [], "timer": []}

    def on_say(text: str) -> None:
        if text == "boom":
            raise RuntimeError("engine bug")
        got["say"].append(text)

    link.on_say = on_say
    link.on_mute = got["mute"].append
    link.on_sensitivity = got["sens"].append
    link.on_timer = got["timer"].append
    link.start()
    assert link.wait_connected(5)
    base = "edge-agent/kitchen"
    junk = {
        f"{base}/say": [b"\xff\xfe\x00\x01", b"x" * 1_000_000, b'{"text": 5}', b'{"txt": "hi"}', b"[1,2]", b"   ",
                        b'{"text": "unterminated'],
        f"{base}/mute/set": [b"MAYBE", b"\x00\x01", b'{"state": "ON"}'],
        f"{base}/sensitivity/set": [b"1.5", b"-0.1", b"nan", b"inf", b"true", b'"abc"', b'{"value": 2}', b""],
        f"{base}/timer/set": [b"[]", b'{"action": 5}', b'{"action":"start","seconds":-3}', b'{"action":"start"}',
                              b'{"action":"start","minutes":"5"}', b'{"action":"explode"}',
                              b'{"action":"start","hours":100}'],
        "hermes/tts/say": [b'{"text": "not for us", "siteId": "garage"}', b"\xff", b'{"text": 1, "siteId": "kitchen"}'],
        f"{base}/_arbitration/wake": [],
        "edge-agent/_arbitration/wake": [b'{"site_id": 5}', b"junk"],
    }
    pub = subs(broker, ["unused/none"])
    n_junk = 0
    for topic, payloads in junk.items():
        for p in payloads:
            pub.publish(topic, p)
            n_junk += 1 if topic != "hermes/tts/say" or b"garage" not in p else 0
    pub.publish(f"{base}/say", b"boom")  # a callback that raises: logged, link unharmed
    pub.publish(f"{base}/say", b'{"text": "hello there"}')
    pub.publish(f"{base}/mute/set", b"ON")
    pub.publish(f"{base}/sensitivity/set", b"0.7")
    pub.publish(f"{base}/timer/set", b'{"action": "start", "minutes": 5, "name": "pasta"}')
    pub.publish("hermes/tts/say", b'{"text": "from hermes", "siteId": "kitchen"}')
    pub.publish(f"{base}/say", b"done")
    end = time.monotonic() + 10
    while "done" not in got["say"] and time.monotonic() < end:
        time.sleep(0.02)
    assert got == {"say": ["hello there", "from hermes", "done"], "mute": [True], "sens": [0.7],
                   "timer": [{"action": "start", "seconds": 300.0, "name": "pasta"}]}
    assert link.connected and link.stats.connects == 1  # never dropped the connection
    assert link.stats.inbound_rejected == n_junk, (link.stats, n_junk)
    assert link.stats.callback_errors == 1 and "on_say callback failed" in caplog.text
    for reason in ("exceeds mqtt.max_inbound_bytes", "not UTF-8", "must be a string", "out of range",
                   "action must be one of", "needs a positive duration", "wake claim"):
        assert reason in caplog.text, reason
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "ignored message" in r.getMessage()]
    assert len(warned) == 20 < n_junk  # the rest at debug level: junk floods do not flood the log
    # The switch and number states follow the accepted commands (retained, for HA).
    assert sub.wait_for(lambda m: sub.on(f"{base}/mute") == [b"ON"] and sub.on(f"{base}/sensitivity") == [b"0.7"],
                        5)


def test_username_password_and_password_never_logged(tmp_path, links, subs, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # everything, paho's own log included
    secret, watcher_pw = "s3cr3t-Pa55-word", "w4tch-only"
    b = Broker(tmp_path / "auth", users={"agent": secret, "watcher": watcher_pw}).start()
    try:
        sub = subs(b, ["edge-agent/#"], username="watcher", password=watcher_pw)
        os.environ["EDGE_TEST_MQTT_PW"] = secret
        s = settings_for(b, username="agent", password_env="EDGE_TEST_MQTT_PW")
        from edge_agent.config import mqtt_password

        link = links(s, tmp_path / "ob", password=mqtt_password(s.mqtt))
        link.start()
        assert link.wait_connected(5)
        link.publish_intent(IntentCall("HassTurnOff"), turn_id="t1", text="lights off", commands=[])
        assert link.wait_delivered(5)
        assert sub.wait_for(lambda m: any(t.endswith("/intent/HassTurnOff") for t, *_ in m), 5)

        wrong = settings_for(b, site="hall", username="agent", password="definitely-wrong-pw")
        bad = links(wrong, tmp_path / "ob2", password=mqtt_password(wrong.mqtt))
        bad.start()
        bad.publish_state("idle")
        time.sleep(1.5)
        assert not bad.connected and bad.state in ("connecting", "disconnected") and bad.pending == 1
        assert bad.stats.connect_failures >= 1
        assert "Not authorized" in caplog.text and "mqtt.username" in caplog.text
        texts = caplog.text + repr(link) + repr(bad) + repr(s) + repr(s.mqtt) + repr(wrong)
        assert secret not in texts and "definitely-wrong-pw" not in texts
        assert "Sending CONNECT" in caplog.text  # paho's debug log was captured, and it holds no password
    finally:
        os.environ.pop("EDGE_TEST_MQTT_PW", None)
        b.kill()


def test_tls_with_ca_file_and_wrong_ca_is_a_retry_not_a_crash(tmp_path, links, caplog) -> None:
    tls = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other")  # a CA that did not sign the broker's certificate
    b = Broker(tmp_path / "tlsb", tls=tls).start()
    try:
        good = links(settings_for(b, tls=True, ca_file=str(tls.ca_cert)), tmp_path / "ob")
        good.start()
        assert good.wait_connected(5)
        good.publish_state("idle")
        assert good.wait_delivered(5)
        bad = links(settings_for(b, site="hall", tls=True, ca_file=str(other.ca_cert)), tmp_path / "ob2")
        bad.start()
        time.sleep(1.0)
        assert not bad.connected and bad.stats.connect_failures >= 1
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate verify failed" in caplog.text
        missing = links(settings_for(b, site="loft", tls=True, ca_file=str(tmp_path / "nope.pem")), tmp_path / "x")
        with pytest.raises(MqttError, match="ca_file") as e:
            missing.start()
        assert e.value.fix
        plain = links(settings_for(b, site="cellar"), tmp_path / "ob3")  # no TLS against a TLS listener
        plain.start()
        time.sleep(1.0)
        assert not plain.connected and plain.stats.connect_failures >= 1
    finally:
        b.kill()


def test_two_rooms_one_broker_only_best_score_answers(broker, links, tmp_path) -> None:
    kitchen = links(settings_for(broker, "kitchen", arbitration_window_s=0.3), tmp_path / "ob")
    living = links(settings_for(broker, "living", arbitration_window_s=0.3), tmp_path / "ob")
    kitchen.start()
    living.start()
    assert kitchen.wait_connected(5) and living.wait_connected(5)
    time.sleep(0.2)  # subscriptions settled

    def both(score_k: float, score_l: float) -> dict[str, bool]:
        out: dict[str, bool] = {}
        tk = threading.Thread(target=lambda: out.__setitem__("kitchen", kitchen.arbiter.claim(score_k)))
        tl = threading.Thread(target=lambda: out.__setitem__("living", living.arbiter.claim(score_l)))
        tk.start()
        time.sleep(0.03)  # the second device detects a frame later
        tl.start()
        tk.join()
        tl.join()
        return out

    assert both(0.9, 0.7) == {"kitchen": True, "living": False}
    time.sleep(0.7)  # older claims fall out of the window
    assert both(0.6, 0.95) == {"kitchen": False, "living": True}
    time.sleep(0.7)
    assert both(0.8, 0.8) == {"kitchen": True, "living": False}  # tie: smaller site_id
    time.sleep(0.7)
    assert living.arbiter.claim(0.5) is True  # alone this time


def slow_fsync(delay_s: float) -> Callable[[int], None]:
    """A real fsync that takes at least ``delay_s`` (an SD card under write load takes tens of ms, often more)."""
    def fsync(fd: int) -> None:
        time.sleep(delay_s)
        os.fsync(fd)
    return fsync


def test_publish_does_not_wait_for_a_slow_fsync_and_still_delivers_in_order(broker, links, subs, tmp_path) -> None:
    """Defect 5: with a 200 ms fsync, publish_intent / publish_state return at once (< 20 ms) on the caller's
    thread; the writer persists the messages behind it and the broker receives them all, in publish order."""
    s = settings_for(broker)
    sub = subs(broker, ["edge-agent/kitchen/#"])
    box = Outbox(tmp_path / "ob", fsync_fn=slow_fsync(0.2))
    link = links(s, tmp_path / "unused", outbox=box)
    link.start()
    assert link.wait_connected(5)
    call = IntentCall("HassTurnOn", {"name": "lamp"}, ["light.lamp"], text="turn on the lamp")
    took: list[float] = []
    ids: list[str] = []
    for n in range(3):
        t0 = time.perf_counter()
        ids.append(link.publish_intent(call, turn_id=f"turn-{n}", text="turn on the lamp", commands=[]))
        took.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        link.publish_state("speaking" if n % 2 else "thinking")
        took.append(time.perf_counter() - t0)
    print(f"publish with a 200 ms fsync: max {max(took) * 1000:.2f} ms per call; "
          f"{link.pending} message(s) pending right after")
    assert max(took) < 0.020, [round(x * 1000, 1) for x in took]
    assert link.pending >= 1  # still being written: proof the calls did not wait for the disk
    # 9 messages x 2 fsyncs (file, directory) x 0.2 s: the last arrives about 3.6 s later.
    assert link.wait_delivered(15), link.pending
    assert sub.wait_for(lambda m: len(sub.on("edge-agent/kitchen/intent/HassTurnOn")) >= 3, 5)
    got = [json.loads(p)["id"] for p in sub.on("edge-agent/kitchen/intent/HassTurnOn")]
    assert got == ids  # same ids, same order
    order = [t for t, *_ in sub.msgs if t not in ("edge-agent/kitchen/availability", "edge-agent/kitchen/state")]
    assert order == ["edge-agent/kitchen/intent/HassTurnOn", "edge-agent/kitchen/event"] * 3
    # A retained state still waiting for the disk is replaced by a newer one (as in the outbox): the last one wins.
    states = sub.on("edge-agent/kitchen/state")
    assert 1 <= len(states) <= 3 and states[-1] == b"thinking"
    assert not list((tmp_path / "ob").glob("*.json"))  # every message was on disk, then acked away


def test_stop_puts_what_the_writer_still_holds_on_disk(broker, links, subs, tmp_path) -> None:
    """Broker down, slow disk: publish returns at once, stop() waits for the writer, so every message is on disk in
    order; the next link on the same directory delivers them all, same ids, same order."""
    s = settings_for(broker)
    sub = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-writer", durable=True)
    sub.client.disconnect()
    sub.client.loop_stop()
    broker.stop()
    box = Outbox(tmp_path / "ob" / "kitchen", fsync_fn=slow_fsync(0.05))
    first = links(s, tmp_path / "ob", outbox=box)
    first.start()
    t0 = time.perf_counter()
    ids = [first.publish("edge-agent/kitchen/data", {"n": n}) for n in range(8)]
    took = time.perf_counter() - t0
    assert took < 0.1 and first.pending == 8
    assert len(list((tmp_path / "ob" / "kitchen").glob("*.json"))) < 8  # not all on disk yet
    first.stop(timeout=5)
    files = sorted((tmp_path / "ob" / "kitchen").glob("*.json"))
    assert [json.loads(json.loads(f.read_text())["payload"])["id"] for f in files] == ids
    # After stop(), publish writes before it returns (nothing may wait in memory for a thread that is gone).
    ids.append(first.publish("edge-agent/kitchen/data", {"n": 8}))
    assert len(list((tmp_path / "ob" / "kitchen").glob("*.json"))) == 9

    second = links(s, tmp_path / "ob")
    assert second.pending == 9
    broker.start()
    second.start()
    assert second.wait_delivered(10)
    sub2 = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-writer", durable=True)
    assert sub2.wait_for(lambda m: len(m) >= 9, 10), len(sub2.msgs)
    unique = dedupe(ids_and_ns(sub2.on("edge-agent/kitchen/data")))
    assert [i for i, _n in unique] == ids and [n for _i, n in unique] == list(range(9))


def test_figures_latency_and_outage_recovery(broker, links, subs, tmp_path) -> None:
    """Measured figures (printed): publish() -> subscriber receive on loopback, and outage recovery time with the
    default backoff settings."""
    sub = subs(broker, ["edge-agent/kitchen/data"], client_id="durable-fig", durable=True)
    link = links(settings_for(broker), tmp_path / "ob")
    link.start()
    assert link.wait_connected(5)
    lat = []
    for n in range(60):
        t0 = time.monotonic()
        link.publish("edge-agent/kitchen/data", {"n": n})
        assert sub.wait_for(lambda m, n=n: len(m) > n, 5)
        lat.append(sub.msgs[n][3] - t0)
    lat_ms = sorted(x * 1000 for x in lat[5:])
    med, p95 = statistics.median(lat_ms), lat_ms[int(0.95 * (len(lat_ms) - 1))]
    print(f"publish->receive latency (loopback, fsync'd outbox): median {med:.1f} ms, p95 {p95:.1f} ms, "
          f"max {lat_ms[-1]:.1f} ms")
    assert med < 100
    link.stop(timeout=1)

    # Default backoff (0.5 s doubling to 10 s): broker down 3 s, then time from broker up to delivery.
    sub.clear()
    s = load_settings(data={"site": {"site_id": "kitchen"}, "mqtt": {"host": broker.host, "port": broker.port}})
    link2 = links(s, tmp_path / "ob")
    link2.start()
    assert link2.wait_connected(5)
    broker.stop()
    link2.publish("edge-agent/kitchen/data", {"n": 0})
    time.sleep(3.0)
    broker.start()
    t_up = time.monotonic()
    assert link2.wait_connected(15)
    t_conn = time.monotonic()
    assert sub.wait_for(lambda m: len(m) >= 1, 15)
    t_recv = sub.msgs[0][3]
    print(f"outage recovery (default backoff, 3 s outage): connected {t_conn - t_up:.2f} s and message delivered "
          f"{t_recv - t_up:.2f} s after the broker came back")
    assert t_recv - t_up < s.mqtt.reconnect_max_s + 3
    assert not math.isnan(med)


def test_entity_state_subscriptions_survive_reconnect(broker, links, subs, tmp_path) -> None:
    link = links(settings_for(broker), tmp_path / "ob")
    got: list[tuple[str, str]] = []
    link.subscribe("zigbee2mqtt/lamp", lambda t, p: got.append((t, p)))  # before start
    link.start()
    assert link.wait_connected(5)
    link.subscribe("sensors/+/temp", lambda t, p: got.append((t, p)))  # while connected
    time.sleep(0.2)
    pub = subs(broker, ["unused/none"])
    pub.publish("zigbee2mqtt/lamp", '{"state": "ON"}')
    pub.publish("sensors/hall/temp", b"\xff\xfe")  # not text: ignored, logged
    pub.publish("sensors/hall/temp", "21.5")
    end = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < end:
        time.sleep(0.02)
    assert got == [("zigbee2mqtt/lamp", '{"state": "ON"}'), ("sensors/hall/temp", "21.5")]
    assert link.stats.inbound_rejected == 1
    broker.stop()
    broker.start()
    end = time.monotonic() + 5
    while link.stats.connects < 2 and time.monotonic() < end:  # the second connection, not the stale first
        time.sleep(0.02)
    assert link.stats.connects == 2 and link.wait_connected(5)
    time.sleep(0.2)
    pub2 = subs(broker, ["unused/none"])
    pub2.publish("sensors/attic/temp", "12")
    end = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < end:
        time.sleep(0.02)
    assert got[-1] == ("sensors/attic/temp", "12")


def test_mqtt_v5_delivers_and_receives(broker, links, subs, tmp_path) -> None:
    sub = subs(broker, ["edge-agent/kitchen/data"])
    link = links(settings_for(broker, protocol="5"), tmp_path / "ob")
    said: list[str] = []
    link.on_say = said.append
    link.start()
    assert link.wait_connected(5)
    ids = [link.publish("edge-agent/kitchen/data", {"n": n}) for n in range(20)]
    assert link.wait_delivered(5)
    assert sub.wait_for(lambda m: len(m) >= 20, 5)
    assert [json.loads(p)["id"] for p in sub.on("edge-agent/kitchen/data")] == ids
    time.sleep(0.1)
    subs(broker, ["unused/none"]).publish("edge-agent/kitchen/say", "hello v5")
    end = time.monotonic() + 5
    while not said and time.monotonic() < end:
        time.sleep(0.02)
    assert said == ["hello v5"]
