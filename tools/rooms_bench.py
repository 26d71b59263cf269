#!/usr/bin/env python3
"""Three rooms, one home server: several ``edge-agent run`` daemons (distinct ``site.site_id``s) asked at the same
moment, against one real Mosquitto, one llama-cpp-python OpenAI-compatible server (``python -m llama_cpp.server``
with the project's GGUF) and one ``wyoming-faster-whisper``: every request answered, the right intents on each site's
topics (``edge-agent/<site>/intent/<Name>``), and end of speech → first audio per site and per setup.

Setups (``--modes``), each a phase with its own daemons, all in one run so they share the machine's load:

- ``local``: each daemon with its own Whisper and LLM (``stt.engine: whisper``, ``llm.backend: local``);
- ``stt``: remote STT only (``stt.engine: wyoming``, ``stt.fallback: whisper``), local LLM;
- ``llm``: remote LLM only (``llm.backend: openai``, ``llm.fallback: local``), local Whisper;
- ``both``: remote STT and LLM, each with its local fallback.

Multi-room wake arbitration (``mqtt.arbitration_window_s``) is off in every daemon: it is meant for one speaker
heard by several devices, and with it on, rooms saying the wake word within its window are taken for one speaker
and all but the best score stay silent (the outcome ``deferred``; seen in the first try of this bench).

The daemons hear the requests through their own microphones: one private PulseAudio with a pipe source per room
(``PULSE_SOURCE`` per daemon), all fed by one thread in the same 20 ms steps, so "at the same moment" is the same
audio block. (File mode, ``run --input X.wav --realtime``, starts each daemon's clock when it is ready, seconds
apart, so it cannot line up three rooms.) Each round is one request said in every room at once: a command the fast
path answers, a question for the LLM, and a command that needs an LLM tool call.

The server's queue: ``llama_cpp.server`` answers one request at a time, so when three rooms ask the LLM at once the
second room's first token waits for the first room's answer and the third for both. The table "queue" shows it: the
rooms' first tokens in order, each room's wait behind the others. The wait stays bounded by the ``openai`` backend's
``first_token_timeout_s`` (``--first-token-timeout``): a room whose first token has not come by then is answered by
its local model (logged as ``backend: local``, ``fallback_reason: timeout``). ``wyoming-faster-whisper`` also
decodes one utterance at a time; its queue is bounded by ``stt.wyoming.timeout_s`` and ``stt.fallback``.

    .venv/bin/python tools/rooms_bench.py [--rooms 3] [--repeats 1] [--modes local,stt,llm,both] [--json OUT.json]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.audio import SAMPLE_RATE, read_wav  # noqa: E402

WHISPER_KIND = "stt_whisper"  # the manifest kind of a Whisper model
FEED_BLOCK_S = 0.02  # the microphones are fed 20 ms at a time, in real time, all rooms in the same step
MODES = ("local", "stt", "llm", "both")
MODE_TITLES = {"local": "local (Whisper + LLM here)", "stt": "remote STT only", "llm": "remote LLM only",
               "both": "remote STT + LLM"}


@dataclass(frozen=True)
class Request:
    kind: str  # fast | question | tool
    text: str
    intent: str | None  # the intent that must arrive on the site's topic; None: a spoken answer, no intent
    entity: str | None = None


REQUESTS = [
    # the fast path does not match it; the 0.5B model's tool call does (checked in-process). First in the round: after
    # a command, "it" would be read as that command's device by the context rules (and "too dark" as "as well")
    Request("tool", "It is dark in the kitchen. Can you help?", "HassTurnOn", "light.kitchen"),
    Request("fast", "Turn off the living room lamp.", "HassTurnOff", "light.living_room_lamp"),
    Request("question", "What is the capital of France?", None),
]


# ------------------------------------------------------------------------------------------------------ microphones
class Mics:
    """A private PulseAudio with one pipe source per room (``mic0``, ``mic1``, ...) and a null sink; one thread
    feeds every FIFO in real time, the same block to each, a microphone's noise floor between requests."""

    def __init__(self, n: int, work: Path) -> None:
        for tool in ("pulseaudio", "pactl"):
            assert shutil.which(tool), f"{tool} missing: apt-get install pulseaudio pulseaudio-utils"
        self.n = n
        self.dir = Path(tempfile.mkdtemp(prefix="rooms-pulse-", dir=work))
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(self.dir), PULSE_SERVER=f"unix:{self.dir}/pulse/native")
        self.fifos = [self.dir / f"mic{i}.fifo" for i in range(n)]
        self._fds: list[int | None] = [None] * n
        self._pending: list[tuple[np.ndarray, threading.Event, list[float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Mics:
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                        "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=spk"],
                       env=self.env, check=True, capture_output=True)
        end = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            assert time.monotonic() < end, "the private PulseAudio did not start"
            time.sleep(0.1)
        for i, fifo in enumerate(self.fifos):
            subprocess.run(["pactl", "load-module", "module-pipe-source", f"source_name=mic{i}", f"file={fifo}",
                            "format=s16le", f"rate={SAMPLE_RATE}", "channels=1"], env=self.env, check=True,
                           capture_output=True)
        subprocess.run(["pactl", "set-default-sink", "spk"], env=self.env, check=True, capture_output=True)
        self._thread = threading.Thread(target=self._feed, name="mics", daemon=True)
        self._thread.start()
        return self

    def env_for(self, i: int) -> dict[str, str]:
        """The environment of room ``i``'s daemon: its own microphone as the default source."""
        return dict(self.env, PULSE_SOURCE=f"mic{i}", PULSE_SINK="spk")

    def say_all(self, audio: np.ndarray) -> list[float]:
        """Queue the same speech into every room's microphone; the list gets [t_start, t_end] once written."""
        done, times = threading.Event(), []
        with self._lock:
            self._pending.append((audio.astype(np.int16), done, times))
        return times

    def _feed(self) -> None:
        block = int(SAMPLE_RATE * FEED_BLOCK_S)
        noise = np.random.default_rng(0).integers(-1, 2, block).astype(np.int16).tobytes()  # never exact zeros
        cur: tuple[np.ndarray, threading.Event, list[float]] | None = None
        pos = 0
        t_next = time.monotonic()
        while not self._stop.is_set():
            for i, fifo in enumerate(self.fifos):
                if self._fds[i] is None:
                    try:
                        self._fds[i] = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError:
                        pass
            if cur is None:
                with self._lock:
                    if self._pending:
                        cur, pos = self._pending[0], 0
                        cur[2].append(time.monotonic())
            if cur is not None:
                data = cur[0][pos:pos + block]
                pos += block
                payload = data.tobytes() + noise[len(data) * 2:]
                if pos >= len(cur[0]):
                    cur[2].append(time.monotonic() + FEED_BLOCK_S)
                    cur[1].set()
                    with self._lock:
                        self._pending.pop(0)
                    cur = None
            else:
                payload = noise
            for i, fd in enumerate(self._fds):
                if fd is None:
                    continue
                try:
                    os.write(fd, payload)
                except BlockingIOError:
                    pass  # nobody reads yet: dropped, as a real microphone's sound would be
                except OSError:
                    self._fds[i] = None
            t_next += FEED_BLOCK_S
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for fd in self._fds:
            if fd is not None:
                os.close(fd)
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True)  # this private server only
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ MQTT watcher
class Watcher:
    """Every intent message on ``edge-agent/+/intent/#``, with the site its topic names."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rooms-bench")
        self.client.on_message = self._on
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("edge-agent/+/intent/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on(self, _c: Any, _u: Any, m: Any) -> None:
        parts = m.topic.split("/")
        try:
            body = json.loads(m.payload)
        except ValueError:
            body = {}
        with self._lock:
            self.messages.append({"site": parts[1], "name": parts[3] if len(parts) > 3 else "", "t": time.monotonic(),
                                  "turn_id": body.get("turn_id") if isinstance(body, dict) else None, "body": body})

    def for_turn(self, turn_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["turn_id"] == turn_id]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ------------------------------------------------------------------------------------------------------ the rig
@dataclass
class Rig:
    """The shared servers, the microphones, the MQTT watcher and the spoken requests."""

    work: Path
    rooms: int
    llm_threads: int = 2
    first_token_timeout_s: float = 8.0
    stt_timeout_s: float = 10.0
    read_timeout_s: float = 5.0  # llm.openai.read_timeout_s: the longest pause between two pieces of a reply
    llm_timeout_s: float | None = None  # llm.timeout_s (one generation, the queue included); None: the default
    interrupt_requests: bool = False
    broker: Any = None
    llm: Any = None
    whisper: Any = None
    mics: Mics | None = None
    watcher: Watcher | None = None
    wavs: dict[str, np.ndarray] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)

    def start(self, need_servers: bool = True) -> Rig:
        from edge_agent.config import load_settings
        from edge_agent.models import ModelStore
        from tests.broker import Broker
        from tests.remote_servers import LlamaServer, WyomingWhisperServer
        from tests.speech import compose

        self.work.mkdir(parents=True, exist_ok=True)
        store = ModelStore(load_settings(ROOT / "config.yaml").models_path)
        for r in REQUESTS:  # the wake word, a pause, the request, as a user says it
            self.wavs[r.kind] = read_wav(compose(store, [("wake", "Hey Jarvis!"), ("silence", 0.5),
                                                         ("piper", r.text), ("silence", 1.5)],
                                                 self.work / "speech" / f"{r.kind}.wav"))
        self.broker = Broker(self.work / "broker").start()
        self.watcher = Watcher(self.broker.port)
        if need_servers:
            from edge_agent.models import resolve

            gguf_path = resolve("qwen2_5_coder_0_5b", store, "llm")  # a ModelError with the fix when missing
            whisper = resolve("whisper_tiny_en", store, WHISPER_KIND)
            whisper_dir = whisper if whisper.is_dir() else whisper.parent
            # --interrupt_requests False: the server's default cuts a streaming reply short (an empty [DONE]) as
            # soon as another request arrives, so each room's request would knock the previous room's reply over to
            # its fallback; with it off they queue
            self.llm = LlamaServer(gguf_path, self.work / "llama-server.log", threads=self.llm_threads,
                                   interrupt_requests=self.interrupt_requests).start()
            self.whisper = WyomingWhisperServer(whisper_dir, self.work / "wyoming", threads=self.llm_threads).start()
        self.mics = Mics(self.rooms, self.work).start()
        return self

    def prime_llm_server(self) -> float:
        """The server evaluates the daemons' fixed prefix once, before any room starts (as a home server would have
        done long before): cold, that takes longer than a room's first_token_timeout_s on this machine, and a daemon
        whose warm-up met it cold would mark it down and answer locally until its probe got through (llama_cpp.server
        answers GET /models only between requests). Seconds taken."""
        import dataclasses

        from edge_agent.brain import Brain
        from edge_agent.config import load_settings
        from tests.daemon import HOME

        s = load_settings(ROOT / "config.yaml")
        o = dataclasses.replace(s.llm.openai, base_url=self.llm.base_url, first_token_timeout_s=600.0,
                                read_timeout_s=600.0)
        s = dataclasses.replace(s, llm=dataclasses.replace(s.llm, backend="openai", fallback="none", openai=o,
                                                           timeout_s=600.0))
        t0 = time.monotonic()
        brain = Brain.from_settings(s, home_file=str(HOME))
        brain.warmup()
        return time.monotonic() - t0

    def close(self) -> None:
        if self.mics is not None:
            self.mics.stop()
        if self.watcher is not None:
            self.watcher.close()
        for server in (self.llm, self.whisper):
            if server is not None:
                server.kill()
        if self.broker is not None:
            self.broker.stop()

    def config(self, mode: str, room: int) -> Path:
        """Room ``room``'s daemon config for a setup."""
        site = f"room{room + 1}"
        d = self.work / mode / site
        d.mkdir(parents=True, exist_ok=True)
        prefix = self.work / "prefix" / site  # the local model's prompt cache, kept across the setups
        prefix.mkdir(parents=True, exist_ok=True)
        stt = "{engine: whisper, whisper: {threads: 1}}"
        llm = f"{{backend: local, threads: 1, prefix_cache_dir: {prefix}}}"
        if mode in ("stt", "both"):
            stt = (f"{{engine: wyoming, fallback: whisper, whisper: {{threads: 1}}, wyoming: {{host: 127.0.0.1, "
                   f"port: {self.whisper.port}, timeout_s: {self.stt_timeout_s}}}}}")
        if mode in ("llm", "both"):
            llm = (f"{{backend: openai, fallback: local, threads: 1, prefix_cache_dir: {prefix}, "
                   f"{f'timeout_s: {self.llm_timeout_s}, ' if self.llm_timeout_s else ''}openai: "
                   f"{{base_url: '{self.llm.base_url}', first_token_timeout_s: {self.first_token_timeout_s}, "
                   f"read_timeout_s: {self.read_timeout_s}}}}}")
        path = d / "config.yaml"
        path.write_text(
            f"site: {{site_id: {site}, area: ''}}\n"
            # arbitration off: it is for one speaker heard by several devices (the best score answers, the others
            # stay silent); here each room has its own speaker, all saying the wake word in the same 20 ms step
            f"mqtt: {{host: 127.0.0.1, port: {self.broker.port}, outbox_dir: {d / 'outbox'}, "
            f"arbitration_window_s: 0}}\n"
            f"conversation: {{follow_up_s: 0.0, timers_file: {d / 'timers.json'}}}\n"
            f"log: {{turn_log: {d / 'turns.jsonl'}}}\n"
            f"stt: {stt}\nllm: {llm}\n")
        return path

    def run_phase(self, mode: str, requests: list[Request], repeats: int = 1,
                  turn_timeout_s: float = 150.0) -> dict[str, Any]:
        """One setup: start a daemon per room, say each request in every room at once, collect every turn."""
        from tests.daemon import Daemon

        assert self.mics is not None and self.watcher is not None
        daemons = [Daemon(self.config(mode, i), env=self.mics.env_for(i),
                          log_path=self.work / mode / f"room{i + 1}" / "daemon.log").start() for i in range(self.rooms)]
        phase: dict[str, Any] = {"mode": mode, "rounds": [], "errors": []}
        try:
            t0 = time.monotonic()
            for d in daemons:
                d.wait_ready(600)
            phase["startup_s"] = round(time.monotonic() - t0, 1)
            for rep in range(repeats):
                for req in requests:
                    before = [len(d.turns()) for d in daemons]
                    said = self.mics.say_all(self.wavs[req.kind])
                    turns = []
                    for d, n in zip(daemons, before, strict=True):
                        try:
                            turns.append(d.wait_turn(n, timeout=turn_timeout_s))
                        except AssertionError as e:
                            phase["errors"].append(f"{mode} {req.kind}: {str(e)[:300]}")
                            turns.append(None)
                    end = time.monotonic() + 10  # the intents of these turns reach the watcher
                    while time.monotonic() < end and not all(
                            t is None or len(self.watcher.for_turn(t["turn_id"])) >= len(t.get("intents") or [])
                            for t in turns):
                        time.sleep(0.05)
                    phase["rounds"].append(self._judge(mode, req, rep, turns, said))
                    for d in daemons:  # the next round starts when every room is idle again
                        d.wait_for(lambda d=d: d.state == "idle", 60, "idle")
        finally:
            for d in daemons:
                code = d.stop(timeout=15)
                if code != 0:
                    phase["errors"].append(f"{mode}: a daemon exited {code}")
        return phase

    def _judge(self, mode: str, req: Request, rep: int, turns: list[dict[str, Any] | None],
               said: list[float]) -> dict[str, Any]:
        rows = []
        for i, t in enumerate(turns):
            site = f"room{i + 1}"
            row: dict[str, Any] = {"site": site, "kind": req.kind, "repeat": rep, "ok": False}
            if t is None:
                row["problem"] = "no turn"
                rows.append(row)
                continue
            stages = t.get("stages") or {}
            calls = (stages.get("brain") or {}).get("llm_calls") or []
            msgs = self.watcher.for_turn(t["turn_id"]) if self.watcher else []
            row.update({
                "transcript": t.get("transcript"), "reply": t.get("reply_spoken"), "outcome": t.get("outcome"),
                "used_llm": t.get("used_llm"),
                "intents_on_topics": sorted({f"{m['site']}/{m['name']}" for m in msgs}),
                "stt_backend": (stages.get("stt") or {}).get("backend"),
                "stt_fallback": (stages.get("stt") or {}).get("fallback_reason"),
                "llm_backends": [c.get("backend", "local") for c in calls],
                "llm_fallbacks": [c["fallback_reason"] for c in calls if c.get("fallback_reason")],
                "stt_wait_ms": _ms(stages.get("stt_wait_s")),
            })
            if t.get("t_speech_end") and t.get("t_first_audio"):
                row["first_audio_ms"] = round(1000 * (t["t_first_audio"] - t["t_speech_end"]))
            if t.get("t_speech_end") and t.get("t_first_token"):
                row["first_token_ms"] = round(1000 * (t["t_first_token"] - t["t_speech_end"]))
            problems = []
            if t.get("outcome") not in ("answered", None) or not t.get("reply_spoken"):
                problems.append(f"outcome {t.get('outcome')}, reply {t.get('reply_spoken')!r}")
            if req.intent is not None:
                want = f"{site}/{req.intent}"
                if want not in row["intents_on_topics"]:
                    problems.append(f"no {req.intent} on edge-agent/{site}/intent/")
                if req.entity and not any(req.entity in json.dumps(m["body"]) for m in msgs):
                    problems.append(f"{req.entity} not in the intent")
            wrong = [m for m in msgs if m["site"] != site]
            if wrong:
                problems.append(f"an intent on another site's topic: {wrong[0]['site']}")
            row["ok"] = not problems
            if problems:
                row["problem"] = "; ".join(problems)
            rows.append(row)
        return {"mode": mode, "kind": req.kind, "repeat": rep, "said": [round(x, 3) for x in said], "rows": rows}


def _ms(x: Any) -> int | None:
    return None if x is None else round(1000 * float(x))


def _stats(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} / {max(values):.0f}"


def report(phases: list[dict[str, Any]], rooms: int, load: dict[str, Any]) -> str:
    out = []
    rows = [r for p in phases for rnd in p["rounds"] for r in rnd["rows"]]
    by_mode = {p["mode"]: [r for rnd in p["rounds"] for r in rnd["rows"]] for p in phases}
    out.append(f"load average (1, 5, 15 min): before {load.get('before')}, after {load.get('after')}; "
               f"{os.cpu_count()} CPUs")
    answered = sum(r["ok"] for r in rows)
    out.append(f"requests answered with the right intents on the right site topics: {answered} of {len(rows)}")
    for r in rows:
        if not r["ok"]:
            out.append(f"  NOT OK {r['site']} {r['kind']}: {r.get('problem')} (heard {r.get('transcript')!r})")
    for p in phases:
        for e in p["errors"]:
            out.append(f"  error: {e}")
    # per site: the remote setup against the local one
    remote = "both" if "both" in by_mode else next((m for m in by_mode if m != "local"), None)
    if "local" in by_mode and remote:
        out.append("")
        out.append(f"end of speech -> first audio per site, ms (median / worst), local vs {MODE_TITLES[remote]}:")
        out.append("| site | local | remote | local LLM turns | remote LLM turns |")
        out.append("|---|---|---|---|---|")
        for i in range(rooms):
            site = f"room{i + 1}"

            def fa(mode: str, llm: bool | None = None, site: str = site) -> list[int]:
                return [r["first_audio_ms"] for r in by_mode[mode] if r["site"] == site and "first_audio_ms" in r
                        and (llm is None or bool(r.get("used_llm")) == llm)]

            out.append(f"| {site} | {_stats(fa('local'))} | {_stats(fa(remote))} | {_stats(fa('local', True))} | "
                       f"{_stats(fa(remote, True))} |")
    out.append("")
    out.append("end of speech -> first audio by setup, all rooms, ms (median / worst):")
    out.append("| setup | all requests | fast path | LLM question | LLM tool call | STT wait (median) | fallbacks |")
    out.append("|---|---|---|---|---|---|---|")
    for mode, rs in by_mode.items():
        def fa(kind: str | None = None, rs: list[dict[str, Any]] = rs) -> list[int]:
            return [r["first_audio_ms"] for r in rs if "first_audio_ms" in r and (kind is None or r["kind"] == kind)]

        waits = [r["stt_wait_ms"] for r in rs if r.get("stt_wait_ms") is not None]
        fallbacks = [f"stt:{r['stt_fallback']}" for r in rs if r.get("stt_fallback")]
        fallbacks += [f"llm:{f}" for r in rs for f in r.get("llm_fallbacks", [])]
        fb = ", ".join(f"{x} x{fallbacks.count(x)}" for x in sorted(set(fallbacks))) or "none"
        out.append(f"| {MODE_TITLES[mode]} | {_stats(fa())} | {_stats(fa('fast'))} | {_stats(fa('question'))} | "
                   f"{_stats(fa('tool'))} | {statistics.median(waits) if waits else '-'} | {fb} |")
    # the server's queue: the rooms' first LLM tokens in order, in each round that went to the server
    queue_lines = []
    for p in phases:
        if p["mode"] not in ("llm", "both"):
            continue
        for rnd in p["rounds"]:
            firsts = sorted((r["first_token_ms"], r["site"], r.get("llm_backends"), r.get("llm_fallbacks"))
                            for r in rnd["rows"] if r.get("first_token_ms") is not None and r.get("used_llm"))
            if len(firsts) < 2:
                continue
            base = firsts[0][0]
            cells = [f"{site} {ms} ms (+{ms - base}){' ' + ','.join(b) if b else ''}"
                     f"{' fallback ' + ','.join(f) if f else ''}" for ms, site, b, f in firsts]
            queue_lines.append(f"| {MODE_TITLES[p['mode']]} | {rnd['kind']} | " + " | ".join(cells) + " |")
    if queue_lines:
        out.append("")
        out.append("the LLM server's queue: end of speech -> first token per room, in order (+ wait behind the first "
                   "room; backend that answered):")
        order = ["first", "second", "third"] + [f"#{i + 1}" for i in range(3, rooms)]
        out.append("| setup | request | " + " | ".join(order[:rooms]) + " |")
        out.append("|---|---|" + "---|" * rooms)
        out.extend(queue_lines)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the three requests per setup")
    ap.add_argument("--modes", default=",".join(MODES), help=f"setups to run, of {', '.join(MODES)}")
    ap.add_argument("--server-threads", type=int, default=2, help="threads of each server")
    ap.add_argument("--first-token-timeout", type=float, default=8.0,
                    help="llm.openai.first_token_timeout_s: the longest a room waits in the server's queue")
    ap.add_argument("--llm-timeout", type=float, default=None,
                    help="llm.timeout_s of the daemons (one generation, the queue included); default: the default")
    ap.add_argument("--interrupt-requests", action="store_true",
                    help="run llama_cpp.server with its default --interrupt_requests True (a new request cuts the "
                         "streaming one short)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown setup {bad[0]!r}; known: {', '.join(MODES)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rooms-bench-"))
    rig = Rig(work, args.rooms, llm_threads=args.server_threads, first_token_timeout_s=args.first_token_timeout,
              interrupt_requests=args.interrupt_requests, llm_timeout_s=args.llm_timeout,
              read_timeout_s=max(5.0, min(args.first_token_timeout, 60.0)))
    load = {"before": tuple(round(x, 2) for x in os.getloadavg())}
    phases = []
    t0 = time.monotonic()
    try:
        rig.start(need_servers=any(m != "local" for m in modes))
        if rig.llm is not None:
            print(f"the LLM server evaluated the fixed prefix in {rig.prime_llm_server():.1f} s", file=sys.stderr,
                  flush=True)
        for mode in modes:
            print(f"setup {mode}: {MODE_TITLES[mode]}", file=sys.stderr, flush=True)
            phases.append(rig.run_phase(mode, REQUESTS, args.repeats))
    finally:
        rig.close()
    load["after"] = tuple(round(x, 2) for x in os.getloadavg())
    text = report(phases, args.rooms, load)
    print(f"rooms_bench: {args.rooms} rooms, setups {', '.join(modes)}, {args.repeats} round(s) of "
          f"{len(REQUESTS)} requests, {time.monotonic() - t0:.0f} s; work dir {work}")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"load": load, "phases": phases}, indent=1))
    ok = all(r["ok"] for p in phases for rnd in p["rounds"] for r in rnd["rows"]) and not any(
        p["errors"] for p in phases)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
