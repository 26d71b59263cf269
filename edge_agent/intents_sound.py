"""The sound tier's candidates (``SoundCandidates``, a base of ``IntentMatcher``): for a spoken transcript every text
tier refused, the sentences that might have been said instead and what each would do. The brain scores them
against the turn's audio and decides (``brain_sound.py``, ``sound_match.choose``).

Two sources:

- *near template sentences*: the transcript with one word (or two together) replaced by what a template sentence
  close in spelling says there (``ClosestSentences.substitutions``; names as said or corrected);
- *the speech model's other readings*: Whisper's n-best for the same audio (``SttStream.alternatives``), which
  can differ in any word, not just one or two ("What may it to me?" for "what day is it today").

Every candidate is matched by the text tiers for real and must name configured devices only.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz.distance import Levenshtein

from .closest import PROTECTED


def written(text: str) -> str:
    """A transcript or a reading as the candidates are written: normalized, numbers in digits."""
    from . import closest, fuzzy

    return fuzzy.words_to_digits(closest.normalize(text))


# Words of the requests the home handles itself, beside its configured names, digits and pronouns (a short follow-up's
# "it"): what the speech model's other readings can turn into a command. closest.PROTECTED (device kinds, actions,
# timers, places) without its question words, and the time and date, which the home answers too.
_REQUEST_WORDS = (PROTECTED - frozenset("what who when how many which".split())
                  | frozenset("time date day today".split()))


NAME_LIKE = 0.7  # a transcript word this close to a name's word (both 5+ letters) may be that name misheard


class SoundCandidates:
    """The sound tier's candidates of ``IntentMatcher``, which supplies the attributes and methods below."""

    corrector: Any
    intents: Any
    _spoken: Any
    match: Any  # (text, area) -> FastMatch | None
    _targets_ok: Any  # (call) -> bool
    _corrections_fit: Any  # (call, corrections) -> bool

    def worth_readings(self, text: str) -> bool:
        """Whether the speech model's other readings of ``text`` could be a request the home handles: the
        transcript has a configured name's word (or one spelled close to it), a request word (``_REQUEST_WORDS``), a
        pronoun or a number. A question for the LLM ("What is the capital of France?") skips the beam search, which
        is on its critical path (~0.1 CPU s here; docs/benchmarks.md, nineteenth session)."""
        from . import sound_match

        words = set(written(text).split())
        if words & _REQUEST_WORDS or words & set(sound_match.PRONOUNS) or sound_match.numbers(" ".join(words)):
            return True
        names = {w for name in self._spoken for w in name.split()}
        if words & names:
            return True
        # a name misheard ("Done of the kitten lied." for "turn off the kitchen light"): a long word spelled close
        return any(Levenshtein.normalized_similarity(w, n) >= NAME_LIKE for w in words if len(w) >= 5
                   for n in names if len(n) >= 5)

    def sound_candidates(self, text: str, area: str | None = None,
                         alternatives: list[str] | tuple[str, ...] = ()) -> tuple[str, list[Any]]:
        """(the transcript as the candidates are written, calls). Each call's ``heard`` is a candidate sentence
        that the text tiers matched: the transcript with a word or two from a near template sentence (at most
        ``sound_match.CANDIDATES``, the closest in spelling first), then each of ``alternatives`` (other readings
        of the audio, at most ``sound_match.ALTERNATIVES``) that means something. ("", []) where the tolerant tier
        stands aside (``fuzzy.refuses``: negations, instructions, chained commands), in the transcript or in the
        reading."""
        from . import closest, fuzzy, sound_match
        from .intents import closest_sentences

        if self.corrector is None or fuzzy.refuses(text):
            return "", []
        skeletons = closest_sentences(self.intents)
        said = written(text)
        found: dict[str, Any] = {}
        for sentence, corrections in [(said, []), *self.corrector.corrected_texts(said)]:
            if min((c.score for c in corrections), default=100.0) < fuzzy.ASK * 100:
                continue
            for form, values in closest.placeholder_forms(sentence, self._spoken):
                for sub in skeletons.substitutions(form, cutoff=sound_match.MIN_RATIO, limit=sound_match.CANDIDATES,
                                                   most=sound_match.SUBSTITUTIONS):
                    filled = closest.fill(sub, values)
                    if filled in found or len(found) >= sound_match.CANDIDATES:
                        continue
                    call = self._sound_call(text, filled, area)
                    if call is None:
                        continue
                    if corrections:
                        call.corrections = {c.heard: c.choice.canonical for c in corrections}
                        if not self._corrections_fit(call, corrections):
                            continue
                    found[filled] = call
        taken = 0
        for alt in alternatives:
            reading = written(alt)
            if not reading or reading == said or reading in found or fuzzy.refuses(alt):
                continue
            if taken >= sound_match.ALTERNATIVES:
                break
            if not sound_match.same_numbers(reading, said):
                continue  # "to IIT" read as "to 80": a number the transcript does not have is the beam's guess
            call = self._sound_call(text, reading, area)
            if call is None:
                continue
            found[reading] = call
            taken += 1
            for rival in sound_match.confusable_numbers(reading):  # "7 %" may have been "70 %": the audio decides
                if rival not in found and (other := self._sound_call(text, rival, area)) is not None:
                    found[rival] = other
        return said, list(found.values())

    def _sound_call(self, text: str, sentence: str, area: str | None) -> Any:
        """The text tiers' call for a candidate ``sentence``, if it is sure and names configured devices only."""
        call = self.match(sentence, area)
        if call is None or call.clarify or not self._targets_ok(call):
            return None
        call.text, call.heard, call.tier = text, sentence, "sound"
        return call
