"""The CPU this process may use (affinity and cgroup quota) and the compute threads each engine gets from it: the
walk up a made-up cgroup tree (pure), the thread rules with numbers, and one real quota read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent import cpu_budget as cb
from edge_agent import cpu_share as cs

from .test_cpu_budget import _cpu_hierarchy_or_skip


def _tree(tmp_path: Path, version: int, quotas: dict[str, str]) -> tuple[str, str]:
    """A cgroup hierarchy mounted at tmp_path/cg with the given quota files; returns (mountinfo, proc_cgroup) for a
    process in /a/b."""
    root = tmp_path / "cg"
    for rel, q in quotas.items():
        d = root / rel if rel else root
        d.mkdir(parents=True, exist_ok=True)
        if version == 2:
            (d / "cpu.max").write_text(q + "\n")
        else:
            quota, period = q.split()
            (d / "cpu.cfs_quota_us").write_text(quota + "\n")
            (d / "cpu.cfs_period_us").write_text(period + "\n")
    if version == 2:
        (root / "cgroup.controllers").write_text("cpuset cpu io memory\n")
        return (f"30 22 0:26 / {root} rw,nosuid shared:4 - cgroup2 cgroup2 rw\n", "0::/a/b\n")
    return (f"32 31 0:29 / {root} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n", "5:cpu,cpuacct:/a/b\n0::/\n")


def test_the_smallest_quota_on_the_way_up_counts(tmp_path: Path) -> None:
    n = cs.online_cpus()
    # v2: the process's own cgroup has none, its parent allows 0.5 CPU, the root none
    mi, pc = _tree(tmp_path / "v2", 2, {"": "max 100000", "a": "50000 100000", "a/b": "max 100000"})
    assert cs.available_cpus(mi, pc) == pytest.approx(min(n, 0.5))
    # v1 (the layout of this machine's bench cgroups): 17 % in the own cgroup under an unlimited parent
    mi, pc = _tree(tmp_path / "v1", 1, {"": "-1 100000", "a": "-1 100000", "a/b": "1700 10000"})
    assert cs.available_cpus(mi, pc) == pytest.approx(min(n, 0.17))
    # no quota anywhere, or nothing readable: the affinity mask
    mi, pc = _tree(tmp_path / "none", 2, {"": "max 100000", "a/b": "max 100000"})
    assert cs.available_cpus(mi, pc) == n
    assert cs.available_cpus("", "") == n
    assert cs.quota_of(tmp_path / "missing", 2) is None and cs.quota_of(tmp_path / "missing", 1) is None


def test_thread_rules_follow_the_cpu_there_is() -> None:
    # Whisper: two where two CPUs are there, one under the Pi budgets; a setting wins
    assert [cs.whisper_threads(0, c) for c in (0.17, 0.38, 1.0, 1.5, 1.95, 2.0, 4.0)] == [1, 1, 1, 1, 2, 2, 2]
    assert cs.whisper_threads(3, 0.17) == 3
    # llama.cpp: all CPUs but the audio loop's, at least one
    assert [cs.llm_threads(0, c) for c in (0.17, 1.0, 2.0, 4.0)] == [1, 1, 1, 3]
    assert cs.llm_threads(2, 0.17) == 2
    # llm.first_threads: both CPUs of a 2-CPU machine while a turn waits for the model (measured there), else as
    # llm.threads; never fewer than llm.threads
    assert [cs.llm_first_threads(0, cs.llm_threads(0, c), c) for c in (0.17, 1.0, 1.9, 2.0, 4.0)] == [1, 1, 2, 2, 3]
    assert cs.llm_first_threads(0, 3, 2.0) == 3
    assert cs.llm_first_threads(1, 3, 4.0) == 3 and cs.llm_first_threads(6, 1, 2.0) == 6
    # Piper: one thread under a quota below two CPUs, else ONNX Runtime's choice (0)
    assert [cs.tts_threads(0, c) for c in (0.17, 0.38, 1.5, 2.0, 4.0)] == [1, 1, 1, 0, 0]
    assert cs.tts_threads(2, 0.17) == 2


def test_openmp_is_told_to_sleep_only_under_a_quota_and_only_if_the_user_did_not_choose() -> None:
    env: dict[str, str] = {}
    assert cs.passive_waits(float(cs.online_cpus()), env) is False and env == {}
    assert cs.passive_waits(0.17, env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cs.passive_waits(0.17, mine) is False and mine == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_real_quota_is_read_back() -> None:
    _cpu_hierarchy_or_skip()
    before = cs.available_cpus()
    with cb.applied("0.3") as b:
        assert b is not None
        assert cs.available_cpus() == pytest.approx(0.3, abs=0.01)
        assert cs.whisper_threads(0) == 1 and cs.tts_threads(0) == 1 and cs.llm_threads(0) == 1
    assert cs.available_cpus() == before
    assert before == min(cs.online_cpus(), before) and before <= len(os.sched_getaffinity(0))
