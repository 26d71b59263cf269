"""The local language model (llama.cpp through llama-cpp-python): streaming, cancellable, prefix-cached, constrained.

Why it looks like this:

* **Latency is everything on a Pi.** An uncached 300-token system prompt costs seconds at ~80 prompt tokens/s. Every
  prompt is built by ``render_chatml`` so the fixed part (system prompt + tool list) is an identical token prefix on
  every call; before decoding, ``_prefill`` keeps the longest common prefix of what is already in llama.cpp's KV
  cache and evaluates only the new tokens. ``GenStats`` records how many tokens were reused and how long the prompt
  evaluation took, so this can be measured (and is, in the tests).
* **Cancellation between tokens.** The prompt suffix is evaluated in small batches and generation yields token by
  token; ``cancel`` (a ``threading.Event``) and the deadline are checked between batches and tokens, so a barge-in
  stops the model within one batch/token, and a timeout raises ``LlmError`` instead of hanging the voice loop.
* **Constrained output.** ``complete_json`` turns a JSON schema into a GBNF grammar (cached per schema), decodes
  greedily under it, then parses and validates the result with ``jsonschema``: bad output becomes an ``LlmError``
  naming what was wrong, never a crash further on. ``choose`` writes text as a few choices instead (``llm_choice``:
  a model step only where the model has a real choice, forced text batched with it): the local backend's tool calls.

The chat template is Qwen's ChatML (``<|im_start|>role ... <|im_end|>``), built in ``llm_prompt.py`` rather than
through ``create_chat_completion`` so the exact token prefix is under our control.

Two layers: ``Llm`` (this module) is the model (prompt text in, tokens out, the KV cache, grammars);
``LocalLlamaBackend`` (``llm.py``) is the brain's ``LlmBackend`` port on top of it (chat messages in: ChatML, the
tool-call tag, the "words only" grammar).
Only the backend knows the template; the brain sees messages, text and one ``CallStats`` per call.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import LlmSettings
from .errors import LlmError, ModelError
from .llm_backend import CallStats, Message
from .llm_choice import ChoiceDecoder
from .llm_prompt import STOP_STRINGS, _find_stop, _partial_stop_len, parse_json_output, render_chatml

log = logging.getLogger("edge_agent.llm")  # the model's log name, as before the split

# Prompt tokens per decode call during a request: bounds how long a cancel waits during prompt evaluation. Smaller
# batches are much slower on CPU (measured on 2 busy cores: 256 -> 22 tok/s, 64 -> 13, 32 -> 9).
PREFILL_BATCH_TOKENS = 128
WARMUP_BATCH_TOKENS = 256  # = n_batch: warm-up is not cancellable, so it uses the fastest batch
IDLE_BATCH_TOKENS = 16  # idle prefill between turns: a new turn cancels it after at most this many tokens
CLOSE_WAIT_S = 10.0  # close() waits this long for a call inside llama.cpp to reach its next batch or token


GenStats = CallStats  # the per-call figures (one object per call: ``stats=`` or ``last_stats``)


@dataclass
class _GrammarCache:
    by_schema: dict[str, Any] = field(default_factory=dict)
    token_of: dict[bytes, int | None] = field(default_factory=dict)  # text -> the one token that is it (choices)


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

    def __init__(self, llm: Llm, cancel: Any) -> None:
        self.llm, self.cancel, self.yielded = llm, cancel, False

    def is_set(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            return True
        if self.llm._waiting > 0:
            self.yielded = True
            return True
        return False


class Llm:
    """One llama.cpp model. Not re-entrant: calls are serialized by a lock (one CPU-bound model at a time)."""

    def __init__(self, model_path: str | Path, settings: LlmSettings, *, cache_dir: str | Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._llama: Any = None
        self._lock = threading.Lock()
        self._waiting = 0  # calls waiting for the model (``_held``): a prefill yields to them at its next batch
        self._waiting_lock = threading.Lock()
        self._closing = threading.Event()  # set by close(): a running evaluation stops at its next batch
        self._grammars = _GrammarCache()
        self.last_stats = GenStats()
        self.load_s: float | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def threads(self) -> int:
        """llama.cpp threads: the setting, or for 0 every CPU but one, at least one (cpu_share.llm_threads)."""
        from .cpu_share import llm_threads

        return llm_threads(self.settings.threads)

    def load(self) -> Llm:
        """Load the GGUF (idempotent). Raises ModelError for a missing/unreadable file or a missing package."""
        if self._llama is not None:
            return self
        if self._closing.is_set():
            raise ModelError(f"the LLM {self.model_path.name} was closed (shutting down)",
                             fix="nothing to do: the daemon is stopping; start it again to use the LLM")
        if not self.model_path.is_file():
            raise ModelError(f"LLM model file {self.model_path} does not exist",
                             fix="edge-agent models fetch qwen2_5_coder_0_5b, or set llm.model to a GGUF file")
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError(f"llama-cpp-python is not installed ({e})",
                             fix="pip install llama-cpp-python==0.3.36 (builds llama.cpp from source, ~7 min)",
                             ) from None
        t0 = time.monotonic()
        try:
            self._llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.settings.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_batch=256,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"cannot load LLM model {self.model_path}: {e}",
                             fix="check the file is a GGUF model (edge-agent models verify)") from None
        self.load_s = time.monotonic() - t0
        log.info("LLM %s loaded in %.2f s", self.model_path.name, self.load_s)
        # At interpreter exit a daemon thread (the idle prefill, a turn cut short) may still be inside llama.cpp:
        # freeing the model under it crashes the process (SIGSEGV). Close first, which waits for that batch.
        atexit.register(_close_at_exit, weakref.ref(self))
        return self

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Free the model once no call is inside llama.cpp: a running evaluation or generation stops at its next
        batch or token. Later calls raise ModelError. If a call holds on past ``timeout_s`` the model is left
        allocated (a leak at exit, not a crash)."""
        self._closing.set()
        if not self._lock.acquire(timeout=timeout_s):
            log.warning("LLM close: a call is still inside llama.cpp after %.0f s; the model is left allocated",
                        timeout_s)
            return
        try:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
        finally:
            self._lock.release()

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
        with self._lock:
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
        with self._lock:
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

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        self.load()
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        """Token count (exact once loaded; ~4 characters per token before)."""
        if self._llama is None:
            return max(1, len(text) // 4)
        return len(self.tokenize(text))

    # ------------------------------------------------------------------ generation
    def stream(
        self,
        prompt_or_messages: str | Sequence[Message],
        *,
        grammar: Any = None,
        max_tokens: int | None = None,
        cancel: threading.Event | None = None,
        timeout_s: float | None = None,
        temperature: float | None = None,
        stop: Sequence[str] = (),
        stats: GenStats | None = None,
        resume: Pregen | None = None,
    ) -> Iterator[str]:
        """Yield the reply text fragment by fragment (one or more tokens' worth; complete UTF-8 characters).

        ``resume``: a ``pregenerate`` of this very prompt (same tokens, sampling and stop strings; no grammar): its
        text is yielded first and generation goes on after its tokens, which the KV cache holds
        (``stats.n_preempted`` of them; ``stats.n_gen`` counts only the tokens generated by this call). A
        ``resume`` that does not fit is ignored (logged): the reply is generated from the prompt.

        Stops at end-of-turn, a stop string (not yielded), ``max_tokens``, or when ``cancel`` is set (returns
        quietly: the caller cancelled). Raises ``LlmError`` when ``timeout_s`` passes. ``grammar`` is a GBNF string
        or a ``LlamaGrammar``. ``stats`` (a fresh ``GenStats`` if not given; also ``self.last_stats``) describes
        the call once the iterator is exhausted or closed; its ``text`` is everything yielded.
        """
        self.load()
        prompt = prompt_or_messages if isinstance(prompt_or_messages, str) else render_chatml(prompt_or_messages)
        tokens = self.tokenize(prompt)
        max_tokens = self.settings.max_tokens if max_tokens is None else max_tokens
        timeout_s = self.settings.timeout_s if timeout_s is None else timeout_s
        temp = self.settings.temperature if temperature is None else temperature
        if len(tokens) + max_tokens > self.settings.n_ctx:
            raise LlmError(f"prompt of {len(tokens)} tokens + {max_tokens} reply tokens exceeds the context window "
                           f"of {self.settings.n_ctx}", fix="raise llm.n_ctx or lower conversation.max_history_tokens")
        gram = self._grammar(grammar)
        stops = tuple(STOP_STRINGS) + tuple(stop)
        stats = stats if stats is not None else GenStats()
        stats.n_prompt, stats.t_start = len(tokens), time.monotonic()
        self.last_stats = stats
        deadline = stats.t_start + timeout_s
        if resume is not None and not _resumable(resume, tokens, gram, temp, stops, max_tokens):
            log.info("preempted tokens not reused: the call differs from the preemptive one")
            resume = None
        gen_tokens = tokens
        if resume is not None:
            stats.n_preempted = len(resume.tokens)
            if resume.text:
                stats.t_first_token = time.monotonic()
                stats.text += resume.text
                yield resume.text
            if resume.stopped != "paused":  # the whole reply was generated at the pause
                stats.stopped, stats.stop_string = resume.stopped, resume.stop_string
                stats.n_cached = len(tokens)
                return
            gen_tokens = tokens + resume.tokens
        with self._held(stats):
            for frag in self._generate(gen_tokens, gram, max_tokens, temp, stops, stats, cancel, deadline, timeout_s,
                                       n_before=len(gen_tokens) - len(tokens)):
                stats.text += frag
                yield frag

    def complete(self, prompt_or_messages: str | Sequence[Message], **kwargs: Any) -> str:
        """The whole reply as one string (``stream`` joined)."""
        return "".join(self.stream(prompt_or_messages, **kwargs))

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

        with self._held(stats):
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

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _held(self, stats: GenStats) -> Iterator[None]:
        """The model, for one call; the wait for it (another call held it) is ``stats.t_wait_s``, and counts
        against the call's deadline like any other delay the user waits through."""
        t0 = time.monotonic()
        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            stats.t_wait_s = time.monotonic() - t0
            yield
        finally:
            self._lock.release()

    def _grammar(self, grammar: Any) -> Any:
        if grammar is None or not isinstance(grammar, str):
            return grammar
        from llama_cpp import LlamaGrammar

        return LlamaGrammar.from_string(grammar, verbose=False)

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

    def _generate(self, tokens: list[int], grammar: Any, max_tokens: int, temp: float, stops: tuple[str, ...],
                  stats: GenStats, cancel: threading.Event | None, deadline: float,
                  timeout_s: float, *, out: list[int] | None = None, pause: Callable[[str], bool] | None = None,
                  n_before: int = 0) -> Iterator[str]:
        """Sample after ``tokens``. ``out`` collects the tokens sampled; ``pause(text so far)`` true at a clean cut
        (nothing held back) ends it with ``stopped`` "paused" (no clean cut by ``max_tokens``: "unclean");
        ``n_before`` of ``tokens`` were generated before (a resumed reply): they count against ``max_tokens``."""
        import llama_cpp

        llama = self._llama
        if not self._prefill(tokens, stats, cancel=cancel, deadline=deadline):
            stats.stopped = "cancelled"
            return
        if n_before:  # the prompt part of a resumed reply was in the cache: only the generated tokens count
            stats.n_cached = stats.n_prompt
        t_gen0 = time.monotonic()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llama._model.vocab
        held = ""  # text that might be the start of a stop string: held back until it is not
        said = ""  # what was yielded (``pause`` reads it)
        gen = llama.generate(tokens, temp=temp, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
                             grammar=grammar, reset=True)
        try:
            for tok in gen:
                now = time.monotonic()
                if stats.t_first_token is None:
                    stats.t_first_token = now
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    stats.stopped = "eos"
                    break
                stats.n_gen += 1
                if out is not None:
                    out.append(tok)
                held += decoder.decode(llama.detokenize([tok], special=True))
                hit = _find_stop(held, stops)
                if hit is not None:
                    cut, stats.stop_string = hit
                    if held[:cut]:
                        yield held[:cut]
                    stats.stopped = "stop"
                    break
                keep = _partial_stop_len(held, stops)
                if len(held) > keep:
                    piece, held = held[: len(held) - keep], held[len(held) - keep:]
                    said += piece
                    yield piece
                clean = not held and not decoder.getstate()[0]
                if pause is not None and clean and pause(said):
                    stats.stopped = "paused"
                    break
                if n_before + stats.n_gen >= max_tokens:
                    # a bounded preemptive run pauses at its limit (a clean cut) or is not kept
                    stats.stopped = "max_tokens" if pause is None else "paused" if clean else "unclean"
                    break
                if (cancel is not None and cancel.is_set()) or self._closing.is_set():
                    stats.stopped = "cancelled"
                    break
                if time.monotonic() > deadline:
                    stats.stopped = "timeout"
                    raise LlmError(f"the LLM did not finish within {timeout_s:g} s ({stats.n_gen} tokens generated)",
                                   fix="raise llm.timeout_s or lower llm.max_tokens")
            else:
                stats.stopped = stats.stopped or "eos"
            if stats.stopped in ("eos", "max_tokens"):
                held += decoder.decode(b"", final=True)
                if held:
                    yield held
        finally:
            gen.close()
            stats.t_gen_s = time.monotonic() - t_gen0


class _ChoiceModel:
    """``llm_choice.ChoiceModel`` on the loaded llama.cpp model (called under the model's lock)."""

    TOKEN_OF_MAX = 50_000  # texts remembered (the same names and syntax come back every call)

    def __init__(self, llm: Llm) -> None:
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


def _resumable(pre: Pregen, tokens: list[int], grammar: Any, temperature: float, stops: tuple[str, ...],
               max_tokens: int) -> bool:
    """Does ``pre`` continue into this call: the same prompt tokens, sampling and stop strings, no grammar, and not
    more tokens than this call allows?"""
    return (grammar is None and pre.prompt == tokens and pre.temperature == temperature and pre.stops == stops
            and len(pre.tokens) < max_tokens)


def _close_at_exit(ref: weakref.ReferenceType[Llm]) -> None:
    model = ref()
    if model is not None:
        model.close()


__all__ = ["IDLE_BATCH_TOKENS", "PREFILL_BATCH_TOKENS", "WARMUP_BATCH_TOKENS", "GenStats", "Llm", "Pregen"]
