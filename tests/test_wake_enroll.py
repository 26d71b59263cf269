"""Household enrollment with real openWakeWord features: two synthetic members (Piper joe, espeak-ng en-us+f3) enroll
with a few takes of "Hey Jarvis" and some other speech; the verifier must pass their held-back takes and new
requests, and reject what the model fires on in speech that is not the wake phrase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio import read_wav
from edge_agent.wake_enroll import Speaker, enroll, extractor_for, pad
from edge_agent.wake_verifier import load

from .conftest import espeak_wav, piper_wav

pytestmark = pytest.mark.slow

WAKE = ["Hey Jarvis.", "Hey Jarvis!", "Hey, Jarvis.", "Hey Jarvis?", "Hey Jarvis."]
OTHER = ["I'll be home around six tonight, save me some dinner.", "Did anyone see where I left the blue umbrella?",
         "The kids have swimming practice on Thursday after school."]
# Speech that is not the wake phrase: near misses of it, which the model fires on, by members and by other voices
NEAR_NAMES = ["Jarvie", "Travis", "Jack", "Jervin", "Charlie", "Janice"]
NEAR_VOICES = [("piper", 1.05), ("en-gb-x-rp", 155), ("en-us", 155), ("en-us+f3", 165)]
TRAIN_TAIL, TEST_TAIL = "pass me the salt.", "are you coming?"


def near_miss(store, d: Path, name: str, voice: tuple[str, float], tail: str) -> np.ndarray:
    text = f"Hey {name}, {tail}"
    path = d / f"near-{name}-{voice[0]}-{len(tail)}.wav"
    if voice[0] == "piper":
        return pad(read_wav(piper_wav(store, text, path, length_scale=voice[1])))
    return pad(read_wav(espeak_wav(text, path, voice[0], int(voice[1]))))


@pytest.fixture(scope="module")
def household(store, tmp_path_factory) -> tuple[list[Speaker], list[tuple[str, np.ndarray]], Path]:
    d = tmp_path_factory.mktemp("enroll")
    joe, ruth = Speaker("joe"), Speaker("ruth")
    for i, text in enumerate(WAKE):
        joe.wake.append(piper_wav(store, text, d / f"joe-{i}.wav", length_scale=(1.0, 0.9, 1.1, 1.2, 0.95)[i]))
        ruth.wake.append(espeak_wav(text, d / f"ruth-{i}.wav", "en-us+f3", (165, 150, 180, 160, 172)[i]))
    joe.other = [piper_wav(store, t, d / f"joe-o{i}.wav") for i, t in enumerate(OTHER)]
    ruth.other = [espeak_wav(t, d / f"ruth-o{i}.wav", "en-us+f3", 165) for i, t in enumerate(OTHER)]
    # enroll holds back every 4th negative: the voices rotate per name, so every voice has near misses in both parts
    negatives = [(f"{v[0]}:{n}", near_miss(store, d, n, v, TRAIN_TAIL))
                 for i, n in enumerate(NEAR_NAMES) for v in NEAR_VOICES[i % 4:] + NEAR_VOICES[:i % 4]]
    return [joe, ruth], negatives, d


def test_enrolled_members_pass_and_other_speech_is_rejected(settings, store, household) -> None:
    speakers, negatives, d = household
    ext = extractor_for(settings, "hey_jarvis")
    lines: list[str] = []
    verifier, report = enroll(ext, speakers, negatives, log=lines.append)
    text = "\n".join(lines)
    assert "joe: 5 wake clips (4 to train, 1 held back)" in text and "ruth: 5 wake clips" in text, text
    held = report["held_back"]
    # the held-back takes of both members: detected by the model and accepted by a verifier trained without them
    assert held["wake_clips"] == 2 and held["wake_accepted"] == held["wake_detected"] == 2, held
    assert held["other_rejected"] == held["other_detections"], held
    # the saved file loads and behaves the same
    back = load(verifier.save(d / "v.json"), model="hey_jarvis", features="oww_embeddings", dim=1536)
    assert back.speakers == {"joe": 5, "ruth": 5}
    # new requests by the members (not in enrollment) still wake it
    requests = [pad(read_wav(piper_wav(store, "Hey Jarvis, turn on the kitchen light.", d / "joe-req.wav"))),
                pad(read_wav(espeak_wav("Hey Jarvis, what time is it?", d / "ruth-req.wav", "en-us+f3", 168)))]
    assert [ext.detections(a, back) for a in requests] == [1, 1]
    # held-back near misses the model fired on: most rejected by the verifier trained without them
    print(f"held back: {held}")
    assert held["negative_detections"] > 0, "the model fired on no held-back near miss: the test needs harder ones"
    assert 2 * held["negative_rejected"] >= held["negative_detections"], held
    # new takes of the near misses (another sentence after the name): the model fires on many, the verifier on few
    fresh = [(f"{v[0]}:{n}", near_miss(store, d, n, v, TEST_TAIL)) for n in NEAR_NAMES for v in NEAR_VOICES]
    fired = [(name, audio) for name, audio in fresh if ext.detections(audio, None)]
    still = [name for name, audio in fired if ext.detections(audio, back)]
    fired = [name for name, _ in fired]
    print(f"near misses (new takes): the model fired on {len(fired)}/{len(fresh)}, with the verifier on "
          f"{len(still)}: {still}")
    assert len(fired) >= 6, fired
    assert len(still) <= len(fired) // 4, f"the verifier let through {still} of {fired}"
