"""The listener and the responder with marker fakes (pure logic: the real models are tested elsewhere).

A scripted VAD says which 32 ms frames are voiced (each chunk's first sample is its marker); a gated STT shows when
a speculative decode runs. Defect 3 of the redesign: a superseded speculation was dropped but never cancelled, and
on 2 cores the stale decodes queued in front of the final one; defect 6: the fixed phrases ignored ``tts.phrases``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_agent import turn_events as ev
from edge_agent.audio import AudioChunk
from edge_agent.config import VadSettings
from edge_agent.headroom import Headroom
from edge_agent.listener import ContinuationWatch, FollowUpDetector, Listener
from edge_agent.responder import Responder
from edge_agent.turn import Turn
from edge_agent.vad import VAD_FRAME_SAMPLES, Segmenter

from .doubles import NullSpeaker

FRAME = VAD_FRAME_SAMPLES


class MarkerVad:
    """1.0 for frames whose first sample is 1, else 0.0."""

    def process(self, samples: np.ndarray) -> list[float]:
        return [float(samples[i] == 1) for i in range(0, len(samples), FRAME)]

    def reset(self) -> None:
        pass


def frames(*voiced: bool) -> AudioChunk:
    x = np.zeros(FRAME * len(voiced), dtype=np.int16)
    for i, v in enumerate(voiced):
        x[i * FRAME] = 1 if v else 0
    return AudioChunk(x, time.monotonic())


class GatedStt:
    """A decode that runs until the test lets it finish; counts decodes and the most running at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.lock = threading.Lock()

    def transcribe(self, audio: np.ndarray):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return type("R", (), {"text": f"{len(audio)} samples", "compute_s": 0.0})()


class Stream:
    def __init__(self) -> None:
        self.fed: list[np.ndarray] = []

    def feed(self, x: np.ndarray) -> None:
        self.fed.append(x)

    def snapshot(self) -> np.ndarray:
        return np.concatenate(self.fed)


def _listener(stt: GatedStt) -> Listener:
    seg = Segmenter(VadSettings(min_speech_s=0.06, trailing_silence_s=0.6))
    return Listener(vad=MarkerVad(), segmenter=seg, stt_stream=Stream(), transcribe=stt.transcribe, threshold=0.5)


def test_a_superseded_speculation_is_cancelled_and_none_queues_beside_it():
    stt = GatedStt()
    lis = _listener(stt)
    lis.feed(frames(*[True] * 8))  # speech
    lis.feed(frames(False, False, False, False))  # 128 ms pause: a speculation starts
    first = lis.speculation
    assert first is not None and lis.speculations == 1
    lis.feed(frames(True, True, True))  # the user goes on
    assert first.cancel.is_set() and lis.speculation is None and lis.cancelled == 1
    lis.feed(frames(False, False, False, False))  # a second pause while the stale decode still runs
    assert lis.speculation is None and lis.speculations == 1, "a new decode would queue beside the stale one"
    stt.release.set()
    assert first.done.wait(5) and first.wait(1) is None  # cancelled: its text is never used
    lis.feed(frames(True, False, False, False, False))  # the stale one ended: the next pause speculates again
    assert lis.speculations == 2 and stt.most == 1


def test_the_endpoint_takes_the_current_speculation():
    stt = GatedStt()
    stt.release.set()
    lis = _listener(stt)
    lis.feed(frames(*[True] * 8))
    heard = lis.feed(frames(*[False] * 20))  # 640 ms: past the 600 ms trailing silence
    assert heard.endpoint is not None
    stream, spec = lis.finish()
    # its audio is everything fed when the pause began (whole chunks reach STT before their frames are judged)
    assert spec is not None and spec.wait(5).text == f"{28 * FRAME} samples" and stream is not None
    assert lis.speculations == 1 and lis.cancelled == 0


def test_preemptive_work_gets_the_speculative_transcript_and_its_cancel_token_unless_superseded():
    stt = GatedStt()
    got: list[tuple[str, threading.Event]] = []
    called = threading.Event()

    def then(result, cancel):
        got.append((result.text, cancel))
        called.set()

    seg = Segmenter(VadSettings(min_speech_s=0.06, trailing_silence_s=0.6))
    lis = Listener(vad=MarkerVad(), segmenter=seg, stt_stream=Stream(), transcribe=stt.transcribe, threshold=0.5,
                   on_speculation=then)
    lis.feed(frames(*[True] * 8))
    lis.feed(frames(False, False, False, False))  # first pause: speculation
    first = lis.speculation
    lis.feed(frames(True))  # the user goes on before the decode ended: no preemptive work on stale words
    stt.release.set()
    assert first.done.wait(5)
    first.thread.join(5)
    assert got == []
    lis.feed(frames(False, False, False, False))  # the next pause: a current speculation
    second = lis.speculation
    assert second is not None and called.wait(5)
    assert got[0][0] == second.result.text and got[0][1] is second.cancel
    assert second.wait(1) is second.result  # the endpoint does not wait for the preemptive work


class FakeTts:
    sample_rate = 16000

    def __init__(self, phrases: dict[str, str]) -> None:
        self.phrases = type("P", (), {"text_of": lambda _self, k: phrases.get(k, k)})()
        self.cached_keys: list[str] = []

    def cached(self, key: str) -> np.ndarray:
        self.cached_keys.append(key)
        return np.zeros(0, dtype=np.int16)  # nothing to play: the speaker is never needed


def test_fixed_phrases_come_from_the_phrase_table_by_key():
    """tts.phrases (merged into the phrase cache) decides the words of an apology; they were hard-coded."""
    events: list[ev.Event] = []
    tts = FakeTts({"not_understood": "Pardon? Say that once more."})

    class EmptyStream:
        def finish(self):
            return type("R", (), {"text": "", "compute_s": 0.01})()

    r = Responder(Turn("t1", t_wake=1.0), post=events.append, brain=None, tts=tts, speaker=NullSpeaker(),
                  first_clause_words=4, area=None, wake_phrases=["hey jarvis"], stream=EmptyStream())
    r.run()
    done = [e for e in events if isinstance(e, ev.ResponseDone)]
    assert tts.cached_keys == ["not_understood"]
    assert done and done[0].outcome == "empty" and done[0].reply_text == "Pardon? Say that once more."


def test_follow_up_speech_is_heard_after_the_vad_no_speech_timeout() -> None:
    """A follow-up window longer than vad.no_speech_timeout_s (5 s): speech 8 s into it still opens a turn (the
    spoken conversations of tools/spoken_eval.py with a 20 s window found every later follow-up ignored)."""
    settings = VadSettings()
    det = FollowUpDetector(MarkerVad(), lambda: Segmenter(settings), 0.5)
    silent_frames = int(8.0 * 16000 / FRAME)
    assert not any(det.speech_started(frames(False)) for _ in range(silent_frames))
    assert any(det.speech_started(frames(True)) for _ in range(int(settings.min_speech_s * 16000 / FRAME) + 2))


# ---------------------------------------------------------------------------------------------- early end


class InstantStt:
    def transcribe(self, audio: np.ndarray):
        return type("R", (), {"text": "words", "compute_s": 0.0})()


def _judged(verdict: str, stt=None, normal_s: float = 0.4) -> Listener:
    seg = Segmenter(VadSettings(min_speech_s=0.06, trailing_silence_s=normal_s))
    return Listener(vad=MarkerVad(), segmenter=seg, stt_stream=Stream(), transcribe=(stt or InstantStt()).transcribe,
                    threshold=0.5, judge=lambda result: verdict)


def _silence_until_endpoint(lst: Listener, max_frames: int = 80):
    """Silent frames one at a time, the speculation awaited after each: (silence at the endpoint, heard)."""
    for _ in range(max_frames):
        heard = lst.feed(frames(False))
        if lst.speculation is not None:
            lst.speculation.done.wait(5)
        if heard.endpoint is not None:
            return lst.silence_s, heard
    return None, None


@pytest.mark.parametrize("verdict, waits", [("complete", 0.15), ("open", 0.4), ("extendable", 0.8),
                                            ("incomplete", 1.2)])
def test_the_verdict_sets_the_silence_that_ends_the_turn(verdict, waits):
    lst = _judged(verdict)
    lst.feed(frames(*[True] * 10))
    silence, heard = _silence_until_endpoint(lst)
    assert silence is not None and waits <= silence < waits + 0.033, (verdict, silence)
    assert heard.verdict == verdict and heard.early == (verdict == "complete")
    assert lst.speculations == 1  # the verdict came from the speculation at the first pause


def _silence_at_endpoint_while_decoding(headroom: Headroom | None = None) -> float | None:
    """The silence after which a "complete" turn ends while its speculation's decode never finishes."""
    stt = GatedStt()
    lst = _judged("complete", stt=stt)
    if headroom is not None:
        lst.headroom = headroom
    lst.feed(frames(*[True] * 10))
    ended_at = None
    for _ in range(60):  # never released: the decode is still running
        if lst.feed(frames(False)).endpoint is not None:
            ended_at = lst.silence_s
            break
    stt.release.set()
    return ended_at


def test_a_running_speculation_holds_the_endpoint_a_little_past_the_normal_silence():
    ended_at = _silence_at_endpoint_while_decoding()
    assert ended_at is not None and 0.4 + 0.8 <= ended_at < 0.4 + 0.8 + 0.033


def test_on_a_board_too_slow_for_it_a_running_speculation_never_delays_the_endpoint():
    """A Pi 4: the last decodes took 1.65 s, so one started 0.13 s into the pause cannot be done by 0.4 + 0.8 s: the
    endpoint comes after the normal silence (the final transcript takes the speculation up); on a machine whose
    decodes fit, the wait is as before."""
    for decode_s, waits in ((1.65, 0.4), (0.13, 0.4 + 0.8)):
        headroom = Headroom(0.4)
        headroom.observe_decode(decode_s)
        ended_at = _silence_at_endpoint_while_decoding(headroom)
        assert ended_at is not None and waits <= ended_at < waits + 0.033, (decode_s, ended_at)


def test_speech_resuming_before_the_early_end_cancels_the_verdict():
    lst = _judged("complete")
    lst.feed(frames(*[True] * 10))
    for _ in range(4):  # 0.128 s: the speculation starts
        lst.feed(frames(False))
    lst.speculation.done.wait(5)
    assert lst.feed(frames(True)).endpoint is None and lst.cancelled == 1  # the user went on: no early end
    lst.feed(frames(*[True] * 5))
    silence, heard = _silence_until_endpoint(lst)
    assert heard.early and 0.15 <= silence < 0.19 and lst.speculations == 2


def test_without_a_judge_the_segmenter_alone_ends_the_turn():
    seg = Segmenter(VadSettings(min_speech_s=0.06, trailing_silence_s=0.4))
    lst = Listener(vad=MarkerVad(), segmenter=seg, stt_stream=Stream(), transcribe=InstantStt().transcribe,
                   threshold=0.5)
    lst.feed(frames(*[True] * 10))
    silence, heard = _silence_until_endpoint(lst)
    assert heard is not None and not heard.early and heard.verdict is None and 0.4 <= silence < 0.44


def test_the_continuation_watch_hears_speech_resuming_within_its_window_and_keeps_the_whole_utterance():
    prior = np.full(1600, 7, dtype=np.int16)
    w = ContinuationWatch("t1", prior, vad=MarkerVad(), threshold=0.5, min_speech_s=0.09, silence_s=0.2,
                          window_s=1.0)
    assert not w.feed(frames(False, False, True, False).samples)  # one voiced frame is a blip, not speech
    assert not w.expired and abs(w.silence_s - (0.2 + 4 * 0.032)) < 1e-6
    assert w.feed(frames(True, True, True).samples)
    audio = w.utterance()
    assert len(audio) == 1600 + 7 * FRAME and (audio[:1600] == 7).all()
    quiet = ContinuationWatch("t2", prior, vad=MarkerVad(), threshold=0.5, min_speech_s=0.09, silence_s=0.9,
                              window_s=1.0)
    quiet.feed(frames(False, False, False, False).samples)
    assert quiet.expired


def test_the_first_audio_waits_while_the_engine_holds_it_and_a_playing_reply_cannot_be_held():
    turn = Turn("t1", t_wake=1.0)
    turn.hold_until = time.monotonic() + 0.2  # an early end on a source without echo cancel
    r = Responder(turn, post=lambda e: None, brain=None, tts=FakeTts({}), speaker=NullSpeaker(), first_clause_words=4,
                  area=None, wake_phrases=["hey jarvis"])
    t0 = time.monotonic()
    played = threading.Thread(target=r.play, args=(np.zeros(160, dtype=np.int16), "Turned on the light."))
    played.start()
    time.sleep(0.05)
    assert r.hold(time.monotonic() + 0.4)  # voice heard meanwhile: the engine keeps it back longer
    played.join(5)
    assert len(r.segments) == 1 and time.monotonic() - t0 >= 0.44
    assert not r.hold(time.monotonic() + 1.0)  # it plays: too late to hold
    cut = Turn("t2", t_wake=1.0)
    cut.hold_until = time.monotonic() + 5.0
    r2 = Responder(cut, post=lambda e: None, brain=None, tts=FakeTts({}), speaker=NullSpeaker(), first_clause_words=4,
                   area=None, wake_phrases=["hey jarvis"])
    threading.Timer(0.1, cut.cancel.set).start()  # the request went on: the held reply is never played
    r2.play(np.zeros(160, dtype=np.int16), "Turned on the light.")
    assert r2.segments == []
