"""When a turn may end (edge_agent/ending.py): the words at the first pause and the silence after them.

Pure logic with the real fast-path matcher over the paraphrase home (no models). What decides: a device command whose
target is in the words ends after 0.15 s of silence; one that could still be narrowed (by a place, a unit, a second
number word) waits 0.8 s; words a request cannot end on wait 1.2 s; anything else (a question) the normal 0.4 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import ending
from edge_agent.brain import Brain
from edge_agent.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def brain():
    s = load_settings(str(ROOT / "config.yaml"))
    return Brain.from_settings(s, home_file=str(ROOT / "tests/data/paraphrase_home.yaml"), use_llm=False)


@pytest.mark.parametrize("text, area, expected", [
    ("turn on the kitchen light", "living room", "complete"),  # a device's name
    ("Turn on the kitchen light.", None, "complete"),
    ("turn off the lights in the kitchen", "living room", "complete"),  # an area named
    ("lock the front door", None, "complete"),
    ("turn on the desk fan please", None, "complete"),
    ("turn off the light", "living room", "extendable"),  # the target is where the device stands: "... in the bedroom"
    ("close the blinds", "living room", "extendable"),
    ("set the kitchen light", None, "open"),  # the LLM's: it takes longer than a pause; the watch hears the rest
    ("turn on the", None, "incomplete"),
    ("set a timer for", None, "incomplete"),
    ("Turn on the, um,", "living room", "incomplete"),
    ("set a timer for ten minutes", None, "extendable"),  # "... and thirty seconds": never a wrong timer running
    ("turn on the fan", "living room", "extendable"),  # no fan here: "... in the bedroom"
    ("set the thermostat to twenty", None, "extendable"),  # "... two degrees"
    ("set the thermostat to twenty two degrees", None, "complete"),
    ("Set the desk lamp to 60%.", None, "complete"),
    ("what time is it", None, "open"),
    ("who wrote hamlet", None, "open"),
    ("Who wrote Hamlet?", None, "question"),  # Whisper closed it: answered in words, nothing acts on it
    ("What time is it?", "living room", "question"),
    ("Is the kitchen light on?", None, "complete"),  # a fact of a named device: nothing to narrow
    ("Could you turn on the fan?", "living room", "extendable"),  # a command, whatever its punctuation
    ("", None, "open"),
])
def test_the_words_at_the_first_pause_decide_how_long_the_silence_must_be(brain, text, area, expected):
    assert brain.ending_verdict(text, area=area) == expected


def test_the_silence_each_verdict_waits_for():
    normal = 0.4
    assert ending.silence_for("complete", normal) == 0.15
    assert ending.silence_for("question", normal) == 0.2
    assert ending.silence_for("extendable", normal) == 0.8
    assert ending.silence_for("incomplete", normal) == 1.2
    assert ending.silence_for("open", normal) == normal == ending.silence_for(None, normal)
    # a longer configured silence is never shortened by "may go on", and "complete" never waits longer than it
    assert ending.silence_for("extendable", 1.0) == 1.0 and ending.silence_for("complete", 0.1) == 0.1


def test_a_command_on_it_waits_for_more_words(brain):
    # Whisper heard "Turn off the ..." (a pause) as "Turn off it.": acting on the last device at once would be wrong
    brain.respond("turn on the kitchen light").wait()
    try:
        assert brain.ending_verdict("Turn off it.") == "extendable"
    finally:
        brain.reset()


def test_a_pending_question_or_a_busy_brain_keeps_the_normal_silence(brain):
    assert brain._turn_lock.acquire(blocking=False)
    try:
        assert brain.ending_verdict("turn on the kitchen light") == "open"
    finally:
        brain._turn_lock.release()
    assert brain.ending_verdict("turn on the kitchen light") == "complete"
