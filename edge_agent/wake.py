"""Wake word detection with openWakeWord (ONNX Runtime), several models at once over one shared feature pipeline.

openWakeWord computes a melspectrogram and a speech embedding every 80 ms (1280 samples) and runs each wake model on
the last ~1.3 s of embeddings. ``WakeDetector`` feeds it exactly 1280-sample frames (whatever the caller's chunking,
re-cut by ``audio.Rechunker``) so the frames the models see, and therefore the detections, do not depend on how the
audio arrived. On top of the raw per-frame scores it adds what a voice assistant needs:

* a threshold and a refractory time per model: one detection per utterance, not one per 80 ms frame;
* ``threshold_boost``, added to every threshold while the assistant itself speaks without echo cancellation, so its
  own voice does not wake it (and ``threshold_override``, a runtime sensitivity that replaces every threshold);
* ``reset()``, which clears openWakeWord's audio, feature and score history so the utterance that just woke us cannot
  fire again once the turn is over.

The constructor takes resolved file paths and numbers; ``from_settings`` resolves them through the model manifest.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import SAMPLE_RATE, Rechunker, read_wav
from .errors import ConfigError, ModelError, WakeError

if TYPE_CHECKING:
    import argparse

    from .config import Settings, WakeModelSettings

log = logging.getLogger(__name__)

FRAME_SAMPLES = 1280  # openWakeWord's step: 80 ms at 16 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
# openWakeWord keeps 10 s of raw audio and converts the whole deque to a list every frame, but only ever reads the
# last frame plus 3 hops of 160 samples; 1 s is plenty and saves that copy on a Pi.
RAW_HISTORY_SAMPLES = SAMPLE_RATE
# Seed of the filler audio whose embeddings prime the feature history at start and after reset(). openWakeWord primes
# it with unseeded random noise; a fixed seed makes two detectors (and two runs) give identical scores.
PRIME_SEED = 1280
PRIME_SECONDS = 4


@dataclass(frozen=True)
class Detection:
    """One wake word event: which model fired, the stream time (s) at the end of the frame that fired, its score."""

    model: str
    t: float
    score: float
    stop: bool = False  # a stop-word model (interrupts a reply, never starts a turn)


@dataclass(frozen=True)
class WakeModelSpec:
    """A resolved wake model: its display name, the .onnx file, and its detection rules."""

    name: str
    path: Path
    threshold: float = 0.5
    refractory_s: float = 2.0
    stop: bool = False


class WakeDetector:
    """openWakeWord over a stream of int16 16 kHz samples, with per-model thresholds and refractory times."""

    def __init__(self, models: list[WakeModelSpec], melspec_model_path: Path, embedding_model_path: Path) -> None:
        if not models:
            raise ConfigError("wake.models: at least one wake word model is needed")
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"wake: two wake models are both named {dupes[0]!r}",
                              fix="list each model once, or rename one of the custom model files")
        stems = [m.path.stem for m in models]
        if len(set(stems)) != len(stems):
            raise ConfigError("wake: two wake model files have the same file name; openWakeWord tells models apart "
                              "by file name", fix="rename one of the files")
        for m in models:
            if m.path.suffix.lower() != ".onnx":
                raise ModelError(f"wake model {m.name!r}: {m.path} is not an .onnx file; edge-agent runs "
                                 "openWakeWord on ONNX Runtime",
                                 fix="use the .onnx version of the model (openWakeWord's training exports both)")
            if not m.path.is_file():
                raise ModelError(f"wake model {m.name!r}: {m.path} does not exist",
                                 fix="check the path, or use a manifest model (`edge-agent models list`)")
        for p in (melspec_model_path, embedding_model_path):
            if not Path(p).is_file():
                raise ModelError(f"openWakeWord feature model {p} does not exist",
                                 fix="run `edge-agent models fetch oww_features`")

        from openwakeword.model import Model

        self.specs = {m.name: m for m in models}
        try:
            self._oww = Model(
                wakeword_models=[str(m.path) for m in models],
                inference_framework="onnx",
                melspec_model_path=str(melspec_model_path),
                embedding_model_path=str(embedding_model_path),
            )
        except Exception as e:  # onnxruntime raises its own types for corrupt or foreign files
            raise ModelError(f"openWakeWord could not load the wake models ({e})",
                             fix="check that each file is an openWakeWord .onnx model; "
                                 "`edge-agent models verify` checks manifest models") from None
        # openWakeWord names a model after its file stem; map its names (and class labels) back to ours.
        self._key_to_name: dict[str, str] = {}
        for m in models:
            stem = m.path.stem
            mapping = self._oww.class_mapping.get(stem, {})
            if self._oww.model_outputs.get(stem, 1) == 1:
                self._key_to_name[stem] = m.name
            else:  # a multi-class model: one detection name per class label
                for label in mapping.values():
                    self._key_to_name[label] = f"{m.name}:{label}"
        self._parent = {
            key: next(m for m in models if name == m.name or name.startswith(m.name + ":"))
            for key, name in self._key_to_name.items()
        }
        self.threshold_boost = 0.0  # added to every threshold (self-trigger guard while the assistant speaks)
        self.threshold_override: float | None = None  # replaces every model's threshold (runtime sensitivity)
        self._rechunker = Rechunker(FRAME_SAMPLES)
        self._pending = 0  # samples waiting in the rechunker
        self._prime = self._oww.preprocessor._get_embeddings(
            np.random.default_rng(PRIME_SEED).integers(-1000, 1000, SAMPLE_RATE * PRIME_SECONDS).astype(np.int16)
        )
        self._last_fire: dict[str, float] = {}
        self._above: dict[str, bool] = {}
        self.max_scores: dict[str, float] = {}
        self.frames = 0
        self.cpu_s = 0.0  # process CPU time spent in openWakeWord, for `wake` reports and benchmarks
        self.reset()

    # ------------------------------------------------------------------ construction from settings
    @classmethod
    def from_settings(cls, settings: Settings, stop: bool = False) -> WakeDetector:
        """A detector for ``wake.models``, or with ``stop`` one for ``wake.stop_models`` (detections flagged stop).

        Models are resolved through the manifest (a name) or taken as custom files (a path). To run wake and stop
        words over one shared feature pipeline (half the CPU), build one detector from both lists of
        ``resolve_spec`` results instead.
        """
        from .preflight import resolve_model

        entries: list[WakeModelSettings] = settings.wake.stop_models if stop else settings.wake.models
        if not entries:
            key = "wake.stop_models" if stop else "wake.models"
            raise ConfigError(f"{key}: no models are configured", fix=f"add at least one model to {key}")
        specs = [resolve_spec(settings, m, stop=stop) for m in entries]
        features = resolve_model(settings, settings.wake.feature_model, "wake_features")
        return cls(specs, features / "melspectrogram.onnx", features / "embedding_model.onnx")

    # ------------------------------------------------------------------ streaming
    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(self._key_to_name.values()))

    def process(self, samples: np.ndarray, t_end: float) -> list[Detection]:
        """Feed any number of int16 16 kHz samples ending at stream time ``t_end`` (s); return new detections."""
        if samples.dtype != np.int16:
            raise WakeError(f"wake detector expects int16 samples, got {samples.dtype}")
        frames = self._rechunker.push(samples.reshape(-1))
        total = self._pending + len(samples)
        self._pending = total - len(frames) * FRAME_SAMPLES
        out: list[Detection] = []
        cpu0 = time.process_time()
        for i, frame in enumerate(frames):
            t_frame = t_end - (total - (i + 1) * FRAME_SAMPLES) / SAMPLE_RATE
            out.extend(self._score_frame(frame, t_frame))
        self.cpu_s += time.process_time() - cpu0
        return out

    def _score_frame(self, frame: np.ndarray, t: float) -> list[Detection]:
        scores: dict[str, Any] = self._oww.predict(frame)
        self.frames += 1
        out = []
        for key, raw in scores.items():
            name = self._key_to_name.get(key)
            if name is None:
                continue
            spec = self._parent[key]
            score = float(raw)
            if score > self.max_scores.get(name, 0.0):
                self.max_scores[name] = score
            base = spec.threshold if self.threshold_override is None else self.threshold_override
            above = score >= base + self.threshold_boost
            rising = above and not self._above.get(name, False)
            self._above[name] = above
            last = self._last_fire.get(name)
            if rising and (last is None or t - last >= spec.refractory_s):
                self._last_fire[name] = t
                log.debug("wake model %s fired at %.2f s (score %.3f)", name, t, score)
                out.append(Detection(name, round(t, 4), score, spec.stop))
        return out

    def reset(self) -> None:
        """Forget all audio, features and scores, so the utterance that woke us cannot fire again.

        openWakeWord's own ``Model.reset()`` clears only the score history; its feature extractor keeps ~10 s of
        embeddings in which the wake word still sits, so we also re-prime the extractor's buffers. The first few
        frames after a reset score 0 (openWakeWord's warm-up), which is what we want after a turn.
        """
        pre = self._oww.preprocessor
        pre.raw_data_buffer = deque(maxlen=RAW_HISTORY_SAMPLES)
        pre.raw_data_remainder = np.empty(0)
        pre.accumulated_samples = 0
        pre.melspectrogram_buffer = np.ones((76, 32))  # openWakeWord's own initial value
        pre.feature_buffer = self._prime.copy()
        self._oww.reset()
        self._rechunker.reset()
        self._pending = 0
        self._above.clear()
        self._last_fire.clear()  # a fresh start: the buffers that could re-fire are gone


def resolve_spec(settings: Settings, m: WakeModelSettings, stop: bool = False) -> WakeModelSpec:
    """A config entry -> a resolved model: a manifest name keeps its name, a custom file is named by its stem."""
    from .preflight import resolve_model

    path = resolve_model(settings, m.model, "wake")
    if path.is_dir():
        raise ModelError(f"wake model {m.model!r} is a folder, not an openWakeWord .onnx file",
                         fix="give the path of the .onnx file itself")
    name = m.model if not _looks_like_path(m.model) else path.stem
    return WakeModelSpec(name, path, m.threshold, m.refractory_s, stop)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".onnx", ".tflite")) or ref.startswith("~")


# --------------------------------------------------------------------------------------------------- CLI


def cli_wake(args: argparse.Namespace, settings: Settings) -> int:
    """``edge-agent wake FILE.wav [--model M]... [--threshold X] [--json]``: the detections in a file."""
    import dataclasses

    from .config import WakeModelSettings

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold: {args.threshold} is out of range; allowed: 0 .. 1")
    audio = read_wav(args.file)  # AudioError (exit 2) for a missing or unreadable file
    configured = {m.model: m for m in settings.wake.models}
    if args.model:
        entries = [configured.get(ref, WakeModelSettings(model=ref)) for ref in args.model]
    else:
        entries = list(settings.wake.models)
    if args.threshold is not None:
        entries = [dataclasses.replace(m, threshold=args.threshold) for m in entries]
    specs = [resolve_spec(settings, m) for m in entries]
    from .preflight import resolve_model

    features = resolve_model(settings, settings.wake.feature_model, "wake_features")
    det = WakeDetector(specs, features / "melspectrogram.onnx", features / "embedding_model.onnx")
    detections = det.process(audio, len(audio) / SAMPLE_RATE)
    duration = len(audio) / SAMPLE_RATE
    if args.json:
        print(json.dumps({
            "detections": [{"model": d.model, "t": d.t, "score": round(d.score, 6)} for d in detections],
            "duration": round(duration, 4),
            "max_scores": {k: round(v, 6) for k, v in det.max_scores.items()},
            "cpu_s": round(det.cpu_s, 4),
        }))
        return 0
    for d in detections:
        print(f"{d.t:8.2f} s  {d.model}  score {d.score:.3f}")
    if not detections:
        peaks = ", ".join(f"{k} {v:.3f}" for k, v in det.max_scores.items())
        print(f"no wake word detected in {duration:.2f} s of audio (highest scores: {peaks})")
    else:
        print(f"{len(detections)} detection(s) in {duration:.2f} s of audio")
    return 0
