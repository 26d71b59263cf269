"""The openWakeWord engine (ONNX Runtime): several .onnx models over one shared feature pipeline.

openWakeWord computes a melspectrogram and a speech embedding every 80 ms (1280 samples) and runs each wake model on
the last ~1.3 s of embeddings. The detector feeds it exactly 1280-sample frames. ``reset()`` clears openWakeWord's
audio, feature and score history (its own ``Model.reset()`` clears only the scores; the ~10 s of embeddings in which
the wake word still sits are re-primed here).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .errors import ConfigError, ModelError
from .wake import WakeModelSpec

FRAME_SAMPLES = 1280  # openWakeWord's step: 80 ms at 16 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
# openWakeWord keeps 10 s of raw audio and converts the whole deque to a list every frame, but only ever reads the
# last frame plus 3 hops of 160 samples; 1 s is plenty and saves that copy on a Pi.
RAW_HISTORY_SAMPLES = SAMPLE_RATE
# Seed of the filler audio whose embeddings prime the feature history at start and after reset(). openWakeWord primes
# it with unseeded random noise; a fixed seed makes two detectors (and two runs) give identical scores.
PRIME_SEED = 1280
PRIME_SECONDS = 4
DEFAULT_THRESHOLD = 0.5


class OwwEngine:
    """openWakeWord models by detection name; ``score(frame)`` runs all of them on one 80 ms frame."""

    suffix = ".onnx"
    frame_samples = FRAME_SAMPLES

    @staticmethod
    def model_defaults(path: Path) -> dict[str, Any]:
        return {"threshold": DEFAULT_THRESHOLD, "sliding_window": 1}

    @staticmethod
    def threshold(base: float, boost: float, override: float | None) -> float:
        """The sensitivity override replaces the cutoff; the self-trigger guard adds to it."""
        return (base if override is None else override) + boost

    def __init__(self, models: list[WakeModelSpec], melspec_model_path: Path | None = None,
                 embedding_model_path: Path | None = None) -> None:
        stems = [m.path.stem for m in models]
        if len(set(stems)) != len(stems):
            raise ConfigError("wake: two wake model files have the same file name; openWakeWord tells models apart "
                              "by file name", fix="rename one of the files")
        for m in models:
            if m.path.suffix.lower() != ".onnx":
                raise ModelError(f"wake model {m.name!r}: {m.path} is not an .onnx file; edge-agent runs "
                                 "openWakeWord on ONNX Runtime",
                                 fix="use the .onnx version of the model (openWakeWord's training exports both), "
                                     "or `engine: microwakeword` for a microWakeWord .tflite model")
            if not m.path.is_file():
                raise ModelError(f"wake model {m.name!r}: {m.path} does not exist",
                                 fix="check the path, or use a manifest model (`edge-agent models list`)")
        for p in (melspec_model_path, embedding_model_path):
            if p is None or not Path(p).is_file():
                raise ModelError(f"openWakeWord feature model {p} does not exist",
                                 fix="run `edge-agent models fetch oww_features`")

        from openwakeword.model import Model

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
        self.models: dict[str, WakeModelSpec] = {}
        for m in models:
            stem = m.path.stem
            mapping = self._oww.class_mapping.get(stem, {})
            if self._oww.model_outputs.get(stem, 1) == 1:
                self._key_to_name[stem] = m.name
                self.models[m.name] = m
            else:  # a multi-class model: one detection name per class label
                for label in mapping.values():
                    self._key_to_name[label] = f"{m.name}:{label}"
                    self.models[f"{m.name}:{label}"] = m
        self._prime = self._oww.preprocessor._get_embeddings(
            np.random.default_rng(PRIME_SEED).integers(-1000, 1000, SAMPLE_RATE * PRIME_SECONDS).astype(np.int16)
        )
        self.reset()

    def score(self, frame: np.ndarray) -> dict[str, float]:
        scores = self._oww.predict(frame)
        return {self._key_to_name[k]: float(v) for k, v in scores.items() if k in self._key_to_name}

    verifier_kind = "oww_embeddings"

    def verifier_features(self, name: str) -> np.ndarray:
        """What a household verifier looks at for detection ``name``: the embeddings its wake model just saw
        (its input window, 16 x 96 for ``hey_jarvis``), flattened, as openWakeWord's own custom verifier does."""
        spec = self.models[name]
        return self.embeddings(int(self._oww.model_inputs.get(spec.path.stem, 16))).reshape(-1)

    def embeddings(self, n: int = 16) -> np.ndarray:
        """The last ``n`` speech embeddings (96 numbers each, one per 80 ms): what a verifier looks at."""
        return np.asarray(self._oww.preprocessor.get_features(n), dtype=np.float32).reshape(n, -1)

    def reset(self) -> None:
        pre = self._oww.preprocessor
        pre.raw_data_buffer = deque(maxlen=RAW_HISTORY_SAMPLES)
        pre.raw_data_remainder = np.empty(0)
        pre.accumulated_samples = 0
        pre.melspectrogram_buffer = np.ones((76, 32))  # openWakeWord's own initial value
        pre.feature_buffer = self._prime.copy()
        self._oww.reset()
