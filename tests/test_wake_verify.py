"""The second look for doubtful wake detections (pure decisions, plain numbers and strings)."""

from __future__ import annotations

from edge_agent.wake_verify import ACCEPT, CHECK, REJECT, confirms_wake, decide, needs_second_look


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


def test_whole_words_only():
    assert not confirms_wake("the jarvisian style", "hey jarvis")
    assert confirms_wake("OK Nabu, lights off", "okay nabu")
    assert not confirms_wake("okay now", "okay nabu")
    assert confirms_wake("hey my craft", "hey mycroft")
