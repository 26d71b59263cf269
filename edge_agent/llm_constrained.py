"""The local model's constrained output (``ConstrainedOutput``, a base of ``Llm``): GBNF grammars from JSON schemas
(cached per schema) and ``complete_json`` under them, and ``choose``: text written as choices by ``llm_choice.py``'s
decoder on the loaded llama.cpp model (``_ChoiceModel``), the local backend's tool calls."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import LlmSettings
from .errors import LlmError
from .llm_backend import CallStats as GenStats
from .llm_backend import Message
from .llm_choice import ChoiceDecoder
from .llm_prefix import PREFILL_BATCH_TOKENS
from .llm_prompt import parse_json_output

log = logging.getLogger("edge_agent.llm")  # the model's log name, as before the split


@dataclass
class _GrammarCache:
    by_schema: dict[str, Any] = field(default_factory=dict)
    token_of: dict[bytes, int | None] = field(default_factory=dict)  # text -> the one token that is it (choices)


class ConstrainedOutput:
    """The constrained half of ``Llm`` (``llm_model.py``); ``Llm`` supplies the attributes below."""

    settings: LlmSettings
    _llama: Any
    _closing: threading.Event
    _grammars: _GrammarCache
    last_stats: GenStats
    load: Callable[[], Any]
    tokenize: Callable[[str], list[int]]
    complete: Callable[..., str]
    _held: Callable[[GenStats], contextlib.AbstractContextManager[None]]
    _burst: Callable[[], contextlib.AbstractContextManager[Callable[[], None]]]
    _cached_prefix: Callable[[list[int]], int]
    _prefill: Callable[..., bool]

    def complete_json(
        self,
        prompt_or_messages: str | Sequence[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int = 160,
        cancel: threading.Event | None = None,
        timeout_s: float | None = None,
        stats: GenStats | None = None,
    ) -> dict[str, Any]:
        """A JSON object constrained by ``schema`` (grammar), decoded greedily, parsed and validated.

        Raises ``LlmError`` naming the problem when the output is cut off, is not JSON, or does not validate
        (a grammar cannot express every schema keyword, so validation still matters), or when cancelled.
        """
        text = self.complete(prompt_or_messages, grammar=self.json_grammar(schema), max_tokens=max_tokens,
                             cancel=cancel, timeout_s=timeout_s, temperature=0.0, stats=stats)
        if cancel is not None and cancel.is_set():
            raise LlmError("the request was cancelled before the JSON was complete")
        return parse_json_output(text, schema)

    def choose(
        self,
        prompt: str,
        write: Callable[[ChoiceDecoder], str],
        *,
        max_tokens: int = 160,
        cancel: threading.Event | None = None,
        timeout_s: float | None = None,
        stats: GenStats | None = None,
    ) -> str:
        """Text written as choices after ``prompt`` (``llm_choice``): ``write`` gets a ``ChoiceDecoder`` on this
        model, whose logits are those after the prompt, and returns the text. A model step only where the model has
        a real choice; forced text goes with it in one batch. ``LlmError`` when cancelled or past the timeout (both
        checked before every step)."""
        self.load()
        tokens = self.tokenize(prompt)
        timeout_s = self.settings.timeout_s if timeout_s is None else timeout_s
        if len(tokens) + max_tokens > self.settings.n_ctx:
            raise LlmError(f"prompt of {len(tokens)} tokens + {max_tokens} reply tokens exceeds the context window "
                           f"of {self.settings.n_ctx}", fix="raise llm.n_ctx or lower conversation.max_history_tokens")
        stats = stats if stats is not None else GenStats()
        stats.n_prompt, stats.t_start = len(tokens), time.monotonic()
        self.last_stats = stats
        deadline = stats.t_start + timeout_s

        def check() -> None:
            if (cancel is not None and cancel.is_set()) or self._closing.is_set():
                stats.stopped = "cancelled"
                raise LlmError("the request was cancelled before the JSON was complete")
            if time.monotonic() > deadline:
                stats.stopped = "timeout"
                raise LlmError(f"the LLM did not finish within {timeout_s:g} s", fix="raise llm.timeout_s")

        with self._held(stats), self._burst():  # a tool call: the turn waits for all of it
            # the prompt's last batch is left to the first choice: evaluated with the text forced before it (one
            # model step fewer than evaluating the prompt, then that text)
            cached = self._cached_prefix(tokens)
            head = max(min(cached, len(tokens) - 1), len(tokens) - PREFILL_BATCH_TOKENS)
            if not self._prefill(tokens[:head], stats, cancel=cancel, deadline=deadline, keep_last=False):
                stats.stopped = "cancelled"
                raise LlmError("the request was cancelled before the JSON was complete")
            t0 = time.monotonic()
            dec = ChoiceDecoder(_ChoiceModel(self), None, pending=tokens[head:], check=check, clock=time.monotonic)
            try:
                text = write(dec)
            finally:
                stats.n_gen = dec.stats.decisions
                stats.t_gen_s = time.monotonic() - t0
                stats.t_first_token = dec.stats.t_first_decision or time.monotonic()
        stats.stopped = "eos"
        stats.text = text
        log.debug("LLM choices: %d decisions, %d forced tokens in %.3f s: %s", dec.stats.decisions,
                  dec.stats.forced, stats.t_gen_s, text)
        return text

    def json_grammar(self, schema: dict[str, Any]) -> Any:
        """The GBNF grammar of a JSON schema (cached: converting a schema with many enums takes milliseconds)."""
        key = json.dumps(schema, sort_keys=True)
        g = self._grammars.by_schema.get(key)
        if g is None:
            from llama_cpp import LlamaGrammar

            try:
                g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as e:  # the converter raises plain exceptions for unsupported schema constructs
                raise LlmError(f"cannot turn the JSON schema into a grammar: {e}",
                               fix="simplify the tool schema (enum/const/object/array/string/number)") from None
            self._grammars.by_schema[key] = g
        return g

    def _grammar(self, grammar: Any) -> Any:
        if grammar is None or not isinstance(grammar, str):
            return grammar
        from llama_cpp import LlamaGrammar

        return LlamaGrammar.from_string(grammar, verbose=False)


class _ChoiceModel:
    """``llm_choice.ChoiceModel`` on the loaded llama.cpp model (called under the model's lock)."""

    TOKEN_OF_MAX = 50_000  # texts remembered (the same names and syntax come back every call)

    def __init__(self, llm: ConstrainedOutput) -> None:
        self._llama = llm._llama
        self._token_of = llm._grammars.token_of
        self._pieces: dict[int, bytes] = {}

    def logits(self) -> Any:
        import llama_cpp
        import numpy as np

        ptr = llama_cpp.llama_get_logits_ith(self._llama._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._llama.n_vocab(),))

    def advance(self, tokens: Sequence[int]) -> Any:
        self._llama.eval(list(tokens))
        return self.logits()

    def tokenize(self, data: bytes) -> list[int]:
        return list(self._llama.tokenize(data, add_bos=False, special=False))

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            p = self._pieces[token] = bytes(self._llama.detokenize([token], special=False))
        return p

    def token_of(self, data: bytes) -> int | None:
        if data in self._token_of:
            return self._token_of[data]
        toks = self.tokenize(data)
        tok = toks[0] if len(toks) == 1 and self.piece(toks[0]) == data else None
        if len(self._token_of) >= self.TOKEN_OF_MAX:
            self._token_of.clear()
        self._token_of[data] = tok
        return tok


__all__ = ["ConstrainedOutput"]
