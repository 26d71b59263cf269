"""The ``pi5`` / ``pi4`` CPU budgets, fitted to the machine they run on.

A cgroup quota of q CPUs lets work of W CPU seconds finish in W / q seconds, so the quota that makes this machine
take a Pi's published time T for a workload is W / T (docs/pi-calibration.md, "CPU-work fit"). W is a property of
the machine's CPU: an AMD EPYC and an Intel Xeon need different quotas to imitate the same Pi. The reference
workload is the one the presets were defined on (``tools/calibrate_pi.py``): faster-whisper tiny.en int8 through
the project's engine (one thread, as under a quota below one CPU) with Whisper's full 30 s window, over the five
real read sentences of Debian's ``pocketsphinx-testdata`` (librivox, 3.0-7.1 s), against the published time per
utterance (Pi 5 1.26-1.70 s, midpoint 1.48 s; Pi 4 3.42 s).

``machine_presets(settings)`` measures W once per machine (about 5 s: the model's load and six decodes at full
speed, before any quota) and keeps it in ``pi-presets.json`` of the project's cache (``models.cache_dir``,
``~/.cache/edge-agent``) under a key of the CPU model, the CPU count, CTranslate2's version, the model and the
method, so ``run --cpu-budget pi5`` costs nothing after the first time.
Where it cannot measure (no recordings, no Whisper model), it says why and falls back to the fixed fit made on a
2-core Intel Xeon (``cpu_budget.PI5_CPUS`` / ``PI4_CPUS``), which imitates a different Pi on another CPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cpu import cpu_model
from .cpu_budget import PRESETS, CpuBudgetError, describe, parse_budget
from .cpu_share import online_cpus
from .models import cache_dir

log = logging.getLogger(__name__)

PUBLISHED_WHISPER_S = {"pi5": 1.48, "pi4": 3.42}  # faster-whisper tiny.en int8, one short utterance (issue 10)
REFERENCE_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
REFERENCE_CLIPS = 5
FITTED_ON = "a 2-core Intel Xeon (AVX-512 VNNI), 2026-11-29"  # where cpu_budget's fixed presets come from


@dataclass
class PiPresets:
    """The quota per preset name for this machine, and where it came from."""

    cpus: dict[str, float]
    source: str  # "measured" | "cached" | "fixed"
    work_s: float | None = None  # CPU seconds of the reference decode per utterance here
    why: str = ""  # for "fixed": why nothing was measured
    key: dict[str, Any] = field(default_factory=dict)

    def describe(self, name: str) -> str:
        if self.source == "fixed":
            return f"{name} preset, the fixed fit made on {FITTED_ON}"
        return (f"{name} preset, fitted here: Whisper's reference decode takes {self.work_s:.3f} CPU s per utterance "
                f"on this CPU, a {PUBLISHED_WHISPER_S[name]:g} s one on a {name[:2].title()} {name[2:]}")


def fit(work_s: float, ncpus: int) -> dict[str, float]:
    """Pure: the quota (CPUs) per preset for a machine whose reference decode takes ``work_s`` CPU seconds.

    A machine that is already as slow as the board (the quota would be at or above all its CPUs) cannot imitate it:
    CpuBudgetError says so."""
    if not work_s > 0:
        raise CpuBudgetError(f"the reference decode took {work_s} CPU s: not a measurement",
                             fix="run it again on an idle machine")
    out = {}
    for name, t in PUBLISHED_WHISPER_S.items():
        q = work_s / t
        if q >= ncpus:
            raise CpuBudgetError(f"this machine needs {work_s:.2f} CPU s for the reference decode that a "
                                 f"{name} does in {t:g} s: it is no faster than that board, a quota cannot imitate it",
                                 fix="run without --cpu-budget (its own figures are the board's or slower)")
        out[name] = round(q, 3)
    return out


def _version(package: str) -> str | None:
    """An installed package's version (part of a cache key), None when it is missing: the measurement then fails
    with its own reason."""
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001 - not installed
        return None


def machine_key(settings: Any) -> dict[str, Any]:
    return {"cpu": cpu_model(), "ncpus": online_cpus(), "ctranslate2": _version("ctranslate2"),
            "model": settings.stt.whisper.model,
            "method": "tiny.en int8, 30 s window, 1 thread, median of 5"}


def reference_clips(directory: Path = REFERENCE_DIR, n: int = REFERENCE_CLIPS) -> list[Any]:
    from .audio import read_wav

    files = sorted(directory.glob("*.wav"))[:n]
    if not files:
        raise CpuBudgetError(f"no reference recordings in {directory}: the pi presets cannot be fitted to this CPU",
                             fix="apt-get install pocketsphinx-testdata (tools/setup.sh does)")
    return [read_wav(f) for f in files]


def measure_work(settings: Any, clips: list[Any]) -> float:
    """CPU seconds per utterance of the reference decode (median of the clips, after one warm-up decode), on one
    thread: under a Pi's quota (below one CPU) the engine runs one thread (cpu_share.whisper_threads), and a second
    thread's synchronisation would add CPU time that depends on how busy the machine is (measured on the EPYC: 0.63
    CPU s with the machine busy, 0.71 idle with two threads)."""
    from .stt import make_engine

    one = dataclasses.replace(settings.stt.whisper, threads=1)
    settings = dataclasses.replace(settings, stt=dataclasses.replace(settings.stt, whisper=one))
    engine = make_engine(settings.stt, settings, engine="whisper")
    engine.load()
    full = engine.variant(dataclasses.replace(settings.stt.whisper, encoder_window_s=0.0))
    full.transcribe(clips[0])  # warm: the first decode allocates
    per = []
    for audio in clips:
        c0 = time.process_time()
        full.transcribe(audio)
        per.append(time.process_time() - c0)
    return statistics.median(per)


def _cached(path: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(this key's entry or None, the whole cache) from ``path``; an unreadable cache is logged and ignored."""
    try:
        saved = json.loads(path.read_text())
        for entry in saved.get("machines", []):
            if entry.get("key") == key:
                return entry, saved
        return None, saved
    except FileNotFoundError:
        return None, {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("pi presets: ignoring the unreadable cache %s (%s)", path, e)
        return None, {}


def _save(path: Path, saved: dict[str, Any], key: dict[str, Any], **entry: Any) -> None:
    """Keep ``entry`` for ``key`` beside other machines' (the last 16), written atomically."""
    machines = [m for m in saved.get("machines", []) if m.get("key") != key]
    machines.append({"key": key, **entry, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machines": machines[-16:]}, indent=1))
        tmp.replace(path)
    except OSError as e:
        log.info("pi presets: not cached (%s); they will be measured again next time", e)


def machine_presets(settings: Any, *, cache: Path | None = None, clips_dir: Path = REFERENCE_DIR) -> PiPresets:
    """This machine's ``pi5`` / ``pi4`` quotas: cached, else measured (and cached), else the fixed fit (logged)."""
    key = machine_key(settings)
    path = cache if cache is not None else cache_dir() / "pi-presets.json"
    entry, saved = _cached(path, key)
    try:
        if entry is not None:
            work = float(entry["work_s"])
            return PiPresets(fit(work, key["ncpus"]), "cached", work, key=key)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("pi presets: ignoring the unreadable entry in %s (%s)", path, e)
    try:
        clips = reference_clips(clips_dir)
        t0 = time.monotonic()
        work = round(measure_work(settings, clips), 5)  # as cached: a later lookup fits the very same number
    except CpuBudgetError as e:
        log.warning("pi presets: %s (fix: %s); using the fixed fit made on %s", e.message, e.fix, FITTED_ON)
        return PiPresets(dict(PRESETS), "fixed", why=e.message, key=key)
    except Exception as e:  # noqa: BLE001 - a missing model or engine: say so, keep the fixed fit
        log.warning("pi presets: the reference decode failed (%s); using the fixed fit made on %s", e, FITTED_ON)
        return PiPresets(dict(PRESETS), "fixed", why=f"the reference decode failed: {e}", key=key)
    presets = PiPresets(fit(work, key["ncpus"]), "measured", work, key=key)
    log.info("pi presets fitted to this CPU in %.1f s: %s CPU s per reference decode -> %s", time.monotonic() - t0,
             work, presets.cpus)
    _save(path, saved, key, work_s=work)
    return presets


def resolve(spec: str | float, settings: Any) -> tuple[float, str]:
    """``--cpu-budget`` → (CPUs, a description for a report): a preset name is fitted to this machine
    (``machine_presets``), anything else is ``cpu_budget.parse_budget``'s."""
    name = str(spec).strip().lower()
    if name in PUBLISHED_WHISPER_S:
        presets = machine_presets(settings)
        cpus = parse_budget(presets.cpus[name])  # still checked against this machine's CPUs
        return cpus, (f"{cpus:g} CPU = {presets.describe(name)} (cgroup cpu quota; this machine has {online_cpus()} "
                      "CPUs)")
    cpus = parse_budget(spec)
    return cpus, describe(cpus)


# ------------------------------------------------------------------------------------------- the LLM's own quota
# The LLM's published Pi figures (issue 10), for each preset the one directly comparable: a Pi 5 generates with
# Qwen2.5-0.5B Q4_K_M, this project's model, at ~21 tokens/s; for a Pi 4 only TinyLlama 1.1B Q8_0's prompt evaluation
# is published (10 tokens/s), which docs/pi-calibration.md scales to a 0.5B Q4_K_M model (~27 tokens/s).
PUBLISHED_LLM = {"pi5": ("generation", 21.0), "pi4": ("prompt", 27.0)}
LLM_PROBE = ("<|im_start|>system\nYou are a helpful voice assistant in a home. Answer in one or two short sentences."
             "<|im_end|>\n<|im_start|>user\nWhy is the sky blue, and why are sunsets red and orange in the evening?"
             "<|im_end|>\n<|im_start|>assistant\nThe sky looks blue because air molecules scatter the short blue "
             "wavelengths of sunlight far more than the long red ones, so blue light reaches your eyes from every "
             "direction. At sunset the light crosses much more air, the blue is scattered away, and the reds and "
             "oranges are left.")
LLM_PROMPT_TOKENS, LLM_GEN_TOKENS = 64, 32


@dataclass
class LlmPresets:
    """The LLM stage's quota per preset for this machine (``stage_budget``), from its CPU work per token here."""

    cpus: dict[str, float]
    source: str  # "measured" | "cached"
    work: dict[str, float]  # CPU seconds per token on one thread: "prompt" (in one batch), "generation"
    key: dict[str, Any] = field(default_factory=dict)

    def describe(self, name: str) -> str:
        kind, rate = PUBLISHED_LLM[name]
        return (f"the LLM's own {self.cpus[name]:g} CPU: its {kind} takes {self.work[kind] * 1000:.1f} CPU ms per "
                f"token on this CPU, {rate:g} tokens/s on a {name[:2].title()} {name[2:]}")


def llm_fit(work: dict[str, float], ncpus: int) -> dict[str, float]:
    """Pure: the LLM stage's quota per preset, from its CPU seconds per token (``work``: prompt, generation). A
    machine whose LLM is no faster than the board's cannot imitate it: CpuBudgetError."""
    out = {}
    for name, (kind, rate) in PUBLISHED_LLM.items():
        w = work.get(kind, 0.0)
        if not w > 0:
            raise CpuBudgetError(f"the LLM's {kind} took {w} CPU s per token: not a measurement",
                                 fix="run it again on an idle machine")
        q = w * rate
        if q >= ncpus:
            raise CpuBudgetError(f"this machine's LLM needs {q:.2f} CPUs for the {rate:g} tokens/s of {kind} a {name} "
                                 f"manages: it is no faster than that board, a quota cannot imitate it",
                                 fix="run without --stage-fit (one quota for the whole process)")
        out[name] = round(q, 3)
    return out


def llm_key(settings: Any) -> dict[str, Any]:
    return {"cpu": cpu_model(), "ncpus": online_cpus(), "llama-cpp-python": _version("llama-cpp-python"),
            "model": settings.llm.model,
            "method": f"{LLM_PROMPT_TOKENS}-token batch, {LLM_GEN_TOKENS} single-token decodes, 1 thread, median of 3"}


def measure_llm_work(settings: Any) -> dict[str, float]:
    """CPU seconds per token of the configured LLM on one thread: ``LLM_PROBE``'s first 64 tokens evaluated in one
    batch, then 32 more decoded one at a time (a generated token's cost, without sampling); median of 3, warmed."""
    from llama_cpp import Llama

    from .preflight import resolve_model

    llm = Llama(model_path=str(resolve_model(settings, settings.llm.model, "llm")), n_ctx=512, n_threads=1,
                n_threads_batch=1, n_batch=256, verbose=False)
    try:
        toks = llm.tokenize(LLM_PROBE.encode("utf-8"), add_bos=False, special=True)
        prompt, gen = toks[:LLM_PROMPT_TOKENS], toks[LLM_PROMPT_TOKENS:LLM_PROMPT_TOKENS + LLM_GEN_TOKENS]
        llm.eval(prompt[:8])  # warm: the first call allocates
        per_prompt, per_gen = [], []
        for _ in range(3):
            llm.reset()
            c0 = time.process_time()
            llm.eval(prompt)
            c1 = time.process_time()
            for t in gen:
                llm.eval([t])
            c2 = time.process_time()
            per_prompt.append((c1 - c0) / len(prompt))
            per_gen.append((c2 - c1) / len(gen))
        return {"prompt": round(statistics.median(per_prompt), 6), "generation": round(statistics.median(per_gen), 6)}
    finally:
        llm.close()


def llm_presets(settings: Any, *, cache: Path | None = None) -> LlmPresets:
    """This machine's LLM stage quotas for ``pi5`` / ``pi4``: cached, else measured (a few seconds) and cached.
    Raises CpuBudgetError when the LLM cannot be measured or is no faster than the board."""
    key = llm_key(settings)
    path = cache if cache is not None else cache_dir() / "pi-presets.json"
    entry, saved = _cached(path, key)
    try:
        if entry is not None:
            work = {k: float(v) for k, v in entry["llm_work"].items()}
            return LlmPresets(llm_fit(work, key["ncpus"]), "cached", work, key=key)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # as machine_presets: measured again
        log.warning("pi presets: ignoring the unreadable LLM entry in %s (%s)", path, e)
    try:
        work = measure_llm_work(settings)
    except Exception as e:  # noqa: BLE001 - a missing model or package: the stage fit was asked for, so say why not
        raise CpuBudgetError(f"the LLM's CPU work per token could not be measured: {e}",
                             fix="edge-agent models fetch the configured LLM, or run without --stage-fit") from None
    presets = LlmPresets(llm_fit(work, key["ncpus"]), "measured", work, key=key)
    log.info("pi presets: the LLM takes %s CPU s per token here -> its own quota %s", work, presets.cpus)
    _save(path, saved, key, llm_work=work)
    return presets
