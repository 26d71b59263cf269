"""A stage's own CPU quota: the LLM's threads under a quota fitted to the LLM, beside the process's quota.

One quota for the whole process, fitted on Whisper, makes a simulated board's LLM slower than the board's own: this
machine's lead over a Pi's Arm cores is larger for Whisper's int8 GEMMs than for llama.cpp (docs/pi-calibration.md,
"Limits"). With a stage quota (``edge-agent bench --cpu-budget pi5 --stage-fit``), ``CpuBudget.stage("llm", cpus)``
makes a sibling cgroup with the quota fitted to the LLM's own published figure (``pi_presets.llm_presets``), and
``ENV_STAGES`` names it to the process and its children. While a thread works in llama.cpp (``Llm._held``, the
prefix's evaluation) it sits in that cgroup (``inside``); the threads llama.cpp starts from it (OpenMP's workers)
are created there and stay there. The stage's thread count is its quota's (``stage_threads``), not the process's.

cgroup v1 only: a v1 cgroup takes single threads (its ``tasks`` file). cgroup v2 would need a threaded subtree;
``CpuBudget.stage`` says so with a fix line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cpu_budget import CpuBudget

log = logging.getLogger(__name__)

ENV_STAGES = "EDGE_AGENT_STAGE_CGROUPS"  # "home=DIR;llm=DIR": the process's budget cgroup and each stage's
HOME = "home"
_warned: set[str] = set()


def format_stages(home: Path, stages: Mapping[str, Path]) -> str:
    return ";".join([f"{HOME}={home}"] + [f"{name}={d}" for name, d in stages.items()])


def parse_stages(text: str | None) -> dict[str, Path]:
    """``home=DIR;llm=DIR`` → {name: dir}; empty or malformed parts are skipped (nothing to move then)."""
    out: dict[str, Path] = {}
    for part in (text or "").split(";"):
        name, sep, d = part.partition("=")
        if sep and name.strip() and d.strip():
            out[name.strip()] = Path(d.strip())
    return out


def stage_dirs(environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    return parse_stages((os.environ if environ is None else environ).get(ENV_STAGES))


def stage_cpus(name: str, environ: Mapping[str, str] | None = None) -> float | None:
    """The quota (CPUs) of stage ``name``, or None when it has no quota of its own."""
    from .cpu_share import quota_of

    d = stage_dirs(environ).get(name)
    return None if d is None else quota_of(d, 1)


def stage_threads(cpus: float) -> int:
    """Threads for a stage with its own quota: as many as the quota can keep busy (0.6 → 1, 1.3 → 2)."""
    return max(1, math.ceil(cpus - 0.05))


@contextlib.contextmanager
def inside(name: str) -> Iterator[bool]:
    """Run the block with this thread in stage ``name``'s cgroup (yields True), then back in the process's; without
    a stage quota, or if the move fails (logged once), the block runs where it is (yields False)."""
    dirs = stage_dirs()
    d, home = dirs.get(name), dirs.get(HOME)
    if d is None or home is None:
        yield False
        return
    tid = threading.get_native_id()
    try:
        (d / "tasks").write_text(str(tid))
    except OSError as e:
        if name not in _warned:
            _warned.add(name)
            log.warning("stage budget: cannot move a thread into %s (%s); the %s runs under the process's quota",
                        d, e, name)
        yield False
        return
    try:
        yield True
    finally:
        # the thread that entered goes back, even if another thread closes the block (a generator's close)
        with contextlib.suppress(OSError):
            (home / "tasks").write_text(str(tid))


def with_stages(b: CpuBudget, spec: str | float, settings: Any) -> CpuBudget:
    """The LLM's own quota beside ``b`` (``--stage-fit``): only for a preset, whose board has LLM figures."""
    from .cpu_budget import PRESETS, CpuBudgetError

    name = str(spec).strip().lower()
    if name not in PRESETS or settings is None:
        raise CpuBudgetError(f"--stage-fit needs a board preset ({', '.join(PRESETS)}), not --cpu-budget {spec!r}",
                             fix="use --cpu-budget pi5 or pi4 with --stage-fit")
    from .pi_presets import llm_presets

    llm = llm_presets(settings)
    b.stage("llm", llm.cpus[name])
    b.description += f"; {llm.describe(name)}"
    log.info("cpu budget: %s", llm.describe(name))
    return b


__all__ = ["ENV_STAGES", "format_stages", "inside", "parse_stages", "stage_cpus", "stage_dirs", "stage_threads",
           "with_stages"]
