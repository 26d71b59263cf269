#!/usr/bin/env python3
"""Wake word benchmark: false accepts per hour on the negative set, false rejects on spoken wake requests.

    nice -n 10 .venv/bin/python tools/wake_bench.py [--negatives DIR] [--out DIR] [--png docs/wake-det.png]

Every engine/model is run once over the audio (one detector, all models); each (window-averaged) score is recorded,
so the threshold sweep is computed from the recorded traces with the detector's own rules (rising edge over the
cutoff, refractory time) without running the models again.

* False accepts: the negative set of ``tools/make_negative_set.py`` streamed file by file (detector reset per file).
* False rejects: "Hey Jarvis, <request>" spoken by Piper (joe, six speed/noise settings) and by espeak-ng voices,
  after 0.5 s of silence, clean and with white and pink noise at 20 and 10 dB SNR (relative to the speech's RMS);
  a request is accepted when its model fires anywhere in it.

Writes ``OUT/wake-bench.json`` and a PNG of FA/h against FR (``tools/pngplot.py``: a small zlib PNG writer, no
matplotlib).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import pngplot  # noqa: E402

from edge_agent.audio import SAMPLE_RATE, read_wav  # noqa: E402
from edge_agent.config import WakeModelSettings, load_settings  # noqa: E402
from edge_agent.wake import WakeDetector, resolve_spec  # noqa: E402

REQUESTS = ["what time is it?", "turn on the kitchen light.", "set a timer for ten minutes.",
            "what's the weather like?", "turn off the lights in the living room.", "play some music.",
            "how warm is it in the bedroom?", "lock the front door."]
ESPEAK = [("en-us", 150), ("en", 140), ("en-us+f3", 165), ("en-gb-x-rp", 160), ("en+m7", 140), ("en+f4", 175),
          ("en-gb-scotland", 150), ("en-029", 150)]
CONDITIONS = [("clean", None, None), ("white 20 dB", "white", 20), ("white 10 dB", "white", 10),
              ("pink 20 dB", "pink", 20), ("pink 10 dB", "pink", 10)]
MODELS = [WakeModelSettings("hey_jarvis", engine="openwakeword"),
          WakeModelSettings("hey_jarvis_v2", engine="microwakeword")]
LEAD_S, TAIL_S = 0.5, 1.0
GRID = sorted({round(float(x), 4) for x in np.concatenate([np.arange(0.05, 0.9, 0.05), np.arange(0.9, 0.999, 0.005),
                                                               [0.97, 0.99, 0.995, 0.996]])})


# ------------------------------------------------------------------------------------------------ audio


def positives(pool: Path, models_dir: Path) -> list[tuple[str, np.ndarray]]:
    from make_negative_set import PIPER, Piper, espeak

    pool.mkdir(parents=True, exist_ok=True)
    piper = Piper(models_dir)
    out = []
    for i, req in enumerate(REQUESTS):
        text = f"Hey Jarvis, {req}"
        for length, noise in PIPER:
            out.append((f"piper:joe@{length}/{noise}", piper.say(text, length, noise, pool)))
        for voice, speed in ESPEAK[i % 2::2]:  # each espeak voice says half the requests
            out.append((f"espeak:{voice}@{speed}", espeak(text, voice, speed, pool)))
    return out


def with_noise(x: np.ndarray, color: str | None, snr: float | None, rng: np.random.Generator) -> np.ndarray:
    from make_negative_set import noise

    padded = np.concatenate([np.zeros(int(LEAD_S * SAMPLE_RATE)), x.astype(np.float64),
                             np.zeros(int(TAIL_S * SAMPLE_RATE))])
    if color is not None:
        speech_rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
        padded = padded + noise(rng, len(padded), color) * speech_rms / 10 ** (snr / 20)
    return np.clip(padded, -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------------ running


class Recorder:
    """Collects every score of every model while audio streams through the detector."""

    def __init__(self, det: WakeDetector) -> None:
        self.det = det
        self.traces: dict[str, list[tuple[float, float]]] = {n: [] for n in det.names}
        det.on_score = lambda name, t, s: self.traces[name].append((t, s))

    def run(self, audio: np.ndarray, t0: float = 0.0, block: int = 1280) -> None:
        self.det.reset()
        for i in range(0, len(audio), block):
            piece = audio[i:i + block]
            self.det.process(piece, t0 + (i + len(piece)) / SAMPLE_RATE)


def events(trace: np.ndarray, cutoff: float, refractory_s: float) -> list[tuple[float, float]]:
    """The detector's rule on a recorded trace (t, score): the (time, score) of each rising edge over the cutoff,
    refractory time apart; the score is the one the detection carries (the first frame at or above the cutoff)."""
    if len(trace) == 0:
        return []
    t, s = trace[:, 0], trace[:, 1]
    above = s >= cutoff
    rising = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
    out: list[tuple[float, float]] = []
    last = -np.inf
    for i in rising:
        if t[i] - last >= refractory_s:
            out.append((float(t[i]), float(s[i])))
            last = t[i]
    return out


def count_events(trace: np.ndarray, cutoff: float, refractory_s: float) -> int:
    """How many detections the detector's rule makes on a recorded trace (see ``events``)."""
    return len(events(trace, cutoff, refractory_s))


def bench(settings, negatives: Path, pool: Path, log=print) -> dict:
    specs = [resolve_spec(settings, m) for m in MODELS]
    features = settings.path(settings.models_dir) / "oww_features"
    det = WakeDetector(specs, features / "melspectrogram.onnx", features / "embedding_model.onnx")
    rec = Recorder(det)
    manifest = json.loads((negatives / "manifest.json").read_text())
    # negatives: each file on its own stream time, offset so the traces of all files form one timeline
    t_off, t0 = 0.0, time.monotonic()
    cpu0 = det.cpu_s
    starts: list[tuple[float, dict]] = []  # (timeline offset, manifest entry): where each event came from
    for f in manifest["files"]:
        audio = read_wav(negatives / f["file"])
        starts.append((t_off, f))
        rec.run(audio, t_off)
        t_off += len(audio) / SAMPLE_RATE + 10.0  # a gap longer than any refractory time between files
        log(f"negatives {f['file']}: {time.monotonic() - t0:.0f} s")
    hours = sum(f["seconds"] for f in manifest["files"]) / 3600
    neg = {n: np.asarray(v) for n, v in rec.traces.items()}
    cpu_rtf = (det.cpu_s - cpu0) / (hours * 3600)
    # positives
    rng = np.random.default_rng(7)
    pos_audio = positives(pool, settings.path(settings.models_dir))
    peaks: dict[str, dict[str, list[float]]] = {n: {c: [] for c, _, _ in CONDITIONS} for n in det.names}
    voices: list[str] = []
    for cname, color, snr in CONDITIONS:
        for voice, x in pos_audio:
            rec.traces = {n: [] for n in det.names}
            rec.run(with_noise(x, color, snr, rng))
            for n in det.names:
                peaks[n][cname].append(max((s for _, s in rec.traces[n]), default=0.0))
            if cname == "clean":
                voices.append(voice)
        log(f"positives {cname}: {time.monotonic() - t0:.0f} s")
    out: dict = {"machine": f"{platform.machine()}, {_cpu_name()}, {platform.python_version()}",
                 "negative_set": {"dir": str(negatives), "hours": round(hours, 3), "seed": manifest["seed"],
                                  "files": len(manifest["files"])},
                 "positives": {"n": len(pos_audio), "voices": sorted(set(voices)),
                               "conditions": [c for c, _, _ in CONDITIONS]},
                 "wake_cpu_rtf_all_models": round(cpu_rtf, 4), "models": {}}
    for spec in specs:
        n = spec.name
        pk = {c: np.asarray(v) for c, v in peaks[n].items()}
        piper = np.array([v.startswith("piper") for v in voices])

        def row(cut: float, n=n, pk=pk, piper=piper, refractory_s=spec.refractory_s) -> dict:
            fa = count_events(neg[n], cut, refractory_s)
            r = {"cutoff": cut, "fa": fa, "fa_per_h": round(fa / hours, 3)}
            for c, v in pk.items():
                r[f"fr_{c}"] = round(100 * float(np.mean(v < cut)), 2)
            r["fr_clean_piper"] = round(100 * float(np.mean(pk["clean"][piper] < cut)), 2)
            r["fr_clean_espeak"] = round(100 * float(np.mean(pk["clean"][~piper] < cut)), 2)
            return r

        out["models"][n] = {"engine": spec.engine, "cutoff": spec.threshold, "sliding_window": spec.sliding_window,
                            "refractory_s": spec.refractory_s, "at_cutoff": row(spec.threshold),
                            "sweep": [row(c) for c in GRID],
                            "top_negative_scores": sorted(np.round(neg[n][:, 1], 3).tolist())[-5:],
                            "fa_by_scene": fa_by_scene(events(neg[n], spec.threshold, spec.refractory_s), starts)}
    out["scene_hours"] = scene_hours(manifest)
    return out


def locate(t: float, starts: list[tuple[float, dict]]) -> tuple[str, float, dict | None]:
    """The negative-set file, the time within it and the scene segment (make_negative_set.py's manifest) a timeline
    time falls in."""
    for off, f in reversed(starts):
        if t >= off:
            local = t - off
            for seg in f.get("segments", []):
                if seg["start_s"] <= local < seg["start_s"] + seg["seconds"] + 0.5:  # a score lags its audio a little
                    return f["file"], local, seg
            return f["file"], local, None
    return "?", t, None


def fa_by_scene(evs: list[tuple[float, float]], starts: list[tuple[float, dict]]) -> dict[str, dict]:
    """False accepts per scene of the negative set: count, and each event's file, second, score and the scene's
    background (what a household would be doing when the device spoke up)."""
    out: dict[str, dict] = {}
    for t, score in evs:
        file, local, seg = locate(t, starts)
        name = seg["scene"] if seg else "?"
        d = out.setdefault(name, {"fa": 0, "events": []})
        d["fa"] += 1
        d["events"].append({"file": file, "t_s": round(local, 2), "score": round(score, 3),
                            "background": (seg or {}).get("background"), "snr_db": (seg or {}).get("snr_db")})
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["fa"]))


def scene_hours(manifest: dict) -> dict[str, float]:
    """Hours of each scene in the negative set."""
    hours: dict[str, float] = {}
    for f in manifest["files"]:
        for seg in f.get("segments", []):
            hours[seg["scene"]] = hours.get(seg["scene"], 0.0) + seg["seconds"] / 3600
    return {k: round(v, 3) for k, v in sorted(hours.items())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({_ncpu()} cores)"
    except OSError:
        pass
    return platform.processor()


def _ncpu() -> int:
    import os

    return len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------------ PNG

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def plot(results: dict, path: Path, fr_key: str = "fr_clean") -> None:
    """FA/h (log, 0.1 .. 100; 0 drawn at the bottom) against FR % (0 .. 100) per model: one curve per model for
    ``fr_key`` (solid) and the white 10 dB FR (thin)."""
    W, H, L, B, T, Rm = 640, 440, 70, 50, 20, 20
    img = np.full((H, W, 3), 255, np.uint8)
    pw, ph = W - L - Rm, H - T - B
    ymin, ymax = -1.0, 2.0  # log10 FA/h

    def xy(fr: float, fa: float) -> tuple[float, float]:
        ly = min(ymax, np.log10(max(fa, 10 ** ymin)))  # 0 is drawn at the bottom, > 100 at the top
        return L + pw * fr / 100, T + ph * (1 - (ly - ymin) / (ymax - ymin))

    grey = (220, 220, 220)
    for fr in range(0, 101, 10):
        x, _ = xy(fr, 1)
        pngplot.line(img, x, T, x, T + ph, grey, 1)
        pngplot.text(img, int(x) - pngplot.text_width(str(fr), 2) // 2, T + ph + 8, str(fr), scale=2)
    for e in (-1, 0, 1, 2):
        _, y = xy(0, 10.0 ** e)
        pngplot.line(img, L, y, L + pw, y, grey, 1)
        pngplot.text(img, 8, int(y) - 7, {-1: "0.1", 0: "1", 1: "10", 2: "100"}[e], scale=2)
    pngplot.line(img, L, T, L, T + ph, pngplot.BLACK, 2)
    pngplot.line(img, L, T + ph, L + pw, T + ph, pngplot.BLACK, 2)
    pngplot.text(img, L + pw // 2 - 20, H - 18, "FR %", scale=2)
    pngplot.text(img, L + 8, 2, "FA/h", scale=2)
    for k, m in enumerate(results["models"].values()):
        color = COLORS[k % len(COLORS)]
        for key, width in ((fr_key, 3), ("fr_white 10 dB", 1)):
            pts = [(r[key], r["fa_per_h"]) for r in sorted(m["sweep"], key=lambda r: r["cutoff"])]
            for (a, b), (c, d) in zip(pts, pts[1:], strict=False):
                pngplot.line(img, *xy(a, b), *xy(c, d), color, width)
        x, y = xy(m["at_cutoff"][fr_key], m["at_cutoff"]["fa_per_h"])
        img[int(y) - 5:int(y) + 5, int(x) - 5:int(x) + 5] = color  # the model's own cutoff
        img[T + 10 + 16 * k:T + 20 + 16 * k, W - 140:W - 120] = color  # legend swatch (names are in the docs)
        pngplot.text(img, W - 112, T + 8 + 16 * k, str(k + 1), scale=2)
    pngplot.write_png(path, img)


def markdown(results: dict) -> str:
    lines = ["| model (engine) | cutoff | window | FA/h | FR clean (Piper / espeak-ng) | FR white 20 / 10 dB | "
             "FR pink 20 / 10 dB |", "|---|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        r = m["at_cutoff"]
        lines.append(f"| {name} ({m['engine']}) | {m['cutoff']} | {m['sliding_window']} | {r['fa_per_h']} "
                     f"({r['fa']}) | {r['fr_clean']} % ({r['fr_clean_piper']} / {r['fr_clean_espeak']}) | "
                     f"{r['fr_white 20 dB']} / {r['fr_white 10 dB']} % | "
                     f"{r['fr_pink 20 dB']} / {r['fr_pink 10 dB']} % |")
    hours = results.get("scene_hours") or {}
    if hours:
        names = list(results["models"])
        lines += ["", "False accepts per scene at each model's cutoff (count, per hour of that scene):", "",
                  "| scene | hours | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for scene, h in sorted(hours.items(), key=lambda kv: -sum(
                results["models"][n].get("fa_by_scene", {}).get(kv[0], {}).get("fa", 0) for n in names)):
            cells = []
            for n in names:
                fa = results["models"][n].get("fa_by_scene", {}).get(scene, {}).get("fa", 0)
                cells.append(f"{fa} ({fa / h:.1f}/h)" if h else str(fa))
            lines.append(f"| {scene} | {h:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from make_negative_set import DEFAULT_OUT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--negatives", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT.parent / "wake-bench")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    res = bench(settings, args.negatives, args.out / "positives", log=lambda s: print(s, file=sys.stderr, flush=True))
    (args.out / "wake-bench.json").write_text(json.dumps(res, indent=1))
    plot(res, args.png or args.out / "wake-det.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
