"""Typed settings, one frozen dataclass per component, loaded from YAML and validated at load.

The settings dataclasses are in ``config_schema.py`` (the whole, and the device's sections) and ``config_engines.py``
(the STT, LLM and TTS engines' sections), each field made by ``config_field.opt``; all are re-exported here. This
module loads and validates them.

Every field carries a docstring-like ``help`` and, where it matters, bounds or allowed choices in its metadata. The
loader walks the dataclasses: an unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the
key's path (``stt.whisper.beam_size``), what was wrong, and what is allowed. Components receive their own section and
never read global config.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_engines import (  # noqa: F401 - re-exported: callers import the settings from here
    LlmSettings,
    OpenAiSettings,
    SttSettings,
    TtsSettings,
    VoskSettings,
    WhisperSettings,
    WyomingSttSettings,
    WyomingTtsSettings,
)
from .config_field import opt  # noqa: F401 - re-exported
from .config_schema import (  # noqa: F401 - re-exported: callers import the settings from here
    REPO_ROOT,
    AudioSettings,
    ConversationSettings,
    HomeSettings,
    LogSettings,
    MqttSettings,
    Settings,
    SiteSettings,
    VadSettings,
    WakeModelSettings,
    WakeSettings,
)
from .errors import ConfigError

# --------------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: got {value!r}; allowed: {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {value!r}")
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported setting type {tp!r}")  # pragma: no cover - programming error


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}; allowed keys here: {', '.join(fields)}")
        f = fields[key]
        converted = _convert(value, hints[key], path)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            if (lo is not None and converted < lo) or (hi is not None and converted > hi):
                rng = f"{'-inf' if lo is None else lo} .. {'inf' if hi is None else hi}"
                raise ConfigError(f"{path}: {converted!r} is out of range; allowed: {rng}")
        kwargs[key] = converted
    return cls(**kwargs)


def _validate_semantics(s: Settings) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", s.site.site_id):
        raise ConfigError(f"site.site_id: {s.site.site_id!r} has characters not allowed in MQTT topics; use letters, "
                          "digits, - and _")
    if not s.wake.models:
        raise ConfigError("wake.models: at least one wake word model is needed")
    from .wake import ENGINES

    for key in ("models", "stop_models"):
        for i, m in enumerate(getattr(s.wake, key)):
            if m.engine != "auto" and m.engine not in ENGINES:
                raise ConfigError(f"wake.{key}[{i}].engine: {m.engine!r} is not a wake engine; allowed: auto, "
                                  f"{', '.join(sorted(ENGINES))}")
    from .stt import stt_engines  # the engines register themselves; imported here, not at the top (no cycle)

    if s.stt.engine not in stt_engines():
        raise ConfigError(f"stt.engine: got {s.stt.engine!r}; allowed: "
                          f"{', '.join(repr(n) for n in sorted(stt_engines()))}")
    from .tts import tts_engines

    if s.tts.engine not in tts_engines():
        raise ConfigError(f"tts.engine: got {s.tts.engine!r}; allowed: "
                          f"{', '.join(repr(n) for n in sorted(tts_engines()))}")
    if s.mqtt.username is None and any((s.mqtt.password, s.mqtt.password_env, s.mqtt.password_file)):
        raise ConfigError("mqtt.password: a password is set but mqtt.username is null; set mqtt.username")
    if sum(x is not None for x in (s.mqtt.password, s.mqtt.password_env, s.mqtt.password_file)) > 1:
        raise ConfigError("mqtt: set only one of password, password_env, password_file")


def load_settings(path: str | os.PathLike[str] | None = None, *, data: dict[str, Any] | None = None) -> Settings:
    """Load and validate settings from a YAML file (or an already-parsed mapping)."""
    src = "<defaults>"
    if data is None and path is not None:
        src = str(path)
        p = Path(path)
        try:
            if not p.is_file():
                raise ConfigError(f"{src}: config file not found", fix="pass an existing file, e.g. config.yaml")
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{src}: not valid YAML: {e}") from None
        except OSError as e:  # e.g. the service's /etc/edge-agent/config.yaml (0640 root:edge-agent) as another user
            raise ConfigError(f"{src}: cannot read: {e.strerror}",
                              fix="run as root or the service user (sudo -u edge-agent ...), or fix its permissions"
                              ) from None
        if data is None:
            data = {}
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        settings = _build(Settings, data, "")
        _validate_semantics(settings)
    except ConfigError as e:
        raise ConfigError(f"{src}: {e.message}", fix=e.fix) from None
    return settings


def mqtt_password(m: MqttSettings) -> str | None:
    """The MQTT password from inline config, an environment variable or a file (never logged)."""
    if m.password is not None:
        return m.password
    if m.password_env is not None:
        value = os.environ.get(m.password_env)
        if value is None:
            raise ConfigError(f"mqtt.password_env: environment variable {m.password_env} is not set",
                              fix=f"export {m.password_env}=... or use mqtt.password_file")
        return value
    if m.password_file is not None:
        p = Path(m.password_file).expanduser()
        try:
            return p.read_text(encoding="utf-8").splitlines()[0].strip() if p.stat().st_size else ""
        except OSError as e:
            raise ConfigError(f"mqtt.password_file: cannot read {p}: {e.strerror}") from None
    return None


def iter_fields(cls: type = Settings, prefix: str = "") -> typing.Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Yield (dotted path, field, type) for every leaf setting: used to keep config.yaml's documentation complete."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, path)
        else:
            yield path, f, tp
