"""An automation's question through the device: parsing with errors that name the key, and answer matching by
Home Assistant's sentence templates (hassil) with a close-mishearing fallback. Pure logic with plain values."""

from __future__ import annotations

import json

import pytest

from edge_agent import turn_events as ev
from edge_agent.ask import AskRequest, match_answer, parse_ask, parse_conversation_start
from edge_agent.controller import TurnController
from edge_agent.mqtt_inbound import InboundError
from edge_agent.turn_events import State

LIMIT = 65536
DOOR = {"id": "door-1", "question": "Shall I lock the front door?",
        "answers": [{"id": "yes", "sentences": ["yes [please]", "sure", "(do it|go ahead)"]},
                    {"id": "no", "sentences": ["no [thanks]", "(don't|do not) [do it]"]},
                    {"id": "later", "sentences": ["in {minutes} minutes", "later"]}]}


def _ask(**over) -> AskRequest:
    return parse_ask(json.dumps({**DOOR, **over}).encode(), LIMIT)


@pytest.mark.parametrize(("heard", "answer", "slots"), [
    ("Yes, please.", "yes", {}),
    ("Sure.", "yes", {}),
    ("Go ahead!", "yes", {}),
    ("No thanks.", "no", {}),
    ("Do not do it.", "no", {}),
    ("In ten minutes.", "later", {"minutes": "ten"}),
    ("Yess.", "yes", {}),  # a mishearing of a plain template: the closest sentence
    ("What's the weather like?", None, {}),
    ("", None, {}),
])
def test_replies_are_matched_to_the_expected_answers(heard, answer, slots):
    r = match_answer(_ask(), heard)
    assert r["answer"] == answer and r["slots"] == slots and r["sentence"] == heard.strip() and r["id"] == "door-1"


def test_ask_parsing_defaults_and_options():
    a = _ask(timeout_s=3, preannounce=True)
    assert (a.id, a.question, a.timeout_s, a.preannounce) == ("door-1", "Shall I lock the front door?", 3.0, True)
    assert [x.id for x in a.answers] == ["yes", "no", "later"]
    assert _ask().timeout_s == 8.0 and _ask().preannounce is False


@pytest.mark.parametrize(("payload", "names"), [
    (b"lock the door?", "JSON object"),
    (json.dumps({**DOOR, "answers": []}).encode(), "answers"),
    (json.dumps({**DOOR, "id": "has space"}).encode(), "id"),
    (json.dumps({**DOOR, "question": ""}).encode(), "question"),
    (json.dumps({**DOOR, "timeout_s": 600}).encode(), "timeout_s"),
    (json.dumps({**DOOR, "timeout_s": True}).encode(), "timeout_s"),
    (json.dumps({**DOOR, "preannounce": "yes"}).encode(), "preannounce"),
    (json.dumps({**DOOR, "colour": "red"}).encode(), "colour"),
    (json.dumps({**DOOR, "answers": [{"id": "y", "sentences": ["(yes"]}]}).encode(), "template"),
    (json.dumps({**DOOR, "answers": [{"id": "y", "sentences": "yes"}]}).encode(), "answers[0].sentences"),
    (json.dumps({**DOOR, "question": "a\x07b"}).encode(), "control"),
])
def test_bad_asks_are_rejected_with_the_key_named(payload, names):
    with pytest.raises(InboundError) as e:
        parse_ask(payload, LIMIT)
    assert names in str(e.value)


def test_conversation_start_payloads():
    assert parse_conversation_start(b"Which light?", LIMIT).text == "Which light?"
    c = parse_conversation_start(b'{"text": "Which light?", "preannounce": true}', LIMIT)
    assert (c.text, c.preannounce) == ("Which light?", True)
    with pytest.raises(InboundError):
        parse_conversation_start(b'{"text": "x", "volume": 3}', LIMIT)


def test_the_controller_listens_for_the_reply_without_the_wake_word():
    ids = iter(range(1, 100))
    c = TurnController(follow_up_s=3.0, new_id=lambda: f"t{next(ids)}")
    req = _ask(timeout_s=4)
    a = c.handle(ev.Announce(1.0, req.question, True, then="ask", ask=req))
    speak = [x for x in a if isinstance(x, ev.SpeakAnnouncement)]
    assert speak and speak[0].preannounce and c.state == State.THINKING
    a = c.handle(ev.ResponseDone(3.0, speak[0].turn.turn_id, reply_spoken=req.question))
    opened = [x for x in a if isinstance(x, ev.OpenListener)]
    assert c.state == State.LISTENING and opened and opened[0].keep_preroll is False
    assert opened[0].no_speech_s == 4.0 and opened[0].turn.kind == "answer" and opened[0].turn.ask is req
    # nobody answers: the answer turn is logged as no_speech (the MQTT bridge then publishes "no_match")
    a = c.handle(ev.NoSpeech(7.0, opened[0].turn.turn_id))
    (done,) = [x.turn for x in a if isinstance(x, ev.TurnFinished)]
    assert done.outcome == "no_speech" and done.ask is req and c.state == State.IDLE
    # an interrupted question does not listen afterwards
    a = c.handle(ev.Announce(8.0, "Start a conversation?", then="conversation"))
    t2 = [x for x in a if isinstance(x, ev.SpeakAnnouncement)][0].turn
    c.handle(ev.StopWord(8.5))
    a = c.handle(ev.ResponseDone(8.6, t2.turn_id))
    assert c.state == State.IDLE and not [x for x in a if isinstance(x, ev.OpenListener)]
