"""Piper TTS with the real joe-medium voice: `edge-agent say`, streaming, the phrase cache, cues, and a round trip
through faster-whisper tiny.en (the words spoken are the words heard)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import require_model, run_cli

from edge_agent.audio import read_wav, resample, rms_dbfs
from edge_agent.errors import AudioError, TtsError
from edge_agent.tts import CUE_PEAK, CUE_TONES, PhraseCache, PiperTts, cue_tone, from_settings

pytestmark = pytest.mark.slow

SAY_TEXT = "The kitchen light is now on and the living room lamp is set to forty percent."  # 16 words
# joe-medium speaks briskly: 0.24-0.27 s per word measured on sentences like these (VITS durations are stochastic),
# so the lower bound of "a plausible length" sits a little under the textbook 0.25 s per word.
SECONDS_PER_WORD = (0.2, 0.7)
THREE = "The front door is locked. The garage door is closed. The porch light is off."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="module")
def tts(settings, store) -> PiperTts:
    require_model(store, "piper_joe_medium")
    voice = from_settings(settings)
    voice.load()
    voice.warmup()
    return voice


@pytest.fixture(scope="module")
def whisper(store):
    from faster_whisper import WhisperModel

    path = require_model(store, "whisper_tiny_en")
    return WhisperModel(str(path if path.is_dir() else path.parent), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(model, audio_16k: np.ndarray) -> str:
    segments, _ = model.transcribe(audio_16k.astype(np.float32) / 32768.0, language="en", beam_size=1)
    return " ".join(s.text for s in segments)


@pytest.fixture(scope="module")
def said(tmp_path_factory) -> tuple[dict, Path]:
    """`edge-agent say TEXT -o WAV --json` through the real entry point, once for the module."""
    wav = tmp_path_factory.mktemp("say") / "say.wav"
    proc = run_cli("say", SAY_TEXT, "-o", str(wav), "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), wav


# --------------------------------------------------------------------------------------------------- say


def test_say_writes_a_wav_at_the_voice_rate(said, tts) -> None:
    result, wav = said
    with wave.open(str(wav), "rb") as w:
        rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        audio = np.frombuffer(w.readframes(frames), dtype="<i2")
    assert rate == 22050 == tts.sample_rate == result["sample_rate"]
    assert (channels, width) == (1, 2)
    assert result["output"] == str(wav)
    duration = frames / rate
    assert duration == pytest.approx(result["duration_s"], abs=0.01)
    assert rms_dbfs(audio) > -40, "the WAV is (nearly) silent"
    per_word = duration / len(words(SAY_TEXT))
    assert SECONDS_PER_WORD[0] <= per_word <= SECONDS_PER_WORD[1], f"{duration:.2f} s for {len(words(SAY_TEXT))} words"
    assert 0 < result["synth_s"] < duration, result  # faster than real time
    assert 0 < result["first_audio_s"] <= result["synth_s"] + 0.01, result  # one sentence: first audio = all of it
    assert result["sentences"] == 1


def test_say_round_trip_through_whisper(said, whisper) -> None:
    _, wav = said
    heard = set(words(transcribe(whisper, read_wav(wav))))
    for key in ("kitchen", "light", "living", "room", "lamp"):
        assert key in heard, f"{key!r} not heard in {sorted(heard)}"
    assert heard & {"40", "forty", "percent"}, sorted(heard)  # tiny.en writes "40%" or "forty percent"


def test_round_trip_of_streamed_sentences(tts, whisper) -> None:
    audio = tts.synthesize_all(THREE)
    text = transcribe(whisper, resample(audio, tts.sample_rate, 16000))
    heard = set(words(text))
    # words tiny.en heard in 8 of 8 syntheses (Piper is stochastic; "good night and sleep well" once came back as
    # "it nightens leave well")
    for key in ("front", "door", "locked", "garage", "closed", "porch", "light", "off"):
        assert key in heard, f"{key!r} not heard in {text!r}"


def test_longer_text_gives_longer_audio(tts) -> None:
    texts = ["Okay.", "The timer is set for ten minutes.",
             "The timer is set for ten minutes, and I will remind you to check the oven when it rings."]
    durations = [len(tts.synthesize_all(t)) / tts.sample_rate for t in texts]
    assert durations[0] < durations[1] < durations[2], durations
    for t, d in zip(texts[1:], durations[1:], strict=True):
        assert SECONDS_PER_WORD[0] <= d / len(words(t)) <= SECONDS_PER_WORD[1], (t, d)


def test_say_empty_text_is_a_clear_error() -> None:
    for text in ("  ", '{"tool": "turn_on"}'):
        proc = run_cli("say", text, "-o", "/tmp/never-written.wav", timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "error[tts]: nothing to say" in proc.stderr and "Traceback" not in proc.stderr
        assert "fix:" in proc.stderr


def test_say_without_output_device_says_to_use_a_wav(tmp_path) -> None:
    # A speaker that exists on no machine: the same code path as a machine without any output device, through the
    # real entry point (a missing default device is covered with a stand-in sounddevice below).
    cfg = tmp_path / "config.yaml"
    cfg.write_text("audio:\n  output_device: no-such-speaker-3f9\n")
    t0 = time.monotonic()
    proc = run_cli("-c", str(cfg), "say", "Hello there.", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error[audio]" in proc.stderr and "no-such-speaker-3f9" in proc.stderr
    assert "-o OUT.wav" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 20  # refused before the voice is loaded


# --------------------------------------------------------------------------------------------------- playback path


class FakeSd:
    """Stands in for sounddevice: records what would be played (the voice and text stay real)."""

    PortAudioError = type("PortAudioError", (Exception,), {})

    def __init__(self, has_output: bool) -> None:
        self.has_output = has_output
        self.played: list[tuple[np.ndarray, int, float]] = []

    def query_devices(self, device=None, kind=None):
        if not self.has_output:
            raise self.PortAudioError("Error querying device -1")
        return {"name": "fake", "max_output_channels": 2, "default_samplerate": 48000.0}

    def check_output_settings(self, **kw) -> None:
        if kw["samplerate"] != 48000:
            raise self.PortAudioError("Invalid sample rate")

    def OutputStream(self, samplerate, channels, dtype, device=None):  # noqa: N802 - sounddevice's name
        fake = self

        class Stream:
            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                pass

            def write(self, block: np.ndarray) -> None:
                assert block.dtype == np.int16 and block.shape[1] == channels == 1
                fake.played.append((block[:, 0].copy(), samplerate, time.monotonic()))

        return Stream()


def _args(text: str, output: str | None = None, as_json: bool = True):
    import argparse

    return argparse.Namespace(text=text, output=output, json=as_json)


def test_cli_say_no_output_device_raises_the_hint(settings, monkeypatch) -> None:
    import sys

    from edge_agent.say_cli import cli_say

    monkeypatch.setitem(sys.modules, "sounddevice", FakeSd(has_output=False))
    with pytest.raises(AudioError) as e:
        cli_say(_args("Hello there."), settings)
    assert "no default audio output device" in e.value.message and "-o OUT.wav" in (e.value.fix or "")


def test_cli_say_plays_each_sentence_resampled_for_the_device(settings, monkeypatch, capsys) -> None:
    import sys

    from edge_agent.say_cli import cli_say

    fake = FakeSd(has_output=True)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert cli_say(_args(THREE), settings) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["output"] == "speaker" and result["sentences"] == 3
    assert [rate for _, rate, _ in fake.played] == [48000] * 3  # the device refused 22050 Hz: converted at the edge
    played_s = sum(len(a) for a, _, _ in fake.played) / 48000
    assert played_s == pytest.approx(result["duration_s"], abs=0.01)
    assert all(rms_dbfs(a) > -40 for a, _, _ in fake.played)


@pytest.fixture
def pulse_speaker():
    """The shared virtual PulseAudio (tests/pulse.py): a real speaker path without a sound card, recorded
    continuously (a silent keep-alive stream runs its clock, so a gap between sentences would show as silence)."""
    from pulse import VirtualAudio

    va = VirtualAudio().start()
    try:
        yield va
    finally:
        va.stop()


def test_say_plays_on_the_speaker_without_gaps(pulse_speaker) -> None:
    va = pulse_speaker
    va.start_recording()
    proc = run_cli("say", THREE, "--json", env={k: va.env[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")},
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    heard = va.stop_recording()
    assert result["output"] == "speaker" and result["sentences"] == 3
    voiced = np.flatnonzero(np.abs(heard) > 300)
    assert len(voiced), "nothing reached the speaker"
    span = (voiced[-1] - voiced[0]) / va.rec_rate
    # all three sentences arrived, back to back: none missing, no waiting for synthesis in between
    assert 0.8 * result["duration_s"] <= span <= result["duration_s"] + 0.3, (span, result)
    assert rms_dbfs(heard[voiced[0]:voiced[-1]]) > -35


# --------------------------------------------------------------------------------------------------- streaming


def test_streaming_yields_the_first_sentence_before_the_rest_is_done(tts) -> None:
    t0 = time.monotonic()
    stamps, chunks = [], []
    for chunk in tts.synthesize(THREE):
        stamps.append(time.monotonic() - t0)
        chunks.append(chunk)
    total = time.monotonic() - t0
    assert len(chunks) == 3
    assert all(c.dtype == np.int16 and rms_dbfs(c) > -40 for c in chunks)
    assert stamps[0] < stamps[1] < stamps[2] <= total
    assert stamps[0] < 0.6 * total, (stamps, total)
    st = tts.last_stats
    assert st is not None and st.chunks == 3 and st.first_audio_s == pytest.approx(stamps[0], abs=0.05)
    assert st.rtf < 1.0, f"slower than real time: RTF {st.rtf:.2f}"


def test_interrupting_the_generator_stops_synthesis(tts) -> None:
    gen = tts.synthesize(THREE)
    first = next(gen)
    gen.close()  # barge-in: the consumer stops listening
    assert len(first) > 0 and tts.last_stats is not None and tts.last_stats.chunks == 1


def test_markup_only_text_yields_nothing(tts) -> None:
    assert list(tts.synthesize('**  ``` {"a": 1} ``` **')) == []
    assert len(tts.synthesize_all("")) == 0


def test_length_scale_and_volume_are_applied(tts, settings) -> None:
    text = "Turning on the hallway light and setting the bedroom thermostat to twenty one degrees."
    plain = dataclasses.replace(settings.tts, sentence_silence_s=0.0)
    normal = tts.with_settings(plain).synthesize_all(text)
    slow = tts.with_settings(dataclasses.replace(plain, length_scale=1.5)).synthesize_all(text)
    quiet = tts.with_settings(dataclasses.replace(plain, volume=0.5)).synthesize_all(text)
    # Piper's phoneme durations are stochastic (same settings: +-10 %) and the pauses do not all stretch: x1.5 on
    # the length scale measured x1.26-1.61 here
    assert 1.15 <= len(slow) / len(normal) <= 1.8, len(slow) / len(normal)
    # Piper normalizes each sentence to full scale, then applies the gain
    assert np.abs(normal).max() > 30000
    assert 15000 <= np.abs(quiet).max() <= 16800


# --------------------------------------------------------------------------------------------------- phrases, cues


def test_phrase_cache_returns_identical_audio_far_faster(tts) -> None:
    cache = PhraseCache(tts, {"sorry": "Sorry, I didn't catch that."})
    t0 = time.perf_counter()
    first = cache.get("sorry")
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = cache.get("sorry")
    t_second = time.perf_counter() - t0
    assert np.array_equal(first, second) and rms_dbfs(second) > -40
    assert cache.get("Sorry, I didn't catch that.") is first  # the same phrase by its text
    assert t_second < t_first / 100, (t_first, t_second)
    assert (cache.hits, cache.misses) == (2, 1)
    with pytest.raises(ValueError):
        second[0] = 1  # stored audio is read-only: no consumer can corrupt it


def test_prewarm_and_cached(tts) -> None:
    voice = tts.with_settings(tts.settings)
    spent = voice.prewarm(["not_understood", "done"])
    assert spent > 0 and "not_understood" in voice.phrases and "done" in voice.phrases
    assert "error" not in voice.phrases
    t0 = time.perf_counter()
    audio = voice.cached("not_understood")
    assert time.perf_counter() - t0 < 0.005 and len(audio) > 0.5 * voice.sample_rate


def test_phrase_cache_is_bounded(tts) -> None:
    cache = PhraseCache(tts, {}, max_entries=2)
    for t in ("One.", "Two.", "Three."):
        cache.get(t)
    assert len(cache) == 2 and "One." not in cache and "Three." in cache
    cache.discard("Three.")  # a stale reply (the last minute's time) is forgotten; one not held is fine
    cache.discard("Never said.")
    assert len(cache) == 1 and "Three." not in cache and "Two." in cache


def test_cue_tones(tts) -> None:
    rate = tts.sample_rate
    for kind in CUE_TONES:
        cue = tts.cue_tone(kind)
        assert cue.dtype == np.int16 and 0.15 < len(cue) / rate < 0.35
        assert np.abs(cue).max() <= CUE_PEAK * 32767 + 1
        assert abs(int(cue[0])) < 200 and abs(int(cue[-1])) < 200  # faded in and out: no click

    def dominant_hz(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x.astype(np.float64)))
        return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])

    def halves(x: np.ndarray) -> tuple[float, float]:
        voiced = np.flatnonzero(np.abs(x) > 50)
        x = x[voiced[0]:voiced[-1]]
        return dominant_hz(x[: len(x) // 2]), dominant_hz(x[len(x) // 2:])

    lo, hi = halves(tts.cue_tone("listening"))
    assert lo < hi and abs(lo - 659) < 30 and abs(hi - 880) < 30  # rising: "I'm listening"
    hi, lo = halves(tts.cue_tone("timeout"))
    assert hi > lo  # falling: "I stopped listening"
    assert tts.cue_tone("listening") is tts.cue_tone("listening")
    assert len(cue_tone("listening", 16000)) / 16000 == pytest.approx(len(tts.cue_tone("listening")) / rate, abs=0.01)
    with pytest.raises(TtsError):
        tts.cue_tone("fanfare")


def test_missing_or_broken_voice_files_are_clear_errors(tmp_path, settings) -> None:
    from edge_agent.errors import ModelError

    with pytest.raises(ModelError, match="Piper voice not found"):
        PiperTts(tmp_path / "nope.onnx", settings.tts).load()
    bare = tmp_path / "voice.onnx"
    bare.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"\.onnx\.json"):
        PiperTts(bare, settings.tts).load()
    (tmp_path / "voice.onnx.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load the Piper voice") as e:
        PiperTts(bare, settings.tts).load()
    assert e.value.fix
    with pytest.raises(TtsError, match="not loaded"):
        list(PiperTts(bare, settings.tts).synthesize("Hello."))
    assert PiperTts.from_settings(settings).voice_path == from_settings(settings).voice_path
    with pytest.raises(ModelError, match="not a tts model"):
        from_settings(dataclasses.replace(settings, tts=dataclasses.replace(settings.tts, voice="whisper_tiny_en")))


def test_release_memory_shrinks_the_arena_after_each_run_and_can_be_turned_off(tts, settings) -> None:
    """tts.release_memory (default on) runs every Piper inference with ONNX Runtime's arena shrinkage; off, the
    plain session keeps its arena. Both speak the same text at the same length."""
    import onnxruntime as ort

    assert settings.tts.release_memory is True
    opts = tts.voice.session._run_options
    assert opts.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    keep = PiperTts(tts.voice_path, dataclasses.replace(settings.tts, release_memory=False))
    keep.load()
    assert isinstance(keep.voice.session, ort.InferenceSession)
    text = "The front door is locked and the porch light is off."
    lengths = [len(v.synthesize_all(text)) / v.sample_rate for v in (tts, keep)]
    assert lengths[0] > 1.0 and abs(lengths[0] - lengths[1]) < 0.25 * lengths[1], lengths
