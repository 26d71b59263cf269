"""One stage's engines by name (STT, TTS): each engine's module registers its spec; the built-in modules are imported
on first use, so a new engine is one module plus one line in the stage's list of built-ins."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Generic, TypeVar

from .errors import EdgeAgentError

S = TypeVar("S")


class Registry(Generic[S]):
    """Specs (anything with a ``name``) of one stage, e.g. ``Registry("stt", BUILTIN_STT, SttError)``."""

    def __init__(self, stage: str, builtins: Sequence[str], error: type[EdgeAgentError]) -> None:
        self.stage = stage
        self.builtins = builtins
        self.error = error
        self._specs: dict[str, S] = {}
        self._builtins_loaded = False

    def register(self, spec: S) -> None:
        self._specs[spec.name] = spec  # type: ignore[attr-defined]

    def unregister(self, name: str) -> None:
        """Forget an engine (a test's scripted one, after the test)."""
        self._specs.pop(name, None)

    def all(self) -> dict[str, S]:
        """Every registered engine by name (the built-in ones imported on first use)."""
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self.builtins:
                importlib.import_module(module)
        return dict(self._specs)

    def get(self, name: str) -> S:
        engines = self.all()
        if name not in engines:
            raise self.error(f"unknown {self.stage.upper()} engine {name!r}",
                             fix=f"set {self.stage}.engine to one of: {', '.join(engines)}")
        return engines[name]


__all__ = ["Registry"]
