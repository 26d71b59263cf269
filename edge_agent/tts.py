"""Text-to-speech: the engines' registry (``tts.engine``), Piper (the local voice) streamed per sentence, fixed
phrases cached, and synthetic cues; ``edge-agent say`` is say_cli.py.

Engines register a ``TtsSpec`` (name, a constructor from the settings, whether it loads the local voice): adding one
is one module that calls ``register_tts`` and one line in ``BUILTIN_TTS``. Built in: ``piper`` (here) and
``wyoming`` (a Wyoming TTS server with the local voice as its fallback, tts_wyoming.py). Every engine offers the
``ports.TextToSpeech`` port.

Why Piper is shaped this way:

* ``PiperTts.synthesize`` yields one int16 array per sentence as soon as that sentence is ready, so playback of the
  first sentence overlaps synthesis of the next (Piper's RTF is ~0.1-0.2 on two cores: the speaker never starves).
  Sentences are cut by ``text.split_sentences`` (the same rules as the streaming ``SentenceBuffer``), so one piece of
  text in gives exactly one chunk out, whatever espeak-ng would have done with "Mr." or "...".
* Audio stays at the voice's own rate (22,050 Hz for joe-medium); conversion to the device happens at the output
  edge. Closing the generator (an interruption) stops synthesis after the current sentence.
* Fixed phrases ("Sorry, I didn't catch that.", confirmations) are synthesized once and replayed from memory
  (``PhraseCache``, tts_phrases.py): the answer to an error costs no synthesis time at all. The stored arrays are
  read-only.
* Cues ("listening", "timeout", ...) are short numpy-made two-tone chimes (cues.py), not speech: instant and
  unmistakable.
* The constructor takes a resolved path and ``TtsSettings`` and loads nothing; ``load()`` does (several seconds
  cold on a Pi), ``from_settings`` resolves the voice through the model manifest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cues import (  # noqa: F401 - re-exported: callers import the cues from here
    CUE_FADE_S,
    CUE_GAP_S,
    CUE_PEAK,
    CUE_TONE_S,
    CUE_TONES,
    cue_tone,
)
from .errors import ModelError, TtsError
from .registry import Registry
from .text import split_sentences
from .tts_phrases import CLOCK_ENTRIES, DEFAULT_PHRASES, PHRASE_CACHE_MAX, PhraseCache  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .config import Settings, TtsSettings

log = logging.getLogger(__name__)

WARMUP_TEXT = "Hello."


@dataclass(frozen=True)
class SynthStats:
    """Timings of the last ``synthesize`` call, in seconds (for logs, ``say --json`` and benchmarks)."""

    first_audio_s: float  # start -> first chunk ready
    synth_s: float  # time spent synthesizing (excluding time the consumer held the generator)
    audio_s: float  # seconds of audio produced
    chunks: int

    @property
    def rtf(self) -> float:
        return self.synth_s / self.audio_s if self.audio_s else 0.0


def synthesize_timed(engine: Any, sentences: Iterable[str], one: Callable[[str], np.ndarray]
                     ) -> Iterator[np.ndarray]:
    """Each sentence's audio from ``one`` as soon as it is ready (an empty array is skipped), keeping
    ``engine.last_stats`` (first audio, busy time, audio seconds at ``engine.sample_rate``, sentences) current."""
    t0 = time.monotonic()
    busy = first = 0.0
    samples = count = 0
    for sentence in sentences:
        ts = time.monotonic()
        audio = one(sentence)
        busy += time.monotonic() - ts
        if not len(audio):
            continue
        if count == 0:
            first = time.monotonic() - t0
        count += 1
        samples += len(audio)
        engine.last_stats = SynthStats(first, busy, samples / engine.sample_rate, count)
        yield audio
    engine.last_stats = SynthStats(first, busy, samples / engine.sample_rate, count)


class _ReleasingSession:
    """An ONNX Runtime session whose every ``run`` gives the CPU arena's free chunks back at its end.

    Piper's input length changes with every sentence, and the default arena keeps the chunks of the longest sentence
    so far: over hours of varied replies the daemon's heap climbs in steps (+200 MB after 120 sentences of 3-50
    words, measured in docs/benchmarks.md). Shrinking after each run keeps it flat for ~12 % more synthesis CPU.
    Piper calls ``session.run(None, inputs)``; everything else is the real session's.
    """

    def __init__(self, session: Any, run_options: Any) -> None:
        self._session = session
        self._run_options = run_options

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self._run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _load_voice(path: Path, config: Path, *, release_memory: bool, threads: int = 0) -> Any:
    """A ``PiperVoice`` on a session we create ourselves (piper's ``load`` offers no session or run options). Its
    pool's threads sleep while they wait instead of spinning: under the Pi 4 budget spinning made a short reply cost
    5x the CPU, and without a quota turning it off cost no wall time. ``threads``: 0 is ONNX Runtime's choice."""
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig

    piper_config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1
    if threads > 0:
        opts.intra_op_num_threads = threads
    session: Any = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if release_memory:
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session = _ReleasingSession(session, run_options)
    return PiperVoice(config=piper_config, session=session)


def _syn_config(voice: Any, settings: TtsSettings) -> Any:
    """Piper's synthesis config: the settings' rate is relative to the voice's own length_scale."""
    from piper.config import SynthesisConfig

    base_length = voice.config.length_scale or 1.0
    return SynthesisConfig(length_scale=base_length * settings.length_scale, volume=settings.volume)


class PiperTts:
    """A Piper voice: per-sentence streaming synthesis at the voice's rate, with the settings' rate and gain."""

    name = "piper"

    def __init__(self, voice_path: Path, settings: TtsSettings) -> None:
        self.voice_path = Path(voice_path)
        self.settings = settings
        self.voice: Any = None
        self.load_s = 0.0
        self.last_stats: SynthStats | None = None
        self._syn_config: Any = None
        self._cache: PhraseCache | None = None
        self._cues: dict[str, np.ndarray] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperTts:
        """Same as the module's ``from_settings``: the voice of ``settings.tts``, resolved, not yet loaded."""
        return from_settings(settings)

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load the ONNX voice and its .onnx.json config (seconds on a Pi: do it once, at start)."""
        if self.voice is not None:
            return
        path = self.voice_path
        if path.is_dir():
            onnx = sorted(path.glob("*.onnx"))
            if len(onnx) != 1:
                raise ModelError(f"{path}: expected exactly one Piper .onnx voice in this folder, found {len(onnx)}",
                                 fix="set tts.voice to the .onnx file itself")
            path = onnx[0]
        if not path.is_file():
            raise ModelError(f"{path}: Piper voice not found", fix="edge-agent models fetch piper_joe_medium")
        config = Path(f"{path}.json")
        if not config.is_file():
            raise ModelError(f"{config}: the voice's config file is missing (Piper needs <voice>.onnx.json)",
                             fix="put the .onnx.json that came with the voice next to it")
        t0 = time.monotonic()
        try:
            from .cpu_share import tts_threads

            self.voice = _load_voice(path, config, release_memory=self.settings.release_memory,
                                     threads=tts_threads(self.settings.threads))
        except ImportError as e:
            raise TtsError(f"Piper is not installed ({e})", fix="pip install piper-tts==1.8.0") from None
        except Exception as e:  # onnxruntime / json errors: a broken or foreign file
            raise ModelError(f"{path}: cannot load the Piper voice ({type(e).__name__}: {e})",
                             fix="edge-agent models fetch piper_joe_medium --force, or pick another voice") from None
        self.load_s = time.monotonic() - t0
        self._syn_config = _syn_config(self.voice, self.settings)
        log.info("piper voice %s loaded in %.2fs (%d Hz)", path.name, self.load_s, self.sample_rate)

    def with_settings(self, settings: TtsSettings) -> PiperTts:
        """The same loaded voice with other rate/gain/phrases (no reload: e.g. a slower voice for a long answer)."""
        self._require()
        if settings.voice != self.settings.voice:
            raise TtsError("with_settings cannot change the voice itself", fix="load another PiperTts")
        other = PiperTts(self.voice_path, settings)
        other.voice, other.load_s = self.voice, self.load_s
        other._syn_config = _syn_config(self.voice, settings)
        return other

    @property
    def loaded(self) -> bool:
        return self.voice is not None

    @property
    def sample_rate(self) -> int:
        """The voice's own rate in Hz (every array this class returns is at this rate)."""
        self._require()
        return int(self.voice.config.sample_rate)

    def warmup(self) -> float:
        """Synthesize a short phrase once: ONNX Runtime's first run allocates and is several times slower."""
        t0 = time.monotonic()
        self.synthesize_all(WARMUP_TEXT)
        return time.monotonic() - t0

    def for_turn(self) -> PiperTts:
        """One voice, nothing to choose per turn: the turn speaks through the voice itself."""
        return self

    def turn_record(self) -> dict[str, Any]:
        return {"backend": self.name}

    def _require(self) -> None:
        if self.voice is None:
            raise TtsError("the Piper voice is not loaded", fix="call PiperTts.load() first")

    # ------------------------------------------------------------------ synthesis
    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 audio at ``sample_rate``, one array per sentence, each as soon as it is synthesized.

        The text is cleaned by ``speakable`` first (markdown, JSON, emoji are never read out); nothing speakable
        yields nothing. ``last_stats`` holds the timings once the generator is exhausted.
        """
        self._require()
        silence = np.zeros(int(self.settings.sentence_silence_s * self.sample_rate), dtype=np.int16)

        def one(sentence: str) -> np.ndarray:
            try:
                parts = [c.audio_int16_array for c in self.voice.synthesize(sentence, self._syn_config)]
            except Exception as e:
                raise TtsError(f"Piper failed on {sentence!r}: {type(e).__name__}: {e}") from None
            if not parts:
                return np.zeros(0, dtype=np.int16)
            return np.concatenate([*parts, silence]) if len(silence) else np.concatenate(parts)

        yield from synthesize_timed(self, split_sentences(text), one)

    def synthesize_all(self, text: str) -> np.ndarray:
        """The whole text as one int16 array at ``sample_rate`` (empty if nothing is speakable)."""
        chunks = list(self.synthesize(text))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    # ------------------------------------------------------------------ phrases and cues
    @property
    def phrases(self) -> PhraseCache:
        """The voice's phrase cache: built-in phrases plus ``settings.phrases``."""
        if self._cache is None:
            self._cache = PhraseCache(self, {**DEFAULT_PHRASES, **self.settings.phrases},
                                      max_entries=PHRASE_CACHE_MAX + self.settings.warm_replies + CLOCK_ENTRIES)
        return self._cache

    def cached(self, text_or_key: str) -> np.ndarray:
        """Audio of a fixed phrase (a key of the phrase table, or any text), synthesized once then replayed."""
        return self.phrases.get(text_or_key)

    def prewarm(self, texts: Iterable[str] | None = None) -> float:
        """Synthesize phrases into the cache ahead of time (default: every known phrase); returns seconds spent."""
        return self.phrases.prewarm(texts)

    def cue_tone(self, kind: str) -> np.ndarray:
        """A cue chime at the voice's rate and volume (computed once per kind)."""
        if kind not in self._cues:
            audio = cue_tone(kind, self.sample_rate, self.settings.volume)
            audio.setflags(write=False)
            self._cues[kind] = audio
        return self._cues[kind]


def from_settings(settings: Settings) -> PiperTts:
    """A (not yet loaded) voice from settings, resolved and verified through the model manifest."""
    from .preflight import resolve_model

    return PiperTts(resolve_model(settings, settings.tts.voice, "tts"), settings.tts)


# =================================================================================================== registry

# modules that register an engine when imported (piper registers itself below)
BUILTIN_TTS = ("edge_agent.tts_wyoming",)


@dataclass(frozen=True)
class TtsSpec:
    """How to make one TTS engine from the settings."""

    name: str
    create: Callable[[Settings], Any]  # the settings -> an engine offering ports.TextToSpeech, not loaded
    local_voice: Callable[[Settings], bool]  # whether it loads tts.voice (the model check then wants it)
    package: str | None = None  # the Python package it needs (the doctor checks it)


_ENGINES: Registry[TtsSpec] = Registry("tts", BUILTIN_TTS, TtsError)
register_tts = _ENGINES.register


def tts_engines() -> dict[str, TtsSpec]:
    """Every registered engine by name (the built-in ones imported on first use)."""
    return _ENGINES.all()


def tts_spec(name: str) -> TtsSpec:
    return _ENGINES.get(name)


def make_tts(settings: Settings, engine: str | None = None) -> Any:
    """The configured (or named) engine, its local voice resolved through the manifest; not loaded yet."""
    return tts_spec(engine or settings.tts.engine).create(settings)


register_tts(TtsSpec(name="piper", create=from_settings, local_voice=lambda _s: True, package="piper-tts"))
