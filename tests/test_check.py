"""`edge-agent check`, the doctor: pure checks with plain numbers and /proc texts, the broker probe against a real
Mosquitto (ok, refused, not authorized, timeout), and the real entry point with the repository's fetched models.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
from pathlib import Path

import pytest
import yaml
from broker import Broker, free_port
from conftest import run_cli

from edge_agent.config import MqttSettings, load_settings
from edge_agent.preflight import (
    FAIL,
    OK,
    WARN,
    check_broker,
    check_cores,
    check_cpu,
    check_memory,
    check_python,
    parse_meminfo,
)

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_CPUINFO = PI4_CPUINFO.replace("crc32 cpuid", "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp") \
    .replace("Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 5 Model B Rev 1.0")
PI3_32BIT_CPUINFO = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nFeatures\t: half thumb fastmult vfp " \
    "edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
X86_OLD = ("processor\t: 0\nmodel\t\t: 23\nmodel name\t: Intel(R) Core(TM)2 Duo CPU E8400\n"
           "flags\t\t: fpu sse sse2 ssse3\n")
X86_NEW = "processor\t: 0\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) CPU\nflags\t\t: fpu sse2 avx fma avx2 f16c\n"


# ---------------------------------------------------------------------------------------------- pure checks


def test_cpu_flags_decide_speed_class() -> None:
    pi4 = check_cpu(PI4_CPUINFO, "aarch64")
    assert pi4.status == OK and "Raspberry Pi 4" in pi4.detail and "NEON" in pi4.detail
    assert "dot product" not in pi4.detail
    pi5 = check_cpu(PI5_CPUINFO, "aarch64")
    assert pi5.status == OK and "dot product" in pi5.detail and "Raspberry Pi 5" in pi5.detail
    pi3 = check_cpu(PI3_32BIT_CPUINFO, "armv7l")
    assert pi3.status == WARN and "32-bit" in pi3.detail and "64-bit" in pi3.fix
    old = check_cpu(X86_OLD, "x86_64")
    assert old.status == WARN and "no AVX2/FMA" in old.detail and "E8400" in old.detail
    new = check_cpu(X86_NEW, "x86_64")
    assert new.status == OK and "avx2" in new.detail and "fma" in new.detail and "Xeon" in new.detail


def test_memory_fails_below_need_and_warns_when_busy() -> None:
    gb = 1_000_000_000
    info = parse_meminfo("MemTotal:        3884000 kB\nMemFree:  100 kB\nMemAvailable:     500000 kB\n"
                         "HugePages_Total: 0\n")
    assert info["MemTotal"] == 3884000 * 1024 and info["MemAvailable"] == 500000 * 1024
    need = int(1.2 * gb)
    busy = check_memory(info, need)
    assert busy.status == WARN and busy.fix
    # the running service's own memory would be freed by a restart: then there is enough
    assert check_memory(info, need, agent_rss=1 * gb).status == OK
    small = check_memory({"MemTotal": 1 * gb, "MemAvailable": 900_000_000}, need)
    assert small.status == FAIL and "1.20 GB" in small.detail and "RAM" in small.fix
    assert check_memory({"MemTotal": 8 * gb, "MemAvailable": 6 * gb}, need).status == OK


def test_cores_and_threads(settings) -> None:
    assert check_cores(4, settings).status == OK
    assert check_cores(1, settings).status == WARN
    greedy = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, threads=4))
    over = check_cores(2, greedy)
    assert over.status == WARN and "more threads than cores" in over.detail and "at most 2" in over.fix
    assert check_cores(4, greedy).status == OK
    # a turn's LLM call on both cores of a 2-CPU machine (llm.first_threads), said; too many is a warning
    assert "llm threads 1, 2 until a reply's first piece is written" in check_cores(2, settings).detail
    assert "until a reply" not in check_cores(4, settings).detail
    bursty = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, first_threads=6))
    assert check_cores(4, bursty).status == WARN and "llm.first_threads" in check_cores(4, bursty).fix


def test_python_version() -> None:
    assert check_python((3, 10, 12)).status == FAIL
    assert check_python((3, 11, 2)).status == OK


# ---------------------------------------------------------------------------------------------- broker probe


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory):
    with Broker(tmp_path_factory.mktemp("mosq"), users={"agent": "s3cret"}) as b:
        yield b


def test_broker_ok_and_not_authorized(auth_broker) -> None:
    good = check_broker(MqttSettings(host=auth_broker.host, port=auth_broker.port, username="agent",
                                     password="s3cret"), "kitchen")
    assert good.status == OK, good
    assert f"{auth_broker.port}" in good.detail and "'agent'" in good.detail
    bad = check_broker(MqttSettings(host=auth_broker.host, port=auth_broker.port, username="agent",
                                    password="wrong"), "kitchen")
    assert bad.status == FAIL and bad.detail.startswith("not authorized"), bad
    assert "mqtt.username" in bad.fix
    anon = check_broker(MqttSettings(host=auth_broker.host, port=auth_broker.port), "kitchen")
    assert anon.status == FAIL and "not authorized" in anon.detail and "anonymous" in anon.detail
    v5 = check_broker(MqttSettings(host=auth_broker.host, port=auth_broker.port, username="agent",
                                   password="nope", protocol="5"), "kitchen")
    assert v5.status == FAIL and "not authorized" in v5.detail, v5


def test_broker_refused_timeout_and_disabled() -> None:
    refused = check_broker(MqttSettings(host="127.0.0.1", port=free_port()), "kitchen")
    assert refused.status == FAIL and "refused" in refused.detail and "mqtt.port" in refused.fix
    # A TCP listener that never speaks MQTT: the kernel completes the handshake, no CONNACK ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        t0 = time.monotonic()
        hung = check_broker(MqttSettings(host="127.0.0.1", port=silent.getsockname()[1]), "kitchen", timeout_s=1.0)
        took = time.monotonic() - t0
    assert hung.status == FAIL and hung.detail.startswith("timeout") and "CONNACK" in hung.detail
    assert 0.9 <= took < 2.5, took
    off = check_broker(MqttSettings(enabled=False), "kitchen")
    assert off.status == OK and "skipped" in off.detail
    missing_env = check_broker(MqttSettings(username="agent", password_env="EDGE_AGENT_TEST_NO_SUCH_VAR"), "kitchen")
    assert missing_env.status == FAIL and "EDGE_AGENT_TEST_NO_SUCH_VAR" in missing_env.detail


# ---------------------------------------------------------------------------------------------- the real CLI


def _config(tmp_path: Path, name: str, **sections) -> Path:
    data = {"mqtt": {"outbox_dir": str(tmp_path / "state" / "outbox")},
            "log": {"turn_log": str(tmp_path / "state" / "turns.jsonl")},
            "llm": {"prefix_cache_dir": str(tmp_path / "state" / "llm_prefix")}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    load_settings(path)  # the test's own config must be valid
    return path


def _by_what(report: dict) -> dict[str, dict]:
    return {c["what"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def virtual_audio():
    """A private PulseAudio with a microphone and a speaker (tests/pulse.py): this machine has no sound card."""
    from pulse import VirtualAudio

    va = VirtualAudio().start()
    try:
        yield va
    finally:
        va.stop()


def test_check_all_green_with_real_broker_models_and_audio(tmp_path, auth_broker, virtual_audio, store) -> None:
    pw = tmp_path / "mqtt.pw"
    pw.write_text("s3cret\n")
    cfg = _config(tmp_path, "good.yaml", mqtt={"host": auth_broker.host, "port": auth_broker.port,
                                               "username": "agent", "password_file": str(pw)})
    env = {k: virtual_audio.env[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    proc = run_cli("-c", str(cfg), "check", "--json", env=env, timeout=120)
    report = json.loads(proc.stdout)
    checks = _by_what(report)
    assert proc.returncode == 0, [c for c in report["checks"] if c["status"] == FAIL]
    assert report["ok"] is True and report["counts"]["fail"] == 0
    assert report["config"] == str(cfg) and checks["config"]["status"] == OK
    assert checks["mqtt broker"]["status"] == OK and "'agent'" in checks["mqtt broker"]["detail"]
    assert checks["audio input"]["status"] == OK and checks["audio output"]["status"] == OK
    models = [c for c in report["checks"] if c["what"].startswith("model ")]
    assert {c["what"] for c in models} >= {"model wake.models[0].model", "model vad.model", "model llm.model",
                                           "model tts.voice", "model stt.whisper.model", "model wake.feature_model"}
    assert all(c["status"] == OK for c in models), models
    assert "license wake.models[0].model" not in checks  # the default, microWakeWord's hey_jarvis_v2, is Apache-2.0
    for what in ("cpu", "cpu cores", "memory", "disk", "python", "packages"):
        assert checks[what]["status"] in (OK, WARN), checks[what]
    assert "1.2" in checks["memory"]["detail"]  # the estimate for the default models, about 1.2 GB

    # the human-readable report: one tagged line per check, a fix under every one that is not ok
    text = run_cli("-c", str(cfg), "check", env=env, timeout=120)
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    tagged = [ln for ln in lines if ln.startswith("[")]
    assert len(tagged) == len(report["checks"])
    assert all(re.match(r"^\[(ok|warn|FAIL)\] [^:]+: .+", ln) for ln in tagged), tagged
    warns = [i for i, ln in enumerate(lines) if ln.startswith("[warn]")]
    assert all(lines[i + 1].strip().startswith("fix: ") for i in warns), lines


def test_check_reports_wrong_port_and_missing_models(tmp_path, store) -> None:
    assert not store.status("alexa").ok, "this test needs the manifest model alexa NOT fetched"
    port = free_port()
    cfg = _config(tmp_path, "bad.yaml", mqtt={"host": "127.0.0.1", "port": port},
                  wake={"models": [{"model": "hey_jarvis"}, {"model": "alexa"}],
                        "stop_models": [{"model": str(tmp_path / "no_such_stop_word.onnx")}]})
    proc = run_cli("-c", str(cfg), "check", "--json", timeout=120)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    checks = _by_what(report)
    assert report["ok"] is False
    broker = checks["mqtt broker"]
    assert broker["status"] == FAIL and "refused" in broker["detail"] and str(port) in broker["detail"]
    assert "mqtt.port" in broker["fix"]
    alexa = checks["model wake.models[1].model"]
    assert alexa["status"] == FAIL and "alexa" in alexa["detail"] and "models fetch alexa" in alexa["fix"]
    stop = checks["model wake.stop_models[0].model"]
    assert stop["status"] == FAIL and "no_such_stop_word.onnx" in stop["detail"]
    assert checks["model wake.models[0].model"]["status"] == OK
    assert checks["model llm.model"]["status"] == OK
    # the text report names the failing model and its fix too, and exits 2
    text = run_cli("-c", str(cfg), "check", timeout=120)
    assert text.returncode == 2
    assert re.search(r"^\[FAIL\] model wake.models\[1\].model: .*alexa", text.stdout, re.M)
    assert "fix: run `edge-agent models fetch alexa`" in text.stdout


def test_broker_tls(tmp_path) -> None:
    from broker import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    with Broker(tmp_path / "mosq", tls=tls) as b:
        good = check_broker(MqttSettings(host=b.host, port=b.port, tls=True, ca_file=str(tls.ca_cert)), "kitchen")
        assert good.status == OK and "(TLS)" in good.detail, good
        # the system store does not know the test CA: the handshake fails and the fix names mqtt.ca_file
        untrusted = check_broker(MqttSettings(host=b.host, port=b.port, tls=True), "kitchen")
        assert untrusted.status == FAIL and "TLS handshake" in untrusted.detail and "mqtt.ca_file" in untrusted.fix
        # plain MQTT to a TLS listener: the broker hangs up (or never answers)
        plain = check_broker(MqttSettings(host=b.host, port=b.port), "kitchen", timeout_s=2.0)
        assert plain.status == FAIL and "mqtt.tls" in plain.fix, plain
    missing = check_broker(MqttSettings(tls=True, ca_file=str(tmp_path / "nope.pem")), "kitchen")
    assert missing.status == FAIL and "nope.pem" in missing.detail


def test_a_non_commercial_wake_model_is_flagged(store) -> None:
    """openWakeWord's pre-trained models are CC BY-NC-SA: `check` warns and names the way out."""
    import dataclasses

    from edge_agent.config import Settings, WakeModelSettings
    from edge_agent.preflight import check_models

    s = Settings()
    oww = dataclasses.replace(s, wake=dataclasses.replace(s.wake, models=[WakeModelSettings("hey_jarvis")]))
    lic = {c.what: c for c in check_models(oww, store)}["license wake.models[0].model"]
    assert lic.status == WARN and "commercially" in lic.detail and "hey_jarvis_v2" in lic.fix
    assert not [c for c in check_models(s, store) if c.what.startswith("license")]
