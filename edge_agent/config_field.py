"""``opt``: how every settings field is made: its default (a list, mapping or section copied for each instance), its
help text and optional numeric bounds in the field's metadata, which the loader (``config.py``) checks and
``tools/gen_config.py`` writes into config.yaml. Shared by the schema's modules (``config_schema.py``,
``config_engines.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


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
