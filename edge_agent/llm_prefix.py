"""The local model's prompt in llama.cpp's KV cache (``PrefixCache``, a base of ``Llm``): the longest common prefix
kept and only the new tokens evaluated (``_prefill``), the fixed prefix evaluated ahead (``warmup``) and kept in a
state file, the spoken history evaluated between turns (``prefill``), and the first tokens of a reply generated at
the first pause (``pregenerate``: a ``Pregen``, which ``Llm.stream(..., resume=)`` continues)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import LlmSettings
from .errors import LlmError
from .llm_backend import CallStats as GenStats
from .llm_backend import Message
from .llm_prompt import STOP_STRINGS, render_chatml
from .stage_budget import inside

log = logging.getLogger("edge_agent.llm")  # the model's log name, as before the split

# Prompt tokens per decode call during a request: bounds how long a cancel waits during prompt evaluation. Smaller
# batches are much slower on CPU (measured on 2 busy cores: 256 -> 22 tok/s, 64 -> 13, 32 -> 9).
PREFILL_BATCH_TOKENS = 128
WARMUP_BATCH_TOKENS = 256  # = n_batch: warm-up is not cancellable, so it uses the fastest batch
IDLE_BATCH_TOKENS = 16  # idle prefill between turns: a new turn cancels it after at most this many tokens


@dataclass
class Pregen:
    """The first tokens of a reply generated before the turn asked for them (preemptive generation at the first
    pause, ``Llm.pregenerate``). ``stream(..., resume=)`` with the same prompt yields ``text`` first and generates
    on from the KV cache after ``tokens`` (nothing evaluated again), or, when the reply already ended (``stopped``
    "eos"/"stop"/"max_tokens"), calls the model no more. Only a clean cut is kept: ``text`` is exactly what
    ``stream`` would have yielded for ``tokens`` (no partial stop string or UTF-8 character held back)."""

    prompt: list[int]
    tokens: list[int]
    text: str
    stopped: str  # "paused" (enough for now: to be continued), "eos", "stop", "max_tokens"
    stop_string: str | None
    temperature: float
    stops: tuple[str, ...]
    stats: GenStats = field(default_factory=GenStats)


class _YieldingStop:
    """A prefill's stop: its own ``cancel``, or a call waiting for the model (``Llm._waiting``)."""

    def __init__(self, llm: PrefixCache, cancel: Any) -> None:
        self.llm, self.cancel, self.yielded = llm, cancel, False

    def is_set(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            return True
        if self.llm._waiting > 0:
            self.yielded = True
            return True
        return False


class PrefixCache:
    """The KV-cache half of ``Llm`` (``llm_model.py``); ``Llm`` supplies the attributes below."""

    model_path: Path
    settings: LlmSettings
    cache_dir: Path | None
    _llama: Any
    _lock: threading.Lock
    _waiting: int
    _closing: threading.Event
    last_stats: GenStats
    load: Callable[[], Any]
    tokenize: Callable[[str], list[int]]
    _held: Callable[[GenStats], contextlib.AbstractContextManager[None]]
    _generate: Callable[..., Iterator[str]]

    def warmup(self, prefix: str | Sequence[Message] | None = None) -> GenStats:
        """Evaluate the fixed prompt prefix once, so the first real request only evaluates its own tokens.

        With ``cache_dir`` the evaluated prefix (its KV cache) is saved to a file keyed by model, context size and
        prefix text, and loaded from there next time: a restart then skips evaluating it (stats.n_cached says so).
        """
        self.load()
        text = prefix if isinstance(prefix, str) else render_chatml(prefix or [{"role": "system", "content": "."}],
                                                                   add_generation_prompt=False)
        tokens = self.tokenize(text)
        stats = GenStats(n_prompt=len(tokens), t_start=time.monotonic())
        with self._lock, inside("llm"):
            state_file = self._state_file(text)
            if state_file is not None and state_file.is_file() and self._load_state_file(state_file, tokens):
                stats.n_cached = len(tokens)
                stats.t_prompt_s = time.monotonic() - stats.t_start
            else:
                self._prefill(tokens, stats, cancel=None,
                              deadline=time.monotonic() + max(300.0, self.settings.timeout_s), keep_last=False,
                              batch=WARMUP_BATCH_TOKENS)
                if state_file is not None:
                    self._save_state_file(state_file, tokens)
        self.last_stats = stats
        log.info("LLM warm-up: %d prefix tokens, %d evaluated in %.2f s", stats.n_prompt, stats.n_evaluated,
                 stats.t_prompt_s)
        return stats

    def prefill(self, text: str, cancel: threading.Event | None = None, batch: int = IDLE_BATCH_TOKENS) -> GenStats:
        """Bring the KV cache to ``text`` (a prompt's start) while nothing else runs: between turns, the spoken
        history is evaluated here instead of on the next turn's critical path. Small batches, so a new request
        (``cancel``) waits at most one of them; what was evaluated stays in the cache and is reused. It also yields
        to any call that waits for the model (``stopped`` "yielded"), whoever started it: work nobody waits for never
        keeps a request waiting (several brains on one model, as in tools/conversations.py, each stop only their
        own prefill through ``cancel``)."""
        self.load()
        tokens = self.tokenize(text)
        stats = GenStats(n_prompt=len(tokens), t_start=time.monotonic())
        stop = _YieldingStop(self, cancel)
        with self._lock, inside("llm"):
            if not self._prefill(tokens, stats, cancel=stop, deadline=time.monotonic() + 300.0, keep_last=False,
                                 batch=batch):
                stats.stopped = "yielded" if stop.yielded else "cancelled"
        return stats

    def pregenerate(self, prompt: str, *, max_tokens: int, enough: Callable[[str], bool] | None = None,
                    cancel: threading.Event | None = None, temperature: float | None = None,
                    stop: Sequence[str] = ()) -> Pregen | None:
        """The prompt evaluated and the first tokens of its reply generated now (no grammar): until ``enough`` of the
        text so far is true (a first clause) at a clean cut, or ``max_tokens``, or the reply ends. None when
        ``cancel`` stopped it (checked between batches and after every token) or no clean cut came. The tokens
        stay in the KV cache; ``stream(prompt, resume=...)`` continues after them."""
        self.load()
        tokens = self.tokenize(prompt)
        temp = self.settings.temperature if temperature is None else temperature
        stops = tuple(STOP_STRINGS) + tuple(stop)
        if len(tokens) + self.settings.max_tokens > self.settings.n_ctx:
            return None  # the turn reports it
        max_tokens = min(max_tokens, self.settings.max_tokens - 1)  # the turn's call generates at least one more
        stats = GenStats(n_prompt=len(tokens), t_start=time.monotonic())
        out: list[int] = []
        text = ""
        deadline = stats.t_start + self.settings.timeout_s
        with self._held(stats):
            for frag in self._generate(tokens, None, max_tokens, temp, stops, stats, cancel, deadline,
                                       self.settings.timeout_s, out=out,
                                       pause=enough or (lambda _said: False)):  # its bound is a pause, not the end
                text += frag
        if stats.stopped in ("cancelled", "timeout", "unclean"):
            return None
        stats.text = text
        return Pregen(tokens, out, text, stats.stopped, stats.stop_string, temp, stops, stats)

    def _state_file(self, prefix_text: str) -> Path | None:
        if self.cache_dir is None:
            return None
        import hashlib

        st = self.model_path.stat()
        key = hashlib.sha256(f"{self.model_path.name}|{st.st_size}|{st.st_mtime_ns}|{self.settings.n_ctx}|"
                             f"{prefix_text}".encode()).hexdigest()[:20]
        return self.cache_dir / f"prefix-{key}.state"

    def _save_state_file(self, path: Path, tokens: list[int]) -> None:
        import llama_cpp

        llama = self._llama
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
            if llama_cpp.llama_state_save_file(llama.ctx, str(tmp).encode(), arr, len(tokens)):
                tmp.replace(path)
            else:
                log.warning("could not save the LLM prefix state to %s", path)
        except OSError as e:
            log.warning("could not save the LLM prefix state to %s: %s", path, e)

    def _load_state_file(self, path: Path, tokens: list[int]) -> bool:
        """Restore a saved prefix; False (and a clean context) if the file is unusable or holds other tokens."""
        import ctypes

        import llama_cpp

        llama = self._llama
        cap = self.settings.n_ctx
        arr = (llama_cpp.llama_token * cap)()
        n = ctypes.c_size_t(0)
        ok = bool(llama_cpp.llama_state_load_file(llama.ctx, str(path).encode(), arr, cap, ctypes.byref(n)))
        if not ok or list(arr[: n.value]) != tokens:
            log.warning("ignoring unusable LLM prefix state %s", path)
            llama.reset()  # n_tokens = 0: the next eval drops every KV cell
            return False
        llama.input_ids[: n.value] = tokens
        llama.n_tokens = n.value
        return True


    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens`` the KV cache holds already (its longest common prefix with them)."""
        llama = self._llama
        ids = llama.input_ids
        limit = min(llama.n_tokens, len(tokens))
        n = 0
        while n < limit and ids[n] == tokens[n]:
            n += 1
        return n

    def _prefill(self, tokens: list[int], stats: GenStats, *, cancel: threading.Event | None, deadline: float,
                 keep_last: bool = True, batch: int = PREFILL_BATCH_TOKENS) -> bool:
        """Bring the KV cache to exactly ``tokens``, reusing the longest common prefix; False if cancelled.

        At least the last token is always evaluated (``keep_last``) so fresh logits exist for sampling.
        """
        llama = self._llama
        t0 = time.monotonic()
        cached = llama.n_tokens
        common = 0
        ids = llama.input_ids
        limit = min(cached, len(tokens))
        while common < limit and ids[common] == tokens[common]:
            common += 1
        if keep_last and common == len(tokens):
            common -= 1
        llama.n_tokens = common  # eval() drops the KV cells from here on
        stats.n_cached = common
        for i in range(common, len(tokens), batch):
            if (cancel is not None and cancel.is_set()) or self._closing.is_set():
                stats.t_prompt_s = time.monotonic() - t0
                return False
            if time.monotonic() > deadline:
                stats.t_prompt_s = time.monotonic() - t0
                raise LlmError(f"the LLM timed out evaluating the prompt ({len(tokens)} tokens, {common} of them "
                               f"cached; {i - common} evaluated in {stats.t_prompt_s:.1f} s after waiting "
                               f"{stats.t_wait_s:.1f} s for the model)",
                               fix="raise llm.timeout_s, use fewer threads elsewhere, or shorten the prompt")
            llama.eval(tokens[i:i + batch])
        stats.t_prompt_s = time.monotonic() - t0
        return True


def _resumable(pre: Pregen, tokens: list[int], grammar: Any, temperature: float, stops: tuple[str, ...],
               max_tokens: int) -> bool:
    """Does ``pre`` continue into this call: the same prompt tokens, sampling and stop strings, no grammar, and not
    more tokens than this call allows?"""
    return (grammar is None and pre.prompt == tokens and pre.temperature == temperature and pre.stops == stops
            and len(pre.tokens) < max_tokens)


__all__ = ["IDLE_BATCH_TOKENS", "PREFILL_BATCH_TOKENS", "WARMUP_BATCH_TOKENS", "Pregen", "PrefixCache"]
