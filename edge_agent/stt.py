"""Speech-to-text: one small streaming interface, two engines (faster-whisper and Vosk).

The pipeline feeds an utterance's audio to an ``SttStream`` while the user speaks and calls ``finish()`` when the
endpointer says the turn is over; only the time from ``finish()`` to the text delays the reply, so that is what
``SttResult.compute_s`` measures.

* ``WhisperEngine`` (faster-whisper, CTranslate2) is a batch model: ``feed()`` only buffers (or, with
  ``partial_interval_s``, re-transcribes now and then), ``finish()`` transcribes. faster-whisper always encodes a
  30 s window, so a 2 s command pays for 30 s of encoding. CTranslate2 accepts a shorter mel window: with
  ``stt.whisper.encoder_window_s`` (default 10 s) ``finish()`` took 0.2-0.36 s instead of 1.3-1.5 s for commands on
  this (shared, 2-core) machine, with the same word error rate on real recordings (tests/test_stt.py, tools/wer.py).
  Whisper was trained on 30 s windows, so a short window sometimes loops ("ten of clubs ten of clubs ...") or takes
  a lone "yes" for silence; such a doubtful result is decoded again over the full window.
* ``VoskEngine`` (Kaldi) is truly streaming: every ``feed()`` decodes, partials arrive while the user speaks, and
  ``finish()`` only flushes the last few frames.

``normalize_text`` and ``word_error_rate`` are shared by the tests and the benchmark.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, read_wav
from .config import Settings, SttSettings, VoskSettings, WhisperSettings
from .errors import ModelError, SttError
from .models import ModelStore, resolve

log = logging.getLogger(__name__)

ENGINES = ("whisper", "vosk")
MODEL_KINDS = {"whisper": "stt_whisper", "vosk": "stt_vosk"}
CLI_CHUNK_S = 0.1  # --partials streams files in 100 ms chunks, like a live microphone block
WHISPER_WINDOW_S = 30.0  # Whisper's native input window
MEL_FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
WINDOW_TAIL_S = 1.0  # at least this much silence after the utterance in a short encoder window
WINDOW_STEP_FRAMES = 500  # short windows grow in 5 s steps
COMPRESSION_RATIO_MAX = 2.4  # Whisper's threshold for a degenerate (repetitive) decode


# =================================================================================================== text + WER

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}


def number_to_words(n: int) -> str:
    """Cardinal English words for a non-negative integer ("42" -> "forty two"), as STT references spell numbers."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return f"{number_to_words(n // value)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number_token(m: re.Match[str]) -> str:
    whole, frac, suffix = m.group(1).replace(",", ""), m.group(2), (m.group(3) or "").lower()
    if len(whole) > 12:
        return " ".join(_ONES[int(d)] for d in whole)
    if suffix in ("st", "nd", "rd", "th") and not frac:
        return " " + _ordinal_words(int(whole)) + " "
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix == "%":
        words += " percent"
    return f" {words} "


def normalize_text(s: str) -> str:
    """Lowercase words without punctuation, numbers spelled out: the form in which transcripts are compared.

    Whisper writes "Mr. Dashwood", "ill-disposed" and "8 of spades"; references say "mister dashwood", "ill disposed"
    and "eight of spades". Apostrophes inside words stay ("don't"); sentence markers like ``<s>`` go.
    """
    s = re.sub(r"</?s>|<sil>", " ", s)
    s = s.lower().replace("’", "'")
    s = re.sub(r"(\d+):(\d\d)\b", lambda m: f"{m.group(1)} {m.group(2)}", s)  # 7:30 -> seven thirty
    s = re.sub(r"\$(\d[\d,]*)", r"\1 dollars", s)
    s = re.sub(r"(\d[\d,]*\d|\d)(?:\.(\d+))?(st|nd|rd|th|%)?", _number_token, s)
    s = re.sub(r"[^\w\s']|_", " ", s)  # hyphens and punctuation split words
    words = []
    for w in s.split():
        w = w.strip("'")
        if w:
            words.append(_ABBREVIATIONS.get(w, w))
    return " ".join(words)


def word_error_rate(ref: str, hyp: str) -> float:
    """(substitutions + deletions + insertions) / words in the reference, after ``normalize_text`` of both.

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise (so the result is always finite).
    """
    r, h = normalize_text(ref).split(), normalize_text(hyp).split()
    if not r:
        return 0.0 if not h else 1.0
    return edit_distance(r, h) / len(r)


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance over tokens (one row of the table at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# =================================================================================================== interface


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

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "engine": self.engine, "audio_s": round(self.audio_s, 3),
                "compute_s": round(self.compute_s, 4),
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


# =================================================================================================== whisper


class WhisperEngine(SttEngine):
    """faster-whisper on a CTranslate2 model directory. Batch: the utterance is transcribed at ``finish()``."""

    name = "whisper"

    def __init__(self, settings: WhisperSettings, model_path: Path) -> None:
        super().__init__(model_path)
        self.settings = settings
        self.model: Any = None
        self._tokenizer: Any = None
        self._prompt: list[int] = []
        self._suppress: list[int] = []
        self.fallbacks = 0  # doubtful short-window decodes redone over the full 30 s (for the benchmark)

    def _load(self) -> None:
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as e:  # pragma: no cover - installation problem
            raise SttError(f"faster-whisper is not installed ({e})", fix="pip install faster-whisper==1.2.1") from None
        s = self.settings
        try:
            self.model = WhisperModel(str(self.model_path), device="cpu", compute_type=s.compute_type,
                                      cpu_threads=s.threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelError(f"cannot load the Whisper model in {self.model_path}: {e}",
                             fix="point stt.whisper.model at a CTranslate2 Whisper model folder (model.bin, "
                                 "config.json, tokenizer.json), e.g. `edge-agent models fetch whisper_tiny_en`, "
                                 "and check stt.whisper.compute_type") from None
        language = s.language if self.model.model.is_multilingual else "en"
        self._tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                    language=language)
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))

    def _open_stream(self) -> SttStream:
        return WhisperStream(self)

    def variant(self, settings: WhisperSettings) -> WhisperEngine:
        """Another engine over this one's loaded model with other decoding settings (window, beam, partials), for
        comparisons without loading the model twice. Model, compute type and threads stay this engine's."""
        self.load()
        other = WhisperEngine(settings, self.model_path)
        other.model, other._tokenizer, other._prompt, other._suppress = (self.model, self._tokenizer, self._prompt,
                                                                          self._suppress)
        other.load_s = 0.0
        return other

    def recognize(self, audio: np.ndarray) -> str:
        """Text of int16 16 kHz audio: one window for a command, faster-whisper's own segment loop beyond 29 s."""
        if len(audio) == 0:
            return ""
        x = audio.astype(np.float32) / 32768.0
        if len(x) / SAMPLE_RATE <= WHISPER_WINDOW_S - WINDOW_TAIL_S:
            return self._recognize_window(x)
        s = self.settings
        segments, _info = self.model.transcribe(
            x, language=s.language if self.model.model.is_multilingual else "en", beam_size=s.beam_size,
            best_of=1, temperature=0.0, vad_filter=False, without_timestamps=True,
            condition_on_previous_text=False,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()

    def window_frames(self, feature_frames: int) -> int:
        """Mel frames to encode for an utterance of ``feature_frames`` frames (see ``encoder_window_s``)."""
        full = int(WHISPER_WINDOW_S * MEL_FRAMES_PER_S)
        least = int(round(self.settings.encoder_window_s * MEL_FRAMES_PER_S))
        if least <= 0 or least >= full:
            return full
        step = WINDOW_STEP_FRAMES
        need = feature_frames + int(WINDOW_TAIL_S * MEL_FRAMES_PER_S)
        return min(full, max(least, -(-need // step) * step))

    def _recognize_window(self, x: np.ndarray) -> str:
        """Encode the utterance in a window shorter than 30 s (at least ``encoder_window_s``) and decode.

        Whisper was trained on 30 s windows; a short one sometimes sends it into a loop ("ten of clubs ten of clubs
        ..."), or makes a short word look like silence. A doubtful decode (it hit the token cap, repeats a block of
        words, compresses like a repetition, or was judged silence) is done again over the full 30 s window.
        """
        feats = self.model.feature_extractor(x)  # (n_mels, frames)
        frames = self.window_frames(feats.shape[-1])
        max_tokens = _max_tokens(len(x) / SAMPLE_RATE)
        text, doubtful = self._decode(feats, frames, max_tokens)
        full = int(WHISPER_WINDOW_S * MEL_FRAMES_PER_S)
        if doubtful and frames < full:
            self.fallbacks += 1
            log.debug("stt: doubtful decode on a %d-frame window (%r); decoding the full window", frames, text)
            text, _ = self._decode(feats, full, max_tokens)
        return text

    def _decode(self, feats: np.ndarray, frames: int, max_tokens: int) -> tuple[str, bool]:
        """(text, doubtful) for mel features padded (with zeros, as faster-whisper pads) to ``frames`` frames;
        doubtful = dropped as silence, or looks like a decoding loop."""
        import ctranslate2

        s = self.settings
        window = np.zeros((1, feats.shape[0], frames), dtype=np.float32)
        n = min(frames, feats.shape[-1])
        window[0, :, :n] = feats[:, :n]
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(window), [self._prompt], beam_size=s.beam_size,
            max_length=len(self._prompt) + max_tokens, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=self._suppress,
        )[0]
        ids = result.sequences_ids[0]
        tokens = [t for t in ids if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        if result.no_speech_prob > s.no_speech_threshold and result.scores[0] < -1.0:
            # Whisper's rule: likely silence, and the text it made up is improbable. The endpointer heard speech,
            # though, and a short window makes single words ("yes") look like silence: worth a second look.
            return "", True
        looped = (len(ids) >= max_tokens or _compression_ratio(text) > COMPRESSION_RATIO_MAX
                  or has_repetition(normalize_text(text).split()))
        return text, looped


def has_repetition(words: list[str]) -> bool:
    """True when a block of two or more words comes twice in a row, or one word three times in a row: the shape of
    a Whisper decoding loop. A person rarely says that; when they do, the only cost is one more decode."""
    n = len(words)
    for k in range(1, n // 2 + 1):
        need = 3 if k == 1 else 2
        for i in range(0, n - need * k + 1):
            if all(words[i + j * k:i + (j + 1) * k] == words[i:i + k] for j in range(1, need)):
                return True
    return False


def _compression_ratio(text: str) -> float:
    """How well the text compresses: a loop of repeated words compresses far better than speech."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _max_tokens(audio_s: float) -> int:
    """A cap on decoded tokens that real speech never reaches (fast speech is ~5 words/s, ~1.3 tokens a word plus
    punctuation): a decode that hits it is a loop of repeated words, cut short and then redone."""
    return int(min(440, 12 + 10 * audio_s))


class WhisperStream(SttStream):
    engine_name = "whisper"

    def __init__(self, engine: WhisperEngine) -> None:
        super().__init__()
        self.engine = engine
        self._chunks: list[np.ndarray] = []
        self._last_partial_at = 0
        self._last_partial_text = ""

    def _feed(self, samples: np.ndarray) -> str | None:
        self._chunks.append(samples.copy())
        interval = self.engine.settings.partial_interval_s
        if interval <= 0 or self.samples_fed - self._last_partial_at < interval * SAMPLE_RATE:
            return None
        self._last_partial_at = self.samples_fed
        text = self.engine.recognize(self._audio())
        if text and text != self._last_partial_text:
            self._last_partial_text = text
            return text
        return None

    def snapshot(self) -> np.ndarray | None:
        return self._audio().copy()

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def _finish(self) -> str:
        return self.engine.recognize(self._audio())


# =================================================================================================== vosk


class VoskEngine(SttEngine):
    """Vosk (Kaldi) streaming recognizer: partials while the user speaks, finals at pauses and at ``finish()``."""

    name = "vosk"

    def __init__(self, settings: VoskSettings, model_path: Path) -> None:
        super().__init__(model_path)
        self.settings = settings
        self.model: Any = None

    def _load(self) -> None:
        try:
            import vosk
        except ImportError as e:  # pragma: no cover - installation problem
            raise SttError(f"vosk is not installed ({e})", fix="pip install vosk==0.3.45") from None
        vosk.SetLogLevel(-1)  # Kaldi's own logging goes to stderr and would drown ours
        if not (self.model_path / "conf" / "model.conf").is_file() and not (self.model_path / "am").is_dir():
            raise ModelError(f"{self.model_path} does not look like a Vosk model folder (no am/ or conf/model.conf)",
                             fix="point stt.vosk.model at an unpacked Vosk model folder, or a manifest name")
        try:
            self.model = vosk.Model(str(self.model_path))
        except Exception as e:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"cannot load the Vosk model in {self.model_path}: {e}",
                             fix="fetch it again with `edge-agent models fetch NAME --force`") from None

    def _open_stream(self) -> SttStream:
        import vosk

        rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
        rec.SetWords(True)
        return VoskStream(rec)


class VoskStream(SttStream):
    engine_name = "vosk"

    def __init__(self, recognizer: Any) -> None:
        super().__init__()
        self.rec = recognizer
        self._finals: list[str] = []
        self._last = ""

    def _feed(self, samples: np.ndarray) -> str | None:
        if self.rec.AcceptWaveform(samples.tobytes()):
            self._add_final(self.rec.Result())
            current = self._joined()
        else:
            partial = json.loads(self.rec.PartialResult()).get("partial", "").strip()
            current = self._joined(partial)
        if current and current != self._last:
            self._last = current
            return current
        return None

    def _add_final(self, result_json: str) -> None:
        text = json.loads(result_json).get("text", "").strip()
        if text:
            self._finals.append(text)

    def _joined(self, tail: str = "") -> str:
        return " ".join([*self._finals, tail] if tail else self._finals)

    def _finish(self) -> str:
        self._add_final(self.rec.FinalResult())
        return self._joined()


# =================================================================================================== factory


def _configured_ref(stt: SttSettings, engine: str) -> str:
    return stt.whisper.model if engine == "whisper" else stt.vosk.model


def make_engine(stt_settings: SttSettings, settings: Settings, engine: str | None = None,
                model: str | None = None) -> SttEngine:
    """The configured (or overridden) engine with its model resolved and verified; not loaded yet.

    If the configured engine's model is missing but the other engine's configured model is installed, the error
    says both ways out: fetch the model, or switch ``stt.engine``.
    """
    name = engine or stt_settings.engine
    if name not in ENGINES:
        raise SttError(f"unknown STT engine {name!r}", fix=f"use one of: {', '.join(ENGINES)}")
    ref = model or _configured_ref(stt_settings, name)
    store = ModelStore(settings.models_path)
    try:
        path = resolve(ref, store, MODEL_KINDS[name])
    except ModelError as e:
        other = "vosk" if name == "whisper" else "whisper"
        other_ref = _configured_ref(stt_settings, other)
        if model is None and engine is None and _available(other_ref, store, MODEL_KINDS[other]):
            raise ModelError(
                f"stt.{name}.model: {e.message}",
                fix=f"{e.fix or 'fetch the model'}; or use the installed {other} model {other_ref!r} by setting "
                    f"`stt.engine: {other}` in the config",
            ) from None
        others = [n for n, spec in store.manifest.items()
                  if spec.kind == MODEL_KINDS[name] and n != ref and _available(n, store, spec.kind)]
        if others and ref in store.manifest:
            raise ModelError(e.message, fix=f"{e.fix}; or use an installed {name} model: {', '.join(others)} "
                                            f"(stt.{name}.model, or --model)") from None
        raise
    if name == "whisper":
        return WhisperEngine(stt_settings.whisper, path)
    return VoskEngine(stt_settings.vosk, path)


def _available(ref: str, store: ModelStore, kind: str) -> bool:
    try:
        resolve(ref, store, kind)
    except ModelError:
        return False
    return True


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
