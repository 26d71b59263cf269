#!/usr/bin/env python3
"""Piper's memory and speed with and without ``tts.release_memory``: one process per mode, the same seeded mix of
sentences (3 to 50 words, as replies vary), with the daemon's malloc settings (2 arenas, ``malloc_trim`` after each
sentence as after each turn), printing the process's anonymous memory (RssAnon: the heap, where ONNX
Runtime's arena lives) and the synthesis CPU seconds per second of audio every ``--every`` sentences.

Why: the 2-hour soak's RSS climbed in steps with each new longest reply. ONNX Runtime's CPU arena keeps the chunks of
the largest input it has seen; Piper's input length changes with every sentence. This shows the step and its price.

Usage: .venv/bin/python tools/tts_memory.py [--sentences 120] [--every 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the quick brown fox jumps over a lazy dog while cats sleep in warm sunny places near the river and "
         "children play with seven red kites on windy autumn afternoons").split()
LENGTHS = (3, 6, 10, 20, 35, 50)


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(release: bool, sentences: int, every: int, seed: int) -> None:
    sys.path.insert(0, str(ROOT))
    from edge_agent import memory
    from edge_agent.config import load_settings
    from edge_agent.tts import from_settings

    memory.limit_arenas()  # as the daemon does at start
    settings = load_settings(ROOT / "config.yaml")
    settings = dataclasses.replace(settings, tts=dataclasses.replace(settings.tts, release_memory=release))
    tts = from_settings(settings)
    tts.load()
    tts.warmup()
    rng = random.Random(seed)
    cpu = audio_s = 0.0
    rows = [{"sentences": 0, "rss_anon_mb": round(rss_anon_mb())}]
    for i in range(1, sentences + 1):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.choice(LENGTHS))) + "."
        t0 = time.process_time()
        audio = tts.synthesize_all(text)
        cpu += time.process_time() - t0
        audio_s += len(audio) / tts.sample_rate
        memory.trim()  # as the daemon does after each turn
        if i % every == 0:
            rows.append({"sentences": i, "rss_anon_mb": round(rss_anon_mb()),
                         "cpu_per_audio_s": round(cpu / audio_s, 4)})
    print(json.dumps(rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=120)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child == "on", a.sentences, a.every, a.seed)
        return 0
    results = {}
    for mode in ("off", "on"):  # one fresh process each: the arena of one must not colour the other
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--sentences", str(a.sentences),
                              "--every", str(a.every), "--seed", str(a.seed)], capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print("release_memory | " + " | ".join(f"after {r['sentences']}" for r in results["on"]) + " | CPU s per audio s")
    for mode in ("off", "on"):
        rows = results[mode]
        print(f"{mode:>14} | " + " | ".join(f"{r['rss_anon_mb']} MB" for r in rows)
              + f" | {rows[-1]['cpu_per_audio_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
