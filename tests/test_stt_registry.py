"""Adding an STT engine is one module and one registry line: a scripted engine registered from a test is built
by the same factory, accepted by the config, skipped by the model check, and drives a real stream contract."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio import SAMPLE_RATE
from edge_agent.config import ConfigError, load_settings
from edge_agent.preflight import check_models_for, model_refs
from edge_agent.stt import SttEngine, SttSpec, SttStream, make_engine, register_stt, stt_engines


class _ScriptedStream(SttStream):
    engine_name = "scripted"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def _feed(self, samples: np.ndarray) -> str | None:
        return None

    def _finish(self) -> str:
        return self.text if self.samples_fed else ""


class _ScriptedEngine(SttEngine):
    """A server-like engine: no local model; says what it was told to."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        super().__init__(model_path=".")
        self.text = text

    def _load(self) -> None:
        pass

    def _open_stream(self) -> SttStream:
        return _ScriptedStream(self.text)


@pytest.fixture(scope="module", autouse=True)
def scripted():
    register_stt(SttSpec(name="scripted", settings=lambda s: s.site.name, model=lambda _own: None, model_kind=None,
                         create=lambda own, path: _ScriptedEngine(f"hello from {own}")))
    yield
    from edge_agent import stt

    stt._ENGINES.unregister("scripted")


def test_a_registered_engine_is_built_by_the_factory_and_transcribes():
    s = load_settings(data={"stt": {"engine": "scripted"}, "site": {"name": "the kitchen"}})
    engine = make_engine(s.stt, s)
    assert isinstance(engine, _ScriptedEngine) and "scripted" in stt_engines()
    result = engine.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.int16))
    assert result.text == "hello from the kitchen" and result.engine == "scripted" and result.audio_s == 0.5


def test_an_engine_without_a_local_model_needs_none():
    s = load_settings(data={"stt": {"engine": "scripted"}})
    assert not any(key.startswith("stt.") for key, _ref, _kind in model_refs(s))
    assert not any(p.startswith("stt.") for p in check_models_for(s))


def test_an_unknown_engine_names_the_registered_ones():
    with pytest.raises(ConfigError) as e:
        load_settings(data={"stt": {"engine": "nonesuch"}})
    msg = str(e.value)
    assert "stt.engine" in msg and "'whisper'" in msg and "'vosk'" in msg and "'scripted'" in msg
