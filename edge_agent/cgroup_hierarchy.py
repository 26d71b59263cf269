"""Where the cgroup ``cpu`` controller is, pure parsing: ``/proc/self/mountinfo`` (``Mount``) and
``/proc/self/cgroup`` read, the v1 or v2 hierarchy that has ``cpu`` found (``CpuHierarchy``), and this process's
cgroup directory in it (``cgroup_dir``, also under a container's partial mount). ``cpu_budget.CpuBudget`` makes its
child cgroup there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo (the parts a cgroup lookup needs)."""

    root: str  # the directory of the filesystem that is mounted here (a cgroup path for cgroupfs)
    mountpoint: str
    fstype: str
    mount_options: tuple[str, ...]  # per-mount options (rw/ro, ...)
    super_options: tuple[str, ...]  # per-superblock options (the v1 controllers, e.g. rw,cpu,cpuacct)

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options or "ro" in self.super_options


@dataclass(frozen=True)
class CpuHierarchy:
    """Where the cpu controller is: cgroup version, mount, and this process's cgroup directory in it."""

    version: int  # 1 or 2
    mount: Mount
    own_dir: Path  # the directory of the cgroup this process is in


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a /proc/<pid>/mountinfo text (malformed lines are skipped)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        sep = parts.index("-")
        if sep < 6 or len(parts) < sep + 3:
            continue
        mounts.append(Mount(root=_unescape(parts[3]), mountpoint=_unescape(parts[4]), fstype=parts[sep + 1],
                            mount_options=tuple(parts[5].split(",")),
                            super_options=tuple(parts[sep + 3].split(",")) if len(parts) > sep + 3 else ()))
    return mounts


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """/proc/<pid>/cgroup → ({v1 controller: path}, the v2 path or None)."""
    v1: dict[str, str] = {}
    v2 = None
    for line in text.splitlines():
        hid, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2:
            continue
        if hid == "0" and controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c:
                v1[c] = path
    return v1, v2


def cgroup_dir(mount: Mount, path: str) -> Path:
    """The directory of cgroup ``path`` (as /proc/self/cgroup names it) under ``mount``. The mount may show only
    part of the hierarchy (a container's cgroupfs whose root is /docker/<id>): strip that part."""
    root = mount.root.rstrip("/")
    rel = path
    if root and (path == root or path.startswith(root + "/")):
        rel = path[len(root):]
    return Path(mount.mountpoint) / rel.lstrip("/")


def find_cpu_hierarchy(mountinfo: str, proc_cgroup: str, v2_controllers: Any = None) -> CpuHierarchy | None:
    """The cgroup hierarchy that has the ``cpu`` controller, or None.

    v1: a ``cgroup`` mount with ``cpu`` among its superblock options (alone or co-mounted, e.g. ``cpu,cpuacct``).
    v2: a ``cgroup2`` mount whose root lists ``cpu`` in ``cgroup.controllers`` (``v2_controllers(mountpoint)``
    returns that file's words; by default it is read). A controller is bound to one hierarchy, so v1 wins when both
    are mounted (a hybrid system whose v2 tree has no cpu).
    """
    v1_paths, v2_path = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    for m in mounts:
        if m.fstype == "cgroup" and "cpu" in m.super_options:
            path = v1_paths.get("cpu")
            if path is not None:
                return CpuHierarchy(1, m, cgroup_dir(m, path))
    read = v2_controllers or _read_controllers
    for m in mounts:
        if m.fstype == "cgroup2" and v2_path is not None and "cpu" in read(m.mountpoint):
            return CpuHierarchy(2, m, cgroup_dir(m, v2_path))
    return None


def _read_controllers(mountpoint: str) -> list[str]:
    try:
        return (Path(mountpoint) / "cgroup.controllers").read_text().split()
    except OSError:
        return []
