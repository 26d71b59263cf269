#!/usr/bin/env python3
"""How often the second look drops a true wake phrase: fresh Piper renderings of one sentence, the default
microWakeWord model, and ``wake_verify.look`` on the configured STT for every detection in the model's band.

    .venv/bin/python tools/wake_look_renderings.py ["Hey Jarvis!"] [-n 300] [--band 0.02] [--after 0 0.3]

Piper samples its voice's variation at random, so every rendering differs a little, as the test suite's do (the
suite's wake phrases come from ``tests/conftest.py: piper_wav`` at the same default settings). Each rendering is put
where the tests put it: 0.5 s of silence, the sentence, 0.5 s, "Turn on the kitchen light.", 1 s. A detection whose
fired score is below cutoff + band gets the look over the ``WAKE_AUDIO_S`` seconds before it (``--after`` also looks
with that much audio after the detection, on the same rendering). Prints each rejected rendering (the transcript and
the name's probability) and a summary line per look; ``--json`` writes every rendering's figures.
The 3-hour negative set's side of the same question is ``tools/wake_second_look_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import wake_bench as wb  # noqa: E402

from edge_agent.audio import SAMPLE_RATE  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.wake import WakeDetector, resolve_spec  # noqa: E402
from edge_agent.wake_tail import wake_phrase  # noqa: E402
from edge_agent.wake_verify import heard_wake, look, look_window  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("text", nargs="?", default="Hey Jarvis!")
    ap.add_argument("-n", type=int, default=300, help="renderings (default 300)")
    ap.add_argument("--band", type=float, default=0.02, help="the second-look band above the cutoff (default 0.02)")
    ap.add_argument("--after", type=float, nargs="*", default=[], help="also look with this much audio after it (s)")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.n < 1 or not 0 < args.band < 1:
        ap.error("-n must be at least 1 and --band in (0, 1)")

    from make_negative_set import Piper

    from edge_agent.stt import make_engine

    s = load_settings(args.config)
    spec = resolve_spec(s, wb.MODELS[1])  # microWakeWord hey_jarvis_v2, the default
    features = s.path(s.models_dir) / "oww_features"
    rec = wb.Recorder(WakeDetector([spec], features / "melspectrogram.onnx", features / "embedding_model.onnx"))
    stt = make_engine(s.stt, s)
    stt.load()
    stt.warmup()
    piper = Piper(s.path(s.models_dir))
    phrase = wake_phrase(spec.name)

    def say(text: str) -> np.ndarray:  # a fresh rendering at Piper's default settings, as tests/conftest.py's
        return piper.say(text, 1.0, 0.667, None)

    def gap(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * SAMPLE_RATE), np.int16)

    tail = say("Turn on the kitchen light.")
    rows, looks = [], [0.0, *args.after]
    for i in range(args.n):
        audio = np.concatenate([gap(0.5), say(args.text), gap(0.5), tail, gap(1.0)])
        rec.traces = {name: [] for name in rec.det.names}
        rec.run(audio)
        trace = np.asarray(rec.traces[spec.name]).reshape(-1, 2)
        fired = list(wb.events(trace, spec.threshold, spec.refractory_s))
        row: dict = {"i": i, "max": round(float(trace[:, 1].max()), 4)}
        if fired:
            t, score = fired[0]
            row.update(t=round(float(t), 3), score=round(float(score), 4))
            if score < spec.threshold + args.band:
                for after in looks:
                    text, prob = look(stt, look_window(audio, t, SAMPLE_RATE, after), phrase)
                    row[f"look{after}"] = {"transcript": text, "name_prob": None if prob is None else round(prob, 4),
                                           "accepted": heard_wake(text, phrase, prob)}
                    if not row[f"look{after}"]["accepted"]:
                        print(f"rendering {i}: score {score:.4f}, {after} s after: heard {text!r}, the name's "
                              f"probability {prob}", flush=True)
        rows.append(row)
    detected = [r for r in rows if "score" in r]
    looked = [r for r in detected if "look0.0" in r]
    print(f"{args.text!r}, {args.n} renderings: detected {len(detected)}, fired in the band "
          f"{spec.threshold}-{spec.threshold + args.band:.3f} {len(looked)}")
    for after in looks:
        rejected = sum(not r[f"look{after}"]["accepted"] for r in looked)
        print(f"  look with {after} s after the detection: rejected {rejected} "
              f"({100 * rejected / args.n:.1f} % of the renderings)")
    if args.json:
        args.json.write_text(json.dumps({"text": args.text, "band": args.band, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
