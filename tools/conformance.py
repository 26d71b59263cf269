#!/usr/bin/env python3
"""Conformance against Home Assistant's English intent tests: sentence -> intent name + slots.

For every test sentence of the supported intents in ``<dir>/<domain>_<Intent>.yaml`` (Home Assistant intents
``tests/en``), the home is loaded from ``<dir>/_fixtures.yaml``, the test's ``context.area`` is the device's area,
and a matcher turns the sentence into an intent. The comparison follows Home Assistant's own test
(``tests/test_language_sentences.py``):

- the intent name must be equal;
- every matched slot must be expected, and every expected slot must be matched;
- an expected list means "any of these" (a matched list must contain all of them); numbers compare by value.

The tests (intents repository, 2025-07) are older than the packaged templates (home-assistant-intents 2026.10.27),
which changed how a few facts are *spelled* without changing what the command means. Two documented normalizations
bridge that (``--strict`` turns both off and gives Home Assistant's exact rule):

- ``name: all`` (2025: "all the fans in the kitchen") equals no ``name`` slot (2026 leaves it out);
- a ``domain`` / ``device_class`` slot that is *implied* may be present on one side only: implied by the matched
  entity name (2025 blocks fixed ``domain: scene`` next to ``{name}``; 2026 blocks constrain the name's domain with
  ``requires_context`` instead) or by the intent itself (2026 HassLightSet adds ``domain: light``).

The fast route runs both tiers of the matcher (the exact templates, then the tolerant tier of
``edge_agent/fuzzy.py`` on what they miss); ``--no-tolerant`` measures the templates alone, and the report says how
many sentences each tier matched.

Routes: ``fast`` (in-process ``IntentMatcher``, used by tests/test_conformance.py) and ``cli`` (the official route:
``edge-agent ask --home FIXTURES --area AREA --json`` per sentence, so the full brain can be measured; ``--no-llm``
is passed through with ``--cli-no-llm``).

    .venv/bin/python tools/conformance.py [--dir DIR] [--route fast|cli] [--json OUT] [--failures N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.intents import SUPPORTED_INTENTS  # noqa: E402

DEFAULT_DIR = Path("/work/shared/conformance/ha-intents-en")

# matcher(sentence, area) -> (intent name, slots) or None
Matcher = Callable[[str, "str | None"], "tuple[str, dict[str, Any]] | None"]


@dataclass
class Case:
    file: str
    sentence: str
    intent: str
    slots: dict[str, Any]
    area: str | None


@dataclass
class Outcome:
    case: Case
    ok: bool
    got: tuple[str, dict[str, Any]] | None
    why: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def per_intent(self) -> dict[str, tuple[int, int]]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in self.outcomes:
            acc[o.case.intent][1] += 1
            acc[o.case.intent][0] += int(o.ok)
        return {k: (v[0], v[1]) for k, v in sorted(acc.items())}

    @property
    def passed(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def rate(self) -> float:
        return self.passed / len(self.outcomes) if self.outcomes else 0.0

    def markdown(self) -> str:
        lines = ["| intent | passed | total | rate |", "|---|---:|---:|---:|"]
        for name, (ok, n) in self.per_intent().items():
            lines.append(f"| {name} | {ok} | {n} | {100 * ok / n:.1f} % |")
        lines.append(f"| **overall** | **{self.passed}** | **{len(self.outcomes)}** | **{100 * self.rate:.1f} %** |")
        return "\n".join(lines)

    def to_json(self, max_failures: int | None = None) -> dict[str, Any]:
        fails = [o for o in self.outcomes if not o.ok]
        return {
            "overall": {"passed": self.passed, "total": len(self.outcomes), "rate": round(self.rate, 4)},
            "per_intent": {k: {"passed": ok, "total": n, "rate": round(ok / n, 4)}
                           for k, (ok, n) in self.per_intent().items()},
            "seconds": round(self.seconds, 2),
            "ms_per_sentence": round(1000 * self.seconds / max(1, len(self.outcomes)), 2),
            "failures": [{"file": o.case.file, "sentence": o.case.sentence, "area": o.case.area,
                          "expected": {"name": o.case.intent, "slots": o.case.slots},
                          "got": None if o.got is None else {"name": o.got[0], "slots": o.got[1]},
                          "why": o.why} for o in fails[:max_failures]],
        }


def load_cases(test_dir: Path = DEFAULT_DIR, intents: tuple[str, ...] = SUPPORTED_INTENTS) -> list[Case]:
    """Every (sentence, expected intent) of the listed intents from ``<domain>_<Intent>.yaml`` files."""
    cases: list[Case] = []
    for path in sorted(test_dir.glob("*_*.yaml")):
        if path.name.startswith("_"):
            continue
        intent = path.stem.rsplit("_", 1)[1]
        if intent not in intents:
            continue
        for test in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("tests", []):
            exp = test["intent"]
            area = (exp.get("context") or {}).get("area")
            for s in test.get("sentences") or []:
                cases.append(Case(path.name, s, exp["name"], dict(exp.get("slots") or {}), area))
    return cases


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, list):
        return set(expected).issubset(got) if isinstance(got, list) else got in expected
    if isinstance(got, list):
        return expected in got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(expected) == float(got)
    return expected == got


# The domain an intent implies by itself (its templates only ever target it).
INTENT_DOMAIN = {"HassLightSet": "light", "HassClimateSetTemperature": "climate", "HassSetVolume": "media_player",
                 "HassMediaPause": "media_player", "HassMediaUnpause": "media_player",
                 "HassMediaNext": "media_player", "HassMediaPrevious": "media_player"}


def _implied(intent: str, slots: dict[str, Any], home: Any) -> dict[str, set[Any]]:
    """domain/device_class values implied by the named entity or by the intent."""
    out: dict[str, set[Any]] = {"domain": set(), "device_class": set()}
    if intent in INTENT_DOMAIN:
        out["domain"].add(INTENT_DOMAIN[intent])
    name = slots.get("name")
    if home is not None and isinstance(name, str):
        for e in home.find(name, None, None):
            out["domain"].add(e.domain)
            if e.device_class:
                out["device_class"].add(e.device_class)
    return out


def compare(case: Case, got: tuple[str, dict[str, Any]] | None, strict: bool = False, home: Any = None
            ) -> tuple[bool, str]:
    """(passed, reason) as Home Assistant's sentence tests judge it (plus the documented normalizations)."""
    if got is None:
        return False, "no match"
    name, slots = got
    if name != case.intent:
        return False, f"intent {name}"
    expected = dict(case.slots)
    slots = dict(slots)
    if not strict:
        if expected.get("name") == "all" and "name" not in slots:
            expected.pop("name")
        imp_exp = _implied(name, expected, home)
        imp_got = _implied(name, slots, home)
        for key in ("domain", "device_class"):
            if key in expected and key not in slots and expected[key] in imp_got[key]:
                expected.pop(key)
            elif key in slots and key not in expected and slots[key] in imp_exp[key]:
                slots.pop(key)
    for k, v in slots.items():
        if k not in expected:
            return False, f"unexpected slot {k}={v!r}"
        if not _same(expected[k], v):
            return False, f"slot {k}={v!r}, expected {expected[k]!r}"
    missing = [k for k in expected if k not in slots]
    if missing:
        return False, f"missing slot {missing[0]}"
    return True, ""


def fast_matcher(fixtures: Path, supplement: bool = True, tolerant: bool = True,
                 tiers: dict[str, int] | None = None) -> Matcher:
    """The in-process fast path: IntentMatcher over the fixtures home (``tolerant``: with the tolerant tier).

    ``tiers``, if given, counts the matches per tier ("exact" / "tolerant").
    """
    from edge_agent.config import HomeSettings
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher

    m = IntentMatcher(Home.load(HomeSettings(), fixtures), supplement=supplement, tolerant=tolerant)

    def run(sentence: str, area: str | None) -> tuple[str, dict[str, Any]] | None:
        call = m.match(sentence, area)
        if call is not None and tiers is not None:
            tier = getattr(call, "tier", "exact")
            tiers[tier] = tiers.get(tier, 0) + 1
        return None if call is None else (call.name, call.slots)

    return run


def cli_matcher(fixtures: Path, no_llm: bool = False) -> Matcher:
    """The official route: ``edge-agent ask --home FIXTURES --area AREA --json`` per sentence."""

    def run(sentence: str, area: str | None) -> tuple[str, dict[str, Any]] | None:
        cmd = [sys.executable, "-m", "edge_agent", "ask", sentence, "--home", str(fixtures), "--json"]
        if area:
            cmd += ["--area", area]
        if no_llm:
            cmd.append("--no-llm")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return None
        return _intent_from_ask_json(json.loads(proc.stdout))

    return run


def _intent_from_ask_json(d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Accept the shapes ``ask --json`` may print: {"recognized": call or [calls]} (the recognized call even when
    handling it failed, preferred), {"intents": [call]}, {"intent": call}, {"call": call}, {"results": [...]}."""
    cands: list[Any] = []
    rec = d.get("recognized")
    cands += rec if isinstance(rec, list) else [rec] if isinstance(rec, dict) else []
    for key in ("intents", "calls"):
        if isinstance(d.get(key), list):
            cands += d[key]
    for key in ("intent", "call"):
        if isinstance(d.get(key), dict):
            cands.append(d[key])
    for r in d.get("results") or []:
        if isinstance(r, dict) and isinstance(r.get("call"), dict):
            cands.append(r["call"])
    for c in cands:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            return c["name"], dict(c.get("slots") or {})
    return None


def run_conformance(matcher: Matcher, cases: list[Case], strict: bool = False, home: Any = None) -> Report:
    """Run every case through the matcher and judge it; ``home`` (the fixtures) enables the implied-slot rule."""
    rep = Report()
    t0 = time.perf_counter()
    for c in cases:
        got = matcher(c.sentence, c.area)
        ok, why = compare(c, got, strict, home)
        rep.outcomes.append(Outcome(c, ok, got, why))
    rep.seconds = time.perf_counter() - t0
    return rep


# ------------------------------------------------------------------ the 2026 test format (per-intent folders)

V2_CONTEXT_AREA = "Here Room"  # the device's area for files marked "context_area: true"


def run_v2(test_dir: Path, factory: Callable[[Path, Any], Matcher], intents: tuple[str, ...] = SUPPORTED_INTENTS
           ) -> Report:
    """The newer test files (``<Intent>/<slot_combination>.yaml``): each file brings its own small home.

    ``factory(file, home_settings)`` returns a matcher for that file's home. Files marked ``context_area: true`` are
    heard by a device in an extra area; an ``area`` slot copied from that context is not part of the expectation.
    """
    from edge_agent.config import HomeSettings

    rep = Report()
    t0 = time.perf_counter()
    for path in sorted(test_dir.glob("Hass*/*.yaml")):
        intent = path.parent.name
        if intent not in intents:
            continue
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        ctx = "context_area: true" in text
        hs = HomeSettings(areas=[{"id": "here", "name": V2_CONTEXT_AREA}]) if ctx and not data.get("areas") \
            else HomeSettings()
        matcher = factory(path, hs)
        for test in data.get("tests", []):
            for sentence in test.get("sentences") or []:
                c = Case(f"{intent}/{path.name}", sentence, intent, dict(test.get("slots") or {}),
                         V2_CONTEXT_AREA if ctx else None)
                got = matcher(sentence, c.area)
                if got is not None and ctx and "area" not in c.slots:
                    got = (got[0], {k: v for k, v in got[1].items() if k != "area"})
                ok, why = compare(c, got, strict=True)
                rep.outcomes.append(Outcome(c, ok, got, why))
    rep.seconds = time.perf_counter() - t0
    return rep


def fast_factory(path: Path, home_settings: Any) -> Matcher:
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher

    m = IntentMatcher(Home.load(home_settings, path))

    def run(sentence: str, area: str | None) -> tuple[str, dict[str, Any]] | None:
        call = m.match(sentence, area)
        return None if call is None else (call.name, call.slots)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="Home Assistant intents tests/en folder")
    ap.add_argument("--route", choices=["fast", "cli"], default="fast")
    ap.add_argument("--cli", action="store_true", help="same as --route cli (edge-agent ask per sentence)")
    ap.add_argument("--cli-no-llm", action="store_true", help="with --route cli: pass --no-llm to edge-agent ask")
    ap.add_argument("--no-supplement", action="store_true", help="packaged templates only (no extra templates)")
    ap.add_argument("--strict", action="store_true", help="Home Assistant's exact slot rule (no normalizations)")
    ap.add_argument("--no-tolerant", action="store_true", help="exact templates only (no tolerant tier)")
    ap.add_argument("--wrap", help='say every sentence inside this frame, e.g. "could you {} for me please" '
                                   "(a robustness figure for the tolerant tier)")
    ap.add_argument("--intent", action="append", help="only these intents (repeatable)")
    ap.add_argument("--limit", type=int, help="only the first N sentences")
    ap.add_argument("--every", type=int, default=1, help="only every K-th sentence (a spread sample for --route cli)")
    ap.add_argument("--json", type=Path, help="also write the JSON report here")
    ap.add_argument("--failures", type=int, default=20, help="print this many failures (and keep them in JSON)")
    args = ap.parse_args(argv)

    if args.cli:
        args.route = "cli"
    fixtures = args.dir / "_fixtures.yaml"
    if not fixtures.is_file():
        print(f"error: {fixtures} not found; pass --dir with Home Assistant's tests/en folder", file=sys.stderr)
        return 2
    cases = load_cases(args.dir, tuple(args.intent) if args.intent else SUPPORTED_INTENTS)
    cases = cases[:: max(1, args.every)]
    if args.wrap:
        cases = [Case(c.file, args.wrap.format(c.sentence.rstrip("?.!")), c.intent, c.slots, c.area) for c in cases]
    if args.limit:
        cases = cases[: args.limit]
    tiers: dict[str, int] = {}
    matcher = (fast_matcher(fixtures, supplement=not args.no_supplement, tolerant=not args.no_tolerant, tiers=tiers)
               if args.route == "fast" else cli_matcher(fixtures, args.cli_no_llm))
    from edge_agent.config import HomeSettings
    from edge_agent.home import Home

    rep = run_conformance(matcher, cases, strict=args.strict, home=Home.load(HomeSettings(), fixtures))
    print(rep.markdown())
    print(f"\n{len(cases)} sentences in {rep.seconds:.1f} s ({1000 * rep.seconds / max(1, len(cases)):.1f} ms each)")
    if tiers:
        print("matched per tier: " + ", ".join(f"{k} {v}" for k, v in sorted(tiers.items())))
    fails = [o for o in rep.outcomes if not o.ok]
    for o in fails[: args.failures]:
        got = "no match" if o.got is None else f"{o.got[0]} {o.got[1]}"
        print(f"FAIL [{o.case.file}] {o.case.sentence!r} (area={o.case.area}): {o.why}; expected {o.case.slots}; "
              f"got {got}")
    out = rep.to_json(args.failures)
    out["tiers"] = tiers
    if args.route == "fast" and not args.intent and not args.limit and not args.wrap:
        v2 = run_v2(args.dir, fast_factory)
        if v2.outcomes:
            print(f"\n2026-format tests (<Intent>/<file>.yaml, each with its own home), exact slot rule: "
                  f"{v2.passed}/{len(v2.outcomes)} ({100 * v2.rate:.1f} %)")
            for o in [o for o in v2.outcomes if not o.ok][: args.failures]:
                print(f"FAIL [{o.case.file}] {o.case.sentence!r}: {o.why}")
            out["v2"] = v2.to_json(args.failures)["overall"]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("overall", "per_intent", "ms_per_sentence")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
