"""The listening pipeline of one turn: VAD → wake-tail gate → endpointer, with the STT stream fed as audio arrives
and a speculative transcription at the first pause.

Owned by the loop thread alone: the engine opens it on the controller's ``OpenListener`` action, feeds it every
chunk, and turns what it reports into controller events. Nothing here writes turn state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ending
from .audio import SAMPLE_RATE, AudioChunk
from .headroom import SPECULATE_AFTER_S, Headroom
from .vad import VAD_FRAME_S, SegmentEvent
from .wake_tail import WakeTailGate, wake_tail_cut

log = logging.getLogger(__name__)


class Speculation:
    """A transcription of the utterance so far, started at the first pause: if the user does not go on speaking, the
    endpoint finds the transcript ready instead of starting it (the trailing silence is spent on it).

    It carries a cancel token: when the user goes on, it is cancelled (its result is never used, and a second,
    full-window decode it might have needed is skipped). One decode already inside CTranslate2 cannot be stopped
    midway, which is why the listener starts no new speculation while a cancelled one still runs: on 2 or 4 cores
    stale decodes never queue up in front of the final one."""

    def __init__(self, transcribe: Callable[[np.ndarray], Any], audio: np.ndarray,
                 then: Callable[[Any, threading.Event], None] | None = None,
                 judge: Callable[[Any], str] | None = None) -> None:
        self.result: Any = None
        self.then = then  # called on this thread with the transcript and the cancel token (preemptive work)
        self.judge = judge  # the transcript's ending verdict (edge_agent/ending.py), set before ``done``
        self.verdict: str | None = None
        self.started_at_silence_s = 0.0  # how far into the pause it started (the listener sets it)
        self.t_done: float | None = None  # when the transcript (and its verdict) was ready
        self.error: BaseException | None = None
        self.samples = len(audio)
        self.cpu_s = 0.0  # process CPU while it ran (the decode's own threads included)
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(transcribe, audio), name="stt-speculation",
                                       daemon=True)
        self.thread.start()

    def _run(self, transcribe: Callable[[np.ndarray], Any], audio: np.ndarray) -> None:
        c0 = time.process_time()
        try:
            if not self.cancel.is_set():
                self.result = transcribe(audio)
            if self.judge is not None and self.result is not None and not self.cancel.is_set():
                self.verdict = self.judge(self.result)
        except BaseException as e:  # noqa: BLE001 - reported through .error; the normal path takes over
            self.error = e
        finally:
            self.cpu_s = time.process_time() - c0
            self.t_done = time.monotonic()
            self.done.set()
        if self.then is not None and self.result is not None and not self.cancel.is_set():
            try:  # after done: the endpoint never waits for this
                self.then(self.result, self.cancel)
            except Exception:  # noqa: BLE001 - preemptive work only; the turn does it again
                log.exception("work on the speculative transcript failed")

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def wait(self, timeout: float) -> Any:
        """The transcript, or None when it failed, was cancelled, or did not finish within ``timeout`` seconds."""
        if not self.done.wait(timeout):
            log.warning("speculative transcription still running after %.1f s; transcribing again", timeout)
            self.cancel.set()
            return None
        return None if self.cancel.is_set() else self.result


@dataclass
class Heard:
    """What one chunk produced for the controller."""

    speech_start: float | None = None  # audio time
    endpoint: float | None = None  # audio time of the last voiced frame
    no_speech: bool = False
    early: bool = False  # the endpoint came before the normal silence: the words were a complete command
    silence_s: float = 0.0  # the silence the endpoint waited for
    verdict: str | None = None  # the speculation's ending verdict, if it had one


class Listener:
    """One turn's listening: see the module docstring. ``feed`` returns what the endpointer decided."""

    def __init__(self, *, vad: Any, segmenter: Any, stt_stream: Any, transcribe: Callable[[np.ndarray], Any],
                 threshold: float, keep_audio: bool = False, speculate: bool = True,
                 on_speculation: Callable[[Any, threading.Event], None] | None = None,
                 judge: Callable[[Any], str] | None = None, headroom: Headroom | None = None) -> None:
        self.vad = vad
        self.headroom = headroom  # what this machine affords: how long the endpoint waits for a running speculation
        self.on_speculation = on_speculation  # preemptive work on a speculative transcript (Speculation.then)
        self.judge = judge  # the ending verdict of a speculative transcript; None: the segmenter's fixed silence
        self.segmenter = segmenter
        self.normal_silence_s = segmenter.trailing_silence_s
        if judge is not None and speculate:
            segmenter.trailing_silence_s = float("inf")  # the listener ends the turn (``_ending``)
        self.stream = stt_stream
        self.transcribe = transcribe
        self.threshold = threshold
        self.keep_audio = keep_audio
        self.speculate = speculate
        self.audio: list[np.ndarray] = []  # what STT heard (debug recorder)
        self.speculation: Speculation | None = None
        self.stale: list[Speculation] = []  # cancelled, still finishing their one CTranslate2 call
        self.speculations = 0
        self.cancelled = 0
        self.gate: WakeTailGate | None = None
        self.silence_s = 0.0
        self.closed = False

    # ---------------------------------------------------------------- opening
    def start_after_wake(self, preroll: np.ndarray) -> None:
        """The pre-roll ends with the wake word: keep what follows its pause (``wake_tail_cut``); when it ends in voice
        with no pause, the wake phrase may still be going on: hold the audio (``WakeTailGate``)."""
        if not len(preroll):
            return
        probs = self.vad.process(preroll)  # no reset after: the VAD goes on warm into the live audio that follows
        frame = int(VAD_FRAME_S * SAMPLE_RATE)
        voiced = [p >= self.threshold for p in probs]
        cut = wake_tail_cut(voiced, VAD_FRAME_S)
        if cut == 0 and any(voiced):
            trailing = len(voiced) - 1 - max(i for i, v in enumerate(voiced) if v)
            self.gate = WakeTailGate(preroll, trailing, VAD_FRAME_S)
            return
        self._feed_stt(preroll[cut * frame:] if cut < len(probs) else preroll[:0])

    def resume(self, audio: np.ndarray) -> None:
        """A continued request: what was said before the pause (and the pause) is heard again by STT; the
        endpointer starts in speech, so only silence after the live words ends the turn."""
        self.segmenter.resume()
        self._feed_stt(audio)

    # ---------------------------------------------------------------- per chunk
    def _feed_stt(self, audio: np.ndarray) -> None:
        if self.stream is None or not len(audio):
            return
        partial = self.stream.feed(audio)
        if partial:
            log.debug("partial: %s", partial)
        if self.keep_audio:
            self.audio.append(audio.copy())

    def feed(self, chunk: AudioChunk) -> Heard:
        heard = Heard()
        flags = [p >= self.threshold for p in self.vad.process(chunk.samples)]
        if self.gate is not None:
            released = self.gate.push(chunk.samples, flags)
            if released is None:
                return heard  # the wake phrase may still be going on: neither STT nor the endpointer hear it yet
            audio, flags = released
            self.gate = None
            self._feed_stt(audio)
        else:
            self._feed_stt(chunk.samples)
        for voiced in flags:
            if voiced:
                self.silence_s = 0.0
                self._supersede()
            elif self.segmenter.in_speech:
                self.silence_s += VAD_FRAME_S
                if self.silence_s >= SPECULATE_AFTER_S:
                    self._speculate()
                if self.judge is not None and self.speculate and self._ending(heard):
                    last = self.segmenter.last_voiced if self.segmenter.last_voiced is not None else self.segmenter.t
                    heard.endpoint = chunk.t_end - max(0.0, self.segmenter.t + VAD_FRAME_S - last)
                    self.segmenter.done = True
                    return heard
            for ev in self.segmenter.feed(VAD_FRAME_S, voiced):
                # Event time on the chunk clock: how far back from this chunk's end the event lies in audio time.
                t_ev = chunk.t_end - max(0.0, self.segmenter.t - ev.t)
                if ev.kind == SegmentEvent.SPEECH_START:
                    heard.speech_start = t_ev
                elif ev.kind in (SegmentEvent.ENDPOINT, SegmentEvent.MAX_LENGTH):
                    heard.endpoint = t_ev
                    return heard
                elif ev.kind == SegmentEvent.TIMEOUT:
                    heard.no_speech = True
                    return heard
        return heard

    def _ending(self, heard: Heard) -> bool:
        """Has the silence so far ended the turn? How long it must be depends on the words (``ending.silence_for``)
        once the speculation has judged them; while it still runs the endpoint waits for it a little past the
        normal silence (the final transcript would wait for the same decode anyway)."""
        spec = self.speculation
        verdict = spec.verdict if spec is not None and spec.done.is_set() and not spec.cancel.is_set() else None
        need = ending.silence_for(verdict, self.normal_silence_s)
        if verdict is None and spec is not None and spec.running:  # not past a decode that cannot be done in time
            need = (self.headroom.speculation_wait_s(spec.started_at_silence_s) if self.headroom is not None
                    else self.normal_silence_s + ending.SPECULATION_WAIT_MAX_S)
        if self.silence_s < need - 1e-6:
            return False
        heard.early = self.silence_s < self.normal_silence_s - 1e-6
        heard.silence_s, heard.verdict = round(self.silence_s, 3), verdict
        return True

    # ---------------------------------------------------------------- speculation
    def _speculate(self) -> None:
        if not self.speculate or self.speculation is not None or self.stream is None:
            return
        self.stale = [s for s in self.stale if s.running]
        if self.stale:
            return  # one stale decode is still inside CTranslate2: never queue another beside it
        snapshot = getattr(self.stream, "snapshot", None)
        audio = snapshot() if snapshot else None
        if audio is None or not len(audio):
            return
        self.speculation = Speculation(self.transcribe, audio, then=self.on_speculation, judge=self.judge)
        self.speculation.started_at_silence_s = self.silence_s
        self.speculations += 1

    def _supersede(self) -> None:
        """The user went on: what was transcribed is stale. Cancel it (not just drop it)."""
        spec, self.speculation = self.speculation, None
        if spec is not None:
            spec.cancel.set()
            self.cancelled += 1
            if spec.running:
                self.stale.append(spec)

    # ---------------------------------------------------------------- closing
    def finish(self) -> tuple[Any, Speculation | None]:
        """The endpoint: the STT stream and the speculation (if it is still current) for the responder."""
        if self.gate is not None:  # the turn ended while the wake phrase's end was awaited: nothing is lost
            self._feed_stt(self.gate.flush())
            self.gate = None
        stream, spec = self.stream, self.speculation
        self.stream, self.speculation, self.closed = None, None, True
        return stream, spec

    def close(self) -> None:
        """The turn was dropped (no speech, another room won, a wake word restarted it): cancel what runs."""
        self._supersede()
        self.stream, self.closed = None, True


class ContinuationWatch:
    """After an early end: does the user go on? Fed the microphone's chunks on the loop thread while the turn is
    answered; speech (``min_speech_s`` voiced in a row) within ``window_s`` of silence means the request continues.
    It keeps the audio from the start of the utterance, so the continued turn hears all of it."""

    def __init__(self, turn_id: str, prior: np.ndarray, *, vad: Any, threshold: float, min_speech_s: float,
                 silence_s: float, window_s: float) -> None:
        self.turn_id = turn_id
        self.vad, self.threshold, self.min_speech_s = vad, threshold, min_speech_s
        self.audio = [prior]
        self.silence_s = silence_s  # silence since the last voiced frame
        self.window_s = window_s
        self.voiced_s = 0.0

    @property
    def expired(self) -> bool:
        return self.voiced_s == 0.0 and self.silence_s >= self.window_s

    def feed(self, samples: np.ndarray) -> bool:
        """True when speech resumed (the watch is then over)."""
        self.audio.append(samples.copy())
        for p in self.vad.process(samples):
            if p >= self.threshold:
                self.voiced_s += VAD_FRAME_S
                if self.voiced_s >= self.min_speech_s - 1e-6:
                    return True
            else:
                self.silence_s += VAD_FRAME_S + self.voiced_s  # a blip too short for speech counts as silence
                self.voiced_s = 0.0
        return False

    def utterance(self) -> np.ndarray:
        return np.concatenate(self.audio)


def wait_speculation(spec: Speculation | None, timeout: float) -> tuple[Any, bool]:
    """(result or None, whether it came from the speculation)."""
    if spec is None:
        return None, False
    t0 = time.monotonic()
    result = spec.wait(timeout)
    if result is not None:
        log.debug("speculative transcript ready %.0f ms after the endpoint", (time.monotonic() - t0) * 1000)
    return result, result is not None


class FollowUpDetector:
    """The follow-up window has no wake word: only real speech (``vad.min_speech_s`` voiced, across chunks) opens a
    turn. Loop thread only."""

    def __init__(self, vad: Any, segmenter_factory: Callable[[], Any], threshold: float) -> None:
        self.vad, self.segmenter_factory, self.threshold = vad, segmenter_factory, threshold
        self.segmenter: Any = None

    def reset(self) -> None:
        self.segmenter = None

    def speech_started(self, chunk: AudioChunk) -> bool:
        if self.segmenter is None:
            self.segmenter = self.segmenter_factory()
            # The window's length is the controller's (conversation.follow_up_s); the segmenter's no-speech timeout
            # (vad.no_speech_timeout_s, 5 s) would otherwise end the watch early and close a longer window in effect.
            self.segmenter.no_speech_timeout_s = float("inf")
        for p in self.vad.process(chunk.samples):
            if any(e.kind == SegmentEvent.SPEECH_START for e in self.segmenter.feed(VAD_FRAME_S, p >= self.threshold)):
                self.segmenter = None
                self.vad.reset()
                return True
        return False
