"""The port between the brain and a language model: chat messages in, text (streamed) or a JSON object out.

The brain never renders a prompt template, builds a grammar or reads a model's internals: it hands a backend chat
messages and reads back text and one ``CallStats`` per call. What a backend must offer is ``LlmBackend``; which one
runs is ``llm.backend`` in the settings, looked up in ``LLM_BACKENDS`` (name -> factory taking the ``Settings``).
``"local"`` is llama.cpp in process (``edge_agent.llm.LocalLlamaBackend``: Qwen's ChatML, GBNF grammars, KV-cache
reuse of the fixed prefix). A test registers its own scripted backend here.

Messages are ``{"role": ..., "content": ...}`` with these conventions:

* roles ``system``, ``user``, ``assistant`` and ``tool`` (a tool's result, JSON text);
* an ``assistant`` message may carry ``"tool_call"``: the call's JSON exactly as the model wrote it
  (``CallStats.text`` of the ``complete_json(..., tool_call=True)`` that produced it), after its ``content`` (words
  said before the call). Repeating the model's own text keeps a local backend's cached prompt valid;
* a final ``assistant`` message without ``tool_call`` is a reply begun and to be continued (words said before a
  tool call: ``complete_json(..., tool_call=True)`` writes the call after them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .config import Settings

Message = dict[str, str]
# "free": the model may answer in words or begin a tool call (the stream then ends, ``stats.tool_call`` is True);
# "words": words only, a tool call or JSON cannot be produced (a local backend enforces it with a grammar).
Mode = Literal["free", "words"]


@dataclass
class CallStats:
    """One call's figures (seconds; instants are ``time.monotonic()``). A backend that cannot know a figure leaves
    its default (a remote one knows no KV cache: ``n_cached`` 0)."""

    n_prompt: int = 0  # prompt tokens in total
    n_cached: int = 0  # of which reused from the KV cache (not evaluated again)
    t_prompt_s: float = 0.0  # evaluating the uncached part of the prompt
    n_gen: int = 0  # tokens generated (by this call: a resumed reply's preempted tokens are ``n_preempted``)
    n_preempted: int = 0  # tokens of the reply generated at the first pause and reused (preemptive generation)
    t_gen_s: float = 0.0  # from the end of prompt evaluation to the last token
    t_start: float = 0.0
    t_wait_s: float = 0.0  # waiting for the model while another call (an idle prefill, a preemptive one) held it
    t_first_token: float | None = None  # instant the first token was produced
    stopped: str = ""  # "eos", "stop", "max_tokens", "cancelled", "timeout", "tool_call"
    stop_string: str | None = None  # the stop string that ended generation, if one did
    text: str = ""  # the text generated (a stream: what was yielded; complete_json: the raw JSON)
    tool_call: bool = False  # free mode: the model began a tool call, and the stream ended there
    backend: str = ""  # which backend answered, when one backend may hand a call to another ("openai", "local")
    fallback_reason: str = ""  # why the call went to the fallback ("unreachable", "timeout", "malformed", ...)

    @property
    def n_evaluated(self) -> int:
        return self.n_prompt - self.n_cached

    def to_json(self) -> dict[str, Any]:
        return {"n_prompt": self.n_prompt, "n_cached": self.n_cached, "t_prompt_s": round(self.t_prompt_s, 3),
                "n_gen": self.n_gen, "t_gen_s": round(self.t_gen_s, 3),
                "ttft_s": None if self.t_first_token is None else round(self.t_first_token - self.t_start, 3),
                "stopped": self.stopped,
                **({"n_preempted": self.n_preempted} if self.n_preempted else {}),
                **({"wait_s": round(self.t_wait_s, 3)} if self.t_wait_s >= 0.001 else {}),
                **({"backend": self.backend} if self.backend else {}),
                **({"fallback_reason": self.fallback_reason} if self.fallback_reason else {})}


class TextStream:
    """A streaming call: iterate for text fragments; ``stats`` is this call's own (complete once iteration ends or
    the stream is closed). Use it in a ``with`` block (or ``closing``) so an abandoned stream frees the model."""

    def __init__(self, fragments: Iterator[str], stats: CallStats) -> None:
        self._fragments = fragments
        self.stats = stats

    def __iter__(self) -> Iterator[str]:
        return self._fragments

    def close(self) -> None:
        close = getattr(self._fragments, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class LlmBackend(Protocol):
    """What the brain needs of a language model."""

    load_s: float | None  # seconds the last load took (None before)

    @property
    def loaded(self) -> bool: ...

    def load(self) -> Any: ...

    def close(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def warmup(self, prefix: Sequence[Message]) -> CallStats:
        """Prepare the fixed prefix (the messages every call starts with); ``n_evaluated`` 0 = restored."""
        ...

    # Optional: ``prefill(messages, cancel=None) -> CallStats`` evaluates the start of the next prompt (the prefix
    # and the spoken history) between turns, cancellable; a backend without a local cache does not have it.
    # Optional (preemptive work at the first pause, ``llm.preempt``): ``pregenerate(messages, *, max_tokens,
    # enough, cancel) -> Any | None`` evaluates a free-mode prompt and generates its first tokens, which
    # ``stream(messages, resume=that)`` reuses; ``prefill_tool_call(messages, cancel)`` evaluates a tool call's
    # prompt as ``complete_json(..., tool_call=True)`` will begin it.

    def stream(self, messages: Sequence[Message], *, mode: Mode = "free", stop: Sequence[str] = (),
               cancel: threading.Event | None = None, deadline: float | None = None,
               max_tokens: int | None = None, temperature: float | None = None) -> TextStream:
        """Text as it is generated. Ends quietly when ``cancel`` is set; raises ``LlmError`` past ``deadline``
        (a ``time.monotonic()`` instant; None = the backend's own timeout)."""
        ...

    def complete_json(self, messages: Sequence[Message], schema: dict[str, Any], *, tool_call: bool = False,
                      max_tokens: int = 160, cancel: threading.Event | None = None,
                      deadline: float | None = None) -> tuple[dict[str, Any], CallStats]:
        """A JSON object valid under ``schema`` (``LlmError`` otherwise). ``tool_call``: the object is the model's
        call of one of the tools it was told about, written in its own tool-call syntax."""
        ...


def _local(settings: Settings) -> LlmBackend:
    from .llm import LocalLlamaBackend

    return LocalLlamaBackend.from_settings(settings)


def _openai(settings: Settings) -> LlmBackend:
    from .llm_openai import OpenAiBackend

    return OpenAiBackend.from_settings(settings)


# name -> factory(settings). Tests register scripted backends here (e.g. with monkeypatch.setitem).
LLM_BACKENDS: dict[str, Callable[[Settings], LlmBackend]] = {"local": _local, "openai": _openai}


def create_backend(settings: Settings, name: str | None = None) -> LlmBackend:
    """The backend ``llm.backend`` names (or ``name``); ``ConfigError`` naming the setting for an unknown one."""
    from .errors import ConfigError

    name = name or getattr(settings.llm, "backend", "local")
    factory = LLM_BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"llm.backend: unknown backend {name!r} (known: {', '.join(sorted(LLM_BACKENDS))})",
                          fix="set llm.backend to one of the known backends")
    return factory(settings)


__all__ = ["LLM_BACKENDS", "CallStats", "LlmBackend", "Message", "Mode", "TextStream", "create_backend"]
