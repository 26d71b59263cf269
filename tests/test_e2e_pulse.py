"""End to end through the real sounddevice path: `edge-agent run` as a daemon on virtual PulseAudio devices, with a
real Mosquitto. Speech is written in real time into the virtual microphone; the virtual speaker is recorded.

Checks: a spoken command reaches MQTT as the right intent with the mapped Zigbee2MQTT / Tasmota commands; the reply
heard on the speaker is not silence and transcribes back to the logged `reply_spoken`; the turn log has every
timestamp in order; SIGTERM ends the daemon cleanly.
"""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent.audio import SAMPLE_RATE
from edge_agent.stt import word_error_rate

from .broker import Broker
from .conftest import require_model
from .daemon import Daemon
from .pulse import VirtualAudio, active_spans
from .speech import compose, say_until

pytestmark = pytest.mark.slow
ORDER = ["t_wake", "t_speech_start", "t_speech_end", "t_endpoint", "t_transcript", "t_first_audio", "t_playback_end"]


class Subscriber:
    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-sub")
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()

    def wait_for(self, pred, timeout: float = 30) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in list(self.messages) if pred(m)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching MQTT message; got topics {[t for t, _ in self.messages]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, store):
    for m in ("hey_jarvis", "oww_features", "silero_vad", "whisper_tiny_en", "qwen2_5_coder_0_5b", "piper_joe_medium"):
        require_model(store, m)
    d = tmp_path_factory.mktemp("e2e")
    broker = Broker(d / "broker").start()
    va = VirtualAudio().start()
    turn_log = d / "turns.jsonl"
    config = d / "config.yaml"
    config.write_text(
        f"site: {{site_id: kitchen, area: Kitchen}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, outbox_dir: {d / 'outbox'}}}\n"
        f"log: {{turn_log: {turn_log}}}\n"
        f"conversation: {{follow_up_s: 0.0, timers_file: {d / 'timers.json'}}}\n")
    sub = Subscriber(broker.port)
    va.start_recording()
    daemon = Daemon(config, env=va.env).start()
    daemon.wait_ready(240)
    yield {"va": va, "daemon": daemon, "sub": sub, "broker": broker, "dir": d, "turn_log": turn_log}
    code = daemon.stop(timeout=10)
    sub.close()
    va.stop()
    broker.stop()
    assert code == 0, f"daemon exit code {code} after SIGTERM:\n" + daemon.tail(30)


def wait_turns(daemon: Daemon, n: int, timeout: float = 90) -> list[dict]:
    """The turns logged so far, once there are at least ``n``."""
    return daemon.wait_for(lambda: len(daemon.turns()) >= n and daemon.turns(), timeout, f"{n} turn(s) logged")


def say_command(rig, store, name: str, phrasings: list[tuple[str, str]], intent: str) -> dict:
    """Say "Hey Jarvis! <phrasing>" until a turn carries out ``intent`` (each attempt the next phrasing: Whisper tiny
    may mishear one every time on some CPUs); every attempt must end in a logged turn."""
    va, daemon = rig["va"], rig["daemon"]

    def say(k: int) -> dict:
        wav = compose(store, [("wake", "Hey Jarvis!"), ("silence", 0.5), phrasings[k], ("silence", 0.5)],
                      rig["dir"] / f"{name}{k}.wav")
        n = len(daemon.turns())
        va.say(wav)
        return wait_turns(daemon, n + 1)[n]

    return say_until(say, intent, len(phrasings),
                     lambda: daemon.wait_for(lambda: daemon.state == "idle", 60, "the daemon back to idle"))


def test_spoken_command_reaches_mqtt_and_the_speaker(rig, store):
    from edge_agent.config import Settings
    from edge_agent.stt import make_engine

    va, sub = rig["va"], rig["sub"]
    time.sleep(2.5)  # parec loses its first seconds; let the recording settle
    # What this test checks is the path (sounddevice, MQTT, the speaker), not Whisper's accuracy: it has heard
    # "Card on the kitchen light." and "... kitchen white." A misheard request is said again in another phrasing.
    rec = say_command(rig, store, "on", [("piper", "Turn on the kitchen light."),
                                         ("piper", "Switch on the kitchen light."),
                                         ("piper-slow", "Turn on the kitchen light.")], "HassTurnOn")
    # the turn log file holds the same record the daemon logged
    logged = [json.loads(x) for x in rig["turn_log"].read_text().splitlines() if x.strip()]
    assert [r for r in logged if r["turn_id"] == rec["turn_id"]] == [rec], logged
    intent = sub.wait_for(lambda m: m[0] == "edge-agent/kitchen/intent/HassTurnOn")
    body = json.loads(intent[0][1])
    assert body["entities"] == ["light.kitchen"] and body["site_id"] == "kitchen" and body["turn_id"] == rec["turn_id"]
    # the intent carries the words as heard (whisper may mishear a word; the entity above is what must be right)
    assert "id" in body and body["text"] == rec["transcript"]
    z2m = sub.wait_for(lambda m: m[0] == "zigbee2mqtt/kitchen_light/set")
    assert json.loads(z2m[0][1])["state"] == "ON"
    assert sub.wait_for(lambda m: m[0] == "edge-agent/kitchen/availability" and m[1] == b"online")
    for a, b in zip(ORDER, ORDER[1:], strict=False):
        assert rec[a] is not None and rec[b] is not None and rec[a] <= rec[b], (a, b, rec)
    # what the virtual speaker played: not silence, and it says the logged reply (recorded until just past its end)
    time.sleep(max(0.0, rec["t_playback_end"] + 1.0 - time.monotonic()))
    audio = va.stop_recording()
    va.start_recording()
    reply_at = va.rec_time(rec["t_first_audio"])
    spans = [s for s in active_spans(audio, va.rec_rate) if s[1] > reply_at - 0.5]
    assert spans, f"nothing audible on the speaker after {reply_at:.2f}s of {len(audio) / va.rec_rate:.2f}s"
    start, end = spans[0][0], spans[-1][1]
    clip = audio[int(start * va.rec_rate):int((end + 0.2) * va.rec_rate)]
    stt = make_engine(Settings().stt, Settings())
    heard = stt.transcribe(clip.astype(np.int16) if va.rec_rate == SAMPLE_RATE else clip).text
    # the path, not Whisper tiny's accuracy on a recorded clip: a short reply may lose two words ("on the kitchen
    # white." for "Turned on the kitchen light." in one CI run), but the device's name must be in it
    assert word_error_rate(rec["reply_spoken"], heard) <= 0.4 and "kitchen" in heard.lower(), (rec["reply_spoken"],
                                                                                                heard)
    print(f"e2e: heard {rec['transcript']!r} (llm: {rec['used_llm']}); end of speech -> first reply audio "
          f"{rec['t_first_audio'] - rec['t_speech_end']:.3f} s; speaker played {heard!r}")


def test_tasmota_command_and_follow_on_turn(rig, store):
    sub = rig["sub"]
    rec = say_command(rig, store, "lamp", [("piper", "Turn off the living room lamp."),
                                           ("piper", "Switch off the living room lamp."),
                                           ("piper-slow", "Turn off the living room lamp.")], "HassTurnOff")
    assert rec["intents"][0]["entities"] == ["light.living_room_lamp"], rec
    msg = sub.wait_for(lambda m: m[0] == "cmnd/lamp1/POWER")
    assert msg[-1][1] == b"OFF"


def test_wake_word_interrupts_the_reply_on_the_real_speaker(rig, store):
    """The wake word during a long reply: the virtual speaker falls silent within 200 ms of the detection."""
    va, daemon = rig["va"], rig["daemon"]
    n = len(daemon.turns())
    ask = compose(store, [("wake", "Hey Jarvis!"), ("silence", 0.5), ("piper", "Explain how a refrigerator works."),
                          ("silence", 0.5)], rig["dir"] / "fridge.wav")
    wake = compose(store, [("wake", "Hey Jarvis!")], rig["dir"] / "wake.wav")
    t0 = time.monotonic()
    va.say(ask)
    t_speaking = daemon.wait_state("speaking", t0, timeout=180)
    time.sleep(max(0.0, t_speaking + 2.0 - time.monotonic()))  # two seconds into the reply
    va.say(wake)
    turns = wait_turns(daemon, n + 2, timeout=60)  # the interrupted turn, then the wake-only turn (no speech)
    first, second = turns[n], turns[n + 1]
    assert first["interrupted"] and first["reply_spoken"] and len(first["reply_spoken"]) < len(first["reply_full"]), \
        first
    time.sleep(0.5)
    audio = va.stop_recording()
    va.start_recording()
    t_detect = va.rec_time(second["t_wake"])
    spans = active_spans(audio, va.rec_rate, min_gap_s=0.05)
    before = [e for s, e in spans if s < t_detect]
    assert before, f"no reply audio before the detection at {t_detect:.2f}s: {spans}"
    stop_latency = max(before) - t_detect
    print(f"e2e interruption: the speaker fell silent {stop_latency * 1000:.0f} ms after the wake word was detected; "
          f"spoken {len(first['reply_spoken'].split())} of {len(first['reply_full'].split())} words")
    assert stop_latency <= 0.2
