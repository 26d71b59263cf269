#!/usr/bin/env python3
"""The hesitation set, spoken: commands with a pause inside them, through the real daemon with MQTT on.

Each item of tests/data/hesitations.yaml is said as "Hey Jarvis", its first half, a pause (0.3-0.6 s of silence),
its second half; the set's ``plain`` commands are said without a pause. Everything runs through ``edge-agent run
--input X.wav --realtime`` (wake word, VAD, Whisper, the fast path, the LLM, TTS) against a real Mosquitto, as
tools/spoken_eval.py does, and is scored on what arrives on MQTT:

- **wrong command left standing**: an intent on a device the item does not expect, or a timer of another length.
  A command on the right device that a later one in the same item corrects (turned on, then set to 30 %) is not.
- **right**: every expected intent is standing at the end (the last command per device, its value slots).
- **continuation heard**: one turn's transcript holds the words of both halves (at least half of each half's
  content words): the second half was neither dropped nor heard as a request of its own.
- **ended early** / **continued**: turns the early end closed before the normal silence, and early-ended turns
  that the user went on after (speech resumed: the reply stopped and the whole utterance was heard again).
- For the plain commands: end of speech → first reply audio, from the turn log.

Modes (one daemon session each): ``aec`` (``audio.echo_cancel: true``: the file source never hears the reply, as an
echo-cancelled microphone; a continuation is watched for 1 s after an early end), ``plain`` (no echo cancel: the
reply's first audio waits out the normal 0.4 s and the watch ends when it plays) and ``off`` (``vad.early_end:
false``: the fixed 0.4 s silence, the behaviour before); ``preempt`` is ``plain`` with ``llm.preempt: true``
(preemptive work on the first half, cancelled when the user goes on).

    .venv/bin/python tools/hesitation_eval.py [--modes aec,plain,off] [--only N] [--json OUT.json] [--workdir DIR]

About 9 minutes per mode on the 2-core development machine (real time).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import spoken_eval as se  # noqa: E402

SET = ROOT / "tests" / "data" / "hesitations.yaml"
VOICES = ("piper-joe", "piper-joe-slow")  # what is measured is the pause, not accents (spoken_eval measures those)
MODES = {
    "aec": "audio: {echo_cancel: true}\n",
    "plain": "audio: {echo_cancel: false}\n",
    "off": "audio: {echo_cancel: false}\nvad: {early_end: false}\n",
    "preempt": "audio: {echo_cancel: false}\nllm: {preempt: true}\n",  # plain, with preemptive generation
}
AREA = "living room"
STOP = {"the", "a", "an", "to", "in", "on", "of", "for", "please", "um", "uh", "could", "you", "and", "turn", "set"}
_WORD = re.compile(r"[a-z0-9']+")


def load_set(path: Path = SET) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = yaml.safe_load(path.read_text())
    items = [dict(it, key=f"h{i}") for i, it in enumerate(data["items"])]
    plain = [dict(it, key=f"p{i}", kind="plain", b="", pause_s=0.0) for i, it in enumerate(data.get("plain") or [])]
    return items, plain


def _words(text: str) -> list[str]:
    """Content words, numbers as digits ("forty percent" and "40%" are the same words)."""
    from edge_agent.context import normalize, words_to_number

    text = re.sub(r"\s*(?:percent|%)", " percent", words_to_number(normalize(text.replace("-", " "))))
    return [w for w in _WORD.findall(text) if w not in STOP]


def covers(transcript: str, part: str) -> bool:
    """At least half of ``part``'s content words are in ``transcript`` (Whisper may mishear one)."""
    want = _words(part)
    if not want:
        return True
    have = set(_words(transcript))
    return sum(w in have for w in want) * 2 >= len(want)


def session(items: list[dict[str, Any]], matcher: Any) -> se.Session:
    utts = []
    for i, it in enumerate(items):
        whole = f"{it['a']} {it.get('b') or ''}".strip()
        llm = matcher.match(whole, AREA) is None
        utts.append(se.Utt(it["key"], it["a"], VOICES[i % len(VOICES)], then=it.get("b") or "",
                           pause_s=float(it.get("pause_s") or 0.0), gap_s=se.LLM_GAP_S if llm else se.FAST_GAP_S))
    return se.Session("hesitations", AREA, utts)


def _value_slots(slots: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in slots.items() if k not in ("name", "area", "domain", "device_class", "floor")}


def attribute_delayed(heard: list[se.Heard]) -> list[se.Heard]:
    """A timer's delayed command ("in 20 seconds, set a timer ...") runs as a turn of its own with no speech, which
    the session would put in the first window: it belongs to the item whose timer carried it."""
    for h in heard:
        if (h.record or {}).get("kind") != "command":
            continue
        h.key = "?"
        for other in heard:
            for m in other.published:
                said = str((m.get("slots") or {}).get("conversation_command") or "")
                if said and said.strip().lower() == h.transcript.strip().lower():
                    h.key = other.key
    return heard


def score_item(it: dict[str, Any], heard: list[se.Heard]) -> dict[str, Any]:
    mine = [h for h in heard if h.key == it["key"]]
    published = [m for h in mine for m in h.published]
    standing: dict[str, dict[str, Any]] = {}  # entity -> the last command on it
    timers: list[dict[str, Any]] = []
    for m in published:
        if m.get("intent") == "HassStartTimer":
            timers.append(_value_slots(dict(m.get("slots") or {})))
        for e in m.get("entities") or []:
            standing[e] = m
    expected_entities = {e for x in it["expect"] for e in x.get("entities") or []}
    expected_timers = [dict(x.get("slots") or {}) for x in it["expect"] if x["intent"] == "HassStartTimer"]
    wrong = sorted(e for e in standing if e not in expected_entities)
    wrong += [f"timer {t}" for t in timers if t not in expected_timers]
    right = True
    for x in it["expect"]:
        if x["intent"] == "HassStartTimer":
            right = right and dict(x.get("slots") or {}) in timers
            continue
        for e in x.get("entities") or []:
            got = standing.get(e)
            slots = _value_slots(dict(got.get("slots") or {})) if got else {}
            right = right and got is not None and got.get("intent") == x["intent"] and all(
                slots.get(k) == v for k, v in (x.get("slots") or {}).items())
    right = right and not wrong
    transcripts = [h.transcript for h in mine if h.transcript]
    b = it.get("b") or ""
    whole = any(covers(t, it["a"]) and covers(t, b) for t in transcripts)
    recs = [h.record or {} for h in mine]
    lat = [r["t_first_audio"] - r["t_speech_end"] for r in recs
           if r.get("t_first_audio") and r.get("t_speech_end") and r.get("outcome") == "answered"]
    return {
        "key": it["key"], "kind": it["kind"], "said": f"{it['a']} ... {b}" if b else it["a"],
        "pause_s": it.get("pause_s"), "transcripts": transcripts, "right": right, "wrong": wrong,
        "heard_whole": whole, "published": [{k: m.get(k) for k in ("intent", "slots", "entities", "turn_id")}
                                            for m in published],
        "ended_early": sum(bool(r.get("early_end")) for r in recs),
        "continued": sum(r.get("outcome") == "continued" for r in recs),
        "endings": [r.get("ending") for r in recs],
        "first_audio_s": round(lat[-1], 3) if lat else None,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def part(kind: str) -> dict[str, Any]:
        rs = [r for r in rows if r["kind"] == kind]
        lat = [r["first_audio_s"] for r in rs if r["first_audio_s"] is not None]
        return {"items": len(rs), "right": sum(r["right"] for r in rs),
                "wrong_left_standing": sum(bool(r["wrong"]) for r in rs),
                "heard_whole": sum(r["heard_whole"] for r in rs),
                "ended_early": sum(r["ended_early"] > 0 for r in rs),
                "continued": sum(r["continued"] > 0 for r in rs),
                "first_audio_median_s": round(statistics.median(lat), 3) if lat else None}
    return {k: part(k) for k in ("easy", "hard", "plain")}


def run_mode(mode: str, items: list[dict[str, Any]], work: Path, matcher: Any,
             extra_config: str = "") -> dict[str, Any]:
    """Say ``items`` through the daemon in ``mode``; ``extra_config`` adds YAML lines (keys the mode does not set)."""
    rig = se.Rig(work / mode, follow_up_s=0.0, extra_config=MODES[mode] + extra_config, keep_records=True)
    try:
        heard, info = rig.run(session(items, matcher))
    finally:
        rig.close()
    rows = [score_item(it, attribute_delayed(heard)) for it in items]
    return {"mode": mode, "info": info, "summary": summarize(rows), "rows": rows}


def print_mode(res: dict[str, Any]) -> None:
    print(f"\n== mode {res['mode']} ({res['info']})")
    print("| items | n | right | wrong left standing | continuation heard | ended early | continued | "
          "first audio median |")
    print("|---|---|---|---|---|---|---|---|")
    for k, s in res["summary"].items():
        print(f"| {k} | {s['items']} | {s['right']} | {s['wrong_left_standing']} | {s['heard_whole']} | "
              f"{s['ended_early']} | {s['continued']} | {s['first_audio_median_s']} |")
    for r in res["rows"]:
        if not r["right"] or r["wrong"] or not r["heard_whole"]:
            print(f"  miss {r['key']} [{r['kind']}] {r['said']!r} -> {r['transcripts']} published "
                  f"{[(p['intent'], p['entities'], p['slots']) for p in r['published']]} wrong={r['wrong']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="aec,plain,off", help=f"comma-separated: {', '.join(MODES)}")
    ap.add_argument("--only", type=int, help="the first N items of each kind (a quick look)")
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--workdir", type=Path, help="audio, logs and the broker (default: a new folder in /tmp)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"error: unknown mode(s) {bad}\nfix: choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    items, plain = load_set()
    if args.only:
        items = [it for it in items if it["kind"] == "easy"][: args.only] + \
            [it for it in items if it["kind"] == "hard"][: args.only]
        plain = plain[: args.only]
    from edge_agent.brain import Brain
    from edge_agent.config import load_settings

    matcher = Brain.from_settings(load_settings(ROOT / "config.yaml"), home_file=str(se.HOME), use_llm=False).matcher
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hesitation-"))
    results = []
    for mode in modes:
        res = run_mode(mode, items + plain, work, matcher)
        print_mode(res)
        results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nworkdir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
