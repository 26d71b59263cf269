"""Compose test recordings from real voices: wake word, pauses, requests, as a user would say them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.audio import SAMPLE_RATE, read_wav, write_wav

from .conftest import espeak_wav, piper_wav


def compose(store, parts: list[tuple[str, object]], path: Path) -> Path:
    """parts: ("wake", text) | ("piper", text) | ("piper-slow", text) | ("espeak", text) | ("silence", seconds) |
    ("wav", path) | ("noise", (seconds, dbfs)). Cached by content: the same parts give the same file. "wake" is a
    Piper rendering of the wake phrase checked against the default wake model and its second look (``wake_wav``)."""
    key = hashlib.sha1(repr(parts).encode()).hexdigest()[:12]
    out = path.with_name(f"{path.stem}-{key}.wav")
    if out.exists():
        return out
    pieces = []
    rng = np.random.default_rng(0)
    for i, (kind, arg) in enumerate(parts):
        if kind == "silence":
            pieces.append(np.zeros(int(float(arg) * SAMPLE_RATE), dtype=np.int16))
        elif kind == "noise":
            seconds, dbfs = arg  # type: ignore[misc]
            amp = 32768 * 10 ** (dbfs / 20)
            pieces.append((rng.standard_normal(int(seconds * SAMPLE_RATE)) * amp).astype(np.int16))
        elif kind == "wake":
            pieces.append(read_wav(wake_wav(store, str(arg), out.with_name(f"{out.stem}-w{i}.wav"))))
        elif kind == "piper":
            pieces.append(read_wav(piper_wav(store, str(arg), out.with_name(f"{out.stem}-p{i}.wav"))))
        elif kind == "piper-slow":  # the same voice, 20 % slower: another rendering of the same words
            pieces.append(read_wav(piper_wav(store, str(arg), out.with_name(f"{out.stem}-s{i}.wav"), length_scale=1.2)))
        elif kind == "espeak":
            pieces.append(read_wav(espeak_wav(str(arg), out.with_name(f"{out.stem}-e{i}.wav"))))
        elif kind == "wav":
            pieces.append(read_wav(arg))
        else:
            raise ValueError(kind)
    write_wav(out, np.concatenate(pieces))
    return out


class WakeCheck:
    """The default wake model (config.yaml's first ``wake.models`` entry) and the STT its second look uses, loaded
    once per test session: does a rendering of the wake phrase wake the device, and would the look keep it?"""

    _one: WakeCheck | None = None

    def __init__(self) -> None:
        from edge_agent.config import load_settings
        from edge_agent.stt import make_engine
        from edge_agent.wake import WakeDetector

        from .conftest import ROOT

        self.settings = s = load_settings(ROOT / "config.yaml")
        self.det = WakeDetector.from_settings(s)
        self.model = self.det.names[0]
        stt = make_engine(s.stt, s)
        stt.load()
        self.stt = stt.unprimed()  # as the engine's look: the wake phrase, not the home's names

    @classmethod
    def get(cls) -> WakeCheck:
        if cls._one is None:
            cls._one = WakeCheck()
        return cls._one

    def verdict(self, phrase_audio: np.ndarray) -> str | None:
        """None when the rendering (put between 0.5 s silences) is detected and its transcript says the wake phrase,
        both over the whole rendering and over the ``WAKE_AUDIO_S`` before the detection (what the engine's look
        transcribes); else what went wrong."""
        from edge_agent.wake_tail import wake_phrase
        from edge_agent.wake_verify import confirms_wake, look_window

        gap = np.zeros(SAMPLE_RATE // 2, np.int16)
        audio = np.concatenate([gap, phrase_audio, gap])
        self.det.reset()
        hits = []
        for i in range(0, len(audio), 1280):
            piece = audio[i:i + 1280]
            hits += [d for d in self.det.process(piece, (i + len(piece)) / SAMPLE_RATE) if d.model == self.model]
        if not hits:
            return f"not detected by {self.model}"
        phrase = wake_phrase(self.model)
        heard = [self.stt.transcribe(audio).text,
                 self.stt.transcribe(look_window(audio, hits[0].t, SAMPLE_RATE)).text]
        if not all(confirms_wake(h, phrase) for h in heard):
            return f"score {hits[0].score:.4f}, heard as {heard}"
        return None


def wake_wav(store, text: str, path: Path, attempts: int = 8) -> Path:
    """A Piper rendering of the wake phrase (cached per path) that the default wake model detects and whose
    transcript says the phrase, as the wake word's second look (``wake.models[].second_look_band``) needs of a
    detection in its band. Piper samples its voice's variation at random, and Whisper tiny.en hears about one
    rendering in a hundred as "Hey, Jardis." (docs/wake.md, "Second look"): the product drops such a wake, and a test
    of something else (a command, a fault, two rooms) must not hinge on it, as its requests do not hinge on one
    mishearing (``recognized_clips``). Draws again, at most ``attempts`` times; fails with what each draw was heard
    as. How often the look drops a true wake phrase is measured by tools/wake_look_renderings.py, not here.
    ``store`` None: the repository's model store (for the tools)."""
    if path.exists():
        return path
    check = WakeCheck.get()
    if store is None:  # a tool's call: the repository's models
        from edge_agent.models import ModelStore

        store = ModelStore(check.settings.models_path)
    wrong = []
    for k in range(attempts):
        draw = path.with_name(f"{path.stem}-draw{k}.wav")
        why = check.verdict(read_wav(piper_wav(store, text, draw)))
        if why is None:
            draw.rename(path)
            if wrong:
                print(f"{text!r}: draws redone: {wrong}")
            return path
        wrong.append(why)
        draw.unlink()
    raise AssertionError(f"no rendering of {text!r} in {attempts} draws wakes {check.model} and is heard as the "
                         f"wake phrase: {wrong}")


def recognized_clips(store, stt, matcher, d: Path, name: str, candidates: list[tuple[str, str]], intent: str,
                     entities: list[str], area: str | None, wake: str | None = "Hey Jarvis!", pause: float = 0.5,
                     want: int = 3) -> list[Path]:
    """Up to ``want`` of ``candidates`` ((voice, text) phrasings of one command), in order, that this machine's STT
    hears as that command: a clip (0.5 s of silence, the wake phrase, ``pause``, the request, 0.3 s) counts when the
    whole clip's transcript (wake phrase stripped, as the engine strips it) and the request's alone both make the
    fast path act on ``intent`` with ``entities`` without asking back. Whisper tiny.en hears "kitchen light" as
    "kitchen white" or "Card on the kitchen light" on some CPUs; this check removes the phrasings a machine mishears
    every time, but the engine cuts the audio its own way, so a test still says the next clip when a turn was
    misheard (tests/test_engine.py: Harness.say_command). Fails with every transcript when no phrasing is heard."""
    from edge_agent.audio import read_wav
    from edge_agent.wake_tail import strip_wake_words

    def acts(text: str) -> bool:
        call = matcher.match(text, area)
        return call is not None and call.name == intent and call.entities == entities and not call.clarify

    ok, misheard = [], []
    for k, (voice, text) in enumerate(candidates):
        head = [("silence", 0.5), ("wake", wake), ("silence", pause)] if wake else [("silence", 0.5)]
        clip = compose(store, [*head, (voice, text), ("silence", 0.3)], d / f"{name}{k}")
        heard = [strip_wake_words(stt.transcribe(read_wav(clip)).text, ["hey jarvis"]) if wake
                 else stt.transcribe(read_wav(clip)).text.strip()]
        if wake:
            alone = compose(store, [("silence", 0.5), (voice, text), ("silence", 0.3)], d / f"{name}{k}-alone")
            heard.append(stt.transcribe(read_wav(alone)).text.strip())
        if all(acts(h) for h in heard):
            ok.append(clip)
            if len(ok) >= want:
                break
        else:
            misheard.append(f"{voice} {text!r} heard as {heard}")
    assert ok, f"no phrasing of {intent} {entities} is heard right by this machine's STT: {misheard}"
    if misheard:
        print(f"{name}: misheard {misheard}")
    return ok


def say_until(say: Callable[[int], dict], intent: str, attempts: int = 3,
              settle: Callable[[], object] | None = None, fast: bool = False) -> dict:
    """Say a command until a turn carries out exactly ``intent``, and return that turn: ``say(k)`` says attempt k (the
    next checked phrasing, see ``recognized_clips``) and returns the turn record it produced; ``settle()`` runs after
    a misheard turn (back to idle, so the next attempt opens as the first). With ``fast`` the intent must also have
    been carried out without the LLM: a mishearing the LLM still understood ("Pern on the kitchen light." on one CI
    machine's CPU) says nothing about the fast path. What the engine, the daemon or the PulseAudio path is tested for
    is not Whisper's accuracy on one clip; every attempt must still end in a turn. Fails with what each attempt was
    heard as."""
    misheard = []
    for k in range(attempts):
        rec = say(k)
        if [i["name"] for i in rec["intents"]] == [intent] and not (fast and rec.get("used_llm")):
            if misheard:
                print(f"(misheard before: {misheard})")
            return rec
        misheard.append((rec.get("transcript"), rec.get("reply_spoken")))
        if settle is not None:
            settle()
    raise AssertionError(f"no turn carried out {intent} in {attempts} attempts: {misheard}")
