#!/usr/bin/env python3
"""Score the fast path on everyday paraphrases (tests/data/paraphrases.yaml): exact templates alone, and with the
tolerant tier (edge_agent/fuzzy.py).

For each half of the set (``dev``: tuned on; ``heldout``: never tuned on) it prints, per tier:

- positives: the share matched to the right intent, value slots and target entities (and, for the tolerant tier,
  how many more were turned into an ask-back question that names the right device, and how many went to the LLM);
- negatives (chatter, questions, unknown devices): how many produced an action or an answer (must be 0); a device
  call that resolves to no configured device is counted apart ("untargeted": the handler refuses it);
- injections: how many acted on an entity the words do not plainly name (must be 0), and how many produced nothing;
- match time per sentence (median / p95, in-process).

The judgement (``judge``) is shared with tests/test_intents.py: the intent must be equal; the value slots
(brightness, color, temperature, position, state, durations, a timer's name) must be equal with none extra; the
target slots (name/area/floor/domain/device_class) are judged by the entities they resolve to in the home.

    .venv/bin/python tools/paraphrase.py [--set tests/data/paraphrases.yaml] [--failures N] [--json OUT]

Failures are printed for the dev half only (``--show-heldout`` prints them for the held-out half too: do not tune
on what it shows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.intent import IntentCall  # noqa: E402
from edge_agent.targets import DEVICE_INTENTS, resolve_targets  # noqa: E402

DEFAULT_SET = ROOT / "tests" / "data" / "paraphrases.yaml"
TARGET_SLOTS = frozenset({"name", "area", "floor", "domain", "device_class"})


@dataclass
class Item:
    text: str
    intent: str | None
    slots: dict[str, Any] = field(default_factory=dict)
    area: str | None = None
    allowed: list[str] | None = None  # injections: the only entities the words plainly name
    kind: str = "positive"  # positive | negative | injection


def load_set(path: Path = DEFAULT_SET) -> tuple[Path, dict[str, list[Item]]]:
    """(home file, {"dev": items, "heldout": items})."""
    d = yaml.safe_load(path.read_text(encoding="utf-8"))
    halves: dict[str, list[Item]] = {}
    for half in ("heldout", "dev"):
        h = d[half]
        items = [Item(p["s"], p["i"], dict(p.get("slots") or {}), p.get("area")) for p in h.get("positives", [])]
        items += [Item(s, None, kind="negative") for s in h.get("negatives", [])]
        items += [Item(p["s"], None, allowed=list(p["allowed"]), kind="injection") for p in h.get("injections", [])]
        halves[half] = items
    return path.parent / d["home"], halves


def _norm(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return " ".join(v.casefold().split())
    return v


def judge(item: Item, call: IntentCall | None, home: Any) -> tuple[bool, str]:
    """(passed, why) for one positive item."""
    if call is None:
        return False, "no match"
    if call.name != item.intent:
        return False, f"intent {call.name}"
    device = call.name in DEVICE_INTENTS
    exp_vals = {k: v for k, v in item.slots.items() if not (device and k in TARGET_SLOTS)}
    got_vals = {k: v for k, v in call.slots.items() if not (device and k in TARGET_SLOTS)}
    if not device:  # a timer's area is the device's own context, not something the user said
        got_vals.pop("area", None)
    for k in sorted(set(exp_vals) | set(got_vals)):
        if k not in got_vals:
            return False, f"missing slot {k}"
        if k not in exp_vals:
            return False, f"unexpected slot {k}={got_vals[k]!r}"
        if _norm(exp_vals[k]) != _norm(got_vals[k]):
            return False, f"slot {k}={got_vals[k]!r}, expected {exp_vals[k]!r}"
    if device:
        want = sorted(e.id for e in resolve_targets(home, IntentCall(item.intent or "", dict(item.slots))))
        got = sorted(call.entities)
        if want != got:
            return False, f"targets {got}, expected {want}"
    return True, ""


@dataclass
class TierScore:
    positives: int = 0
    correct: int = 0
    asked_right: int = 0  # a clarify question whose call would have been right
    to_llm: int = 0
    negatives: int = 0
    negative_matches: list[str] = field(default_factory=list)  # an action (or a timer/time answer) came out
    negative_untargeted: int = 0
    injections: int = 0
    injection_silent: int = 0
    injection_bad: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.correct / self.positives if self.positives else 0.0

    def summary(self) -> dict[str, Any]:
        t = sorted(self.times_ms)
        p95 = t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))] if t else 0.0
        return {"positives": self.positives, "correct": self.correct, "rate": round(self.rate, 4),
                "asked_right": self.asked_right, "to_llm": self.to_llm,
                "negatives": self.negatives, "negative_matches": len(self.negative_matches),
                "negative_untargeted": self.negative_untargeted,
                "injections": self.injections, "injection_silent": self.injection_silent,
                "injection_bad": len(self.injection_bad),
                "ms_median": round(statistics.median(t), 2) if t else 0.0, "ms_p95": round(p95, 2)}


def score(matcher: Any, items: list[Item], home: Any, ask_back: bool = True) -> TierScore:
    """Run every item through ``matcher.match`` (with ``ask_back`` when the matcher supports it) and judge it."""
    sc = TierScore()
    tolerant = getattr(matcher, "tolerant", False)
    for it in items:
        t0 = time.perf_counter()
        call = matcher.match(it.text, it.area, ask_back=True) if tolerant and ask_back else matcher.match(
            it.text, it.area)
        sc.times_ms.append(1000 * (time.perf_counter() - t0))
        clarify = getattr(call, "clarify", None) if call is not None else None
        if it.kind == "positive":
            sc.positives += 1
            ok, why = judge(it, call, home)
            if ok and not clarify:
                sc.correct += 1
            elif ok:
                sc.asked_right += 1
            elif call is None:
                sc.to_llm += 1
            if not ok or clarify:
                got = "none" if call is None else f"{call.name} {call.slots} {call.entities}"
                extra = f" [asks: {clarify}]" if clarify else ""
                sc.failures.append(f"{it.text!r} (area={it.area}): {why or 'ask-back'}; got {got}{extra}")
        elif it.kind == "negative":
            sc.negatives += 1
            if call is not None and call.name in DEVICE_INTENTS and not call.entities:
                sc.negative_untargeted += 1  # a call that names nothing configured: the handler refuses it
            elif call is not None:
                sc.negative_matches.append(f"{it.text!r} -> {call.name} {call.slots} {call.entities}")
        else:
            sc.injections += 1
            if call is None:
                sc.injection_silent += 1
            elif not set(call.entities) <= set(it.allowed or []) or (
                    call.name in DEVICE_INTENTS and not call.entities):
                sc.injection_bad.append(f"{it.text!r} -> {call.name} {call.slots} {call.entities}")
    return sc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET)
    ap.add_argument("--failures", type=int, default=40, help="print this many dev failures per tier")
    ap.add_argument("--show-heldout", action="store_true", help="also print held-out failures (do not tune on them)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from edge_agent.config import HomeSettings
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher

    home_file, halves = load_set(args.set)
    home = Home.load(HomeSettings(), home_file)
    tiers = {"exact": IntentMatcher(home, tolerant=False), "tolerant": IntentMatcher(home)}
    out: dict[str, Any] = {}
    for half in ("dev", "heldout"):
        for tier, m in tiers.items():
            sc = score(m, halves[half], home)
            s = sc.summary()
            out[f"{half}/{tier}"] = s
            print(f"{half:8} {tier:9} positives {s['correct']}/{s['positives']} ({100 * sc.rate:.1f} %)"
                  f"  asked-right {s['asked_right']}  to-LLM {s['to_llm']}"
                  f"  | negatives acted {s['negative_matches']}/{s['negatives']}"
                  f" (untargeted {s['negative_untargeted']})"
                  f"  | injections bad {s['injection_bad']}/{s['injections']} (silent {s['injection_silent']})"
                  f"  | {s['ms_median']:.1f} ms median, {s['ms_p95']:.1f} ms p95")
            show = half == "dev" or args.show_heldout
            for line in (sc.failures[: args.failures] if show else []):
                print(f"    FAIL {line}")
            for line in sc.negative_matches + sc.injection_bad:  # always shown: a safety failure, not tuning data
                print(f"    UNSAFE {line}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
