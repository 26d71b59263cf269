"""Questions an automation asks through the device (like Home Assistant's ``ask_question``) and conversations it
starts (``start_conversation``).

``ask``: the device speaks the question, listens without the wake word, and matches the reply against the expected
answers, each a list of sentence templates in Home Assistant's own syntax (hassil: ``(yeah|yep) [please]``,
``play {movie}``, where ``{name}`` captures any words). The result (answer id, the sentence heard, the captured
slots, or ``null`` when nothing matched or nobody spoke) is published on ``edge-agent/<site>/ask/result``.

``conversation/start``: the device speaks the prompt and the reply is a normal turn (the fast path or the LLM).
Both may carry ``preannounce``: a chime before the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .mqtt_inbound import InboundError, decode_text, maybe_json

MAX_ANSWERS = 20
MAX_SENTENCES = 50  # per answer
MAX_TEXT = 500  # characters of a question or a sentence template
FUZZY_MIN = 85  # rapidfuzz ratio for a reply that misses every template by a word's mishearing
MAX_SAMPLES = 2000  # sentences expanded from the templates for that comparison
ASK_TIMEOUT_S = (1.0, 30.0)  # allowed range of how long to wait for the reply to start


@dataclass(frozen=True)
class Answer:
    id: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class AskRequest:
    """What an automation asked: ``id`` comes back in the result so it can tell its questions apart."""

    id: str
    question: str
    answers: tuple[Answer, ...]
    timeout_s: float = 8.0
    preannounce: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answers": [a.id for a in self.answers]}


@dataclass(frozen=True)
class ConversationStart:
    text: str
    preannounce: bool = False


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InboundError(f"{what} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InboundError(f"{what} is longer than {MAX_TEXT} characters")
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise InboundError(f"{what} contains control characters")
    return value.strip()


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InboundError(f"{what} must be true or false")
    return value


def parse_ask(payload: bytes, max_bytes: int) -> AskRequest:
    """``ask``: ``{"id": "...", "question": "...", "answers": [{"id": "yes", "sentences": ["yes", "sure"]}, ...],
    "timeout_s": 8, "preannounce": false}``; every problem is an ``InboundError`` that names the key."""
    value = maybe_json(decode_text(payload, max_bytes))
    if not isinstance(value, dict):
        raise InboundError('ask must be a JSON object with "id", "question" and "answers"')
    unknown = set(value) - {"id", "question", "answers", "timeout_s", "preannounce"}
    if unknown:
        raise InboundError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: id, question, answers, "
                           "timeout_s, preannounce")
    ask_id = _text(value.get("id"), "id")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", ask_id):
        raise InboundError("id: use 1-64 letters, digits, _ . : -")
    answers_in = value.get("answers")
    if not isinstance(answers_in, list) or not answers_in:
        raise InboundError("answers must be a non-empty list of {\"id\", \"sentences\"}")
    if len(answers_in) > MAX_ANSWERS:
        raise InboundError(f"answers: at most {MAX_ANSWERS}")
    answers = []
    for i, a in enumerate(answers_in):
        if not isinstance(a, dict) or set(a) - {"id", "sentences"}:
            raise InboundError(f"answers[{i}] must be an object with \"id\" and \"sentences\"")
        aid = _text(a.get("id"), f"answers[{i}].id")
        sentences = a.get("sentences")
        if not isinstance(sentences, list) or not sentences or len(sentences) > MAX_SENTENCES:
            raise InboundError(f"answers[{i}].sentences must be a list of 1-{MAX_SENTENCES} sentence templates")
        answers.append(Answer(aid, tuple(_text(s, f"answers[{i}].sentences[{j}]") for j, s in enumerate(sentences))))
    timeout = value.get("timeout_s", 8.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not ASK_TIMEOUT_S[0] <= timeout <= ASK_TIMEOUT_S[1]:
        raise InboundError(f"timeout_s must be a number of seconds in {ASK_TIMEOUT_S[0]:g}..{ASK_TIMEOUT_S[1]:g}")
    request = AskRequest(ask_id, _text(value.get("question"), "question"), tuple(answers), float(timeout),
                         _bool(value.get("preannounce", False), "preannounce"))
    compile_answers(request)  # a template hassil cannot read is the sender's error, reported now
    return request


def parse_conversation_start(payload: bytes, max_bytes: int) -> ConversationStart:
    """``conversation/start``: plain text, or ``{"text": "...", "preannounce": false}``."""
    value = maybe_json(decode_text(payload, max_bytes))
    if isinstance(value, dict):
        unknown = set(value) - {"text", "preannounce"}
        if unknown:
            raise InboundError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: text, preannounce")
        return ConversationStart(_text(value.get("text"), "text"), _bool(value.get("preannounce", False),
                                                                         "preannounce"))
    return ConversationStart(_text(value, "text"))


def compile_answers(request: AskRequest) -> Any:
    """The answers as hassil intents; ``{slot}`` in a template captures any words."""
    from hassil import Intents

    slots = sorted({m for a in request.answers for s in a.sentences for m in re.findall(r"\{(\w+)\}", s)})
    data = {"language": "en",
            "intents": {a.id: {"data": [{"sentences": list(a.sentences)}]} for a in request.answers},
            "lists": {name: {"wildcard": True} for name in slots}}
    try:
        intents = Intents.from_dict(data)
        for intent in intents.intents.values():  # hassil parses templates lazily: read them all now
            for d in intent.data:
                _ = d.sentences
    except Exception as e:  # hassil's parse errors for a malformed template
        raise InboundError(f"answers: a sentence template cannot be read ({e})") from None
    return intents


def match_answer(request: AskRequest, text: str) -> dict[str, Any]:
    """Which expected answer the reply is: by the templates first, then (for a reply a mishearing away from a
    template without slots) by the closest sentence. ``answer`` is None when nothing fits."""
    from hassil import recognize
    from hassil.sample import sample_intents
    from rapidfuzz import fuzz, process

    heard = text.strip()
    result: dict[str, Any] = {"id": request.id, "answer": None, "sentence": heard, "slots": {}}
    if not heard:
        return result
    intents = compile_answers(request)
    matched = recognize(heard, intents)
    if matched is not None:
        result["answer"] = matched.intent.name
        result["slots"] = {k: v.value for k, v in matched.entities.items()}
        return result
    # every sentence the templates without slots can make, for a reply one mishearing away from one of them
    plain = [a for a in request.answers if not any("{" in s for s in a.sentences)]
    if plain:
        only = {a.id for a in plain}
        sentences = [(" ".join(t.split()).lower(), name) for name, t in sample_intents(intents) if name in only]
        sentences = sentences[:MAX_SAMPLES]
        norm = " ".join(re.sub(r"[^\w\s']", " ", heard.lower()).split())
        best = process.extractOne(norm, [x for x, _ in sentences], scorer=fuzz.ratio)
        if best is not None and best[1] >= FUZZY_MIN:
            result["answer"] = sentences[best[2]][1]
    return result
