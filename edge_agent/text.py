"""Text for the voice: cut a stream of LLM tokens into speakable pieces, and clean what Piper should not read.

Why this exists: a reply is spoken while the LLM is still writing it. Waiting for the whole reply costs seconds on a
Pi; speaking each sentence as soon as it is complete (and, for the very first piece, the first clause once it has a
few words) brings the time to first audio down to one short synthesis. ``SentenceBuffer`` is a pure state machine
fed text fragments of any size; its output is the same whatever the fragmentation (tested by feeding 1-3 character
fragments), because a boundary is only decided once the character after it is known.

It must not cut at the dots of decimals ("3.5"), abbreviations ("Mr.", "e.g.", "a.m."), initials, list numbers
("1. Open ..."), the colon of times ("10:30"), the comma of numbers ("1,000"), or ellipses ("Well... maybe"), and it
never cuts inside a ``{...}`` span (a tool call or JSON that leaked into the reply): ``speakable`` drops such spans,
markdown symbols, code blocks, tags, links' targets and emoji, so the voice never reads "asterisk asterisk".
"""

from __future__ import annotations

import re
import unicodedata

# Titles and the like: followed by a name, so their dot never ends a sentence.
NEVER_END_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft vs cf approx e.g i.e eg ie no nos fig vol ca gen col lt sgt capt rev hon".split()
)
# Abbreviations that may end a sentence: a cut only when the next word starts with a capital letter.
MAYBE_END_ABBREVIATIONS = frozenset("etc a.m p.m am pm inc ltd co corp jr sr u.s u.k".split())
SENTENCE_END = ".!?…"
CLAUSE_END = ",;:"
CLOSERS = "\"'”’)]»"
DEFAULT_FIRST_CLAUSE_WORDS = 4
DEFAULT_MAX_CHARS = 280  # a piece longer than this (an LLM that never uses punctuation) is cut at a space


def _word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9À-ÿ']+", text))


def _token_before(buf: str, i: int) -> str:
    """The whitespace-delimited token that ends at ``i`` (without leading quotes/brackets), lower-cased."""
    m = re.search(r"(\S+)$", buf[:i])
    return m.group(1).lstrip("\"'“‘([«").lower() if m else ""


class SentenceBuffer:
    """Streaming sentence (and first-clause) splitter for LLM output.

    ``push(fragment)`` returns the pieces completed by that fragment, already passed through ``speakable`` (empty
    pieces are dropped); ``flush()`` returns what is left at the end of generation and resets the buffer.

    ``first_clause_words``: while nothing has been emitted yet, a clause ending in , ; or : is emitted on its own once
    it has at least this many words, so the voice can start early. 0 disables it. ``max_chars``: a piece with no
    boundary is cut at its last space once it grows past this length, so synthesis never waits for a run-on reply.
    """

    def __init__(self, first_clause_words: int = DEFAULT_FIRST_CLAUSE_WORDS, max_chars: int = DEFAULT_MAX_CHARS,
                 clean: bool = True) -> None:
        self.first_clause_words = first_clause_words
        self.max_chars = max_chars
        self.clean = clean
        self._buf = ""
        self._emitted = 0  # pieces emitted since the last reset (the first-clause rule applies only while 0)
        self._in_fence = False  # inside a ``` code block: everything is dropped until the closing fence

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def reset(self) -> None:
        """Forget everything (a new reply, or an interrupted one)."""
        self._buf = ""
        self._emitted = 0
        self._in_fence = False

    def push(self, fragment: str) -> list[str]:
        """Add a fragment; return the pieces it completed."""
        self._buf += fragment
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of generation: return every remaining piece and reset."""
        out = self._drain(final=True)
        self.reset()
        return out

    # ------------------------------------------------------------------ internals
    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while self._buf:
            cut = _find_boundary(self._buf, final=final,
                                 clause_words=self.first_clause_words if (self._emitted == 0 and not out) else 0,
                                 max_chars=self.max_chars)
            if cut is None:
                if final:
                    cut = len(self._buf)
                else:
                    break
            piece, self._buf = self._buf[:cut], self._buf[cut:]
            if not final:
                # keep the whitespace that follows a cut out of the next piece, but only once it is there
                self._buf = self._buf.lstrip(" \t")
            spoken = self._emit(piece)
            if spoken:
                out.append(spoken)
        if out:
            self._emitted += len(out)
        return out

    def _emit(self, piece: str) -> str:
        """Fence bookkeeping and cleaning of one cut piece; '' when nothing in it should be spoken."""
        stripped = piece.strip()
        if stripped.startswith("```"):
            self._in_fence = not self._in_fence
            return ""
        if self._in_fence:
            return ""
        return speakable(piece) if self.clean else stripped


def _find_boundary(buf: str, *, final: bool, clause_words: int, max_chars: int) -> int | None:
    """End index (exclusive) of the first complete piece in ``buf``, or None if it is not complete yet.

    A boundary is decided only when the character after it is known (or ``final``), so a dot at the very end of a
    fragment waits for the next one: "3." + "5" never cuts.
    """
    n = len(buf)
    depth = 0  # {...} nesting: never cut inside JSON
    last_space = -1
    i = 0
    while i < n:
        c = buf[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if depth > 0 or c == "}":
            i += 1
            continue
        if c == "\n":
            return i + 1
        if c in " \t":
            last_space = i
        if i >= max_chars > 0 and last_space > 0:  # a run-on piece: cut at the last space within max_chars
            return last_space
        if c in SENTENCE_END:
            j = i + 1
            while j < n and (buf[j] in SENTENCE_END or buf[j] in CLOSERS):
                j += 1
            if j == n:
                return n if final else None
            if not buf[j].isspace():  # "3.5", "e.g", "...and": not an end
                i = j
                continue
            run = buf[i:j]
            if ".." in run or "…" in run:  # ellipsis: a pause, not an end
                i = j
                continue
            if run[0] == ".":
                verdict = _period_verdict(buf, i, j, final)
                if verdict is None:
                    return None
                if not verdict:
                    i = j
                    continue
            return j
        if c in CLAUSE_END and clause_words > 0:
            if i + 1 < n and buf[i + 1].isspace() and _word_count(speakable(buf[:i])) >= clause_words:
                return i + 1
        i += 1
    return None


def _period_verdict(buf: str, i: int, j: int, final: bool) -> bool | None:
    """Does the '.' at ``i`` (run of terminators up to ``j``, then whitespace) end a sentence? None = need more text."""
    token = _token_before(buf, i)
    bare = token.rstrip(".")
    if bare in NEVER_END_ABBREVIATIONS:
        return False
    if re.fullmatch(r"[a-z]", bare) and buf[i - 1].isupper() and buf[i - 1] != "I":  # an initial: "J. R. Tolkien"
        return False
    if bare.isdigit() and not buf[:i - len(token)].strip():  # "1. Open the door": a list number
        return False
    if bare in MAYBE_END_ABBREVIATIONS:
        k = j
        while k < len(buf) and buf[k].isspace():
            k += 1
        if k == len(buf):
            return True if final else None
        return buf[k].isupper()
    return True


# --------------------------------------------------------------------------------------------------- cleaning

_FENCED = re.compile(r"```.*?(?:```|\Z)", re.S)
_TAG = re.compile(r"</?[A-Za-z_][\w:-]*(?:\s[^<>]*)?/?>")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+")
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
_BULLET = re.compile(r"^\s*[-*+•‣◦]\s+", re.M)
_QUOTE = re.compile(r"^\s*>\s?", re.M)
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.M)
_EMPTY_BRACKETS = re.compile(r"\[[\s,]*\]|\(\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def _drop_braces(text: str) -> str:
    """Remove every {...} span (nested), and an unclosed '{' with everything after it: JSON is never spoken."""
    out = []
    depth = 0
    for c in text:
        if c == "{":
            depth += 1
            continue
        if c == "}":
            if depth:
                depth -= 1
            continue
        if depth == 0:
            out.append(c)
    return "".join(out)


def _is_symbol(c: str) -> bool:
    """Emoji, pictographs, arrows, dingbats and their joiners: nothing a voice should try to read."""
    if c in "\u200d\ufe0f\ufe0e" or 0x1F3FB <= ord(c) <= 0x1F3FF or 0xE0020 <= ord(c) <= 0xE007F:  # joiners, tones
        return True
    return unicodedata.category(c) == "So" and ord(c) >= 0x2190


def speakable(text: str) -> str:
    """What the voice should say of ``text``: markdown, code, tags, URLs, JSON and emoji removed; '' if nothing."""
    t = _FENCED.sub(" ", text)
    t = _TAG.sub(" ", t)
    t = _drop_braces(t)
    t = _IMAGE_OR_LINK.sub(r"\1", t)
    t = _URL.sub(" ", t)
    t = _RULE.sub(" ", t)
    t = _HEADER.sub("", t)
    t = _BULLET.sub("", t)
    t = _QUOTE.sub("", t)
    t = _EMPTY_BRACKETS.sub(" ", t)
    t = re.sub(r"[*#`~|]+", " ", t)
    t = t.replace("_", " ")
    t = "".join(" " if _is_symbol(c) else c for c in t)
    t = re.sub(r"\s+", " ", t).strip()
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", t)
    t = t.lstrip(",;:.!? ")
    if not any(ch.isalnum() for ch in t):
        return ""
    return t


def split_sentences(text: str) -> list[str]:
    """A whole text cut into speakable sentences (no first-clause rule)."""
    buf = SentenceBuffer(first_clause_words=0)
    return buf.push(text) + buf.flush()
