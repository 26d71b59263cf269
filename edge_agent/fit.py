"""Does the configuration fit this board? ``edge-agent check --speed`` times a reference speech-to-text decode, an LLM
prompt evaluation and generation, and a first synthesis on the machine it runs on, projects the two critical paths
(a command on the fast path, a question answered by the LLM) from the end of speech to the first reply audio, and
says what to set where they do not fit, with the config lines. On a board whose decode is longer than the endpoint's
wait for it (``headroom.decode_budget_s``), the speculation and the idle prefill stay off (``auto``): a third line
says so, and advises against forcing them ``on``.

The projection follows the loop: a speculative transcription starts at the first pause (``listener.SPECULATE_AFTER_S``)
and runs in the silence; the endpoint comes ``vad.trailing_silence_s`` after the last word, or for a complete
command as soon as the speculation has judged it (the early end, ``edge_agent/ending.py``); then the fast path (tens
of ms) or the LLM's uncached prompt and first clause; then the first synthesis. ``judge`` is pure
and tested with numbers (this machine's, and the published Pi 4 / Pi 5 figures).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import ending
from .config import Settings
from .headroom import SPECULATE_AFTER_S, afford, choose, decode_budget_s
from .llm_backend import LlmBackend

log = logging.getLogger(__name__)

COMMAND_BUDGET_S = 1.0  # end of speech -> first audio for a command; past ~1 s it feels sluggish
ANSWER_BUDGET_S = 2.0  # for an LLM answer; past 2 s people talk over the assistant
FAST_PATH_S = 0.03  # template match + handler, measured tens of ms on a 2-core x86 server
TURN_PROMPT_TOKENS = 40  # uncached prompt tokens of a typical turn (the fixed prefix is cached)
FIRST_CLAUSE_TOKENS = 8  # generated before the first clause can be spoken
REFERENCE_SENTENCE = "Turn on the kitchen light and set it to forty percent, please."
# Share of one core the audio loop's models (wake word(s) + VAD on every chunk) may take. The whole loop costs about
# three times its models (this machine, 2026-11-30: models 0.03 CPU s per audio s, the daemon's loop 0.08-0.14 with the
# capture, conversion and endpointing around them), and the rest of a small board's CPU is what Whisper, the LLM and
# Piper share: a loop that cannot keep up makes every endpoint late (the simulated Pi 4 starved: docs/benchmarks.md,
# "The same run again")
LOOP_SHARE_MAX = 0.12


@dataclass(frozen=True)
class Speed:
    """What this machine measured (seconds, tokens per second)."""

    stt_decode_s: float  # transcription of the reference utterance, after it ended
    utterance_s: float  # its length
    llm_prompt_tps: float
    llm_gen_tps: float
    tts_first_s: float  # synthesis of one short reply sentence
    loop_cpu_per_s: float | None = None  # CPU seconds the wake word and VAD spend per second of audio (the loop)


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def transcript_ready_s(sp: Speed, s: Settings, *, early: bool) -> float:
    """From the end of speech to the transcript: the speculation starts at the first pause and runs in the silence;
    the turn ends after the normal silence, or for a complete command (``early``, ``vad.early_end``) as soon as the
    speculation has judged it, but not before ``ending.EARLY_END_S``."""
    wait = s.vad.trailing_silence_s
    if s.stt.engine == "whisper" and not speculates(sp, s):  # the decode starts at the endpoint (headroom.py)
        return wait + sp.stt_decode_s
    if early and s.vad.early_end and s.stt.engine == "whisper":  # the early end needs the speculation's verdict
        wait = min(wait, ending.EARLY_END_S)
    return max(wait, SPECULATE_AFTER_S + sp.stt_decode_s)


def speculates(sp: Speed, s: Settings) -> bool:
    """Does the speculation at the first pause run on this machine (``stt.speculate``; ``auto``: while a decode fits
    the endpoint's wait, edge_agent/headroom.py)?"""
    return choose(s.stt.speculate, afford(sp.stt_decode_s, False, s.vad.trailing_silence_s))


def background_verdict(sp: Speed, s: Settings) -> Verdict | None:
    """On a board whose decode does not fit the endpoint's wait, the work that only helps on a fast machine (the
    speculation at the first pause, the LLM's idle prefill) slows every turn down: ``auto`` leaves it off there, ``on``
    is advised against. None where it fits (nothing to say)."""
    budget = decode_budget_s(s.vad.trailing_silence_s)
    if s.stt.engine != "whisper" or afford(sp.stt_decode_s, False, s.vad.trailing_silence_s):
        return None
    detail = (f"background work: a Whisper decode takes {sp.stt_decode_s:.2f} s here, longer than the "
              f"{budget:.2f} s the endpoint waits for one, so the speculation at the first pause and the LLM's idle "
              f"prefill would compete with the audio loop for the CPU")
    forced = [k for k, v in (("stt.speculate", s.stt.speculate), ("llm.idle_prefill", s.llm.idle_prefill)) if v == "on"]
    if not forced:
        return Verdict("speed: background work", True, detail + ": both stay off here (auto)")
    return Verdict("speed: background work", False, detail + f": {' and '.join(forced)} forced on",
                   "let this board decide (or set them off):\n    stt:\n      speculate: auto\n"
                   "    llm:\n      idle_prefill: auto")


def projected_command_s(sp: Speed, s: Settings) -> float:
    """A complete device command: ended early, answered by the fast path."""
    return transcript_ready_s(sp, s, early=True) + FAST_PATH_S + sp.tts_first_s


def projected_answer_s(sp: Speed, s: Settings) -> float:
    llm = TURN_PROMPT_TOKENS / max(sp.llm_prompt_tps, 1e-6) + FIRST_CLAUSE_TOKENS / max(sp.llm_gen_tps, 1e-6)
    return transcript_ready_s(sp, s, early=False) + llm + sp.tts_first_s


def judge(sp: Speed, s: Settings) -> list[Verdict]:
    """Both critical paths against their budgets, with what to change where they miss."""
    out = []
    cmd = projected_command_s(sp, s)
    detail = (f"command: about {cmd:.2f} s from the end of speech to the first audio (budget {COMMAND_BUDGET_S:.1f} s; "
              f"{s.stt.engine} decode {sp.stt_decode_s:.2f} s for {sp.utterance_s:.1f} s of speech, first synthesis "
              f"{sp.tts_first_s:.2f} s)")
    if cmd <= COMMAND_BUDGET_S:
        out.append(Verdict("speed: commands", True, detail))
    elif s.stt.engine == "whisper":
        out.append(Verdict("speed: commands", False, detail + ": Whisper cannot finish in time on this CPU",
                           "use the streaming engine, whose transcript is ready at the endpoint:\n"
                           "    stt:\n      engine: vosk\n      vosk:\n        model: vosk_small_en\n"
                           "  (edge-agent models fetch vosk_small_en), or a home server: stt.engine: wyoming"))
    else:
        out.append(Verdict("speed: commands", False, detail,
                           "shorten vad.trailing_silence_s (e.g. 0.3), or move speech-to-text to a home server"))
    ans = projected_answer_s(sp, s)
    detail = (f"LLM answer: about {ans:.2f} s (budget {ANSWER_BUDGET_S:.1f} s; prompt {sp.llm_prompt_tps:.0f} tok/s, "
              f"generation {sp.llm_gen_tps:.0f} tok/s)")
    if ans <= ANSWER_BUDGET_S:
        out.append(Verdict("speed: answers", True, detail))
    else:
        out.append(Verdict("speed: answers", False, detail,
                           "keep llm.model at the 0.5B model (a larger one is slower still), or answer from a home "
                           "server:\n    llm:\n      backend: openai\n      fallback: local\n"
                           "  (see README: One server, several rooms); commands stay fast on the fast path"))
    background = background_verdict(sp, s)
    if background is not None:
        out.append(background)
    loop = loop_verdict(sp, s)
    if loop is not None:
        out.append(loop)
    return out


def loop_verdict(sp: Speed, s: Settings) -> Verdict | None:
    """Can the audio loop keep up on this board: the wake word and the VAD on every chunk, against
    ``LOOP_SHARE_MAX`` of one core. None where it was not measured."""
    if sp.loop_cpu_per_s is None:
        return None
    share = sp.loop_cpu_per_s
    models = len(s.wake.models) + len(s.wake.stop_models)
    detail = (f"the wake word ({models} model{'s' if models != 1 else ''}) and the VAD take {share:.0%} of one core "
              f"here (limit {LOOP_SHARE_MAX:.0%}; the whole audio loop costs about three times its models)")
    if share <= LOOP_SHARE_MAX:
        return Verdict("speed: audio loop", True, detail)
    fix = "listen for one wake word only (one entry under wake.models)"
    if s.wake.stop_models:
        fix += ", and drop the stop words:\n    wake:\n      stop_models: []"
    return Verdict("speed: audio loop", False, detail + ": the loop would fall behind the microphone while Whisper, "
                   "the LLM and the voice run, and every endpoint would come late", fix + "; or a faster board")


def measure(s: Settings) -> Speed:
    """Time the configured engines on this machine (loads them: tens of seconds on a Pi)."""
    from .audio import SAMPLE_RATE, resample
    from .errors import EdgeAgentError
    from .llm_backend import create_backend
    from .stt import make_engine, prime_with_home
    from .tts import make_tts

    tts = make_tts(s)  # tts.engine: a server's time to a sentence when it is a Wyoming server
    tts.load()
    tts.warmup()
    t0 = time.perf_counter()
    tts.synthesize_all("Turned on the kitchen light.")
    tts_first = time.perf_counter() - t0
    speech = resample(tts.synthesize_all(REFERENCE_SENTENCE), tts.sample_rate, SAMPLE_RATE)
    stt = make_engine(s.stt, s)
    stt.load()
    try:  # primed as the daemon primes it: the home's names are read by every decode
        from .home import Home

        prime_with_home(stt, s.stt, Home.load(s.home))
    except EdgeAgentError as e:
        log.warning("check: the reference decode runs without the home's names (%s)", e.message)
    stt.warmup()
    t0 = time.perf_counter()
    stt.transcribe(speech)
    stt_s = time.perf_counter() - t0
    llm = create_backend(s)
    llm.load()
    prompt_tps, gen_tps = llm_speed(llm)
    return Speed(stt_s, len(speech) / SAMPLE_RATE, prompt_tps, gen_tps, tts_first, loop_speed(s, speech))


def loop_speed(s: Settings, speech: np.ndarray, seconds: float = 6.0) -> float:
    """CPU seconds per second of audio the loop's models spend: the configured wake word(s) (and stop words) and the
    VAD fed ``seconds`` of audio (the reference speech, then silence) in capture blocks, as the loop feeds them."""
    from .audio import SAMPLE_RATE
    from .vad import SileroVad
    from .wake import WakeDetector

    detectors = [WakeDetector.from_settings(s)]
    if s.wake.stop_models:
        detectors.append(WakeDetector.from_settings(s, stop=True))
    vad = SileroVad.from_settings(s)
    n = int(seconds * SAMPLE_RATE)
    audio = np.zeros(n, dtype=np.int16)
    audio[:min(n, len(speech))] = speech[:n]
    block = max(1, int(s.audio.block_ms * SAMPLE_RATE / 1000))
    for det in detectors:
        det.process(audio[:block], block / SAMPLE_RATE)  # the first call of each ONNX session is not the loop's
    vad.process(audio[:block])
    c0 = time.process_time()
    for i in range(0, n - block + 1, block):
        t_end = (i + block) / SAMPLE_RATE
        for det in detectors:
            det.process(audio[i:i + block], t_end)
        vad.process(audio[i:i + block])
    return (time.process_time() - c0) / seconds


def llm_speed(llm: LlmBackend) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) of one uncached call through the port (any backend)."""
    text = ("Summarise in one sentence why a voice assistant that runs on a small board must answer quickly, "
            f"and mention the number {time.time_ns() % 100_000}.")  # never in the KV cache
    with llm.stream([{"role": "user", "content": text}], mode="words", max_tokens=24, temperature=0.0) as stream:
        for _ in stream:
            pass
    st = stream.stats
    prompt = st.n_evaluated / st.t_prompt_s if st.t_prompt_s > 0 else 0.0
    gen = (st.n_gen - 1) / st.t_gen_s if st.t_gen_s > 0 and st.n_gen > 1 else 0.0
    return prompt, gen
