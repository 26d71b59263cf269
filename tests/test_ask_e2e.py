"""Home Assistant's conversation features over MQTT, end to end: a real Mosquitto, `edge-agent run` as a daemon on
virtual PulseAudio devices, real speech. An automation asks a question (the device speaks it after a chime and hears
the reply without the wake word; the matched answer is published), gets "no_match" when nobody answers, starts a
conversation whose reply is a normal turn, and a malformed request is refused without harm."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from .broker import Broker
from .conftest import require_model
from .daemon import Daemon
from .pulse import VirtualAudio
from .speech import compose
from .test_e2e_pulse import Subscriber

pytestmark = pytest.mark.slow
QUESTION = {"id": "door-1", "question": "Shall I lock the front door?", "preannounce": True, "timeout_s": 6,
            "answers": [{"id": "yes", "sentences": ["yes [please]", "sure", "(do it|go ahead)"]},
                        {"id": "no", "sentences": ["no [thanks]", "(don't|do not) [do it]"]}]}


@pytest.fixture(scope="module")
def rig(tmp_path_factory, store):
    for m in ("hey_jarvis", "oww_features", "silero_vad", "whisper_tiny_en", "qwen2_5_coder_0_5b", "piper_joe_medium"):
        require_model(store, m)
    d = tmp_path_factory.mktemp("ask")
    broker = Broker(d / "broker").start()
    va = VirtualAudio().start()
    config = d / "config.yaml"
    config.write_text(
        f"site: {{site_id: hall, area: Kitchen}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, outbox_dir: {d / 'outbox'}}}\n"
        f"log: {{turn_log: {d / 'turns.jsonl'}}}\n"
        f"conversation: {{follow_up_s: 0.0, timers_file: {d / 'timers.json'}}}\n")
    sub = Subscriber(broker.port)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ask-automation")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    daemon = Daemon(config, env=va.env).start()
    daemon.wait_ready(240)
    yield {"va": va, "daemon": daemon, "sub": sub, "pub": pub, "dir": d}
    code = daemon.stop(timeout=10)
    pub.loop_stop()
    pub.disconnect()
    sub.close()
    va.stop()
    broker.stop()
    assert code == 0, f"daemon exit code {code} after SIGTERM:\n" + daemon.tail(30)


def _send(rig, topic: str, payload) -> float:
    t0 = time.monotonic()
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    rig["pub"].publish(f"edge-agent/hall/{topic}", body, qos=1).wait_for_publish(5)
    return t0


def _results(rig, ask_id: str):
    return rig["sub"].wait_for(lambda m: m[0] == "edge-agent/hall/ask/result" and json.loads(m[1])["ask_id"] == ask_id,
                               timeout=60)


def test_the_retained_state_is_this_runs_own_from_the_start(rig):
    states = rig["sub"].wait_for(lambda m: m[0] == "edge-agent/hall/state", timeout=30)
    assert states[0][1] == b"idle", states


def test_a_question_is_spoken_and_the_reply_matched(rig, store):
    daemon, va = rig["daemon"], rig["va"]
    yes = compose(store, [("piper", "Yes, please."), ("silence", 0.8)], rig["dir"] / "yes.wav")
    t0 = _send(rig, "ask", QUESTION)
    daemon.wait_state("listening", t0, timeout=60)  # the question (after its chime) was played; no wake word
    va.say(yes)
    body = json.loads(_results(rig, "door-1")[-1][1])
    assert body["answer"] == "yes" and body["event_type"] == "answer", body
    said = [r for r in daemon.turns(announcements=True) if r.get("ask") and r["outcome"] == "announcement"]
    assert said and said[-1]["reply_spoken"] == QUESTION["question"], said
    answered = [r for r in daemon.turns() if r.get("kind") == "answer"]
    assert answered and answered[-1]["intents"] == [] and answered[-1]["t_wake"] is None, answered


def test_nobody_answers_gives_no_match(rig):
    t0 = _send(rig, "ask", {**QUESTION, "id": "door-2", "timeout_s": 2, "preannounce": False})
    rig["daemon"].wait_state("listening", t0, timeout=60)
    body = json.loads(_results(rig, "door-2")[-1][1])
    assert body["answer"] is None and body["event_type"] == "no_match" and body["reason"] == "no_speech", body


def test_a_started_conversation_takes_the_reply_as_a_turn(rig, store):
    daemon, va, sub = rig["daemon"], rig["va"], rig["sub"]
    cmd = compose(store, [("piper", "Turn on the kitchen light."), ("silence", 0.8)], rig["dir"] / "cmd.wav")
    n = len(daemon.turns())
    t0 = _send(rig, "conversation/start", {"text": "Which light should I turn on?"})
    daemon.wait_state("listening", t0, timeout=60)
    va.say(cmd)
    rec = daemon.wait_turn(n, timeout=90)
    assert rec["t_wake"] is None and rec["kind"] == "voice", rec
    assert [i["name"] for i in rec["intents"]] == ["HassTurnOn"], (rec, daemon.tail(20))
    assert sub.wait_for(lambda m: m[0] == "edge-agent/hall/intent/HassTurnOn")


def test_a_malformed_question_is_refused_and_nothing_is_spoken(rig):
    daemon = rig["daemon"]
    t0 = _send(rig, "ask", {"id": "bad", "question": "Lock?", "answers": [{"id": "y", "sentences": ["(yes"]}]})
    line = daemon.wait_line(r"ignored message on edge-agent/hall/ask: answers: a sentence template", t0, timeout=30)
    assert "cannot be read" in line
    _send(rig, "ask", b"not json")
    daemon.wait_line(r"ignored message on edge-agent/hall/ask: ask must be a JSON object", t0, timeout=30)
    spoken = [r for r in daemon.turns(t0, announcements=True) if r.get("ask", {}).get("id") == "bad"]
    assert daemon.alive() and not spoken
