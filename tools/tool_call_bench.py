#!/usr/bin/env python3
"""How long a spoken command that misses the fast path takes to become a tool call through the LLM, and whether the
call is right: held-out, spoken-style commands (written for this tool, not tuned to the decoder) on the
conversation set's home, each in a fresh Brain after two earlier turns (the history is kept and evaluated between
turns, as the voice loop does), the real model and Brain (``tools/conversations.py``'s ``Runner``).

    .venv/bin/python tools/tool_call_bench.py [--config config.yaml] [--area ""] [--gap 2] [--rounds 1]
        [--json OUT]

Per command: the wall time from ``Brain.respond`` to the first piece of the reply (with ``llm.reply_after_tool:
false`` that is the handler's sentence, spoken right after the call ran: the brain's share of end of speech to first
audio) and the process CPU time over it, the LLM phases (the free-text decision when the words did not force the
call, and the tool call) with their evaluated prompt tokens and generated tokens, the intent and entities chosen,
and right/wrong against what is written beside each command. Then the median and p90. A command the fast path
answered (context carry-over, templates, tolerant tier: the brain did not ask the LLM) is reported and left out of
the figures. Say the load average (``uptime``) beside the figures: other work on the machine slows them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.conversations import DEFAULT_SET, Runner  # noqa: E402

# (spoken command, acceptable calls: intent, entities, value slots). Written fresh for this benchmark; on the
# conversation set's home (tests/data/paraphrase_home.yaml). A sensitive device's call waits for a yes: what counts
# there is the call the brain asks about.
COMMANDS: list[tuple[str, list[dict[str, Any]]]] = [
    ("make the bedroom lamp a bit dimmer, like 30 percent",
     [{"i": "HassLightSet", "e": ["light.bedroom_lamp"], "brightness": 30}]),
    ("it's freezing in here, bump the thermostat up to 23",
     [{"i": "HassClimateSetTemperature", "e": ["climate.thermostat"], "temperature": 23}]),
    ("get the ceiling fan spinning", [{"i": "HassTurnOn", "e": ["fan.ceiling_fan"]}]),
    ("I'm heading to bed, lock up the back door", [{"i": "HassTurnOn", "e": ["lock.back_door"]}]),
    ("the desk fan can go off now", [{"i": "HassTurnOff", "e": ["fan.desk_fan"]}]),
    ("could I get the reading light on please", [{"i": "HassTurnOn", "e": ["light.desk_lamp"]}]),
    ("open the garage door halfway",
     [{"i": "HassSetPosition", "e": ["cover.garage_door"], "position": 50}]),
    ("brew some coffee for me", [{"i": "HassTurnOn", "e": ["switch.coffee_maker"]}]),
    ("it's too bright in the living room, take the lamp down to 20",
     [{"i": "HassLightSet", "e": ["light.living_room_lamp"], "brightness": 20}]),
    ("set the blinds in the lounge to 75 percent open",
     [{"i": "HassSetPosition", "e": ["cover.living_room_blinds"], "position": 75}]),
    ("I need the kitchen light off", [{"i": "HassTurnOff", "e": ["light.kitchen"]}]),
    ("switch everything off in the office", [{"i": "HassTurnOff", "e": ["fan.desk_fan", "light.desk_lamp"]}]),
    ("put a timer on for 12 minutes for the pasta", [{"i": "HassStartTimer", "e": [], "minutes": 12}]),
    ("crank the ceiling fan on would you", [{"i": "HassTurnOn", "e": ["fan.ceiling_fan"]}]),
    ("the kitchen is too dark", [{"i": "HassTurnOn", "e": ["light.kitchen"]}]),
    ("lower the living room blinds all the way",
     [{"i": "HassTurnOff", "e": ["cover.living_room_blinds"]},
      {"i": "HassSetPosition", "e": ["cover.living_room_blinds"], "position": 0}]),
    ("give me some light at my desk", [{"i": "HassTurnOn", "e": ["light.desk_lamp"]}]),
    ("shut off that noisy fan in the study", [{"i": "HassTurnOff", "e": ["fan.desk_fan"]}]),
]
# The two turns before each command (fast path, as most turns are): the history and context of real use.
HISTORY = ["turn on the kitchen light", "what time is it"]


def judge(call: Any, want: list[dict[str, Any]]) -> bool:
    """The call (executed, or waiting for a yes) is one of the acceptable ones: intent, entities, value slots."""
    from tools.conversations import VALUE_KEYS, _norm

    if call is None:
        return False
    for w in want:
        if call.name == w["i"] and sorted(call.entities) == sorted(w["e"]) and all(
                k in call.slots and _norm(call.slots[k]) == _norm(w[k]) for k in VALUE_KEYS if k in w):
            return True
    return False


def _phase(calls: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    sel = [c for c in calls if c.get("phase") == phase]
    return {"n": len(sel), "s": round(sum(c.get("t_prompt_s", 0.0) + c.get("t_gen_s", 0.0) for c in sel), 3),
            "eval": sum(c.get("n_prompt", 0) - c.get("n_cached", 0) for c in sel),
            "gen": sum(c.get("n_gen", 0) for c in sel)}


def run_one(runner: Runner, text: str, want: list[dict[str, Any]], area: str | None, gap: float) -> dict[str, Any]:
    brain = runner.brain()
    for said in HISTORY:  # the earlier turns, committed as the voice loop does after playback
        brain.commit_turn(said, brain.respond(said, area=area).wait())
        time.sleep(gap)  # the idle time between turns: the history is evaluated then, as in use
    t0, c0 = time.monotonic(), time.process_time()
    resp = brain.respond(text, area=area)
    first_s = first_cpu = None
    pieces = []
    for piece in resp:
        if first_s is None:
            first_s, first_cpu = time.monotonic() - t0, time.process_time() - c0
        pieces.append(piece)
    reply = "".join(pieces).strip()
    brain.commit_turn(text, reply)
    call = resp.intents[0] if resp.intents else resp.pending
    calls = resp.timings.get("llm_calls") or []
    return {"text": text, "fast_path_missed": resp.used_llm, "used_llm": resp.used_llm,
            "first_piece_s": None if first_s is None else round(first_s, 3),
            "cpu_s": None if first_cpu is None else round(first_cpu, 3),
            "forced": resp.timings.get("forced_tool_call"), "decide": _phase(calls, "decide"),
            "tool_call": _phase(calls, "tool_call"),
            "call": None if call is None else {"intent": call.name, "entities": sorted(call.entities),
                                               "slots": call.slots},
            "right": judge(call, want), "reply": reply,
            "misfit": resp.timings.get("misfit_tool_call"), "blocked": resp.timings.get("blocked_tool_call"),
            "error": resp.error}


def _pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--area", default="", help="site.area of the device ('' = none)")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds of silence between turns (the idle prefill)")
    ap.add_argument("--rounds", type=int, default=1, help="times through the commands")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runner = Runner(DEFAULT_SET, args.config, use_llm=True, area=args.area or None)
    assert runner.llm is not None
    runner.brain().warmup()  # load the model and the fixed prefix (from its state file when there is one)
    area = args.area or None
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    rows = []
    for _ in range(args.rounds):
        for text, want in COMMANDS:
            r = run_one(runner, text, want, area, args.gap)
            rows.append(r)
            c = r["call"] or {}
            tc, dc = r["tool_call"], r["decide"]
            print(f"{'ok ' if r['right'] else 'BAD'} {r['first_piece_s']!s:>6} s cpu {r['cpu_s']!s:>6} s | decide "
                  f"{dc['s']:5.2f} s {dc['eval']:3d}+{dc['gen']:<3d} | call {tc['s']:5.2f} s {tc['eval']:3d}+"
                  f"{tc['gen']:<3d} | {c.get('intent')} {c.get('entities')} "
                  f"{ {k: v for k, v in (c.get('slots') or {}).items() if k not in ('name', 'area', 'domain')} } "
                  f"{'' if r['fast_path_missed'] else '(FAST PATH HIT: left out) '}{r['text']!r}", flush=True)
    used = [r for r in rows if r["fast_path_missed"] and r["first_piece_s"] is not None]
    called = [r for r in used if r["tool_call"]["n"]]  # the commands that reached a tool call

    def stats(name: str, xs: list[float]) -> dict[str, Any]:
        return {f"{name}_median": statistics.median(xs) if xs else None, f"{name}_p90": _pct(xs, 0.9)}

    summary = {"commands": len(used), "right": sum(r["right"] for r in used),
               "fast_path_hits_left_out": len(rows) - len(used),
               **stats("first_piece_s", [r["first_piece_s"] for r in used]),
               **stats("cpu_s", [r["cpu_s"] for r in used]),
               "with_tool_call": len(called), "with_tool_call_right": sum(r["right"] for r in called),
               **stats("called_first_piece_s", [r["first_piece_s"] for r in called]),
               **stats("called_cpu_s", [r["cpu_s"] for r in called]),
               **stats("tool_call_s", [r["tool_call"]["s"] for r in called]),
               **stats("tool_call_eval_tokens", [r["tool_call"]["eval"] for r in called]),
               **stats("tool_call_gen_tokens", [r["tool_call"]["gen"] for r in called]),
               "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "commands": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
