"""The engines' settings, sections of ``config_schema.Settings``: speech-to-text (``SttSettings``: faster-whisper, Vosk,
a Wyoming server), the language model (``LlmSettings``: in process, or an OpenAI-compatible server) and
text-to-speech (``TtsSettings``: the local Piper voice, or a Wyoming server). Every field is made with ``opt``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config_field import opt


@dataclass(frozen=True)
class WhisperSettings:
    model: str = opt("whisper_tiny_en", "Manifest name (or directory) of a CTranslate2 Whisper model.")
    compute_type: str = opt("int8", "CTranslate2 compute type (int8, int8_float32, float32).")
    threads: int = opt(0, "CPU threads; 0 = two where two CPUs are free to use, else one (a CPU quota counts: "
                       "edge_agent/cpu_share.py).", min=0, max=64)
    beam_size: int = opt(1, "Beam size (1 = greedy, fastest).", min=1, max=10)
    language: str = opt("en", "Spoken language code.")
    encoder_window_s: float = opt(
        10.0,
        "Encode a window of at least this many seconds (more for longer utterances) instead of Whisper's full 30 s: "
        "~3-4x faster for commands; a doubtful result (a loop, or judged silence) is redone over 30 s. "
        "0 = always the full 30 s window.",
        min=0.0,
        max=30.0,
    )
    no_speech_threshold: float = opt(
        0.6, "Drop the text as silence when Whisper's no-speech probability is above this (and the text improbable).",
        min=0.0, max=1.0,
    )
    prompt: str = opt(
        "auto",
        "Words Whisper reads as the text before each utterance, so the home's names win over near-misses ('the Mac "
        "door' heard as 'the back door'): auto = the configured devices and areas, then one sentence of the kinds of "
        "request; \"\" = none; any other text = that text. Costs ~35 ms per decode on a 2-core x86, and about one "
        "decode in six loops on the names and is redone without them (+0.1-0.2 s): docs/benchmarks.md.",
    )
    partial_interval_s: float = opt(
        0.0, "Re-transcribe the audio so far every this many seconds for partial results (costs CPU); 0 = off.",
        min=0.0,
    )


@dataclass(frozen=True)
class VoskSettings:
    model: str = opt("vosk_small_en", "Manifest name (or directory) of a Vosk model.")


@dataclass(frozen=True)
class WyomingSttSettings:
    host: str = opt("127.0.0.1", "Host of a Wyoming speech-to-text server (wyoming-faster-whisper).")
    port: int = opt(10300, "Its TCP port.", min=1, max=65535)
    language: str = opt("en", "Spoken language sent with each request.")
    connect_timeout_s: float = opt(2.0, "Give up connecting after this many seconds.", min=0.1)
    timeout_s: float = opt(5.0, "Give up when the transcript has not arrived this long after the end of speech.",
                           min=0.5)
    retry_max_s: float = opt(15.0, "With stt.fallback, a failed server is probed in the background with a back-off "
                             "doubling from 0.5 s up to this; turns use the local engine until it answers again.",
                             min=0.5)


@dataclass(frozen=True)
class SttSettings:
    engine: str = opt("whisper", "Speech-to-text engine: a registered name (whisper, vosk, or a plug-in's).")
    whisper: WhisperSettings = opt(WhisperSettings(), "faster-whisper settings.")
    vosk: VoskSettings = opt(VoskSettings(), "Vosk settings.")
    wyoming: WyomingSttSettings = opt(WyomingSttSettings(), "Wyoming STT server settings (stt.engine: wyoming).")
    fallback: Literal["none", "whisper", "vosk"] = opt(
        "none", "When the STT server (stt.engine: wyoming) is unreachable, slower than stt.wyoming.timeout_s or "
        "answers garbage: whisper or vosk = transcribe the utterance here with that engine's settings and model "
        "(loaded at start: its memory is paid even while the server answers); none = the turn apologises. Ignored "
        "for a local stt.engine.")
    speculate: Literal["auto", "on", "off"] = opt(
        "auto", "Transcribe the utterance so far at the first pause (batch engines such as whisper), so the transcript "
        "is ready at the endpoint: on; off; auto = on while a decode fits the endpoint's wait for it and the audio "
        "loop keeps up (edge_agent/headroom.py: the last decodes' wall time, the loop's backlog); off on a Pi 4.")


@dataclass(frozen=True)
class OpenAiSettings:
    base_url: str = opt("http://127.0.0.1:8080/v1", "An OpenAI-compatible server's API root (llama.cpp's llama-server, "
                        "python -m llama_cpp.server, Ollama's /v1); https = TLS, checked against the system store.")
    model: str = opt("default", "The model name sent with each request (the server's alias for its model).")
    api_key_env: str | None = opt(None, "Name of an environment variable that holds the API key (never logged).")
    api_key_file: str | None = opt(None, "Path of a file whose first line is the API key (never logged).")
    ca_file: str | None = opt(None, "CA certificate for an https server with its own CA; null = the system store.")
    connect_timeout_s: float = opt(2.0, "Give up connecting to the server after this many seconds.", min=0.1)
    first_token_timeout_s: float = opt(
        6.0, "Give up when the first words (or the JSON) have not arrived after this many seconds: the turn falls "
        "back (llm.fallback) instead of waiting on a slow or hung server.", min=0.5)
    read_timeout_s: float = opt(5.0, "Give up when the stream pauses longer than this between two pieces.", min=0.5)
    json_format: Literal["json_object", "json_schema"] = opt(
        "json_object", "How tool calls are constrained by their JSON schema: json_object = response_format "
        "{type: json_object, schema} (llama-cpp-python, llama-server); json_schema = the OpenAI form (llama-server, "
        "Ollama, vLLM).")
    grammar: bool = opt(True, "Send llama.cpp's `grammar` field for words-only replies; false for servers that "
                        "reject unknown fields (the reply is still cut at any JSON or tool tag).")
    retry_max_s: float = opt(15.0, "After a failure the server is probed in the background with a back-off doubling "
                             "from 0.5 s up to this; turns use the fallback until it answers again.", min=0.5)


@dataclass(frozen=True)
class LlmSettings:
    backend: str = opt("local", "Which LLM backend answers (edge_agent.llm_backend.LLM_BACKENDS): local = llama.cpp "
                       "in process; openai = an OpenAI-compatible server (llm.openai).")
    openai: OpenAiSettings = opt(OpenAiSettings(), "The OpenAI-compatible server (llm.backend: openai).")
    fallback: Literal["none", "local"] = opt(
        "none", "When a remote backend is unreachable, slow or answers garbage: local = answer with llm.model in "
        "process (loaded at start); none = a short spoken apology.")
    model: str = opt("qwen2_5_coder_0_5b", "Manifest name (or path) of a GGUF model: qwen2_5_coder_0_5b, or "
                     "qwen2_5_coder_1_5b (a little more accurate, acts on fewer sentences that are not commands, "
                     "but 2-2.5x slower: docs/benchmarks.md, 'LLM alone').")
    threads: int = opt(
        0,
        "CPU threads for llama.cpp; 0 = all CPUs but one, at least one (the audio loop needs one: on 2 cores, two "
        "llama.cpp threads waiting on each other were measured up to 10x slower; a CPU quota counts).",
        min=0,
        max=64,
    )
    first_threads: int = opt(
        0,
        "CPU threads for llama.cpp while a turn waits for it: a tool call, and a reply's prompt and first sentence "
        "(or first clause of 4 words), when nothing else needs the CPU; then llm.threads again, so the voice has a "
        "core. 0 = both CPUs on a 2-CPU machine (a CPU quota counts; measured there: docs/benchmarks.md), else as "
        "llm.threads; 1 = as llm.threads.",
        min=0,
        max=64,
    )
    n_ctx: int = opt(2048, "Context window in tokens.", min=256, max=32768)
    max_tokens: int = opt(96, "Maximum tokens of one reply.", min=8, max=4096)
    temperature: float = opt(0.2, "Sampling temperature.", min=0.0, max=2.0)
    timeout_s: float = opt(20.0, "Give up on one generation after this many seconds.", min=1.0)
    preempt: bool = opt(
        False,
        "Preemptive generation at the first pause (local model): words the fast path will not take have their "
        "prompt evaluated and the first clause of the answer generated (a device command: its tool-call prompt), "
        "reused by the turn when the final words are the same, dropped when the user goes on; nothing is spoken "
        "early. Off by default: with the early end the transcript is ready only ~0.05 s before the turn starts, "
        "nothing to win (measured: no gain); turn it on with vad.early_end off or a vad.trailing_silence_s of 0.6 s "
        "or more (0.7 s: first audio 1.4 s sooner, median; docs/benchmarks.md).",
    )
    idle_prefill: Literal["auto", "on", "off"] = opt(
        "auto", "Between turns, evaluate the prompt prefix, the history and the next context line (local model), so "
        "the next LLM turn evaluates only its words: on; off; auto = only while this machine has the time for it "
        "(edge_agent/headroom.py), never while it competes with the audio loop on a slow board.")
    system_prompt: str = opt(
        "You are a concise, friendly voice assistant in a home. Answer in one or two short spoken sentences, "
        "no lists or markdown.",
        "Base system prompt.",
    )
    profile: Literal["default", "child_safe"] = opt("default", "Persona/guardrail profile added to the prompt.")
    child_safe_prompt: str = opt(
        "You are talking with a child. Use simple, kind words. Never discuss violence, weapons, drugs, alcohol, "
        "sex, horror or other grown-up topics, never ask for personal details, and never help with anything "
        "dangerous; gently suggest asking a grown-up instead.",
        "Guardrail text added to the system prompt when profile is child_safe.",
    )
    prefix_cache_dir: str | None = opt(
        "state/llm_prefix",
        "Where the evaluated fixed prompt prefix (KV cache) is saved, so a restart skips evaluating it again "
        "(seconds on a Pi); null = do not save.",
    )
    reply_after_tool: bool = opt(
        False,
        "After an LLM tool call runs, let the LLM phrase the reply from the tool's result. Off by default: with "
        "the 0.5B model it costs ~2 s more and sometimes contradicted the facts (an unknown lock state spoken as "
        "'locked'); False = speak the intent handler's own factual sentence at once.",
    )


@dataclass(frozen=True)
class WyomingTtsSettings:
    host: str = opt("127.0.0.1", "Host of a Wyoming text-to-speech server (wyoming-piper).")
    port: int = opt(10200, "Its TCP port.", min=1, max=65535)
    voice: str | None = opt(None, "A voice the server lists (e.g. en_US-joe-medium); null = the server's default.")
    connect_timeout_s: float = opt(1.0, "Give up connecting after this many seconds.", min=0.1)
    timeout_s: float = opt(
        4.0, "Give up on a sentence whose audio has not all arrived this many seconds after it was sent: it is "
        "spoken by tts.fallback instead.", min=0.2)
    retry_max_s: float = opt(15.0, "A failed server is probed in the background with a back-off doubling from 0.5 s "
                             "up to this; sentences go to tts.fallback until it answers again.", min=0.5)


@dataclass(frozen=True)
class TtsSettings:
    engine: str = opt("piper", "Text-to-speech engine: a registered name (piper = the local voice tts.voice; "
                      "wyoming = a Wyoming TTS server, tts.wyoming).")
    voice: str = opt("piper_joe_medium", "Manifest name (or path to .onnx) of a Piper voice.")
    wyoming: WyomingTtsSettings = opt(WyomingTtsSettings(), "Wyoming TTS server settings (tts.engine: wyoming).")
    fallback: Literal["piper", "none"] = opt(
        "piper", "When the TTS server is unreachable, slower than tts.wyoming.timeout_s or sends garbage: piper = "
        "that sentence and the rest of the turn are spoken by the local voice tts.voice (loaded at start; fixed "
        "phrases always come from it); none = no local voice (its memory saved): fixed phrases cached from the "
        "server at start, else a cue tone. Ignored for tts.engine: piper.")
    length_scale: float = opt(1.0, "Speaking rate of the local voice: >1 slower, <1 faster (a Wyoming server speaks at "
                              "its own --length-scale: the protocol carries no rate).", min=0.3, max=3.0)
    volume: float = opt(1.0, "Output gain.", min=0.0, max=4.0)
    threads: int = opt(0, "CPU threads of the local voice (ONNX Runtime); 0 = one under a CPU quota below two CPUs, "
                       "else ONNX Runtime's choice (edge_agent/cpu_share.py).", min=0, max=64)
    sentence_silence_s: float = opt(0.12, "Silence appended after each spoken sentence.", min=0.0, max=2.0)
    first_clause_words: int = opt(
        4, "Speak the first clause of a reply on its own once it has this many words (0 = whole sentences only).",
        min=0, max=50,
    )
    phrases: dict[str, str] = opt(
        {}, "Fixed phrases (key: text) added to or replacing the built-in ones; synthesized once and cached."
    )
    warm_replies: int = opt(
        160,
        "While idle after start, synthesize up to this many fast-path replies into the phrase cache, most likely "
        "first: every configured device's turn-on and turn-off reply that needs no confirmation ('Turned on the desk "
        "lamp.'), today's date, then replies with round values (each light at 50%, 100%, 20% ... brightness, each "
        "cover's position, timers of 5, 10, 1 ... minutes). 60-120 KB each, so a board's first command of a kind is "
        "not synthesized on the critical path; then the time of day for this minute and the next is kept warm "
        "as the clock moves (about one synthesis a minute). 0 = off.",
        min=0, max=1024,
    )
    release_memory: bool = opt(
        True,
        "Give ONNX Runtime's buffers back after each sentence: the voice's memory stays flat (155 MB against 740 MB "
        "after 120 varied sentences, tools/tts_memory.py) for 12-25 % more synthesis CPU; false keeps the arena "
        "(faster, grows with the longest sentence).",
    )
