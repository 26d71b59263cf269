"""Audio I/O rules with plain values, a fake 48 kHz-only output device for the speaker's rate fallback, and the real
capture path on virtual PulseAudio (more real devices run in tests/test_e2e_pulse.py and tests/test_faults.py).

The microphone watchdog: digital silence means the device is gone, and a microphone that stays silent after
reopening (a hardware mute) is retried ever more slowly instead of every few seconds. The file sink: the output WAV
covers the input's length, so the two line up in an editor."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent import audio_io
from edge_agent.audio import InputConverter
from edge_agent.audio_io import (
    MIC_DEAD_AIR_MAX_S,
    MIC_DEAD_AIR_S,
    MicSource,
    Segment,
    Speaker,
    choose_input_format,
    for_device,
    output_rates,
    played_samples,
)
from edge_agent.config import load_settings

BLOCK = 1280


def _mic() -> MicSource:
    mic = MicSource(load_settings(data={}).audio)
    mic.converter = InputConverter(16000, 1)
    return mic


def _feed(mic: MicSource, t: float, sound: bool):
    block = np.zeros((BLOCK, 1), dtype=np.int16)
    if sound:
        block[::7] = 3  # a real microphone's noise floor
    mic.queue.put((t, block))
    return mic.read(timeout=0.0)


def _seconds_until_lost(mic: MicSource, t0: float) -> float:
    t = t0
    mic.t_last_sound, mic.error = t0, None
    while _feed(mic, t, False) is not None:
        t += 0.08
        assert t - t0 < 10 * MIC_DEAD_AIR_MAX_S
    return t - t0


def test_dead_air_backs_off_and_resets_on_sound():
    mic = _mic()
    assert _feed(mic, 0.0, True) is not None
    first = _seconds_until_lost(mic, 0.0)
    assert MIC_DEAD_AIR_S <= first < MIC_DEAD_AIR_S + 0.2
    assert "digital silence" in mic.error
    second = _seconds_until_lost(mic, 100.0)
    third = _seconds_until_lost(mic, 1000.0)
    assert 2 * MIC_DEAD_AIR_S <= second < 2 * MIC_DEAD_AIR_S + 0.2
    assert 4 * MIC_DEAD_AIR_S <= third < 4 * MIC_DEAD_AIR_S + 0.2
    for _ in range(10):
        last = _seconds_until_lost(mic, 5000.0)
    assert MIC_DEAD_AIR_MAX_S <= last < MIC_DEAD_AIR_MAX_S + 0.2
    # sound again: the next silence is judged by the short limit
    assert _feed(mic, 9000.0, True) is not None
    assert MIC_DEAD_AIR_S <= _seconds_until_lost(mic, 9000.0) < MIC_DEAD_AIR_S + 0.2


def test_file_sink_pads_the_output_to_the_input_length(tmp_path):
    clock = [100.0]
    spk = Speaker(22050, file=tmp_path / "out.wav", realtime=False, clock=lambda: clock[0])
    spk.start()
    tone = (np.sin(np.arange(2205) / 5) * 8000).astype(np.int16)  # 0.1 s
    clock[0] = 100.5
    spk.play(Segment(audio=tone, rate=22050, text="x"))
    assert spk.wait_idle(5)
    spk.close(min_s=3.0)
    with wave.open(str(tmp_path / "out.wav")) as w:
        n = w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype=np.int16)
    assert n == 3 * 22050, n
    loud = np.flatnonzero(np.abs(data) > 1000)
    assert 0.49 < loud[0] / 22050 < 0.52, "the reply is not at its clock position"
    assert not data[int(0.7 * 22050):].any(), "the padding must be silence"


def test_each_segment_records_when_its_first_block_reached_the_device(tmp_path):
    clock = [10.0]
    firsts: list[float] = []
    spk = Speaker(22050, file=tmp_path / "out.wav", realtime=False, clock=lambda: clock[0])
    spk.on_first_audio = firsts.append
    spk.start()
    tone = (np.sin(np.arange(2205) / 5) * 8000).astype(np.int16)
    a, b = Segment(audio=tone, rate=22050, text="a"), Segment(audio=tone, rate=22050, text="b")
    assert a.t_first is None
    clock[0] = 11.0
    spk.play(a)
    assert a.done.wait(5)
    clock[0] = 12.5
    spk.play(b)
    assert b.done.wait(5)
    spk.close()
    assert a.t_first == 11.0 and b.t_first == 12.5
    assert firsts == [11.0], "on_first_audio fires once per reply, as before"


# ------------------------------------------------------------------------------------------- capture format


def test_capture_format_prefers_16k_mono_then_the_cheapest_conversion():
    def device(*accepted):
        return lambda rate, channels: (rate, channels) in accepted

    assert choose_input_format(device((16000, 1), (48000, 2)), 48000, 2) == (16000, 1)
    # a ReSpeaker-style array that only opens all its channels: channels are mixed, nothing is resampled
    assert choose_input_format(device((16000, 6)), 16000, 6) == (16000, 6)
    assert choose_input_format(device((16000, 2), (48000, 1)), 48000, 2) == (16000, 2)
    assert choose_input_format(device((48000, 1), (48000, 2)), 48000, 2) == (48000, 1)
    assert choose_input_format(device((44100, 4)), 44100, 4) == (44100, 4)
    # nothing accepted: the device's own rate, opening then reports the device's error
    assert choose_input_format(device(), 48000, 8) == (48000, 2)
    assert choose_input_format(device(), 0, 1) == (16000, 1)


# ------------------------------------------------------------------------------------------- speaker rate


def _tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * 32768 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _frequency(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)), 8 * len(x)))
    return float(np.argmax(spec)) * rate / (8 * len(x))


def test_resampling_rule_at_the_output_edge():
    assert output_rates(22050, 48000.0) == [22050, 48000]
    assert output_rates(22050, 22050.0) == [22050]
    assert output_rates(22050, None) == [22050]
    seg = _tone(22050, 0.5)
    assert for_device(seg, 22050, 22050) is seg
    out = for_device(seg, 22050, 48000)
    assert out.dtype == np.int16 and len(out) == 24000  # same duration
    mid = out[2400:-2400]
    assert abs(_frequency(mid, 48000) - 440.0) < 0.5
    assert abs(np.abs(mid).max() - np.abs(seg).max()) <= 0.01 * np.abs(seg).max()  # same level
    # what has been played of the segment, in its own samples: proportional, exact at the ends
    assert played_samples(0, 11025, 24000) == 0
    assert played_samples(12000, 11025, 24000) == 5512
    assert played_samples(23999, 11025, 24000) < 11025
    assert played_samples(24000, 11025, 24000) == 11025
    assert played_samples(3, 10, 3) == 10  # no float rounding short of the end
    assert all(played_samples(i, 11025, 24000) <= played_samples(i + 960, 11025, 24000) for i in range(0, 24000, 960))


class _FakeOutput:
    """A device that only plays at 48 kHz (an HDMI or USB output): refuses any other rate, records what it gets."""

    refused: list[int] = []
    opened: list[_FakeOutput] = []

    def __init__(self, *, samplerate, blocksize, **kw):
        if samplerate != 48000:
            _FakeOutput.refused.append(samplerate)
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")
        self.rate, self.blocks, self.active = samplerate, [], False
        _FakeOutput.opened.append(self)

    def start(self):
        self.active = True

    def write(self, block):
        assert block.dtype == np.int16 and block.shape[1] == 1
        self.blocks.append(block[:, 0].copy())
        time.sleep(len(block) / self.rate / 4)  # paced (faster than real time), like a device's buffer

    def stop(self):
        self.active = False

    abort = stop

    def close(self):
        pass


def test_speaker_falls_back_to_the_devices_rate_and_resamples_each_segment(monkeypatch, caplog):
    fake_sd = types.SimpleNamespace(OutputStream=_FakeOutput,
                                    query_devices=lambda dev: {"default_samplerate": 48000.0, "name": "hdmi"})
    monkeypatch.setattr(audio_io, "_sd", lambda: fake_sd)
    monkeypatch.setattr(audio_io, "find_device", lambda spec, kind: 0)
    _FakeOutput.refused, _FakeOutput.opened = [], []
    spk = Speaker(22050)
    with caplog.at_level(logging.WARNING, logger="edge_agent.audio_io"):
        spk.start()
    try:
        assert _FakeOutput.refused == [22050] and spk.rate == 48000 and spk.voice_rate == 22050
        assert any("refused 22050 Hz" in r.getMessage() for r in caplog.records)
        stream = _FakeOutput.opened[0]
        seg = Segment(audio=_tone(22050, 0.4), rate=22050, text="hello")
        spk.play(seg)
        assert seg.done.wait(10)
        assert seg.played == len(seg.audio) and seg.fraction_played == 1.0
        played = np.concatenate(stream.blocks)
        loud = np.flatnonzero(np.abs(played) > 2000)
        reply = played[loud[0]:loud[-1] + 1]
        assert abs(len(reply) - 0.4 * 48000) < 0.002 * 48000, len(reply)  # 0.4 s at the device's rate
        assert abs(_frequency(reply, 48000) - 440.0) < 1.0  # not pitched up/down by a rate mix-up
        assert all(len(b) == 960 for b in stream.blocks[:-1])  # 20 ms blocks at 48 kHz
    finally:
        spk.close()


# ------------------------------------------------------------------------------------------- real PulseAudio

CAPTURE_SCRIPT = r"""
import json, sys, time
import numpy as np
from edge_agent.audio_io import MicSource
from edge_agent.config import load_settings
rate, channels, seconds, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
mic = MicSource(load_settings(data={}).audio, rate=rate or None, channels=channels or None)
mic.open()
print(json.dumps({"rate": mic.converter.rate, "channels": mic.converter.channels}), flush=True)
got, n, deadline = [], 0, time.monotonic() + 30
while n < seconds * 16000 and time.monotonic() < deadline:
    c = mic.read(timeout=1.0)
    if c is not None:
        got.append(c.samples); n += len(c.samples)
mic.close()
np.save(out, np.concatenate(got) if got else np.zeros(0, dtype=np.int16))
"""


@pytest.mark.slow  # starts a PulseAudio daemon and two capture processes (about 8 s)
def test_stereo_48k_capture_through_pulseaudio_has_the_level_of_mono_16k(tmp_path):
    """The real sounddevice/PortAudio path: PulseAudio upmixes and resamples its 16 kHz mono pipe source for a
    stereo 48 kHz client; MicSource must bring it back at the level a 16 kHz mono client gets."""
    from pulse import VirtualAudio

    va = VirtualAudio().start()
    procs = []
    try:
        for rate, channels in ((0, 0), (48000, 2)):  # 0: MicSource chooses (16 kHz mono here)
            out = tmp_path / f"cap-{rate}-{channels}.npy"
            p = subprocess.Popen([sys.executable, "-c", CAPTURE_SCRIPT, str(rate), str(channels), "4.0", str(out)],
                                 env=dict(va.env, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append((p, out))
        formats = []
        for p, _ in procs:
            line = p.stdout.readline()  # printed once the stream is open (or empty when it failed)
            assert line, f"MicSource did not open on PulseAudio: {p.stderr.read()[-2000:]}"
            formats.append(json.loads(line))
        assert formats == [{"rate": 16000, "channels": 1}, {"rate": 48000, "channels": 2}]
        va.say(_tone(16000, 1.0, amp=0.1), wait=True)
        peaks, freqs = [], []
        for p, out in procs:
            assert p.wait(60) == 0, p.stderr.read()[-2000:]
            x = np.load(out)
            loud = np.flatnonzero(np.abs(x) > 1000)
            assert len(loud) > 0.8 * 16000, "the sine did not arrive"
            mid = x[loud[0] + 1600:loud[-1] - 1600]  # the middle 0.8 s of the 1 s sine
            peaks.append(float(np.abs(mid).max()))
            freqs.append(_frequency(mid, 16000))
        mono, stereo = peaks
        print(f"peaks: mono 16 kHz {mono:.0f}, stereo 48 kHz {stereo:.0f}; frequencies {freqs}")
        assert abs(mono - 3277) <= 0.03 * 3277, f"mono 16 kHz peak {mono}"
        assert abs(stereo - mono) <= 0.03 * mono, f"stereo 48 kHz peak {stereo} vs mono 16 kHz {mono}"
        assert all(abs(f - 440.0) < 1.0 for f in freqs), freqs
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        va.stop()
