"""The second look through the real loop, with real speech: openWakeWord, Silero VAD, Whisper tiny.en, the brain and
Piper in-process (tests/test_engine.py's harness), a scripted real-time microphone.

The band is set wide (1.0: every detection is doubtful) so that both utterances get a second look: "Hey Jarvis, turn
on the kitchen light." must be accepted and answered; the near miss "Hey Jarred, where are you?" (which fires
openWakeWord's hey_jarvis at 0.6-0.97, cutoff 0.5, depending on where the 80 ms frames fall) must be dropped while
it still listens, silently.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.wake_verify import NAME_PROB_MIN

from .speech import compose
from .test_engine import Harness, light_clips, parts  # noqa: F401 - parts is the module's model fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def looked(parts):  # noqa: F811
    from edge_agent.config import WakeModelSettings
    from edge_agent.wake import WakeDetector

    s = parts["s"]
    wide = WakeModelSettings("hey_jarvis", second_look_band=1.0)  # openWakeWord (the default is microWakeWord)
    s2 = dataclasses.replace(s, wake=dataclasses.replace(s.wake, models=[wide]))
    return {**parts, "s": s2, "wake": WakeDetector.from_settings(s2)}


def _turn_within(h: Harness, n: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while len(h.engine.history) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(h.engine.history) >= n


def test_a_doubtful_wake_word_is_kept_and_a_near_miss_is_dropped(looked, store, tmp_path):
    d = tmp_path
    # the near miss fires the model or not depending on where the 80 ms frames fall: three offsets, 40 ms apart
    nears = [compose(store, [("silence", 0.5 + 0.04 * k), ("piper", "Hey Jarred, where are you?"), ("silence", 1.0)],
                     d / f"near{k}") for k in range(3)]
    reals = light_clips(store, looked, d, pause=0.4)["light_on"]  # phrasings this machine's STT hears right
    h = Harness(looked, d / "out.wav")
    try:
        for near in nears:
            h.say(near)
            if _turn_within(h, 1, 20.0):
                break
        (dropped,) = h.wait_turns(1, timeout=30)
        acted = h.say_command(reals, "HassTurnOn", timeout=60)  # the request is said again if it was misheard
        tries = h.engine.history[1:]
    finally:
        h.stop()
    cutoff = looked["s"].wake.models[0].threshold or 0.5
    # the near miss: detected, looked at, not said by the transcript -> dropped while listening, nothing played
    look = dropped["stages"]["wake_check"]
    assert cutoff <= look["score"] < cutoff + 1.0 and look["band"] == 1.0, dropped
    assert look["accepted"] is False and look["decision"] == "dropped", dropped
    assert "jarvis" not in look["transcript"].lower() and look["transcript"], dropped
    assert look["name_prob"] < NAME_PROB_MIN, dropped  # Whisper does not hear the name in it either
    assert dropped["outcome"] == "wake_rejected" and dropped["intents"] == [] and dropped["reply_spoken"] == ""
    assert 0 < look["compute_s"] < 3.0
    # the listener opened at once, before the check came back: the turn began at the detection
    assert dropped["t_wake"] is not None and look["t"] > dropped["t_wake"]
    # the real wake phrase: looked at too, accepted, and the request carried out. Whisper tiny.en may mishear the
    # phrase itself (the 8adf263 CI run: the first try's wake audio was not heard as "jarvis"); such a try must be
    # dropped exactly like the near miss (silently, its transcript without the phrase), and a later one kept
    for t in tries:
        look = t["stages"]["wake_check"]
        if not look["accepted"]:
            assert look["decision"] == "dropped" and t["outcome"] == "wake_rejected" and t["reply_spoken"] == "", t
            assert "jarvis" not in look["transcript"].lower() and look["name_prob"] < NAME_PROB_MIN, t
    look = acted["stages"]["wake_check"]
    assert look["accepted"] is True and look["decision"] == "accepted", acted
    # said by the transcript, or (spelled otherwise: "Hey, Jardis.") by Whisper's probability of the name
    assert "jarvis" in look["transcript"].lower() or look["name_prob"] >= NAME_PROB_MIN, acted
    assert acted["outcome"] != "wake_rejected" and acted["reply_spoken"], acted
    assert acted["intents"][0]["entities"] == ["light.kitchen"]
    kept = next(t for t in tries if t["stages"]["wake_check"]["accepted"])
    # nothing at all was played for the dropped turn: the only sound is the answer to the second request
    out = h.output()
    rate = h.speaker.rate
    before = out[: max(0, int((kept["t_wake"] - h.speaker.file_t0) * rate))]
    assert len(before) == 0 or np.abs(before).max() < 100, "something was played for the dropped turn"
