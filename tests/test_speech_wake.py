"""The suite's own wake phrases (tests/speech.py: ``wake_wav``) are checked against the default wake model and its
second look, as its requests are checked against the STT: the check keeps a rendering the device wakes on and hears
as "hey jarvis", and refuses a near miss and silence."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio import SAMPLE_RATE, read_wav

from .conftest import piper_wav
from .speech import WakeCheck, compose, wake_wav

pytestmark = pytest.mark.slow


def test_a_checked_wake_phrase_wakes_the_default_model_and_is_heard_as_the_phrase(store, tmp_path):
    check = WakeCheck.get()
    assert check.model == "hey_jarvis_v2"  # the default model, whose manifest band (0.02) turns the look on
    wav = wake_wav(store, "Hey Jarvis!", tmp_path / "wake.wav")
    assert check.verdict(read_wav(wav)) is None
    assert wake_wav(store, "Hey Jarvis!", tmp_path / "wake.wav") == wav  # cached: the same file, not drawn again
    # in a clip the checked rendering is what compose puts where ("wake", text) stands
    clip = compose(store, [("silence", 0.2), ("wake", "Hey Jarvis!")], tmp_path / "clip.wav")
    assert len(read_wav(clip)) > int(0.2 * SAMPLE_RATE) + SAMPLE_RATE // 4


def test_the_check_refuses_a_near_miss_and_silence(store, tmp_path):
    check = WakeCheck.get()
    near = read_wav(piper_wav(store, "Hey Jarred, where are you?", tmp_path / "near.wav", noise=False))
    why = check.verdict(near)
    assert why is not None and ("not detected" in why or "heard as" in why), why
    assert check.verdict(np.zeros(SAMPLE_RATE, np.int16)) == "not detected by hey_jarvis_v2"
