"""SentenceBuffer and speakable: pure text logic, plain strings, fed token by token."""

from __future__ import annotations

import random

import pytest

from edge_agent.text import SentenceBuffer, speakable, split_sentences


def feed(text: str, sizes: tuple[int, int] = (1, 3), seed: int = 0, **kw) -> list[str]:
    """Feed ``text`` in random fragments of 1-3 characters (like LLM tokens); all pieces, flush included."""
    rnd = random.Random(seed)
    buf = SentenceBuffer(**kw)
    out: list[str] = []
    i = 0
    while i < len(text):
        k = rnd.randint(*sizes)
        out += buf.push(text[i:i + k])
        i += k
    return out + buf.flush()


def whole(text: str, **kw) -> list[str]:
    buf = SentenceBuffer(**kw)
    return buf.push(text) + buf.flush()


CASES = [
    ("Hello there. How are you? I'm fine!", ["Hello there.", "How are you?", "I'm fine!"]),
    ("It costs 3.5 dollars. That is cheap.", ["It costs 3.5 dollars.", "That is cheap."]),
    ("Mr. Smith and Dr. Jones arrived. They sat down.", ["Mr. Smith and Dr. Jones arrived.", "They sat down."]),
    ("Bring fruit, e.g. apples or pears. Thanks.", ["Bring fruit, e.g. apples or pears.", "Thanks."]),
    ("The alarm is set for 7 a.m. tomorrow. Sleep well.", ["The alarm is set for 7 a.m. tomorrow.", "Sleep well."]),
    ("We leave at 7 a.m. Then we drive.", ["We leave at 7 a.m.", "Then we drive."]),
    ("The timer ends at 10:30 today. Okay?", ["The timer ends at 10:30 today.", "Okay?"]),
    ("Well... I think so. Maybe not.", ["Well... I think so.", "Maybe not."]),
    ("Wait… let me check. Done.", ["Wait… let me check.", "Done."]),
    ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
    ("The U.S. team won 1,000 games. Wow!", ["The U.S. team won 1,000 games.", "Wow!"]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("Steps:\n1. Open the door.\n2. Close it.", ["Steps:", "1. Open the door.", "2. Close it."]),
    ("I counted to 10. Then I stopped.", ["I counted to 10.", "Then I stopped."]),
    ("Really?! Yes.", ["Really?!", "Yes."]),
    ("No punctuation at the end", ["No punctuation at the end"]),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_sentences_whole_and_token_by_token(text: str, expected: list[str]) -> None:
    assert whole(text, first_clause_words=0) == expected
    for seed in range(5):
        assert feed(text, seed=seed, first_clause_words=0) == expected, f"seed {seed}"


def test_sentence_is_emitted_as_soon_as_it_ends() -> None:
    buf = SentenceBuffer(first_clause_words=0)
    assert buf.push("The light is on") == []
    assert buf.push(".") == []  # could still be "on.5" or an abbreviation: wait for the next character
    assert buf.push(" ") == ["The light is on."]
    assert buf.push("Anything") == []
    assert buf.push(" else?") == []
    assert buf.push("\n") == ["Anything else?"]
    assert buf.flush() == []


def test_decimal_split_across_tokens_is_not_cut() -> None:
    buf = SentenceBuffer(first_clause_words=0)
    assert buf.push("It is 3.") == []
    assert buf.push("5 degrees") == []
    assert buf.flush() == ["It is 3.5 degrees"]


def test_abbreviation_that_may_end_waits_for_the_next_word() -> None:
    buf = SentenceBuffer(first_clause_words=0)
    assert buf.push("Meet at 9 a.m. ") == []  # "tomorrow" or "Then"? not known yet
    assert buf.push("Then") == ["Meet at 9 a.m."]
    assert buf.flush() == ["Then"]


def test_first_clause_is_spoken_early_only_once() -> None:
    text = "The kitchen light is now on, and the hallway, too. Next, the garage door is closed, as asked."
    expected = ["The kitchen light is now on,", "and the hallway, too.", "Next, the garage door is closed, as asked."]
    assert whole(text) == expected
    for seed in range(5):
        assert feed(text, seed=seed) == expected


def test_first_clause_needs_enough_words() -> None:
    assert whole("Sure, I can do that. Done.") == ["Sure, I can do that.", "Done."]
    assert whole("Sure, I can do that. Done.", first_clause_words=1) == ["Sure,", "I can do that.", "Done."]
    # a time's colon and a number's comma are not clause ends
    assert whole("At 10:30 the 1,000 lights turn on, then off.") == ["At 10:30 the 1,000 lights turn on,", "then off."]


def test_markdown_is_not_read() -> None:
    text = "# Shopping\nHere you go:\n- **red** apples\n* *blue* berries\n+ `green` grapes\n---\nDone."
    expected = ["Shopping", "Here you go:", "red apples", "blue berries", "green grapes", "Done."]
    assert whole(text) == expected
    assert feed(text, seed=3) == expected


def test_json_and_tool_calls_are_never_spoken() -> None:
    text = '<tool_call>{"name": "turn_on", "arguments": {"entity": "light.kitchen"}}</tool_call>Okay, the light is on.'
    assert whole(text, first_clause_words=0) == ["Okay, the light is on."]
    for seed in range(5):
        out = feed(text, seed=seed)
        assert " ".join(out) == "Okay, the light is on."
        assert all("{" not in p and "name" not in p for p in out)
    # JSON alone says nothing; an unclosed brace at the end of generation is dropped
    assert whole('{"tool": "x", "args": {}}') == []
    assert whole('Sure. {"tool": "set_timer", "minutes"') == ["Sure."]


def test_code_fences_are_dropped() -> None:
    text = "Run this:\n```python\nprint('hello. world')\n```\nThat's it."
    assert whole(text) == ["Run this:", "That's it."]
    assert feed(text, seed=1) == ["Run this:", "That's it."]


def test_run_on_text_is_cut_at_a_space() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    out = whole(words, max_chars=80)
    assert len(out) > 1 and all(len(p) <= 80 for p in out)
    assert " ".join(out) == words
    assert feed(words, seed=2, max_chars=80) == out


def test_reset_forgets_pending_text() -> None:
    buf = SentenceBuffer()
    buf.push("Half a sent")
    assert buf.pending == "Half a sent"
    buf.reset()
    assert buf.push("New one. ") == ["New one."]


@pytest.mark.parametrize("raw,expected", [
    ("**Bold** and *italic* and `code`", "Bold and italic and code"),
    ("## Title", "Title"),
    ("- item one", "item one"),
    ("> quoted text", "quoted text"),
    ("See [the docs](http://example.invalid/x) now.", "See the docs now."),
    ("Nice 😀👍🏽 day!", "Nice day!"),
    ('{"a": 1, "b": [1, 2]}', ""),
    ("Turn on {\"entity\": \"light.kitchen\"} now", "Turn on now"),
    ("light_kitchen is on", "light kitchen is on"),
    ("***", ""),
    ("...", ""),
    ("", ""),
    ("Temperature is 21.5 °C.", "Temperature is 21.5 °C."),
])
def test_speakable(raw: str, expected: str) -> None:
    assert speakable(raw) == expected


def test_split_sentences_has_no_first_clause_rule() -> None:
    assert split_sentences("One two three four, five. Six.") == ["One two three four, five.", "Six."]
