#!/usr/bin/env python3
"""Calibrate the ``pi5`` / ``pi4`` CPU budgets: the project's own workloads timed under a range of cgroup CPU quotas,
and the quota that reproduces each published Raspberry Pi figure (docs/pi-calibration.md).

    tools/calibrate_pi.py [--levels 2,1.5,1,0.75,0.5,0.35,0.25] [--reps 2] [--json OUT] [--markdown OUT]

Needs root (a cgroup is created). Every model is loaded and warmed up at full speed first; then this process moves
into one child cgroup whose quota is changed level by level, so only the timed work runs under the quota. Each
figure is the minimum over ``--reps`` runs (the machine is shared: other work only ever makes a run slower), the
median is kept beside it.

Workloads, each timed as the published figure it is compared with:
- Whisper: faster-whisper tiny.en int8 over the five real read sentences in /usr/share/pocketsphinx/test/data/librivox
  (3.0-7.1 s), through the project's engine (``stt.make_engine`` + ``.transcribe``) with Whisper's full 30 s window
  (``encoder_window_s: 0``, what stock faster-whisper does); median seconds per utterance. Also faster-whisper's own
  ``transcribe()`` with its defaults (beam 5), the setting a published benchmark most likely used, and the project's
  configured short window, for information.
- LLM (the project's Qwen2.5-Coder-0.5B Q4_K_M GGUF through llama-cpp-python, the project's thread count): prompt
  evaluation of a fresh 192-token prompt (tokens/s), then 32 greedy generation steps (tokens/s).
- Piper (the project's voice): real-time factor of a three-sentence reply with ONNX Runtime on one thread (the
  published figure's setting) and with its default threads (what the daemon does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edge_agent import cpu_budget  # noqa: E402
from edge_agent.audio import SAMPLE_RATE, read_wav  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.cpu_share import whisper_threads  # noqa: E402
from edge_agent.pi_presets import REFERENCE_DIR  # noqa: E402

LIBRIVOX = REFERENCE_DIR  # the recordings the pi presets are fitted on (edge_agent/pi_presets.py)
DEFAULT_LEVELS = (2.0, 1.0, 0.75, 0.5, 0.3, 0.2, 0.15)
PROMPT_TOKENS = 192
GEN_TOKENS = 32
TTS_TEXT = ("The kitchen light is on now. It is twenty one degrees in the living room, and the front door is locked. "
            "Your timer for ten minutes is running.")

# Published Pi figures (docs/pi-calibration.md gives the sources). Non-embedding weights per token, for scaling a
# prompt-evaluation rate (compute-bound: ~2 FLOPs per weight per token) from TinyLlama 1.1B to Qwen2.5-0.5B:
#   TinyLlama 1.1B: 22 layers × (attention 2048·2048·2 + 2048·256·2 + MLP 3·2048·5632) = 968.9 M
#   Qwen2.5-0.5B:  24 layers × (attention  896·896·2  +  896·128·2 + MLP 3·896·4864)  = 357.9 M
TINYLLAMA_WEIGHTS_M = 22 * (2048 * 2048 * 2 + 2048 * 256 * 2 + 3 * 2048 * 5632) / 1e6
QWEN05_WEIGHTS_M = 24 * (896 * 896 * 2 + 896 * 128 * 2 + 3 * 896 * 4864) / 1e6
PROMPT_SCALE = TINYLLAMA_WEIGHTS_M / QWEN05_WEIGHTS_M
TARGETS: dict[str, dict[str, Any]] = {
    # figure key: (direction, pi5, pi4, how the target was derived)
    "whisper_full_s": {"pi5": (1.26 + 1.70) / 2, "pi4": 3.42,
                       "note": "faster-whisper tiny.en int8, one short utterance: Pi 5 1.26-1.70 s (midpoint), Pi 4 "
                               "3.42 s"},
    "whisper_fw_default_s": {"pi5": (1.26 + 1.70) / 2, "pi4": 3.42, "note": "same published figures"},
    "llm_gen_tps": {"pi5": 21.0, "pi4": None, "note": "Qwen2.5-0.5B Q4_K_M generation ~21 tok/s on a Pi 5"},
    "llm_prompt_tps": {"pi5": 35.0 * PROMPT_SCALE, "pi4": 10.0 * PROMPT_SCALE,
                       "note": f"TinyLlama 1.1B Q8_0 prompt 35 (Pi 5) / 10 (Pi 4) tok/s × {PROMPT_SCALE:.2f} "
                               "(non-embedding weights 968.9 M / 357.9 M)"},
    "piper_rtf_1t": {"pi5": None, "pi4": 0.77, "note": "Piper medium voice, 1 thread, RTF 0.77 on a Pi 4"},
}

log = logging.getLogger("calibrate_pi")


def _timed(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


class Workloads:
    def __init__(self, config: str | None, clips: int) -> None:
        s = load_settings(config)
        self.settings = s
        self.clips = [(p.name, read_wav(p)) for p in sorted(LIBRIVOX.glob("*.wav"))][:clips]
        if not self.clips:
            raise SystemExit(f"error: no recordings in {LIBRIVOX}\nfix: apt-get install pocketsphinx-testdata")

    def load(self) -> None:
        from edge_agent.llm import Llm
        from edge_agent.models import ModelStore, resolve
        from edge_agent.stt import make_engine
        from edge_agent.tts import PiperTts

        s = self.settings
        t0 = time.monotonic()
        self.stt = make_engine(s.stt, s, engine="whisper")
        self.stt.load()
        self.stt_full = self.stt.variant(dataclasses.replace(s.stt.whisper, encoder_window_s=0.0))
        for eng in (self.stt, self.stt_full):
            eng.warmup()
        self.llm = Llm(resolve(s.llm.model, ModelStore(s.models_path), "llm"), s.llm).load()
        self.llama = self.llm._llama
        text = (s.llm.system_prompt + " ") * 40
        self.prompt = self.llm.tokenize(text)[:PROMPT_TOKENS]
        self.tts = PiperTts.from_settings(s)
        self.tts.load()
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        voice = self.tts.voice
        onnx = self.tts.voice_path if self.tts.voice_path.is_file() else sorted(self.tts.voice_path.glob("*.onnx"))[0]
        one = dataclasses.replace(voice, session=onnxruntime.InferenceSession(
            str(onnx), sess_options=opts, providers=["CPUExecutionProvider"]))
        self.tts1 = self.tts.with_settings(s.tts)
        self.tts1.voice = one
        for fn in (self.whisper_full, self.whisper_fw_default, self.llm_step, self.piper):
            fn()  # warm every path once at full speed
        log.info("models loaded and warm in %.1f s", time.monotonic() - t0)

    # one run of each workload → {figure: value}, plus CPU seconds
    def whisper_full(self) -> dict[str, Any]:
        per, cpu, texts = [], 0.0, []
        for _name, audio in self.clips:
            w, c, r = _timed(lambda a=audio: self.stt_full.transcribe(a))
            per.append(w)
            cpu += c
            texts.append(r.text)
        return {"whisper_full_s": statistics.median(per), "whisper_full_per_clip_s": per,
                "whisper_full_cpu_s": cpu / len(per), "whisper_texts": texts}

    def whisper_project(self) -> dict[str, Any]:
        per = [_timed(lambda a=audio: self.stt.transcribe(a))[0] for _n, audio in self.clips]
        return {"whisper_project_s": statistics.median(per)}

    def whisper_fw_default(self) -> dict[str, Any]:
        model = self.stt.model

        def run(audio: Any) -> str:
            segs, _info = model.transcribe(audio.astype("float32") / 32768.0, language="en")
            return " ".join(s.text for s in segs)

        per = [_timed(lambda a=audio: run(a))[0] for _n, audio in self.clips]
        return {"whisper_fw_default_s": statistics.median(per)}

    def llm_step(self) -> dict[str, Any]:
        llama = self.llama
        llama.reset()  # n_tokens = 0: the whole prompt is evaluated again
        w_p, c_p, _ = _timed(lambda: llama.eval(self.prompt))

        def gen() -> None:
            for _ in range(GEN_TOKENS):
                tok = llama.sample(temp=0.0)
                llama.eval([tok])

        w_g, c_g, _ = _timed(gen)
        return {"llm_prompt_tps": len(self.prompt) / w_p, "llm_gen_tps": GEN_TOKENS / w_g,
                "llm_prompt_cpu_s": c_p, "llm_gen_cpu_s": c_g}

    def piper(self) -> dict[str, Any]:
        out = {}
        for key, tts in (("piper_rtf_1t", self.tts1), ("piper_rtf", self.tts)):
            w, c, audio = _timed(lambda t=tts: t.synthesize_all(TTS_TEXT))
            out[key] = w / (len(audio) / tts.sample_rate)
            out[key.replace("rtf", "cpu_per_audio_s")] = c / (len(audio) / tts.sample_rate)
        return out


RATES = ("llm_prompt_tps", "llm_gen_tps")  # higher is better: keep the max over repetitions
# CPU seconds of one unit of work (an utterance, a token, a second of speech) → the quota that needs the published
# time: q = work / target time (or work per token × target rate). Independent of the quota actually delivered, so
# it is the fit a quiet machine would give; valid only below the stage's thread count (a quota above the threads it
# can use does not make it faster).
WORK = {"whisper_full_s": ("whisper_full_cpu_s", "time", "whisper"), "llm_prompt_tps": ("llm_prompt_cpu_s", "rate",
        "llm"), "llm_gen_tps": ("llm_gen_cpu_s", "rate", "llm"), "piper_rtf_1t": ("piper_cpu_per_audio_s_1t", "time",
        1)}


def measure_level(wl: Workloads, reps: int, with_fw_default: bool) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    fns = [wl.whisper_full, wl.whisper_project, wl.llm_step, wl.piper]
    if with_fw_default:
        fns.insert(1, wl.whisper_fw_default)
    for _ in range(reps):
        run: dict[str, Any] = {}
        for fn in fns:
            run.update(fn())
        runs.append(run)
    best: dict[str, Any] = {}
    for key, v in runs[0].items():
        if isinstance(v, (int, float)):
            vals = [r[key] for r in runs]
            best[key] = max(vals) if key in RATES else min(vals)
            best[key + "_median"] = statistics.median(vals)
    best["whisper_full_per_clip_s"] = [min(r["whisper_full_per_clip_s"][i] for r in runs)
                                       for i in range(len(wl.clips))]
    best["whisper_texts"] = runs[0]["whisper_texts"]
    return best


def fits(levels: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    per_unit = {"llm_prompt_cpu_s": res["prompt_tokens"], "llm_gen_cpu_s": res["gen_tokens"]}
    threads = {"whisper": res["whisper_threads"], "llm": res["llm_threads"], 1: 1}
    for key, t in TARGETS.items():
        pts = [(lv["cpus"], lv[key]) for lv in levels if key in lv]
        row: dict[str, Any] = {"note": t["note"]}
        for board in ("pi5", "pi4"):
            target = t[board]
            if target is None:
                continue
            q = cpu_budget.fit_quota(pts, target)
            row[board] = {"target": round(target, 3), "cpus": None if q is None else round(q, 3)}
            if key in WORK:
                wkey, kind, th = WORK[key]
                works = [lv[wkey] / per_unit.get(wkey, 1) for lv in levels if wkey in lv]
                if works:
                    work = min(works)  # the least disturbed run
                    qm = work / target if kind == "time" else work * target
                    row[board]["cpu_work_fit"] = round(qm, 3)
                    row[board]["cpu_work_fit_valid"] = qm <= threads[th]
        if key == "whisper_full_s":  # the published Pi 5 range, both ends
            row["pi5_range_cpus"] = [cpu_budget.fit_quota(pts, 1.70), cpu_budget.fit_quota(pts, 1.26)]
        out[key] = row
    return out


def markdown(res: dict[str, Any]) -> str:
    cols = [("whisper_full_s", "Whisper 30 s window, s", 2), ("whisper_fw_default_s", "faster-whisper defaults, s", 2),
            ("whisper_project_s", "Whisper project window, s", 2), ("llm_prompt_tps", "LLM prompt tok/s", 1),
            ("llm_gen_tps", "LLM generation tok/s", 1), ("piper_rtf_1t", "Piper RTF 1 thread", 3),
            ("piper_rtf", "Piper RTF default threads", 3)]
    lines = ["| quota (CPUs) | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for lv in res["levels"]:
        cells = []
        for key, _label, nd in cols:
            v, med = lv.get(key), lv.get(key + "_median")
            cells.append("-" if v is None else f"{v:.{nd}f} ({med:.{nd}f})")
        lines.append(f"| {lv['cpus']:g} | " + " | ".join(cells) + " |")
    lines += ["", "best of the repetitions (median in brackets)", "", "| figure | Pi 5 target → quota | Pi 4 target → "
              "quota | published figure |", "|---|---|---|---|"]
    lines_note = ("timed fit: log-log interpolation of the measured curve; CPU-work fit: CPU seconds of the work / "
                  "target time (what a quiet machine gives; * = above the stage's threads, unreachable)")
    for key, row in res["fits"].items():
        def cell(b: str, r: dict[str, Any] = row) -> str:
            if b not in r:
                return "-"
            q = r[b]["cpus"]
            txt = f"{r[b]['target']:g} → {'outside the measured range' if q is None else f'{q:.2f} CPU'}"
            if "cpu_work_fit" in r[b]:
                txt += f"; CPU-work fit {r[b]['cpu_work_fit']:.2f}{'' if r[b]['cpu_work_fit_valid'] else '*'}"
            return txt
        lines.append(f"| {key} | {cell('pi5')} | {cell('pi4')} | {row['note']} |")
    return "\n".join([*lines, "", lines_note])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", help="config file (default: the repository's config.yaml)")
    ap.add_argument("--levels", default=",".join(f"{x:g}" for x in DEFAULT_LEVELS),
                    help="CPU quotas to measure, comma-separated core-equivalents")
    ap.add_argument("--reps", type=int, default=2, help="runs per quota (the best is kept)")
    ap.add_argument("--clips", type=int, default=5, help="librivox recordings to decode (at most 5)")
    ap.add_argument("--no-fw-default", action="store_true", help="skip faster-whisper's own defaults (beam 5)")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = args.config or (str(HERE.parent / "config.yaml") if (HERE.parent / "config.yaml").is_file() else None)
    ncpus = cpu_budget.online_cpus()
    levels = sorted({min(float(x), ncpus) for x in args.levels.split(",") if x.strip()}, reverse=True)
    wl = Workloads(config, args.clips)
    wl.load()
    res: dict[str, Any] = {"machine": {"cpus": ncpus, "cpu_model": _cpu_model(), "loadavg_start": os.getloadavg()},
                           "clips": [(n, round(len(a) / SAMPLE_RATE, 2)) for n, a in wl.clips],
                           "llm_threads": wl.llm.threads,
                           "whisper_threads": whisper_threads(wl.settings.stt.whisper.threads),
                           "prompt_tokens": len(wl.prompt), "gen_tokens": GEN_TOKENS, "levels": []}
    budget = cpu_budget.CpuBudget(levels[0])
    try:
        budget.enter()
        for q in levels:
            budget.set(q)
            st0, t0 = budget.stat(), time.monotonic()
            lv = measure_level(wl, args.reps, not args.no_fw_default)
            st1 = budget.stat()
            lv.update(cpus=q, wall_s=round(time.monotonic() - t0, 1), loadavg=os.getloadavg(),
                      throttled_periods=st1.get("nr_throttled", 0) - st0.get("nr_throttled", 0))
            res["levels"].append(lv)
            log.info("%.2f CPU: whisper %.2f s, prompt %.0f tok/s, gen %.1f tok/s, piper RTF(1t) %.3f  [%.0f s]",
                     q, lv["whisper_full_s"], lv["llm_prompt_tps"], lv["llm_gen_tps"], lv["piper_rtf_1t"],
                     lv["wall_s"])
    finally:
        budget.close()
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["fits"] = fits(res["levels"], res)
    md = markdown(res)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(md + "\n")
    return 0


def _cpu_model() -> str:
    from edge_agent.cpu import cpu_model

    return cpu_model()


if __name__ == "__main__":
    sys.exit(main())
