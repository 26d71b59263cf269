#!/usr/bin/env python3
"""``llm.preempt`` off and on, request by request in the same window: end of speech → first audio of LLM answers,
and the final transcript's time (on 2 cores the preemptive generation competes with the final Whisper decode).

    .venv/bin/python tools/preempt_bench.py [--questions 8] [--rounds 1] [--config config.yaml] [--json OUT]

The bench's spoken questions (``edge-agent bench``'s set, clean, one voice after another) go through the real voice
loop (``tools/edge_bench``: wake word, VAD, Whisper, the LLM, Piper; MQTT off) twice each, once with each setting,
the order alternating from one question to the next so both see the same load. Before each run the LLM's KV cache
is left holding the fixed prefix and another request (``evict_request``), so neither run finds the other's prompt.
Prints one line per run and a summary (median, p90, the load average); ``--json`` writes every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.edge_bench.bench_set import DEFAULT_DIR, make_bench_set  # noqa: E402
from tools.edge_bench.run import bench_settings, evict_request, load_models, loadavg, machine, run_e2e  # noqa: E402


class _Verdicts(logging.Handler):
    """The brain's preemption log lines of the run in progress."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith(("preempt", "preempted work")):
            self.lines.append(msg)


def _stat(values: list[float]) -> dict[str, float | int | None]:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {"n": 0, "median": None, "p90": None}
    p90 = v[min(len(v) - 1, int(0.9 * len(v)))]
    return {"n": len(v), "median": round(statistics.median(v), 3), "p90": round(p90, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="config file (default: the repository's config.yaml)")
    ap.add_argument("--set", type=Path, default=DEFAULT_DIR, help="bench set folder (made if missing)")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="times through the questions")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    verdicts = _Verdicts()
    logging.getLogger("edge_agent").addHandler(verdicts)
    logging.getLogger("edge_agent").setLevel(logging.INFO)

    s = bench_settings(args.config)
    on = dataclasses.replace(s, llm=dataclasses.replace(s.llm, preempt=True))
    off = dataclasses.replace(s, llm=dataclasses.replace(s.llm, preempt=False))
    root = args.set.expanduser()
    full = root / "manifest.json"  # the full set (8 questions, six voices) when it was made, else the quick one
    manifest = make_bench_set(s, root, quick=not full.exists())
    qs = [r for r in manifest["requests"] if r["kind"] == "question" and r["condition"] == "clean"]
    seen: set[str] = set()
    picked = []
    for r in qs:  # each text once, voices as they come
        if r["text"] not in seen:
            seen.add(r["text"])
            picked.append(r)
    picked = (picked + [r for r in qs if r not in picked])[: args.questions]
    m = load_models(off, str(root / manifest["home"]))
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "command": "tools/preempt_bench.py " + " ".join(sys.argv[1:]), "load_start": loadavg(), "rows": []}

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    n = 0
    for _ in range(args.rounds):
        for req in picked:
            order = (off, on) if n % 2 == 0 else (on, off)
            n += 1
            for setting in order:
                time.sleep(0.5)  # the idle prefill after the last turn gets the model first; then it is evicted
                m.brain.reset()  # (run_e2e resets it too): the filler request must not carry the last question
                evict_request(m)
                m.s = setting
                m.brain.settings = setting
                verdicts.lines.clear()
                rows, _ = run_e2e(m, root, [req], lambda msg: None, 0)
                row = rows[0]
                turn = row.get("turn") or {}
                calls = row.get("llm_calls") or []
                stages = turn.get("stages") or {}
                brain = stages.get("brain") or {}
                rec = {"preempt": setting.llm.preempt, "text": req["text"], "voice": req["voice"],
                       "verdict": row["verdict"], "load": row["load"], "lat": row["lat"],
                       "stt_wait_s": stages.get("stt_wait_s"), "ending": turn.get("ending"),
                       # how long the speculation's transcript waited for the turn: the most preemption can win
                       "ready_before_turn_s": stages.get("stt_ready_before_turn_s"),
                       "preempt_verdict": brain.get("preempt"), "preempt_wait_s": brain.get("preempt_wait_s"),
                       "speculative": turn.get("speculative"),
                       "n_preempted": sum(c.get("n_preempted", 0) for c in calls),
                       "n_gen": sum(c.get("n_gen", 0) for c in calls), "log": list(verdicts.lines)}
                out["rows"].append(rec)
                lat = row["lat"]
                progress(f"preempt {'on ' if setting.llm.preempt else 'off'} {req['text'][:40]:40s} "
                         f"first audio {lat.get('first_audio') or float('nan'):.3f} s, transcript "
                         f"{lat.get('transcript') or float('nan'):.3f} s, token {lat.get('intent_or_token') or 0:.3f}"
                         f" s, reused {rec['n_preempted']} tokens, load {row['load'][0]:.2f} ({row['verdict']})")
    out["load_end"] = loadavg()
    summary = {}
    for flag in (False, True):
        rs = [r for r in out["rows"] if r["preempt"] is flag and r["verdict"].startswith("ok")]
        summary["on" if flag else "off"] = {
            k: _stat([r["lat"].get(k) for r in rs]) for k in ("transcript", "intent_or_token", "first_audio")}
        summary["on" if flag else "off"]["reused"] = sum(1 for r in rs if r["n_preempted"])
        summary["on" if flag else "off"]["ready_before_turn_s"] = _stat([r["ready_before_turn_s"] for r in rs])
        summary["on" if flag else "off"]["load_1min"] = _stat([r["load"][0] for r in rs])
    pairs = [out["rows"][i:i + 2] for i in range(0, len(out["rows"]), 2)]
    diff = [b["lat"]["first_audio"] - a["lat"]["first_audio"] if b["preempt"] else
            a["lat"]["first_audio"] - b["lat"]["first_audio"] for a, b in pairs
            if a["lat"].get("first_audio") is not None and b["lat"].get("first_audio") is not None]
    summary["first_audio_on_minus_off"] = {**_stat(diff), "on_faster": sum(1 for d in diff if d < 0)}
    out["summary"] = summary
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
