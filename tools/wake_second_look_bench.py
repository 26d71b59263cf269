#!/usr/bin/env python3
"""The second look for doubtful wake detections, measured: false accepts per hour and false rejects with and without
it, per band, and the speech-to-text time each second look costs.

    nice -n 10 .venv/bin/python tools/wake_second_look_bench.py [--negatives DIR] [--out DIR]

The audio and the detector's rules are ``tools/wake_bench.py``'s (the same negative set, the same 80 spoken "Hey
Jarvis, <request>" in the same five conditions, the same noise seeds). Every detection (rising edge over the model's
own cutoff, 2 s refractory) carries the score of the frame that fired, as the live detector's does. A detection that
scores below ``cutoff + the widest band`` gets the transcript of the ``wake_verify.WAKE_AUDIO_S`` seconds of audio
before it from the configured STT (real Whisper tiny.en), as the engine's second look does; every band is then
decided from those transcripts with ``wake_verify.decide``:

* a false accept is a detection on the negative set that the decision accepts;
* a spoken request is rejected when none of its detections is accepted (the first one opens the turn; a rejected
  one drops it, as live).

Writes ``OUT/second-look.json`` (every detection with its score and transcript, and the figures) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import wake_bench as wb  # noqa: E402

from edge_agent.audio import SAMPLE_RATE, read_wav  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.wake import WakeDetector, resolve_spec  # noqa: E402
from edge_agent.wake_tail import wake_phrase  # noqa: E402
from edge_agent.wake_verify import ACCEPT, WAKE_AUDIO_S, decide, heard_wake, look_window  # noqa: E402
from edge_agent.wake_verify import look as wake_look  # noqa: E402

# bands per model (0 = the second look off); the widest one decides which detections are transcribed
BANDS = {"hey_jarvis": [0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.49], "hey_jarvis_v2": [0.0, 0.01, 0.02, 0.025, 0.029]}


class Looker:
    """The second look of the engine: the configured STT over the audio up to a detection, timed."""

    def __init__(self, settings) -> None:
        from edge_agent.stt import make_engine

        self.stt = make_engine(settings.stt, settings)
        self.stt.load()
        self.stt.warmup()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.cache: dict[tuple[str, float], tuple[str, float | None]] = {}

    def look(self, key: str, audio: np.ndarray, t: float, phrase: str) -> tuple[str, float | None]:
        """The transcript of the audio up to ``t`` and, where it does not say the phrase, the STT model's
        probability of the phrase's name (``SttEngine.word_probability``), as the engine's second look does."""
        k = (key, round(t, 3))
        if k not in self.cache:
            piece = look_window(audio, t, SAMPLE_RATE)
            w0, c0 = time.perf_counter(), time.process_time()  # CTranslate2 computes on its own threads
            self.cache[k] = wake_look(self.stt, piece, phrase)
            self.wall.append(time.perf_counter() - w0)
            self.cpu.append(time.process_time() - c0)
        return self.cache[k]


def detections(rec: wb.Recorder, specs: dict, audio: np.ndarray, key: str, looker: Looker) -> dict[str, list[dict]]:
    """Per model: each detection in ``audio`` (t, score) and, when it is doubtful at the widest band, its transcript."""
    rec.traces = {n: [] for n in rec.det.names}
    rec.run(audio)
    out: dict[str, list[dict]] = {}
    for n, spec in specs.items():
        evs = []
        trace = np.asarray(rec.traces[n]).reshape(-1, 2)
        for t, score in wb.events(trace, spec.threshold, spec.refractory_s):
            # the run's peak: the highest score before it falls below the cutoff again (for the "peak" variant)
            run = trace[trace[:, 0] >= t - 1e-6, 1]
            end = int(np.argmax(run < spec.threshold)) if (run < spec.threshold).any() else len(run)
            e = {"t": round(t, 3), "score": round(score, 5), "peak": round(float(run[:end].max()), 5),
                 "run_s": round(end * float(np.median(np.diff(trace[:, 0]))), 3)}
            if score < spec.threshold + max(BANDS[n]):
                e["transcript"], name_prob = looker.look(key, audio, t, wake_phrase(n))
                if name_prob is not None:
                    e["name_prob"] = round(name_prob, 4)
            evs.append(e)
        out[n] = evs
    return out


def accepted(e: dict, cutoff: float, band: float, phrase: str, key: str = "score") -> bool:
    """The decision on one detection, by the score it fired with (``key`` "score") or its run's peak ("peak")."""
    return decide(e[key], cutoff, band, phrase, e.get("transcript"), e.get("name_prob")) == ACCEPT


def summarize(neg: list[dict], pos: list[dict], specs: dict, hours: float, looker: Looker) -> dict:
    res: dict = {"models": {}}
    for n, spec in specs.items():
        phrase, cut = wake_phrase(n), spec.threshold
        neg_ev = [e for f in neg for e in f["detections"][n]]
        rows = []
        for key in ("score", "peak"):
            for band in BANDS[n]:
                if key == "peak" and band == 0:
                    continue  # the same as by score
                fa = sum(accepted(e, cut, band, phrase, key) for e in neg_ev)
                looks = sum(cut <= e[key] < cut + band for e in neg_ev) if band > 0 else 0
                row = {"by": key, "band": band, "clear_from": round(cut + band, 4), "fa": fa,
                       "fa_per_h": round(fa / hours, 2), "second_looks_per_h_negatives": round(looks / hours, 2)}
                for cname, _, _ in wb.CONDITIONS:
                    clips = [p for p in pos if p["condition"] == cname]
                    missed = sum(not any(accepted(e, cut, band, phrase, key) for e in p["detections"][n])
                                 for p in clips)
                    row[f"fr_{cname}"] = round(100 * missed / len(clips), 2)
                dets = [p["detections"][n][0] for p in pos if p["detections"][n]]
                row["true_first_detections_looked_at_pct"] = round(
                    100 * sum(band > 0 and e[key] < cut + band for e in dets) / max(1, len(dets)), 1)
                rows.append(row)
        widest = max(BANDS[n])
        res["models"][n] = {
            "engine": spec.engine, "cutoff": cut, "phrase": phrase, "rows": rows,
            "negatives_passed_at_widest": sorted({e["transcript"] for e in neg_ev if "transcript" in e
                                                  and heard_wake(e["transcript"], phrase, e.get("name_prob"))}),
            "positives_rejected_at_widest": sorted({e["transcript"] for p in pos for e in p["detections"][n][:1]
                                                    if "transcript" in e and e["score"] < cut + widest
                                                    and not heard_wake(e["transcript"], phrase, e.get("name_prob"))}),
        }
    w, c = np.asarray(looker.wall), np.asarray(looker.cpu)
    res["second_look_stt"] = {"n": len(w), "wall_median_s": round(float(np.median(w)), 3) if len(w) else None,
                              "wall_p90_s": round(float(np.percentile(w, 90)), 3) if len(w) else None,
                              "cpu_median_s": round(float(np.median(c)), 3) if len(c) else None,
                              "audio_s": WAKE_AUDIO_S}
    return res


def bench(settings, negatives: Path, pool: Path, log=print) -> dict:
    specs = {s.name: s for s in (resolve_spec(settings, m) for m in wb.MODELS)}
    features = settings.path(settings.models_dir) / "oww_features"
    rec = wb.Recorder(WakeDetector(list(specs.values()), features / "melspectrogram.onnx",
                                   features / "embedding_model.onnx"))
    looker = Looker(settings)
    manifest = json.loads((negatives / "manifest.json").read_text())
    t0 = time.monotonic()
    neg = []
    for f in manifest["files"]:
        audio = read_wav(negatives / f["file"])
        neg.append({"file": f["file"], "detections": detections(rec, specs, audio, f["file"], looker)})
        log(f"negatives {f['file']}: {time.monotonic() - t0:.0f} s, {len(looker.wall)} second looks")
    hours = sum(f["seconds"] for f in manifest["files"]) / 3600
    rng = np.random.default_rng(7)  # wake_bench's noise, in its order
    pos_audio = wb.positives(pool, settings.path(settings.models_dir))
    pos = []
    for cname, color, snr in wb.CONDITIONS:
        for k, (voice, x) in enumerate(pos_audio):
            audio = wb.with_noise(x, color, snr, rng)
            pos.append({"condition": cname, "voice": voice, "request": wb.REQUESTS[k // 10] if len(pos_audio) == 80
                        else None, "detections": detections(rec, specs, audio, f"{cname}/{k}", looker)})
        log(f"positives {cname}: {time.monotonic() - t0:.0f} s, {len(looker.wall)} second looks")
    res = summarize(neg, pos, specs, hours, looker)
    res.update({"machine": f"{wb.platform.machine()}, {wb._cpu_name()}, {wb.platform.python_version()}",
                "negative_set": {"dir": str(negatives), "hours": round(hours, 3), "seed": manifest["seed"]},
                "positives": len(pos), "stt": settings.stt.engine, "negatives": neg, "spoken": pos})
    return res


def markdown(res: dict) -> str:
    lines = ["| model | decided by | band (clear from) | FA/h (count) | FR clean | FR white 20 / 10 dB | "
             "FR pink 20 / 10 dB | second looks per h of negatives | true detections looked at |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, m in res["models"].items():
        for r in m["rows"]:
            lines.append(f"| {n} | {r['by']} | {r['band']} ({r['clear_from']}) | {r['fa_per_h']} ({r['fa']}) | "
                         f"{r['fr_clean']} % | {r['fr_white 20 dB']} / {r['fr_white 10 dB']} % | "
                         f"{r['fr_pink 20 dB']} / {r['fr_pink 10 dB']} % | {r['second_looks_per_h_negatives']} | "
                         f"{r['true_first_detections_looked_at_pct']} % |")
    st = res["second_look_stt"]
    lines.append(f"\nSTT per second look ({st['audio_s']} s of audio, {st['n']} looks): "
                 f"median {st['wall_median_s']} s, p90 {st['wall_p90_s']} s wall; "
                 f"process CPU median {st['cpu_median_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from make_negative_set import DEFAULT_OUT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--negatives", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT.parent / "wake-bench")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="recompute the figures from an earlier run's second-look.json (new renderings, bands)")
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    if args.from_json:
        old = json.loads(args.from_json.read_text())
        specs = {s.name: s for s in (resolve_spec(settings, m) for m in wb.MODELS)}
        looker = type("L", (), {"wall": [], "cpu": []})()
        res = summarize(old["negatives"], old["spoken"], specs, old["negative_set"]["hours"], looker)
        res["second_look_stt"] = old["second_look_stt"]
        print(markdown(res))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    res = bench(settings, args.negatives, args.out / "positives", log=lambda s: print(s, file=sys.stderr, flush=True))
    (args.out / "second-look.json").write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
