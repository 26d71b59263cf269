#!/usr/bin/env python3
"""Wake-to-listening latency through the real loop: from the loop taking the audio chunk on which the wake word
fired to the listener being open (fed the pre-roll), per detection, split into clear and doubtful detections.

    nice -n 10 .venv/bin/python tools/wake_latency.py [--model hey_jarvis_v2] [--band 0.02] [--code DIR]
        [--repeats 3] [--json OUT]

The engine is the real one (``Engine``: the wake model (``--model``, the default's engine and cutoff), Silero VAD,
Whisper tiny.en, Piper for the cues, the brain's fast path without the LLM), fed in real time by a scripted
microphone: "Hey Jarvis." said by Piper (6 speed/noise settings) and espeak-ng (8 voices), each after 0.3-0.5 s of
silence (the lead varies so the 80 ms frames fall differently), then silence until the no-speech timeout (0.5 s) ends
the turn.

The measurement wraps the engine's own methods (``_process``, ``_open_listener``, ``dispatch``) on the instance, so
the same tool measures an older checkout: ``--code DIR`` imports ``edge_agent`` from DIR (e.g. the commit before the
second look, unpacked with ``git archive``; give DIR a ``models`` link). ``--band`` sets ``second_look_band`` on the
wake model (only where the code has it); a detection scoring at or above cutoff + band is "clear" in either run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="wake.models[0].model (default: the settings' default, hey_jarvis_v2 since the eighth "
                         "session; hey_jarvis = openWakeWord)")
    ap.add_argument("--band", type=float, default=None, help="wake.models[0].second_look_band (None: not set)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose edge_agent is measured")
    ap.add_argument("--repeats", type=int, default=3, help="leads per clip (0.3, 0.4, 0.5 s, ...)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve()))
    import edge_agent
    from edge_agent import turn_events as ev
    from edge_agent.audio import SAMPLE_RATE
    from edge_agent.audio_io import Speaker
    from edge_agent.brain import Brain
    from edge_agent.config import WakeModelSettings, load_settings
    from edge_agent.engine import Engine, TurnLog
    from edge_agent.stt import make_engine
    from edge_agent.tts import PiperTts
    from edge_agent.vad import Segmenter, SileroVad
    from edge_agent.wake import WakeDetector

    print(f"edge_agent from {edge_agent.__file__}", file=sys.stderr)
    sys.path.insert(1, str(ROOT / "tools"))  # after edge_agent: make_negative_set puts its own checkout first
    from make_negative_set import PIPER, Piper, espeak
    wake_model: dict = {"model": args.model} if args.model else {}
    has_band = "second_look_band" in {f.name for f in dataclasses.fields(WakeModelSettings)}
    if args.band is not None and has_band:  # older code: the band only sorts the detections into clear/doubtful
        wake_model["second_look_band"] = args.band
    s = load_settings(data={"mqtt": {"enabled": False}, "log": {"turn_log": None}, "wake": {"models": [wake_model]},
                            "vad": {"no_speech_timeout_s": 0.5}, "conversation": {"follow_up_s": 0.0}})
    pool = Path(os.environ.get("EDGE_AGENT_CACHE", Path.home() / ".cache" / "edge-agent")) / "wake-bench" / "positives"
    pool.mkdir(parents=True, exist_ok=True)
    piper = Piper(s.path(s.models_dir))
    voices = [("espeak", v, sp) for v, sp in [("en-us", 150), ("en", 140), ("en-us+f3", 165), ("en-gb-x-rp", 160),
                                              ("en+m7", 140), ("en+f4", 175), ("en-gb-scotland", 150),
                                              ("en-029", 150)]]
    clips = [(f"piper:joe@{ln}/{ns}", piper.say("Hey Jarvis.", ln, ns, pool)) for ln, ns in PIPER]
    clips += [(f"espeak:{v}@{sp}", espeak("Hey Jarvis.", v, sp, pool)) for _, v, sp in voices]

    tts = PiperTts.from_settings(s)
    tts.load()
    stt = make_engine(s.stt, s)
    stt.load()
    stt.warmup()
    wake = WakeDetector.from_settings(s)
    (detection_name,) = wake.names
    cutoff = wake.threshold_for(detection_name)
    spec = (getattr(wake, "specs", None) or {}).get(detection_name)  # the band in force (the model's own if not set)
    band = float(getattr(spec, "second_look_band", None) or args.band or 0.0)
    mic = _Mic(SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        speaker = Speaker(tts.sample_rate, file=Path(tmp) / "out.wav", realtime=True)
        eng = Engine(s, source=mic, speaker=speaker, wake=wake, vad=SileroVad.from_settings(s),
                     segmenter_factory=lambda: Segmenter(s.vad), stt=stt,
                     brain=Brain.from_settings(s, home_file=str(ROOT / "tests" / "data" / "home.yaml"),
                                               use_llm=False), tts=tts, turn_log=TurnLog(None))
        got: list[dict] = []
        mark = {"chunk": 0.0, "score": None, "t_detect": None}
        process, open_listener, dispatch = eng._process, eng._open_listener, eng.dispatch

        def timed_process(chunk):
            mark["chunk"] = time.perf_counter()
            process(chunk)

        def timed_dispatch(event):
            if isinstance(event, ev.WakeDetected):
                mark["score"], mark["t_detect"] = event.score, event.t_detect
            dispatch(event)

        def timed_open(turn, after_wake, **kw):
            open_listener(turn, after_wake, **kw)
            if after_wake and mark["score"] is not None:
                got.append({"latency_ms": round(1000 * (time.perf_counter() - mark["chunk"]), 3),
                            "from_audio_ms": round(1000 * (time.monotonic() - mark["t_detect"]), 1),
                            "score": round(mark["score"], 4), "clear": mark["score"] >= cutoff + band})
                mark["score"] = None

        eng._process, eng._open_listener, eng.dispatch = timed_process, timed_open, timed_dispatch
        speaker.start()
        runner = threading.Thread(target=eng.run, daemon=True)
        runner.start()
        while mic.t0 == 0.0:
            time.sleep(0.01)
        speaker.file_t0 = mic.t0
        t_start, load_before = time.monotonic(), os.getloadavg()[0]
        for r in range(args.repeats):
            for name, x in clips:
                lead = np.zeros(int((0.3 + 0.1 * r) * SAMPLE_RATE), np.int16)
                n_turns = len(eng.history)
                mic.push(np.concatenate([lead, x, np.zeros(int(1.6 * SAMPLE_RATE), np.int16)]))
                while not mic.idle() or eng.state.value != "idle" or eng.controller.responding:
                    time.sleep(0.02)
                detected = len(eng.history) > n_turns
                print(f"{name} lead {lead.size / SAMPLE_RATE:.1f} s: {'detected' if detected else 'missed'}"
                      f" {got[-1] if detected and got else ''}", file=sys.stderr)
        eng.stop_event.set()
        runner.join(timeout=10)
        looks = [h.get("stages", {}).get("wake_check") for h in eng.history]
    res = {"code": str(args.code), "model": detection_name, "band": band, "code_has_second_look": has_band,
           "cutoff": cutoff,
           "clips": len(clips), "repeats": args.repeats,
           "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "wall_s": round(time.monotonic() - t_start),
           "detections": got, "second_looks": [x for x in looks if x]}
    for kind, sel in (("clear", True), ("doubtful", False)):
        lat = np.array([g["latency_ms"] for g in got if g["clear"] == sel])
        aud = np.array([g["from_audio_ms"] for g in got if g["clear"] == sel])
        res[kind] = ({"n": int(lat.size), "median_ms": round(float(np.median(lat)), 2),
                      "p90_ms": round(float(np.percentile(lat, 90)), 2), "max_ms": round(float(lat.max()), 2),
                      "from_audio_median_ms": round(float(np.median(aud)), 1)} if lat.size else {"n": 0})
    print(json.dumps({k: v for k, v in res.items() if k not in ("detections",)}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


class _Mic:
    """A live microphone paced in real time: pushed audio, else silence (tests/test_engine.py's ScriptedMic)."""

    BLOCK = 1280

    def __init__(self, rate: int) -> None:
        import queue

        self.rate = rate
        self.pending: queue.Queue[np.ndarray] = queue.Queue()
        self.buf = np.zeros(0, np.int16)
        self.t0, self.pos, self.alive, self.exhausted = 0.0, 0, True, False

    def push(self, audio: np.ndarray) -> None:
        self.pending.put(audio)

    def idle(self) -> bool:
        return self.pending.empty() and len(self.buf) == 0

    def open(self) -> None:
        self.t0, self.pos = time.monotonic(), 0

    def read(self, timeout: float = 1.0):
        from edge_agent.audio import AudioChunk

        while len(self.buf) < self.BLOCK and not self.pending.empty():
            self.buf = np.concatenate([self.buf, self.pending.get()])
        chunk = np.zeros(self.BLOCK, np.int16)
        n = min(self.BLOCK, len(self.buf))
        chunk[:n], self.buf = self.buf[:n], self.buf[n:]
        start = self.t0 + self.pos / self.rate
        self.pos += self.BLOCK
        delay = self.t0 + self.pos / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return AudioChunk(chunk, start)

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
