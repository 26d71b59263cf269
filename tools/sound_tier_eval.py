#!/usr/bin/env python3
"""The sound tier (edge_agent/sound_match.py) on spoken paraphrases: what it takes from the transcripts every text
tier refused, and whether it takes them right.

Each positive and negative of one half of tests/data/paraphrases.yaml is said in voices drawn per item with
``--seed`` from tools/spoken_eval.py's ``VOICES`` (Piper joe at two speeds, four espeak-ng voices; ``--per-item``
draws per sentence), transcribed by the configured STT engine primed with the home's names as the daemon primes it,
and matched by the fast path (templates, tolerant tier) in-process. A transcript the fast path refused goes to the
sound tier: its candidates (``IntentMatcher.sound_candidates``) scored against the same audio, and the verdict
(act / ask / pass to the LLM) judged like tools/paraphrase.py judges a call. In-process, no daemon and no LLM: the
figure is what the tier adds on the same transcripts, not an end-to-end score (tools/spoken_eval.py is that).

Every score is saved (``--json``), so the margins can be tried again without decoding anything:
``--replay OUT.json --margins HEARD,ACT,ASK``.

    .venv/bin/python tools/sound_tier_eval.py --half dev [--per-item 2] [--seed 1] [--json OUT.json]
    .venv/bin/python tools/sound_tier_eval.py --replay OUT.json [--margins 2,3,1]
    .venv/bin/python tools/sound_tier_eval.py --followups      # short follow-ups ("pause it") in every voice
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

from edge_agent import sound_match  # noqa: E402
from edge_agent.audio import SAMPLE_RATE  # noqa: E402
from edge_agent.brain_sound import TurnAudio, second_look  # noqa: E402
from edge_agent.cpu_budget import applied  # noqa: E402
from edge_agent.intents_sound import written  # noqa: E402

PAD_S = 0.3  # silence around each sentence, as the endpointer leaves it


class _Call:
    """A saved candidate, enough for ``sound_match.choose`` and the judgement."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.name, self.slots, self.entities, self.heard = d["name"], d["slots"], d["entities"], d["sentence"]
        self.right = d["right"]
        self.source = d.get("source", "near")


def collect(half: str, per_item: int, seed: int, cache: Path, beam: bool = True,
            cpu_budget: str | None = None, look_again: bool = True) -> dict[str, Any]:
    from edge_agent.config import HomeSettings, load_settings
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher
    from edge_agent.stt import make_engine, prime_with_home

    settings = load_settings(ROOT / "config.yaml")
    home_file, sets = paraphrase.load_set()
    home = Home.load(HomeSettings(), home_file)
    matcher = IntentMatcher(home)
    engine = make_engine(settings.stt, settings)
    engine.load()
    prime_with_home(engine, settings.stt, home)
    engine.warmup()
    voices = spoken_eval.Voices(cache)
    rng = random.Random(seed)
    names = list(spoken_eval.VOICES)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), dtype=np.int16)
    items = [it for it in sets[half] if it.kind in ("positive", "negative")]
    # every sentence rendered first: under ``cpu_budget`` only the recognition and the tier run
    renderings = [(it, voice, np.concatenate([pad, voices.say(voice, it.text), pad]))
                  for it in items for voice in rng.sample(names, per_item)]
    with applied(cpu_budget, settings) as budget:
        rows = _recognize(renderings, engine, matcher, home, beam, look_again)
    return {"half": half, "seed": seed, "per_item": per_item, "rows": rows,
            "cpu_budget": None if budget is None else budget.description}


def _recognize(renderings: list[tuple[Any, str, np.ndarray]], engine: Any, matcher: Any, home: Any,
               beam: bool, look_again: bool = True) -> list[dict[str, Any]]:
    """Each rendering transcribed, matched by the fast path, and (refused) put to the sound tier."""
    rows: list[dict[str, Any]] = []
    for n, (it, voice, audio) in enumerate(renderings):
        print(f"\r{n + 1}/{len(renderings)}", end="", file=sys.stderr, flush=True)
        heard = engine.open_stream()
        heard.feed(audio)
        text = heard.finish().text.strip()
        row: dict[str, Any] = {"said": it.text, "kind": it.kind, "intent": it.intent, "voice": voice,
                               "heard": text}
        call = matcher.match(text, it.area, ask_back=True) if text else None
        if call is not None and look_again:  # as the brain: a spoken on/off command is looked at again
            t0 = time.perf_counter()
            # the stream's audio as the brain sees it: its scores and its decode's margin (a sure one is not scored)
            call, seen = second_look(matcher, text, it.area, call, TurnAudio(heard, ""))
            if seen is not None:
                row["action_word"] = {**seen, "ms": round(1000 * (time.perf_counter() - t0), 1)}
        if call is not None:
            ok, _ = paraphrase.judge(it, call, home) if it.kind == "positive" else (False, "")
            row.update(tier=call.tier, asked=bool(call.clarify), right=ok)
            rows.append(row)
            continue
        row["tier"] = "llm"
        known = TurnAudio(heard, "").decoded(text) if text else None
        row["least_sure"] = known.least_sure if known is not None else None  # the brain skips the tier at SURE_WORDS
        t0 = time.perf_counter()
        wanted = text and beam and matcher.worth_readings(text)  # as the brain: no beam search for a plain question
        alts = (engine.alternatives(audio, sound_match.ALTERNATIVES + 1) or []) if wanted else []
        row["alternatives"] = alts
        row["alternatives_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        said, cands = matcher.sound_candidates(text, it.area, alts) if text else ("", [])
        t1 = time.perf_counter()
        scores = engine.sentence_scores(audio, [sound_match.spoken_form(said)] + [
            sound_match.spoken_form(c.heard) for c in cands]) if cands else None
        row["candidates_ms"] = round(1000 * (t1 - t0), 1)
        row["scores_ms"] = round(1000 * (time.perf_counter() - t1), 1)
        readings = {written(a) for a in alts}
        if scores:
            row["heard_score"] = scores[0]
            row["candidates"] = [{"sentence": c.heard, "name": c.name, "slots": c.slots,
                                  "entities": c.entities, "score": s,
                                  "source": "n-best" if c.heard in readings else "near",
                                  "right": it.kind == "positive" and paraphrase.judge(it, c, home)[0]}
                                 for c, s in zip(cands, scores[1:], strict=True)]
        rows.append(row)
    print(file=sys.stderr)
    return rows


# Short follow-ups said after a device or a timer (the conversations' kind), and short sentences with a pronoun that
# ask for nothing: every follow-up verb is offered for each (as if the context resolved them all, the worst case).
FOLLOWUPS = ["pause it", "resume it", "stop it", "cancel it", "turn it off", "turn it on", "close them", "open it",
             "lock it", "unlock it"]
NOT_FOLLOWUPS = ["forget it", "I love it", "leave it", "that's it", "what is it", "never mind that", "I like this",
                 "do it later", "is that so", "thanks for that"]


def followups(seed: int, cache: Path) -> int:
    """Short follow-ups in every voice: the transcript, then ``sound_match.followup_sentences`` scored and decided."""
    from edge_agent.config import HomeSettings, load_settings
    from edge_agent.home import Home
    from edge_agent.stt import make_engine, prime_with_home
    from edge_agent.stt_text import normalize_text

    settings = load_settings(ROOT / "config.yaml")
    home_file, _ = paraphrase.load_set()
    engine = make_engine(settings.stt, settings)
    engine.load()
    prime_with_home(engine, settings.stt, Home.load(HomeSettings(), home_file))
    engine.warmup()
    voices = spoken_eval.Voices(cache)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), dtype=np.int16)
    counts = {"heard right": 0, "acted right": 0, "acted wrong": 0, "passed": 0, "negatives acted": 0,
              "negatives": 0}
    for said in FOLLOWUPS + NOT_FOLLOWUPS:
        for voice in spoken_eval.VOICES:
            audio = np.concatenate([pad, voices.say(voice, said), pad])
            stream = engine.open_stream()
            stream.feed(audio)
            heard = normalize_text(stream.finish().text)
            positive = said in FOLLOWUPS
            if positive and heard == said:
                counts["heard right"] += 1
                continue  # the context takes it as it is
            options = [sound_match.Calls(c, (_Call({"name": c, "slots": {}, "entities": [], "sentence": c,
                                                    "right": c == said}),))
                       for c in sound_match.followup_sentences(heard)]
            if not options:
                counts["passed" if positive else "negatives"] += 1
                continue
            scores = engine.sentence_scores(audio, [sound_match.spoken_form(heard)] + [
                sound_match.spoken_form(o.heard) for o in options])
            v = sound_match.choose(scores[0], list(zip(options, scores[1:], strict=True)))
            line = f"  {said!r:20} {voice:16} heard {heard!r:22} -> {v.action} {getattr(v.call, 'heard', '')!r}"
            if not positive:
                counts["negatives"] += 1
                if v.action == "act":
                    counts["negatives acted"] += 1
                    print(line, "(NOT A FOLLOW-UP)")
                continue
            if v.action != "act":
                counts["passed"] += 1
            elif v.call.heard == said:
                counts["acted right"] += 1
            else:
                counts["acted wrong"] += 1
            print(line)
    print(f"short follow-ups: {len(FOLLOWUPS)} x {len(spoken_eval.VOICES)} voices, {counts}")
    return 0


def decide(rows: list[dict[str, Any]], margins: tuple[float, float, float]) -> dict[str, Any]:
    """The tier's verdicts on the saved scores with ``margins`` (heard, act lead, ask lead)."""
    saved = sound_match.HEARD_MARGIN, sound_match.ACT_LEAD, sound_match.ASK_LEAD
    sound_match.HEARD_MARGIN, sound_match.ACT_LEAD, sound_match.ASK_LEAD = margins
    try:
        pos = [r for r in rows if r["kind"] == "positive"]
        neg = [r for r in rows if r["kind"] == "negative"]
        out: dict[str, Any] = {"positives": len(pos), "negatives": len(neg),
                               "fast_right": sum(1 for r in pos if r["tier"] != "llm" and r["right"]
                                                 and not r["asked"]),
                               "to_llm": sum(1 for r in pos if r["tier"] == "llm"),
                               "acted_right": 0, "acted_right_nbest": 0, "acted_wrong": [], "asked_right": 0,
                               "asked_wrong": [],
                               "negatives_acted": [], "negatives_asked": [], "missed": [], "sure": 0,
                               "sure_lost": []}
        for r in rows:
            if r["tier"] != "llm" or not r.get("candidates"):
                if r["tier"] == "llm" and r["kind"] == "positive":
                    out["missed"].append((r["said"], r["heard"], "no candidate"))
                continue
            v = sound_match.choose(r["heard_score"], [(_Call(c), c["score"]) for c in r["candidates"]])
            line = (r["said"], r["heard"], v.action, getattr(v.call, "heard", ""),
                    round(r["heard_score"], 2), v.best and round(v.best, 2), v.rival and round(v.rival, 2))
            if r.get("least_sure") is not None and r["least_sure"] >= sound_match.SURE_WORDS:
                out["sure"] += 1  # the brain does not run the tier on it: what it would have done is lost
                if v.action != "pass":
                    out["sure_lost"].append((*line, r["least_sure"]))
                v = sound_match.Verdict("pass", reason="the decode was sure of every word")
            if r["kind"] == "negative":
                if v.action == "act":
                    out["negatives_acted"].append(line)
                elif v.action == "ask":
                    out["negatives_asked"].append(line)
                continue
            if v.action == "pass":
                right = [c for c in r["candidates"] if c["right"]]
                out["missed"].append((*line, "right one among them" if right else "none right"))
            elif v.action == "act":
                if v.call.right:
                    out["acted_right"] += 1
                    out["acted_right_nbest"] += v.call.source == "n-best"
                else:
                    out["acted_wrong"].append(line)
            elif v.call.right:
                out["asked_right"] += 1
            else:
                out["asked_wrong"].append(line)
        return out
    finally:
        sound_match.HEARD_MARGIN, sound_match.ACT_LEAD, sound_match.ASK_LEAD = saved


def report(data: dict[str, Any], margins: tuple[float, float, float], show: bool) -> dict[str, Any]:
    rows = data["rows"]
    d = decide(rows, margins)
    p = d["positives"]
    print(f"half {data['half']}, seed {data['seed']}, {data.get('per_item', 1)} voice(s) per sentence, margins "
          f"heard {margins[0]}, act {margins[1]}, ask {margins[2]}")
    print(f"positives {p}: fast path right {d['fast_right']} ({100 * d['fast_right'] / max(1, p):.1f} %), "
          f"to the LLM {d['to_llm']}")
    print(f"  sound tier: acted right {d['acted_right']} ({d['acted_right_nbest']} from the n-best), "
          f"acted WRONG {len(d['acted_wrong'])}, "
          f"asked right {d['asked_right']}, asked wrong {len(d['asked_wrong'])}, passed on "
          f"{d['to_llm'] - d['acted_right'] - len(d['acted_wrong']) - d['asked_right'] - len(d['asked_wrong'])}")
    both = d["fast_right"] + d["acted_right"]
    print(f"  fast path + sound tier right without asking: {both} ({100 * both / max(1, p):.1f} %)")
    print(f"negatives {d['negatives']}: sound tier acted on {len(d['negatives_acted'])}, asked on "
          f"{len(d['negatives_asked'])}")
    sure = [r for r in rows if r.get("least_sure") is not None and r["least_sure"] >= sound_match.SURE_WORDS]
    print(f"  skipped (the decode sure of every word, least sure word >= {sound_match.SURE_WORDS}): {len(sure)} of "
          f"{sum(r['tier'] == 'llm' for r in rows)} LLM-bound transcripts, {len(d['sure_lost'])} verdicts lost by it")
    for line in d["sure_lost"]:
        print(f"  lost to the skip: {line}")
    ms = [r["candidates_ms"] + r["scores_ms"] for r in rows if "scores_ms" in r]
    if ms:
        alt = [r.get("alternatives_ms", 0.0) for r in rows if "scores_ms" in r]
        print(f"  tier cost per LLM-bound turn: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms "
              f"(candidates + scoring, in-process; the n-best's beam search median {statistics.median(alt):.0f} ms)"
              + (f", under {data['cpu_budget']}" if data.get("cpu_budget") else ""))
    looked = [r for r in rows if "action_word" in r]
    if looked:
        verdicts = {v: [r for r in looked if r["action_word"]["verdict"] == v] for v in ("sure", "keep", "ask", "act")}
        ms = [r["action_word"]["ms"] for r in looked if "ms" in r["action_word"]]
        print(f"second look at on/off ({len(looked)} spoken commands): "
              + ", ".join(f"{v} {len(rs)} (then right {sum(bool(r['right']) for r in rs)})"
                          for v, rs in verdicts.items())
              + (f"; its cost median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms" if ms else ""))
        for r in verdicts["ask"] + verdicts["act"]:
            print(f"  second look {r['action_word']['verdict']}: {r['said']!r} heard {r['heard']!r} "
                  f"({r['action_word']['heard']} / opposite {r['action_word']['opposite']})")
    for key in ("acted_wrong", "asked_wrong", "negatives_acted", "negatives_asked"):
        for line in d[key]:
            print(f"  {key}: {line}")
    if show:
        for line in d["missed"]:
            print(f"  missed: {line}")
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--half", choices=("dev", "heldout"), default="dev")
    ap.add_argument("--per-item", type=int, default=1, help="voices per sentence (drawn without repeats)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="save every transcript and score here")
    ap.add_argument("--replay", type=Path, help="decide again on a saved run (no decoding)")
    ap.add_argument("--margins", default="", help="HEARD,ACT,ASK (default: sound_match's)")
    ap.add_argument("--show-missed", action="store_true", help="list the LLM-bound items the tier passed on")
    ap.add_argument("--no-alternatives", action="store_true",
                    help="candidates from near template sentences only, not the speech model's n-best")
    ap.add_argument("--cpu-budget", default=None, metavar="pi5|pi4|CPUS",
                    help="recognise under this CPU quota (edge-agent bench --cpu-budget's presets; needs root)")
    ap.add_argument("--no-second-look", action="store_true",
                    help="act on a spoken on/off command as written (no second look at the action word)")
    ap.add_argument("--followups", action="store_true", help="short follow-ups ('pause it') in every voice instead")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edge-agent" / "spoken-voices")
    a = ap.parse_args(argv)
    margins = tuple(float(x) for x in a.margins.split(",")) if a.margins else (
        sound_match.HEARD_MARGIN, sound_match.ACT_LEAD, sound_match.ASK_LEAD)
    if len(margins) != 3:
        ap.error("--margins takes three numbers: HEARD,ACT,ASK")
    if a.followups:
        return followups(a.seed, a.cache)
    if a.replay:
        data = json.loads(a.replay.read_text())
    else:
        data = collect(a.half, a.per_item, a.seed, a.cache, beam=not a.no_alternatives, cpu_budget=a.cpu_budget,
                       look_again=not a.no_second_look)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(data, indent=1))
    report(data, margins, a.show_missed)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
