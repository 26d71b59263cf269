"""Adding a TTS engine is one module and one registry line: a scripted engine registered from a test is accepted by
the config, built by the factory, skipped by the model check when it needs no local voice, and spoken through by a
real responder, whose turn record names the backend; a voice that fails says the turn's apology, never silence."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edge_agent import turn_events as ev
from edge_agent.config import ConfigError, load_settings
from edge_agent.errors import TtsError
from edge_agent.ports import TextToSpeech
from edge_agent.preflight import check_models_for, model_refs
from edge_agent.responder import Responder
from edge_agent.text import split_sentences
from edge_agent.tts import TtsSpec, make_tts, register_tts, tts_engines
from edge_agent.turn import Turn

from .doubles import NullSpeaker

RATE = 16000


class ScriptedTts:
    """A server-like voice: no local model; each sentence is 100 samples per word of a marker value. ``fail_after``
    sentences are spoken, then every synthesis raises (a server gone, no local voice)."""

    name = "scripted"

    def __init__(self, marker: int, fail_after: int | None = None) -> None:
        self.marker = marker
        self.fail_after = fail_after
        self.spoken: list[str] = []
        apology = {"error": "Sorry, something went wrong."}
        self.phrases = type("P", (), {"text_of": lambda _self, k: apology.get(k, k)})()
        self.cache_has_apology = True

    @property
    def sample_rate(self) -> int:
        return RATE

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for sentence in split_sentences(text):
            if self.fail_after is not None and len(self.spoken) >= self.fail_after:
                raise TtsError("the scripted server is gone")
            self.spoken.append(sentence)
            yield np.full(100 * len(sentence.split()), self.marker, dtype=np.int16)

    def synthesize_all(self, text: str) -> np.ndarray:
        chunks = list(self.synthesize(text))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def cached(self, text_or_key: str) -> np.ndarray:
        if text_or_key == "error":
            if not self.cache_has_apology:
                raise TtsError("no apology cached")
            return np.full(300, -1, dtype=np.int16)
        return self.synthesize_all(self.phrases.text_of(text_or_key))

    def cue_tone(self, kind: str) -> np.ndarray:
        return np.full(50, -2, dtype=np.int16)

    def for_turn(self) -> ScriptedTts:
        return self

    def turn_record(self) -> dict[str, object]:
        return {"backend": self.name, "sentences": {self.name: len(self.spoken)}}


@pytest.fixture(scope="module", autouse=True)
def scripted():
    register_tts(TtsSpec(name="scripted", create=lambda s: ScriptedTts(len(s.site.name)),
                         local_voice=lambda _s: False))
    yield
    from edge_agent import tts

    tts._ENGINES.unregister("scripted")


def test_a_registered_engine_is_built_by_the_factory_and_speaks():
    s = load_settings(data={"tts": {"engine": "scripted"}, "site": {"name": "kitchen"}})
    engine = make_tts(s)
    assert isinstance(engine, ScriptedTts) and engine.marker == 7 and "scripted" in tts_engines()
    assert isinstance(engine, TextToSpeech)  # the port
    chunks = list(engine.synthesize("Turn it on. Now please."))
    assert [len(c) for c in chunks] == [300, 200] and all((c == 7).all() for c in chunks)


def _needs_voice(tts: dict) -> bool:
    return any(key == "tts.voice" for key, _ref, _kind in model_refs(load_settings(data={"tts": tts})))


def test_an_engine_without_a_local_voice_needs_none_and_piper_does():
    assert not _needs_voice({"engine": "scripted"})
    assert not any(p.startswith("tts.") for p in check_models_for(load_settings(data={"tts": {"engine": "scripted"}})))
    assert _needs_voice({})
    # a Wyoming server with the local fallback loads the voice; without it, it does not
    assert _needs_voice({"engine": "wyoming"}) and not _needs_voice({"engine": "wyoming", "fallback": "none"})


def test_an_unknown_engine_or_fallback_names_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        load_settings(data={"tts": {"engine": "nonesuch"}})
    msg = str(e.value)
    assert "tts.engine" in msg and "'piper'" in msg and "'wyoming'" in msg and "'scripted'" in msg
    with pytest.raises(ConfigError, match="tts.fallback"):
        load_settings(data={"tts": {"engine": "wyoming", "fallback": "local"}})
    with pytest.raises(ConfigError, match="tts.wyoming.timeout_s"):
        load_settings(data={"tts": {"wyoming": {"timeout_s": 0}}})


class Reply:
    used_llm = True  # sentences are synthesized, not cached
    t_first_token = None

    def __init__(self, text: str) -> None:
        self.text = text

    def __iter__(self):
        for word in self.text.split():  # fragments, as an LLM streams them (the SentenceBuffer makes sentences)
            yield word + " "


class Brain:
    def __init__(self, text: str) -> None:
        self.text = text

    def respond(self, text, area=None, cancel=None, sound=None):
        return Reply(self.text)


def _turn(tts, reply: str) -> tuple[ev.ResponseDone, NullSpeaker]:
    events: list[ev.Event] = []
    speaker = NullSpeaker()
    r = Responder(Turn("t1", t_wake=1.0), post=events.append, brain=Brain(reply), tts=tts, speaker=speaker,
                  first_clause_words=0, area=None, wake_phrases=["hey jarvis"], text="what is up")
    r.run()
    done = [e for e in events if isinstance(e, ev.ResponseDone)]
    assert len(done) == 1
    return done[0], speaker


def test_the_turn_log_names_the_backend_that_spoke():
    done, speaker = _turn(ScriptedTts(5), "It is sunny today. Take a hat.")
    assert [seg.text for seg in speaker.segments] == ["It is sunny today.", "Take a hat."]
    assert all((seg.audio == 5).all() and seg.rate == RATE for seg in speaker.segments)
    assert done.stages["tts"] == {"backend": "scripted", "sentences": {"scripted": 2}}
    assert done.reply_spoken == "It is sunny today. Take a hat."


def test_an_llm_sentence_said_before_is_replayed_and_a_new_one_is_not_kept():
    """An LLM turn's tool-call reply is the handler's own words ("Turned off the kitchen light."), often in the phrase
    cache already (warmed, or said by the fast path): replayed, not synthesized again; a one-off sentence is
    synthesized and never fills the cache."""
    from edge_agent.tts_phrases import PhraseCache

    tts = ScriptedTts(5)
    tts.phrases = PhraseCache(tts, {"error": "Sorry, something went wrong."})
    tts.phrases.store("Turned off the kitchen light.", np.full(50, 9, dtype=np.int16))
    done, speaker = _turn(tts, "Turned off the kitchen light. It is dark now.")
    assert [seg.text for seg in speaker.segments] == ["Turned off the kitchen light.", "It is dark now."]
    assert (speaker.segments[0].audio == 9).all() and (speaker.segments[1].audio == 5).all()
    assert tts.spoken == ["It is dark now."]  # only the new sentence was synthesized
    assert "It is dark now." not in tts.phrases and len(tts.phrases) == 1


def test_a_voice_that_fails_says_the_apology_once_then_nothing_more():
    done, speaker = _turn(ScriptedTts(5, fail_after=1), "It is sunny today. Take a hat. And a coat.")
    # the first sentence spoken, then the cached apology once (not per failed sentence), never silence
    assert [seg.text for seg in speaker.segments] == ["It is sunny today.", "Sorry, something went wrong."]
    assert (speaker.segments[1].audio == -1).all() and done.stages["tts_apology"] == "phrase"


def test_without_an_apology_cached_the_error_cue_plays():
    tts = ScriptedTts(5, fail_after=0)
    tts.cache_has_apology = False
    done, speaker = _turn(tts, "It is sunny today.")
    assert [(seg.text, int(seg.audio[0])) for seg in speaker.segments] == [("", -2)]
    assert done.stages["tts_apology"] == "cue" and done.reply_spoken == ""
