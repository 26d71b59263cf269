"""The doctor's checks of the machine itself: CPU (SIMD), cores, memory, disk, Python, packages, the systemd service
and the llama.cpp build variant. The pure parts (CPU flags, memory) take text and numbers so that they are tested with
plain values."""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import sys
from pathlib import Path

from .check_result import FAIL, OK, WARN, Check, _mb
from .config import Settings
from .stt import stt_spec
from .tts import tts_spec

DISK_FAIL_BYTES = 50_000_000  # outbox (4 MB cap), turn log and LLM prefix cache need far less: below this, FAIL
DISK_WARN_BYTES = 500_000_000
PACKAGES = ["numpy", "onnxruntime", "sounddevice", "paho-mqtt", "piper-tts", "llama-cpp-python", "openwakeword",
            "hassil", "home-assistant-intents"]


# ------------------------------------------------------------------------------------------------ machine


def check_cpu(cpuinfo: str, machine: str) -> Check:
    """llama.cpp, ONNX Runtime and CTranslate2 need SIMD to be usable: NEON/ASIMD on ARM, AVX2+FMA on x86."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        k, _, v = line.partition(":")
        fields.setdefault(k.strip().lower(), v.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    # x86: "model name"; a Raspberry Pi: "Model : Raspberry Pi 4 Model B" (x86's "model" is a number).
    pi_model = fields.get("model", "")
    pi_model = "" if pi_model.isdigit() else pi_model
    model = fields.get("model name") or pi_model or fields.get("hardware") or machine
    if machine in ("x86_64", "amd64", "i686", "i386"):
        have = [f for f in ("avx2", "fma", "f16c", "avx512f") if f in flags]
        if {"avx2", "fma"} <= flags:
            return Check("cpu", OK, f"{model} ({machine}): {' '.join(have)}")
        return Check("cpu", WARN, f"{model} ({machine}): no AVX2/FMA ({' '.join(have) or 'neither'}): llama.cpp and "
                     "the speech models fall back to slow kernels", "expect several times slower replies; "
                     "a CPU with AVX2 (any x86-64 since about 2013) or a Pi 4/5 is recommended")
    if machine in ("aarch64", "arm64"):
        simd = "asimd" if "asimd" in flags else ""
        extra = " + dot product (fast quantized LLM)" if "asimddp" in flags else ""
        if simd:
            return Check("cpu", OK, f"{model} ({machine}): NEON/ASIMD{extra}")
        return Check("cpu", WARN, f"{model} ({machine}): no ASIMD flag in /proc/cpuinfo", "expect slow inference")
    if machine.startswith("arm"):
        neon = "neon" in flags
        return Check("cpu", WARN, f"{model} ({machine}, 32-bit){': NEON' if neon else ': no NEON'}",
                     "install the 64-bit Raspberry Pi OS: the inference libraries are built and tuned for aarch64")
    return Check("cpu", WARN, f"{model} ({machine}): untested architecture", "x86-64 or aarch64 are supported")


def check_cores(n: int, s: Settings, cpus: float | None = None) -> Check:
    """``n`` usable cores, ``cpus`` of them allowed by a CPU quota (None: no quota); the threads each engine gets."""
    from .cpu_share import llm_first_threads, llm_threads

    cpus = float(n) if cpus is None else min(float(n), cpus)
    spec = stt_spec(s.stt.engine)
    stt_threads = spec.threads(spec.settings(s))
    llm = llm_threads(s.llm.threads, cpus)
    first = llm_first_threads(s.llm.first_threads, llm, cpus)
    quota = f", a CPU quota of {cpus:.2g} of them" if cpus < n else ""
    burst = f", {first} until a reply's first piece is written" if first > llm else ""
    detail = f"{n} usable cores{quota} (llm threads {llm}{burst}, stt.{s.stt.engine} threads {stt_threads})"
    if n < 2:
        return Check("cpu cores", WARN, detail, "one core cannot listen and think at once: replies will stutter")
    if first > n or stt_threads > n:
        return Check("cpu cores", WARN, detail + ": more threads than cores",
                     f"set llm.threads, llm.first_threads and stt.{s.stt.engine}.threads to at most {n}")
    return Check("cpu cores", OK, detail)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        parts = v.split()
        if parts and parts[0].isdigit():
            out[k.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def check_memory(meminfo: dict[str, int], need: int, agent_rss: int = 0) -> Check:
    """FAIL when the machine has less RAM than the models need at all, warn when too little is free right now.

    ``agent_rss``: memory of an edge-agent already running (the service): it would be freed by a restart, so it
    counts as available.
    """
    total, avail = meminfo.get("MemTotal", 0), meminfo.get("MemAvailable", meminfo.get("MemFree", 0)) + agent_rss
    detail = f"{_mb(avail)} available of {_mb(total)}; the configured models need about {_mb(need)}"
    if agent_rss:
        detail += f" (counting the {_mb(agent_rss)} of the running edge-agent as available)"
    if total < need:
        return Check("memory", FAIL, detail, "use smaller models (llm.model, stt) or a device with more RAM "
                     "(a Pi 4/5 with 2 GB or more)")
    if avail < need:
        return Check("memory", WARN, detail, "other programs use the memory: close them, or add swap (slow)")
    return Check("memory", OK, detail)


def _agent_rss() -> int:
    """Resident bytes of other running ``edge-agent run`` processes (0 when none or /proc is hidden)."""
    total = 0
    for d in Path("/proc").glob("[0-9]*"):
        if d.name == str(os.getpid()):
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if any(a.endswith(b"edge-agent") or a == b"edge_agent" for a in argv) and b"run" in argv:
                total += int((d / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


def check_disk(s: Settings) -> Check:
    """Free space and write access where the daemon keeps its state (outbox, turn log, LLM prefix cache)."""
    paths = [s.path(s.mqtt.outbox_dir)]
    if s.log.turn_log:
        paths.append(s.path(s.log.turn_log).parent)
    if s.llm.prefix_cache_dir:
        paths.append(s.path(s.llm.prefix_cache_dir))
    state = Path(os.path.commonpath([str(p) for p in paths]))
    existing = state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError as e:
        return Check("disk", FAIL, f"cannot read free space of {existing}: {e.strerror}", "check the path")
    detail = f"{_mb(free)} free for the state directory {state}"
    if free < DISK_FAIL_BYTES:
        return Check("disk", FAIL, detail, f"free space on {existing}'s file system (the outbox needs it)")
    if not os.access(existing, os.W_OK):
        try:
            owner = pwd.getpwuid(existing.stat().st_uid).pw_name
        except (KeyError, OSError):
            owner = "?"
        return Check("disk", WARN, f"{detail}; {existing} is not writable by {getpass.getuser()} (owner {owner})",
                     "fine if the service user owns it (/var/lib/edge-agent is the service's); otherwise point "
                     "mqtt.outbox_dir, log.turn_log and llm.prefix_cache_dir at a writable directory")
    if free < DISK_WARN_BYTES:
        return Check("disk", WARN, detail, "free some space: the turn log grows with use")
    return Check("disk", OK, detail)


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    v = ".".join(map(str, version))
    if version[:2] < (3, 11):
        return Check("python", FAIL, f"Python {v}", "Python 3.11 or newer is needed (Raspberry Pi OS Bookworm has it)")
    return Check("python", OK, f"Python {v} ({sys.executable})")


def check_packages(s: Settings) -> Check:
    from importlib import metadata

    packages = [stt_spec(s.stt.engine).package, tts_spec(s.tts.engine).package]
    wanted = PACKAGES + [p for p in packages if p and p not in PACKAGES]
    have, missing = [], []
    for name in wanted:
        try:
            have.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("packages", FAIL, f"missing: {', '.join(missing)}",
                     "run tools/setup.sh (it installs the pinned versions into .venv)")
    return Check("packages", OK, ", ".join(have))


def check_service() -> Check | None:
    """State of the installed systemd unit, when there is one and systemd runs."""
    import subprocess

    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return None
    unit_file = any(Path(d, "edge-agent.service").is_file() for d in ("/etc/systemd/system", "/lib/systemd/system"))
    if not unit_file:
        return None
    try:
        state = subprocess.run(["systemctl", "is-active", "edge-agent"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if state == "active":
        return Check("service", OK, "edge-agent.service is active")
    if state == "failed":
        return Check("service", FAIL, "edge-agent.service has failed", "journalctl -u edge-agent -n 50 shows why")
    return Check("service", WARN, f"edge-agent.service is {state}", "sudo systemctl enable --now edge-agent")


def check_llama_build() -> Check:
    """The llama.cpp CPU variant in use (a portable build; never one that assumes the CPU it was compiled on)."""
    from .cpu import llama_features, llama_variant

    try:
        feats = llama_features()
    except Exception as e:  # noqa: BLE001 - a doctor line, never a crash
        return Check("llama.cpp build", FAIL, f"llama-cpp-python does not load ({e})",
                     "run tools/setup.sh again (it builds llama-cpp-python for this architecture)")
    variant = llama_variant()
    if feats.get("AMX_INT8") or feats.get("AMX_TILE"):
        return Check("llama.cpp build", WARN, variant + ": built with AMX, which dies with SIGILL where the kernel "
                     "grants no AMX tile state to llama.cpp's threads",
                     "rebuild portably: rm -r ~/.cache/edge-agent/wheels .venv && tools/setup.sh")
    return Check("llama.cpp build", OK, variant)


__all__ = ["DISK_FAIL_BYTES", "DISK_WARN_BYTES", "PACKAGES", "check_cores", "check_cpu", "check_disk",
           "check_llama_build", "check_memory", "check_packages", "check_python", "check_service", "parse_meminfo"]
