#!/usr/bin/env python3
"""How many prompt tokens each LLM turn evaluates (not restored from the cache), over a session as people use it:
fast-path commands and LLM questions interleaved, the spoken history kept between turns (committed as the voice loop
does after playback), the device's area set. This is the per-turn work on the critical path after the transcript:
on a Pi 5 (~35 prompt tokens/s for a 1B model, docs/pi-calibration.md) every 35 tokens is a second.

    .venv/bin/python tools/prompt_tokens.py [--config config.yaml] [--area "living room"] [--rounds 1] [--gap 3]
        [--json OUT]

Prints one line per LLM turn (uncached tokens, prompt tokens, time to the first token) and the median, p90 and max.
The questions are the benchmark's (tools/edge_bench/bench_set.py) plus a second set written for this tool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.edge_bench.bench_set import BENCH_HOME, COMMANDS, QUESTIONS  # noqa: E402

MORE_QUESTIONS = [
    "How long does it take to boil an egg?",
    "What is a good name for a cat?",
    "Can you tell me a short joke?",
    "What should I cook for dinner tonight?",
    "How many minutes are in a day?",
    "Why do leaves change colour in autumn?",
]


def session(rounds: int) -> list[str]:
    """Commands and questions interleaved, two commands then one question, as a household uses it."""
    questions = QUESTIONS + MORE_QUESTIONS
    commands = [c for c, _ in COMMANDS]
    out: list[str] = []
    qi = ci = 0
    for _ in range(rounds):
        for _ in range(len(questions)):
            out += [commands[ci % len(commands)], commands[(ci + 1) % len(commands)], questions[qi % len(questions)]]
            ci, qi = ci + 2, qi + 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--area", default="living room", help="site.area of the device ('' = none)")
    ap.add_argument("--rounds", type=int, default=1, help="times through the question list")
    ap.add_argument("--gap", type=float, default=3.0,
                    help="seconds between one turn's end and the next request (saying the wake word and the words)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from edge_agent.brain import Brain
    from edge_agent.config import load_settings
    from edge_agent.responder import llm_summary

    s = load_settings(args.config)
    s = dataclasses.replace(s, site=dataclasses.replace(s.site, area=args.area))
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(BENCH_HOME)  # the benchmark's home: the commands name its devices
    brain = Brain.from_settings(s, home_file=f.name)
    brain.warmup()
    rows = []
    idle = []
    for text in session(args.rounds):
        if brain.idle_prefill_stats is not None:  # what the idle time between turns evaluated
            idle.append(brain.idle_prefill_stats.n_evaluated)
            brain.idle_prefill_stats = None
        time.sleep(args.gap)  # the user says the wake word and the request: idle time for the LLM
        t0 = time.monotonic()
        resp = brain.respond(text, area=s.site.area or None)
        reply = resp.wait()
        brain.commit_turn(text, reply)
        calls = resp.timings.get("llm_calls") or []
        if not calls:
            continue
        summary = llm_summary(calls)
        n_prompt, uncached = summary["llm_prompt_tokens"], summary["llm_uncached_tokens"]
        first = (resp.t_first_token - t0) if resp.t_first_token else None
        rows.append({"text": text, "uncached": uncached, "prompt": n_prompt, "calls": len(calls),
                     "first_token_s": round(first, 3) if first is not None else None, "reply": reply})
        print(f"{uncached:5d} uncached / {n_prompt:5d} prompt tokens, first token "
              f"{rows[-1]['first_token_s']} s  {text!r} -> {reply[:60]!r}", flush=True)
    n = sorted(r["uncached"] for r in rows)
    ft = sorted(r["first_token_s"] for r in rows if r["first_token_s"] is not None)
    summary = {"llm_turns": len(rows), "uncached_median": statistics.median(n) if n else None,
               "uncached_p90": n[int(0.9 * (len(n) - 1))] if n else None, "uncached_max": n[-1] if n else None,
               "first_token_s_median": statistics.median(ft) if ft else None, "area": args.area,
               "history_turns": s.conversation.max_turns,
               "idle_prefill_tokens_median": statistics.median(idle) if idle else None}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "turns": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
