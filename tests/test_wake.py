"""Wake word detection with the real hey_jarvis models of both engines: openWakeWord and microWakeWord.

Positives are "Hey Jarvis, …" spoken by the real Piper voice and by several espeak-ng voices; negatives are real read
speech (pocketsphinx-testdata librivox), a Piper sentence without the wake word and near-miss phrases.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio import read_wav, write_wav
from edge_agent.config import WakeModelSettings
from edge_agent.errors import ConfigError, ModelError
from edge_agent.wake import Detection, WakeDetector, WakeModelSpec

from .conftest import espeak_wav, piper_wav, require_model, run_cli

WAKE_TEXT = "Hey Jarvis, what time is it?"
# espeak-ng voices and speeds that openWakeWord detects (peak score 0.97-0.998 here). Tried and NOT reliably
# detected: speed 250 in every voice, en+croak/en+m1/en-sc at 200, en-029 and en-gb-scotland at 110.
ESPEAK_VOICES = [("en-us", 160), ("en", 130), ("en-us+f3", 130), ("en-gb-x-rp", 160), ("en+m7", 130)]


@pytest.fixture(scope="module")
def speech(tmp_path_factory, store) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wake_speech")
    files = {
        "piper": piper_wav(store, WAKE_TEXT, d / "piper.wav"),
        "piper_slow": piper_wav(store, "Hey Jarvis, turn on the kitchen light.", d / "piper_slow.wav", 1.2),
        "piper_short": piper_wav(store, "Hey Jarvis.", d / "piper_short.wav"),
        "piper_negative": piper_wav(store, "What time is it? Please turn on the kitchen light.", d / "neg.wav"),
    }
    for voice, speed in ESPEAK_VOICES:
        files[f"espeak_{voice}_{speed}"] = espeak_wav(WAKE_TEXT, d / f"espeak_{voice}_{speed}.wav", voice, speed)
    return files


@pytest.fixture(scope="module")
def features(store) -> tuple[Path, Path]:
    root = require_model(store, "oww_features")
    return root / "melspectrogram.onnx", root / "embedding_model.onnx"


@pytest.fixture(scope="module")
def jarvis(store) -> Path:
    return require_model(store, "hey_jarvis")


@pytest.fixture(scope="module")
def detector(settings) -> WakeDetector:
    """openWakeWord's hey_jarvis (microWakeWord's hey_jarvis_v2, the default, has its own tests below)."""
    det = WakeDetector.from_settings(with_models(settings, WakeModelSettings("hey_jarvis")))
    assert det.names == ["hey_jarvis"]
    return det


def run(det: WakeDetector, audio: np.ndarray, chunk: int = 1280) -> list[Detection]:
    """Stream ``audio`` through a freshly reset detector in ``chunk``-sample blocks, with stream times from 0."""
    det.reset()
    det.max_scores.clear()
    out: list[Detection] = []
    for i in range(0, len(audio), chunk):
        block = audio[i:i + chunk]
        out += det.process(block, (i + len(block)) / 16000)
    return out


def test_positives_detected_near_the_start(detector, speech):
    peaks = {}
    cpu0, seconds = detector.cpu_s, 0.0
    for name, path in speech.items():
        if name in ("piper_negative", "piper_short"):
            continue
        audio = read_wav(path)
        seconds += len(audio) / 16000
        dets = run(detector, audio)
        peaks[name] = round(detector.max_scores["hey_jarvis"], 4)
        assert [d.model for d in dets] == ["hey_jarvis"], (name, dets)
        # "hey jarvis" ends about 0.6-1.0 s into these files; the detection comes right after it
        assert 0.4 < dets[0].t < 2.0, (name, dets)
        assert dets[0].score >= 0.5 and not dets[0].stop
    print("peak scores on positives:", peaks)
    assert (detector.cpu_s - cpu0) / seconds < 0.3  # CPU seconds per audio second (measured ~0.03 here)


def test_negatives_do_not_fire(detector, speech, ps_data):
    files = sorted((ps_data / "librivox").glob("*.wav")) + [speech["piper_negative"]]
    worst = 0.0
    for path in files:
        dets = run(detector, read_wav(path))
        assert dets == [], (path.name, dets)
        worst = max(worst, detector.max_scores["hey_jarvis"])
    print("max score on negatives:", worst)
    assert worst < 0.1


def test_detections_do_not_depend_on_chunking(detector, speech):
    audio = np.concatenate([read_wav(speech["piper"]), np.zeros(8000, np.int16), read_wav(speech["espeak_en_130"])])
    reference = run(detector, audio, 1280)  # 80 ms
    assert len(reference) == 2
    for chunk in (480, 16000, 1000, len(audio)):  # 30 ms, 1 s, an odd size, the whole file at once
        assert run(detector, audio, chunk) == reference, chunk


def test_two_detectors_agree_exactly(features, jarvis, speech):
    """openWakeWord primes its feature history with unseeded noise; ours is seeded, so runs are reproducible."""
    audio = read_wav(speech["piper_slow"])
    a = WakeDetector([WakeModelSpec("hey_jarvis", jarvis)], *features)
    b = WakeDetector([WakeModelSpec("hey_jarvis", jarvis)], *features)
    assert run(a, audio) == run(b, audio) != []


def two_wake_words(speech) -> np.ndarray:
    """'Hey Jarvis.' at 0 s and again at 3 s, then 1 s of silence."""
    one = read_wav(speech["piper_short"])
    gap = np.zeros(3 * 16000 - len(one), np.int16)
    return np.concatenate([one, gap, one, np.zeros(16000, np.int16)])


@pytest.mark.parametrize(("refractory_s", "count"), [(0.0, 2), (2.0, 2), (10.0, 1)])
def test_refractory(features, jarvis, speech, refractory_s, count):
    det = WakeDetector([WakeModelSpec("hey_jarvis", jarvis, 0.5, refractory_s)], *features)
    dets = run(det, two_wake_words(speech))
    assert len(dets) == count, dets
    if count == 2:
        assert dets[1].t - dets[0].t == pytest.approx(3.0, abs=0.25)


def test_reset_forgets_the_wake_word(detector, speech):
    audio = read_wav(speech["piper_short"])
    dets = run(detector, audio)
    assert len(dets) == 1
    silence = np.zeros(16000, np.int16)
    # without a reset the wake word is still in openWakeWord's feature window: the score stays high for a while
    detector.max_scores.clear()
    detector.process(silence, len(audio) / 16000 + 1)
    assert detector.max_scores["hey_jarvis"] > 0.5
    run(detector, audio)
    detector.reset()
    detector.max_scores.clear()
    detector.process(silence, 1.0)
    assert detector.max_scores.get("hey_jarvis", 0.0) < 0.01


def test_threshold_boost_guards_against_own_voice(detector, speech):
    audio = read_wav(speech["piper"])
    try:
        detector.threshold_boost = 0.5  # threshold 0.5 + 0.5: nothing scores 1.0
        assert run(detector, audio) == []
        assert detector.max_scores["hey_jarvis"] > 0.9
    finally:
        detector.threshold_boost = 0.0
    assert len(run(detector, audio)) == 1


def test_several_models_custom_file_and_per_model_thresholds(settings, features, jarvis, speech, tmp_path):
    custom = tmp_path / "my_wake.onnx"
    shutil.copy(jarvis, custom)
    wake = dataclasses.replace(settings.wake, models=[
        WakeModelSettings("hey_jarvis", 0.5, 2.0),
        WakeModelSettings(str(custom), 1.0, 2.0),  # same weights, a threshold no score reaches
    ])
    det = WakeDetector.from_settings(dataclasses.replace(settings, wake=wake))
    assert det.names == ["hey_jarvis", "my_wake"]
    audio = read_wav(speech["piper"])
    assert [d.model for d in run(det, audio)] == ["hey_jarvis"]
    det.threshold_override = 0.5
    assert sorted(d.model for d in run(det, audio)) == ["hey_jarvis", "my_wake"]


def test_stop_models_are_flagged(settings, speech, tmp_path, jarvis):
    custom = tmp_path / "stop_word.onnx"
    shutil.copy(jarvis, custom)
    wake = dataclasses.replace(settings.wake, models=[WakeModelSettings("hey_jarvis", 1.0)],
                               stop_models=[WakeModelSettings(str(custom), 0.5)])
    s = dataclasses.replace(settings, wake=wake)
    assert WakeDetector.from_settings(s).names == ["hey_jarvis"]
    det = WakeDetector.from_settings(s, stop=True)
    assert det.names == ["stop_word"]
    dets = run(det, read_wav(speech["piper"]))
    assert [(d.model, d.stop) for d in dets] == [("stop_word", True)]
    with pytest.raises(ConfigError, match="wake.stop_models: no models"):
        WakeDetector.from_settings(settings, stop=True)


def test_bad_models_are_clear_errors(settings, features, jarvis, tmp_path):
    wake = dataclasses.replace(settings.wake, models=[WakeModelSettings("hey_nobody")])
    with pytest.raises(ModelError, match="'hey_nobody' is neither a manifest model nor an existing file") as e:
        WakeDetector.from_settings(dataclasses.replace(settings, wake=wake))
    assert "models list" in (e.value.fix or "")
    tfl = tmp_path / "x.tflite"
    tfl.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="not an .onnx file"):
        WakeDetector([WakeModelSpec("x", tfl)], *features)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not load"):
        WakeDetector([WakeModelSpec("junk", junk)], *features)
    with pytest.raises(ConfigError, match="at least one"):
        WakeDetector([], *features)
    with pytest.raises(ConfigError, match="both named"):
        WakeDetector([WakeModelSpec("a", jarvis), WakeModelSpec("a", jarvis)], *features)


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_wake_json(speech, tmp_path):
    two = tmp_path / "two.wav"
    audio = two_wake_words(speech)
    write_wav(two, audio)
    proc = run_cli("wake", str(two), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["duration"] == pytest.approx(len(audio) / 16000, abs=0.001)
    # one entry per event (the score stays above the cutoff for several frames each time), by the default model
    assert [d["model"] for d in out["detections"]] == ["hey_jarvis_v2", "hey_jarvis_v2"]
    assert out["detections"][0]["t"] < 1.5 and out["detections"][1]["t"] == pytest.approx(
        out["detections"][0]["t"] + 3.0, abs=0.25)
    assert all(d["score"] >= 0.97 for d in out["detections"])


def test_cli_wake_errors(tmp_path, speech):
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("these are not samples\n")
    proc = run_cli("wake", str(not_wav))
    assert proc.returncode == 2
    assert "error[audio]" in proc.stderr and "not a readable PCM WAV" in proc.stderr and "sox" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("wake", str(speech["piper"]), "--model", "hey_nobody")
    assert proc.returncode == 2
    assert "error[model]" in proc.stderr and "hey_nobody" in proc.stderr and "fix:" in proc.stderr
    proc = run_cli("wake", str(tmp_path / "missing.wav"))
    assert proc.returncode == 2 and "no such audio file" in proc.stderr


# --------------------------------------------------------------------------------------------------- microWakeWord

MICRO = WakeModelSettings("hey_jarvis_v2", engine="microwakeword")
# microWakeWord's hey_jarvis (trained on Piper-made samples) hears few espeak-ng voices: of 11 voices x 3 speeds tried
# only en-us+f3 at 175 reached its cutoff (0.97); en+f4 and en-us+f3 at 150 peaked at 0.94-0.96, the others far lower.
MICRO_ESPEAK = [("en-us+f3", 175)]
# Near misses a person hears as another name. ("Hey Jarvie" is left to the benchmark: microWakeWord scores it 0.973,
# just over its cutoff, and it is one vowel from the wake word.)
NEAR_MISSES = ["Hey Jack, pass me the salt.", "Hey Travis, are you coming?", "Hey Charlie, what time is it?",
               "Harvest is in the autumn.", "Hey Marvin, look at this."]


def with_models(settings, *models: WakeModelSettings):
    return dataclasses.replace(settings, wake=dataclasses.replace(settings.wake, models=list(models)))


@pytest.fixture(scope="module")
def micro(settings, store) -> WakeDetector:
    require_model(store, "hey_jarvis_v2")
    det = WakeDetector.from_settings(with_models(settings, MICRO))
    assert det.names == ["hey_jarvis_v2"]
    return det


@pytest.fixture(scope="module")
def micro_speech(speech, tmp_path_factory, store) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("micro_speech")
    files = {k: speech[k] for k in ("piper", "piper_slow", "piper_short")}
    files["piper_fast"] = piper_wav(store, "Hey Jarvis, what is the weather like?", d / "piper_fast.wav", 0.85)
    for voice, speed in MICRO_ESPEAK:
        files[f"espeak_{voice}_{speed}"] = espeak_wav(WAKE_TEXT, d / f"espeak_{voice}_{speed}.wav", voice, speed)
    return files


def test_micro_cutoff_and_window_come_from_its_manifest(micro):
    spec = micro.specs["hey_jarvis_v2"]
    assert (spec.engine, spec.threshold, spec.sliding_window, spec.phrase) == ("microwakeword", 0.97, 5,
                                                                               "hey jarvis")
    assert spec.path.suffix == ".tflite"


def test_micro_detects_the_wake_phrase(micro, micro_speech):
    for name, path in micro_speech.items():
        # a little silence first: the streaming model needs its first 150 ms of features before it can score
        audio = np.concatenate([np.zeros(3200, np.int16), read_wav(path), np.zeros(8000, np.int16)])
        dets = run(micro, audio)
        assert [d.model for d in dets] == ["hey_jarvis_v2"], (name, dets, micro.max_scores)
        assert 0.4 < dets[0].t < 2.2, (name, dets)
        assert dets[0].score >= 0.97


def test_micro_negatives_and_near_misses_do_not_fire(micro, speech, ps_data, tmp_path, store):
    files = sorted((ps_data / "librivox").glob("*.wav")) + [speech["piper_negative"]]
    # Piper's noise-free rendering: its random variation moves these scores run to run ("Hey Travis" scored
    # 0.02-0.90 over six renderings, one CI run's reached 0.9703 and fired); the wake bench measures that spread
    files += [piper_wav(store, t, tmp_path / f"near{i}.wav", noise=False) for i, t in enumerate(NEAR_MISSES)]
    worst = {}
    for path in files:
        dets = run(micro, read_wav(path))
        assert dets == [], (path.name, dets)
        worst[path.name] = round(micro.max_scores.get("hey_jarvis_v2", 0.0), 3)
    print("max microWakeWord scores on negatives:", worst)
    # read speech stays far below the cutoff; near misses do not fire but may come close ("Hey Travis": 0.958)
    assert max(v for k, v in worst.items() if not k.startswith("near")) < 0.1


def test_micro_detections_do_not_depend_on_chunking(micro, micro_speech):
    audio = np.concatenate([read_wav(micro_speech["piper"]), np.zeros(16000, np.int16),
                            read_wav(micro_speech["piper_slow"]), np.zeros(8000, np.int16)])
    reference = run(micro, audio, 160)  # the engine's own 10 ms step
    assert len(reference) == 2
    for chunk in (1280, 480, 1000, 16000, len(audio)):
        assert run(micro, audio, chunk) == reference, chunk


def test_micro_reset_forgets_the_wake_word(micro, micro_speech):
    audio = read_wav(micro_speech["piper_short"])
    assert len(run(micro, audio)) == 1
    micro.reset()
    micro.max_scores.clear()
    micro.process(np.zeros(16000, np.int16), 1.0)
    assert micro.max_scores.get("hey_jarvis_v2", 0.0) < 0.05


def test_micro_cutoff_and_window_are_overridable(settings, micro_speech):
    audio = read_wav(micro_speech["piper"])
    unreachable = WakeDetector.from_settings(with_models(settings, dataclasses.replace(MICRO, threshold=1.0)))
    assert run(unreachable, audio) == [] and unreachable.max_scores["hey_jarvis_v2"] > 0.97
    one = WakeDetector.from_settings(with_models(settings, dataclasses.replace(MICRO, sliding_window=1)))
    assert one.specs["hey_jarvis_v2"].sliding_window == 1
    dets = run(one, audio)
    assert len(dets) == 1
    # a window of 1 decides on the first high score; the mean of 5 needs 4 more (30 ms each)
    five = run(WakeDetector.from_settings(with_models(settings, MICRO)), audio)
    assert five[0].t - dets[0].t == pytest.approx(0.12, abs=0.061)


def test_micro_guard_and_sensitivity_act_on_the_headroom(micro, micro_speech):
    from edge_agent.wake_micro import MicroEngine

    assert MicroEngine.threshold(0.97, 0.0, None) == 0.97
    assert MicroEngine.threshold(0.97, 0.0, 0.5) == pytest.approx(0.97)  # the middle keeps the model's cutoff
    assert MicroEngine.threshold(0.97, 0.0, 0.95) == pytest.approx(0.997)  # least sensitive
    assert MicroEngine.threshold(0.97, 0.0, 0.05) == pytest.approx(0.943)  # most sensitive
    assert MicroEngine.threshold(0.97, 0.5, None) == pytest.approx(0.985)
    audio = read_wav(micro_speech["piper"])
    try:
        micro.threshold_boost = 1.0  # the cutoff becomes 1.0: the quantized output never reaches it (max 0.996)
        assert run(micro, audio) == []
    finally:
        micro.threshold_boost = 0.0
    assert len(run(micro, audio)) == 1


def test_both_engines_in_one_detector(settings, speech):
    det = WakeDetector.from_settings(with_models(settings, WakeModelSettings("hey_jarvis", 0.5), MICRO))
    assert det.names == ["hey_jarvis", "hey_jarvis_v2"]
    dets = run(det, read_wav(speech["piper"]))
    assert sorted(d.model for d in dets) == ["hey_jarvis", "hey_jarvis_v2"]
    assert dets == sorted(dets, key=lambda d: d.t)
    assert abs(dets[0].t - dets[1].t) < 0.3


def test_engine_and_model_must_match(settings, tmp_path):
    with pytest.raises(ConfigError, match=r"wake.models\[0\]: 'hey_jarvis_v2' is a .tflite file") as e:
        WakeDetector.from_settings(with_models(settings, WakeModelSettings("hey_jarvis_v2", engine="openwakeword")))
    assert "engine: microwakeword" in (e.value.fix or "")
    with pytest.raises(ConfigError, match="is a .onnx file") as e:
        WakeDetector.from_settings(with_models(settings, WakeModelSettings("hey_jarvis", engine="microwakeword")))
    assert "engine: openwakeword" in (e.value.fix or "")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not load"):
        WakeDetector.from_settings(with_models(settings, WakeModelSettings(str(junk), engine="microwakeword")))
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a .bin file, which no wake engine runs"):
        WakeDetector.from_settings(with_models(settings, WakeModelSettings(str(other))))


def test_auto_engine_follows_the_model_file(settings):
    """engine: auto (the default) runs a .tflite on microWakeWord and an .onnx on openWakeWord; the default model is
    microWakeWord's hey_jarvis_v2 with its manifest's cutoff and window."""
    from edge_agent.wake import resolve_spec

    default = WakeModelSettings()
    assert (default.model, default.engine) == ("hey_jarvis_v2", "auto")
    spec = resolve_spec(settings, default)
    assert (spec.engine, spec.threshold, spec.sliding_window) == ("microwakeword", 0.97, 5)
    assert resolve_spec(settings, WakeModelSettings("hey_jarvis")).engine == "openwakeword"


def test_config_names_the_engine_key():
    from edge_agent.config import load_settings

    with pytest.raises(ConfigError, match=r"wake.models\[0\].engine: 'porcupine' is not a wake engine; allowed: "
                                          "auto, microwakeword, openwakeword"):
        load_settings(data={"wake": {"models": [{"model": "hey_jarvis", "engine": "porcupine"}]}})
    with pytest.raises(ConfigError, match=r"wake.models\[0\].sliding_window: 0 is out of range"):
        load_settings(data={"wake": {"models": [{"model": "hey_jarvis", "sliding_window": 0}]}})
    s = load_settings(data={"wake": {"models": [{"model": "hey_jarvis_v2", "engine": "microwakeword",
                                                  "threshold": 0.9, "sliding_window": 3}]}})
    assert (s.wake.models[0].threshold, s.wake.models[0].sliding_window) == (0.9, 3)


def test_cli_wake_runs_a_micro_model(speech):
    out = json.loads(run_cli("wake", str(speech["piper"]), "--model", "hey_jarvis_v2", "--json", check=True).stdout)
    assert [d["model"] for d in out["detections"]] == ["hey_jarvis_v2"]
    assert out["cutoffs"] == {"hey_jarvis_v2": 0.97}
