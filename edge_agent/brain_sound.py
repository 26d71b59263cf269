"""The brain's sound tier (``SoundTier``, a base of ``Brain``): a spoken turn whose transcript every text tier
refused, checked against its audio before the LLM gets it. The candidates are the matcher's (the transcript with a
word or two from a nearby template sentence, and the speech model's other readings of the audio) and the context's
(a short follow-up it resolves); the decision is ``sound_match.choose``'s; the scores come from the turn's STT
stream (``Responder._sound``, a ``TurnAudio``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import fuzzy, sound_match
from .context import ConversationContext, Followup
from .context_rules import UNDO
from .intent import IntentCall
from .response import Response
from .stt_confidence import Decoded
from .stt_text import normalize_text

log = logging.getLogger("edge_agent.brain")

# sentences -> their scores against the turn's audio (``SttStream.sentence_scores``), None where it cannot score;
# it may also have ``alternatives()``: the speech model's other readings of the request (``TurnAudio``)
Sound = Callable[[list[str]], "list[float] | None"]


class TurnAudio:
    """A spoken turn's audio as the sound tier sees it (``Responder._sound``): called with sentences, their scores
    against the audio after ``before`` (the words heard ahead of the request, e.g. the wake phrase); and
    ``alternatives()``, the speech model's n-best readings of the request, each with the wake phrase taken off as
    the transcript's was (``strip``; without it, a reading must start with ``before``'s words)."""

    def __init__(self, stream: Any, before: str, strip: Callable[[str], str] | None = None) -> None:
        self.stream, self.before, self.strip = stream, before, strip
        self._readings: list[str] | None = None  # one beam search per turn, however often asked

    def __call__(self, sentences: list[str]) -> list[float] | None:
        return self.stream.sentence_scores(sentences, before=self.before)

    def decoded(self, text: str) -> Decoded | None:
        """What the decode knew of ``text`` (``SttStream.decoded``: its on/off margin, its least sure word), None
        where unknown."""
        return self.stream.decoded(text)

    def alternatives(self) -> list[str]:
        if self._readings is None:
            self._readings = self._alternatives()
        return list(self._readings)

    def _alternatives(self) -> list[str]:
        readings = self.stream.alternatives(sound_match.ALTERNATIVES + 1) or []
        if self.strip is not None:
            return [r for r in (self.strip(reading).strip() for reading in readings) if r]
        head = normalize_text(self.before).split()
        out: list[str] = []
        for reading in readings:
            words = reading.split()
            if [normalize_text(w) for w in words[:len(head)]] == head and words[len(head):]:
                out.append(" ".join(words[len(head):]).strip(" ,"))
        return out


class SoundTier:
    """The sound tier of ``Brain``, which supplies the attributes below."""

    matcher: Any
    context: ConversationContext

    def _worth_readings(self, text: str) -> bool:
        """The speech model's n-best only for a transcript that could be a request (``worth_readings``)."""
        worth = getattr(self.matcher, "worth_readings", None)
        return worth is None or worth(text)

    def _sound_tier(self, resp: Response, text: str, area: str | None, sound: Sound) -> IntentCall | None:
        """A transcript the text tiers refused, and its candidates (``IntentMatcher.sound_candidates``), scored
        against its audio (``sound_match.py``): the call to act on, one to ask back about (``clarify``), or None (on
        to the LLM)."""
        find = getattr(self.matcher, "sound_candidates", None)
        if find is None:
            return None
        if _sure_of_words(resp, text, sound):
            return None
        t0 = time.monotonic()
        try:
            readings = getattr(sound, "alternatives", None) if self._worth_readings(text) else None
            wanted = readings is not None and not fuzzy.refuses(text)  # no candidates for it: no beam search
            said, candidates = find(text, area, readings() if wanted else ())
            scores = sound([sound_match.spoken_form(said)] + [sound_match.spoken_form(c.heard) for c in candidates]
                           ) if candidates else None
        except Exception as e:  # noqa: BLE001 - a scoring failure costs the tier, never the turn
            log.warning("sound tier failed on %r: %s", text, e)
            return None
        if not candidates or not scores or len(scores) != len(candidates) + 1:
            return None
        verdict = sound_match.choose(scores[0], list(zip(candidates, scores[1:], strict=True)))
        resp.timings["sound_s"] = round(time.monotonic() - t0, 4)
        resp.timings["sound"] = {**verdict.log(), "candidates": len(candidates)}
        log.info("sound tier on %r: %s (%s)", text, verdict.action, resp.timings["sound"])
        if verdict.action == "pass":
            return None
        call = verdict.call
        if verdict.action == "ask":
            call.clarify = f"Did you mean: {call.heard}?"
        return call

    def _second_look(self, resp: Response, text: str, area: str | None, call: IntentCall, sound: Sound
                     ) -> IntentCall:
        """A spoken on/off command the text tiers took as written, looked at again (``second_look``): ``call``, or
        the opposite call to act on or to ask back about; what the scores said goes to the turn's timings."""
        t0 = time.monotonic()
        out, seen = second_look(self.matcher, text, area, call, sound)
        if seen is not None:
            resp.timings["action_word"] = {**seen, "s": round(time.monotonic() - t0, 4)}
            log.info("second look at the action word of %r: %s", text, resp.timings["action_word"])
        return out

    def _sound_followup(self, resp: Response, text: str, area: str | None, sound: Sound) -> Followup | None:
        """A short follow-up misheard ("Pull it." for "pause it", "Watch him out in the front door." for "what
        about the front door"): the follow-ups the context can resolve (``sound_match.followup_sentences``, and the
        speech model's other readings with the transcript's numbers) scored against the audio; the clear winner's
        calls, or None. Never asked back: a question about a word the user did not say helps less than the LLM's
        try."""
        if _sure_of_words(resp, text, sound):
            return None
        said = normalize_text(text)
        options: list[sound_match.Calls] = []
        readings = getattr(sound, "alternatives", None) if self._worth_readings(text) else None
        try:
            others = [r for r in map(normalize_text, readings() if readings is not None else [])
                      if r and r != said and not fuzzy.refuses(r) and sound_match.same_numbers(r, said)]
        except Exception as e:  # noqa: BLE001 - the n-best costs its candidates, never the turn
            log.warning("sound tier: no other readings of %r: %s", text, e)
            others = []
        for sentence in dict.fromkeys(sound_match.followup_sentences(said) + others[:sound_match.ALTERNATIVES]):
            follow = self.context.resolve(sentence)
            if follow is None or follow.undo:
                continue
            calls = list(follow.calls)
            if not calls and follow.text and self.matcher is not None:
                call = self.matcher.match(follow.text, area)
                calls = [call] if call is not None and not getattr(call, "clarify", None) else []
            if calls:
                options.append(sound_match.Calls(sentence, tuple(calls)))
        if not options:
            return None
        t0 = time.monotonic()
        try:
            scores = sound([sound_match.spoken_form(said)] + [sound_match.spoken_form(o.heard) for o in options])
        except Exception as e:  # noqa: BLE001 - a scoring failure costs the tier, never the turn
            log.warning("sound tier failed on %r: %s", text, e)
            return None
        if not scores or len(scores) != len(options) + 1:
            return None
        verdict = sound_match.choose(scores[0], list(zip(options, scores[1:], strict=True)))
        resp.timings["sound_s"] = round(resp.timings.get("sound_s", 0.0) + time.monotonic() - t0, 4)
        resp.timings["sound_followup"] = {**verdict.log(), "candidates": len(options)}
        log.info("sound tier (follow-up) on %r: %s (%s)", text, verdict.action, resp.timings["sound_followup"])
        if verdict.action != "act":
            return None
        return Followup("sound", calls=list(verdict.call.calls))


def _sure_of_words(resp: Response, text: str, sound: Sound) -> bool:
    """The decode that wrote ``text`` (``TurnAudio.decoded``) was sure of every word (its least sure word token at
    ``sound_match.SURE_WORDS`` or above): neither pass of the sound tier runs (no n-best beam search, nothing
    scored), and the turn's timings say so."""
    decoded = getattr(sound, "decoded", None)
    known = decoded(text) if decoded is not None else None
    least = known.least_sure if known is not None else None
    if least is None or least < sound_match.SURE_WORDS:
        return False
    resp.timings["sound"] = {"action": "pass", "reason": "the decode was sure of every word", "least_sure": least}
    return True


def second_look(matcher: Any, text: str, area: str | None, call: IntentCall, sound: Sound
                ) -> tuple[IntentCall, dict[str, Any] | None]:
    """The same words with the opposite action word (``sound_match.flipped``) scored beside the transcript against
    the audio (``sound_match.second_look``): ``call`` kept, or the opposite call to act on or to ask back about
    (``clarify``; always asked when either reading's device was asked back about); with the verdict and both
    scores, or None where nothing was scored (not an on/off command, no opposite the templates take for the same
    devices, no scorer). Not scored where the decode itself was ``SURE_MARGIN`` surer of its word (verdict
    "sure")."""
    opposite = UNDO.get(call.name)  # turn on <-> off (a pause whose on/off word is flipped matches no unpause)
    other = sound_match.flipped(text) if opposite is not None else None
    if other is None:
        return call, None
    rival = matcher.match(other, area, ask_back=True)
    if rival is None or rival.name != opposite or sorted(rival.entities) != sorted(call.entities):
        return call, None
    decoded = getattr(sound, "decoded", None)
    known = decoded(text) if decoded is not None else None
    margin = known.margin if known is not None else None
    if margin is not None and margin >= sound_match.SURE_MARGIN:
        return call, {"verdict": "sure", "decoded_margin": margin}
    try:
        scores = sound([sound_match.spoken_form(text), sound_match.spoken_form(other)])
    except Exception as e:  # noqa: BLE001 - a scoring failure costs the second look, never the turn
        log.warning("second look at the action word of %r failed: %s", text, e)
        return call, None
    if not scores or len(scores) != 2:
        return call, None
    verdict = sound_match.second_look(scores[0], scores[1])
    if verdict == "act" and (getattr(call, "clarify", None) or getattr(rival, "clarify", None)):
        verdict = "ask"  # not sure of the device either: ask about both at once
    seen = {"verdict": verdict, "heard": round(scores[0], 2), "opposite": round(scores[1], 2)}
    if verdict == "keep":
        return call, seen
    if verdict == "ask":  # (acted on only when neither reading was asked back about: no question to clear)
        said = sound_match.spoken_form(getattr(rival, "heard", "") or other).rstrip(".?")  # names as configured
        rival.clarify = f"Did you mean: {said}?"
    return rival, seen
