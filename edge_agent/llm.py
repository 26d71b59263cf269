"""The brain's ``LlmBackend`` port on the local model: ``LocalLlamaBackend`` renders the port's chat messages as
Qwen's ChatML with its ``<tool_call>`` syntax, applies the "words only" grammar, and asks for constrained JSON, on an
``Llm`` (``llm_model.py``: llama.cpp in process, streaming, cancellable, the fixed prefix cached). Only this backend
knows the template; the brain sees messages, text and one ``CallStats`` per call.

The model (``llm_model.py``) and the prompt text (``llm_prompt.py``) were split out of this module; their names are
re-exported here, where callers import them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .config import Settings
from .llm_backend import CallStats, Message, Mode, TextStream
from .llm_model import GenStats, Llm  # noqa: F401 - re-exported
from .llm_prefix import PREFILL_BATCH_TOKENS, WARMUP_BATCH_TOKENS, Pregen  # noqa: F401 - re-exported
from .llm_prompt import (  # noqa: F401 - re-exported
    IM_END,
    IM_START,
    STOP_STRINGS,
    TOOL_CLOSE,
    TOOL_OPEN,
    WORDS_GRAMMAR,
    _find_stop,
    _partial_stop_len,
    parse_json_output,
    render_chatml,
    render_messages,
)
from .tool_choice import CALL_START, ToolPlan, said_values, tool_plan, write_tool_call


class LocalLlamaBackend:
    """``LlmBackend`` on llama.cpp in process: Qwen's ChatML and its ``<tool_call>`` syntax, the "words only"
    grammar, constrained JSON, and the KV cache of the fixed prefix (restored from ``llm.prefix_cache_dir``)."""

    name = "local"

    # a tool call as a few choices (tool_choice); False: token by token under the schema's grammar (as before)
    choice_tool_calls = True

    def __init__(self, llm: Llm) -> None:
        self.llm = llm
        self._plan: ToolPlan | None = None
        self._plan_schema: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalLlamaBackend:
        from .preflight import resolve_model

        cache = settings.llm.prefix_cache_dir
        return cls(Llm(resolve_model(settings, settings.llm.model, "llm"), settings.llm,
                       cache_dir=settings.path(cache) if cache else None))

    # ---- lifecycle
    @property
    def loaded(self) -> bool:
        return self.llm.loaded

    @property
    def load_s(self) -> float | None:
        return self.llm.load_s

    def load(self) -> LocalLlamaBackend:
        self.llm.load()
        return self

    def close(self) -> None:
        self.llm.close()

    def count_tokens(self, text: str) -> int:
        return self.llm.count_tokens(text)

    def warmup(self, prefix: Sequence[Message]) -> CallStats:
        return self.llm.warmup(render_chatml(prefix, add_generation_prompt=False))

    def prefill(self, messages: Sequence[Message], cancel: threading.Event | None = None) -> CallStats:
        """Evaluate the start of the next prompt (prefix + history) between turns (see ``Llm.prefill``)."""
        return self.llm.prefill(render_chatml(messages, add_generation_prompt=False), cancel=cancel)

    def pregenerate(self, messages: Sequence[Message], *, max_tokens: int, enough: Any = None,
                    cancel: threading.Event | None = None) -> Pregen | None:
        """Preemptive generation: the free-mode prompt of ``messages`` evaluated and its first tokens generated (see
        ``Llm.pregenerate``); ``stream(messages, mode="free", resume=...)`` goes on from there."""
        return self.llm.pregenerate(render_messages(messages), max_tokens=max_tokens, enough=enough, cancel=cancel,
                                    stop=(TOOL_OPEN,))

    def prefill_tool_call(self, messages: Sequence[Message], cancel: threading.Event | None = None) -> CallStats:
        """The prompt of a tool call on ``messages`` evaluated as ``complete_json(..., tool_call=True)`` begins it
        (the choices' prompt, ``CALL_START`` included), so the call finds it in the KV cache."""
        prompt = render_messages(messages) + f"{TOOL_OPEN}\n"
        if self.choice_tool_calls:
            prompt += CALL_START
        return self.llm.prefill(prompt, cancel=cancel, batch=PREFILL_BATCH_TOKENS)

    # ---- how tools look to this model (Qwen2.5 was trained on this syntax)
    @staticmethod
    def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
        return f'{TOOL_OPEN}\n{json.dumps({"name": name, "arguments": arguments})}\n{TOOL_CLOSE}'

    @staticmethod
    def tools_prompt(signatures: str) -> str:
        return ("# Tools\n\nYou may call one function to assist with the user query. The functions (all arguments "
                f"optional unless marked *):\n<tools>\n{signatures}\n</tools>\n\nFor a function call, return a json "
                "object with function name and arguments within <tool_call></tool_call> XML tags:\n"
                f'{TOOL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{TOOL_CLOSE}')

    # ---- calls
    def stream(self, messages: Sequence[Message], *, mode: Mode = "free", stop: Sequence[str] = (),
               cancel: threading.Event | None = None, deadline: float | None = None,
               max_tokens: int | None = None, temperature: float | None = None,
               resume: Pregen | None = None) -> TextStream:
        """``resume``: this prompt's ``pregenerate`` (free mode only): its text first, then on from its tokens."""
        stats = CallStats()
        prompt = render_messages(messages)
        stops = tuple(stop) + ((TOOL_OPEN,) if mode == "free" else ())
        grammar = WORDS_GRAMMAR if mode == "words" else None
        timeout_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        frags = self.llm.stream(prompt, grammar=grammar, max_tokens=max_tokens, cancel=cancel, timeout_s=timeout_s,
                                temperature=temperature, stop=stops, stats=stats,
                                resume=resume if mode == "free" else None)
        return TextStream(self._free(frags, stats) if mode == "free" else frags, stats)

    @staticmethod
    def _free(frags: Iterator[str], stats: CallStats) -> Iterator[str]:
        """Words until the model opens a tool call (the tag, or a bare JSON object begun without it): the stream
        then ends with ``stats.tool_call``. Leading whitespace is held until the first real character shows which
        it is, so a bare call's "{" is never yielded."""
        held = ""
        started = False
        try:
            for frag in frags:
                if not started:
                    held += frag
                    if not held.strip():
                        continue
                    started = True
                    if held.lstrip().startswith("{"):
                        stats.tool_call = True
                        break
                    frag, held = held, ""
                yield frag
        finally:
            frags.close()  # type: ignore[attr-defined]  (a generator: runs the model's clean-up, fills stats)
            if stats.tool_call:
                stats.text = ""  # nothing was said before the bare call
            if stats.tool_call or stats.stop_string == TOOL_OPEN:
                stats.tool_call, stats.stopped = True, "tool_call"

    def complete(self, messages: Sequence[Message], **kwargs: Any) -> str:
        """The whole reply as one string (free mode, tool tag not special)."""
        return self.llm.complete(render_messages(messages), **kwargs)

    def complete_json(self, messages: Sequence[Message], schema: dict[str, Any], *, tool_call: bool = False,
                      max_tokens: int = 160, cancel: threading.Event | None = None,
                      deadline: float | None = None) -> tuple[dict[str, Any], CallStats]:
        """A tool call (``tool_call``) is written as a few choices (``tool_choice``: the tool, then each argument
        among the configured values, a model step only where the model has a real choice) when the schema allows;
        anything else token by token under the schema's grammar. Either way the result is validated against
        ``schema``."""
        stats = CallStats()
        prompt = render_messages(messages) + (f"{TOOL_OPEN}\n" if tool_call else "")
        timeout_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        plan = self._tool_plan(schema) if tool_call and self.choice_tool_calls else None
        if plan is not None:
            words = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            said = said_values(words)
            text = self.llm.choose(prompt + CALL_START, lambda dec: write_tool_call(dec, plan, said, words),
                                   max_tokens=max_tokens, cancel=cancel, timeout_s=timeout_s, stats=stats)
            return parse_json_output(text, schema), stats
        obj = self.llm.complete_json(prompt, schema, max_tokens=max_tokens, cancel=cancel, timeout_s=timeout_s,
                                     stats=stats)
        stats.text = stats.text.strip()
        return obj, stats

    def _tool_plan(self, schema: dict[str, Any]) -> ToolPlan | None:
        if schema is not self._plan_schema:  # the brain passes the same schema object every call: read it once
            self._plan, self._plan_schema = tool_plan(schema), schema
        return self._plan
