#!/usr/bin/env python3
"""Whisper with and without the home's names as its prompt (``stt.whisper.prompt``), on spoken paraphrases.

Every sentence of tests/data/paraphrases.yaml (positives and negatives, dev and held-out halves) is spoken by a voice
drawn per sentence (``--seed``) from the voices of tools/spoken_eval.py (Piper joe normal and slowed, four espeak-ng
voices), transcribed by the configured faster-whisper model once per prompt mode, and the transcript is put through
the fast path (templates + tolerant tier, in-process). Per mode it prints:

- WER of the transcripts against the sentences as written;
- positives right (intent, value slots and targets judged as in tools/paraphrase.py), asked back about the right
  device, sent to the LLM, asked back about another device (nothing done), and wrong (acted wrongly);
- negatives (chatter, questions, unknown devices) that produced an action: the names in the prompt must not make
  Whisper put a device into words that have none;
- noise clips (white and pink noise, a hum, silence; no words at all) transcribed to any text: the prompt must not
  be read out of nothing;
- the decode time per utterance (median / p95; ``finish()`` of the stream, the daemon's final transcript).

This is the speech-recognition lever alone, without the daemon's endpointing, wake word or MQTT: the end-to-end
figure stays tools/spoken_eval.py's.

    .venv/bin/python tools/stt_prime_eval.py [--half dev|heldout|both] [--modes "off|auto"] [--seed 1] [--timing 60]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import paraphrase  # noqa: E402
import spoken_eval  # noqa: E402

from edge_agent.audio import SAMPLE_RATE  # noqa: E402
from edge_agent.stt_text import normalize_text, prime_text, word_error_rate  # noqa: E402
from edge_agent.targets import DEVICE_INTENTS  # noqa: E402

PAD_S = 0.3  # silence around each utterance, as the endpointer leaves it


def noise_clips(seed: int) -> dict[str, np.ndarray]:
    """Sound with no words: what a primed Whisper must still transcribe as nothing."""
    rng = np.random.default_rng(seed)
    n = int(2.0 * SAMPLE_RATE)
    white = rng.normal(0, 1, n)
    pink = np.cumsum(rng.normal(0, 1, n))  # brown-ish: the low rumble of a room
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")
    t = np.arange(n) / SAMPLE_RATE
    out = {"silence": np.zeros(n)}
    for level in (300, 1500):
        out[f"white{level}"] = white / np.abs(white).max() * level
        out[f"pink{level}"] = pink / np.abs(pink).max() * level
    out["hum"] = 2000 * np.sin(2 * np.pi * 100 * t)
    out["fan"] = np.convolve(white, np.ones(8) / 8, mode="same") * 800 / np.abs(white).max()
    return {k: v.astype(np.int16) for k, v in out.items()}


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))] if s else 0.0


def run(halves: list[str], modes: list[str], seed: int, voices: spoken_eval.Voices, timing: int = 0
        ) -> dict[str, Any]:
    from edge_agent.config import HomeSettings, load_settings
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher
    from edge_agent.stt import make_engine

    settings = load_settings(ROOT / "config.yaml")
    home_file, sets = paraphrase.load_set()
    home = Home.load(HomeSettings(), home_file)
    matcher = IntentMatcher(home)
    engine = make_engine(settings.stt, settings)
    engine.load()
    engine.warmup()
    rng = random.Random(seed)
    names = list(spoken_eval.VOICES)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), dtype=np.int16)
    items = [(h, it, rng.choice(names)) for h in halves for it in sets[h] if it.kind in ("positive", "negative")]
    audio = [np.concatenate([pad, voices.say(v, it.text), pad]) for _, it, v in items]
    noise = noise_clips(seed)
    out: dict[str, Any] = {"items": len(items), "prompt": {}, "modes": {}}
    for mode in modes:
        words = prime_text(mode, *home.spoken_names()) if mode != "off" else ""
        engine.prime(words)
        out["prompt"][mode] = words
        rows: list[dict[str, Any]] = []
        times: list[float] = []
        f0, p0 = getattr(engine, "fallbacks", 0), getattr(engine, "prime_fallbacks", 0)
        l0 = getattr(engine, "prime_loops", 0)
        for (half, it, voice), a in zip(items, audio, strict=True):
            t0 = time.perf_counter()
            heard = engine.transcribe(a).text
            times.append(time.perf_counter() - t0)
            call = matcher.match(heard, it.area, ask_back=True)
            clarify = getattr(call, "clarify", None) if call is not None else None
            row = {"half": half, "kind": it.kind, "said": it.text, "heard": heard, "voice": voice,
                   "wer": word_error_rate(normalize_text(it.text), normalize_text(heard))}
            if it.kind == "positive":
                ok, why = paraphrase.judge(it, call, home)
                row["result"] = ("right" if ok and not clarify else "asked-right" if ok
                                 else "to-llm" if call is None else "asked-wrong" if clarify else "wrong")
                row["why"] = why
            else:
                acted = call is not None and not (call.name in DEVICE_INTENTS and not call.entities)
                row["result"] = "acted" if acted else "ok"
                row["why"] = f"{call.name} {call.entities}" if acted and call is not None else ""
            rows.append(row)
        noise_text = {k: engine.transcribe(v).text for k, v in noise.items()}
        summary: dict[str, Any] = {"full_window_redone": getattr(engine, "fallbacks", 0) - f0,
                                   "redone_without_names": getattr(engine, "prime_fallbacks", 0) - p0,
                                   "loops_first_saying_kept": getattr(engine, "prime_loops", 0) - l0,
                                   "decode_ms_median": round(1000 * statistics.median(times), 1),
                                   "decode_ms_p95": round(1000 * _p95(times), 1),
                                   "noise_with_text": {k: v for k, v in noise_text.items() if v.strip()}}
        for half in halves:
            pos = [r for r in rows if r["half"] == half and r["kind"] == "positive"]
            neg = [r for r in rows if r["half"] == half and r["kind"] == "negative"]
            summary[half] = {
                "positives": len(pos),
                "right": sum(r["result"] == "right" for r in pos),
                "asked_right": sum(r["result"] == "asked-right" for r in pos),
                "to_llm": sum(r["result"] == "to-llm" for r in pos),
                "asked_wrong": sum(r["result"] == "asked-wrong" for r in pos),
                "wrong": sum(r["result"] == "wrong" for r in pos),
                "wer": round(statistics.mean(r["wer"] for r in pos + neg), 3) if pos + neg else 0.0,
                "negatives": len(neg),
                "negatives_acted": sum(r["result"] == "acted" for r in neg),
            }
        out["modes"][mode] = {"summary": summary, "rows": rows}
    if timing:  # decode time of the same utterances, the modes interleaved so the machine's load hits them alike
        per: dict[str, list[float]] = {m: [] for m in modes}
        for i, a in enumerate(audio[:timing]):
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
                engine.prime(out["prompt"][mode])
                t0 = time.perf_counter()
                engine.transcribe(a)
                per[mode].append(time.perf_counter() - t0)
        out["timing"] = {m: {"n": len(v), "ms_median": round(1000 * statistics.median(v), 1),
                             "ms_p95": round(1000 * _p95(v), 1)} for m, v in per.items()}
    engine.prime("")
    return out


def print_report(out: dict[str, Any], halves: list[str], show: int) -> None:
    modes = list(out["modes"])
    for mode, t in out.get("timing", {}).items():
        print(f"decode time, interleaved, {t['n']} utterances, mode {mode[:40]!r}: {t['ms_median']:.0f} ms median,"
              f" {t['ms_p95']:.0f} ms p95")
    for mode in modes:
        s = out["modes"][mode]["summary"]
        print(f"mode {mode}: prompt {out['prompt'][mode]!r}")
        print(f"  decode {s['decode_ms_median']:.0f} ms median, {s['decode_ms_p95']:.0f} ms p95; doubtful decodes"
              f" redone without the names {s['redone_without_names']}, over the full window {s['full_window_redone']};"
              f" noise clips with text: {s['noise_with_text'] or 'none'}")
        for half in halves:
            h = s[half]
            print(f"  {half:8} right {h['right']}/{h['positives']} ({100 * h['right'] / max(1, h['positives']):.1f} %)"
                  f"  asked-right {h['asked_right']}  to-LLM {h['to_llm']}  asked-wrong {h['asked_wrong']}"
                  f"  wrong {h['wrong']}"
                  f"  | WER {h['wer']:.3f}  | negatives acted {h['negatives_acted']}/{h['negatives']}")
    for other in modes[1:] if show else []:
        a, b = out["modes"][modes[0]]["rows"], out["modes"][other]["rows"]
        changed = [(x, y) for x, y in zip(a, b, strict=True) if x["result"] != y["result"] and x["half"] == "dev"]
        print(f"dev sentences whose result changed ({modes[0]} -> {other}): {len(changed)}")
        for x, y in changed[:show]:
            print(f"  {x['said']!r} [{x['voice']}]: {x['heard']!r} {x['result']} -> {y['heard']!r} {y['result']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=["dev", "heldout", "both"], default="both")
    ap.add_argument("--modes", default="off|auto", help="separated by |: off, auto, or a literal prompt text")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=30, help="print this many dev sentences whose result changed")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edge-agent" / "voices")
    ap.add_argument("--timing", type=int, default=60, help="time this many utterances with the modes interleaved")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    halves = ["dev", "heldout"] if args.half == "both" else [args.half]
    out = run(halves, [m.strip() for m in args.modes.split("|") if m.strip()], args.seed,
              spoken_eval.Voices(args.cache), args.timing)
    print_report(out, halves, args.show)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
