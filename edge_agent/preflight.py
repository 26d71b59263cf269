"""Checks before start: every model the config names exists and is intact (``config check``, ``run``), and the
doctor ``edge-agent check`` (audio devices, models, broker, CPU, memory, disk), each finding with its fix.

This module holds the model check, the config and model lines of the doctor, and the report (``run_checks``,
``cli_check``); the finding type is in ``check_result.py``, the checks of what the agent talks to in
``check_links.py`` and of the machine in ``check_machine.py``. Their names are re-exported here."""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

from .check_links import (  # noqa: F401 - re-exported
    BROKER_TIMEOUT_S,
    check_audio,
    check_broker,
    check_llm_server,
    check_stt_server,
    check_tts_server,
)
from .check_machine import (  # noqa: F401 - re-exported
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    PACKAGES,
    _agent_rss,
    check_cores,
    check_cpu,
    check_disk,
    check_llama_build,
    check_memory,
    check_packages,
    check_python,
    check_service,
    parse_meminfo,
)
from .check_result import FAIL, OK, WARN, Check, _mb
from .config import Settings
from .errors import EdgeAgentError, ModelError
from .models import ModelStore, resolve
from .stt import stt_model_ref
from .tts import tts_spec


def model_refs(s: Settings) -> list[tuple[str, str, str]]:
    """(config key, model reference, manifest kind) for every model the settings use."""
    refs = [(f"wake.models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.models)]
    refs += [(f"wake.stop_models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.stop_models)]
    refs += [
        ("wake.feature_model", s.wake.feature_model, "wake_features"),
        ("vad.model", s.vad.model, "vad"),
        stt_model_ref(s),
        ("llm.model", s.llm.model, "llm"),
        ("tts.voice", s.tts.voice if tts_spec(s.tts.engine).local_voice(s) else None, "tts"),  # piper or fallback
    ]
    if s.stt.fallback != "none" and stt_model_ref(s)[2] is None:  # a server's local fallback loads its model
        refs.append(stt_model_ref(s, s.stt.fallback))
    return [(key, ref, kind) for key, ref, kind in refs if ref is not None and kind is not None]


def check_models_for(s: Settings, store: ModelStore | None = None) -> list[str]:
    """Problems with the models the config names, each naming the key and the fix; empty when all is well."""
    store = store or ModelStore(s.models_path)
    problems = []
    for key, ref, kind in model_refs(s):
        try:
            resolve(ref, store, kind)
        except ModelError as e:
            problems.append(f"{key}: {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""))
    from .wake_verifier import load as load_verifier

    for i, m in enumerate(s.wake.models):
        if m.verifier:
            try:
                load_verifier(m.verifier, where=f"wake.models[{i}].verifier")
            except EdgeAgentError as e:
                problems.append(e.message + (f"\n  fix: {e.fix}" if e.fix else ""))
    return problems


def resolve_model(s: Settings, ref: str, kind: str) -> Path:
    return resolve(ref, ModelStore(s.models_path), kind)


# --------------------------------------------------------------------------------------------------- the doctor
# `edge-agent check`: everything a Pi needs before `edge-agent run` (or the service) can work, each check one line
# with what was found and, when not ok, the fix. Pure parts (CPU flags, memory) take text and numbers so that they are
# tested with plain values; the rest touches the real system (audio devices, model files, the broker).

RUNTIME_OVERHEAD_BYTES = 450_000_000  # Python, NumPy, ONNX Runtime, CTranslate2, llama.cpp code and buffers
MODEL_RAM_FACTOR = 1.2  # models take a bit more RAM than their files (KV cache, arenas); measured ~1.2 GB in total


# ------------------------------------------------------------------------------------------ config and models


def check_config(path: str | os.PathLike[str] | None) -> Check:
    if path is None:
        return Check("config", WARN, "no config file found: built-in defaults",
                     "pass -c FILE, set EDGE_AGENT_CONFIG, or create ./config.yaml (tools/gen_config.py documents it)")
    return Check("config", OK, f"{Path(path).resolve()} is valid")


def _ref_size(ref: str, store: ModelStore) -> int:
    """Bytes of a configured model on disk (manifest size when not installed), for the memory estimate."""
    p = store.dir(ref) if ref in store.manifest else Path(ref).expanduser()
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    return store.manifest[ref].size if ref in store.manifest else 0


def check_models(s: Settings, store: ModelStore) -> list[Check]:
    """Every model the config names, resolved exactly as ``run`` resolves it (sizes, and hashes of changed files)."""
    out = []
    for key, ref, kind in model_refs(s):
        try:
            path = resolve(ref, store, kind)
        except ModelError as e:
            out.append(Check(f"model {key}", FAIL, e.message, e.fix or ""))
            continue
        spec = store.manifest.get(ref)
        what = f"{ref} ({_mb(_ref_size(ref, store))}, {spec.license})" if spec else f"{path} (not in the manifest)"
        out.append(Check(f"model {key}", OK, what))
    for key, ref, kind in model_refs(s):
        spec = store.manifest.get(ref)
        if kind == "wake" and spec is not None and "NC" in spec.license:
            out.append(Check(f"license {key}", WARN, f"{ref} is {spec.license.split(' ')[0]}: the openWakeWord "
                             "pre-trained wake word models may not be used commercially",
                             "fine for personal use; for a product, use a microWakeWord model (Apache-2.0, e.g. "
                             f"the default hey_jarvis_v2) or train your own and set {key} to the path of its file"))
    return out




def check_wake(s: Settings) -> list[Check]:
    """Each wake model's cutoff and sliding window as `run` uses them, and whether its household verifier loads."""
    from .wake import engine_class, resolve_spec
    from .wake_verifier import load as load_verifier

    out = []
    for i, m in enumerate(s.wake.models):
        key = f"wake.models[{i}]"
        try:
            spec = resolve_spec(s, dataclasses.replace(m, verifier=None), where=key)
        except EdgeAgentError:
            continue  # the model's own line says what is wrong
        what = f"{spec.name} ({spec.engine}): cutoff {spec.threshold:.2f}, window {spec.sliding_window}"
        band = spec.second_look_band
        what += (f", second look below {spec.threshold + band:.3f} (band {band:g})" if band > 0
                 else ", no second look")
        if band > 0 and spec.threshold + band > 1.0:
            out.append(Check(f"wake {key}.second_look_band", WARN,
                             f"cutoff {spec.threshold:.2f} + band {band:g} is above 1: every detection gets a second "
                             "look (speech-to-text of the wake audio decides each one)",
                             f"set {key}.second_look_band below {1.0 - spec.threshold:.3f} to let clear detections "
                             "through at once"))
        if not m.verifier:
            out.append(Check(f"wake {key}", OK, f"{what}; no household verifier (`edge-agent wake enroll` trains one)"))
            continue
        try:
            v = load_verifier(m.verifier, where=f"{key}.verifier", model=spec.name,
                              features=engine_class(spec.engine).verifier_kind)
        except EdgeAgentError as e:
            out.append(Check(f"wake {key}", FAIL, f"{what}; {e.message}", e.fix or ""))
            continue
        who = ", ".join(f"{k} {n}" for k, n in v.speakers.items())
        out.append(Check(f"wake {key}", OK, f"{what}; household verifier loaded: {v.path} (threshold "
                         f"{v.threshold:.2f}; wake clips per member: {who or 'not recorded'})"))
    return out


def estimate_ram(s: Settings, store: ModelStore) -> int:
    """Bytes the configured models need resident, roughly: their files plus the runtime (~1.2 GB for the defaults)."""
    return RUNTIME_OVERHEAD_BYTES + int(MODEL_RAM_FACTOR * sum(_ref_size(r, store) for _, r, _ in model_refs(s)))



# ------------------------------------------------------------------------------------------------ report


def run_checks(s: Settings, config_path: str | os.PathLike[str] | None) -> list[Check]:
    store = ModelStore(s.models_path)
    checks = [check_config(config_path)]
    checks += check_audio(s)
    checks += check_models(s, store)
    checks += check_wake(s)
    checks.append(check_broker(s.mqtt, s.site.site_id))
    checks += [c for c in [check_llm_server(s), check_stt_server(s), check_tts_server(s)] if c is not None]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    checks.append(check_cpu(cpuinfo, platform.machine()))
    checks.append(check_llama_build())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    from .cpu_share import available_cpus

    checks.append(check_cores(cores, s, available_cpus()))
    try:
        meminfo = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        meminfo = {}
    checks.append(check_memory(meminfo, estimate_ram(s, store), _agent_rss()) if meminfo
                  else Check("memory", WARN, "/proc/meminfo is not readable", "run on Linux"))
    checks.append(check_disk(s))
    checks.append(check_python())
    checks.append(check_packages(s))
    service = check_service()
    if service is not None:
        checks.append(service)
    return checks


def cli_check(args: Any, settings: Settings) -> int:
    """``edge-agent check [--json]``: exit 0 when nothing FAILs (warnings allowed), 2 otherwise."""
    import json

    from .cli import default_config_path

    config_path = getattr(args, "config", None) or default_config_path()
    checks = run_checks(settings, config_path)
    if getattr(args, "speed", False):
        from .fit import judge, measure

        verdicts = judge(measure(settings), settings)
        checks += [Check(v.name, OK if v.ok else WARN, v.detail, v.fix or "") for v in verdicts]
    failed = sum(c.status == FAIL for c in checks)
    counts = {k: sum(c.status == k for c in checks) for k in (OK, WARN, FAIL)}
    if getattr(args, "json", False):
        print(json.dumps({"ok": not failed, "config": str(config_path) if config_path else None, "counts": counts,
                          "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(c.line())
        print(f"\n{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed")
    return 2 if failed else 0
