"""Shared fixtures: the repository's settings, models, the CLI entry point, and real speech.

Integration tests use the real models fetched by `edge-agent models fetch` (the setup script does it); a missing model
fails the test with the fetch command rather than skipping it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
EDGE_AGENT = [sys.executable, "-m", "edge_agent"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def settings():
    from edge_agent.config import load_settings

    return load_settings(ROOT / "config.yaml")


@pytest.fixture(scope="session")
def store(settings):
    from edge_agent.models import ModelStore

    return ModelStore(settings.models_path)


def require_model(store, name: str) -> Path:
    """The model's path; fails (not skips) with the fix when it is missing."""
    st = store.status(name)
    assert st.ok, f"model {name} is {st.state} ({st.detail}); run `.venv/bin/edge-agent models fetch {name}`"
    return store.main_path(name)


def run_cli(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `edge-agent ARGS` in a subprocess (the real entry point) from the repository root."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([*EDGE_AGENT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=full_env, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"edge-agent {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def run_cli_json(*args: str, timeout: float = 600) -> dict:
    proc = run_cli(*args, "--json", check=True, timeout=timeout)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def para_home():
    """The home of tests/data/paraphrases.yaml (tests/data/paraphrase_home.yaml), as the paraphrase tool loads it."""
    from edge_agent.config import HomeSettings
    from edge_agent.home import Home
    from tools import paraphrase

    return Home.load(HomeSettings(), paraphrase.load_set()[0])


@pytest.fixture(scope="module")
def tolerant(para_home):
    """The fast path on that home as the daemon runs it: the templates, then every tolerant step."""
    from edge_agent.intents import IntentMatcher

    return IntentMatcher(para_home)


@pytest.fixture(scope="session")
def ps_data() -> Path:
    assert PS_DATA.is_dir(), "Debian package pocketsphinx-testdata is missing: apt-get install pocketsphinx-testdata"
    return PS_DATA


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory, store) -> Path:
    """Real-voice-model speech made once per session: Piper (joe) and espeak-ng WAVs of test phrases."""
    return tmp_path_factory.mktemp("speech")


def piper_wav(store, text: str, path: Path, length_scale: float = 1.0, noise: bool = True) -> Path:
    """Speak ``text`` with the real Piper voice into a 16 kHz WAV (cached per path). Piper samples its voice's
    variation at random, so each run renders the words a little differently; ``noise=False`` gives its one
    noise-free rendering, the same in every run (for a test whose input must not change between runs)."""
    if path.exists():
        return path
    import numpy as np
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    from edge_agent.audio import resample, write_wav

    voice_path = require_model(store, "piper_joe_medium")
    voice = _VOICES.get(voice_path) or _VOICES.setdefault(voice_path, PiperVoice.load(str(voice_path)))
    config = (SynthesisConfig(length_scale=length_scale) if noise else
              SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0))
    chunks = [c.audio_int16_array for c in voice.synthesize(text, config)]
    audio = np.concatenate(chunks)
    write_wav(path, resample(audio, voice.config.sample_rate, 16000))
    return path


_VOICES: dict = {}


def espeak_wav(text: str, path: Path, voice: str = "en-us", speed: int = 160) -> Path:
    """Speak ``text`` with espeak-ng (another, very different voice) into a 16 kHz WAV."""
    if path.exists():
        return path
    raw = path.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path
