"""The loop's data lane (``AudioLane``, a base of ``Engine``): what the loop thread does with each chunk of audio.

The wake word and the stop word (with the half-duplex guard against the assistant's own voice), the second look at a
doubtful detection, the listener of the turn being heard (speech start, endpoint, no speech), the continuation watch
after the endpoint, follow-up speech and barge-in; a lost microphone reopened, the other threads made to give way once
the loop fell behind. Apart from the control lane (``Engine.events``, drained between chunks): what it hears becomes
events for the controller (``Engine.dispatch``); it never writes turn state itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import ending
from . import turn_events as ev
from .audio import SAMPLE_RATE, AudioChunk
from .errors import AudioError
from .listener import ContinuationWatch
from .priority import lower_other_threads
from .responder import says_wake_phrase
from .turn_events import RESPONDING, State
from .wake_tail import wake_phrase
from .wake_verify import WAKE_AUDIO_S, heard_wake, look, needs_second_look

if TYPE_CHECKING:
    from .audio_io import Speaker
    from .config import Settings
    from .controller import TurnController
    from .headroom import Headroom
    from .listener import FollowUpDetector, Listener
    from .mqtt_bridge import MqttBridge
    from .ports import AudioSource, SpeechToText, VoiceActivity, WakeWordDetector
    from .recorder import DebugRecorder
    from .responder import Responder
    from .turn import Turn
    from .vad import PreRoll

log = logging.getLogger("edge_agent.engine")  # the loop's log name, as before the split

SELF_ECHO_TAIL_S = 0.6  # a detection this soon after a segment ended may still be its echo
CONTINUE_HOLD_S = 0.2  # voice after the endpoint holds the reply's first audio this long while it may be speech
GIVE_WAY_EVERY_CHUNKS = 4  # once the loop is given way to, threads started since are lowered within this many chunks


class AudioLane:
    """The per-chunk work of ``Engine.run`` (loop thread only); ``Engine`` supplies the attributes below."""

    s: Settings
    source: AudioSource
    speaker: Speaker
    wake: WakeWordDetector
    stop_wake: WakeWordDetector | None
    vad: VoiceActivity
    stt: SpeechToText
    controller: TurnController
    headroom: Headroom
    preroll: PreRoll
    wake_audio: PreRoll | None
    recorder: DebugRecorder | None
    bridge: MqttBridge | None
    listener: Listener | None
    listener_turn: str | None
    watch: ContinuationWatch | None
    follow_up: FollowUpDetector
    responders: dict[str, Responder]
    wake_phrases: list[str]
    _looking: dict[str, threading.Event]
    _sweeps: int
    state: State
    turn: Turn | None
    muted: bool
    dispatch: Callable[[ev.Event], None]
    post: Callable[[ev.Event], None]

    def _give_way(self) -> None:
        """The loop fell behind the microphone once (headroom.yield_to_loop): every other thread gets a lower priority
        (priority.py), swept every few chunks so threads started since (responders, decodes) follow."""
        self._sweeps += 1
        if self._sweeps % GIVE_WAY_EVERY_CHUNKS != 1:
            return
        changed = lower_other_threads(threading.get_native_id())
        if self._sweeps == 1:
            log.warning("the audio loop fell %.1f s behind the microphone: the other threads now give way to it "
                        "(%d lowered)", self.headroom.lag_s, changed)

    def _recover_source(self) -> None:
        """The microphone vanished (USB unplugged): keep running, retry until it is back."""
        log.warning("microphone lost (%s); reopening it", getattr(self.source, "error", None) or "stream stopped")
        try:
            self.source.close()
            time.sleep(1.0)
            self.source.open()
            log.info("microphone reopened")
        except AudioError as e:
            log.warning("microphone still unavailable: %s", e.message)
            time.sleep(1.0)

    def _process(self, chunk: AudioChunk) -> None:
        self.preroll.push(chunk)
        if self.wake_audio is not None:
            self.wake_audio.push(chunk)
        if self.recorder is not None:
            self.recorder.push(chunk)
        state = self.state
        speaking = state in RESPONDING or self.speaker.busy
        t_audio = self.speaker.t_any_audio
        echo_tail = t_audio is not None and time.monotonic() - t_audio < SELF_ECHO_TAIL_S
        # Half-duplex guard: without echo cancellation the assistant hears itself, so the wake threshold is raised.
        self.wake.threshold_boost = (self.s.wake.self_trigger_guard
                                     if (speaking or echo_tail) and not self.s.audio.echo_cancel else 0.0)
        detections = [] if self.muted else self.wake.process(chunk.samples, chunk.t_end)
        if detections and (speaking or echo_tail) and not self.s.audio.echo_cancel \
                and says_wake_phrase(list(self.responders.values()), self.wake_phrases, time.monotonic(),
                                     SELF_ECHO_TAIL_S):
            log.info("ignoring wake word %s (%.2f): the reply being played says it", detections[0].model,
                     detections[0].score)
            detections = []
        stops = self.stop_wake.process(chunk.samples, chunk.t_end) if (self.stop_wake and speaking) else []
        if stops and speaking:
            log.info("stop word %s (%.2f): interrupting", stops[0].model, stops[0].score)
            if state in RESPONDING:
                self.dispatch(ev.StopWord(time.monotonic()))
            else:
                self.speaker.flush()
            return
        if detections:
            det = max(detections, key=lambda d: d.score)
            log.info("wake word %s score %.3f at %.2f", det.model, det.score, det.t)
            before = self.turn
            self.dispatch(ev.WakeDetected(time.monotonic(), det.model, det.score, det.t))
            if self.turn is not before and self.state == State.LISTENING:
                if self.turn is not None and needs_second_look(det.score, getattr(det, "cutoff", 0.0),
                                                               getattr(det, "band", 0.0)):
                    self._second_look(self.turn, det)  # listening is open already; this never delays it
                if self.recorder is not None and self.turn is not None:
                    self.recorder.wake(self.turn.turn_id, det)
                if self.bridge is not None and self.turn is not None:
                    self.bridge.arbitrate(det.model, det.score, self.turn.turn_id)
                return
        watching = self._watch_continuation(chunk)
        if watching is None:
            return  # the request goes on: a new listening turn has the chunk
        if self.state == State.LISTENING:
            self._feed_listener(chunk)
        elif self.state == State.FOLLOW_UP and self.follow_up.speech_started(chunk):
            self.dispatch(ev.FollowUpSpeech(time.monotonic()))
        elif speaking and self.s.audio.echo_cancel and self.vad is not None and state in RESPONDING \
                and not watching:
            # With an echo-cancelled source any speech may interrupt.
            probs = self.vad.process(chunk.samples)
            if probs and max(probs) > max(0.8, self.s.vad.threshold):
                log.info("speech during reply (echo-cancelled source): interrupting")
                self.dispatch(ev.BargeIn(time.monotonic()))

    def _second_look(self, turn: Turn, det: Any) -> None:
        """A doubtful detection (``wake_verify.needs_second_look``): the turn listens as usual while a worker thread
        transcribes the audio up to the detection and posts ``WakeChecked``; the controller drops the turn if the
        wake phrase is not in the words. A failed STT accepts (a real user is never dropped for it). Until the
        verdict is handled the turn's ``wake_settled`` is clear: its responder may listen, transcribe and think, but
        executes no intent (``Responder.may_act``)."""
        turn_id = turn.turn_id
        turn.wake_settled.clear()
        self._looking[turn_id] = turn.wake_settled
        audio = self.wake_audio.recent(WAKE_AUDIO_S, until=det.t) if self.wake_audio is not None else None
        phrase = wake_phrase(det.model)
        log.info("wake word %s score %.3f is in its second-look band (%.3f .. %.3f): checking %.2f s of audio",
                 det.model, det.score, det.cutoff, det.cutoff + det.band,
                 0.0 if audio is None else len(audio) / SAMPLE_RATE)

        def run() -> None:
            t0 = time.monotonic()
            text, accepted, name_prob = "", True, None
            try:
                if audio is not None and len(audio):
                    # the wake phrase, not the home's names
                    text, name_prob = look(self.stt.unprimed(), audio, phrase)
                    accepted = heard_wake(text, phrase, name_prob)
            except Exception as e:  # noqa: BLE001 - the check must never take a turn down with it
                log.warning("second look at wake word %s failed (%s); accepting it", det.model, e)
            self.post(ev.WakeChecked(time.monotonic(), turn_id, accepted, text, det.model, det.score, det.cutoff,
                                     det.band, compute_s=time.monotonic() - t0, name_prob=name_prob))

        threading.Thread(target=run, name="wake-check", daemon=True).start()

    def _watch_continuation(self, chunk: AudioChunk) -> bool | None:
        """After the endpoint, while the turn is answered: feed the watch; None when the user went on (a
        ``Continued`` event was dispatched), else whether the watch still runs. Without echo cancellation it ends
        when the reply becomes audible (the microphone would hear it), with it after ``CONTINUE_WINDOW_S``."""
        w = self.watch
        if w is None:
            return False
        turn = self.controller.turn
        audible = not self.s.audio.echo_cancel and self.speaker.busy
        if turn is None or turn.turn_id != w.turn_id or self.state not in RESPONDING or w.expired or audible:
            self.watch = None
            return False
        if not w.feed(chunk.samples):
            responder = self.responders.get(w.turn_id)
            if w.voiced_s > 0 and not self.s.audio.echo_cancel and responder is not None:
                # voice, not yet long enough to count as speech: the reply must not start over it
                responder.hold(time.monotonic() + CONTINUE_HOLD_S)
            return True
        self.watch = None
        log.info("speech resumed %.2f s after the endpoint: the request goes on", w.silence_s)
        self.dispatch(ev.Continued(time.monotonic(), w.turn_id, audio=w.utterance()))
        return None

    def _feed_listener(self, chunk: AudioChunk) -> None:
        listener, turn_id = self.listener, self.listener_turn
        if listener is None or turn_id is None:
            return
        heard = listener.feed(chunk)
        if heard.speech_start is not None:
            self.dispatch(ev.SpeechStarted(time.monotonic(), turn_id, heard.speech_start))
        if heard.endpoint is not None:
            # what was said so far, for a continuation (speech resuming soon after the endpoint)
            snapshot = getattr(listener.stream, "snapshot", None) if listener.judge is not None else None
            prior = snapshot() if snapshot is not None else None
            hold_s = 0.0
            if heard.early and not self.s.audio.echo_cancel:  # the reply could not be told from the user going on
                hold_s = max(0.0, listener.normal_silence_s - heard.silence_s)
            self.dispatch(ev.Endpointed(time.monotonic(), turn_id, heard.endpoint, verdict=heard.verdict,
                                        early=heard.early, hold_s=hold_s))
            if prior is not None and self.state in RESPONDING:
                vad = self.s.vad
                self.watch = ContinuationWatch(turn_id, prior, vad=self.vad, threshold=vad.threshold,
                                               min_speech_s=vad.min_speech_s, silence_s=heard.silence_s,
                                               window_s=ending.CONTINUE_WINDOW_S)
        elif heard.no_speech:
            self.dispatch(ev.NoSpeech(time.monotonic(), turn_id))
