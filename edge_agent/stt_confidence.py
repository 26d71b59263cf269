"""How sure a greedy Whisper decode was of its words, from the decoder's log-probabilities at each step (pure numpy
over the rows CTranslate2 returns with ``return_logits_vocab``).

- ``on_off_margin``: at the first on/off token, its log-probability less the opposite word's there (the on/off
  second look is skipped above ``sound_match.SURE_MARGIN``);
- ``least_sure``: the lowest log-probability of a chosen token that holds a letter or a digit (punctuation and
  spacing left out): where the decode was least sure of a word. A misheard word is nearly always an unsure step;
  the sound tier is skipped where every word was sure (``sound_match.SURE_WORDS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decoded:
    """What the decode that wrote a transcript knew of it (``SttStream.decoded``); None fields where it cannot say."""

    margin: float | None = None  # nats: its first on/off word over the opposite word at that step
    least_sure: float | None = None  # nats: the log-probability of its least sure word token


def on_off_margin(steps: Sequence[Any], ids: Sequence[int], opposite: dict[int, int]) -> float | None:
    """The first on/off token's log-probability less the opposite word's at the same step (``opposite``: a token ->
    the other word's token), or None without one."""
    for i, token in enumerate(ids[:len(steps)]):
        other = opposite.get(token)
        if other is not None:
            row = np.asarray(steps[i])
            return round(float(row[token] - row[other]), 3)
    return None


def opposite_tokens(tokenizer: Any) -> dict[int, int]:
    """Each one-token spelling of "on"/"off" (leading space or not, capitalised or not) -> the other's."""
    out: dict[int, int] = {}
    for word, other in (("on", "off"), ("off", "on")):
        for form in (str.lower, str.capitalize):
            for space in ("", " "):
                a, b = tokenizer.encode(space + form(word)), tokenizer.encode(space + form(other))
                if len(a) == 1 and len(b) == 1:
                    out[a[0]] = b[0]
    return out


def least_sure(steps: Sequence[Any], ids: Sequence[int], is_word: Callable[[int], bool]) -> float | None:
    """The lowest log-probability (nats, log-softmax of the step's row) of a chosen token for which ``is_word``
    holds; None without one."""
    worst: float | None = None
    for i, token in enumerate(ids[:len(steps)]):
        if not is_word(token):
            continue
        row = np.asarray(steps[i])
        top = row.max()
        lp = float(row[token] - top - np.log(np.exp(row - top, dtype=np.float64).sum()))
        worst = lp if worst is None else min(worst, lp)
    return None if worst is None else round(worst, 3)


__all__ = ["Decoded", "least_sure", "on_off_margin", "opposite_tokens"]
