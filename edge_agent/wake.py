"""Wake word detection: one port, several engines, the same detection rules for all.

``WakeDetector`` is what the engine sees: ``process(samples, t_end) -> [Detection]``, ``reset()``,
``threshold_boost`` and ``threshold_override``. Behind it each configured model runs on a wake *engine*, looked up by
name in ``ENGINES`` (adding an engine is one module plus one line there):

* ``openwakeword`` (``wake_oww.py``): openWakeWord on ONNX Runtime, 80 ms steps, .onnx models over shared
  melspectrogram + embedding models;
* ``microwakeword`` (``wake_micro.py``): microWakeWord streaming TFLite models (pymicro-wakeword), 10 ms feature
  steps, one inference every 30 ms; each .tflite ships a JSON manifest with its probability cutoff and sliding window.

An engine only turns fixed-size frames into raw per-model scores. Everything a voice assistant needs on top is here,
identical for every engine, so detections mean the same thing whichever engine made them:

* frames cut from the caller's chunks by ``audio.Rechunker``: detections do not depend on how the audio arrived;
* a sliding window per model (the mean of its last N scores is compared with the cutoff, as microWakeWord does);
* a cutoff and a refractory time per model: one detection per utterance, on the rising edge;
* ``threshold_boost`` while the assistant itself speaks (half-duplex guard) and ``threshold_override`` (a runtime
  sensitivity), each mapped by the engine onto its own score scale;
* ``reset()``, which clears every engine's audio, feature and score history;
* an optional household verifier per model (``wake.models[].verifier``, ``wake_verifier.py``), asked only when the
  score crosses the cutoff: a detection it rejects is dropped and logged with both scores.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .audio import SAMPLE_RATE, Rechunker, read_wav
from .errors import ConfigError, ModelError, WakeError

if TYPE_CHECKING:
    import argparse

    from .config import Settings, WakeModelSettings

log = logging.getLogger(__name__)

# The registry: engine name -> "module:class". The class follows ``WakeEngine`` below.
ENGINES: dict[str, str] = {
    "openwakeword": "edge_agent.wake_oww:OwwEngine",
    "microwakeword": "edge_agent.wake_micro:MicroEngine",
}


@dataclass(frozen=True)
class Detection:
    """One wake word event: which model fired, the stream time (s) at the end of the frame that fired, its score."""

    model: str
    t: float
    score: float
    stop: bool = False  # a stop-word model (interrupts a reply, never starts a turn)
    cutoff: float = 0.0  # the cutoff in force when it fired (boost and override applied)
    band: float = 0.0  # its model's second-look band: doubtful when score < cutoff + band (wake_verify.py)


@dataclass(frozen=True)
class WakeModelSpec:
    """A resolved wake model: its display name, its file, its engine and its detection rules."""

    name: str
    path: Path
    threshold: float = 0.5
    refractory_s: float = 2.0
    stop: bool = False
    engine: str = "openwakeword"
    sliding_window: int = 1
    phrase: str = ""  # the spoken wake phrase when the model says it (microWakeWord manifests do)
    verifier: Path | None = None  # a household verifier file (``edge-agent wake enroll``)
    second_look_band: float = 0.0  # a detection below threshold + this band gets a second look (wake_verify.py)


class WakeEngine(Protocol):
    """What an engine module provides. ``frame_samples`` is its fixed step; ``score`` returns the raw score of each
    model (by detection name) that produced one on this frame; ``models`` maps each detection name to its spec."""

    frame_samples: int
    models: dict[str, WakeModelSpec]

    def score(self, frame: np.ndarray) -> dict[str, float]: ...

    def reset(self) -> None: ...

    def verifier_features(self, name: str) -> np.ndarray: ...  # what a verifier sees at a detection, 1-D

    def threshold(self, base: float, boost: float, override: float | None) -> float: ...


def engine_class(name: str) -> Any:
    """The engine class registered under ``name`` (imported on first use: an unused engine costs nothing)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ConfigError(f"wake engine {name!r} is unknown; allowed: {', '.join(sorted(ENGINES))}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class _ModelState:
    spec: WakeModelSpec
    window: deque[float] = field(default_factory=deque)
    above: bool = False
    last_fire: float | None = None
    verifier: Any = None  # wake_verifier.Verifier
    vetoed: bool = False  # the verifier rejected this run above the cutoff (logged once per run)


class WakeDetector:
    """Several wake models, on one or more engines, over a stream of int16 16 kHz samples."""

    def __init__(self, models: list[WakeModelSpec], melspec_model_path: Path | None = None,
                 embedding_model_path: Path | None = None) -> None:
        if not models:
            raise ConfigError("wake.models: at least one wake word model is needed")
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"wake: two wake models are both named {dupes[0]!r}",
                              fix="list each model once, or rename one of the custom model files")
        resources = {"melspec_model_path": melspec_model_path, "embedding_model_path": embedding_model_path}
        self._engines: list[tuple[Any, Rechunker]] = []
        self._states: dict[str, _ModelState] = {}
        for engine_name in dict.fromkeys(m.engine for m in models):
            cls = engine_class(engine_name)
            eng = cls([m for m in models if m.engine == engine_name], **resources)
            self._engines.append((eng, Rechunker(eng.frame_samples)))
            for det_name, spec in eng.models.items():
                self._states[det_name] = _ModelState(spec, deque(maxlen=spec.sliding_window),
                                                     verifier=_load_verifier(eng, det_name, spec))
        self._pending = [0] * len(self._engines)
        self.threshold_boost = 0.0  # added to every threshold (self-trigger guard while the assistant speaks)
        self.threshold_override: float | None = None  # replaces every model's threshold (runtime sensitivity)
        self.max_scores: dict[str, float] = {}
        self.on_score: Any = None  # optional callable(name, t, score) for every (window-averaged) score: benchmarks
        self.frames = 0
        # detections the household verifier rejected, newest last: (model, t, score, verifier probability)
        self.rejected: deque[tuple[str, float, float, float]] = deque(maxlen=100)
        self.rejected_count = 0
        self.cpu_s = 0.0  # CPU time of the calling thread in the engines (single-threaded: ONNX 1 thread, TFLite)
        self.reset()

    # ------------------------------------------------------------------ construction from settings
    @classmethod
    def from_settings(cls, settings: Settings, stop: bool = False) -> WakeDetector:
        """A detector for ``wake.models``, or with ``stop`` one for ``wake.stop_models`` (detections flagged stop).

        Models are resolved through the manifest (a name) or taken as custom files (a path).
        """
        entries: list[WakeModelSettings] = settings.wake.stop_models if stop else settings.wake.models
        key = "wake.stop_models" if stop else "wake.models"
        if not entries:
            raise ConfigError(f"{key}: no models are configured", fix=f"add at least one model to {key}")
        specs = [resolve_spec(settings, m, stop=stop, where=f"{key}[{i}]") for i, m in enumerate(entries)]
        return cls(specs, *_feature_paths(settings, specs))

    # ------------------------------------------------------------------ streaming
    @property
    def names(self) -> list[str]:
        return list(self._states)

    @property
    def specs(self) -> dict[str, WakeModelSpec]:
        return {name: st.spec for name, st in self._states.items()}

    def verifier(self, name: str) -> Any:
        """The household verifier of detection name ``name``, or None."""
        return self._states[name].verifier

    def set_verifier(self, name: str, verifier: Any) -> None:
        """Attach (or with None remove) a household verifier for detection name ``name`` (enrollment, benchmarks)."""
        self._states[name].verifier = verifier

    def _engine(self, name: str) -> Any:
        return next(e for e, _ in self._engines if name in e.models)

    def verifier_features(self, name: str) -> np.ndarray:
        """The features a verifier would see for ``name`` now (enrollment collects them through ``on_score``)."""
        return self._engine(name).verifier_features(name)

    def verifier_kind(self, name: str) -> str:
        return str(self._engine(name).verifier_kind)

    def frame_samples(self, name: str) -> int:
        """The step of the engine that scores ``name`` (samples per score)."""
        return int(self._engine(name).frame_samples)

    def threshold_for(self, name: str) -> float:
        """The cutoff in force for detection name ``name`` now (boost and override applied)."""
        st = self._states[name]
        eng = next(e for e, _ in self._engines if name in e.models)
        return eng.threshold(st.spec.threshold, self.threshold_boost, self.threshold_override)

    def process(self, samples: np.ndarray, t_end: float) -> list[Detection]:
        """Feed any number of int16 16 kHz samples ending at stream time ``t_end`` (s); return new detections."""
        if samples.dtype != np.int16:
            raise WakeError(f"wake detector expects int16 samples, got {samples.dtype}")
        samples = samples.reshape(-1)
        out: list[Detection] = []
        cpu0 = time.thread_time()
        for k, (eng, rechunker) in enumerate(self._engines):
            frames = rechunker.push(samples)
            total = self._pending[k] + len(samples)
            step = eng.frame_samples
            self._pending[k] = total - len(frames) * step
            for i, frame in enumerate(frames):
                t_frame = t_end - (total - (i + 1) * step) / SAMPLE_RATE
                scores = eng.score(frame)
                if k == 0:
                    self.frames += 1
                for name, raw in scores.items():
                    det = self._decide(eng, name, float(raw), t_frame)
                    if det is not None:
                        out.append(det)
        self.cpu_s += time.thread_time() - cpu0
        if len(self._engines) > 1:
            out.sort(key=lambda d: d.t)
        return out

    def _decide(self, eng: Any, name: str, raw: float, t: float) -> Detection | None:
        st = self._states[name]
        st.window.append(raw)
        score = sum(st.window) / len(st.window) if len(st.window) == st.window.maxlen else 0.0
        if score > self.max_scores.get(name, 0.0):
            self.max_scores[name] = score
        if self.on_score is not None:
            self.on_score(name, t, score)
        cutoff = eng.threshold(st.spec.threshold, self.threshold_boost, self.threshold_override)
        above = score >= cutoff
        rising = above and not st.above
        st.above = above
        if not above:
            st.vetoed = False
        if rising and (st.last_fire is None or t - st.last_fire >= st.spec.refractory_s):
            if st.verifier is not None:
                # The verifier looks at every frame of a run above the cutoff until it accepts one (as
                # openWakeWord's custom verifier does); a rejected frame leaves the run open.
                p = st.verifier.probability(eng.verifier_features(name))
                if p < st.verifier.threshold:
                    if not st.vetoed:
                        log.info("wake model %s at %.2f s (score %.3f) rejected by the household verifier "
                                 "(%.3f < %.2f)", name, t, score, p, st.verifier.threshold)
                        self.rejected.append((name, round(t, 4), score, p))
                        self.rejected_count += 1
                    st.vetoed = True
                    st.above = False
                    return None
            st.last_fire = t
            log.debug("wake model %s fired at %.2f s (score %.3f, cutoff %.3f)", name, t, score, cutoff)
            return Detection(name, round(t, 4), score, st.spec.stop, cutoff, st.spec.second_look_band)
        return None

    def reset(self) -> None:
        """Forget all audio, features and scores, so the utterance that woke us cannot fire again."""
        for k, (eng, rechunker) in enumerate(self._engines):
            eng.reset()
            rechunker.reset()
            self._pending[k] = 0
        for st in self._states.values():
            st.window.clear()
            st.above = False
            st.vetoed = False
            st.last_fire = None  # a fresh start: the buffers that could re-fire are gone


# --------------------------------------------------------------------------------------------------- resolving


def resolve_spec(settings: Settings, m: WakeModelSettings, stop: bool = False,
                 where: str = "wake.models[]") -> WakeModelSpec:
    """A config entry -> a resolved model: a manifest name keeps its name, a custom file is named by its stem. The
    cutoff and sliding window default to the model's own (its manifest), else the engine's defaults; the second-look
    band to the manifest entry's (0 for a custom file)."""
    from .models import ModelStore, resolve

    store = ModelStore(settings.models_path)
    path = resolve(m.model, store, "wake")
    if path.is_dir():
        raise ModelError(f"wake model {m.model!r} is a folder, not a model file",
                         fix="give the path of the model file itself (.onnx or .tflite)")
    suffix = path.suffix.lower()
    engine = m.engine
    if engine == "auto":  # the engine that runs this file type
        engine = engine_for_suffix(suffix) or ""
        if not engine:
            raise ConfigError(f"{where}: {m.model!r} is a {suffix or 'suffix-less'} file, which no wake engine runs",
                              fix="give an openWakeWord .onnx or a microWakeWord .tflite model")
        m = replace(m, engine=engine)
    cls = engine_class(m.engine)
    if suffix != cls.suffix:
        other = engine_for_suffix(suffix)
        fix = (f"set `engine: {other}` for this model" if other else
               f"the {m.engine} engine runs {cls.suffix} files")
        raise ConfigError(f"{where}: {m.model!r} is a {suffix or 'suffix-less'} file, which the {m.engine} engine "
                          f"does not run", fix=fix)
    defaults = cls.model_defaults(path)
    name = m.model if not _looks_like_path(m.model) else path.stem
    if m.verifier:  # checked here too, to name the config key; the detector checks its size against the engine
        from .wake_verifier import load

        load(m.verifier, where=f"{where}.verifier", model=name, features=cls.verifier_kind)
    return WakeModelSpec(
        name=name, path=path,
        threshold=m.threshold if m.threshold is not None else defaults["threshold"],
        refractory_s=m.refractory_s, stop=stop, engine=m.engine,
        sliding_window=m.sliding_window if m.sliding_window is not None else defaults["sliding_window"],
        phrase=defaults.get("phrase", ""),
        verifier=Path(m.verifier).expanduser() if m.verifier else None,
        second_look_band=(m.second_look_band if m.second_look_band is not None else
                          store.manifest[m.model].second_look_band if m.model in store.manifest else 0.0),
    )


def _load_verifier(eng: Any, det_name: str, spec: WakeModelSpec) -> Any:
    """The spec's verifier file, checked against what this engine gives for the model; None without one."""
    if spec.verifier is None:
        return None
    from .wake_verifier import load

    v = load(spec.verifier, where=f"wake model {spec.name!r} verifier", model=spec.name,
             features=eng.verifier_kind, dim=int(eng.verifier_features(det_name).shape[0]))
    log.info("wake model %s: household verifier %s (%s; threshold %.2f)", det_name, spec.verifier,
             ", ".join(f"{k} {n} clips" for k, n in v.speakers.items()) or "no speaker list", v.threshold)
    return v


def engine_for_suffix(suffix: str) -> str | None:
    """The registered engine that runs model files ending in ``suffix`` (".onnx", ".tflite"), or None."""
    return next((n for n in sorted(ENGINES) if engine_class(n).suffix == suffix.lower()), None)


def engine_for_file(path: Path) -> str:
    """The engine that runs a model file of this type (for a model named on the command line)."""
    return engine_for_suffix(path.suffix) or "openwakeword"


def _feature_paths(settings: Settings, specs: list[WakeModelSpec]) -> tuple[Path | None, Path | None]:
    """openWakeWord's shared feature models, resolved only when an openWakeWord model is configured."""
    if not any(s.engine == "openwakeword" for s in specs):
        return None, None
    from .preflight import resolve_model

    features = resolve_model(settings, settings.wake.feature_model, "wake_features")
    return features / "melspectrogram.onnx", features / "embedding_model.onnx"


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".onnx", ".tflite")) or ref.startswith("~")


# --------------------------------------------------------------------------------------------------- CLI


def cli_wake(args: argparse.Namespace, settings: Settings) -> int:
    """``edge-agent wake FILE.wav [--model M]... [--threshold X] [--json]``: the detections in a file."""
    import dataclasses

    from .config import WakeModelSettings
    from .preflight import resolve_model

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold: {args.threshold} is out of range; allowed: 0 .. 1")
    audio = read_wav(args.file)  # AudioError (exit 2) for a missing or unreadable file
    configured = {m.model: m for m in settings.wake.models}
    if args.model:
        entries = []
        for ref in args.model:
            if ref in configured:
                entries.append(configured[ref])
            else:  # a model named on the command line runs on the engine its file type calls for
                engine = engine_for_file(resolve_model(settings, ref, "wake"))
                entries.append(WakeModelSettings(model=ref, engine=engine))
    else:
        entries = list(settings.wake.models)
    if args.threshold is not None:
        entries = [dataclasses.replace(m, threshold=args.threshold) for m in entries]
    specs = [resolve_spec(settings, m, where=f"--model {m.model}") for m in entries]
    det = WakeDetector(specs, *_feature_paths(settings, specs))
    detections = det.process(audio, len(audio) / SAMPLE_RATE)
    duration = len(audio) / SAMPLE_RATE
    if args.json:
        print(json.dumps({
            "detections": [{"model": d.model, "t": d.t, "score": round(d.score, 6)} for d in detections],
            "duration": round(duration, 4),
            "max_scores": {k: round(v, 6) for k, v in det.max_scores.items()},
            "cutoffs": {n: round(s.threshold, 4) for n, s in det.specs.items()},
            "verifiers": {n: str(s.verifier) for n, s in det.specs.items() if s.verifier},
            "rejected": [{"model": m, "t": t, "score": round(sc, 6), "verifier": round(p, 6)}
                         for m, t, sc, p in det.rejected],
            "cpu_s": round(det.cpu_s, 4),
        }))
        return 0
    for d in detections:
        print(f"{d.t:8.2f} s  {d.model}  score {d.score:.3f}")
    for m, t, sc, p in det.rejected:
        print(f"{t:8.2f} s  {m}  score {sc:.3f}  rejected by the household verifier ({p:.3f})")
    if not detections:
        peaks = ", ".join(f"{k} {v:.3f} (cutoff {det.specs[k].threshold:.2f})" for k, v in det.max_scores.items())
        print(f"no wake word detected in {duration:.2f} s of audio (highest scores: {peaks})")
    else:
        print(f"{len(detections)} detection(s) in {duration:.2f} s of audio")
    return 0
