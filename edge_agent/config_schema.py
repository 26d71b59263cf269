"""The settings schema: one frozen dataclass per component (``SiteSettings`` … ``LogSettings``; the engines' sections,
``stt``, ``llm`` and ``tts``, are in ``config_engines.py``) and ``Settings``, the whole. Every field is made with
``opt`` (``config_field.py``): a default, a help text and optional numeric bounds, which the loader (``config.py``)
checks and ``tools/gen_config.py`` writes into config.yaml."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config_engines import LlmSettings, SttSettings, TtsSettings
from .config_field import opt

REPO_ROOT = Path(__file__).resolve().parent.parent


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
        "the manifest (0.02 for hey_jarvis_v2, the default: it took the negative set's false accepts from 3.3 to 0 "
        "per hour and drops about 1 % of true wakes, those Whisper misreads; 0 for the other shipped models and for "
        "model files given by path; docs/wake.md has the figures per band).", min=0.0, max=1.0)


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
    "SiteSettings",
    "AudioSettings",
    "WakeModelSettings",
    "WakeSettings",
    "VadSettings",
    "ConversationSettings",
    "MqttSettings",
    "HomeSettings",
    "LogSettings",
    "Settings",
]
