"""The package's shape, checked: small modules, a pure turn controller, no benchmark in the runtime package.

These guard what the redesign set out to keep (docs/architecture.md): a module over the limit is split along a
concern (a base class of its own, like ``engine_audio.AudioLane``, or a module of its own), not trimmed of its
comments; the controller and its vocabulary import nothing that runs on or waits for a thread.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edge_agent"
MAX_LINES = 430  # "no module over about 400 lines"
PURE = ("controller.py", "turn_events.py", "ending.py", "headroom.py", "claims.py")
IMPURE_IMPORTS = {"threading", "queue", "time", "socket", "subprocess", "sounddevice", "numpy", "paho"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_is_found() -> None:
    names = {p.name for p in _modules()}
    assert {"engine.py", "controller.py", "turn_events.py"} <= names


def test_no_module_is_over_the_limit() -> None:
    long = {p.name: n for p in _modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines, split each along a concern: {long}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_pure_rules_import_nothing_that_waits() -> None:
    bad = {name: sorted(_imports(PACKAGE / name) & IMPURE_IMPORTS) for name in PURE}
    assert not any(bad.values()), f"pure modules importing threads, clocks, sockets or audio: {bad}"


def test_the_benchmark_is_not_in_the_runtime_package() -> None:
    assert not (PACKAGE / "bench").exists() and not list(PACKAGE.glob("bench*.py"))
