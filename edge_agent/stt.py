"""Speech-to-text: one small streaming port, engines chosen by name from a registry.

The pipeline feeds an utterance's audio to an ``SttStream`` while the user speaks and calls ``finish()`` when the
endpointer says the turn is over; only the time from ``finish()`` to the text delays the reply, so that is what
``SttResult.compute_s`` measures.

Engines register an ``SttSpec`` (name, their settings section, their model, a constructor): adding one is one
module that calls ``register_stt`` and one line in ``BUILTIN_STT`` (or a ``register_stt`` call from a plug-in or a
test). Built in: ``whisper`` (faster-whisper, stt_whisper.py) and ``vosk`` (Kaldi, stt_vosk.py).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, read_wav
from .config import Settings, SttSettings
from .errors import ModelError, SttError
from .models import ModelStore, resolve
from .registry import Registry
from .stt_confidence import Decoded
from .stt_text import edit_distance, normalize_text, number_to_words, prime_text, word_error_rate

__all__ = ["SttEngine", "SttResult", "SttSpec", "SttStream", "edit_distance", "make_engine", "normalize_text",
           "number_to_words", "prime_with_home", "register_stt", "stt_engines", "word_error_rate"]

log = logging.getLogger(__name__)

# modules that register an engine when imported
BUILTIN_STT = ("edge_agent.stt_whisper", "edge_agent.stt_vosk", "edge_agent.stt_wyoming")
CLI_CHUNK_S = 0.1  # --partials streams files in 100 ms chunks, like a live microphone block


@dataclass
class SttResult:
    """The text of one utterance and how it was obtained.

    ``partials`` are ``(seconds of audio fed when the partial arrived, text)``; ``compute_s`` is the time from the
    ``finish()`` call to this result (what the user waits for after they stop speaking).
    """

    text: str
    engine: str
    partials: list[tuple[float, str]] = field(default_factory=list)
    audio_s: float = 0.0
    compute_s: float = 0.0
    fallback_reason: str = ""  # why a local engine served instead of the server (stt.fallback), as the LLM's

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "engine": self.engine, "audio_s": round(self.audio_s, 3),
                "compute_s": round(self.compute_s, 4),
                **({"fallback_reason": self.fallback_reason} if self.fallback_reason else {}),
                "partials": [{"t": round(t, 3), "text": p} for t, p in self.partials]}


class SttStream:
    """One utterance: ``feed()`` audio while the user speaks, then ``finish()`` once. Not thread-safe: one worker
    feeds and finishes a stream."""

    engine_name = "stt"

    def __init__(self) -> None:
        self.samples_fed = 0
        self.partials: list[tuple[float, str]] = []
        self._finished = False

    @property
    def audio_s(self) -> float:
        return self.samples_fed / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> str | None:
        """Add int16 16 kHz mono samples; returns a new partial text when one is available, else None."""
        if self._finished:
            raise SttError("feed() after finish(): open a new stream for each utterance")
        samples = _as_int16(samples)
        self.samples_fed += len(samples)
        partial = self._feed(samples)
        if partial is not None:
            self.partials.append((self.audio_s, partial))
        return partial

    def finish(self) -> SttResult:
        """The final text of everything fed; the stream cannot be used afterwards."""
        if self._finished:
            raise SttError("finish() called twice: open a new stream for each utterance")
        self._finished = True
        t0 = time.perf_counter()
        text = self._finish()
        return SttResult(text=text, engine=self.engine_name, partials=list(self.partials), audio_s=self.audio_s,
                         compute_s=time.perf_counter() - t0)

    def snapshot(self) -> np.ndarray | None:
        """A copy of the audio fed so far, for a speculative transcription at the first pause (batch engines);
        None where streaming already keeps up (Vosk)."""
        return None

    def sentence_scores(self, sentences: list[str], before: str = "") -> list[float] | None:
        """How well each of ``sentences`` fits the audio this stream heard (``SttEngine.sentence_scores``), after
        ``before`` (words heard ahead of them, e.g. the wake phrase); None where the engine cannot tell."""
        return None

    def alternatives(self, n: int) -> list[str] | None:
        """Up to ``n`` other readings of the audio this stream heard, likeliest first
        (``SttEngine.alternatives``); None where the engine has none."""
        return None

    def decoded(self, text: str) -> Decoded | None:
        """What the decode that wrote ``text`` from this stream's audio knew of it (``stt_confidence.Decoded``: how
        much surer it was of its on/off word than of the opposite, its least sure word); None where the engine
        cannot tell (another decode, an engine without token probabilities)."""
        return None

    # engine-specific parts
    def _feed(self, samples: np.ndarray) -> str | None:
        raise NotImplementedError

    def _finish(self) -> str:
        raise NotImplementedError


class SttEngine:
    """A loaded model that opens one ``SttStream`` per utterance. The constructor only stores settings; ``load()``
    does the slow part, so the daemon decides when (and on which thread) to pay for it."""

    name = "stt"

    def __init__(self, model_path: Path) -> None:
        self.model_path = Path(model_path)
        self.load_s: float | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.load_s is not None

    def load(self) -> SttEngine:
        """Load the model (idempotent, safe to call from several threads); returns self for chaining."""
        with self._lock:
            if self.load_s is None:
                t0 = time.perf_counter()
                self._load()
                self.load_s = time.perf_counter() - t0
                log.info("stt: %s model %s loaded in %.2f s", self.name, self.model_path, self.load_s)
        return self

    def warmup(self) -> float:
        """One tiny inference, so the first real utterance does not pay for lazy initialisation; returns seconds."""
        self.load()
        t0 = time.perf_counter()
        stream = self.open_stream()
        t = np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
        stream.feed((3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16))  # a quiet hum: real input, no words
        stream.finish()
        return time.perf_counter() - t0

    def open_stream(self) -> SttStream:
        self.load()
        return self._open_stream()

    def prime(self, words: str) -> None:
        """Words the engine should expect (the home's names); an engine that cannot use them ignores them."""

    def unprimed(self) -> SttEngine:
        """This engine without ``prime``'s words (the wake word's second look listens for the wake phrase, not
        the home's names); the same model, not a second copy."""
        return self

    def word_probability(self, samples: np.ndarray, before: str, word: str) -> float | None:
        """How likely the model finds ``word`` said right after ``before`` in int16 16 kHz ``samples`` (forced
        decoding), or None where the engine cannot tell; the wake word's second look then goes by the transcript
        alone."""
        return None

    def sentence_scores(self, samples: np.ndarray, sentences: list[str], before: str = "") -> list[float] | None:
        """Each sentence's log-probability (summed over its tokens) given int16 16 kHz ``samples``, by forced
        decoding, after ``before``; None where the engine cannot score text (the brain's sound tier is then
        skipped). Higher is likelier; the transcript the engine wrote itself scores near the top."""
        return None

    def alternatives(self, samples: np.ndarray, n: int) -> list[str] | None:
        """Up to ``n`` readings of int16 16 kHz ``samples`` (an n-best list, likeliest first, the engine's own
        transcript usually among them), for the brain's sound tier; None where the engine cannot give them."""
        return None

    def transcribe(self, samples: np.ndarray, chunk_s: float | None = None) -> SttResult:
        """A whole utterance at once (``chunk_s`` None) or streamed in chunks of ``chunk_s`` seconds."""
        stream = self.open_stream()
        samples = _as_int16(samples)
        step = max(1, len(samples) if not chunk_s else int(chunk_s * SAMPLE_RATE))
        for i in range(0, len(samples), step):
            stream.feed(samples[i:i + step])
        return stream.finish()

    def _load(self) -> None:
        raise NotImplementedError

    def _open_stream(self) -> SttStream:
        raise NotImplementedError


def _as_int16(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise SttError(f"STT expects int16 samples at 16 kHz, got {samples.dtype}",
                       fix="convert with edge_agent.audio.to_int16 (and resample to 16 kHz)")
    return samples.reshape(-1)


# =================================================================================================== registry


@dataclass(frozen=True)
class SttSpec:
    """How to make one STT engine from the settings."""

    name: str
    settings: Callable[[Settings], Any]  # the engine's own settings section (``stt.<name>``)
    model: Callable[[Any], str | None]  # its model reference in that section; None: no local model (a server)
    model_kind: str | None  # the manifest kind of that model
    create: Callable[[Any, Path | None], SttEngine]  # (its settings, the resolved model path) -> engine, not loaded
    package: str | None = None  # the Python package it needs (the doctor checks it)
    threads: Callable[[Any], int] = field(default=lambda _s: 1)  # CPU threads it uses while decoding


_ENGINES: Registry[SttSpec] = Registry("stt", BUILTIN_STT, SttError)
register_stt = _ENGINES.register


def stt_engines() -> dict[str, SttSpec]:
    """Every registered engine by name (the built-in ones imported on first use)."""
    return _ENGINES.all()


def stt_spec(name: str) -> SttSpec:
    return _ENGINES.get(name)


def stt_model_ref(settings: Settings, name: str | None = None) -> tuple[str, str | None, str | None]:
    """(config key, model reference, manifest kind) of the configured engine's model."""
    name = name or settings.stt.engine
    spec = stt_spec(name)
    return f"stt.{name}.model", spec.model(spec.settings(settings)), spec.model_kind


def prime_with_home(engine: SttEngine, stt_settings: Any, home: Any) -> str:
    """Prime ``engine`` with the home's names as ``stt.whisper.prompt`` says (see ``stt_text.prime_text``); returns
    the words (for the log)."""
    words = prime_text(stt_settings.whisper.prompt, *home.spoken_names())
    engine.prime(words)
    if words:
        log.info("stt: primed with %d words of the home's names and requests", len(words.split()))
    return words


def make_engine(stt_settings: SttSettings, settings: Settings, engine: str | None = None,
                model: str | None = None) -> SttEngine:
    """The configured (or overridden) engine with its model resolved and verified; not loaded yet.

    An engine without a local model (a server) is wrapped with ``stt.fallback``'s local engine when one is set
    (``stt_fallback.FallbackSttEngine``). If the configured engine's model is missing but another engine's
    configured model is installed, the error says both ways out: fetch the model, or switch ``stt.engine``.
    """
    name = engine or stt_settings.engine
    spec = stt_spec(name)
    own = spec.settings(settings)
    ref = model or spec.model(own)
    if ref is None or spec.model_kind is None:
        server = spec.create(own, None)
        fallback = getattr(stt_settings, "fallback", "none")
        if fallback == "none" or fallback == name:
            return server
        from .stt_fallback import FallbackSttEngine

        return FallbackSttEngine(server, make_engine(stt_settings, settings, engine=fallback),
                                 retry_max_s=float(getattr(own, "retry_max_s", 15.0)))
    store = ModelStore(settings.models_path)
    try:
        path = resolve(ref, store, spec.model_kind)
    except ModelError as e:
        for other, ospec in stt_engines().items():
            if other == name or ospec.model_kind is None or model is not None or engine is not None:
                continue
            other_ref = ospec.model(ospec.settings(settings))
            if other_ref and _available(other_ref, store, ospec.model_kind):
                raise ModelError(
                    f"stt.{name}.model: {e.message}",
                    fix=f"{e.fix or 'fetch the model'}; or use the installed {other} model {other_ref!r} by setting "
                        f"`stt.engine: {other}` in the config",
                ) from None
        others = [n for n, m in store.manifest.items()
                  if m.kind == spec.model_kind and n != ref and _available(n, store, m.kind)]
        if others and ref in store.manifest:
            raise ModelError(e.message, fix=f"{e.fix}; or use an installed {name} model: {', '.join(others)} "
                                            f"(stt.{name}.model, or --model)") from None
        raise
    return spec.create(own, path)


def _available(ref: str, store: ModelStore, kind: str) -> bool:
    try:
        resolve(ref, store, kind)
    except ModelError:
        return False
    return True


def __getattr__(name: str) -> Any:
    """The engines' classes, for callers that name them (``from edge_agent.stt import WhisperEngine``)."""
    if name in ("WhisperEngine", "WhisperStream"):
        from . import stt_whisper

        return getattr(stt_whisper, name)
    if name == "has_repetition":
        from .stt_loops import has_repetition

        return has_repetition
    if name in ("VoskEngine", "VoskStream"):
        from . import stt_vosk

        return getattr(stt_vosk, name)
    raise AttributeError(name)


# =================================================================================================== CLI


def cli_transcribe(args: Any, settings: Settings) -> int:
    """``edge-agent transcribe FILE [--engine E] [--model M] [--partials] [--json]``."""
    path = Path(args.file)
    audio = read_wav(path)  # AudioError (missing, unreadable) before the slow model load
    engine = make_engine(settings.stt, settings, engine=getattr(args, "engine", None),
                         model=getattr(args, "model", None))
    engine.load()
    result = engine.transcribe(audio, chunk_s=CLI_CHUNK_S if getattr(args, "partials", False) else None)
    if getattr(args, "json", False):
        out = result.to_json()
        out["file"] = str(path)
        out["load_s"] = round(engine.load_s or 0.0, 3)
        print(json.dumps(out, ensure_ascii=False))
    else:
        for t, text in result.partials:
            print(f"[{t:6.2f}s] {text}", file=sys.stderr)
        print(result.text)
    return 0
