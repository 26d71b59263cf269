"""Run work under a CPU quota (the Linux cgroup ``cpu`` controller) to imitate a slower board's throughput.

``edge-agent bench --cpu-budget pi5|pi4|CPUS`` and ``edge-agent run --cpu-budget ...`` move their own process into a
child cgroup whose quota is ``CPUS`` core-equivalents (``0.25`` = a quarter of one core, ``1.5`` = one and a half
cores; ``50%`` = half of this machine's online CPUs); ``CpuBudget.run(cmd)`` starts a command inside it. cgroup v2
(``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) both work; the hierarchy is found from
``/proc/self/mountinfo`` and the process's own cgroup from ``/proc/self/cgroup`` (cgroup_hierarchy.py). The child
cgroup is removed again when the budget is closed (and the process moved back where it was).

A quota imitates throughput only: a board with a slower memory system, smaller caches or narrower SIMD is not
modelled (docs/pi-calibration.md says which stages that over- or under-states). ``pi5`` and ``pi4`` are fitted to
the machine by ``pi_presets`` (its reference decode's CPU work against the published Pi times); the fixed fractions
here, from ``tools/calibrate_pi.py`` on a 2-core Intel Xeon, are its fallback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cgroup_hierarchy import (  # noqa: F401 - re-exported: callers use the cgroup lookup from here
    CpuHierarchy,
    Mount,
    cgroup_dir,
    find_cpu_hierarchy,
    parse_mountinfo,
    parse_proc_cgroup,
)
from .cpu_share import online_cpus
from .errors import EdgeAgentError
from .stage_budget import ENV_STAGES, format_stages

log = logging.getLogger(__name__)

# Fitted by tools/calibrate_pi.py on this project's own workloads (docs/pi-calibration.md, "Fit", 2026-11-29, on a
# 2-core Intel Xeon): the CPU quota, in core-equivalents of this machine, at which faster-whisper tiny.en int8 (30 s
# window) takes the published time per utterance: Pi 5 1.26-1.70 s (midpoint 1.48 s) -> 0.38 CPU (range 0.33-0.45),
# Pi 4 3.42 s -> 0.17 CPU. Quiet-machine fits (CPU seconds of the decode / published time; the timed curve agrees
# within 2-15 % where the shared machine had room, at 0.1-0.2 CPU). The other stages disagree: the LLM would need
# ~1.4-1.7 CPU for a Pi 5 (so these presets overstate LLM time on a Pi 5 about 4x), Piper ~0.09-0.12 CPU for a Pi 4.
PI5_CPUS = 0.38
PI4_CPUS = 0.17
PRESETS = {"pi5": PI5_CPUS, "pi4": PI4_CPUS}
# CFS period: short, so a throttled process runs in many small slices (a uniformly slower CPU) instead of running
# at full speed for most of a 100 ms period and then stopping dead for the rest of it.
DEFAULT_PERIOD_US = 10_000
MIN_PERIOD_US = 1_000  # the kernel's minimum cfs period / quota
MAX_PERIOD_US = 1_000_000
ENV_ACTIVE = "EDGE_AGENT_CPU_BUDGET"  # set in a process (and its children) that already runs under a budget


class CpuBudgetError(EdgeAgentError):
    """A CPU quota cannot be set here (not root, no cpu controller, read-only cgroupfs, bad value)."""

    code = "cpu_budget"


# =================================================================================================== pure parts


def parse_budget(text: str | float, ncpus: int | None = None) -> float:
    """``pi5`` / ``pi4`` (the fitted presets), a number of core-equivalents (``0.75``), or a share of this machine's
    CPUs (``50%``) → core-equivalents. Raises CpuBudgetError for anything else, or for a budget above the machine."""
    ncpus = ncpus or online_cpus()
    raw = str(text).strip().lower()
    if raw in PRESETS:
        cpus = PRESETS[raw]
    else:
        try:
            cpus = float(raw[:-1]) / 100.0 * ncpus if raw.endswith("%") else float(raw)
        except ValueError:
            raise CpuBudgetError(f"--cpu-budget {text!r} is neither a preset nor a number",
                                 fix=f"use one of {', '.join(PRESETS)}, a number of CPUs such as 0.5, or a share "
                                     "of this machine's CPUs such as 40%") from None
    if not cpus > 0:
        raise CpuBudgetError(f"--cpu-budget {text!r}: the budget must be above 0 CPUs", fix="use e.g. 0.5")
    if cpus > ncpus + 1e-9:
        raise CpuBudgetError(f"--cpu-budget {text!r} = {cpus:g} CPUs, but this machine has only {ncpus}: a quota "
                             "cannot make it faster", fix=f"use at most {ncpus}")
    return cpus


def quota_for(cpus: float, period_us: int = DEFAULT_PERIOD_US) -> tuple[int, int]:
    """(quota_us, period_us) for ``cpus`` core-equivalents. The period is lengthened when the quota would fall
    under the kernel's 1 ms minimum (a tiny budget), so the ratio stays exact."""
    if not cpus > 0:
        raise CpuBudgetError(f"a CPU budget must be above 0 (got {cpus})", fix="use e.g. 0.5")
    period = int(period_us)
    if not MIN_PERIOD_US <= period <= MAX_PERIOD_US:
        raise CpuBudgetError(f"cfs period {period} µs is outside {MIN_PERIOD_US}-{MAX_PERIOD_US}",
                             fix="use the default period")
    if cpus * period < MIN_PERIOD_US:
        period = min(MAX_PERIOD_US, int(-(-MIN_PERIOD_US // cpus)))
    quota = max(MIN_PERIOD_US, round(cpus * period))
    return quota, period


def describe(cpus: float, ncpus: int | None = None) -> str:
    """One line for a report header, e.g. ``0.75 CPU (pi5 preset) of 2, cgroup quota``."""
    ncpus = ncpus or online_cpus()
    names = [n for n, v in PRESETS.items() if abs(v - cpus) < 1e-9]
    preset = f" = {names[0]} preset" if names else ""
    return f"{cpus:g} CPU{preset} (cgroup cpu quota; this machine has {ncpus} CPUs)"


def fit_quota(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The quota (CPUs) at which a measured figure reaches ``target``, from ``(cpus, figure)`` points measured
    under several quotas (a time that falls, or a rate that rises, with the quota). Interpolated linearly in
    log-log between the two points that bracket the target (a pure throughput stage is a straight line there:
    time ∝ 1/cpus); None when the target lies outside the measured range."""
    pts = sorted((q, v) for q, v in points if q > 0 and v is not None and v > 0)
    if len(pts) < 2 or not target > 0:
        return None
    for (q0, v0), (q1, v1) in zip(pts[:-1], pts[1:], strict=True):
        lo, hi = min(v0, v1), max(v0, v1)
        if lo <= target <= hi:
            if v0 == v1:
                return q0
            f = (math.log(target) - math.log(v0)) / (math.log(v1) - math.log(v0))
            return math.exp(math.log(q0) + f * (math.log(q1) - math.log(q0)))
    return None


# =================================================================================================== the cgroup


def _fix_line(version: int) -> str:
    if version == 2:
        return ("run as root (sudo), or from a cgroup where the cpu controller is delegated, e.g. `systemd-run "
                "--user --scope -p Delegate=yes ...`")
    return "run as root (sudo)"


class CpuBudget:
    """A child cgroup with a CPU quota. ``enter()`` moves this process (all its threads, and children started
    later) into it; ``run(cmd)`` starts a command in it; ``set(cpus)`` changes the quota; ``close()`` moves this
    process back and removes the cgroup. Use as a context manager."""

    def __init__(self, cpus: float, *, period_us: int = DEFAULT_PERIOD_US, name: str | None = None,
                 hierarchy: CpuHierarchy | None = None, description: str | None = None) -> None:
        self.cpus = float(cpus)
        self.description = description or describe(self.cpus)  # for reports: what the budget imitates
        self.period_us = period_us
        self.name = name or f"edge-agent-budget-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        self.hierarchy = hierarchy
        self.dir: Path | None = None
        self._entered_from: Path | None = None
        self.stages: dict[str, CpuBudget] = {}  # a stage's own quota, beside this one (``stage``)

    # ------------------------------------------------------------------ setup
    def create(self) -> CpuBudget:
        if self.dir is not None:
            return self
        h = self.hierarchy or self._find()
        self.hierarchy = h
        parent = h.own_dir
        if h.version == 2:
            parent = self._v2_parent(h)
        path = parent / self.name
        try:
            path.mkdir()
        except PermissionError:
            raise CpuBudgetError(f"cannot create the cgroup {path}: permission denied (running as uid {os.getuid()})",
                                 fix=_fix_line(h.version)) from None
        except OSError as e:
            if e.errno == errno.EROFS:
                raise CpuBudgetError(f"the cgroup filesystem {h.mount.mountpoint} is mounted read-only (as in most "
                                     "containers)", fix="run on the host, or start the container with a writable "
                                     "cgroupfs (docker run --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw, or "
                                     "--privileged)") from None
            raise CpuBudgetError(f"cannot create the cgroup {path}: {e}", fix=_fix_line(h.version)) from None
        self.dir = path
        try:
            self.set(self.cpus)
        except BaseException:
            self._rmdir()
            raise
        log.info("cpu budget: %s in %s", describe(self.cpus), path)
        return self

    def _find(self) -> CpuHierarchy:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError as e:
            raise CpuBudgetError(f"cannot read /proc/self/mountinfo or /proc/self/cgroup ({e}): not Linux?",
                                 fix="a CPU budget needs Linux cgroups") from None
        h = find_cpu_hierarchy(mountinfo, proc_cgroup)
        if h is None:
            raise CpuBudgetError("no cgroup hierarchy with the cpu controller is mounted (neither a v1 `cgroup` "
                                 "mount with `cpu` nor a v2 `cgroup2` mount listing cpu in cgroup.controllers)",
                                 fix="mount it: `mount -t cgroup -o cpu none /sys/fs/cgroup/cpu` (v1) or enable cpu "
                                     "in the v2 tree (`echo +cpu > /sys/fs/cgroup/cgroup.subtree_control`)")
        if h.mount.read_only:
            raise CpuBudgetError(f"the cgroup filesystem {h.mount.mountpoint} is mounted read-only",
                                 fix="run on the host, or give the container a writable cgroupfs (--privileged)")
        if not h.own_dir.is_dir():
            raise CpuBudgetError(f"this process's cgroup directory {h.own_dir} does not exist in the mount "
                                 f"{h.mount.mountpoint} (another cgroup namespace?)",
                                 fix="run in the host's cgroup namespace (docker run --cgroupns=host)")
        return h

    @staticmethod
    def _v2_parent(h: CpuHierarchy) -> Path:
        """v2: a child gets cpu.max only if its parent delegates cpu (cgroup.subtree_control). A cgroup that holds
        processes cannot delegate (the no-internal-process rule) unless it is the root, so fall back to a sibling."""
        own = h.own_dir
        for cand in (own, own.parent):
            ctl = cand / "cgroup.subtree_control"
            try:
                if "cpu" in ctl.read_text().split():
                    return cand
            except OSError:
                continue
            if cand == own:
                with contextlib.suppress(OSError):
                    ctl.write_text("+cpu")
                    return cand
        raise CpuBudgetError(f"the cpu controller is not delegated to {own} or its parent (cgroup.subtree_control)",
                             fix=_fix_line(2))

    # ------------------------------------------------------------------ quota
    def set(self, cpus: float) -> None:
        """Change the quota (takes effect at once, also for processes already inside)."""
        if self.dir is None:
            raise CpuBudgetError("the CPU budget cgroup is not created", fix="call create() first")
        quota, period = quota_for(cpus, self.period_us)
        try:
            if self.hierarchy and self.hierarchy.version == 2:
                (self.dir / "cpu.max").write_text(f"{quota} {period}")
            else:
                # v1 checks quota against the current period: with a shorter new period, set the quota to "no
                # limit" first so neither write is refused as out of range.
                (self.dir / "cpu.cfs_quota_us").write_text("-1")
                (self.dir / "cpu.cfs_period_us").write_text(str(period))
                (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
        except PermissionError:
            raise CpuBudgetError(f"cannot write the quota in {self.dir}: permission denied",
                                 fix=_fix_line(self.hierarchy.version if self.hierarchy else 1)) from None
        except OSError as e:
            raise CpuBudgetError(f"cannot write the quota {quota}/{period} µs in {self.dir}: {e}",
                                 fix="check the kernel has CFS bandwidth control (CONFIG_CFS_BANDWIDTH)") from None
        self.cpus = cpus

    def quota(self) -> tuple[int, int]:
        """(quota_us, period_us) as the kernel has them (quota -1 = unlimited)."""
        assert self.dir is not None
        if self.hierarchy and self.hierarchy.version == 2:
            q, p = (self.dir / "cpu.max").read_text().split()
            return (-1 if q == "max" else int(q)), int(p)
        return (int((self.dir / "cpu.cfs_quota_us").read_text()), int((self.dir / "cpu.cfs_period_us").read_text()))

    def stat(self) -> dict[str, int]:
        """The cgroup's cpu.stat (periods, throttled periods, throttled time)."""
        assert self.dir is not None
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.dir / "cpu.stat").read_text().splitlines():
                k, _, v = line.partition(" ")
                if v.strip().lstrip("-").isdigit():
                    out[k] = int(v)
        return out

    def stage(self, name: str, cpus: float) -> CpuBudget:
        """A sibling cgroup with ``cpus`` for one stage's threads (``stage_budget.inside``), named to this process
        and its children from ``enter``/``run`` on (``stage_budget.ENV_STAGES``); removed by ``close``."""
        self.create()
        assert self.hierarchy is not None and self.dir is not None
        if self.hierarchy.version != 1:
            raise CpuBudgetError("a stage's own CPU quota moves single threads, which cgroup v2 allows only in a "
                                 "threaded subtree (not built)", fix="run without --stage-fit (one quota for the "
                                 "whole process), or on a host with the cgroup v1 cpu controller")
        if name in self.stages:
            self.stages[name].set(cpus)
        else:
            self.stages[name] = CpuBudget(cpus, period_us=self.period_us, name=f"{self.name}-{name}",
                                          hierarchy=self.hierarchy).create()
        return self.stages[name]

    def _env(self) -> str | None:
        if not self.stages or self.dir is None:
            return None
        return format_stages(self.dir, {n: b.dir for n, b in self.stages.items() if b.dir is not None})

    # ------------------------------------------------------------------ processes
    def _procs(self, d: Path) -> Path:
        return d / "cgroup.procs"

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup."""
        self.create()
        assert self.dir is not None
        try:
            self._procs(self.dir).write_text(str(pid))
        except OSError as e:
            raise CpuBudgetError(f"cannot move process {pid} into {self.dir}: {e}",
                                 fix=_fix_line(self.hierarchy.version if self.hierarchy else 1)) from None

    def enter(self) -> CpuBudget:
        """Move this process into the cgroup (threads started later inherit it); ``ENV_ACTIVE`` tells children."""
        self.create()
        assert self.hierarchy is not None
        self._entered_from = self.hierarchy.own_dir
        self.add(os.getpid())
        os.environ[ENV_ACTIVE] = f"{self.cpus:g}"
        if (stages := self._env()) is not None:
            os.environ[ENV_STAGES] = stages
        return self

    def run(self, cmd: Sequence[str], *, timeout: float | None = None, **popen: Any) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the cgroup from its first instruction (it moves itself in before exec)."""
        self.create()
        assert self.dir is not None
        procs = str(self._procs(self.dir))

        def move_self() -> None:  # runs in the child between fork and exec
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        env = dict(popen.pop("env", None) or os.environ)
        env[ENV_ACTIVE] = f"{self.cpus:g}"
        if (stages := self._env()) is not None:
            env[ENV_STAGES] = stages
        return subprocess.run(list(cmd), preexec_fn=move_self, env=env, timeout=timeout, **popen)  # noqa: PLW1509

    def pids(self) -> list[int]:
        if self.dir is None:
            return []
        try:
            return [int(x) for x in self._procs(self.dir).read_text().split()]
        except OSError:
            return []

    def close(self, timeout_s: float = 5.0) -> None:
        """Move this process back (if it entered) and remove the cgroup. Processes still inside (children that
        outlived their parent) are moved to this process's original cgroup first."""
        if self.dir is None:
            return
        back = self._entered_from or (self.hierarchy.own_dir if self.hierarchy else None)
        if self._entered_from is not None:
            os.environ.pop(ENV_ACTIVE, None)
            os.environ.pop(ENV_STAGES, None)
        deadline = time.monotonic() + timeout_s
        while True:
            for pid in self.pids():
                if back is not None:
                    with contextlib.suppress(OSError):
                        self._procs(back).write_text(str(pid))
            if self._rmdir():
                break
            if time.monotonic() > deadline:
                log.warning("cpu budget: could not remove %s (still busy); remove it with `rmdir %s`", self.dir,
                            self.dir)
                break
            time.sleep(0.05)
        self._entered_from = None
        self.dir = None
        for stage in self.stages.values():  # its threads' processes were moved back with the rest: empty now
            stage.close(timeout_s)
        self.stages = {}

    def _rmdir(self) -> bool:
        if self.dir is None:
            return True
        try:
            self.dir.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def __enter__(self) -> CpuBudget:
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def applied(budget: str | float | None, settings: Any = None, *, stage_fit: bool = False) -> Iterator[CpuBudget | None]:
    """``with applied(args.cpu_budget, settings) as b:`` — this process runs under the budget inside the block
    (nothing happens for None). A preset name is fitted to this machine first (``pi_presets``; with settings);
    ``stage_fit`` also gives the LLM its own quota fitted to the board's LLM figures (``with_stages``)."""
    if budget is None or budget == "":
        yield None
        return
    if settings is not None:
        from .pi_presets import resolve

        cpus, how = resolve(budget, settings)
    else:
        cpus = parse_budget(budget)
        how = describe(cpus)
    log.info("cpu budget: %s", how)
    b = CpuBudget(cpus, description=how)
    try:
        if stage_fit:
            from .stage_budget import with_stages

            with_stages(b, budget, settings)
        b.enter()
        yield b
    finally:
        b.close()
