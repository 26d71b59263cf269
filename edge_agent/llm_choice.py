"""Constrained decoding as a few choices: the model picks among known strings (``choose``) or writes a number in a
range (``number``), and it spends a model step only where it has a real choice.

Why: written token by token under a grammar, a tool call costs one model step per token (80-100 ms each on this
machine's one LLM thread; ``{"name": "HassTurnOff", "arguments": {"name": "Living Room Blinds"}}`` is 21 tokens),
though most of those tokens are forced by the syntax or follow from a name's first letters. Here:

* text the constraint forces (``", "arguments": {"``, or `` Room`` once "Living" leaves only "Living Room ...")
  is never sampled: its tokens are evaluated in one batch with the next real choice (a batch of a few tokens costs
  little more than one token), and it stays text until then, so it is tokenized together with what follows (the
  model's own ``",`` rather than ``"`` then ``,``);
* a choice ends as soon as one candidate is left (after "Bl" only "Blinds" remains), and text that nothing is
  chosen after is never evaluated at all;
* at each real choice the next token is the most likely of those that continue some candidate (greedy, like the
  grammar-constrained decode), so the result is always one of the candidates.

Pure logic over a small model interface (``ChoiceModel``), tested without a model; ``llm_model.Llm.choose`` runs it
on the real one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import LlmError

MAX_PIECE_BYTES = 24  # longer vocabulary pieces are not looked for (the tokens of names and syntax are short)
DIGITS = b"0123456789"


class ChoiceModel(Protocol):
    """What the decoder needs of a model."""

    def advance(self, tokens: Sequence[int]) -> Any:
        """Evaluate ``tokens`` after what is evaluated already; the logits after the last one (indexable by id)."""
        ...

    def tokenize(self, data: bytes) -> list[int]:
        """``data`` as tokens (no BOS, special tokens not parsed)."""
        ...

    def piece(self, token: int) -> bytes:
        """The token's text."""
        ...

    def token_of(self, data: bytes) -> int | None:
        """The token whose text is exactly ``data``, or None."""
        ...


@dataclass
class ChoiceStats:
    decisions: int = 0  # tokens the model chose: one model step each (with the forced tokens before it)
    forced: int = 0  # tokens evaluated that the constraint forced (no model step of their own)
    t_first_decision: float | None = None


class ChoiceDecoder:
    """Writes after a prompt whose last logits are ``logits``: forced text (``force``), choices (``choose``,
    ``number``), in order. ``pending``: the prompt's last tokens, not evaluated yet (``logits`` is then None): they
    go in one batch with the first choice (and the text forced before it, e.g. the "Hass" every tool name begins
    with). ``check`` runs before every model step and raises to stop (cancel, deadline)."""

    def __init__(self, model: ChoiceModel, logits: Any, *, pending: Sequence[int] = (),
                 check: Callable[[], None] = lambda: None, clock: Callable[[], float] | None = None) -> None:
        if logits is None and not pending:
            raise ValueError("no logits and nothing to evaluate")
        self.model = model
        self._logits = logits
        self._todo: list[int] = list(pending)  # tokens written, not evaluated yet
        self._tail = b""  # forced text not tokenized yet (joined with what follows it)
        self._check = check
        self._clock = clock
        self.stats = ChoiceStats()

    def force(self, data: bytes) -> None:
        """Write ``data`` (no choice): evaluated with the next choice, or never if none follows."""
        self._tail += data

    def choose(self, candidates: Sequence[bytes]) -> bytes:
        """One of ``candidates`` (none a prefix of another): the model picks token by token until one is left;
        the rest of it is forced. Returns the candidate."""
        cands = list(dict.fromkeys(candidates))
        if not cands:
            raise LlmError("nothing to choose from")
        _check_prefix_free(cands)
        tail, self._tail = self._tail, b""
        full = [tail + c for c in cands]
        done = b""
        while True:
            live = [f for f in full if f.startswith(done)]
            if len(live) == 1:
                self._tail = live[0][len(done):]
                return live[0][len(tail):]
            rests = [f[len(done):] for f in live]
            shared = self._shared_tokens(rests)
            if shared:
                self._todo += shared
                self.stats.forced += len(shared)
                done += b"".join(self.model.piece(t) for t in shared)
                continue
            done += self._decide(self._allowed(rests))

    def number(self, lo: int, hi: int, *, decimal: bool, ends: Sequence[bytes]) -> tuple[str, bytes]:
        """A number in [lo, hi] (0 <= lo; with ``decimal`` one decimal place may follow), then one of ``ends``
        (none a prefix of another). Returns (the number's text, the end chosen)."""
        if lo < 0 or hi < lo:
            raise LlmError(f"cannot write a number in [{lo}, {hi}]")
        if self._tail:
            self._flush_tail()
        ends = list(dict.fromkeys(ends))
        digits = b""
        while True:
            whole = _whole(digits, lo, hi, decimal)
            options: dict[int, bytes] = {}  # token -> the text it writes
            for c in [bytes([d]) for d in DIGITS] + ([b"."] if decimal else []):
                tok = self.model.token_of(c) if _number_prefix(digits + c, lo, hi, decimal) else None
                if tok is not None:
                    options[tok] = c
            if whole and not options:  # the number cannot go on: only its end is left to choose
                return digits.decode(), self.choose(ends)
            if not whole and len(options) == 1:
                tok, c = next(iter(options.items()))
                self._todo.append(tok)
                self.stats.forced += 1
                digits += c
                continue
            if not options:
                raise LlmError(f"no token continues the number {digits.decode()!r} in [{lo}, {hi}]")
            end_tokens = self._allowed(ends) if whole else {}
            piece = self._decide({**end_tokens, **options})
            if self._last in options:
                digits += piece
                continue
            started = [e for e in ends if e.startswith(piece)]  # an end was begun: finish it
            if len(started) == 1:
                self._tail = started[0][len(piece):]
                return digits.decode(), started[0]
            return digits.decode(), piece + self.choose([e[len(piece):] for e in started])

    # ------------------------------------------------------------------ internals
    def _flush_tail(self) -> None:
        toks = self.model.tokenize(self._tail)
        self._todo += toks
        self.stats.forced += len(toks)
        self._tail = b""

    def _shared_tokens(self, rests: list[bytes]) -> list[int]:
        """The tokens every rest's own tokenization starts with (text they all continue with), short of any whole
        rest (a choice must remain)."""
        if not os.path.commonprefix(rests):
            return []
        toks = [self.model.tokenize(r) for r in rests]
        shared: list[int] = []
        for column in zip(*toks, strict=False):
            if any(t != column[0] for t in column):
                break
            shared.append(column[0])
        shortest = min(len(t) for t in toks)
        return shared[: min(len(shared), shortest - 1)]

    def _allowed(self, rests: Sequence[bytes]) -> dict[int, bytes]:
        """Tokens whose text begins some rest (token -> its text), and each rest's own first token (so a choice
        can always go on, even where a piece is not a whole character)."""
        out: dict[int, bytes] = {}
        for p in {r[:k] for r in rests for k in range(1, min(len(r), MAX_PIECE_BYTES) + 1)}:
            tok = self.model.token_of(p)
            if tok is not None:
                out[tok] = p
        for r in rests:
            first = self.model.tokenize(r)[:1]
            if first:
                out.setdefault(first[0], self.model.piece(first[0]))
        return out

    _last: int = -1

    def _decide(self, options: dict[int, bytes]) -> bytes:
        """Evaluate what is pending, then the most likely of ``options``: written (pending), its text returned."""
        self._check()
        if self._todo:
            self._logits = self.model.advance(self._todo)
            self._todo = []
        ids = np.fromiter(options, dtype=np.int64, count=len(options))
        tok = int(ids[int(np.argmax(np.asarray(self._logits)[ids]))])
        if self.stats.t_first_decision is None and self._clock is not None:
            self.stats.t_first_decision = self._clock()
        self.stats.decisions += 1
        self._todo.append(tok)
        self._last = tok
        return options[tok]


def _check_prefix_free(cands: list[bytes]) -> None:
    s = sorted(cands)
    for a, b in zip(s, s[1:], strict=False):
        if b.startswith(a):
            raise LlmError(f"choice candidates {a!r} and {b!r}: one is a prefix of the other")


def _canonical(digits: str) -> bool:
    return digits == "0" or not digits.startswith("0")


def _number_prefix(digits: bytes, lo: int, hi: int, decimal: bool) -> bool:
    """``digits`` (digits, maybe a '.' and one decimal) begins a number in [lo, hi], without leading zeros."""
    text = digits.decode()
    whole, dot, frac = text.partition(".")
    if not whole.isdigit() or not _canonical(whole):
        return False
    if dot:
        if not decimal or len(frac) > 1 or (frac and not frac.isdigit()):
            return False
        v = int(whole) + (int(frac) / 10 if frac else 0.0)
        return lo <= int(whole) and v <= hi
    n = int(whole)
    for extra in range(len(str(hi)) - len(whole) + 1):
        if extra and n == 0:
            break  # "0" cannot go on: no leading zeros
        if n * 10 ** extra <= hi and (n + 1) * 10 ** extra - 1 >= lo:
            return True
    return False


def _whole(digits: bytes, lo: int, hi: int, decimal: bool) -> bool:
    """``digits`` is a complete number in [lo, hi] (a '.' needs its decimal)."""
    text = digits.decode()
    if not text or text.endswith(".") or ("." in text and not decimal):
        return False
    try:
        return lo <= float(text) <= hi
    except ValueError:
        return False


__all__ = ["ChoiceDecoder", "ChoiceModel", "ChoiceStats"]
