"""End to end through the real sounddevice path: `edge-agent run` as a daemon on virtual PulseAudio devices, with a
real Mosquitto. Speech is written in real time into the virtual microphone; the virtual speaker is recorded.

Checks: a spoken command reaches MQTT as the right intent with the mapped Zigbee2MQTT / Tasmota commands; the reply
heard on the speaker is not silence and transcribes back to the logged `reply_spoken`; the turn log has every
timestamp in order; SIGTERM ends the daemon cleanly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent.audio import SAMPLE_RATE
from edge_agent.stt import word_error_rate

from .broker import Broker
from .conftest import ROOT, require_model
from .pulse import VirtualAudio, active_spans
from .speech import compose

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


class Daemon:
    def __init__(self, va: VirtualAudio, config: Path, turn_log: Path) -> None:
        self.turn_log = turn_log
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "-c", str(config), "run", "--home",
             str(ROOT / "tests" / "data" / "home.yaml")],
            cwd=ROOT, env=va.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "listening for" in line:
                self.ready.set()

    def turns(self) -> list[dict]:
        if not self.turn_log.exists():
            return []
        return [json.loads(x) for x in self.turn_log.read_text().splitlines() if x.strip()]

    def wait_turns(self, n: int, timeout: float = 90) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.turns()
            if len(t) >= n:
                return t
            assert self.proc.poll() is None, "daemon died:\n" + "\n".join(self.lines[-40:])
            time.sleep(0.1)
        raise AssertionError("turn not logged:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return -9
        return self.proc.returncode


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
    daemon = Daemon(va, config, turn_log)
    assert daemon.ready.wait(240), "daemon did not start:\n" + "\n".join(daemon.lines[-40:])
    yield {"va": va, "daemon": daemon, "sub": sub, "broker": broker, "dir": d}
    code = daemon.stop()
    sub.close()
    va.stop()
    broker.stop()
    assert code == 0, f"daemon exit code {code} after SIGTERM:\n" + "\n".join(daemon.lines[-30:])


def test_spoken_command_reaches_mqtt_and_the_speaker(rig, store):
    from edge_agent.config import Settings
    from edge_agent.stt import make_engine

    va, daemon, sub = rig["va"], rig["daemon"], rig["sub"]
    wav = compose(store, [("piper", "Hey Jarvis!"), ("silence", 0.5), ("piper", "Turn on the kitchen light."),
                          ("silence", 0.5)], rig["dir"] / "cmd.wav")
    time.sleep(2.5)  # parec loses its first seconds; let the recording settle
    va.say(wav)
    rec = daemon.wait_turns(1)[0]
    assert [i["name"] for i in rec["intents"]] == ["HassTurnOn"], (rec, daemon.lines[-20:])
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
    # what the virtual speaker played: not silence, and it says the logged reply
    time.sleep(1.5)
    audio = va.stop_recording()
    va.start_recording()
    reply_at = va.rec_time(rec["t_first_audio"])
    spans = [s for s in active_spans(audio, va.rec_rate) if s[1] > reply_at - 0.5]
    assert spans, f"nothing audible on the speaker after {reply_at:.2f}s of {len(audio) / va.rec_rate:.2f}s"
    start, end = spans[0][0], spans[-1][1]
    clip = audio[int(start * va.rec_rate):int((end + 0.2) * va.rec_rate)]
    stt = make_engine(Settings().stt, Settings())
    heard = stt.transcribe(clip.astype(np.int16) if va.rec_rate == SAMPLE_RATE else clip).text
    assert word_error_rate(rec["reply_spoken"], heard) <= 0.35, (rec["reply_spoken"], heard)
    print(f"e2e: heard {rec['transcript']!r} (llm: {rec['used_llm']}); end of speech -> first reply audio "
          f"{rec['t_first_audio'] - rec['t_speech_end']:.3f} s; speaker played {heard!r}")


def test_tasmota_command_and_follow_on_turn(rig, store):
    va, daemon, sub = rig["va"], rig["daemon"], rig["sub"]
    n = len(daemon.turns())
    wav = compose(store, [("piper", "Hey Jarvis!"), ("silence", 0.5), ("piper", "Turn off the living room lamp."),
                          ("silence", 0.5)], rig["dir"] / "lamp.wav")
    va.say(wav)
    rec = daemon.wait_turns(n + 1)[-1]
    assert [i["name"] for i in rec["intents"]] == ["HassTurnOff"], (rec, daemon.lines[-20:])
    msg = sub.wait_for(lambda m: m[0] == "cmnd/lamp1/POWER")
    assert msg[-1][1] == b"OFF"


def test_wake_word_interrupts_the_reply_on_the_real_speaker(rig, store):
    """The wake word during a long reply: the virtual speaker falls silent within 200 ms of the detection."""
    va, daemon = rig["va"], rig["daemon"]
    n = len(daemon.turns())
    ask = compose(store, [("piper", "Hey Jarvis!"), ("silence", 0.5), ("piper", "Explain how a refrigerator works."),
                          ("silence", 0.5)], rig["dir"] / "fridge.wav")
    wake = compose(store, [("piper", "Hey Jarvis!")], rig["dir"] / "wake.wav")
    mark = len(daemon.lines)
    va.say(ask)
    deadline = time.monotonic() + 180
    while not any("-> speaking" in line for line in daemon.lines[mark:]):
        assert time.monotonic() < deadline, "never started speaking:\n" + "\n".join(daemon.lines[-30:])
        time.sleep(0.05)
    time.sleep(2.0)
    va.say(wake)
    turns = daemon.wait_turns(n + 2, timeout=60)  # the interrupted turn, then the wake-only turn (no speech)
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
