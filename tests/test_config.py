"""Config: typed settings validated at load; broken files give one clear line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent.config import Settings, iter_fields, load_settings, mqtt_password
from edge_agent.errors import ConfigError

from .conftest import ROOT, run_cli


def test_repo_config_is_valid_and_equals_defaults():
    s = load_settings(ROOT / "config.yaml")
    assert s == Settings(), "config.yaml must document the defaults (regenerate: python tools/gen_config.py)"


def test_config_yaml_documents_every_option():
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    text = (ROOT / "config.yaml").read_text()
    for path, f, _ in iter_fields():
        node = data
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"config.yaml lacks {path}"
            node = node[part]
        assert f.metadata.get("help"), f"{path} has no help text"
    assert "# " in text


def test_config_yaml_is_what_the_generator_writes():
    out = subprocess.run([sys.executable, "tools/gen_config.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out == (ROOT / "config.yaml").read_text(), "run: python tools/gen_config.py > config.yaml"


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        ({"stt": {"engin": "vosk"}}, "stt.engin: unknown key (did you mean 'engine'?)"),
        ({"stt": {"engine": "google"}}, "stt.engine: got 'google'; allowed: 'vosk', 'whisper', 'wyoming'"),
        ({"vad": {"trailing_silence_s": "long"}}, "vad.trailing_silence_s: expected a number"),
        ({"vad": {"trailing_silence_s": 9}}, "vad.trailing_silence_s: 9.0 is out of range"),
        ({"mqtt": {"port": True}}, "mqtt.port: expected an integer"),
        ({"wake": {"models": [{"model": "hey_jarvis", "treshold": 0.4}]}}, "wake.models[0].treshold: unknown key"),
        ({"site": {"site_id": "kitchen/1"}}, "site.site_id"),
        ({"mqtt": {"password": "x"}}, "mqtt.password: a password is set but mqtt.username is null"),
    ],
)
def test_bad_values_name_the_key(data, expect):
    with pytest.raises(ConfigError) as e:
        load_settings(data=data)
    assert expect in str(e.value)


def test_top_level_must_be_a_mapping(tmp_path: Path):
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_settings(f)


BROKEN = {
    "unknown_key.yaml": ("llm:\n  modle: qwen2_5_coder_0_5b\n", "llm.modle: unknown key (did you mean 'model'?)"),
    "wrong_type.yaml": ("audio:\n  block_ms: eighty\n", "audio.block_ms: expected an integer, got 'eighty'"),
    "out_of_range.yaml": ("wake:\n  models:\n    - model: hey_jarvis\n      threshold: 1.5\n",
                          "wake.models[0].threshold: 1.5 is out of range"),
    "missing_model.yaml": ("tts:\n  voice: /nonexistent/voices/en_US-nobody.onnx\n",
                           "tts.voice: model '/nonexistent/voices/en_US-nobody.onnx' is neither a manifest model"),
    "unknown_model.yaml": ("llm:\n  model: gpt-17\n", "llm.model: model 'gpt-17' is neither a manifest model"),
    "bad_yaml.yaml": ("stt: [engine: vosk\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_config_check_broken_files(tmp_path: Path, name: str):
    body, expect = BROKEN[name]
    f = tmp_path / name
    f.write_text(body)
    for args in (("config", "check", str(f)), ("-c", str(f), "run", "--input", "/nonexistent.wav")):
        proc = run_cli(*args, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert expect in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error["), proc.stderr


def test_config_check_good_file(tmp_path: Path):
    proc = run_cli("config", "check", str(ROOT / "config.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_missing_config_file():
    proc = run_cli("config", "check", "/nonexistent/config.yaml")
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_password_from_env_and_file(tmp_path: Path, monkeypatch):
    s = load_settings(data={"mqtt": {"username": "u", "password_env": "EA_TEST_PW"}})
    monkeypatch.setenv("EA_TEST_PW", "s3cret")
    assert mqtt_password(s.mqtt) == "s3cret"
    monkeypatch.delenv("EA_TEST_PW")
    with pytest.raises(ConfigError, match="EA_TEST_PW is not set"):
        mqtt_password(s.mqtt)
    pw = tmp_path / "pw"
    pw.write_text("filepw\n")
    s2 = load_settings(data={"mqtt": {"username": "u", "password_file": str(pw)}})
    assert mqtt_password(s2.mqtt) == "filepw"
    with pytest.raises(ConfigError, match="only one of"):
        load_settings(data={"mqtt": {"username": "u", "password": "a", "password_env": "B"}})


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.stt.engine = "vosk"  # type: ignore[misc]


def test_run_without_a_sound_device_points_to_file_mode(tmp_path: Path):
    """No PulseAudio server and no ALSA card: `run` says so plainly and names file mode."""
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "PULSE_SERVER": f"unix:{tmp_path}/nothing"}
    proc = run_cli("run", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no audio input device" in proc.stderr and "--input IN.wav" in proc.stderr
    assert "Traceback" not in proc.stderr
