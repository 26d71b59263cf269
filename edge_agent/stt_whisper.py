"""faster-whisper (CTranslate2) as an STT engine: batch decoding of the utterance at ``finish()``.

faster-whisper always encodes a 30 s window, so a 2 s command pays for 30 s of encoding. CTranslate2 accepts a
shorter mel window: with ``stt.whisper.encoder_window_s`` (default 10 s) ``finish()`` took 0.2-0.36 s instead of
1.3-1.5 s for commands on this (shared, 2-core) machine, with the same word error rate on real recordings
(tests/test_stt.py, tools/wer.py). Whisper was trained on 30 s windows, so a short window sometimes loops ("ten of
clubs ten of clubs ...") or takes a lone "yes" for silence; such a doubtful result is decoded again over the full
window.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .config import WhisperSettings
from .cpu_share import passive_waits, whisper_threads
from .errors import ModelError, SttError
from .stt import SttEngine, SttSpec, SttStream, register_stt
from .stt_confidence import Decoded, least_sure, on_off_margin, opposite_tokens
from .stt_loops import COMPRESSION_RATIO_MAX, compression_ratio, has_repetition, max_tokens_for, said_again
from .stt_text import normalize_text

log = logging.getLogger(__name__)

WHISPER_WINDOW_S = 30.0  # Whisper's native input window
MEL_FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
WINDOW_TAIL_S = 1.0  # at least this much silence after the utterance in a short encoder window
WINDOW_STEP_FRAMES = 500  # short windows grow in 5 s steps
SCORE_BATCH = 8  # sentence_scores: sentences scored in one decoder call
TOKEN_PROB_MIN = 1e-6  # sentence_scores: a token's probability counts at least this (log: -13.8)
ALT_BEAM = 5  # alternatives: the beam's width at least
# sentence_scores / alternatives: the encoder's output of a decode is reused for audio that only goes on after it by
# at most this much (the speculative transcript is decoded at the first pause, the stream's audio ends at the
# endpoint: the words scored are the ones that decode heard)
REUSE_TAIL_S = 1.0
PRIME_MAX_TOKENS = 200  # Whisper's previous-text prompt holds at most 223 tokens (half its 448-token context)


class WhisperEngine(SttEngine):
    """faster-whisper on a CTranslate2 model directory. Batch: the utterance is transcribed at ``finish()``."""

    name = "whisper"

    def __init__(self, settings: WhisperSettings, model_path: Path) -> None:
        super().__init__(model_path)
        self.settings = settings
        self.model: Any = None
        self._tokenizer: Any = None
        self._prompt: list[int] = []
        self._base_prompt: list[int] = []  # the task tokens alone, without ``prime``'s words
        self.primed = ""  # the words of ``prime`` (the home's names), "" = none
        self._plain: WhisperEngine | None = None  # ``unprimed()``
        self._suppress: list[int] = []
        self._commas: list[int] = []  # "," tokens: never decoded after the home's names (see _decode)
        self.fallbacks = 0  # doubtful short-window decodes redone over the full 30 s (for the benchmark)
        self.prime_fallbacks = 0  # doubtful primed decodes redone without the home's names
        self.prime_loops = 0  # primed decodes that said one sentence over and over: the first kept (said_again)
        self._last_encoded: tuple[Any, ...] | None = None  # (audio key, encoder output, frames, feature frames)
        # the newest decode *started* keeps its encoder output: a superseded speculation that finishes after the
        # final decode must not leave its shorter audio's output for the final transcript's scores
        self._tickets = itertools.count(1)
        self._kept_ticket = 0
        self._keep_lock = threading.Lock()
        self._kept_decoded: tuple[tuple[int, bytes], str, Decoded] | None = None  # the newest decode's: decoded
        self._on_off: dict[int, int] = {}  # a whole-word "on"/"off" token -> the opposite word's token
        self._wordlike: dict[int, bool] = {}  # token -> it holds a letter or a digit (least_sure)

    def _load(self) -> None:
        passive_waits()  # under a CPU quota OpenMP's waiting threads sleep instead of spinning (before libgomp loads)
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as e:  # pragma: no cover - installation problem
            raise SttError(f"faster-whisper is not installed ({e})", fix="pip install faster-whisper==1.2.1") from None
        s = self.settings
        try:
            self.model = WhisperModel(str(self.model_path), device="cpu", compute_type=s.compute_type,
                                      cpu_threads=whisper_threads(s.threads), local_files_only=True)
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelError(f"cannot load the Whisper model in {self.model_path}: {e}",
                             fix="point stt.whisper.model at a CTranslate2 Whisper model folder (model.bin, "
                                 "config.json, tokenizer.json), e.g. `edge-agent models fetch whisper_tiny_en`, "
                                 "and check stt.whisper.compute_type") from None
        language = s.language if self.model.model.is_multilingual else "en"
        self._tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                    language=language)
        self._base_prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._prompt = list(self._base_prompt)
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._commas = _comma_tokens(self._tokenizer)
        self._on_off = opposite_tokens(self._tokenizer)
        if self.primed:
            self.prime(self.primed)

    def prime(self, words: str) -> None:
        """Give Whisper ``words`` as the text that came before each utterance (its "previous text" prompt, as
        faster-whisper's ``hotwords`` does): names it would otherwise mishear ("the Mac door", "the best lamp") are
        then heard as the home's ("the back door", "the desk lamp"). "" removes them. Cost: the decoder reads these
        tokens once per decode (measured in docs/benchmarks.md, "Whisper primed with the home's names")."""
        self.primed = " ".join(words.split())
        if self._tokenizer is None:
            return  # applied at load
        if not self.primed:
            self._prompt = list(self._base_prompt)
            return
        tokens = self._tokenizer.encode(" " + self.primed)[-PRIME_MAX_TOKENS:]  # the end holds the requests
        self._prompt = [self._tokenizer.sot_prev, *tokens, *self._base_prompt]

    def _open_stream(self) -> SttStream:
        return WhisperStream(self)

    def unprimed(self) -> WhisperEngine:
        if not self.primed:
            return self
        if self._plain is None:
            self._plain = self.variant(self.settings)
            self._plain.prime("")
        return self._plain

    def variant(self, settings: WhisperSettings) -> WhisperEngine:
        """Another engine over this one's loaded model with other decoding settings (window, beam, partials), for
        comparisons without loading the model twice. Model, compute type and threads stay this engine's."""
        self.load()
        other = WhisperEngine(settings, self.model_path)
        other.model, other._tokenizer, other._base_prompt, other._suppress = (self.model, self._tokenizer,
                                                                               self._base_prompt, self._suppress)
        other._commas, other._on_off = self._commas, self._on_off
        other.prime(self.primed)
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
            condition_on_previous_text=False, hotwords=self.primed or None,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()

    def word_probability(self, samples: np.ndarray, before: str, word: str) -> float | None:
        """P(``word`` | ``before``, audio) by forced decoding (CTranslate2's ``align`` gives each text token's
        probability): the product over the word's tokens, the best of ``before`` with and without a comma after
        it. One encoder pass and two decoder passes over the short window."""
        if len(samples) == 0 or not word:
            return None
        self.load()
        x = samples.astype(np.float32) / 32768.0
        feats = self.model.feature_extractor(x)
        frames = self.window_frames(feats.shape[-1])
        encoded = self._encode(feats, frames)
        tok = self._tokenizer
        start = [*tok.sot_sequence, tok.no_timestamps]
        name = tok.encode(" " + word)
        best = 0.0
        for head in ([" " + before, " " + before + ","] if before else [""]):
            lead = tok.encode(head) if head else []
            result = self.model.model.align(encoded, start, [lead + name], min(frames, feats.shape[-1]))[0]
            probs = list(result.text_token_probs)[len(lead):]
            if probs:
                best = max(best, float(np.prod(probs)))
        return best

    def sentence_scores(self, samples: np.ndarray, sentences: list[str], before: str = "") -> list[float] | None:
        """Log-probability of each sentence given the audio (the sum over its tokens), by forced decoding
        (CTranslate2's ``align``) after the task tokens and ``before``; the home's names are left out of the
        prompt (every sentence pays for the same prompt, and without them each pass reads a handful of tokens, not
        two hundred). A sentence should end as Whisper ends one ("." or "?"): that token is what tells a sentence
        cut short from the whole. A token's probability counts at least ``TOKEN_PROB_MIN``, so one impossible
        token costs a bounded amount. The encoder's output of the utterance just decoded is reused; the sentences
        are scored in batches of ``SCORE_BATCH`` (one decoder call each: two sentences in one call took 15 ms here
        against 22-27 ms in two)."""
        if len(samples) == 0 or not sentences:
            return None
        self.load()
        import ctranslate2

        x = samples.astype(np.float32) / 32768.0
        encoded, frames, n = self._encoded(x)
        tok = self._tokenizer
        lead = tok.encode(" " + before.strip()) if before.strip() else []
        texts = [lead + tok.encode(" " + sentence.strip()) for sentence in sentences]
        one = np.asarray(encoded)  # batch 1: the utterance's encoder output, repeated per sentence in a batch
        scores: list[float] = []
        for i in range(0, len(texts), SCORE_BATCH):
            part = texts[i:i + SCORE_BATCH]
            batch = encoded if len(part) == 1 else ctranslate2.StorageView.from_array(np.repeat(one, len(part), 0))
            for result in self.model.model.align(batch, self._base_prompt, part, [min(frames, n)] * len(part)):
                probs = np.asarray(list(result.text_token_probs)[len(lead):], dtype=np.float64)
                scores.append(float(np.sum(np.log(np.maximum(probs, TOKEN_PROB_MIN)))) if len(probs) else -np.inf)
        return scores

    def alternatives(self, samples: np.ndarray, n: int) -> list[str] | None:
        """Whisper's n-best: a beam search of width ``max(n, ALT_BEAM)`` over the utterance's encoder output (kept
        from its decode), with the prompt and suppressed tokens the decode had; distinct texts, likeliest first.
        One decoder pass of the beam's width."""
        if len(samples) == 0 or n <= 0:
            return None
        self.load()
        x = samples.astype(np.float32) / 32768.0
        encoded, _frames, _n = self._encoded(x)
        prompt = self._prompt
        result = self.model.model.generate(
            encoded, [prompt], beam_size=max(n, ALT_BEAM), num_hypotheses=n,
            max_length=len(prompt) + max_tokens_for(len(x) / SAMPLE_RATE), suppress_blank=True,
            suppress_tokens=self._suppressed(prompt),
        )[0]
        texts: list[str] = []
        for ids in result.sequences_ids:
            text = self._text(ids)
            if text and text not in texts:
                texts.append(text)
        return texts

    def _encoded(self, x: np.ndarray) -> tuple[Any, int, int]:
        """(encoder output, window frames, feature frames) of float audio ``x``: the last utterance's, kept from its
        decode (``_recognize_window``; also when ``x`` goes on after it by a short tail: ``_same_start``), or
        computed now."""
        last = self._last_encoded
        if last is not None and _same_start(x, last[0]):
            return last[1], last[2], last[3]
        feats = self.model.feature_extractor(x)
        frames = self.window_frames(feats.shape[-1])
        return self._encode(feats, frames), frames, feats.shape[-1]

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
        ticket = next(self._tickets)
        feats = self.model.feature_extractor(x)  # (n_mels, frames)
        frames = self.window_frames(feats.shape[-1])
        max_tokens = max_tokens_for(len(x) / SAMPLE_RATE)
        prompt = self._prompt
        encoded = self._encode(feats, frames)
        with self._keep_lock:  # for sentence_scores and alternatives
            if ticket > self._kept_ticket:
                self._kept_ticket, self._last_encoded = ticket, (_audio_key(x), encoded, frames, feats.shape[-1])
        text, doubtful, known = self._decode(encoded, max_tokens, prompt)
        again = said_again(text) if doubtful and prompt != self._base_prompt else None
        if again is not None:
            # the home's names led Whisper on to say the request again ("Turn on the living room lamp. Turn on the
            # living room lamp. Turn on ..."): its first saying is the transcript, with the names heard right
            self.prime_loops += 1
            log.debug("stt: a primed decode said its sentence again (%r); keeping the first", text)
            return self._keep_decoded(ticket, x, again, known)
        if doubtful and prompt != self._base_prompt:
            # the home's names can lead Whisper on past the words ("turn on the kitchen light, turn on the kitchen
            # light, ..."): the same encoded window again without them costs one decoder pass, the full window four
            self.prime_fallbacks += 1
            log.debug("stt: doubtful primed decode (%r); decoding again without the home's names", text)
            prompt = self._base_prompt
            text, doubtful, known = self._decode(encoded, max_tokens, prompt)
        full = int(WHISPER_WINDOW_S * MEL_FRAMES_PER_S)
        if doubtful and frames < full:
            self.fallbacks += 1
            log.debug("stt: doubtful decode on a %d-frame window (%r); decoding the full window", frames, text)
            text, _, known = self._decode(self._encode(feats, full), max_tokens, prompt)
        return self._keep_decoded(ticket, x, text, known)

    def _keep_decoded(self, ticket: int, x: np.ndarray, text: str, known: Decoded | None) -> str:
        """``text``, what its decode knew kept for ``decoded`` if this is the newest decode started."""
        with self._keep_lock:
            if ticket == self._kept_ticket:
                self._kept_decoded = (_audio_key(x), text, known) if known is not None else None
        return text

    def decoded(self, samples: np.ndarray, text: str) -> Decoded | None:
        """What the decode that wrote ``text`` (or text ending in its words) from ``samples`` knew of it
        (``stt_confidence``): its on/off margin (never below 0: greedy; spoken paraphrases: the two "on" heard "off"
        0.09 and 0.22, the rightly heard 1.1 or more, median 6.8) and its least sure word; None for another decode
        or audio."""
        kept = self._kept_decoded
        if kept is None or len(samples) == 0:
            return None
        words, said = normalize_text(kept[1]).split(), normalize_text(text).split()
        if not said or words[-len(said):] != said or not _same_start(samples.astype(np.float32) / 32768.0, kept[0]):
            return None
        return kept[2]

    def _encode(self, feats: np.ndarray, frames: int) -> Any:
        """The encoder's output for mel features padded with zeros (as faster-whisper pads) to ``frames`` frames."""
        import ctranslate2

        window = np.zeros((1, feats.shape[0], frames), dtype=np.float32)
        n = min(frames, feats.shape[-1])
        window[0, :, :n] = feats[:, :n]
        return self.model.model.encode(ctranslate2.StorageView.from_array(window))

    def _suppressed(self, prompt: list[int]) -> list[int]:
        """The tokens a decode after ``prompt`` may not write. After the home's names, a comma would go on with the
        list: "turn on the kitchen light, turn on the kitchen light, ..." to the token cap (a doubtful decode,
        redone). Without commas the request ends where it ends (docs/benchmarks.md, "Whisper primed with the home's
        names": 30 redone of 117 -> 7, dev right 70.9 -> 74.4 %)."""
        return self._suppress + self._commas if prompt != self._base_prompt else self._suppress

    def _text(self, ids: list[int]) -> str:
        """The text of a decoded sequence, its special tokens (end of text and above) left out."""
        return self._tokenizer.decode([t for t in ids if t < self._tokenizer.eot]).strip()

    def _decode(self, encoded: Any, max_tokens: int, prompt: list[int]) -> tuple[str, bool, Decoded | None]:
        """(text, doubtful, what it knew) for an encoded window (``_encode``); doubtful = dropped as silence, or
        looks like a decoding loop; what it knew: ``decoded``'s (greedy decoding only)."""
        s = self.settings
        result = self.model.model.generate(
            encoded, [prompt], beam_size=s.beam_size,
            max_length=len(prompt) + max_tokens, return_scores=True, return_no_speech_prob=True,
            return_logits_vocab=s.beam_size == 1, suppress_blank=True, suppress_tokens=self._suppressed(prompt),
        )[0]
        ids = result.sequences_ids[0]
        text = self._text(ids)
        if result.no_speech_prob > s.no_speech_threshold and result.scores[0] < -1.0:
            # Whisper's rule: likely silence, and the text it made up is improbable. The endpointer heard speech,
            # though, and a short window makes single words ("yes") look like silence: worth a second look.
            return "", True, None
        looped = (len(ids) >= max_tokens or compression_ratio(text) > COMPRESSION_RATIO_MAX
                  or has_repetition(normalize_text(text).split()))
        steps = result.logits[0] if getattr(result, "logits", None) else []
        known = Decoded(on_off_margin(steps, ids, self._on_off), least_sure(steps, ids, self._is_word)) if steps \
            else None
        return text, looped, known

    def _is_word(self, token: int) -> bool:
        if token not in self._wordlike:
            self._wordlike[token] = any(c.isalnum() for c in self._tokenizer.decode([token]))
        return self._wordlike[token]


def _audio_key(x: np.ndarray) -> tuple[int, bytes]:
    """Which utterance float audio ``x`` is, cheaply: its length and every 211th sample."""
    return len(x), x[::211].tobytes()


def _same_start(x: np.ndarray, key: tuple[int, bytes]) -> bool:
    """Whether ``x`` is the audio ``key`` was taken of, or that audio followed by at most ``REUSE_TAIL_S``."""
    n = key[0]
    return n <= len(x) <= n + REUSE_TAIL_S * SAMPLE_RATE and _audio_key(x[:n]) == key


def _comma_tokens(tokenizer: Any) -> list[int]:
    """The tokens that decode to a lone comma (with or without a leading space)."""
    return sorted({ids[0] for ids in (tokenizer.encode(","), tokenizer.encode(" ,")) if len(ids) == 1})


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

    def sentence_scores(self, sentences: list[str], before: str = "") -> list[float] | None:
        return self.engine.sentence_scores(self._audio(), sentences, before)

    def alternatives(self, n: int) -> list[str] | None:
        return self.engine.alternatives(self._audio(), n)

    def decoded(self, text: str) -> Decoded | None:
        return self.engine.decoded(self._audio(), text)

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def _finish(self) -> str:
        return self.engine.recognize(self._audio())


register_stt(SttSpec(
    name="whisper", settings=lambda s: s.stt.whisper, model=lambda w: w.model, model_kind="stt_whisper",
    create=lambda w, path: WhisperEngine(w, path), package="faster-whisper",
    threads=lambda w: whisper_threads(w.threads),
))
