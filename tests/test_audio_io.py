"""Audio I/O rules with plain values (the real devices run in tests/test_e2e_pulse.py and tests/test_faults.py).

The microphone watchdog: digital silence means the device is gone, and a microphone that stays silent after
reopening (a hardware mute) is retried ever more slowly instead of every few seconds. The file sink: the output WAV
covers the input's length, so the two line up in an editor."""

from __future__ import annotations

import wave

import numpy as np

from edge_agent.audio import InputConverter
from edge_agent.audio_io import MIC_DEAD_AIR_MAX_S, MIC_DEAD_AIR_S, MicSource, Segment, Speaker
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
