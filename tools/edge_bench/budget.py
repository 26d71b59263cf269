"""``edge-agent bench --cpu-budget pi5|pi4|CPUS``: the benchmark's engine process under a CPU quota.

The cgroup is created (and its permissions checked, so a missing root or cpu controller fails at once with a fix
line) before the bench set is prepared; the process moves into it before the models are loaded, so that each engine
picks its thread count for the CPU it has (edge_agent/cpu_share.py, as under systemd's ``CPUQuota=``), and every
measured turn, and every process the bench starts afterwards (the real ``edge-agent run``), runs under the quota.
Model load times are therefore the quota's too. The budget is recorded in the
results (``cpu_budget``) and printed in the report's header.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from edge_agent import cpu_budget
from edge_agent.stage_budget import with_stages

ATTR = "_cpu_budget_session"


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cpu-budget", metavar="pi5|pi4|CPUS",
                    help="run the engine under a CPU quota imitating a slower board: pi5 or pi4 (fitted to this "
                         "CPU from a reference Whisper decode; elsewhere "
                         f"{cpu_budget.PI5_CPUS:g} / {cpu_budget.PI4_CPUS:g} CPU), a number of CPUs, or a "
                         "share such as 40%% (needs root; docs/pi-calibration.md)")
    ap.add_argument("--stage-fit", action="store_true",
                    help="with --cpu-budget pi5|pi4: the LLM's threads under a quota of their own, fitted to the "
                         "board's published LLM figures (a Whisper-fitted quota makes the LLM slower than the board's; "
                         "cgroup v1)")


@contextlib.contextmanager
def prepared(args: argparse.Namespace) -> Iterator[cpu_budget.CpuBudget | None]:
    """Create the quota's cgroup (not entered yet: ``start``) for the whole bench; removed at the end."""
    spec = getattr(args, "cpu_budget", None)
    if not spec:
        setattr(args, ATTR, None)
        yield None
        return
    from edge_agent.pi_presets import resolve

    from .run import bench_settings

    cpus, how = resolve(spec, bench_settings(getattr(args, "config", None)))  # a preset: fitted to this CPU
    b = cpu_budget.CpuBudget(cpus, description=how).create()
    setattr(args, ATTR, b)
    try:
        if getattr(args, "stage_fit", False):
            with_stages(b, spec, bench_settings(getattr(args, "config", None)))
        yield b
    finally:
        b.close()


def start(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """Move this process (the engine's) into the quota from now on; record the budget in ``res``."""
    b = getattr(args, ATTR, None)
    if b is None:
        res["cpu_budget"] = None
        return
    b.enter()
    quota, period = b.quota()
    res["cpu_budget"] = {"spec": args.cpu_budget, "cpus": b.cpus, "quota_us": quota, "period_us": period,
                         "cgroup": str(b.dir), "stat_start": b.stat(),
                         "describe": b.description,
                         "stages": {n: {"cpus": s.cpus, "cgroup": str(s.dir), "stat_start": s.stat()}
                                    for n, s in b.stages.items()}}


def header(args: argparse.Namespace, res: dict[str, Any]) -> str:
    """The report's first lines: which CPU budget the figures were measured under."""
    cb = res.get("cpu_budget")
    b = getattr(args, ATTR, None)
    if not cb:
        return (f"**CPU budget: none** (this machine's {cpu_budget.online_cpus()} CPUs, shared with whatever else "
                "runs)\n\n")
    if b is not None and b.dir is not None:
        st0, st1 = cb.get("stat_start", {}), b.stat()
        cb["throttled_periods"] = st1.get("nr_throttled", 0) - st0.get("nr_throttled", 0)
        cb["periods"] = st1.get("nr_periods", 0) - st0.get("nr_periods", 0)
        for name, stage in (b.stages or {}).items():  # --stage-fit: the LLM's own cgroup, throttled apart
            st = cb.get("stages", {}).get(name)
            if st is not None and stage.dir is not None:
                s0, s1 = st.get("stat_start", {}), stage.stat()
                st["throttled_periods"] = s1.get("nr_throttled", 0) - s0.get("nr_throttled", 0)
                st["periods"] = s1.get("nr_periods", 0) - s0.get("nr_periods", 0)
    thr = (f"; throttled in {cb['throttled_periods']} of {cb['periods']} periods" if "periods" in cb else "")
    for name, st in (cb.get("stages") or {}).items():
        if "periods" in st:
            thr += f"; the {name}'s own {st['cpus']:g} CPU throttled in {st['throttled_periods']} of {st['periods']}"
    return (f"**CPU budget: `--cpu-budget {cb['spec']}` = {cb['describe']}**, quota {cb['quota_us']} µs per "
            f"{cb['period_us']} µs from model loading on{thr}. A quota imitates a board's throughput, "
            "not its memory system or SIMD width (docs/pi-calibration.md).\n\n")
