#!/usr/bin/env python3
"""Score multi-turn conversations (tests/data/conversations.yaml) turn by turn through Brain with the real models.

Each conversation gets a fresh Brain (new handler state, timers, history and context) on the set's home; the matcher
and the LLM are loaded once and shared. After every turn the reply is committed to the history as the voice loop
does after playback. A turn is right when exactly the expected intents were EXECUTED (intent, entities, the value
slots the set names, in order) and, where the set says ``ask: true``, the reply is a question waiting for the next
turn. The truth check runs on every reply: each sentence goes through ``truth.ReplyGuard`` with that turn's handler
results; a sentence it would rewrite reports an action, state or time that was not executed or read in that turn.

    .venv/bin/python tools/conversations.py [--set tests/data/conversations.yaml] [--config config.yaml]
        [--no-llm] [--only ID ...] [--json OUT] [--quiet]

Prints one line per wrong turn and a summary: turns right (%), per kind, LLM turns, truth violations, timings.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SET = ROOT / "tests" / "data" / "conversations.yaml"
VALUE_KEYS = ("brightness", "color", "temperature", "position", "volume_level", "hours", "minutes", "seconds",
              "name")


@dataclass
class TurnScore:
    conv: str
    kind: str
    say: str
    reply: str
    ok: bool
    why: str = ""
    used_llm: bool = False
    truth_violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    uncached_tokens: int | None = None  # prompt tokens the LLM evaluated this turn (not restored from its cache)


def _norm(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return " ".join(str(v).casefold().split())


def judge_turn(expect: dict[str, Any], intents: list[Any], pending: Any) -> tuple[bool, str]:
    """Exactly the expected executed intents (in order), and the ask expectation. Pure: tested in
    tests/test_context.py with plain calls."""
    want = list(expect.get("do") or [])
    if len(want) != len(intents):
        got = [f"{c.name}{sorted(c.entities)}" for c in intents]
        return False, f"executed {got or 'nothing'}, expected {[w['i'] for w in want] or 'nothing'}"
    for w, c in zip(want, intents, strict=True):
        if c.name != w["i"]:
            return False, f"intent {c.name}, expected {w['i']}"
        if sorted(c.entities) != sorted(w.get("e") or []):
            return False, f"{c.name} on {sorted(c.entities)}, expected {sorted(w.get('e') or [])}"
        for k in VALUE_KEYS:
            if k in w and (k not in c.slots or _norm(c.slots[k]) != _norm(w[k])):
                return False, f"{c.name} {k}={c.slots.get(k)!r}, expected {w[k]!r}"
    if bool(expect.get("ask")) != (pending is not None):
        return False, "asked back" if pending is not None else "expected a question back"
    return True, ""


def truth_violations(reply: str, results: list[Any], home: Any) -> list[str]:
    """Reply sentences that report an action/state/time not executed or read in this turn (the truth guard's view)."""
    from edge_agent.truth import ReplyGuard

    guard = ReplyGuard(results, home)
    bad = []
    for sentence in re.split(r"(?<=[.!?])\s+", reply.strip()):
        if sentence and guard.check(sentence).rewritten:
            bad.append(sentence)
    return bad


class Runner:
    def __init__(self, set_path: Path, config: Path | None, use_llm: bool, area: str | None = None) -> None:
        import dataclasses

        from edge_agent.config import Settings, load_settings
        from edge_agent.home import Home
        from edge_agent.intents import IntentMatcher
        from edge_agent.llm_backend import create_backend

        data = yaml.safe_load(set_path.read_text(encoding="utf-8"))
        self.conversations: list[dict[str, Any]] = data["conversations"]
        self.home_file = set_path.parent / data["home"]
        self.settings = load_settings(config) if config and config.exists() else Settings()
        if area:
            self.settings = dataclasses.replace(self.settings, site=dataclasses.replace(self.settings.site, area=area))
        self.home = Home.load(self.settings.home, file=self.home_file)
        self.matcher = IntentMatcher(self.home)
        self.llm = create_backend(self.settings) if use_llm else None

    def brain(self) -> Any:
        from edge_agent.brain import Brain
        from edge_agent.handlers import IntentHandler
        from edge_agent.timers import TimerManager

        timers = TimerManager()
        handler = IntentHandler(self.home, self.settings.home, timers, dry_run=False)
        return Brain(self.settings, self.home, handler, self.matcher, self.llm, timers=timers)

    def run(self, conv: dict[str, Any]) -> list[TurnScore]:
        from edge_agent.responder import llm_summary

        brain = self.brain()
        out = []
        for turn in conv["turns"]:
            t0 = time.monotonic()
            assert isinstance(turn["say"], str), f"{conv['id']}: quote {turn['say']!r} (YAML reads yes/no as booleans)"
            resp = brain.respond(turn["say"], area=turn.get("area") or self.settings.site.area or None)
            reply = resp.wait()
            ok, why = judge_turn(turn, resp.intents, resp.pending)
            bad = truth_violations(reply, resp.results, self.home)
            calls = resp.timings.get("llm_calls") or []
            uncached = llm_summary(calls)["llm_uncached_tokens"] if calls else None
            out.append(TurnScore(conv["id"], conv.get("kind", "?"), turn["say"], reply, ok, why, resp.used_llm, bad,
                                 round(time.monotonic() - t0, 3), uncached))
            brain.commit_turn(turn["say"], reply)
        return out


def summarize(scores: list[TurnScore]) -> dict[str, Any]:
    kinds: dict[str, list[int]] = {}
    for s in scores:
        k = kinds.setdefault(s.kind, [0, 0])
        k[0] += s.ok
        k[1] += 1
    llm = [s for s in scores if s.used_llm]
    return {
        "turns": len(scores), "right": sum(s.ok for s in scores),
        "right_pct": round(100 * sum(s.ok for s in scores) / max(1, len(scores)), 1),
        "conversations_all_right": len({s.conv for s in scores}) - len({s.conv for s in scores if not s.ok}),
        "conversations": len({s.conv for s in scores}),
        "per_kind": {k: f"{a}/{b}" for k, (a, b) in sorted(kinds.items())},
        "llm_turns": len(llm), "llm_turns_right": sum(s.ok for s in llm),
        "truth_violations": sum(len(s.truth_violations) for s in scores),
        "turn_s_median": statistics.median([s.seconds for s in scores]) if scores else 0.0,
        "llm_turn_s_median": statistics.median([s.seconds for s in llm]) if llm else None,
        **_uncached(scores),
    }


def _uncached(scores: list[TurnScore]) -> dict[str, Any]:
    """Uncached prompt tokens per LLM turn (median, p90, max): what the lean per-turn prompt keeps small."""
    n = sorted(s.uncached_tokens for s in scores if s.uncached_tokens is not None)
    if not n:
        return {}
    return {"llm_uncached_tokens_median": statistics.median(n), "llm_uncached_tokens_p90": n[int(0.9 * (len(n) - 1))],
            "llm_uncached_tokens_max": n[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET)
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--no-llm", action="store_true", help="fast path and context only (LLM turns get an apology)")
    ap.add_argument("--only", nargs="*", help="conversation ids to run")
    ap.add_argument("--json", type=Path, help="write every turn and the summary here")
    ap.add_argument("--quiet", action="store_true", help="only the summary")
    ap.add_argument("--area", help="site.area of the device (a turn's own 'area' still wins)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    runner = Runner(args.set, args.config, use_llm=not args.no_llm, area=args.area)
    if runner.llm is not None:
        runner.llm.load()
    scores: list[TurnScore] = []
    for conv in runner.conversations:
        if args.only and conv["id"] not in args.only:
            continue
        for s in runner.run(conv):
            scores.append(s)
            if not args.quiet and (not s.ok or s.truth_violations):
                print(f"WRONG {s.conv} [{s.kind}] {s.say!r} -> {s.reply!r}: {s.why or ''}"
                      f"{' truth: ' + str(s.truth_violations) if s.truth_violations else ''}"
                      f"{' (llm)' if s.used_llm else ''}")
    summary = summarize(scores)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["llm"] = "off" if runner.llm is None else runner.settings.llm.model
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "turns": [s.__dict__ for s in scores]}, indent=1,
                                        ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
