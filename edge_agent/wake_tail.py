"""The wake phrase inside the request: where it ends in the pre-roll, holding audio while it may still go on, and
stripping its (misheard) rendering from the transcript. Pure functions and one pure class, tested with numbers."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE


def mentions_wake(text: str, phrases: list[str]) -> bool:
    words = re.findall(r"[a-z']+", text.lower())
    for phrase in phrases:
        last = phrase.split()[-1] if phrase.split() else ""
        if last and last in words:
            return True
    return False


def wake_phrase(model_name: str) -> str:
    """'hey_jarvis_v0.1' -> 'hey jarvis': the words to strip from the start of a transcript."""
    base = Path(model_name).stem
    base = re.sub(r"_v\d+(\.\d+)*$", "", base)
    return base.replace("_", " ").strip().lower()


WAKE_TAIL_SIMILARITY = 0.4  # a short fragment set off by punctuation, this similar to the wake word, is its tail
WAKE_WORD_SIMILARITY = 0.75  # an unpunctuated leading word this similar to the wake word is the wake word misheard
WAKE_FILLERS = frozenset({"a", "ah", "eh", "hey", "hay", "hi", "oh", "ok", "okay", "uh", "um"})
WAKE_TAIL_MIN_VOICE_S = 0.1  # voice in the pre-roll before a pause that counts as the wake word's end
WAKE_TAIL_MIN_PAUSE_S = 0.15  # a pause this long ends the wake phrase; gaps inside "turn on" are shorter
WAKE_HOLD_MAX_S = 0.35  # after a detection inside the wake phrase, wait this long at most for its pause


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def strip_wake_words(text: str, phrases: list[str], fuzzy: bool = True) -> str:
    """Remove a leading wake phrase (or its last word, e.g. 'Jarvis,') that the pre-roll let into the transcript.

    With ``fuzzy`` (a turn opened by the wake word) also a misheard rendering of it: a one- or two-word fragment
    set off by punctuation ('Vis. Turn on the light.', 'A Jarvis. What time is it?'), or an unpunctuated leading
    word very like the wake word ('A Jarvis Turn on the light'). A word that is not wake-like is never removed, so
    'Vis turn, on the light' keeps its verb."""
    t = text.strip()
    for phrase in sorted(phrases, key=len, reverse=True):
        words = phrase.split()
        for k in range(len(words)):
            pat = r"^\W*" + r"\W+".join(re.escape(w) for w in words[k:]) + r"\b[\s,.!?]*"
            new = re.sub(pat, "", t, flags=re.IGNORECASE)
            if new != t:
                return new.strip()
    if not fuzzy:
        return t
    lasts = [p.split()[-1] for p in phrases if p.split()]
    wake_words = [w for p in phrases for w in p.split() if w.lower() not in WAKE_FILLERS]
    tokens = list(re.finditer(r"[A-Za-z']+", t))
    for k in (2, 1):
        if len(tokens) < k + 2:  # the request left over must have at least two words
            continue
        head = [m.group(0) for m in tokens[:k]]
        sep = t[tokens[k - 1].end():tokens[k].start()]
        rest = t[tokens[k].start():].strip()
        if re.search(r"[,.!?]", sep):
            if k == 1:
                ok = any(_similar(head[0], w) >= WAKE_TAIL_SIMILARITY for w in lasts)
            else:
                ok = all(h.lower() in WAKE_FILLERS or any(_similar(h, w) >= WAKE_TAIL_SIMILARITY for w in wake_words)
                         for h in head) and any(h.lower() not in WAKE_FILLERS for h in head)
        else:
            ok = len(head[-1]) >= 4 and any(_similar(head[-1], w) >= WAKE_WORD_SIMILARITY for w in lasts) \
                and all(h.lower() in WAKE_FILLERS for h in head[:-1])
        if ok:
            return rest
    return t


def wake_tail_cut(voiced: list[bool], frame_s: float) -> int:
    """Where the request starts in a pre-roll that ends at the wake detection, in frames.

    The wake phrase is the first voice in it; the first pause of at least ``WAKE_TAIL_MIN_PAUSE_S`` after at least
    ``WAKE_TAIL_MIN_VOICE_S`` of it ends the phrase, and what follows the pause's start is the request's beginning
    (or nothing, when no voice follows). Shorter gaps are inside words or between them ('turn on'), so without such
    a pause the whole pre-roll is kept (0) and the transcript's leading wake phrase is stripped later: cutting
    there could drop the request's first word. No voice at all: nothing to keep."""
    n = len(voiced)
    if not any(voiced):
        return n
    need_pause = max(1, round(WAKE_TAIL_MIN_PAUSE_S / frame_s))
    need_voice = max(1, round(WAKE_TAIL_MIN_VOICE_S / frame_s))
    voice = gap = 0
    for i, v in enumerate(voiced):
        if v:
            voice += 1
            gap = 0
        elif voice:
            gap += 1
            if gap >= need_pause:
                if voice < need_voice:
                    return 0
                start = i - gap + 1
                return start if any(voiced[start:]) else n
    return 0


class WakeTailGate:
    """Holds the audio that follows a wake detection while the wake phrase may still be going on.

    The detector fires before the phrase has ended (often inside "...vis"). Fed to STT, that remnant comes back as
    "service." or "Nervous." and, now and then, swallows the request's first word ("on the kitchen light"). So when
    the pre-roll ends in voice, the audio is held, from STT and from the endpointer alike, until the first pause of
    ``WAKE_TAIL_MIN_PAUSE_S``: the held wake remnant is dropped and STT gets the pause and what follows. No such
    pause within ``WAKE_HOLD_MAX_S`` of the detection means a request run on in one breath: everything held is
    released, nothing lost (the transcript's wake phrase is stripped later). Pure: chunks and per-frame voiced flags
    in; audio for STT and the voiced flags for the endpointer out."""

    def __init__(self, preroll: np.ndarray, trailing_unvoiced: int, frame_s: float) -> None:
        self.held: list[np.ndarray] = [preroll]
        self.flags: list[list[bool]] = [[]]  # the endpointer never sees the pre-roll
        self.need_pause = max(1, round(WAKE_TAIL_MIN_PAUSE_S / frame_s))
        self.gap = trailing_unvoiced
        self.pause_chunk: int | None = 0 if trailing_unvoiced else None
        self.after_s = 0.0  # audio held since the detection

    def push(self, samples: np.ndarray, voiced: list[bool]) -> tuple[np.ndarray, list[bool]] | None:
        """Once decided (the gate is then done): the audio to feed STT and the voiced flags of the chunks released
        to the endpointer. None while still holding."""
        idx = len(self.held)
        self.held.append(samples)
        self.flags.append(list(voiced))
        self.after_s += len(samples) / SAMPLE_RATE
        for v in voiced:
            if v:
                self.gap, self.pause_chunk = 0, None
                continue
            if self.gap == 0:
                self.pause_chunk = idx
            self.gap += 1
            if self.gap >= self.need_pause:
                start = min((self.pause_chunk or 0) + 1, idx)  # the first chunk that lies inside the pause
                return np.concatenate(self.held[start:]), [f for fl in self.flags[start:] for f in fl]
        if self.after_s >= WAKE_HOLD_MAX_S:
            return self.flush(), [f for fl in self.flags for f in fl]
        return None

    def flush(self) -> np.ndarray:
        """Everything held (the turn ended, or no pause came)."""
        return np.concatenate(self.held)
