#!/usr/bin/env python3
"""Do long replies run dry? Questions whose answers take several sentences, said to the real daemon, and each
turn's ``stages.playback_gaps``: silences between two sentences of one reply, where the voice had played a sentence
to its end before the next was written by the LLM and synthesized by Piper (``turn.playback_gaps``).

    .venv/bin/python tools/reply_gaps.py [--config-extra "llm: {first_threads: 1}"] [--cpu-budget pi5|pi4|CPUS]
                                         [-n N] [--answer-s S] [--json OUT.json]

The questions go through ``edge-agent run --input X.wav --realtime --output Y.wav`` (tools/spoken_eval.py's
``Rig``: a real Mosquitto on loopback, MQTT on, the daemon's file speaker paced in real time, so a sentence takes as
long to play as on a device), "Hey Jarvis!", a pause, the question, then silence long enough for the whole answer.
The benchmark's speaker (``tools/bench.py``) takes each block at once and cannot show this. ``--cpu-budget`` runs
the daemon under a CPU quota as ``edge-agent bench --cpu-budget`` does (the broker outside it; needs root). Prints
one line per turn and a summary; ``--json`` writes every turn's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import spoken_eval as se  # noqa: E402

from edge_agent.config import load_settings  # noqa: E402
from edge_agent.cpu_budget import applied  # noqa: E402
from edge_agent.text import split_sentences  # noqa: E402

# Questions a household asks whose answers run to several sentences (none is a command; none in the bench's set).
QUESTIONS = [
    "Explain how a refrigerator works.",
    "Tell me a short story about a cat.",
    "How do airplanes stay in the air?",
    "Why do leaves change colour in autumn?",
    "Give me three tips for sleeping better.",
    "How does a rainbow form?",
]
ANSWER_S = 45.0  # silence after each question: the whole answer plays before the next wake word


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config-extra", default="", help="more YAML for the daemon's config (e.g. llm settings)")
    ap.add_argument("-n", type=int, default=len(QUESTIONS), help="how many of the questions (default all)")
    ap.add_argument("--cpu-budget", default=None, metavar="pi5|pi4|CPUS",
                    help="run the daemon under this CPU quota (edge-agent bench --cpu-budget's presets)")
    ap.add_argument("--answer-s", type=float, default=ANSWER_S,
                    help=f"silence after each question, long enough for its whole answer (default {ANSWER_S:g})")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not 1 <= args.n <= len(QUESTIONS):
        ap.error(f"-n must be 1..{len(QUESTIONS)}")

    with tempfile.TemporaryDirectory(prefix="reply-gaps-") as tmp:
        rig = se.Rig(Path(tmp), follow_up_s=0.0, extra_config=args.config_extra + "\n" if args.config_extra else "",
                     keep_records=True)
        try:
            session = se.Session("gaps", "Living Room", [se.Utt(f"q{i}", q, "piper-joe", gap_s=args.answer_s)
                                                         for i, q in enumerate(QUESTIONS[:args.n])])
            # the speech is rendered inside, before the daemon starts: slower under a quota, not measured
            with applied(args.cpu_budget, load_settings(ROOT / "config.yaml")) as budget:
                heard, info = rig.run(session)
                info["cpu_budget"] = None if budget is None else budget.description
        finally:
            rig.close()
    rows = []
    for h in heard:
        rec = h.record or {}
        stages = rec.get("stages") or {}
        gaps = stages.get("playback_gaps")
        first = (rec["t_first_audio"] - rec["t_speech_end"]
                 if rec.get("t_first_audio") and rec.get("t_speech_end") else None)
        row = {"key": h.key, "transcript": h.transcript, "outcome": h.outcome, "used_llm": h.used_llm,
               "sentences": len(split_sentences(rec.get("reply_spoken") or "")), "gaps": gaps,
               "first_audio_s": None if first is None else round(first, 3),
               "playback_s": (round(rec["t_playback_end"] - rec["t_first_audio"], 2)
                              if rec.get("t_playback_end") and rec.get("t_first_audio") else None),
               "gen_tok_s": (round(stages["llm_gen_tokens"] / stages["llm_gen_s"], 1)
                             if stages.get("llm_gen_s") else None),
               "gen_tokens": stages.get("llm_gen_tokens"), "llm_s": stages.get("llm_gen_s"),
               "words_written": len((rec.get("reply_full") or "").split()),
               "words_spoken": len((rec.get("reply_spoken") or "").split()), "error": rec.get("error")}
        rows.append(row)
        g = gaps or {}
        print(f"{h.key}: {h.transcript!r} -> {row['sentences']} sentences in {row['playback_s']} s, first audio "
              f"{row['first_audio_s']} s, {row['gen_tok_s']} tokens/s, ran dry {g.get('count', '-')} times "
              f"({g.get('total_s', '-')} s, longest {g.get('max_s', '-')} s); {row['gen_tokens']} tokens, "
              f"{row['words_spoken']} of {row['words_written']} words written spoken"
              f"{', error ' + row['error'] if row['error'] else ''}", flush=True)
    long = [r for r in rows if r["gaps"] is not None]
    dry = [r for r in long if r["gaps"]["count"]]
    totals = [r["gaps"]["total_s"] for r in long]
    summary = {"turns": len(rows), "replies_of_two_or_more_sentences": len(long), "ran_dry": len(dry),
               "gap_total_s_median": round(statistics.median(totals), 3) if totals else None,
               "gap_max_s": max((r["gaps"]["max_s"] for r in long), default=None),
               "first_audio_s_median": (round(statistics.median([r["first_audio_s"] for r in rows
                                                                 if r["first_audio_s"] is not None]), 3)
                                        if any(r["first_audio_s"] is not None for r in rows) else None),
               "daemon": info}
    print(json.dumps({k: v for k, v in summary.items() if k != "daemon"}))
    if args.json:
        args.json.write_text(json.dumps({"config_extra": args.config_extra, "summary": summary, "rows": rows},
                                        indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
