"""The prompt text of the local model, pure (no llama.cpp): Qwen's ChatML (``render_chatml``; ``render_messages`` for
the port's messages, a call written back as the model writes it), the tool-call tags, the "words only" GBNF grammar,
the stop-string scan used while streaming, and the parse and validation of JSON output (``parse_json_output``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import LlmError
from .llm_backend import Message

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
STOP_STRINGS = (IM_END, IM_START, "<|endoftext|>")


def render_chatml(messages: Sequence[Message], *, add_generation_prompt: bool = True,
                  assistant_prefix: str = "") -> str:
    """Qwen's ChatML. A ``tool`` message becomes a user turn wrapped in <tool_response>, as Qwen2.5 was trained."""
    parts = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "tool":
            parts.append(f"{IM_START}user\n<tool_response>\n{content}\n</tool_response>{IM_END}\n")
        else:
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n{assistant_prefix}")
    return "".join(parts)


TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
# "words" mode: one or more lines of plain words that start with a letter, digit or quote; a tool tag, JSON or
# markup can never appear (the 0.5B model otherwise echoes a tool's JSON back, or "acts" in words on a question).
WORDS_GRAMMAR = 'root ::= [A-Za-z0-9"\'] [^{}<>]*'


def render_messages(messages: Sequence[Message]) -> str:
    """ChatML for the port's messages: a final ``assistant`` message without ``tool_call`` is continued (no end
    tag); an ``assistant`` message with ``tool_call`` is written as the model writes a call, so a prompt that repeats
    a call is token for token what the model produced (the KV cache stays valid)."""
    msgs = list(messages)
    tail = None
    if msgs and msgs[-1]["role"] == "assistant" and "tool_call" not in msgs[-1]:
        tail = msgs.pop()["content"]
    parts = []
    for m in msgs:
        if m["role"] == "assistant" and "tool_call" in m:
            parts.append(f"{IM_START}assistant\n{m['content']}{TOOL_OPEN}\n{m['tool_call']}\n{TOOL_CLOSE}{IM_END}\n")
        else:
            parts.append(render_chatml([m], add_generation_prompt=False))
    parts.append(f"{IM_START}assistant\n{tail or ''}")
    return "".join(parts)


def _find_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """(index, stop string) of the earliest stop string in ``text``, or None."""
    hits = [(text.find(s), s) for s in stops if s in text]
    return min(hits) if hits else None


def _partial_stop_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string (held back, not yielded)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def parse_json_output(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Parse and validate the model's JSON; ``LlmError`` naming what was wrong (never another exception)."""
    import jsonschema

    snippet = text if len(text) <= 200 else text[:200] + "..."
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise LlmError(f"the LLM output is not valid JSON ({e.msg} at character {e.pos}): {snippet!r}",
                       fix="raise llm.max_tokens if the output was cut off") from None
    if not isinstance(value, dict):
        raise LlmError(f"the LLM output is JSON but not an object: {snippet!r}")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise LlmError(f"the LLM output does not match the schema at {where}: {e.message}") from None
    return value


__all__ = ["IM_END", "IM_START", "STOP_STRINGS", "TOOL_CLOSE", "TOOL_OPEN", "WORDS_GRAMMAR", "parse_json_output",
           "render_chatml", "render_messages"]
