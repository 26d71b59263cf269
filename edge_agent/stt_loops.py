"""The shapes of a Whisper decoding loop, pure: what makes a decode doubtful (``has_repetition``, the compression
ratio, the token cap) and what of a looped one can be kept (``said_again``)."""

from __future__ import annotations

import re
import zlib

from .stt_text import normalize_text

COMPRESSION_RATIO_MAX = 2.4  # Whisper's threshold for a degenerate (repetitive) decode
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def said_again(text: str) -> str | None:
    """The first sentence of a decode that is that sentence said over and over, the last saying perhaps cut short
    by the token cap ("Set the kitchen light to 20 percent. Set the kitchen light to 20 percent. Set the"), else
    None. A primed decode loops so when the names' list leads it on; on the bench's and the spoken paraphrases'
    audio its first saying was as right as the decode redone without the names in 7 of 7, once righter
    (docs/benchmarks.md, "Twenty-first session")."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    if len(parts) < 2 or not parts[0].rstrip().endswith((".", "?", "!")):
        return None
    first = normalize_text(parts[0]).split()
    if not first or normalize_text(parts[1]).split() != first:  # said again whole at least once
        return None
    for i, part in enumerate(parts[2:], start=3):
        words = normalize_text(part).split()
        if words != first and not (i == len(parts) and _cut_short(words, first)):
            return None
    return parts[0].strip()


def _cut_short(words: list[str], whole: list[str]) -> bool:
    """``words`` are the start of ``whole``, the last perhaps cut inside a word (the token cap: "turn on the l")."""
    n = len(words)
    return 0 < n <= len(whole) and words[:-1] == whole[:n - 1] and whole[n - 1].startswith(words[-1])


def has_repetition(words: list[str]) -> bool:
    """True when a block of two or more words comes twice in a row, or one word three times in a row: the shape of
    a Whisper decoding loop. A person rarely says that; when they do, the only cost is one more decode."""
    n = len(words)
    for k in range(1, n // 2 + 1):
        need = 3 if k == 1 else 2
        for i in range(0, n - need * k + 1):
            if all(words[i + j * k:i + (j + 1) * k] == words[i:i + k] for j in range(1, need)):
                return True
    return False


def compression_ratio(text: str) -> float:
    """How well the text compresses: a loop of repeated words compresses far better than speech."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def max_tokens_for(audio_s: float) -> int:
    """A cap on decoded tokens that real speech never reaches (fast speech is ~5 words/s, ~1.3 tokens a word plus
    punctuation): a decode that hits it is a loop of repeated words, cut short and then redone."""
    return int(min(440, 12 + 10 * audio_s))
