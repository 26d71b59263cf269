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
tool-call tag, the "words only" grammar). ``Llm``'s KV cache (prefix reuse, warm-up, state file, idle prefill,
preemptive generation) is its base ``PrefixCache`` (``llm_prefix.py``); its grammars, ``complete_json`` and
``choose`` are its base ``ConstrainedOutput`` (``llm_constrained.py``).
Only the backend knows the template; the brain sees messages, text and one ``CallStats`` per call.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import LlmSettings
from .errors import LlmError, ModelError
from .llm_backend import CallStats, Message
from .llm_constrained import ConstrainedOutput, _GrammarCache
from .llm_prefix import PrefixCache, Pregen, _resumable
from .llm_prompt import STOP_STRINGS, _find_stop, _partial_stop_len, render_chatml
from .stage_budget import inside, stage_cpus, stage_threads
from .text import DEFAULT_FIRST_CLAUSE_WORDS, SentenceBuffer

log = logging.getLogger("edge_agent.llm")  # the model's log name, as before the split

CLOSE_WAIT_S = 10.0  # close() waits this long for a call inside llama.cpp to reach its next batch or token


GenStats = CallStats  # the per-call figures (one object per call: ``stats=`` or ``last_stats``)


class Llm(PrefixCache, ConstrainedOutput):
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

        staged = stage_cpus("llm")  # the LLM's own quota (a simulated board's, stage_budget): as many as it keeps busy
        return llm_threads(self.settings.threads) if staged is None or self.settings.threads else stage_threads(staged)

    @property
    def first_threads(self) -> int:
        """llama.cpp threads while a turn waits for the model (``llm.first_threads``; cpu_share.llm_first_threads)."""
        from .cpu_share import llm_first_threads

        if stage_cpus("llm") is not None and not self.settings.first_threads:
            return self.threads
        return llm_first_threads(self.settings.first_threads, self.threads)

    @contextlib.contextmanager
    def _burst(self) -> Iterator[Callable[[], None]]:
        """While the caller holds the model for a turn's critical path: llama.cpp on ``first_threads`` (on 2 cores,
        both: 1 → 2 threads took generation here from 14 to 24 tokens/s and the prompt from 53-72 to 134 tokens/s).
        The yielded ``calm()`` goes back to ``threads`` as soon as the voice needs a core (the reply's first
        sentence is written); leaving the block always does."""
        import llama_cpp

        n, burst = self.threads, self.first_threads
        ctx = self._llama._ctx.ctx if burst > n else None
        if ctx is not None:
            llama_cpp.llama_set_n_threads(ctx, burst, burst)
        calmed = [ctx is None]

        def calm() -> None:
            if not calmed[0]:
                llama_cpp.llama_set_n_threads(ctx, n, n)
                calmed[0] = True

        try:
            yield calm
        finally:
            calm()

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
        # the voice's own rule (tts.first_clause_words at its default) for when it starts on the first piece
        first = SentenceBuffer(first_clause_words=DEFAULT_FIRST_CLAUSE_WORDS, clean=False)
        with self._held(stats), self._burst() as calm:
            for frag in self._generate(gen_tokens, gram, max_tokens, temp, stops, stats, cancel, deadline, timeout_s,
                                       n_before=len(gen_tokens) - len(tokens)):
                stats.text += frag
                if first is not None and first.push(frag):
                    calm()  # the voice starts synthesizing now: give it the core back
                    first = None
                yield frag

    def complete(self, prompt_or_messages: str | Sequence[Message], **kwargs: Any) -> str:
        """The whole reply as one string (``stream`` joined)."""
        return "".join(self.stream(prompt_or_messages, **kwargs))

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
            with inside("llm"):  # under a simulated board's LLM quota, if the budget gives it one (stage_budget)
                yield
        finally:
            self._lock.release()

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


def _close_at_exit(ref: weakref.ReferenceType[Llm]) -> None:
    model = ref()
    if model is not None:
        model.close()


__all__ = ["GenStats", "Llm"]
