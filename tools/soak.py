#!/usr/bin/env python3
"""Soak test: the real daemon (`edge-agent run`) on virtual PulseAudio devices with a real Mosquitto, fed a mix of
spoken commands and questions every 20-40 s with noise and silence between, for ``--minutes`` (default 60).

Why: leaks, stuck states and lost intents only show after hours of use. This runs the same process a user runs and
measures, from the outside:

- resident memory (RSS of the daemon, sampled every ``--rss-every`` s) and its drift after warm-up, in % and MB/hour,
  also split into anonymous memory (the heap, where a leak would show) and file-backed pages (the mapped models);
- stuck states: any stretch in a non-idle state longer than ``--stuck-s`` (from the daemon's "state: a -> b" log
  lines), and requests whose turn never ended;
- requests answered / total (a turn logged with a transcript and a spoken reply);
- intents delivered / expected (each command's intent arrives on MQTT with the turn's id, once).

Usage: .venv/bin/python tools/soak.py --minutes 60 --out soak.json
Exit status 0 when nothing was stuck, every expected intent arrived and RSS drift is below ``--max-drift-pct``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from tests.broker import Broker  # noqa: E402
from tests.daemon import Daemon, DaemonFailed  # noqa: E402
from tests.pulse import VirtualAudio  # noqa: E402
from tests.speech import compose  # noqa: E402

# (kind, spoken request, expected intent name or None). Commands take the fast path; questions go to the LLM.
REQUESTS: list[tuple[str, str, str | None]] = [
    ("command", "Turn on the kitchen light.", "HassTurnOn"),
    ("question", "Why is the sky blue?", None),
    ("command", "Turn off the living room lamp.", "HassTurnOff"),
    ("command", "Turn off the kitchen light.", "HassTurnOff"),
    ("question", "Tell me a fun fact about cats.", None),
    ("command", "Turn on the living room lamp.", "HassTurnOn"),
    ("question", "How far away is the moon?", None),
]


def rss_kb(pid: int) -> dict[str, int] | None:
    """VmRSS and its parts: RssAnon (the heap: a leak shows here) and RssFile (mapped model files, whose pages
    come in as the models touch them: bounded by the files' size, and the kernel can take them back)."""
    try:
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
        return out if "VmRSS" in out else None
    except OSError:
        return None


class Watcher:
    """MQTT side: every intent message (topic, turn_id, id) as it arrives."""

    def __init__(self, port: int, site: str) -> None:
        self.intents: list[dict] = []
        self.prefix = f"edge-agent/{site}/intent/"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-watch")
        self.client.on_message = self._on
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.prefix + "#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on(self, c, u, m) -> None:  # noqa: ANN001
        try:
            body = json.loads(m.payload)
        except ValueError:
            return
        self.intents.append({"topic": m.topic, "intent": body.get("intent"), "turn_id": body.get("turn_id"),
                             "id": body.get("id")})

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def drift(samples: list[tuple[float, int]], warmup_s: float) -> dict:
    """RSS drift after warm-up: first/last minute means, % change and a least-squares slope in MB/hour."""
    if not samples:
        return {}
    t0 = samples[0][0]
    after = [(t - t0, kb) for t, kb in samples if t - t0 >= warmup_s] or [(t - t0, kb) for t, kb in samples]
    ts = np.array([t for t, _ in after])
    mb = np.array([kb / 1024 for _, kb in after])
    first = mb[ts <= ts[0] + 60].mean()
    last = mb[ts >= ts[-1] - 60].mean()
    slope = float(np.polyfit(ts / 3600, mb, 1)[0]) if len(ts) >= 3 and ts[-1] > ts[0] else 0.0
    return {"warmup_s": warmup_s, "samples": len(samples), "rss_start_mb": round(float(mb[0]), 1),
            "rss_after_warmup_mb": round(float(first), 1), "rss_end_mb": round(float(last), 1),
            "rss_max_mb": round(float(mb.max()), 1),
            "drift_pct": round(float((last - first) / first * 100), 2), "slope_mb_per_hour": round(slope, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to feed requests (default 60)")
    ap.add_argument("--gap", type=float, nargs=2, default=(20.0, 40.0), metavar=("MIN", "MAX"),
                    help="seconds from the end of one turn to the next request (default 20 40)")
    ap.add_argument("--rss-every", type=float, default=10.0, help="RSS sampling period in seconds")
    ap.add_argument("--warmup-min", type=float, default=5.0, help="minutes excluded from the drift figure")
    ap.add_argument("--stuck-s", type=float, default=120.0, help="a non-idle state longer than this is 'stuck'")
    ap.add_argument("--turn-timeout", type=float, default=180.0, help="seconds a request's turn may take")
    ap.add_argument("--max-drift-pct", type=float, default=5.0, help="fail above this RSS drift (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here too")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    from edge_agent.config import load_settings
    from edge_agent.models import ModelStore

    store = ModelStore(load_settings(ROOT / "config.yaml").models_path)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ea-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"soak: work dir {work}", flush=True)

    # speech: wake word, a pause, the request; a few noise beds for the gaps
    clips = []
    for i, (kind, text, intent) in enumerate(REQUESTS):
        wav = compose(store, [("wake", "Hey Jarvis!"), ("silence", 0.5), ("piper", text), ("silence", 0.6)],
                      work / f"req{i}.wav")
        clips.append((kind, text, intent, wav))
    noise = np.random.default_rng(args.seed)

    broker = Broker(work / "broker").start()
    va = VirtualAudio().start()
    turn_log = work / "turns.jsonl"
    config = work / "config.yaml"
    config.write_text(
        f"site: {{site_id: kitchen, area: Kitchen}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, outbox_dir: {work / 'outbox'}}}\n"
        f"log: {{turn_log: {turn_log}}}\n"
        f"conversation: {{follow_up_s: 0.0, timers_file: {work / 'timers.json'}}}\n")
    watcher = Watcher(broker.port, "kitchen")
    t_launch = time.monotonic()
    daemon = Daemon(config, env=va.env, log_path=work / "daemon.log").start()
    rss: list[tuple[float, int]] = []
    rss_anon: list[tuple[float, int]] = []
    rss_file: list[tuple[float, int]] = []
    stop_sampling = threading.Event()
    stuck_events: list[dict] = []

    def sample() -> None:
        flagged_since = None
        while not stop_sampling.wait(args.rss_every):
            kb = rss_kb(daemon.proc.pid)
            if kb is not None:
                now = time.monotonic()
                rss.append((now, kb["VmRSS"]))
                for key, series in (("RssAnon", rss_anon), ("RssFile", rss_file)):
                    if key in kb:
                        series.append((now, kb[key]))
            if daemon.non_idle_for() > args.stuck_s and daemon.state_since != flagged_since:
                flagged_since = daemon.state_since
                stuck_events.append({"state": daemon.state, "for_s": round(daemon.non_idle_for(), 1),
                                     "at_s": round(time.monotonic() - t_launch, 1)})
                print(f"soak: STUCK in {daemon.state} for {daemon.non_idle_for():.0f} s", flush=True)

    requests: list[dict] = []
    exit_code = None
    try:
        try:
            daemon.wait_ready(300)
        except DaemonFailed as e:
            print(f"soak: daemon did not start: {e}", file=sys.stderr)
            return 2
        startup_s = time.monotonic() - t_launch
        print(f"soak: daemon ready in {startup_s:.1f} s", flush=True)
        threading.Thread(target=sample, daemon=True).start()
        t_end = time.monotonic() + args.minutes * 60
        i = 0
        while time.monotonic() < t_end and daemon.proc.poll() is None:
            kind, text, intent, wav = clips[i % len(clips)]
            i += 1
            n_before = len(daemon.turns())
            t_said = time.monotonic()
            va.say(wav, wait=True)
            try:
                rec = daemon.wait_turn(n_before, args.turn_timeout)
            except DaemonFailed:
                rec = None  # never ended (or the daemon died: the loop ends below)
            answered = bool(rec and rec.get("transcript") and rec.get("reply_spoken"))
            entry = {"n": i, "kind": kind, "text": text, "expect_intent": intent,
                     "t_s": round(t_said - t_launch, 1), "turn_id": rec and rec["turn_id"],
                     "outcome": rec and rec.get("outcome"), "transcript": rec and rec.get("transcript"),
                     "reply_spoken": rec and rec.get("reply_spoken"), "answered": answered,
                     "intents": rec and [x["name"] for x in rec.get("intents", [])],
                     "extra_turns": max(0, len(daemon.turns()) - n_before - 1)}
            if rec and rec.get("t_speech_end") and rec.get("t_first_audio"):
                entry["latency_s"] = round(rec["t_first_audio"] - rec["t_speech_end"], 3)
            requests.append(entry)
            print(f"soak: [{(time.monotonic() - t_launch) / 60:5.1f} min] #{i} {kind:8s} {text!r} -> "
                  f"{entry['outcome']} {entry['transcript']!r} / {entry['reply_spoken']!r} "
                  f"rss={rss[-1][1] // 1024 if rss else '?'} MB", flush=True)
            # wait for idle, then a gap of silence with some background noise
            try:
                daemon.wait_for(lambda: daemon.state == "idle", args.turn_timeout, "idle")
            except DaemonFailed:
                pass  # counted as stuck by the sampler
            gap = rng.uniform(*args.gap)
            bed_s = gap * rng.uniform(0.3, 0.8)
            dbfs = rng.choice([-60.0, -50.0, -40.0])
            bed = (noise.standard_normal(int(bed_s * 16000)) * 32768 * 10 ** (dbfs / 20)).clip(-32768, 32767)
            va.say(bed.astype(np.int16))
            time.sleep(gap)
        exit_code = daemon.proc.poll()
    finally:
        stop_sampling.set()
        # the last intents in flight: until every intent the daemon logged has arrived, for at most 10 s
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not _all_arrived(daemon, watcher):
            time.sleep(0.1)
        rc = daemon.stop(timeout=15)
        watcher.close()
        va.stop()
        broker.stop()

    # intents: every intent the daemon logged arrives on MQTT with its turn id, once by message id; separately,
    # whether each command was recognized as the intended one (recognition, not delivery)
    all_turns = daemon.turns(announcements=True)
    arrived = collections.Counter((m["turn_id"], m["intent"]) for m in watcher.intents)
    logged = collections.Counter((t["turn_id"], x["name"]) for t in all_turns for x in t.get("intents", []))
    expected_n = sum(logged.values())
    delivered = sum(min(n, arrived[k]) for k, n in logged.items())
    commands = [r for r in requests if r["expect_intent"]]
    for r in commands:
        r["intent_delivered"] = arrived[(r["turn_id"], r["expect_intent"])] > 0
    ids = [m["id"] for m in watcher.intents]
    dup_ids = len(ids) - len(set(ids))
    report = {
        "minutes": round((time.monotonic() - t_launch) / 60, 1),
        "daemon_exit_code": rc, "daemon_died_during_soak": exit_code is not None,
        "requests_total": len(requests),
        "requests_answered": sum(r["answered"] for r in requests),
        "requests_by_kind": {k: {"total": sum(r["kind"] == k for r in requests),
                                 "answered": sum(r["answered"] and r["kind"] == k for r in requests)}
                             for k in ("command", "question")},
        "turns_never_ended": sum(r["turn_id"] is None for r in requests),
        "turns_logged_total": len(all_turns),
        "outcomes": dict(collections.Counter(t.get("outcome") for t in all_turns)),
        "intents_expected": expected_n, "intents_delivered": delivered,
        "intent_messages_total": len(watcher.intents), "duplicate_intent_ids": dup_ids,
        "commands_total": len(commands),
        "commands_recognized": sum(1 for r in commands if r["intents"] and r["expect_intent"] in r["intents"]),
        "commands_intent_on_mqtt": sum(1 for r in commands if r["intent_delivered"]),
        "stuck_events": stuck_events, "max_non_idle_s": round(daemon.max_non_idle_s, 1),
        "latency_s": _stats([r["latency_s"] for r in requests if "latency_s" in r]),
        "rss": drift(rss, args.warmup_min * 60),
        "rss_anon": drift(rss_anon, args.warmup_min * 60),
        "rss_file": drift(rss_file, args.warmup_min * 60),
        "log_warnings": len(daemon.warnings), "log_errors": len(daemon.errors), "tracebacks": daemon.tracebacks,
        "workdir": str(work),
        "requests": requests,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    (work / "soak.json").write_text(text)
    summary = {k: v for k, v in report.items() if k != "requests"}
    print(json.dumps(summary, indent=2), flush=True)
    ok = (not stuck_events and report["turns_never_ended"] == 0 and delivered == expected_n and dup_ids == 0
          and rc == 0 and exit_code is None and abs(report["rss"].get("drift_pct", 0.0)) <= args.max_drift_pct)
    print("soak: PASS" if ok else "soak: FAIL", flush=True)
    return 0 if ok else 1


def _all_arrived(daemon: Daemon, watcher: Watcher) -> bool:
    arrived = {(m["turn_id"], m["intent"]) for m in list(watcher.intents)}
    return all((t["turn_id"], x["name"]) in arrived for t in daemon.turns(announcements=True)
               for x in t.get("intents", []))


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.array(xs)
    return {"n": len(xs), "median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "max": round(float(a.max()), 3)}


if __name__ == "__main__":
    sys.exit(main())
