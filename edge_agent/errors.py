"""Typed errors with a stable stage code.

Every error a user can cause (bad config, missing model, bad audio, bad MQTT payload, bad LLM output) is an
``EdgeAgentError`` whose message names the problem and the fix. The CLI prints ``error[<code>]: <message>`` and exits
non-zero; the daemon logs it and goes on.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class: a problem with a stage code and a message meant for the user."""

    code = "error"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class ConfigError(EdgeAgentError):
    """The configuration file is missing, unreadable or invalid."""

    code = "config"


class ModelError(EdgeAgentError):
    """A model is unknown, missing, corrupt or could not be fetched."""

    code = "model"


class AudioError(EdgeAgentError):
    """Audio input/output or an audio file is unusable."""

    code = "audio"


class WakeError(EdgeAgentError):
    code = "wake"


class SttError(EdgeAgentError):
    code = "stt"


class LlmError(EdgeAgentError):
    code = "llm"


class ToolError(EdgeAgentError):
    """A tool call was invalid (unknown tool, bad argument, forbidden entity) or failed."""

    code = "tool"


class TtsError(EdgeAgentError):
    code = "tts"


class MqttError(EdgeAgentError):
    code = "mqtt"
