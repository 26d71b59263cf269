#!/usr/bin/env python3
"""Household verifier benchmark: enroll two simulated members, then count false accepts and rejects before/after.

    nice -n 10 .venv/bin/python tools/wake_enroll_bench.py [--negatives DIR] [--test-files 12] [--out DIR]

Members are distinct synthetic voices: "joe" (Piper en_US joe, takes varied by speed and noise scale) and "ruth"
(espeak-ng en-us+f3, takes varied by speed and pitch). Each enrolls with 5 takes of "Hey Jarvis" and ~12 s of other
sentences (``edge-agent wake enroll``'s own code, ``wake_enroll.enroll``, with its default 10-minute negative slice
from the first files of the negative set). Then, for each wake model (openWakeWord ``hey_jarvis``, microWakeWord
``hey_jarvis_v2``), with and without the verifier:

* false rejects: 16 held-out "Hey Jarvis, <request>" per member (other takes than enrollment's: other speeds, noise
  scales, pitches; half with pink noise at 20 dB SNR), a request accepted when the detector fires in it;
* non-members: 6 espeak-ng voices that were not enrolled saying "Hey Jarvis, <request>" (4 each): accepted ones are
  false accepts for a household verifier;
* false accepts per hour on the last ``--test-files`` files of the negative set (never used in enrollment).

With ``--impostors``, enrollment also gets 3 takes of the wake phrase by each of 6 other espeak-ng voices (none of
the members', none of the non-members tested) as negatives (``edge-agent wake enroll --impostors``).

Audio is cached in OUT (default /tmp/wake-enroll); results go to OUT/result.json and stdout (markdown).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from edge_agent.audio import SAMPLE_RATE, read_wav, write_wav  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.wake_enroll import (  # noqa: E402
    CHUNK_S,
    Speaker,
    default_negatives,
    enroll,
    extractor_for,
    negative_chunks,
    pad,
)

MODELS = ["hey_jarvis", "hey_jarvis_v2"]
ENROLL_TEXTS = ["Hey Jarvis.", "Hey Jarvis!", "Hey, Jarvis.", "Hey Jarvis?", "Hey Jarvis."]
OTHER_TEXTS = ["I'll be home around six tonight, save me some dinner.",
               "Did anyone see where I left the blue umbrella?",
               "The kids have swimming practice on Thursday after school.",
               "We need milk, eggs and a loaf of bread from the shop."]
REQUESTS = ["what time is it?", "turn on the kitchen light.", "set a timer for ten minutes.",
            "what's the weather like?", "turn off the lights in the living room.", "play some music.",
            "how warm is it in the bedroom?", "lock the front door."]
# (length_scale, noise_scale) for Piper; (speed, pitch) for espeak-ng: enrollment takes and held-out takes differ
JOE_ENROLL = [(1.0, 0.667), (0.9, 0.5), (1.1, 0.8), (1.0, 0.4), (1.2, 0.667)]
JOE_TEST = [(0.95, 0.6), (1.05, 0.75)]
RUTH_VOICE = "en-us+f3"
RUTH_ENROLL = [(165, 50), (150, 45), (180, 55), (160, 60), (170, 40)]
RUTH_TEST = [(155, 52), (175, 48)]
OTHERS = ["en-gb-scotland", "en-029", "en+m7", "en-gb-x-rp", "en-us-nyc", "en+f4"]
# --impostors: other voices (none of the members', none of OTHERS) saying the wake phrase, taught as negatives
IMPOSTORS = ["en-us", "en-gb", "en-us+m3", "en-us+f2", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]


def espeak(text: str, voice: str, speed: int, pitch: int, cache: Path) -> np.ndarray:
    import hashlib

    path = cache / f"e-{hashlib.sha1(repr((text, voice, speed, pitch)).encode()).hexdigest()[:14]}.wav"
    if not path.exists():
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                           check=True, capture_output=True)
            write_wav(path, read_wav(tmp.name))
    return read_wav(path)


def pink(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    from make_negative_set import noise

    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    y = x.astype(np.float64) + noise(rng, len(x), "pink") * rms / 10 ** (snr_db / 20)
    return np.clip(y, -32768, 32767).astype(np.int16)


def make_audio(out: Path, models_dir: Path) -> dict:
    """The members' enrollment clips (written as WAV files, as a user would give them) and the test clips."""
    from make_negative_set import Piper

    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    piper = Piper(models_dir)
    rng = np.random.default_rng(7)
    members: dict[str, Speaker] = {}
    tests: dict[str, list[tuple[str, np.ndarray]]] = {"joe": [], "ruth": [], "others": []}
    for name in ("joe", "ruth"):
        sp = Speaker(name)
        for i, text in enumerate(ENROLL_TEXTS):
            if name == "joe":
                audio = piper.say(text, *JOE_ENROLL[i], cache)
            else:
                audio = espeak(text, RUTH_VOICE, *RUTH_ENROLL[i], cache)
            p = out / "enroll" / f"{name}-wake-{i + 1}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            write_wav(p, audio)
            sp.wake.append(p)
        talk = []
        for i, text in enumerate(OTHER_TEXTS):
            talk.append(piper.say(text, *JOE_ENROLL[i], cache) if name == "joe"
                        else espeak(text, RUTH_VOICE, *RUTH_ENROLL[i], cache))
            talk.append(np.zeros(SAMPLE_RATE // 3, np.int16))
        p = out / "enroll" / f"{name}-other.wav"
        write_wav(p, np.concatenate(talk))
        sp.other.append(p)
        members[name] = sp
        for j, req in enumerate(REQUESTS):
            text = f"Hey Jarvis, {req}"
            for k in range(2):
                if name == "joe":
                    audio = piper.say(text, *JOE_TEST[k], cache)
                else:
                    audio = espeak(text, RUTH_VOICE, *RUTH_TEST[k], cache)
                noisy = (j + k) % 2 == 1
                tests[name].append((f"{name}:{j}:{k}{':pink20' if noisy else ''}",
                                    pink(pad(audio), 20, rng) if noisy else pad(audio)))
    for v, voice in enumerate(OTHERS):
        for j in range(4):
            req = REQUESTS[(v + 2 * j) % len(REQUESTS)]
            tests["others"].append((f"{voice}:{j}", pad(espeak(f"Hey Jarvis, {req}", voice, 160, 50, cache))))
    impostors = []
    for voice in IMPOSTORS:
        for i, text in enumerate(ENROLL_TEXTS[:3]):
            p = out / "enroll" / f"impostor-{voice}-{i + 1}.wav"
            write_wav(p, espeak(text, voice, 150 + 10 * i, 50, cache))
            impostors.append(p)
    return {"members": members, "tests": tests, "impostors": impostors}


def accepted(ext, clips: list[tuple[str, np.ndarray]], verifier) -> int:
    return sum(ext.detections(audio, verifier) > 0 for _, audio in clips)


def run(args: argparse.Namespace) -> dict:
    settings = load_settings(None)
    t0 = time.monotonic()
    data = make_audio(args.out, settings.models_path)
    print(f"audio ready in {time.monotonic() - t0:.0f} s", flush=True)
    members = list(data["members"].values())
    files = sorted(args.negatives.glob("neg-*.wav"))
    test_files = files[-args.test_files:]
    enroll_chunks = negative_chunks(args.negatives, args.negative_minutes, files[:-args.test_files])
    used = {name.split("@")[0] for name, _ in enroll_chunks}
    assert not used & {f.name for f in test_files}, "enrollment and test files overlap"
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                    "command": "tools/wake_enroll_bench.py " + " ".join(sys.argv[1:]),
                    "enroll_negatives": sorted(used), "test_files": [f.name for f in test_files],
                    "test_hours": round(len(test_files) * 300 / 3600, 2), "models": {}}
    for model in MODELS:
        ext = extractor_for(settings, model)
        t1 = time.monotonic()
        verifier, report = enroll(ext, members, enroll_chunks, impostors=data["impostors"] if args.impostors else None,
                                  log=lambda m, model=model: print(f"  [{model}] {m}", flush=True))
        verifier.save(args.out / f"{model}.verifier.json")
        row: dict = {"enroll": report, "enroll_s": round(time.monotonic() - t1, 1), "cutoff": ext.cutoff}
        for group in ("joe", "ruth", "others"):
            clips = data["tests"][group]
            row[group] = {"clips": len(clips), "before": accepted(ext, clips, None),
                          "after": accepted(ext, clips, verifier)}
        fa_before = fa_after = 0
        cpu0 = time.process_time()
        for f in test_files:
            audio = read_wav(f)
            fa_before += ext.detections(audio, None)
            fa_after += ext.detections(audio, verifier)
        hours = len(test_files) * 300 / 3600
        row["negatives"] = {"hours": round(hours, 2), "fa_before": fa_before, "fa_after": fa_after,
                            "fa_per_h_before": round(fa_before / hours, 2),
                            "fa_per_h_after": round(fa_after / hours, 2),
                            "cpu_s": round(time.process_time() - cpu0, 1)}
        result["models"][model] = row
        print(json.dumps({model: {k: v for k, v in row.items() if k != "enroll"}}), flush=True)
    return result


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    import os

    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def markdown(res: dict) -> str:
    lines = ["| model | cutoff | members' FR before -> after (joe / ruth) | non-members accepted before -> after | "
             f"FA/h on {res['test_hours']} h of negatives before -> after (count) |",
             "|---|---|---|---|---|"]
    for model, r in res["models"].items():
        def fr(g: str, k: str, r=r) -> str:
            return f"{100 * (1 - r[g][k] / r[g]['clips']):.1f} %"

        jn = r["joe"]["clips"] + r["ruth"]["clips"]
        fr_b = 100 * (1 - (r["joe"]["before"] + r["ruth"]["before"]) / jn)
        fr_a = 100 * (1 - (r["joe"]["after"] + r["ruth"]["after"]) / jn)
        n = r["negatives"]
        lines.append(f"| {model} ({r['enroll']['engine']}) | {r['cutoff']:.2f} | {fr_b:.1f} % -> {fr_a:.1f} % "
                     f"({fr('joe', 'before')} / {fr('ruth', 'before')} -> {fr('joe', 'after')} / "
                     f"{fr('ruth', 'after')}) | {r['others']['before']}/{r['others']['clips']} -> "
                     f"{r['others']['after']}/{r['others']['clips']} | {n['fa_per_h_before']} -> "
                     f"{n['fa_per_h_after']} ({n['fa_before']} -> {n['fa_after']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--negatives", type=Path, default=default_negatives())
    ap.add_argument("--negative-minutes", type=float, default=10.0,
                    help="enrollment's slice, spread over the files before the test files")
    ap.add_argument("--test-files", type=int, default=12, help="the last N 5-minute files are the test slice")
    ap.add_argument("--impostors", action="store_true",
                    help=f"also enroll with {len(IMPOSTORS)} other espeak-ng voices saying the wake phrase")
    ap.add_argument("--out", type=Path, default=Path("/tmp/wake-enroll"))
    args = ap.parse_args(argv)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n{res['date']}, {res['machine']}\n`{res['command']}`; enrollment negatives {CHUNK_S} s chunks of "
          f"{', '.join(res['enroll_negatives'])}\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
