"""CPU budget: mountinfo / cgroup parsing and quota arithmetic on plain text, and one real quota on a busy loop."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edge_agent import cpu_budget as cb

# /proc/self/mountinfo of a cgroup v1 host (this machine's layout, with cpu alone), a hybrid v2 mount beside it
MOUNTINFO_V1 = """\
23 1 0:22 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
CGROUP_V1 = """\
4:memory:/process_api/04b2
2:cpuacct:/
1:cpu:/
0::/
"""
# a Debian-style v1 host: cpu co-mounted with cpuacct, a mount path with a space (escaped), and a container whose
# cgroupfs shows only its own subtree
MOUNTINFO_V1_COMOUNT = """\
25 20 0:23 /docker/abc /sys/fs/cgroup/cpu\\040acct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
26 20 0:24 /docker/abc /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
"""
CGROUP_V1_COMOUNT = "5:cpu,cpuacct:/docker/abc/job\n3:cpuset:/docker/abc\n"
# pure cgroup v2 (systemd host), optional fields before the separator
MOUNTINFO_V2 = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
CGROUP_V2 = "0::/user.slice/user-1000.slice/session-2.scope\n"
MOUNTINFO_RO = "32 31 0:29 / /sys/fs/cgroup/cpu ro,relatime - cgroup cgroup ro,cpu\n"


def test_parse_mountinfo_fields_and_escapes() -> None:
    ms = cb.parse_mountinfo(MOUNTINFO_V1 + MOUNTINFO_V1_COMOUNT + "garbage line\n")
    assert len(ms) == 8
    cpu = [m for m in ms if m.mountpoint == "/sys/fs/cgroup/cpu"][0]
    assert (cpu.fstype, cpu.root, cpu.super_options) == ("cgroup", "/", ("rw", "cpu"))
    assert not cpu.read_only
    spaced = [m for m in ms if m.mountpoint.endswith("acct") and m.root == "/docker/abc"][0]
    assert spaced.mountpoint == "/sys/fs/cgroup/cpu acct"
    v2 = cb.parse_mountinfo(MOUNTINFO_V2)[1]
    assert (v2.fstype, v2.mountpoint, v2.super_options) == ("cgroup2", "/sys/fs/cgroup", ("rw", "nsdelegate"))
    assert cb.parse_mountinfo(MOUNTINFO_RO)[0].read_only


def test_parse_proc_cgroup() -> None:
    v1, v2 = cb.parse_proc_cgroup(CGROUP_V1_COMOUNT)
    assert v1 == {"cpu": "/docker/abc/job", "cpuacct": "/docker/abc/job", "cpuset": "/docker/abc"}
    assert v2 is None
    v1, v2 = cb.parse_proc_cgroup(CGROUP_V2)
    assert v1 == {} and v2 == "/user.slice/user-1000.slice/session-2.scope"


def test_find_cpu_hierarchy_v1_wins_over_a_hybrid_v2_tree_without_cpu() -> None:
    h = cb.find_cpu_hierarchy(MOUNTINFO_V1, CGROUP_V1, v2_controllers=lambda _mp: ["hugetlb"])
    assert h is not None and h.version == 1
    assert h.own_dir == Path("/sys/fs/cgroup/cpu")
    # co-mounted cpu,cpuacct inside a container: the mount's root is stripped from the process's path
    h = cb.find_cpu_hierarchy(MOUNTINFO_V1_COMOUNT, CGROUP_V1_COMOUNT, v2_controllers=lambda _mp: [])
    assert h is not None and h.version == 1
    assert h.own_dir == Path("/sys/fs/cgroup/cpu acct/job")
    # cpuacct alone is not the cpu controller
    only_acct = "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
    assert cb.find_cpu_hierarchy(only_acct, "2:cpuacct:/\n", v2_controllers=lambda _mp: []) is None


def test_find_cpu_hierarchy_v2() -> None:
    h = cb.find_cpu_hierarchy(MOUNTINFO_V2, CGROUP_V2, v2_controllers=lambda mp: ["cpuset", "cpu", "io"])
    assert h is not None and h.version == 2
    assert h.own_dir == Path("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
    assert cb.find_cpu_hierarchy(MOUNTINFO_V2, CGROUP_V2, v2_controllers=lambda mp: ["memory"]) is None


def test_quota_for() -> None:
    assert cb.quota_for(0.25, 10_000) == (2_500, 10_000)
    assert cb.quota_for(1.5, 100_000) == (150_000, 100_000)
    # a quota under the kernel's 1 ms minimum lengthens the period instead, keeping the ratio
    q, p = cb.quota_for(0.05, 10_000)
    assert q >= cb.MIN_PERIOD_US and abs(q / p - 0.05) < 1e-3
    with pytest.raises(cb.CpuBudgetError):
        cb.quota_for(0)
    with pytest.raises(cb.CpuBudgetError):
        cb.quota_for(0.5, 500)


def test_parse_budget() -> None:
    assert cb.parse_budget("pi5", 2) == cb.PI5_CPUS
    assert cb.parse_budget("PI4", 2) == cb.PI4_CPUS
    assert cb.parse_budget("0.4", 2) == 0.4
    assert cb.parse_budget("25%", 4) == 1.0
    assert cb.PI4_CPUS < cb.PI5_CPUS  # a Pi 4 is slower than a Pi 5
    for bad in ("fast", "0", "-1", "3"):
        with pytest.raises(cb.CpuBudgetError) as e:
            cb.parse_budget(bad, 2)
        assert e.value.fix
    assert "pi5 preset" in cb.describe(cb.PI5_CPUS, 2) and "2 CPUs" in cb.describe(0.4, 2)


def test_fit_quota_on_throughput_curves() -> None:
    # a pure throughput stage: 0.6 s at 2 CPUs, time ∝ 1/cpus → 1.2 s is reached at exactly 1 CPU
    times = [(2.0, 0.6), (1.0, 1.2), (0.5, 2.4), (0.25, 4.8)]
    assert cb.fit_quota(times, 1.2) == pytest.approx(1.0)
    assert cb.fit_quota(times, 3.0) == pytest.approx(0.4, rel=1e-6)
    rates = [(q, 10.0 / t) for q, t in times]  # tokens/s rise with the quota
    assert cb.fit_quota(rates, 10.0 / 3.0) == pytest.approx(0.4, rel=1e-6)
    assert cb.fit_quota(times, 10.0) is None and cb.fit_quota(times, 0.1) is None  # outside what was measured
    assert cb.fit_quota([(1.0, 1.0)], 1.0) is None


def test_read_only_cgroupfs_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    h = cb.CpuHierarchy(1, cb.parse_mountinfo(MOUNTINFO_RO)[0], Path("/sys/fs/cgroup/cpu"))
    monkeypatch.setattr(cb, "find_cpu_hierarchy", lambda *a, **k: h)
    with pytest.raises(cb.CpuBudgetError) as e:
        cb.CpuBudget(0.5).create()
    assert "read-only" in e.value.message and e.value.fix


def _cpu_hierarchy_or_skip() -> cb.CpuHierarchy:
    try:
        h = cb.CpuBudget(1.0)._find()
    except cb.CpuBudgetError as e:
        pytest.skip(f"no writable cpu cgroup here: {e.message}")
    if os.geteuid() != 0 and not os.access(h.own_dir, os.W_OK):
        pytest.skip("not root: cannot create a cgroup")
    return h


def test_not_root_error_names_the_fix(tmp_path: Path) -> None:
    """A cgroup directory we may not write to: the error says permission and how to fix it (a real mkdir)."""
    if os.geteuid() == 0:
        # root ignores directory modes: imitate an unwritable cgroup with a path whose parent is a regular file
        (tmp_path / "file").write_text("")
        h = cb.CpuHierarchy(1, cb.parse_mountinfo(MOUNTINFO_V1)[2], tmp_path / "file")
        with pytest.raises(cb.CpuBudgetError) as e:
            cb.CpuBudget(0.5, hierarchy=h).create()
        assert "cannot create the cgroup" in e.value.message and e.value.fix
    else:
        h = cb.CpuHierarchy(1, cb.parse_mountinfo(MOUNTINFO_V1)[2], Path("/sys/fs/cgroup/cpu"))
        with pytest.raises(cb.CpuBudgetError) as e:
            cb.CpuBudget(0.5, hierarchy=h).create()
        assert "permission" in e.value.message and "root" in e.value.fix


BUSY = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
w0, c0 = time.monotonic(), time.process_time()
x = 0
while time.monotonic() < end:
    x += 1
print(os.environ.get("EDGE_AGENT_CPU_BUDGET"), (time.process_time() - c0) / (time.monotonic() - w0))
"""


def test_busy_loop_under_a_quarter_cpu_quota() -> None:
    """A real single-threaded busy loop for 3 s under a 0.25 CPU quota uses ~0.25 CPU s per wall second, and the
    cgroup is gone afterwards. Lower bound loose: the other engineers' work on the 2 cores can take more from us."""
    _cpu_hierarchy_or_skip()
    budget = cb.CpuBudget(0.25)
    with budget:
        path = budget.dir
        assert path is not None and path.is_dir()
        assert budget.quota() == (2_500, 10_000)
        out = budget.run([sys.executable, "-c", BUSY, "3"], capture_output=True, text=True, timeout=60)
        stat = budget.stat()
    assert out.returncode == 0, out.stderr
    env, ratio = out.stdout.split()
    assert env == "0.25"
    assert 0.15 < float(ratio) < 0.30, ratio
    # the quota, not the other work on the machine, held it there: throttled in most 10 ms periods
    assert stat["nr_throttled"] >= 0.3 * stat["nr_periods"] > 0, stat
    assert not path.exists()


def test_enter_moves_this_process_and_close_moves_it_back() -> None:
    h = _cpu_hierarchy_or_skip()
    own = Path("/proc/self/cgroup").read_text()
    with cb.applied("0.5") as b:
        assert b is not None and b.dir is not None
        assert str(os.getpid()) in b.pids() or os.getpid() in b.pids()
        assert os.environ.get(cb.ENV_ACTIVE) == "0.5"
        name = b.dir.name
        # a thread started now is inside too; and the quota holds for this process: ~0.5 CPU of busy work
        w0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - w0 < 1.5:
            pass
        ratio = (time.process_time() - c0) / (time.monotonic() - w0)
        assert ratio < 0.6, ratio
        assert b.stat()["nr_throttled"] > 0
    assert Path("/proc/self/cgroup").read_text() == own
    assert not (h.own_dir / name).exists()
    assert cb.ENV_ACTIVE not in os.environ


def test_bench_hook_runs_this_process_under_the_budget_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-agent bench --cpu-budget pi4`: the bench's parser takes it, the cgroup exists before the models load,
    the process enters it at `start`, the report header names the budget, and the cgroup is gone afterwards."""
    h = _cpu_hierarchy_or_skip()
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    from edge_bench import budget
    from edge_bench.run import bench_settings, build_parser

    from edge_agent.pi_presets import machine_presets

    args = build_parser().parse_args(["--quick", "--cpu-budget", "pi4"])
    res: dict = {}
    own = Path("/proc/self/cgroup").read_text()
    with budget.prepared(args) as b:
        assert b is not None and b.dir is not None and b.dir.is_dir()
        assert os.getpid() not in b.pids()  # not yet: model loading runs at full speed
        budget.start(args, res)
        assert os.getpid() in b.pids()
        want = machine_presets(bench_settings(None)).cpus["pi4"]  # fitted to this CPU (cached by `prepared`)
        assert res["cpu_budget"]["cpus"] == want
        head = budget.header(args, res)
        name = b.dir.name
    assert "--cpu-budget pi4" in head and "pi4 preset" in head and f"{want:g} CPU" in head
    assert Path("/proc/self/cgroup").read_text() == own and not (h.own_dir / name).exists()
    plain = build_parser().parse_args(["--quick"])
    with budget.prepared(plain) as none:
        assert none is None
        budget.start(plain, res)
    assert "CPU budget: none" in budget.header(plain, res)
