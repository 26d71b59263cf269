"""The controller's actions carried out (``TurnActions``, a base of ``Engine``), on the loop thread.

State changes and finished turns go to the subscribers (a finished turn's loop figures added, the heap trimmed off the
loop); the listener is opened (with its speculation's preemptive generation and ending judge) and closed; a turn's
responder starts on a thread of its own; an interruption sets the turn's ``cancel`` and flushes the speaker; cues
play; the detectors are reset for the follow-up window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import memory
from . import turn_events as ev
from .audio import AudioChunk
from .audio_io import Segment
from .listener import Listener
from .responder import Responder
from .wake_tail import strip_wake_words

if TYPE_CHECKING:
    from .audio_io import Speaker
    from .config import Settings
    from .controller import TurnController
    from .headroom import Headroom
    from .listener import FollowUpDetector
    from .mqtt_bridge import MqttBridge
    from .ports import SpeechToText, TextToSpeech, VoiceActivity, WakeWordDetector
    from .recorder import DebugRecorder
    from .turn import Turn
    from .turn_events import State
    from .vad import PreRoll, Segmenter

log = logging.getLogger("edge_agent.engine")  # the loop's log name, as before the split


class TurnActions:
    """What each of the controller's actions does (``Engine.dispatch`` calls ``_execute``); ``Engine`` supplies the
    attributes below."""

    s: Settings
    speaker: Speaker
    wake: WakeWordDetector
    vad: VoiceActivity
    segmenter_factory: Callable[[], Segmenter]
    stt: SpeechToText
    brain: Any
    tts: TextToSpeech
    controller: TurnController
    headroom: Headroom
    preroll: PreRoll
    recorder: DebugRecorder | None
    bridge: MqttBridge | None
    listener: Listener | None
    listener_turn: str | None
    follow_up: FollowUpDetector
    responders: dict[str, Responder]
    _threads: dict[str, threading.Thread]
    wake_phrases: list[str]
    state_listeners: list[Callable[[State, State], None]]
    turn_listeners: list[Callable[[Turn, dict[str, Any]], None]]
    loop_cpu_s: float
    loop_audio_s: float
    loop_lag_max_s: float
    post: Callable[[ev.Event], None]
    _feed_listener: Callable[[AudioChunk], None]

    def _execute(self, a: ev.Action) -> None:
        if isinstance(a, ev.SetState):
            for fn in self.state_listeners:
                fn(a.state, a.previous)
        elif isinstance(a, ev.OpenListener):
            self._open_listener(a.turn, a.after_wake, keep_preroll=a.keep_preroll, no_speech_s=a.no_speech_s,
                                resume_audio=a.resume_audio)
        elif isinstance(a, ev.CloseListener):
            if self.listener is not None and self.listener_turn == a.turn_id:
                self._keep_audio(a.turn_id, self.listener)
                self.listener.close()
                self.listener, self.listener_turn = None, None
        elif isinstance(a, ev.Interrupt):
            a.turn.cancel.set()
            self.speaker.flush()
        elif isinstance(a, ev.StartResponse):
            self._start_response(a.turn, a.text)
        elif isinstance(a, ev.SpeakAnnouncement):
            r = self._responder(a.turn)
            self._spawn(a.turn.turn_id, threading.Thread(target=r.speak_text, args=(a.text, a.preannounce),
                                                         name="announce", daemon=True))
        elif isinstance(a, ev.PlayCue):
            self.play_cue(a.kind)
        elif isinstance(a, ev.ResetDetectors):
            self.follow_up.reset()
            self.vad.reset()
            self.wake.reset()
        elif isinstance(a, ev.TurnFinished):
            self.responders.pop(a.turn.turn_id, None)
            self._threads.pop(a.turn.turn_id, None)
            record = a.turn.to_json()
            if self.loop_audio_s > 0:
                # wake word + VAD (+ the listener's STT feed) per second of audio, since the previous turn ended
                stages = record.setdefault("stages", {})
                stages["loop_cpu_per_audio_s"] = round(self.loop_cpu_s / self.loop_audio_s, 4)
                stages["loop_lag_max_s"] = round(self.loop_lag_max_s, 3)
                stages["headroom"] = self.headroom.summary()
                self.loop_cpu_s = self.loop_audio_s = self.loop_lag_max_s = 0.0
            for fn in self.turn_listeners:
                try:
                    fn(a.turn, record)
                except Exception:  # noqa: BLE001
                    log.exception("turn subscriber failed")
            # a turn's buffers are freed: give the pages back (see memory.py). malloc_trim walks the whole heap
            # (milliseconds to tens of them on a Pi): off the loop thread, which must keep up with the microphone.
            threading.Thread(target=memory.trim, name="malloc-trim", daemon=True).start()

    def _open_listener(self, turn: Turn, after_wake: bool, *, keep_preroll: bool = True,
                       no_speech_s: float | None = None, resume_audio: Any = None) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.speaker.busy and not self.controller.responding and keep_preroll:
            self.speaker.flush()  # a cue still playing: the user speaks now
        self.follow_up.reset()
        self.vad.reset()
        segmenter = self.segmenter_factory()
        if no_speech_s is not None:
            segmenter.no_speech_timeout_s = no_speech_s  # an automation's question says how long to wait
        if not keep_preroll:
            self.preroll.clear()  # it holds the assistant's own question, not the user's reply
        self.listener = Listener(vad=self.vad, segmenter=segmenter, stt_stream=self.stt.open_stream(),
                                 transcribe=self.stt.transcribe, threshold=self.s.vad.threshold,
                                 keep_audio=bool(self.s.log.debug_audio_dir),
                                 speculate=self.headroom.speculate(self.s.stt.speculate),
                                 headroom=self.headroom,
                                 on_speculation=self._preempt_for(after_wake),
                                 judge=self._judge_for(after_wake or resume_audio is not None))
        self.listener_turn = turn.turn_id
        t_pre = self.preroll.t_start
        audio = self.preroll.drain()
        self.preroll.clear()
        if resume_audio is not None:  # a continued request: its start was heard by the turn it continues
            self.listener.resume(resume_audio)
        elif after_wake:
            self.listener.start_after_wake(audio)
        elif len(audio):
            self._feed_listener(AudioChunk(audio, t_pre if t_pre is not None else time.monotonic()))

    def _preempt_for(self, after_wake: bool) -> Any:
        """Preemptive generation: the speculative transcript at the first pause, as the responder would hand it to
        the brain, has the LLM evaluate its prompt and generate the first clause of its answer (not a fast-path
        command; a device command's tool-call prompt is only evaluated), kept for the turn and never spoken before
        it (``Brain.preempt``, ``edge_agent/preempt.py``). The speculation's cancel token (the user went on) and a
        turn with other words stop it at the next token."""
        preempt = getattr(self.brain, "preempt", None)
        if preempt is None or not self.s.llm.preempt:  # off (the default): no work on the speculation thread
            return None

        def run(result: Any, cancel: threading.Event) -> None:
            text = strip_wake_words(result.text, self.wake_phrases, fuzzy=after_wake)
            preempt(text, area=self.s.site.area or None, cancel=cancel)

        return run

    def _judge_for(self, after_wake: bool) -> Any:
        """The ending verdict of a speculative transcript (edge_agent/ending.py): how long a silence ends the turn.
        Off with ``vad.early_end: false`` or a brain without a fast path."""
        judge = getattr(self.brain, "ending_verdict", None)
        if judge is None or not self.s.vad.early_end:
            return None

        def run(result: Any) -> str:
            return judge(strip_wake_words(result.text, self.wake_phrases, fuzzy=after_wake),
                         area=self.s.site.area or None)

        return run

    def _keep_audio(self, turn_id: str, listener: Listener) -> None:
        if self.recorder is not None:
            self.recorder.keep(turn_id, listener.audio)

    def _responder(self, turn: Turn, **kw: Any) -> Responder:
        r = Responder(turn, post=self.post, brain=self.brain, tts=self.tts, speaker=self.speaker,
                      first_clause_words=self.s.tts.first_clause_words, area=self.s.site.area or None,
                      wake_phrases=self.wake_phrases,
                      on_transcript=self.bridge.publish_transcript if self.bridge is not None else None, **kw)
        self.responders[turn.turn_id] = r
        return r

    def _spawn(self, turn_id: str, thread: threading.Thread) -> None:
        self._threads[turn_id] = thread
        thread.start()

    def _start_response(self, turn: Turn, text: str | None) -> None:
        if text is not None:
            r = self._responder(turn, text=text)
        elif turn.ask is not None:
            stream, spec = (None, None)
            if self.listener is not None and self.listener_turn == turn.turn_id:
                stream, spec = self.listener.finish()
                self.listener, self.listener_turn = None, None
            r = self._responder(turn, stream=stream, speculation=spec, ask=turn.ask)
        else:
            stream, spec = (None, None)
            if self.listener is not None and self.listener_turn == turn.turn_id:
                stream, spec = self.listener.finish()
                self._keep_audio(turn.turn_id, self.listener)
                self.listener, self.listener_turn = None, None
            r = self._responder(turn, stream=stream, speculation=spec)
        self._spawn(turn.turn_id, threading.Thread(target=r.run, name="responder", daemon=True))

    def play_cue(self, kind: str) -> None:
        try:
            audio = self.tts.cue_tone(kind)
            self.speaker.play(Segment(audio=audio, rate=self.tts.sample_rate, text=""))
        except Exception as e:  # noqa: BLE001
            log.warning("cue failed: %s", e)
