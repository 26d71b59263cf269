"""Checks before start: every model the config names exists and is intact (``config check``, ``run``, ``check``)."""

from __future__ import annotations

from pathlib import Path

from .config import Settings
from .errors import ModelError
from .models import ModelStore, resolve


def model_refs(s: Settings) -> list[tuple[str, str, str]]:
    """(config key, model reference, manifest kind) for every model the settings use."""
    refs = [(f"wake.models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.models)]
    refs += [(f"wake.stop_models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.stop_models)]
    refs += [
        ("wake.feature_model", s.wake.feature_model, "wake_features"),
        ("vad.model", s.vad.model, "vad"),
        (f"stt.{s.stt.engine}.model", s.stt.whisper.model if s.stt.engine == "whisper" else s.stt.vosk.model,
         "stt_whisper" if s.stt.engine == "whisper" else "stt_vosk"),
        ("llm.model", s.llm.model, "llm"),
        ("tts.voice", s.tts.voice, "tts"),
    ]
    return refs


def check_models_for(s: Settings, store: ModelStore | None = None) -> list[str]:
    """Problems with the models the config names, each naming the key and the fix; empty when all is well."""
    store = store or ModelStore(s.models_path)
    problems = []
    for key, ref, kind in model_refs(s):
        try:
            resolve(ref, store, kind)
        except ModelError as e:
            problems.append(f"{key}: {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""))
    return problems


def resolve_model(s: Settings, ref: str, kind: str) -> Path:
    return resolve(ref, ModelStore(s.models_path), kind)
