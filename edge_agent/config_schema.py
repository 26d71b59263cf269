"""The settings schema: one frozen dataclass per component (``SiteSettings`` … ``LogSettings``) and ``Settings``, the
whole. Every field is made with ``opt``: a default, a help text and optional numeric bounds, which the loader
(``config.py``) checks and ``tools/gen_config.py`` writes into config.yaml."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
    """A settings field with a help text and optional numeric bounds."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        proto = default
        return field(default_factory=lambda: _copy(proto), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SiteSettings:
    site_id: str = opt("default", "Identifies this device on MQTT (letters, digits, - and _).")
    name: str = opt("Edge Agent", "Human-readable device name (Home Assistant discovery).")
    area: str = opt("", "The area this device stands in (context for 'turn on the lights').")


@dataclass(frozen=True)
class AudioSettings:
    input_device: str | int | None = opt(None, "Microphone: sounddevice index or name substring; null = default.")
    output_device: str | int | None = opt(None, "Speaker: sounddevice index or name substring; null = default.")
    echo_cancel: bool = opt(
        False,
        "True if the input is an echo-cancelled source (PulseAudio/PipeWire module-echo-cancel): then any speech "
        "may interrupt a reply. False = half-duplex: only the wake/stop word interrupts.",
    )
    block_ms: int = opt(80, "Capture block length in milliseconds.", min=10, max=500)
    input_queue_blocks: int = opt(
        64, "Bounded capture queue length in blocks; the oldest block is dropped (and counted) when full.", min=4
    )


@dataclass(frozen=True)
class WakeModelSettings:
    model: str = opt("hey_jarvis_v2", "Manifest model name (`edge-agent models list`), or a path to a custom model "
                     "file (openWakeWord .onnx; microWakeWord .tflite with its .json manifest beside it). The default, "
                     "microWakeWord's hey_jarvis_v2, had 8.5x fewer false wakes than openWakeWord's hey_jarvis on the "
                     "3-hour negative set (docs/wake.md).")
    threshold: float | None = opt(
        None, "Detection cutoff on the (window-averaged) score; null = the model's own: the probability_cutoff of a "
        "microWakeWord model's manifest, 0.5 for openWakeWord.", min=0.0, max=1.0
    )
    refractory_s: float = opt(2.0, "Ignore further detections of this model for this many seconds.", min=0.0)
    engine: str = opt("auto", "Wake engine that runs this model: openwakeword (.onnx models, e.g. hey_jarvis), "
                      "microwakeword (.tflite models, e.g. hey_jarvis_v2), or auto = the one that runs the model's "
                      "file type.")
    sliding_window: int | None = opt(
        None, "Number of consecutive scores averaged before the cutoff; null = the model's own (sliding_window_size of "
        "a microWakeWord manifest, 1 for openWakeWord).", min=1, max=50
    )
    verifier: str | None = opt(
        None, "Household verifier file written by `edge-agent wake enroll` (JSON): asked only when this model fires, "
        "it drops detections that do not sound like an enrolled member saying the wake phrase; null = none.")
    second_look_band: float | None = opt(
        None, "Second look for doubtful detections: a detection scoring below cutoff + this band opens listening at "
        "once, and the turn is dropped (outcome wake_rejected) unless speech-to-text of the audio up to it says the "
        "wake phrase; a detection at or above cutoff + band is never looked at; 0 = off; null = the model's own from "
        "the manifest (0 for every shipped model and for model files given by path). 0.02 for hey_jarvis_v2 took "
        "the negative set's false accepts from 3.3 to 0 per hour but drops a true wake Whisper misreads "
        "(docs/wake.md has the figures per band).", min=0.0, max=1.0)


@dataclass(frozen=True)
class WakeSettings:
    models: list[WakeModelSettings] = opt(
        [WakeModelSettings()], "Wake word models, several may run at once."
    )
    stop_models: list[WakeModelSettings] = opt(
        [], "Extra stop-word models that only interrupt a reply (never start a turn)."
    )
    feature_model: str = opt("oww_features", "Manifest name of openWakeWord's melspectrogram+embedding models.")
    self_trigger_guard: float = opt(
        0.2,
        "While the assistant speaks without echo cancellation, the threshold is raised by this much to avoid "
        "waking on its own voice.",
        min=0.0,
        max=1.0,
    )


@dataclass(frozen=True)
class VadSettings:
    model: str = opt("silero_vad", "Manifest name of the VAD model (Silero VAD ONNX).")
    threshold: float = opt(0.5, "Speech probability threshold.", min=0.0, max=1.0)
    pre_roll_s: float = opt(0.5, "Audio kept from before the wake word ended, so early speech is not lost.", min=0.0)
    min_speech_s: float = opt(0.15, "Voiced audio needed before an utterance counts as speech.", min=0.0)
    trailing_silence_s: float = opt(0.4, "Silence after speech that ends the turn.", min=0.1, max=3.0)
    early_end: bool = opt(
        True, "The words at the first pause set the silence that ends the turn: a complete device command ends "
        "after 0.15 s (and speech resuming soon after continues it), a command that may go on waits 0.8-1.2 s "
        "(edge_agent/ending.py).")
    max_utterance_s: float = opt(12.0, "Hard cap on one utterance.", min=1.0, max=120.0)
    no_speech_timeout_s: float = opt(
        5.0, "Return to idle (with a cue) if no speech starts within this time after the wake word.", min=0.5
    )


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
        "not synthesized on the critical path. 0 = off.",
        min=0, max=1024,
    )
    release_memory: bool = opt(
        True,
        "Give ONNX Runtime's buffers back after each sentence: the voice's memory stays flat (155 MB against 740 MB "
        "after 120 varied sentences, tools/tts_memory.py) for 12-25 % more synthesis CPU; false keeps the arena "
        "(faster, grows with the longest sentence).",
    )


@dataclass(frozen=True)
class ConversationSettings:
    max_turns: int = opt(6, "Turns of history kept.", min=0, max=100)
    max_history_tokens: int = opt(600, "History token budget (oldest turns dropped first).", min=0)
    expire_s: float = opt(300.0, "History is forgotten after this idle time.", min=0.0)
    follow_up_s: float = opt(4.0, "After a reply, listen this long for a follow-up without the wake word.", min=0.0)
    timers_file: str | None = opt(
        "state/timers.json",
        "Running timers are saved here and come back after a restart or power cut (live mode only); null = not kept.",
    )


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = opt(True, "Connect to an MQTT broker.")
    host: str = opt("127.0.0.1", "Broker host.")
    port: int = opt(1883, "Broker port.", min=1, max=65535)
    username: str | None = opt(None, "Username, or null.")
    password: str | None = opt(None, "Password inline (prefer password_env or password_file).")
    password_env: str | None = opt(None, "Name of an environment variable that holds the password.")
    password_file: str | None = opt(None, "Path of a file whose first line is the password.")
    tls: bool = opt(False, "Use TLS.")
    ca_file: str | None = opt(None, "CA certificate for TLS, or null for the system store.")
    topic_prefix: str = opt("edge-agent", "Topic prefix: <prefix>/<site_id>/...")
    qos: int = opt(1, "QoS for published messages.", min=0, max=2)
    keepalive_s: int = opt(30, "MQTT keepalive.", min=5, max=3600)
    discovery: bool = opt(True, "Publish Home Assistant MQTT discovery.")
    discovery_prefix: str = opt("homeassistant", "Home Assistant discovery prefix.")
    hermes: bool = opt(False, "Mirror events on Rhasspy/Hermes topics.")
    outbox_dir: str = opt("state/outbox", "Where undelivered messages are kept on disk, in order.")
    dry_run: bool = opt(False, "Publish intents but no device commands.")
    client_id: str | None = opt(None, "MQTT client id; null = edge-agent-<site_id>.")
    protocol: Literal["3.1.1", "5"] = opt("3.1.1", "MQTT protocol version.")
    reconnect_min_s: float = opt(0.5, "First reconnect delay after losing the broker (doubles per failure).", min=0.05)
    reconnect_max_s: float = opt(5.0, "Longest reconnect delay (also the worst-case delay after the broker returns).",
                                 min=0.1, max=3600)
    connect_timeout_s: float = opt(5.0, "Give up on one connection attempt after this many seconds.", min=0.5)
    inflight_window: int = opt(10, "Messages sent ahead of their acknowledgement (kept in order).", min=1, max=100)
    outbox_max_messages: int = opt(
        1000, "Undelivered messages kept; beyond it the oldest state updates are dropped (counted), then intents.",
        min=10)
    outbox_max_bytes: int = opt(4_000_000, "Undelivered bytes kept, same dropping rule.", min=10_000)
    max_inbound_bytes: int = opt(16384, "Inbound payloads larger than this are ignored (logged).", min=64)
    arbitration_window_s: float = opt(
        0.15, "Several devices hearing one wake word: wait this long for the others' scores; 0 = no arbitration.",
        min=0.0, max=2.0)

    def __repr__(self) -> str:
        """Like the dataclass repr, with the inline password masked so it never reaches a log."""
        parts = [f"{f.name}={'***' if f.name == 'password' and self.password else repr(getattr(self, f.name))}"
                 for f in dataclasses.fields(self)]
        return f"MqttSettings({', '.join(parts)})"


@dataclass(frozen=True)
class HomeSettings:
    file: str | None = opt(None, "A YAML file of areas and entities (shaped like Home Assistant's test fixtures).")
    areas: list[dict[str, Any]] = opt([], "Areas: [{id, name, aliases}].")
    entities: list[dict[str, Any]] = opt([], "Entities: [{id: light.kitchen, name, aliases, area, mqtt, ...}].")
    sensitive_domains: list[str] = opt(
        ["lock", "alarm_control_panel", "cover.garage", "cover.garage_door"],
        "Domains (or domain.device_class) that need a spoken yes.",
    )
    rate_limit_per_min: int = opt(10, "Maximum commands per entity per minute.", min=1)
    mqtt_preset: Literal["zigbee2mqtt", "tasmota", "generic"] = opt(
        "generic", "Command mapping for entities without their own mqtt.preset."
    )
    generic_topic: str = opt(
        "edge-agent/{site_id}/command/{entity_id}",
        "Topic template of the generic JSON preset ({site_id}, {entity_id}, {domain}, {object_id}, {device}).",
    )
    temperature_unit: Literal["C", "F"] = opt("C", "Unit of thermostat temperatures (sets the allowed range).")


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = opt("info", "Log level.")
    turn_log: str | None = opt("state/turns.jsonl", "File that gets one JSON line per turn; null = none.")
    turn_log_stdout: bool = opt(False, "Also print each turn's JSON line to stdout.")
    debug_audio_dir: str | None = opt(None, "If set, save what the wake word and STT heard as WAV files here.")


@dataclass(frozen=True)
class Settings:
    models_dir: str = opt("models", "Where model files live (relative to the repository root or absolute).")
    site: SiteSettings = opt(SiteSettings(), "This device.")
    audio: AudioSettings = opt(AudioSettings(), "Audio devices.")
    wake: WakeSettings = opt(WakeSettings(), "Wake word.")
    vad: VadSettings = opt(VadSettings(), "Voice activity detection and endpointing.")
    stt: SttSettings = opt(SttSettings(), "Speech-to-text.")
    llm: LlmSettings = opt(LlmSettings(), "Language model.")
    tts: TtsSettings = opt(TtsSettings(), "Text-to-speech.")
    conversation: ConversationSettings = opt(ConversationSettings(), "Conversation memory and follow-ups.")
    mqtt: MqttSettings = opt(MqttSettings(), "MQTT broker.")
    home: HomeSettings = opt(HomeSettings(), "Areas, entities and safety limits.")
    log: LogSettings = opt(LogSettings(), "Logging.")

    # ------------------------------------------------------------------ helpers
    def path(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a path from config: absolute as is, relative to the repository root otherwise."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (REPO_ROOT / p)

    @property
    def models_path(self) -> Path:
        return self.path(self.models_dir)


__all__ = [
    "REPO_ROOT",
    "opt",
    "SiteSettings",
    "AudioSettings",
    "WakeModelSettings",
    "WakeSettings",
    "VadSettings",
    "WhisperSettings",
    "VoskSettings",
    "WyomingSttSettings",
    "SttSettings",
    "OpenAiSettings",
    "LlmSettings",
    "WyomingTtsSettings",
    "TtsSettings",
    "ConversationSettings",
    "MqttSettings",
    "HomeSettings",
    "LogSettings",
    "Settings",
]
