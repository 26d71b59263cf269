"""How much CPU this process may use, and how many compute threads each engine gets from it.

A quota (systemd's ``CPUQuota=``, a container's ``--cpus``, ``--cpu-budget``) leaves the cores visible but limits
the time the process gets on them. Worker threads that wait for each other by spinning burn that time: under the
Pi 4 budget (0.17 CPU) Piper's first reply took 0.91 CPU s against 0.18 without the quota (ONNX Runtime's pool
spins between operators), and a Whisper decode with two OpenMP threads 1.75 CPU s against 0.59 (docs/benchmarks.md,
"Seventh session"). So the engines' thread counts follow the CPU there is, not the cores one sees:

- ``available_cpus``: the affinity mask, lowered by the quota of the process's cgroup or of any cgroup above it;
- ``whisper_threads`` / ``llm_threads`` / ``tts_threads``: the settings' ``0`` (auto) resolved against it;
- ``passive_waits``: below the visible cores, OpenMP (CTranslate2's libgomp) is told to sleep, not spin, while it
  waits (``OMP_WAIT_POLICY=PASSIVE``, unless the user set it), before the library is loaded.

ONNX Runtime's spinning is off for Piper in every case (``tts._load_voice``): without a quota it cost nothing
measurable in wall time and saved ~15 % of the synthesis CPU, which the audio loop shares.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .cgroup_hierarchy import find_cpu_hierarchy


def online_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def quota_of(d: Path, version: int) -> float | None:
    """The CPUs one cgroup directory's own quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), or None for no quota there (or nothing readable)."""
    try:
        if version == 2:
            quota, period = (d / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((d / "cpu.cfs_quota_us").read_text())
        return None if quota_us < 0 else quota_us / int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


def available_cpus(mountinfo: str | None = None, proc_cgroup: str | None = None) -> float:
    """The CPUs this process may use: its affinity mask, lowered by the smallest quota on the way from its own
    cgroup up to the hierarchy's root. Where there is no cgroup ``cpu`` controller (not Linux, a container that
    hides it) the affinity mask alone."""
    n = float(online_cpus())
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
        proc_cgroup = Path("/proc/self/cgroup").read_text() if proc_cgroup is None else proc_cgroup
    except OSError:
        return n
    h = find_cpu_hierarchy(mountinfo, proc_cgroup)
    if h is None:
        return n
    root = Path(h.mount.mountpoint)
    d = h.own_dir
    while True:
        q = quota_of(d, h.version)
        if q is not None:
            n = min(n, q)
        if d == root or root not in d.parents:
            return n
        d = d.parent


def _whole(cpus: float) -> int:
    """Whole CPUs to plan threads for: 1.9 counts as 2, 1.5 as 1, anything below 1 as 1."""
    return max(1, math.floor(cpus + 0.1))


def whisper_threads(setting: int, cpus: float | None = None) -> int:
    """``stt.whisper.threads``: the setting, or for 0 two threads where two CPUs are there, else one."""
    if setting > 0:
        return setting
    return min(2, _whole(available_cpus() if cpus is None else cpus))


def llm_threads(setting: int, cpus: float | None = None) -> int:
    """``llm.threads``: the setting, or for 0 every CPU but one (the audio loop's), at least one."""
    if setting > 0:
        return setting
    return max(1, _whole(available_cpus() if cpus is None else cpus) - 1)


def llm_first_threads(setting: int, threads: int, cpus: float | None = None) -> int:
    """``llm.first_threads``: the setting, or for 0 both CPUs of a 2-CPU machine (where ``llm.threads`` leaves
    llama.cpp half of it; measured there, docs/benchmarks.md) and ``threads`` elsewhere; never fewer than
    ``threads``."""
    if setting > 0:
        return max(setting, threads)
    return max(threads, 2) if _whole(available_cpus() if cpus is None else cpus) == 2 else threads


def tts_threads(setting: int, cpus: float | None = None) -> int:
    """``tts.threads`` (Piper's ONNX Runtime intra-op threads): the setting, or for 0 one thread under a quota below
    two CPUs, else 0 (ONNX Runtime's own choice: one per physical core)."""
    if setting > 0:
        return setting
    return 1 if _whole(available_cpus() if cpus is None else cpus) < 2 else 0


def passive_waits(cpus: float | None = None, environ: dict[str, str] | None = None) -> bool:
    """Under a quota below the visible cores, make OpenMP threads sleep while they wait (``OMP_WAIT_POLICY``) unless
    the user chose; True if it was set. Must run before CTranslate2 is imported (libgomp reads it once)."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env:
        return False
    if (available_cpus() if cpus is None else cpus) >= online_cpus():
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


__all__ = ["available_cpus", "llm_threads", "online_cpus", "passive_waits", "quota_of", "tts_threads",
           "whisper_threads"]
