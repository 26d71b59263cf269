"""The second look: a doubtful wake detection is accepted only if speech-to-text of the wake audio says the phrase.

A detection scoring in a band just above the model's cutoff (``cutoff <= score < cutoff + band``, the band
``wake.models[].second_look_band``) is doubtful: most false accepts of a good model sit there, most true ones well
above. Such a detection opens listening at once like any other; meanwhile the engine's wake-check thread transcribes
the ``WAKE_AUDIO_S`` seconds up to the detection and the turn is dropped (``controller.WakeChecked``) unless the
transcript contains the wake phrase or a known rendering of it (tiny STT models write "hey jarvis" as "hey jervis",
"a jarvis", "hey, jarvis"...; the words of the request that follow do not matter), or, where the STT model can
score words (Whisper), the model finds the phrase's name likely right after its first words (``NAME_PROB_MIN``).
A clear detection (at or above the band) is never looked at, so it is never delayed by this; a doubtful one is not
delayed either.

Pure decisions (and ``look``, which only calls the STT engine it is given): the engine supplies the score, the cutoff
and, when asked for one, the transcript.
"""

from __future__ import annotations

import re
from typing import Any

ACCEPT, REJECT, CHECK = "accept", "reject", "check"
WAKE_AUDIO_S = 1.5  # the audio up to a detection that the second look transcribes: "hey jarvis" said slowly fits

# How small STT models write wake phrases heard correctly (lower case, punctuation removed). A rendering must be
# two words or a distinctive name: a lone "hey" or "a" confirms nothing.
RENDERINGS: dict[str, tuple[str, ...]] = {
    "hey jarvis": ("hey jarvis", "hay jarvis", "a jarvis", "hey jervis", "hey jarvas", "hey jarvies", "jarvis"),
    "okay nabu": ("okay nabu", "ok nabu", "okay nabou", "okay naboo", "ok naboo", "nabu"),
    "alexa": ("alexa", "alexia", "a lexa"),
    "hey mycroft": ("hey mycroft", "hey my craft", "hey microsoft", "mycroft"),
}


# The name of the wake phrase heard by forced decoding: how likely the STT model finds the phrase's last word
# ("Jarvis") right after its first ones ("Hey", "Hey,") in the wake audio. Piper's "Hey Jarvis" gives 0.92-0.97;
# near misses ("Hey, Jarmic", "Hey Chavez") and speech over music at most 0.16 on the 3-hour negative set. It rescues
# some misspelled transcripts, not all: a rendering Whisper hears as "Hey, Jardis." can score 0.03 (docs/wake.md,
# "Second look").
NAME_PROB_MIN = 0.25


def phrase_parts(phrase: str) -> tuple[str, str]:
    """("Hey", "Jarvis") for "hey jarvis": the words before the name, capitalized as a transcript writes them, and
    the name; ("", "Alexa") for a one-word phrase."""
    words = [w.capitalize() for w in phrase.split()]
    return " ".join(words[:-1]), (words[-1] if words else "")


def _words(text: str) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()) + " "


def needs_second_look(score: float, cutoff: float, band: float) -> bool:
    """True for a doubtful detection: at or above the cutoff but below ``cutoff + band`` (band 0 = never)."""
    return band > 0 and cutoff <= score < cutoff + band


def confirms_wake(transcript: str, phrase: str, renderings: dict[str, tuple[str, ...]] = RENDERINGS) -> bool:
    """Does the transcript of the wake audio contain the wake phrase (or a known rendering of it) as whole words?"""
    heard = _words(transcript)
    forms = (phrase.lower(), *renderings.get(phrase.lower(), ()))
    return any(_words(f) in heard for f in forms)


def heard_wake(transcript: str, phrase: str, name_prob: float | None = None) -> bool:
    """The second look's verdict: the transcript says the phrase, or (where the STT can tell) the model finds the
    phrase's name likely in the audio (``name_prob`` >= ``NAME_PROB_MIN``) though the transcript spelled it
    otherwise."""
    return confirms_wake(transcript, phrase) or (name_prob is not None and name_prob >= NAME_PROB_MIN)


def look_window(audio: Any, t_s: float, rate: int, after_s: float = 0.0) -> Any:
    """The part of ``audio`` (an array from stream time 0 at ``rate``) that a look transcribes for a detection at
    ``t_s``: the ``WAKE_AUDIO_S`` seconds up to it, and ``after_s`` after it (the tools' variant). The engine cuts
    the same window from its ring of recent audio (``PreRoll.recent``)."""
    end = int(round(t_s * rate))
    return audio[max(0, end - int(WAKE_AUDIO_S * rate)):end + int(after_s * rate)]


def look(stt: Any, audio: Any, phrase: str) -> tuple[str, float | None]:
    """The second look on ``stt`` (an ``SttEngine``): the transcript of the wake audio and, only where it does not
    say the phrase, the model's probability of the phrase's name (``SttEngine.word_probability``; None where the
    engine cannot tell). ``heard_wake`` decides from the two; the engine and tools/wake_second_look_bench.py both
    look this way."""
    text = stt.transcribe(audio).text
    if confirms_wake(text, phrase):
        return text, None
    return text, stt.word_probability(audio, *phrase_parts(phrase))


def decide(score: float, cutoff: float, band: float, phrase: str, transcript: str | None = None,
           name_prob: float | None = None) -> str:
    """ACCEPT or REJECT a detection; CHECK when a doubtful one needs the transcript of the wake audio first."""
    if score < cutoff:
        return REJECT
    if not needs_second_look(score, cutoff, band):
        return ACCEPT
    if transcript is None:
        return CHECK
    return ACCEPT if heard_wake(transcript, phrase, name_prob) else REJECT
