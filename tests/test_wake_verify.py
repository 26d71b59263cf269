"""The second look for doubtful wake detections (pure decisions, plain numbers and strings)."""

from __future__ import annotations

from edge_agent.wake_verify import (
    ACCEPT,
    CHECK,
    NAME_PROB_MIN,
    REJECT,
    confirms_wake,
    decide,
    heard_wake,
    needs_second_look,
    phrase_parts,
)


def test_only_the_band_above_the_cutoff_is_doubtful():
    assert not needs_second_look(0.96, 0.97, 0.02)  # below the cutoff: no detection at all
    assert needs_second_look(0.97, 0.97, 0.02) and needs_second_look(0.985, 0.97, 0.02)
    assert not needs_second_look(0.99, 0.97, 0.02)  # clear
    assert not needs_second_look(0.975, 0.97, 0.0)  # band 0: the second look is off


def test_clear_detections_are_decided_at_once_without_a_transcript():
    assert decide(0.995, 0.97, 0.02, "hey jarvis") == ACCEPT
    assert decide(0.5, 0.97, 0.02, "hey jarvis") == REJECT
    assert decide(0.975, 0.97, 0.02, "hey jarvis") == CHECK


def test_doubtful_detections_need_the_phrase_in_the_transcript():
    for heard in ("Hey Jarvis, what time is it?", "Hey, Jarvis.", "A Jarvis turn on the light", "hey jervis"):
        assert decide(0.975, 0.97, 0.02, "hey jarvis", heard) == ACCEPT, heard
    for heard in ("Hey Jack, pass me the salt.", "Hey Travis!", "Harvest is late.", "", "hey", "Jarvie, look"):
        assert decide(0.975, 0.97, 0.02, "hey jarvis", heard) == REJECT, heard


def test_a_name_the_model_heard_but_the_transcript_spelled_otherwise_is_accepted():
    """A transcript without the phrase is decided by the name's probability after "Hey" where the STT model can
    score words (``name_prob``), by the transcript alone where it cannot (None)."""
    assert phrase_parts("hey jarvis") == ("Hey", "Jarvis") and phrase_parts("alexa") == ("", "Alexa")
    assert phrase_parts("okay nabu") == ("Okay", "Nabu")
    assert decide(0.975, 0.97, 0.02, "hey jarvis", "Hey, Jardis.", name_prob=0.62) == ACCEPT
    assert decide(0.975, 0.97, 0.02, "hey jarvis", "Hey, Jarmic.", name_prob=0.08) == REJECT  # a near miss
    assert decide(0.975, 0.97, 0.02, "hey jarvis", "Hey, Jardis.") == REJECT  # an engine that cannot tell
    assert heard_wake("Hey, Jardis.", "hey jarvis", NAME_PROB_MIN) and not heard_wake("x", "hey jarvis", 0.2499)
    assert heard_wake("Hey Jarvis!", "hey jarvis", 0.0)  # the transcript alone is enough


def test_whole_words_only():
    assert not confirms_wake("the jarvisian style", "hey jarvis")
    assert confirms_wake("OK Nabu, lights off", "okay nabu")
    assert not confirms_wake("okay now", "okay nabu")
    assert confirms_wake("hey my craft", "hey mycroft")


# ------------------------------------------------------------------ the band wired through the detector (fake engine)
class ScriptedEngine:
    """A wake engine that replays scores, one per 80 ms frame, with openWakeWord's cutoff rule."""

    frame_samples = 1280
    suffix = ".onnx"
    verifier_kind = "none"
    scores: list[float] = []

    def __init__(self, models, **_):
        self.models = {m.name: m for m in models}
        self.i = 0

    @staticmethod
    def threshold(base, boost, override):
        return (base if override is None else override) + boost

    def score(self, frame):
        s = self.scores[self.i] if self.i < len(self.scores) else 0.0
        self.i += 1
        return {name: s for name in self.models}

    def reset(self):
        self.i = 0


def _detect(monkeypatch, scores, band, boost=0.0):
    from pathlib import Path

    import numpy as np

    from edge_agent import wake

    monkeypatch.setitem(wake.ENGINES, "scripted", f"{__name__}:ScriptedEngine")
    monkeypatch.setattr(ScriptedEngine, "scores", scores)
    spec = wake.WakeModelSpec("hey_jarvis", Path("hey_jarvis.onnx"), threshold=0.5, refractory_s=0.0,
                              engine="scripted", second_look_band=band)
    det = wake.WakeDetector([spec])
    det.threshold_boost = boost
    return det.process(np.zeros(1280 * len(scores), np.int16), 1280 * len(scores) / 16000)


def test_detections_carry_their_cutoff_and_band(monkeypatch):
    # rising edges at 0.62 (doubtful: below 0.5 + 0.3) and 0.85 (clear); the score the detection fired with counts
    dets = _detect(monkeypatch, [0.1, 0.62, 0.95, 0.1, 0.85, 0.1], band=0.3)
    assert [(d.score, d.cutoff, d.band) for d in dets] == [(0.62, 0.5, 0.3), (0.85, 0.5, 0.3)]
    assert [needs_second_look(d.score, d.cutoff, d.band) for d in dets] == [True, False]
    # band 0 (the default): nothing is ever looked at twice
    assert not any(needs_second_look(d.score, d.cutoff, d.band) for d in _detect(monkeypatch, [0.1, 0.51], 0.0))
    # the half-duplex guard raises the cutoff: the band sits above the cutoff in force
    (d,) = _detect(monkeypatch, [0.1, 0.62, 0.1, 0.75], band=0.3, boost=0.2)
    assert (d.score, d.cutoff) == (0.75, 0.7) and needs_second_look(d.score, d.cutoff, d.band)


def test_the_wake_audio_is_read_up_to_the_detection_without_draining():
    import numpy as np

    from edge_agent.audio import AudioChunk
    from edge_agent.vad import PreRoll

    ring = PreRoll(2.0)
    for k in range(30):  # 30 chunks of 80 ms, each filled with its index: 2.4 s, ending at t = 2.4
        ring.push(AudioChunk(np.full(1280, k, np.int16), k * 0.08))
    got = ring.recent(1.5, until=2.4 - 0.04)  # the detection lies half a chunk before the newest sample
    assert len(got) == 24000 and got[-1] == 29 and (got == 29).sum() == 640 and got[0] == 10  # from 0.86 s
    assert ring.seconds == 2.0 and len(ring.recent(1.5)) == 24000  # nothing was drained
    assert len(PreRoll(1.0).recent(1.5)) == 0


def test_the_band_is_a_checked_setting_shown_by_the_doctor():
    import pytest

    from edge_agent.config import load_settings
    from edge_agent.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_settings(data={"wake": {"models": [{"model": "hey_jarvis", "second_look_band": 1.5}]}})
    assert "second_look_band" in e.value.message
    s = load_settings(data={"wake": {"models": [{"model": "hey_jarvis", "second_look_band": 0.25}]}})
    assert s.wake.models[0].second_look_band == 0.25
    from edge_agent.preflight import check_wake

    (line,) = check_wake(s)
    assert line.status == "ok" and "cutoff 0.50, window 1, second look below 0.750 (band 0.25)" in line.detail
    wide = load_settings(data={"wake": {"models": [{"model": "hey_jarvis", "second_look_band": 0.6}]}})
    warn, ok = check_wake(wide)
    assert warn.status == "warn" and "every detection gets a second look" in warn.detail and ok.status == "ok"


def test_the_band_defaults_to_the_models_measured_one(tmp_path):
    """null = the manifest's band (0.02 for the default hey_jarvis_v2, 0 for the other shipped models) and 0 for a
    model file given by path; an explicit band is taken as given."""
    import pytest

    from edge_agent.config import load_settings
    from edge_agent.errors import ModelError
    from edge_agent.models import load_manifest
    from edge_agent.preflight import check_wake
    from edge_agent.wake import resolve_spec

    s = load_settings(data={})
    assert s.wake.models[0].model == "hey_jarvis_v2" and s.wake.models[0].second_look_band is None
    assert resolve_spec(s, s.wake.models[0]).second_look_band == 0.02
    assert "second look below 0.990 (band 0.02)" in check_wake(s)[0].detail
    off = load_settings(data={"wake": {"models": [{"model": "hey_jarvis_v2", "second_look_band": 0.0}]}})
    assert resolve_spec(off, off.wake.models[0]).second_look_band == 0.0
    assert "no second look" in check_wake(off)[0].detail
    oww = load_settings(data={"wake": {"models": [{"model": "hey_jarvis"}]}})
    assert resolve_spec(oww, oww.wake.models[0]).second_look_band == 0.0
    by_path = load_settings(data={"wake": {"models": [{"model": str(s.models_path / "hey_jarvis_v2" /
                                                                   "hey_jarvis.tflite")}]}})
    assert resolve_spec(by_path, by_path.wake.models[0]).second_look_band == 0.0
    bad = tmp_path / "manifest.yaml"
    bad.write_text("models:\n  w:\n    kind: wake\n    second_look_band: 2\n    sources: [{url: {}}]\n")
    with pytest.raises(ModelError) as e:
        load_manifest(bad)
    assert "models.w.second_look_band: 2; a number in 0..1" in e.value.message
