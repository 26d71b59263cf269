"""``edge-agent bench [--quick|--full]``: the numbers a user feels, measured on the real voice loop.

The real ``Engine`` runs in-process with the configured models; its microphone is a real-time paced source that
plays the generated requests (``bench_set``) with silence in between, so every timestamp in the turn log
is taken exactly as on a device. Measured, for fast-path commands and LLM answers separately (median and p95):
end of speech (``t_speech_end``) → endpoint, → final transcript, → intent published / first LLM token, → first
reply audio. Also STT real-time factor and WER on real read speech, TTS time to first audio and RTF, LLM tokens/s,
idle CPU while listening, peak RSS of the real ``edge-agent run`` process, wake word false rejects / false accepts
per hour, intent accuracy (spoken end to end, and Home Assistant's conformance sentences as text), and two
sequential baselines with the same models on the same requests, commands and LLM answers (endpoint wait → whole
transcript → whole answer → whole synthesis → play): the naive pipeline with the engine's own endpoint wait (what
streaming buys) and a Home Assistant-style chain with HA's 0.7 s of silence and its routing (its templates, else the
LLM), what a user would pick instead. ``tools/bench_compare.py`` puts several runs side by side (``tools/bench3.sh``:
this machine, simulated Pi 5 and Pi 4) in a table and a PNG.

Quick mode (default) takes a few minutes; ``--full`` runs every voice and noise condition and an hour of negative
audio. Results: a markdown table on stdout, and JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import json
import logging
import os
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.audio import SAMPLE_RATE, AudioChunk, read_wav
from edge_agent.audio_io import Speaker
from edge_agent.config import Settings, load_settings
from edge_agent.errors import ConfigError, EdgeAgentError

from . import budget, threads  # --cpu-budget (the engine under a cgroup CPU quota); CPU per thread
from .bench_set import DEFAULT_DIR, librivox_cases, make_bench_set, negative_stream

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout this benchmark lives in (tools/edge_bench/run.py)
BLOCK = int(SAMPLE_RATE * 0.08)  # the microphone's block: 80 ms, as the default audio.block_ms
# Targets the product is held to (docs/benchmarks.md)
TARGETS = {
    "fast_first_audio_ms": 800, "fast_after_transcript_ms": 400, "llm_first_audio_ms": 1500, "speedup": 2.0,
    "idle_cpu_pct": 10.0, "peak_rss_mb": 1200.0, "wake_fr_clean_pct": 5.0, "wake_fa_per_hour": 0.5,
    # speed-up over the Home Assistant-style chain (its median / the engine's, same requests), commands / LLM answers
    "ha_speedup_fast": 4.0, "ha_speedup_llm": 2.5,
}
SECTIONS = ("e2e", "baseline", "idle", "wer", "tts", "wake", "negatives", "conformance", "cli")
STAGES = [  # (key, label, turn field): end of speech → ...
    ("endpoint", "endpoint", "t_endpoint"),
    ("transcript", "final transcript", "t_transcript"),
    ("intent_or_token", "intent published / first LLM token", None),
    ("first_audio", "first reply audio", "t_first_audio"),
]


# --------------------------------------------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.percentile(v, q)) if v else None


def summary(values: list[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    return {"n": len(v), "median_ms": _ms(pct(v, 50)), "p95_ms": _ms(pct(v, 95)), "mean_ms": _ms(float(np.mean(v)))
            if v else None}


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 1)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """Cores, CPU model and memory of this machine (from /proc), for the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "mem_gb": mem_gb, "python": platform.python_version(),
            "kernel": platform.release()}


def vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class BenchMic:
    """A live microphone driven by the benchmark: pushed clips, else silence (or a noise floor), paced in real time
    on the monotonic clock. Records the stream position where each clip starts, so the true end of each request is
    known on the same clock as the engine's timestamps."""

    def __init__(self, floor_dbfs: float | None = None, seed: int = 3) -> None:
        self.pending: queue.Queue[tuple[int, np.ndarray]] = queue.Queue()
        self.buf = np.zeros(0, dtype=np.int16)
        self.starts: dict[int, int] = {}  # clip id -> stream sample index of its first sample
        self.floor = None if floor_dbfs is None else 32768 * 10 ** (floor_dbfs / 20)
        self.rng = np.random.default_rng(seed)
        self.t0 = 0.0
        self.pos = 0
        self.exhausted = False
        self.alive = True

    def push(self, clip_id: int, audio: np.ndarray) -> None:
        self.pending.put((clip_id, audio))

    def idle(self) -> bool:
        return self.pending.empty() and len(self.buf) == 0

    def open(self) -> None:
        self.t0 = time.monotonic()
        self.pos = 0

    def clip_time(self, clip_id: int, offset_s: float) -> float | None:
        """Monotonic time of ``offset_s`` into clip ``clip_id`` (None before it started playing)."""
        start = self.starts.get(clip_id)
        return None if start is None else self.t0 + start / SAMPLE_RATE + offset_s

    def read(self, timeout: float = 1.0) -> AudioChunk:
        while len(self.buf) < BLOCK and not self.pending.empty():
            cid, audio = self.pending.get()
            self.starts[cid] = self.pos + len(self.buf)
            self.buf = np.concatenate([self.buf, audio])
        chunk = np.zeros(BLOCK, dtype=np.int16)
        if self.floor is not None:
            chunk = (self.rng.standard_normal(BLOCK) * self.floor).astype(np.int16)
        n = min(BLOCK, len(self.buf))
        chunk[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        start = self.t0 + self.pos / SAMPLE_RATE
        self.pos += BLOCK
        delay = self.t0 + self.pos / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return AudioChunk(chunk, start)

    def close(self) -> None:
        pass


class MuteSpeaker(Speaker):
    """A speaker that hands each block to nowhere at once: ``t_first_audio`` is taken exactly as on a device, and
    the benchmark does not wait for replies to be played out (they are not what is measured)."""

    def _emit(self, block: np.ndarray) -> None:
        return


@dataclasses.dataclass
class Models:
    """Every model loaded once and shared by the engine runs, the baseline and the component measurements."""

    s: Settings
    tts: Any
    stt: Any
    brain: Any
    wake: Any
    vad: Any
    load_s: dict[str, float]


def bench_settings(config: str | None) -> Settings:
    """The product's configuration, with what a benchmark must not do turned off: MQTT (no broker), the turn log
    file, and the follow-up window (each request starts with the wake word)."""
    if config and not Path(config).is_file():
        raise ConfigError(f"config file {config} does not exist", fix="pass an existing file with -c, or leave it out")
    path = config or (REPO_ROOT / "config.yaml")
    base = load_settings(path) if Path(path).is_file() else load_settings(None)
    return dataclasses.replace(
        base, mqtt=dataclasses.replace(base.mqtt, enabled=False), log=dataclasses.replace(base.log, turn_log=None),
        conversation=dataclasses.replace(base.conversation, follow_up_s=0.0))


def load_models(s: Settings, home_file: str) -> Models:
    from edge_agent.brain import Brain
    from edge_agent.stt import make_engine, prime_with_home
    from edge_agent.tts import PiperTts
    from edge_agent.vad import SileroVad
    from edge_agent.wake import WakeDetector

    t: dict[str, float] = {}
    t0 = time.monotonic()
    tts = PiperTts.from_settings(s)
    tts.load()
    tts.warmup()
    tts.prewarm(["Sorry, I didn't catch that.", "Sorry, something went wrong. Please try again."])
    t["tts_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    stt = make_engine(s.stt, s)
    stt.load()
    stt.warmup()
    t["stt_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    brain = Brain.from_settings(s, home_file=home_file)
    prime_with_home(stt, s.stt, brain.home)  # as the daemon does (build.py)
    brain.warmup()
    t["llm_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    wake = WakeDetector.from_settings(s)
    vad = SileroVad.from_settings(s)
    t["wake_vad_s"] = time.monotonic() - t0
    return Models(s, tts, stt, brain, wake, vad, {k: round(v, 2) for k, v in t.items()})


class RecordingBrain:
    """The brain as the engine sees it, keeping every ``Response`` it returns (for their LLM timings). Handed to the
    ``Engine`` in place of the brain; everything else (``on_intent``, ``timers``, ``handler``, ``home``, ...) reads
    and writes the real brain, which is left untouched."""

    def __init__(self, brain: Any) -> None:
        object.__setattr__(self, "_brain", brain)
        object.__setattr__(self, "responses", [])

    def respond(self, text: str, **kw: Any) -> Any:
        r = self._brain.respond(text, **kw)
        self.responses.append(r)
        return r

    def __getattr__(self, name: str) -> Any:
        return getattr(self._brain, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._brain, name, value)


class Rig:
    """The real Engine over a ``BenchMic`` and a ``MuteSpeaker``, on its own thread."""

    def __init__(self, m: Models, floor_dbfs: float | None = None) -> None:
        from edge_agent.engine import Engine, TurnLog
        from edge_agent.vad import Segmenter

        m.wake.reset()
        m.vad.reset()
        self.mic = BenchMic(floor_dbfs)
        self._tmp = tempfile.TemporaryDirectory()
        self.speaker = MuteSpeaker(m.tts.sample_rate, file=Path(self._tmp.name) / "out.wav", realtime=False)
        self.brain = RecordingBrain(m.brain)
        self.responses: list[Any] = self.brain.responses
        self.link = None
        if m.s.mqtt.enabled:
            # MQTT on, as in real use: every state change and intent goes through the outbox to a real broker (the
            # engine stops this link when it shuts down, so each rig has its own)
            from edge_agent.mqtt import MqttLink

            self.link = MqttLink(m.s.mqtt, m.s.site)
            self.link.start()
            if not self.link.wait_connected(15):
                raise RuntimeError(f"the bench's broker at {m.s.mqtt.host}:{m.s.mqtt.port} did not accept a connection")
        self.engine = Engine(m.s, source=self.mic, speaker=self.speaker, wake=m.wake, vad=m.vad,
                             segmenter_factory=lambda: Segmenter(m.s.vad), stt=m.stt, brain=self.brain, tts=m.tts,
                             mqtt=self.link, turn_log=TurnLog(None))
        self.speaker.start()
        self.thread = threading.Thread(target=self.engine.run, name="bench-engine", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30.0
        while self.mic.t0 == 0.0:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bench engine never opened its microphone")
            time.sleep(0.01)
        # The steady state a household lives in: the TTS warm-up of the home's replies (once after each start, a few
        # seconds here, a few minutes under a Pi's budget) is done before the first request.
        t0 = time.monotonic()
        if getattr(self.engine, "_warm_thread", None) is not None:  # it goes on keeping the clock's replies warm
            self.engine.replies_warm.wait(timeout=900.0)
        self.warm_wait_s = round(time.monotonic() - t0, 1)

    def quiet(self) -> bool:
        from edge_agent.engine import State

        e = self.engine
        c = e.controller  # the same "nothing left to do" test as the engine's file mode
        return (self.mic.idle() and e.state == State.IDLE and not c.responding and not c.pending
                and not self.speaker.busy)

    def wait_quiet(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.quiet():
            time.sleep(0.05)

    def wait_caught_up(self, timeout: float) -> float:
        """Wait until the engine's loop takes the microphone's chunks as they come again (backlog under
        ``headroom.LAG_RECOVER_S``); the seconds waited. The baselines run in this process beside the listening
        engine: under a small CPU budget their decodes and syntheses leave the loop behind, and a request pushed then
        would be heard late because of the bench, not the engine (a household does not run baselines)."""
        from edge_agent.headroom import LAG_RECOVER_S

        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline and self.engine.headroom.lag_s >= LAG_RECOVER_S:
            time.sleep(0.05)
        return time.monotonic() - t0

    def stop(self) -> None:
        self.engine.stop_event.set()
        self.thread.join(timeout=30)
        self._tmp.cleanup()


# --------------------------------------------------------------------------------------------------- sections


def run_e2e(m: Models, root: Path, requests: list[dict[str, Any]], progress: Any, baseline_max: int = 0
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each request through the real engine in real time; one result row per request (the turn log + facts).

    The baselines (``baseline_chains``: the naive pipeline and the Home Assistant-style chain) run on the same
    request right after the engine answered it, up to ``baseline_max`` commands and as many questions, so all three
    see the same load on a shared machine; their order alternates from one request to the next."""
    rig = Rig(m)
    progress(f"engine started; its TTS warm-up finished {rig.warm_wait_s:.1f} s later")
    rows: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    chains = baseline_chains(m.s)
    paired = {"command": 0, "question": 0}
    try:
        for i, req in enumerate(requests):
            audio = read_wav(root / req["file"])
            m.brain.reset()
            rig.responses.clear()
            n0 = len(rig.engine.history)
            caught_up_s = rig.wait_caught_up(120.0)
            sampler = threads.Sampler().start()
            rig.mic.push(i, audio)
            deadline = time.monotonic() + len(audio) / SAMPLE_RATE + 45.0
            while time.monotonic() < deadline and len(rig.engine.history) == n0:
                time.sleep(0.02)
            turns = rig.engine.history[n0:]
            rig.wait_quiet(30.0)
            # settle: the mic has played the whole clip, then 0.3 s of silence between requests
            time.sleep(0.3)
            turns = rig.engine.history[n0:]
            row = {"request": req, "turns": turns, "load": loadavg(), "loop_caught_up_s": round(caught_up_s, 2),
                   "threads_cpu_s": sampler.stop()}
            rec = request_turn(turns)
            row["turn"] = rec
            row["continued"] = sum(t.get("outcome") == "continued" for t in turns)
            true_end = rig.mic.clip_time(i, req["request_end_s"])
            row["true_speech_end"] = true_end
            row["llm_calls"] = [c for r in rig.responses for c in r.timings.get("llm_calls", [])]
            row.update(judge(req, rec, answered=bool(rig.responses)))
            rows.append(row)
            progress(f"e2e {i + 1}/{len(requests)} {req['file']}: {row['verdict']}"
                     + (f", first audio {1000 * row['lat']['first_audio']:.0f} ms" if row.get("lat", {}).get(
                         "first_audio") is not None else "")
                     + f"; CPU s by thread: {threads.summary(row['threads_cpu_s'])}")
            if paired.get(req["kind"], baseline_max) < baseline_max and row["lat"].get("first_audio"):
                paired[req["kind"]] += 1
                for chain in chains if paired[req["kind"]] % 2 else chains[::-1]:
                    b = sequential_turn(m, root, row, chain)
                    base.append(b)
                    progress(f"  {chain.name}: {1000 * b['first_audio_s']:.0f} ms (endpoint "
                             f"{1000 * b['endpoint_s']:.0f}, stt {1000 * b['stt_s']:.0f}, answer "
                             f"{1000 * b['answer_s']:.0f} via {b['route']}, tts {1000 * b['tts_s']:.0f})")
    finally:
        rig.stop()
    return rows, base


def request_turn(turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The turn that answered a request: the first with speech in it, or, where that one was ended early and the
    user went on (outcome ``continued``: the turn is dropped and its words are heard again in the next one), the
    turn that continued it. Judging the dropped first part called a command answered right "wrong: None"; a timer's
    announcement between them is skipped."""
    # a timer set by an earlier request may ring meanwhile (the Pi 4 column runs for minutes): its announcement is
    # a turn too, but not this request's
    heard = [t for t in turns if t.get("outcome") != "no_speech" and t.get("kind") != "announcement"]
    if not heard:
        return turns[0] if turns else None
    i = 0
    while heard[i].get("outcome") == "continued" and i + 1 < len(heard):
        i += 1
    return heard[i]


def judge(req: dict[str, Any], rec: dict[str, Any] | None, answered: bool = False) -> dict[str, Any]:
    """Latencies of one turn and whether it did what was asked (intent + entities + slots, or an LLM answer).
    ``answered``: the brain was asked to respond for this request although no turn was logged in time (a slow LLM
    turn still running when the bench stopped waiting): the wake word was heard, so it is not called missed."""
    out: dict[str, Any] = {"lat": {}}
    if rec is None:
        out["verdict"] = ("no_turn (still answering when the bench stopped waiting)" if answered
                          else "no_turn (wake word missed?)")
        out["correct"] = False
        return out
    t_end = rec.get("t_speech_end")
    if t_end is not None:
        for key, _, fieldname in STAGES:
            if fieldname is None:
                t = rec.get("t_first_token") if rec.get("used_llm") else rec.get("t_intent")
            else:
                t = rec.get(fieldname)
            out["lat"][key] = None if t is None else t - t_end
        if rec.get("t_transcript") is not None and rec.get("t_first_audio") is not None:
            out["lat"]["after_transcript"] = rec["t_first_audio"] - rec["t_transcript"]
    exp = req["expected"]
    if exp == "llm":
        ok = bool(rec.get("used_llm")) and not rec.get("intents") and bool(rec.get("reply_spoken"))
        out["verdict"] = "ok (llm)" if ok else f"wrong: llm={rec.get('used_llm')} intents={rec.get('intents')}"
    else:
        got = (rec.get("intents") or [None])[0]
        ok = intent_matches(exp, got)
        out["verdict"] = "ok" if ok else f"wrong: {got} for {rec.get('transcript')!r}"
    out["correct"] = ok
    return out


def intent_matches(exp: dict[str, Any], got: dict[str, Any] | None) -> bool:
    if not got or got.get("name") != exp["name"]:
        return False
    if "entities" in exp and sorted(got.get("entities") or []) != sorted(exp["entities"]):
        return False
    slots = got.get("slots") or {}
    for k, v in (exp.get("slots") or {}).items():
        try:
            if float(slots.get(k)) != float(v):
                return False
        except (TypeError, ValueError):
            return False
    return True


def evict_request(m: Models) -> None:
    """Leave the LLM's KV cache holding the fixed prefix plus *another* request, as the engine found it: without
    this the naive run of the question just answered would find its whole prompt cached and skip its evaluation.

    Reads brain internals: ``brain.llm`` (its ``complete``) and the prompt builder (``_messages(text, area)``, or the
    older ``_prompt``), so the filler request is laid out exactly as a real one."""
    llm = getattr(m.brain, "llm", None)
    build = getattr(m.brain, "_messages", None) or getattr(m.brain, "_prompt", None)
    complete = getattr(llm, "complete", None)
    if complete is None or build is None:
        log.warning("bench: cannot evict the LLM cache (brain internals changed); the naive baseline may be fast")
        return
    complete(build("Please say nothing at all.", m.s.site.area or None), max_tokens=1)


HA_ENDPOINT_S = 0.7  # Home Assistant's default end of a voice command: 0.7 s of silence (assist_pipeline's VAD)


@dataclasses.dataclass(frozen=True)
class Chain:
    """A sequential baseline (``sequential_turn``): the endpoint wait, then the whole transcript, the whole answer,
    the whole reply synthesized; first audio = the end of all that.

    ``ha_routing``: the answer is routed as Home Assistant's Assist routes it with "prefer handling commands locally":
    the fast path only where HA's own sentence templates match (hassil, the matcher's exact tier), everything else
    to the LLM (the tolerant tier is this project's, HA has none). Without it, the brain answers as the engine's."""

    name: str
    label: str
    endpoint_s: float
    ha_routing: bool = False


def baseline_chains(s: Settings) -> tuple[Chain, ...]:
    """The two baselines of the same run: the naive sequential pipeline with the engine's own endpoint wait (what
    streaming buys), and a Home Assistant-style chain (what a user would pick instead)."""
    return (Chain("naive", "naive sequential pipeline", s.vad.trailing_silence_s),
            Chain("ha_chain", "Home Assistant-style chain", HA_ENDPOINT_S, ha_routing=True))


def sequential_turn(m: Models, root: Path, row: dict[str, Any], chain: Chain) -> dict[str, Any]:
    """One request the engine just answered, again through a sequential ``chain`` with the same loaded models: the
    endpoint wait, then Whisper on the whole utterance, the whole answer (``Brain.respond(...).wait()``: not streamed
    into TTS), the whole reply synthesized. Its end of speech → first audio is the endpoint wait plus the three
    stages. The LLM's KV cache of the request is evicted first, so neither side gets a free cache hit."""
    from edge_agent.engine import strip_wake_words

    req = row["request"]
    audio = read_wav(root / req["file"])
    utterance = audio[int(req["wake_end_s"] * SAMPLE_RATE):int((req["request_end_s"] + 0.1) * SAMPLE_RATE)]
    area = m.s.site.area or None
    m.brain.reset()
    evict_request(m)
    t0, c0 = time.monotonic(), time.process_time()
    text = strip_wake_words(m.stt.transcribe(utterance).text, ["hey jarvis"])
    t1, c1 = time.monotonic(), time.process_time()
    fast_path = m.brain.fast_path
    route = "brain"
    try:
        if chain.ha_routing:  # HA's own templates (hassil) or its conversation agent (the LLM); timed as the answer
            exact = fast_path and m.brain.matcher is not None and m.brain.matcher.recognize(text, area) is not None
            route = "templates" if exact else "llm"
            m.brain.fast_path = exact
        resp = m.brain.respond(text, area=area)
        reply = resp.wait()
    finally:
        m.brain.fast_path = fast_path
    t2, c2 = time.monotonic(), time.process_time()
    wav = m.tts.synthesize_all(reply) if reply else np.zeros(0, dtype=np.int16)
    t3, c3 = time.monotonic(), time.process_time()
    m.brain.reset()
    return {"pipeline": chain.name, "file": req["file"], "kind": req["kind"], "text": text, "reply": reply,
            "route": route, "used_llm": bool(getattr(resp, "used_llm", False)),
            "first_audio_s": chain.endpoint_s + (t3 - t0), "endpoint_s": chain.endpoint_s,
            "stt_s": t1 - t0, "answer_s": t2 - t1, "tts_s": t3 - t2,
            # process CPU of each stage (the idle engine's loop, ~0.05 CPU, is inside it)
            "stt_cpu_s": round(c1 - c0, 4), "answer_cpu_s": round(c2 - c1, 4), "tts_cpu_s": round(c3 - c2, 4),
            "reply_audio_s": len(wav) / m.tts.sample_rate, "llm_calls": resp.timings.get("llm_calls", []),
            "engine_first_audio_s": row["lat"]["first_audio"], "load": loadavg()}


def summarize_baselines(base: list[dict[str, Any]]) -> dict[str, Any]:
    """Per baseline and per kind (``fast`` = commands, ``llm`` = questions): the chain and the engine on the same
    requests (median, p95), the ratio of their medians (chain / engine: the speed-up the targets are about), the
    median of per-request ratios, and the chain's stage medians (time and CPU)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(b["pipeline"] for b in base):
        out[name] = {}
        for kind, label in (("command", "fast"), ("question", "llm")):
            bs = [b for b in base if b["pipeline"] == name and b["kind"] == kind]
            if not bs:
                continue
            chain, engine = summary([b["first_audio_s"] for b in bs]), summary([b["engine_first_audio_s"] for b in bs])
            out[name][label] = {
                "n": len(bs), "engine": engine, "chain": chain,
                "ratio_of_medians": round(chain["median_ms"] / engine["median_ms"], 2)
                if chain["median_ms"] and engine["median_ms"] else None,
                "ratio_of_p95": round(chain["p95_ms"] / engine["p95_ms"], 2)
                if chain["p95_ms"] and engine["p95_ms"] else None,
                "speedup_median": round(float(np.median([b["first_audio_s"] / b["engine_first_audio_s"]
                                                         for b in bs])), 2),
                "endpoint_s": bs[0]["endpoint_s"],
                "parts_median_ms": {k: _ms(float(np.median([b[k] for b in bs])))
                                    for k in ("endpoint_s", "stt_s", "answer_s", "tts_s")},
                "cpu_median_s": {k: round(float(np.median([b[k] for b in bs])), 4)
                                 for k in ("stt_cpu_s", "answer_cpu_s", "tts_cpu_s")},
                "routes": {r: sum(b["route"] == r for b in bs) for r in dict.fromkeys(b["route"] for b in bs)},
                "used_llm": sum(b["used_llm"] for b in bs)}
    return out


def run_idle(m: Models, seconds: float) -> dict[str, Any]:
    """CPU of the whole process while the engine listens for the wake word over a quiet room (noise at -60 dBFS)."""
    rig = Rig(m, floor_dbfs=-60.0)
    try:
        time.sleep(1.0)
        r0, w0, wake0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), m.wake.cpu_s
        time.sleep(seconds)
        r1, w1, wake1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), m.wake.cpu_s
        turns = len(rig.engine.history)
    finally:
        rig.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"seconds": round(w1 - w0, 1), "cpu_pct_of_one_core": round(100 * cpu / (w1 - w0), 2),
            "wake_cpu_pct": round(100 * (wake1 - wake0) / (w1 - w0), 2), "false_turns": turns, "load": loadavg()}


def run_wer(m: Models) -> dict[str, Any]:
    from edge_agent.stt import edit_distance, normalize_text

    rows, errs, words, audio_s, compute_s = [], 0, 0, 0.0, 0.0
    for wav, ref in librivox_cases():
        x = read_wav(wav)
        res = m.stt.transcribe(x)
        r, h = normalize_text(ref).split(), normalize_text(res.text).split()
        e = edit_distance(r, h)
        errs, words = errs + e, words + len(r)
        audio_s += len(x) / SAMPLE_RATE
        compute_s += res.compute_s
        rows.append({"file": wav.name, "ref": ref, "hyp": res.text, "wer": round(e / max(1, len(r)), 3),
                     "audio_s": round(len(x) / SAMPLE_RATE, 2), "compute_s": round(res.compute_s, 3)})
    return {"files": len(rows), "words": words, "wer": round(errs / words, 4) if words else None,
            "rtf": round(compute_s / audio_s, 3) if audio_s else None, "rows": rows}


def run_tts(m: Models, texts: list[str]) -> dict[str, Any]:
    first, rtf, rows = [], [], []
    for text in texts:
        chunks = list(m.tts.synthesize(text))
        st = m.tts.last_stats
        if not chunks:
            continue
        first.append(st.first_audio_s)
        rtf.append(st.rtf)
        rows.append({"text": text, "first_audio_s": round(st.first_audio_s, 3), "rtf": round(st.rtf, 3),
                     "audio_s": round(st.audio_s, 2)})
    return {"n": len(rows), "first_audio": summary(first), "rtf_median": round(float(np.median(rtf)), 3)
            if rtf else None, "rows": rows}


def run_wake_positives(m: Models, root: Path, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Wake word false rejects: the detector alone (fresh state) over every spoken request, per condition."""
    from .bench_set import wake_detects

    by: dict[str, list[bool]] = {}
    missed = []
    for req in requests:
        ok = wake_detects(m.wake, read_wav(root / req["file"]))
        by.setdefault(req["condition"], []).append(ok)
        if not ok:
            missed.append(req["file"])
    m.wake.reset()
    per = {c: {"n": len(v), "false_reject_pct": round(100 * (1 - sum(v) / len(v)), 2)} for c, v in by.items()}
    noisy = [x for c, v in by.items() if c != "clean" for x in v]
    return {"per_condition": per,
            "noisy": {"n": len(noisy), "false_reject_pct": round(100 * (1 - sum(noisy) / len(noisy)), 2)}
            if noisy else None, "missed": missed}


def run_wake_negatives(m: Models, root: Path, manifest: dict[str, Any], minutes: float, progress: Any
                       ) -> dict[str, Any]:
    """False accepts per hour: the detector over looped, varied negative audio, faster than real time."""
    m.wake.reset()
    fired: list[float] = []
    fed = 0
    cpu0, t0 = m.wake.cpu_s, time.monotonic()
    for block in negative_stream(manifest, root, minutes * 60):
        for i in range(0, len(block), BLOCK):
            piece = block[i:i + BLOCK]
            fed += len(piece)
            for d in m.wake.process(piece, fed / SAMPLE_RATE):
                fired.append(round(d.t, 2))
        if int(fed / SAMPLE_RATE) % 600 < 10:
            progress(f"negatives: {fed / SAMPLE_RATE / 60:.0f} of {minutes:.0f} min, {len(fired)} false accepts")
    m.wake.reset()
    hours = fed / SAMPLE_RATE / 3600
    return {"hours": round(hours, 3), "false_accepts": len(fired), "per_hour": round(len(fired) / hours, 3)
            if hours else None, "at_s": fired[:50], "wake_cpu_rtf": round((m.wake.cpu_s - cpu0) / (hours * 3600), 4),
            "wall_s": round(time.monotonic() - t0, 1)}


def run_conformance_text() -> dict[str, Any]:
    """Home Assistant's English intent test sentences as text through the fast path (tools/conformance.py)."""
    path = REPO_ROOT / "tools" / "conformance.py"
    spec = importlib.util.spec_from_file_location("edge_agent_conformance", path)
    if spec is None or spec.loader is None or not path.is_file():
        return {"error": f"{path} not found"}
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    fixtures = mod.DEFAULT_DIR / "_fixtures.yaml"
    if not fixtures.is_file():
        return {"error": f"{fixtures} not found (Home Assistant's intent tests)"}
    from edge_agent.config import HomeSettings
    from edge_agent.home import Home

    cases = mod.load_cases(mod.DEFAULT_DIR, mod.SUPPORTED_INTENTS)
    rep = mod.run_conformance(mod.fast_matcher(fixtures), cases, home=Home.load(HomeSettings(), fixtures))
    return {"sentences": len(cases), "passed": rep.passed, "accuracy_pct": round(100 * rep.rate, 2),
            "ms_per_sentence": round(1000 * rep.seconds / max(1, len(cases)), 2)}


def run_cli(root: Path, manifest: dict[str, Any], config: str | None, progress: Any) -> dict[str, Any]:
    """The real ``edge-agent run --input FILE --realtime --output OUT.wav`` process on one command and one question:
    its turn log and its peak RSS with all models loaded (the child's own VmHWM, sampled until it exits)."""
    reqs = [r for r in manifest["requests"] if r["condition"] == "clean"]
    pick = [next(r for r in reqs if r["kind"] == "command"), next(r for r in reqs if r["kind"] == "question")]
    audio = np.concatenate([read_wav(root / r["file"]) for r in pick] + [np.zeros(SAMPLE_RATE * 2, np.int16)])
    from edge_agent.audio import write_wav

    with tempfile.TemporaryDirectory() as d:
        wav, turns, err = Path(d) / "in.wav", Path(d) / "turns.jsonl", Path(d) / "stderr.txt"
        write_wav(wav, audio)
        cmd = [sys.executable, "-m", "edge_agent", *(["-c", config] if config else []), "run", "--input", str(wav),
               "--realtime", "--output", str(Path(d) / "out.wav"), "--turn-log", str(turns), "--no-mqtt",
               "--home", str(root / manifest["home"])]
        t0 = time.monotonic()
        peak: dict[str, float] = {}
        with open(err, "w") as ferr:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=ferr)
            sampler = threading.Thread(target=_sample_memory, args=(proc.pid, peak), daemon=True)
            sampler.start()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            sampler.join(timeout=1.0)
        wall = time.monotonic() - t0
        records = [json.loads(x) for x in turns.read_text().splitlines()] if turns.exists() else []
        tail = err.read_text()[-1500:]
    peak_rss = peak.get("VmHWM") or round(ru.ru_maxrss / 1024, 1)
    progress(f"cli run: exit {proc.returncode}, {len(records)} turns, peak RSS {peak_rss:.0f} MB")
    lat = []
    for r in records:
        if r.get("t_speech_end") and r.get("t_first_audio"):
            lat.append({"transcript": r["transcript"], "used_llm": r["used_llm"],
                        "first_audio_ms": round(1000 * (r["t_first_audio"] - r["t_speech_end"]), 1)})
    return {"command": " ".join(cmd[1:]), "exit": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": peak_rss, "sampled_peak_mb": peak, "turns": lat,
            "stderr_tail": tail if proc.returncode else ""}


def _sample_memory(pid: int, peak: dict[str, float], every_s: float = 0.05) -> None:
    """Largest RssAnon (heap, arenas, KV cache) and RssFile (mapped model files, reclaimable) of a process, sampled
    until it exits: the kernel's peak RSS alone does not say how much of it is file-backed."""
    path = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = path.read_text()
        except OSError:
            return
        for line in text.splitlines():
            key = line.split(":", 1)[0]
            # VmHWM: the kernel's peak RSS of this process image (reset at exec, unlike wait4's ru_maxrss, which
            # also counts the forked copy of the benchmark process before exec)
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                mb = round(int(line.split()[1]) / 1024, 1)
                if mb > peak.get(key, 0.0):
                    peak[key] = mb
        if "State:\tZ" in text:
            return
        time.sleep(every_s)


# --------------------------------------------------------------------------------------------------- report


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    agg: dict[str, Any] = {}
    for kind, label in (("command", "fast"), ("question", "llm")):
        rs = [r for r in rows if r["request"]["kind"] == kind]
        stages = {key: summary([r["lat"].get(key) for r in rs]) for key, _, _ in STAGES}
        stages["after_transcript"] = summary([r["lat"].get("after_transcript") for r in rs])
        true_end = [r["turn"]["t_first_audio"] - r["true_speech_end"] for r in rs
                    if r.get("turn") and r["turn"].get("t_first_audio") and r.get("true_speech_end")]
        stages["first_audio_from_true_end"] = summary(true_end)
        stt = [r["turn"]["stt_compute_s"] / max(0.1, r["request"]["request_end_s"] - r["request"]["wake_end_s"])
               for r in rs if r.get("turn") and r["turn"].get("stt_compute_s") is not None]
        by_cond: dict[str, list[bool]] = {}
        for r in rs:
            by_cond.setdefault(r["request"]["condition"], []).append(bool(r["correct"]))
        agg[label] = {"n": len(rs), "stages": stages,
                      "accuracy_pct": round(100 * sum(r["correct"] for r in rs) / len(rs), 1) if rs else None,
                      "accuracy_by_condition": {c: round(100 * sum(v) / len(v), 1) for c, v in by_cond.items()},
                      "stt_rtf_median": round(float(np.median(stt)), 3) if stt else None}
    calls = [c for r in rows for c in r.get("llm_calls", [])]
    ev = sum(c["n_prompt"] - c["n_cached"] for c in calls)
    tp = sum(c["t_prompt_s"] for c in calls)
    ng = sum(c["n_gen"] for c in calls)
    tg = sum(c["t_gen_s"] for c in calls)
    agg["llm"]["tokens"] = {"calls": len(calls), "prompt_tokens_evaluated": ev, "prompt_tok_s": round(ev / tp, 1)
                            if tp else None, "gen_tokens": ng, "gen_tok_s": round(ng / tg, 1) if tg else None,
                            "cached_tokens_mean": round(float(np.mean([c["n_cached"] for c in calls])), 1)
                            if calls else None}
    return agg


def _f(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.0f}{unit}" if abs(x) >= 100 else f"{x:.2f}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"
    return f"{x}{unit}"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, limit, measured, met?) rows."""
    out = []
    a = res.get("e2e", {})

    def row(name: str, limit: str, value: float | None, ok: bool | None) -> None:
        out.append((name, limit, _f(value), "–" if ok is None else ("met" if ok else "NOT met")))

    fa = a.get("fast", {}).get("stages", {})
    v = fa.get("first_audio", {}).get("median_ms")
    row("fast path: end of speech → first audio, median (ms)", "≤ 800", v, None if v is None else v <= 800)
    v = fa.get("after_transcript", {}).get("median_ms")
    row("fast path: final transcript → first audio, median (ms)", "≤ 400", v, None if v is None else v <= 400)
    v = a.get("llm", {}).get("stages", {}).get("first_audio", {}).get("median_ms")
    row("LLM answer: end of speech → first audio, median (ms)", "≤ 1500", v, None if v is None else v <= 1500)
    bs = res.get("baseline_summary") or {}
    sp = bs.get("naive", {}).get("llm", {}).get("speedup_median")
    row("LLM answer: speed-up over the naive pipeline (×, median of per-request ratios)", "≥ 2", sp,
        None if sp is None else sp >= TARGETS["speedup"])
    for kind, name, key in (("fast", "commands", "ha_speedup_fast"), ("llm", "LLM answers", "ha_speedup_llm")):
        sp = bs.get("ha_chain", {}).get(kind, {}).get("ratio_of_medians")
        row(f"{name}: speed-up over the HA-style chain (×, its median / the engine's)", f"≥ {TARGETS[key]:g}", sp,
            None if sp is None else sp >= TARGETS[key])
    v = res.get("idle", {}).get("cpu_pct_of_one_core")
    row("idle listening CPU (% of one core)", "≤ 10", v, None if v is None else v <= 10)
    v = res.get("cli", {}).get("peak_rss_mb")
    row("peak RSS, all models loaded (MB)", "≤ 1200", v, None if v is None else v <= 1200)
    v = res.get("wake", {}).get("per_condition", {}).get("clean", {}).get("false_reject_pct")
    row("wake false rejects, clean speech (%)", "≤ 5", v, None if v is None else v <= 5)
    v = res.get("negatives", {}).get("per_hour")
    row("wake false accepts per hour", "≤ 0.5", v, None if v is None else v <= 0.5)
    return out


BASELINE_ROWS = {  # what each sequential baseline does, for the report
    "naive": "naive: the engine's endpoint wait + whole transcript + whole answer + whole synthesis",
    "ha_chain": "Home Assistant-style chain: 0.7 s of silence + whole transcript + whole answer (HA's templates, "
                "else the LLM) + whole synthesis",
}


BASELINE_NAMES = {"naive": "naive pipeline", "ha_chain": "HA-style chain"}


def baseline_markdown(res: dict[str, Any]) -> list[str]:
    """The streaming engine beside the two sequential baselines, on the same requests: commands and LLM answers."""
    bs = res.get("baseline_summary") or {}
    if not bs or "naive" not in bs or not isinstance(bs["naive"], dict):
        return []
    kinds = [k for k in ("fast", "llm") if any(k in v for v in bs.values())]
    heads = {"fast": "commands", "llm": "LLM answers"}
    L = ["### Streaming engine vs two sequential baselines (same requests, same models)", "",
         "| end of speech → first reply audio (ms) | " + " | ".join(f"{heads[k]} median | {heads[k]} p95"
                                                                    for k in kinds) + " |",
         "|---|" + "---|---|" * len(kinds)]

    def cells(get: Any) -> str:
        return " | ".join(" | ".join(_f(x) for x in get(k)) for k in kinds)

    def stat(v: dict[str, Any], k: str, *path: str) -> Any:
        for p in (k, *path):
            v = v.get(p) if isinstance(v, dict) else None
        return v

    engines = {name: [stat(v, k, "engine") for k in kinds] for name, v in bs.items()}
    for name, v in bs.items():  # one row when every baseline ran on the same requests (as run_e2e does)
        if len({repr(e) for e in engines.values()}) > 1 or name == next(iter(bs)):
            which = f"the {BASELINE_NAMES.get(name, name)}'s requests" if len(
                {repr(e) for e in engines.values()}) > 1 else "the same requests"
            L.append(f"| streaming engine ({which}) | "
                     + cells(lambda k, v=v: (stat(v, k, "engine", "median_ms"), stat(v, k, "engine", "p95_ms")))
                     + " |")
    for name, v in bs.items():
        L.append(f"| {BASELINE_ROWS.get(name, name)} | "
                 + cells(lambda k, v=v: (stat(v, k, "chain", "median_ms"), stat(v, k, "chain", "p95_ms"))) + " |")
    for name, v in bs.items():
        L.append(f"| speed-up over the {BASELINE_NAMES.get(name, name)} (its median / the engine's, its p95 / the "
                 "engine's) | " + " | ".join(f"{_f(stat(v, k, 'ratio_of_medians'))}× | "
                                            f"{_f(stat(v, k, 'ratio_of_p95'))}×" for k in kinds) + " |")
    notes = []
    for name, v in bs.items():
        for k in kinds:
            x = v.get(k)
            if not x:
                continue
            p = x["parts_median_ms"]
            routes = ", ".join(f"{n} {r}" for r, n in x["routes"].items())
            notes.append(f"{name} on {x['n']} {heads[k]}: endpoint {_f(p['endpoint_s'])} + STT {_f(p['stt_s'])} + "
                         f"whole answer {_f(p['answer_s'])} ({routes}) + whole synthesis {_f(p['tts_s'])} ms "
                         f"(median of per-request speed-ups {_f(x['speedup_median'])}×)")
    L += ["", "Each baseline ran right after the engine answered the same request (same load; the LLM's cache of "
              "that request evicted first). Stage medians: " + "; ".join(notes) + ".", ""]
    return L


def markdown(res: dict[str, Any]) -> str:
    L: list[str] = []
    a = res.get("e2e")
    if a:
        L += ["### Latency from the end of speech (real engine, real time)", "",
              "| end of speech → | fast path median (ms) | fast path p95 (ms) | LLM median (ms) | LLM p95 (ms) |",
              "|---|---|---|---|---|"]
        labels = [(k, lab) for k, lab, _ in STAGES] + [("after_transcript", "first audio, from final transcript"),
                                                      ("first_audio_from_true_end",
                                                       "first audio, from the true end of the request")]
        for key, lab in labels:
            f, q = a["fast"]["stages"][key], a["llm"]["stages"][key]
            L.append(f"| {lab} | {_f(f['median_ms'])} | {_f(f['p95_ms'])} | {_f(q['median_ms'])} | "
                     f"{_f(q['p95_ms'])} |")
        L += ["", f"Turns: {a['fast']['n']} fast-path commands, {a['llm']['n']} LLM questions. Intent accuracy spoken "
                  f"end to end: commands {_f(a['fast']['accuracy_pct'])} % "
                  f"({', '.join(f'{c} {p:.0f} %' for c, p in a['fast']['accuracy_by_condition'].items())}); "
                  f"questions routed to the LLM and answered {_f(a['llm']['accuracy_pct'])} %.", ""]
    L += baseline_markdown(res)
    L += ["### Components", "", "| measure | value |", "|---|---|"]
    w = res.get("wer")
    if w:
        L.append(f"| STT WER on real read speech (librivox, {w['files']} files, {w['words']} words) | "
                 f"{_f(100 * w['wer'] if w['wer'] is not None else None)} % |")
        L.append(f"| STT real-time factor (librivox, whole utterances) | {_f(w['rtf'])} |")
    if a and a["fast"].get("stt_rtf_median") is not None:
        L.append(f"| STT finish time / request length, in the loop (median) | {_f(a['fast']['stt_rtf_median'])} |")
    t = res.get("tts")
    if t:
        L.append(f"| TTS time to first audio, median / p95 (ms, {t['n']} replies) | "
                 f"{_f(t['first_audio']['median_ms'])} / {_f(t['first_audio']['p95_ms'])} |")
        L.append(f"| TTS real-time factor (median) | {_f(t['rtf_median'])} |")
    if a:
        tok = a["llm"]["tokens"]
        L.append(f"| LLM prompt evaluation (tokens/s; {tok['prompt_tokens_evaluated']} uncached tokens, "
                 f"{_f(tok['cached_tokens_mean'])} cached per call) | {_f(tok['prompt_tok_s'])} |")
        L.append(f"| LLM generation (tokens/s; {tok['gen_tokens']} tokens) | {_f(tok['gen_tok_s'])} |")
    i = res.get("idle")
    if i:
        L.append(f"| idle listening CPU, whole process (% of one core, {i['seconds']:.0f} s) | "
                 f"{_f(i['cpu_pct_of_one_core'])} % (wake word {_f(i['wake_cpu_pct'])} %) |")
    c = res.get("cli")
    if c and c.get("peak_rss_mb"):
        L.append(f"| peak RSS of `edge-agent run`, all models loaded | {_f(c['peak_rss_mb'])} MB |")
        sp = c.get("sampled_peak_mb") or {}
        if sp:
            L.append("| of which, sampled peaks: anonymous / file-backed (mapped models) | "
                     f"{_f(sp.get('RssAnon'))} MB / {_f(sp.get('RssFile'))} MB |")
    wk = res.get("wake")
    if wk:
        for cond, v in wk["per_condition"].items():
            L.append(f"| wake false rejects, {cond} ({v['n']} requests) | {_f(v['false_reject_pct'])} % |")
    n = res.get("negatives")
    if n:
        L.append(f"| wake false accepts ({n['hours']:.2f} h of negative audio) | {n['false_accepts']} "
                 f"({_f(n['per_hour'])} per hour) |")
    cf = res.get("conformance")
    if cf and "accuracy_pct" in cf:
        L.append(f"| intent accuracy on HA conformance sentences as text ({cf['sentences']}) | "
                 f"{_f(cf['accuracy_pct'])} % ({cf['ms_per_sentence']} ms each) |")
    L += ["", "### Targets", "", "| target | limit | measured | |", "|---|---|---|---|"]
    L += [f"| {a_} | {b_} | {c_} | {d_} |" for a_, b_, c_, d_ in targets(res)]
    L += ["", f"Load average (1/5/15 min) at start {res['load_start']}, at end {res['load_end']}; "
              f"{res['machine']['cores']} cores, {res['machine']['cpu_model']}. MQTT: {res.get('mqtt', 'off')}."]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------------- main


def pick_requests(manifest: dict[str, Any], full: bool, conditions: list[str] | None, voices: list[str] | None,
                  limit: int | None) -> list[dict[str, Any]]:
    """Requests for the end-to-end run: every voice clean, plus the first voice in the noisy conditions asked for.
    Interleaved command/question so the load drifts over both kinds alike."""
    reqs = manifest["requests"]
    first_voice = manifest["voices"][0]["name"]
    noisy = conditions if conditions is not None else (["white10", "pink10"] if full else [])
    out = [r for r in reqs if (r["condition"] == "clean" and (voices is None or r["voice"] in voices))
           or (r["condition"] in noisy and r["voice"] == first_voice)]
    cmds = [r for r in out if r["kind"] == "command"]
    qs = [r for r in out if r["kind"] == "question"]
    mixed: list[dict[str, Any]] = []
    dq_c, dq_q = deque(cmds), deque(qs)
    while dq_c or dq_q:
        for _ in range(2):
            if dq_c:
                mixed.append(dq_c.popleft())
        if dq_q:
            mixed.append(dq_q.popleft())
    return mixed[:limit] if limit else mixed


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-agent bench", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small set, a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="every voice and noise, an hour of negatives")
    ap.add_argument("-c", "--config", help="config file (default: the repository's config.yaml)")
    ap.add_argument("--set", type=Path, default=DEFAULT_DIR, help=f"bench set folder (default {DEFAULT_DIR})")
    ap.add_argument("--requests", type=int, help="at most this many end-to-end requests")
    ap.add_argument("--conditions", help="noisy conditions for the end-to-end run, comma-separated "
                                         "(default: none in quick mode, white10,pink10 in full mode)")
    ap.add_argument("--voices", help="voices for the clean end-to-end run, comma-separated (default: all kept)")
    ap.add_argument("--baseline", type=int, help="requests of each kind (commands, questions) also run through the "
                    "two sequential baselines, the naive pipeline and the HA-style chain (default 3 quick, 16 full)")
    ap.add_argument("--idle-s", type=float, help="seconds of idle listening (default 30 quick, 60 full)")
    ap.add_argument("--negative-minutes", type=float, help="minutes of negative audio (default 3 quick, 60 full)")
    ap.add_argument("--skip", default="", help=f"sections to skip, comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--json", type=Path, help="write the full results (every turn) as JSON here")
    ap.add_argument("--no-mqtt", action="store_true",
                    help="no broker (by default a private Mosquitto runs on loopback and MQTT is on, as in real use, "
                         "so the outbox's disk writes are inside the figures)")
    ap.add_argument("--markdown", type=Path, help="also write the markdown table here")
    budget.add_argument(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    full = bool(args.full)
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    bad = skip - set(SECTIONS)
    if bad:
        print(f"error: --skip: unknown section(s) {sorted(bad)}\nfix: choose from {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    t_start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    try:
        with budget.prepared(args):
            return _run(args, full, skip, progress)
    except EdgeAgentError as e:
        print(f"error[{e.code}]: {e.message}", file=sys.stderr)
        if e.fix:
            print(f"fix: {e.fix}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable --set/--json folder, a full disk
        print(f"error: {e}\nfix: pass a writable folder with --set (and --json/--markdown paths)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, full: bool, skip: set[str], progress: Any) -> int:
    res: dict[str, Any] = {"mode": "full" if full else "quick", "date": _dt.datetime.now(_dt.UTC)
                           .strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "load_start": loadavg(),
                           "command": "edge-agent bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"]
                                                                     else sys.argv[1:])}
    s = bench_settings(args.config)
    broker = None
    if not args.no_mqtt:
        broker, s = _with_broker(s)
        res["mqtt"] = f"on: Mosquitto on 127.0.0.1:{broker.port}, outbox on {s.mqtt.outbox_dir}"
    else:
        res["mqtt"] = "off (--no-mqtt)"
    try:
        return _run_with(args, full, skip, progress, res, s)
    finally:
        if broker is not None:
            broker.stop()


def _with_broker(s: Settings) -> tuple[Any, Settings]:
    """A private Mosquitto on a free loopback port (the test suite's own starter) and settings that use it."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.broker import Broker
    except ImportError as e:
        raise ConfigError(f"cannot start the bench's broker ({e})",
                          fix="run from a checkout with mosquitto installed (apt-get install mosquitto), or --no-mqtt"
                          ) from None
    d = Path(tempfile.mkdtemp(prefix="edge-bench-mqtt-"))
    broker = Broker(d / "broker").start()
    mq = dataclasses.replace(s.mqtt, enabled=True, host="127.0.0.1", port=broker.port, outbox_dir=str(d / "outbox"))
    return broker, dataclasses.replace(s, mqtt=mq)


def _run_with(args: argparse.Namespace, full: bool, skip: set[str], progress: Any, res: dict[str, Any],
              s: Settings) -> int:
    root = args.set.expanduser()
    progress(f"bench set in {root} ({res['mode']})")
    manifest = make_bench_set(s, root, quick=not full, negative_minutes=args.negative_minutes)
    res["set"] = {"requests": len(manifest["requests"]), "voices": [v["name"] for v in manifest["voices"]],
                  "dropped_voices": manifest["dropped_voices"], "negative_clips": len(manifest["negatives"])}
    progress(f"loading models (voices kept: {res['set']['voices']}, dropped: {manifest['dropped_voices']})")
    # --cpu-budget: from here on this process runs under the quota, the models' loading included, so that each engine
    # picks its threads for the CPU it has, as under systemd's CPUQuota= (edge_agent/cpu_share.py)
    budget.start(args, res)
    m = load_models(s, str(root / manifest["home"]))
    res["model_load_s"] = m.load_s
    res["endpoint_wait_s"] = s.vad.trailing_silence_s
    t0 = time.monotonic()
    cond = None if args.conditions is None else [c for c in args.conditions.split(",") if c]
    voices = None if args.voices is None else [v for v in args.voices.split(",") if v]
    rows: list[dict[str, Any]] = []
    if "e2e" not in skip:
        reqs = pick_requests(manifest, full, cond, voices, args.requests)
        progress(f"end to end: {len(reqs)} requests in real time")
        nb = 0 if "baseline" in skip else (args.baseline if args.baseline is not None else (16 if full else 3))
        rows, base = run_e2e(m, root, reqs, progress, nb)
        res["e2e"] = aggregate(rows)
        res["e2e_s"] = round(time.monotonic() - t0, 1)
        if base:
            res["baseline"] = [b for b in base if b["pipeline"] == "naive"]
            res["ha_chain"] = [b for b in base if b["pipeline"] == "ha_chain"]
            res["baseline_summary"] = summarize_baselines(base)
    if "idle" not in skip:
        secs = args.idle_s or (60.0 if full else 30.0)
        progress(f"idle listening for {secs:.0f} s")
        res["idle"] = run_idle(m, secs)
    if "wer" not in skip:
        progress("WER on librivox")
        res["wer"] = run_wer(m)
    if "tts" not in skip:
        texts = list(dict.fromkeys(r["turn"]["reply_full"] for r in rows if r.get("turn") and
                                   r["turn"].get("reply_full")))[:24] or ["It is ten past nine.",
                                                                          "Paris is the capital of France."]
        progress(f"TTS on {len(texts)} replies")
        res["tts"] = run_tts(m, texts)
    if "wake" not in skip:
        progress(f"wake word over {len(manifest['requests'])} spoken requests")
        res["wake"] = run_wake_positives(m, root, manifest["requests"])
    if "negatives" not in skip:
        minutes = args.negative_minutes or manifest.get("negative_minutes") or (60.0 if full else 3.0)
        progress(f"wake word over {minutes:.0f} min of negative audio")
        res["negatives"] = run_wake_negatives(m, root, manifest, minutes, progress)
    if "conformance" not in skip:
        progress("conformance sentences (text)")
        res["conformance"] = run_conformance_text()
    res["bench_process_peak_rss_mb"] = vm_hwm_mb()
    if "cli" not in skip:
        progress("the real `edge-agent run --input --realtime` process (peak RSS)")
        res["cli"] = run_cli(root, manifest, args.config, progress)
    res["load_end"] = loadavg()
    res["total_s"] = round(time.monotonic() - t0, 1)
    res["rows"] = [{"file": r["request"]["file"], "kind": r["request"]["kind"], "text": r["request"]["text"],
                    "voice": r["request"]["voice"],
                    "condition": r["request"]["condition"], "verdict": r["verdict"],
                    "lat_ms": {k: _ms(v) for k, v in r["lat"].items()}, "load": r["load"],
                    "turn": r["turn"], "llm_calls": r["llm_calls"], "loop_caught_up_s": r.get("loop_caught_up_s"),
                    "threads_cpu_s": r.get("threads_cpu_s")}
                   for r in rows]
    md = budget.header(args, res) + markdown(res)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
