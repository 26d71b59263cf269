"""An ``LlmBackend`` on an OpenAI-compatible chat server (llama.cpp's ``llama-server``, ``python -m llama_cpp.server``,
Ollama's ``/v1``), with a fallback so a turn is never left silent.

Why it looks like this:

* **The brain does not know which backend answered.** The same messages, the same tool-call syntax in the prompt
  (Qwen's ``<tool_call>`` tags, shared with ``LocalLlamaBackend`` so the fixed prefix is identical whichever answers),
  the same JSON schema for a tool call (sent as the server's ``response_format``), and the same ``CallStats``.
  ``stats.backend`` says who answered and ``stats.fallback_reason`` why the remote did not.
* **Streaming over plain HTTP/1.1 and server-sent events**, with the standard library (``http.client``, ``ssl``): the
  runtime gains no dependency, and every wait has its own deadline: connecting (``connect_timeout_s``), the first
  piece (``first_token_timeout_s``: a hung or overloaded server costs at most that), each pause between pieces
  (``read_timeout_s``) and the whole call (``llm.timeout_s`` or the caller's deadline). A cancel closes the socket
  at once (a watcher thread), so a barge-in never waits for a network read.
* **Fallback, never silence.** Unreachable, slow past a deadline, an HTTP error, or garbage (bad SSE, JSON that does
  not parse or does not match the schema): the call goes to ``llm.fallback`` (``local``: llama.cpp in process) and,
  if words were already said, the fallback continues them. With no fallback an ``LlmError`` goes up and the brain
  apologises. The server is then marked down and probed in the background (``GET /models``) with a back-off doubling
  from ``RETRY_MIN_S`` to ``retry_max_s``; until it answers, turns go straight to the fallback (no timeout paid per
  turn); once it answers, the next turn uses it again.
* **The API key never reaches a log**: it is read from an environment variable or a file, sent only as the
  ``Authorization`` header, and no header or request body is ever logged.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .config import LlmSettings, OpenAiSettings, Settings
from .errors import LlmError
from .llm import TOOL_OPEN, LocalLlamaBackend, _find_stop, _partial_stop_len, parse_json_output
from .llm_backend import CallStats, LlmBackend, Message, Mode, TextStream
from .llm_http import MAX_LINE, Endpoint, Health, Http, RemoteFailure, _sse, _usage, api_key

log = logging.getLogger(__name__)

WORDS_GRAMMAR = 'root ::= [A-Za-z0-9"\'] [^{}<>]*'  # as the local backend's words-only grammar (llama.cpp GBNF)


def to_chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The port's messages as OpenAI chat messages: a ``tool`` result becomes a user turn in ``<tool_response>``
    (as Qwen2.5 was trained, and as the local backend renders it: no ``tool_call_id`` bookkeeping), a call the
    model made is written back in the prompt's own syntax, and an empty assistant message to be continued is
    dropped (a chat API cannot continue a message; a non-empty one stays as the assistant's words so far)."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        elif role == "assistant" and "tool_call" in m:
            out.append({"role": "assistant", "content": f"{content}{TOOL_OPEN}\n{m['tool_call']}\n</tool_call>"})
        else:
            out.append({"role": role, "content": content})
    if out and out[-1]["role"] == "assistant" and "tool_call" not in messages[-1] and not out[-1]["content"]:
        out.pop()
    return out


def _continued(messages: Sequence[Message], said: str) -> list[Message]:
    """``messages`` with the words already said as an assistant reply begun (the port's continuation)."""
    msgs = [dict(m) for m in messages]
    if not said:
        return msgs
    if msgs and msgs[-1]["role"] == "assistant" and "tool_call" not in msgs[-1]:
        msgs[-1]["content"] += said
    else:
        msgs.append({"role": "assistant", "content": said})
    return msgs


def _copy_stats(dst: CallStats, src: CallStats) -> None:
    for name in ("n_prompt", "n_cached", "t_prompt_s", "n_gen", "t_gen_s", "stopped", "stop_string", "tool_call"):
        setattr(dst, name, getattr(src, name))
    if dst.t_first_token is None:
        dst.t_first_token = src.t_first_token


class OpenAiBackend:
    """``LlmBackend`` on an OpenAI-compatible server, with an optional fallback backend (see the module doc)."""

    name = "openai"
    format_tool_call = staticmethod(LocalLlamaBackend.format_tool_call)
    tools_prompt = staticmethod(LocalLlamaBackend.tools_prompt)

    def __init__(self, settings: OpenAiSettings, llm: LlmSettings, *, key: str | None = None,
                 fallback: LlmBackend | None = None) -> None:
        self.settings = settings
        self.llm_settings = llm
        self.endpoint = Endpoint.parse(settings.base_url)
        self.http = Http(self.endpoint, settings, key)
        self.fallback = fallback
        self.health = Health(self.probe, settings.retry_max_s)
        self.load_s: float | None = None
        self.last_rtt_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAiBackend:
        s = settings.llm.openai
        fallback = None
        if settings.llm.fallback == "local":
            from .llm_backend import create_backend

            fallback = create_backend(settings, "local")
        return cls(s, settings.llm, key=api_key(s), fallback=fallback)

    # ---- lifecycle
    @property
    def loaded(self) -> bool:
        return self.load_s is not None

    def load(self) -> OpenAiBackend:
        """Nothing to load for the server; the fallback (if any) is loaded now, so a fallback turn is prompt."""
        if self.load_s is None:
            t0 = time.monotonic()
            if self.fallback is not None:
                self.fallback.load()
            self.load_s = time.monotonic() - t0
        return self

    def close(self) -> None:
        self.health.close()
        if self.fallback is not None:
            self.fallback.close()

    def count_tokens(self, text: str) -> int:
        if self.fallback is not None and self.fallback.loaded:
            return self.fallback.count_tokens(text)
        return max(1, len(text) // 4)  # the server's tokenizer is not ours to call; a history budget estimate

    def probe(self) -> float:
        """One ``GET /models``: the round-trip time in seconds, or ``RemoteFailure``."""
        t0 = time.monotonic()
        conn, resp = self.http.open("GET", "/models", None, timeout=self.settings.first_token_timeout_s)
        try:
            body = resp.read(MAX_LINE)
            json.loads(body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise RemoteFailure("malformed", f"GET /models did not return JSON ({type(e).__name__})") from None
        finally:
            conn.close()
        self.last_rtt_s = time.monotonic() - t0
        return self.last_rtt_s

    def warmup(self, prefix: Sequence[Message]) -> CallStats:
        """The fallback prepares its prefix (KV cache); the server gets the prefix once (one token generated) so
        its own prompt cache holds it. A server that is down is only noted: the first turn falls back."""
        self.load()
        if self.fallback is not None:
            self.fallback.warmup(prefix)
        # the server evaluates the prefix (nothing of it is cached here): an estimate of its size, none cached
        stats = CallStats(t_start=time.monotonic(), backend=self.name,
                          n_prompt=sum(self.count_tokens(m["content"]) for m in prefix))
        try:
            for _ in self._remote([*prefix, {"role": "user", "content": "Hello"}], stats, mode="words", stop=(),
                                  cancel=None, deadline=None, max_tokens=1, temperature=0.0, body_extra={}):
                pass
        except RemoteFailure as e:
            self.health.mark_down(e)
            stats.fallback_reason = e.reason
        return stats

    # ---- calls
    def _down(self) -> RemoteFailure:
        """What a call meets while the server is known to be down (no timeout paid: the probe retries it)."""
        return RemoteFailure(self.health.reason or "down", "the server is down; retrying in the background")

    def _fallback_for(self, failure: RemoteFailure, stats: CallStats) -> LlmBackend:
        """The backend that answers instead, or the error that names the server and the fix when there is none."""
        if self.fallback is None:
            stats.fallback_reason = failure.reason
            raise LlmError(f"the LLM server {self.endpoint.url} failed ({failure})",
                           fix="check the server (edge-agent check), or set llm.fallback: local")
        return self.fallback

    def stream(self, messages: Sequence[Message], *, mode: Mode = "free", stop: Sequence[str] = (),
               cancel: threading.Event | None = None, deadline: float | None = None,
               max_tokens: int | None = None, temperature: float | None = None) -> TextStream:
        stats = CallStats(t_start=time.monotonic(), backend=self.name)
        gen = self._stream(messages, stats, mode, tuple(stop), cancel, deadline, max_tokens, temperature)
        return TextStream(gen, stats)

    def _stream(self, messages: Sequence[Message], stats: CallStats, mode: Mode, stop: tuple[str, ...],
                cancel: threading.Event | None, deadline: float | None, max_tokens: int | None,
                temperature: float | None) -> Iterator[str]:
        failure: RemoteFailure | None = None
        if self.health.up:
            try:
                yield from self._remote(messages, stats, mode=mode, stop=stop, cancel=cancel, deadline=deadline,
                                        max_tokens=max_tokens, temperature=temperature, body_extra={})
                return
            except RemoteFailure as e:
                self.health.mark_down(e)
                failure = e
        else:
            failure = self._down()
        if cancel is not None and cancel.is_set():
            stats.stopped = "cancelled"
            return
        said = stats.text
        fallback = self._fallback_for(failure, stats)
        log.warning("LLM server failed (%s): the local model %s", failure,
                    "continues the reply" if said else "answers")
        stats.backend, stats.fallback_reason = "local", failure.reason
        stats.tool_call, stats.stopped, stats.stop_string = False, "", None
        # words broken off mid-reply: the continuation starts after a space (a local words-only grammar cannot
        # begin with one, so without it the next word would be glued to the last)
        gap = " " if said and not said[-1].isspace() else ""
        with fallback.stream(_continued(messages, said + gap), mode=mode, stop=stop, cancel=cancel,
                                  deadline=deadline, max_tokens=max_tokens, temperature=temperature) as fb:
            try:
                for frag in fb:
                    if gap:
                        frag, gap = gap + frag, ""
                    stats.text += frag
                    yield frag
            finally:
                fb.close()
                _copy_stats(stats, fb.stats)
                stats.text = said + (" " if said and not said[-1].isspace() else "") + fb.stats.text

    def complete_json(self, messages: Sequence[Message], schema: dict[str, Any], *, tool_call: bool = False,
                      max_tokens: int = 160, cancel: threading.Event | None = None,
                      deadline: float | None = None) -> tuple[dict[str, Any], CallStats]:
        stats = CallStats(t_start=time.monotonic(), backend=self.name)
        if self.settings.json_format == "json_schema":
            fmt: dict[str, Any] = {"type": "json_schema",
                                   "json_schema": {"name": "tool_call" if tool_call else "reply", "schema": schema,
                                                   "strict": True}}
        else:
            fmt = {"type": "json_object", "schema": schema}
        failure: RemoteFailure | None = None
        if self.health.up:
            try:
                for _ in self._remote(messages, stats, mode="json", stop=(), cancel=cancel, deadline=deadline,
                                      max_tokens=max_tokens, temperature=0.0, body_extra={"response_format": fmt}):
                    pass
                if cancel is not None and cancel.is_set():
                    raise LlmError("the request was cancelled before the JSON was complete")
                stats.text = stats.text.strip()
                try:
                    return parse_json_output(stats.text, schema), stats
                except LlmError as e:
                    raise RemoteFailure("malformed", e.message) from None
            except RemoteFailure as e:
                self.health.mark_down(e)
                failure = e
        else:
            failure = self._down()
        if cancel is not None and cancel.is_set():
            raise LlmError("the request was cancelled before the JSON was complete")
        fallback = self._fallback_for(failure, stats)
        log.warning("LLM server failed (%s): the local model writes the call", failure)
        obj, fb = fallback.complete_json(messages, schema, tool_call=tool_call, max_tokens=max_tokens,
                                              cancel=cancel, deadline=deadline)
        fb.backend, fb.fallback_reason = "local", failure.reason
        return obj, fb

    # ---- the wire
    def _remote(self, messages: Sequence[Message], stats: CallStats, *, mode: str, stop: tuple[str, ...],
                cancel: threading.Event | None, deadline: float | None, max_tokens: int | None,
                temperature: float | None, body_extra: dict[str, Any]) -> Iterator[str]:
        """One streamed chat completion: yields text (cut at a tool call in "free" mode, at JSON or a tool tag in
        "words" mode); fills ``stats``; ``RemoteFailure`` for anything unusable. A cancel ends it quietly."""
        s = self.settings
        now = time.monotonic()
        end = deadline if deadline is not None else now + self.llm_settings.timeout_s
        body: dict[str, Any] = {
            "model": s.model, "messages": to_chat(messages), "stream": True,
            "max_tokens": max_tokens or self.llm_settings.max_tokens,
            "temperature": self.llm_settings.temperature if temperature is None else temperature,
            "stream_options": {"include_usage": True}, **body_extra}
        if stop:
            body["stop"] = list(stop)[:4]
        if mode == "words" and s.grammar:
            body["grammar"] = WORDS_GRAMMAR
        cut = stop + ((TOOL_OPEN,) if mode == "free" else (TOOL_OPEN, "{") if mode == "words" else ())
        done = threading.Event()
        try:
            conn, resp = self.http.open("POST", "/chat/completions", body, done=done, cancel=cancel,
                                        timeout=min(s.first_token_timeout_s, max(0.05, end - now)))
        except RemoteFailure:
            done.set()
            if cancel is not None and cancel.is_set():  # our own cancel closed it: not the server's fault
                stats.stopped = "cancelled"
                return
            raise
        held = ""
        n_pieces = 0
        started = mode != "free"  # free mode: leading whitespace is held until "{" (a bare call) or words show
        t_last: float | None = None
        try:
            for event in _sse(resp, conn, first_s=s.first_token_timeout_s, idle_s=s.read_timeout_s, end=end,
                              cancel=cancel, got_first=lambda: stats.t_first_token is not None):
                _usage(stats, event)
                choices = event.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                if not isinstance(choice, dict):
                    raise RemoteFailure("malformed", "a choice is not an object")
                delta = choice.get("delta") or {}
                piece = delta.get("content") if isinstance(delta, dict) else None
                finish = choice.get("finish_reason")
                if piece:
                    if not isinstance(piece, str):
                        raise RemoteFailure("malformed", "delta.content is not a string")
                    t_last = time.monotonic()
                    if stats.t_first_token is None:
                        stats.t_first_token = t_last
                    n_pieces += 1
                    held += piece
                    if not started:
                        if not held.strip():
                            continue
                        started = True
                        if held.lstrip().startswith("{"):
                            stats.tool_call, stats.stopped = True, "tool_call"
                            return
                        held = held.lstrip()
                    hit = _find_stop(held, cut)
                    if hit is not None:
                        idx, stats.stop_string = hit
                        if held[:idx]:
                            stats.text += held[:idx]
                            yield held[:idx]
                        if mode == "free" and stats.stop_string == TOOL_OPEN:
                            stats.tool_call, stats.stopped = True, "tool_call"
                        else:
                            stats.stopped = "stop"
                        return
                    keep = _partial_stop_len(held, cut)
                    if len(held) > keep:
                        out, held = held[: len(held) - keep], held[len(held) - keep:]
                        stats.text += out
                        yield out
                if finish:
                    stats.stopped = {"length": "max_tokens"}.get(finish, "eos")
            if cancel is not None and cancel.is_set():
                stats.stopped = "cancelled"
                return
            if not stats.stopped:
                raise RemoteFailure("connection", "the stream ended before the reply was finished")
            if held.strip() or (held and started):
                stats.text += held
                yield held
        finally:
            done.set()
            conn.close()
            if not stats.n_gen:
                stats.n_gen = n_pieces  # a server that reports no usage: one piece is about one token
            if stats.t_first_token is not None:
                if not stats.t_prompt_s:  # time to the first piece: the server's queue, prompt and the network
                    stats.t_prompt_s = stats.t_first_token - stats.t_start
                if not stats.t_gen_s and t_last is not None:
                    stats.t_gen_s = t_last - stats.t_first_token
            if cancel is not None and cancel.is_set() and not stats.stopped:
                stats.stopped = "cancelled"


__all__ = ["Endpoint", "OpenAiBackend", "RemoteFailure", "api_key", "to_chat"]
