"""Checks before start: every model the config names exists and is intact (``config check``, ``run``), and the
doctor ``edge-agent check`` (audio devices, models, broker, CPU, memory, disk), each finding with its fix."""

from __future__ import annotations

import dataclasses
import getpass
import os
import platform
import pwd
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import MqttSettings, Settings
from .errors import AudioError, ConfigError, ModelError
from .models import ModelStore, resolve
from .stt import stt_model_ref, stt_spec


def model_refs(s: Settings) -> list[tuple[str, str, str]]:
    """(config key, model reference, manifest kind) for every model the settings use."""
    refs = [(f"wake.models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.models)]
    refs += [(f"wake.stop_models[{i}].model", m.model, "wake") for i, m in enumerate(s.wake.stop_models)]
    refs += [
        ("wake.feature_model", s.wake.feature_model, "wake_features"),
        ("vad.model", s.vad.model, "vad"),
        stt_model_ref(s),
        ("llm.model", s.llm.model, "llm"),
        ("tts.voice", s.tts.voice, "tts"),
    ]
    return [(key, ref, kind) for key, ref, kind in refs if ref is not None and kind is not None]


def check_models_for(s: Settings, store: ModelStore | None = None) -> list[str]:
    """Problems with the models the config names, each naming the key and the fix; empty when all is well."""
    store = store or ModelStore(s.models_path)
    problems = []
    for key, ref, kind in model_refs(s):
        try:
            resolve(ref, store, kind)
        except ModelError as e:
            problems.append(f"{key}: {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""))
    return problems


def resolve_model(s: Settings, ref: str, kind: str) -> Path:
    return resolve(ref, ModelStore(s.models_path), kind)


# --------------------------------------------------------------------------------------------------- the doctor
# `edge-agent check`: everything a Pi needs before `edge-agent run` (or the service) can work, each check one line
# with what was found and, when not ok, the fix. Pure parts (CPU flags, memory) take text and numbers so that they are
# tested with plain values; the rest touches the real system (audio devices, model files, the broker).

OK, WARN, FAIL = "ok", "warn", "fail"
BROKER_TIMEOUT_S = 3.0  # the whole MQTT probe: TCP connect, TLS, CONNACK
RUNTIME_OVERHEAD_BYTES = 450_000_000  # Python, NumPy, ONNX Runtime, CTranslate2, llama.cpp code and buffers
MODEL_RAM_FACTOR = 1.2  # models take a bit more RAM than their files (KV cache, arenas); measured ~1.2 GB in total
DISK_FAIL_BYTES = 50_000_000  # outbox (4 MB cap), turn log and LLM prefix cache need far less: below this, FAIL
DISK_WARN_BYTES = 500_000_000
PACKAGES = ["numpy", "onnxruntime", "sounddevice", "paho-mqtt", "piper-tts", "llama-cpp-python", "openwakeword",
            "hassil", "home-assistant-intents"]


@dataclass
class Check:
    """One line of the report: ``[ok|warn|FAIL] what: detail`` and, when not ok, ``fix: ...``."""

    what: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        tag = "FAIL" if self.status == FAIL else self.status
        text = f"[{tag}] {self.what}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and self.status != OK else "")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# ------------------------------------------------------------------------------------------ config and models


def check_config(path: str | os.PathLike[str] | None) -> Check:
    if path is None:
        return Check("config", WARN, "no config file found: built-in defaults",
                     "pass -c FILE, set EDGE_AGENT_CONFIG, or create ./config.yaml (tools/gen_config.py documents it)")
    return Check("config", OK, f"{Path(path).resolve()} is valid")


def _ref_size(ref: str, store: ModelStore) -> int:
    """Bytes of a configured model on disk (manifest size when not installed), for the memory estimate."""
    p = store.dir(ref) if ref in store.manifest else Path(ref).expanduser()
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    return store.manifest[ref].size if ref in store.manifest else 0


def check_models(s: Settings, store: ModelStore) -> list[Check]:
    """Every model the config names, resolved exactly as ``run`` resolves it (sizes, and hashes of changed files)."""
    out = []
    for key, ref, kind in model_refs(s):
        try:
            path = resolve(ref, store, kind)
        except ModelError as e:
            out.append(Check(f"model {key}", FAIL, e.message, e.fix or ""))
            continue
        spec = store.manifest.get(ref)
        what = f"{ref} ({_mb(_ref_size(ref, store))}, {spec.license})" if spec else f"{path} (not in the manifest)"
        out.append(Check(f"model {key}", OK, what))
    for key, ref, kind in model_refs(s):
        spec = store.manifest.get(ref)
        if kind == "wake" and spec is not None and "NC" in spec.license:
            out.append(Check(f"license {key}", WARN, f"{ref} is {spec.license.split(' ')[0]}: the openWakeWord "
                             "pre-trained wake word models may not be used commercially",
                             "fine for personal use; for a product, train your own openWakeWord model and set "
                             f"{key} to the path of its .onnx file"))
    return out


# ------------------------------------------------------------------------------------------------ audio


def check_audio(s: Settings) -> list[Check]:
    from .audio_io import _sd, find_device

    out = []
    for kind, spec in (("input", s.audio.input_device), ("output", s.audio.output_device)):
        what = f"audio {kind}"
        try:
            idx = find_device(spec, kind)
            d = _sd().query_devices(idx)
            hostapi = _sd().query_hostapis(d["hostapi"])["name"]
            chans = d["max_input_channels"] if kind == "input" else d["max_output_channels"]
            how = "the system default" if spec is None else f"audio.{kind}_device = {spec!r}"
            out.append(Check(what, OK, f"#{idx} {d['name']!r} [{hostapi}], {chans} ch, "
                             f"{d['default_samplerate']:.0f} Hz ({how})"))
        except AudioError as e:
            fix = (e.fix + "; " if e.fix else "") + (
                "`arecord -l` / `aplay -l` list the sound cards ALSA sees. The service runs as user edge-agent "
                "through plain ALSA: check with `sudo -u edge-agent /opt/edge-agent/.venv/bin/edge-agent devices`")
            out.append(Check(what, FAIL, e.message, fix))
    return out


# ------------------------------------------------------------------------------------------------ broker


def _is_auth_failure(reason: Any) -> bool:
    # CONNACK codes: MQTT 3.1.1 return codes 4/5 (paho maps them to 134/135), MQTT 5 0x86/0x87/0x8C.
    return getattr(reason, "value", reason) in (4, 5, 0x86, 0x87, 0x8C)


def check_llm_server(s: Settings) -> Check | None:
    """``llm.backend: openai``: the server answers ``GET /models`` (TCP, TLS, the API key); its round-trip time."""
    if s.llm.backend != "openai":
        return None
    from .llm_openai import Endpoint, Http, RemoteFailure, api_key

    o, what = s.llm.openai, "llm server"
    try:
        http, t0 = Http(Endpoint.parse(o.base_url), o, api_key(o)), time.monotonic()
        conn, resp = http.open("GET", "/models", None, timeout=o.first_token_timeout_s)
        conn.close()
    except ConfigError as e:
        return Check(what, FAIL, e.message, e.fix or "")
    except RemoteFailure as e:
        fallback = "turns fall back to the local model" if s.llm.fallback == "local" else "turns get an apology"
        return Check(what, WARN if s.llm.fallback == "local" else FAIL, f"{o.base_url}: {e}; {fallback}",
                     "start the server (README: One server, several rooms), or check llm.openai")
    return Check(what, OK, f"{o.base_url} answered in {(time.monotonic() - t0) * 1000:.0f} ms")


def check_stt_server(s: Settings) -> Check | None:
    """``stt.engine: wyoming``: the server answers Wyoming ``describe``; its round-trip time."""
    if s.stt.engine != "wyoming":
        return None
    from .errors import SttError
    from .stt_wyoming import WyomingSttEngine

    engine, what = WyomingSttEngine(s.stt.wyoming), "stt server"
    try:
        info, rtt = engine.describe()
    except SttError as e:
        return Check(what, FAIL, e.message, e.fix or "check stt.wyoming.host and port")
    names = [m.get("name") for a in info.get("asr") or [] for m in a.get("models") or []]
    return Check(what, OK, f"{engine.address} ({', '.join(map(str, names)) or 'no model listed'}) answered in "
                 f"{rtt * 1000:.0f} ms")


def check_broker(m: MqttSettings, site_id: str, timeout_s: float = BROKER_TIMEOUT_S) -> Check:
    """A real MQTT connection: TCP, TLS when configured, credentials (CONNACK), then a clean disconnect.

    The client id is our own (``edge-agent-check-…``): reusing the daemon's would make the broker drop the running
    daemon's session.
    """
    import socket
    import ssl

    import paho.mqtt.client as mqtt

    from .config import mqtt_password

    what = "mqtt broker"
    if not m.enabled:
        return Check(what, OK, "skipped (mqtt.enabled is false)")
    where = f"{m.host}:{m.port}{' (TLS)' if m.tls else ''}"
    try:
        password = mqtt_password(m)
    except ConfigError as e:
        return Check(what, FAIL, e.message, e.fix or "")
    if m.tls and m.ca_file and not Path(m.ca_file).expanduser().is_file():
        return Check(what, FAIL, f"mqtt.ca_file {m.ca_file} does not exist",
                     "set mqtt.ca_file to the broker's CA certificate (PEM), or null for the system store")
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-agent-check-{site_id}-{os.getpid()}",
                         protocol=protocol, reconnect_on_failure=False)
    client.connect_timeout = timeout_s
    if m.username is not None:
        client.username_pw_set(m.username, password)
    if m.tls:
        client.tls_set(ca_certs=str(Path(m.ca_file).expanduser()) if m.ca_file else None)
    got: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: got.setdefault("reason", reason)
    port_fix = (f"is the broker running and listening on {m.host}:{m.port}? (on the broker: `systemctl status "
                "mosquitto`; Mosquitto 2 listens only on localhost unless its config has a `listener 1883` line); "
                "else correct mqtt.host / mqtt.port")
    t0 = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except ConnectionRefusedError:
        return Check(what, FAIL, f"connection refused by {where}", port_fix)
    except socket.gaierror as e:
        return Check(what, FAIL, f"cannot resolve host {m.host!r}: {e.strerror}",
                     "correct mqtt.host (an IP address avoids depending on DNS/mDNS)")
    except TimeoutError:
        return Check(what, FAIL, f"timeout: no TCP connection to {where} within {timeout_s:g} s",
                     "check that the broker host is up and reachable (firewall?), and mqtt.host / mqtt.port")
    except ssl.SSLError as e:
        return Check(what, FAIL, f"TLS handshake with {where} failed: {e.reason or e}",
                     "set mqtt.ca_file to the CA that signed the broker's certificate, or mqtt.tls: false for a "
                     "plain listener")
    except OSError as e:
        return Check(what, FAIL, f"cannot connect to {where}: {e.strerror or e}", port_fix)
    try:
        while "reason" not in got and time.monotonic() - t0 < timeout_s:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS and "reason" not in got:
                return Check(what, FAIL, f"{where} closed the connection without answering the MQTT CONNECT",
                             "is this an MQTT port, and does mqtt.tls match the listener (TLS or plain)?")
        ms = (time.monotonic() - t0) * 1000
        if "reason" not in got:
            return Check(what, FAIL, f"timeout: {where} accepted TCP but sent no MQTT CONNACK within {timeout_s:g} s",
                         "is this an MQTT port, and does mqtt.tls match the listener (TLS or plain)?")
        reason = got["reason"]
        who = f"user {m.username!r}" if m.username is not None else "anonymous"
        if _is_auth_failure(reason):
            return Check(what, FAIL, f"not authorized: {where} refused {who} ({reason})",
                         "set mqtt.username and the password (mqtt.password_file or password_env) to an account of "
                         "the broker (Mosquitto: mosquitto_passwd), or allow this client in its ACL")
        if getattr(reason, "is_failure", False):
            return Check(what, FAIL, f"{where} refused the connection: {reason}",
                         "check mqtt.protocol and the broker's log")
        return Check(what, OK, f"connected to {where} as {who}, MQTT {m.protocol}, in {ms:.0f} ms")
    finally:
        try:
            client.disconnect()  # a clean DISCONNECT: the broker logs no "connection lost" for the probe
            client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001 - best-effort goodbye; the verdict is already made
            pass
        sock = client.socket()
        if sock is not None:
            sock.close()


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


def check_cores(n: int, s: Settings) -> Check:
    spec = stt_spec(s.stt.engine)
    stt_threads = spec.threads(spec.settings(s))
    detail = f"{n} usable cores (llm.threads={s.llm.threads}, stt.{s.stt.engine} threads={stt_threads})"
    if n < 2:
        return Check("cpu cores", WARN, detail, "one core cannot listen and think at once: replies will stutter")
    if s.llm.threads > n or stt_threads > n:
        return Check("cpu cores", WARN, detail + ": more threads than cores",
                     f"set llm.threads and stt.{s.stt.engine}.threads to at most {n}")
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


def estimate_ram(s: Settings, store: ModelStore) -> int:
    """Bytes the configured models need resident, roughly: their files plus the runtime (~1.2 GB for the defaults)."""
    return RUNTIME_OVERHEAD_BYTES + int(MODEL_RAM_FACTOR * sum(_ref_size(r, store) for _, r, _ in model_refs(s)))


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

    package = stt_spec(s.stt.engine).package
    wanted = PACKAGES + ([package] if package else [])
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


# ------------------------------------------------------------------------------------------------ report


def run_checks(s: Settings, config_path: str | os.PathLike[str] | None) -> list[Check]:
    store = ModelStore(s.models_path)
    checks = [check_config(config_path)]
    checks += check_audio(s)
    checks += check_models(s, store)
    checks.append(check_broker(s.mqtt, s.site.site_id))
    checks += [c for c in [check_llm_server(s), check_stt_server(s)] if c is not None]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    checks.append(check_cpu(cpuinfo, platform.machine()))
    checks.append(check_llama_build())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    checks.append(check_cores(cores, s))
    try:
        meminfo = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        meminfo = {}
    checks.append(check_memory(meminfo, estimate_ram(s, store), _agent_rss()) if meminfo
                  else Check("memory", WARN, "/proc/meminfo is not readable", "run on Linux"))
    checks.append(check_disk(s))
    checks.append(check_python())
    checks.append(check_packages(s))
    service = check_service()
    if service is not None:
        checks.append(service)
    return checks


def cli_check(args: Any, settings: Settings) -> int:
    """``edge-agent check [--json]``: exit 0 when nothing FAILs (warnings allowed), 2 otherwise."""
    import json

    from .cli import default_config_path

    config_path = getattr(args, "config", None) or default_config_path()
    checks = run_checks(settings, config_path)
    if getattr(args, "speed", False):
        from .fit import judge, measure

        verdicts = judge(measure(settings), settings)
        checks += [Check(v.name, OK if v.ok else WARN, v.detail, v.fix or "") for v in verdicts]
    failed = sum(c.status == FAIL for c in checks)
    counts = {k: sum(c.status == k for c in checks) for k in (OK, WARN, FAIL)}
    if getattr(args, "json", False):
        print(json.dumps({"ok": not failed, "config": str(config_path) if config_path else None, "counts": counts,
                          "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(c.line())
        print(f"\n{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed")
    return 2 if failed else 0
