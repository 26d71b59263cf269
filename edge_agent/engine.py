"""The voice loop: reads the microphone, runs the detectors, and carries out what the turn controller decides.

Threads and queues (see docs/architecture.md):
- capture: PortAudio's callback copies blocks into ``MicSource.queue`` (bounded, drops oldest, counted); in file mode
  ``FileSource`` is read directly by the loop.
- loop (``Engine.run``): the only thread that calls the controller (``controller.TurnController``, the one writer of
  turn state). Per chunk it runs the wake word (to start turns and to interrupt replies), the listener of the turn
  being heard (VAD, endpointer, STT feed, speculation), and drains the control queue ``Engine.events`` into which the
  other threads post events. It never waits on the LLM or TTS.
- responder (one per turn, ``responder.Responder``): STT finish → brain → sentences → synth → speaker; posts events.
- synth: Piper turns each sentence into audio and queues it on the speaker.
- speaker: plays segments in 20 ms blocks; flushes within one block on interruption.
Control lane: ``Turn.cancel`` stops generation and synthesis; ``Speaker.flush`` drops queued audio.
Subscribers: state changes go to ``state_listeners`` (log, MQTT, systemd status), finished turns to
``turn_listeners`` (turn log, history, debug recorder).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import controller as ev
from . import ending, memory
from .audio import SAMPLE_RATE, AudioChunk
from .audio_io import FileSource, Segment
from .config import Settings
from .controller import RESPONDING, State, TurnController
from .errors import AudioError, EdgeAgentError
from .headroom import Headroom
from .listener import ContinuationWatch, FollowUpDetector, Listener
from .priority import BACKGROUND_NICE, lower_other_threads, lower_this_thread
from .recorder import DebugRecorder
from .responder import HUB_OFFLINE_NOTE, Responder, says_wake_phrase
from .responder import current as current_responder
from .timer_bridge import TimerBridge
from .turn import Turn, TurnLog
from .vad import PreRoll, Segmenter
from .wake_tail import strip_wake_words, wake_phrase
from .wake_verify import WAKE_AUDIO_S, confirms_wake, needs_second_look

if TYPE_CHECKING:
    from .audio_io import Speaker
    from .mqtt import MqttLink
    from .mqtt_bridge import MqttBridge
    from .notify import SystemdNotifier
    from .ports import AudioSource, SpeechToText, TextToSpeech, VoiceActivity, WakeWordDetector

__all__ = ["HUB_OFFLINE_NOTE", "Engine", "State", "Turn", "TurnLog", "strip_wake_words", "wake_phrase"]

log = logging.getLogger(__name__)

FILE_TAIL_MAX_S = 60.0  # in file mode, how long to wait after the input ends for the last turn to finish
HISTORY_KEEP = 500  # turn records kept in memory (the turn log on disk has them all)
SELF_ECHO_TAIL_S = 0.6  # a detection this soon after a segment ended may still be its echo
CONTINUE_HOLD_S = 0.2  # voice after the endpoint holds the reply's first audio this long while it may be speech
GIVE_WAY_EVERY_CHUNKS = 4  # once the loop is given way to, threads started since are lowered within this many chunks
SHUTDOWN_S = 4.0  # ordered shutdown finishes within this (systemd's stop timeout is longer)
WARM_IDLE_POLL_S = 0.25  # the tts-warm thread waits for an idle engine in steps of this
WAKE_RING_S = WAKE_AUDIO_S + 0.5  # the recent audio kept for a second look (a chunk may end after the detection)


class Engine:
    """The whole loop. Components are built by ``build.build_engine`` (``Engine.from_settings``) and passed in, so
    tests can pass their own."""

    def __init__(self, settings: Settings, *, source: AudioSource, speaker: Speaker, wake: WakeWordDetector,
                 vad: VoiceActivity, segmenter_factory: Callable[[], Segmenter], stt: SpeechToText, brain: Any,
                 tts: TextToSpeech, mqtt: MqttLink | None = None, stop_wake: WakeWordDetector | None = None,
                 turn_log: TurnLog | None = None, exit_at_end: bool = False,
                 notifier: SystemdNotifier | None = None) -> None:
        self.s = settings
        self.source, self.speaker, self.wake, self.vad = source, speaker, wake, vad
        self.segmenter_factory = segmenter_factory
        self.stt, self.brain, self.tts, self.mqtt, self.stop_wake = stt, brain, tts, mqtt, stop_wake
        self.turn_log = turn_log or TurnLog(None)
        self.exit_at_end = exit_at_end
        self.notifier = notifier
        self.turn_count = 0
        self.controller = TurnController(follow_up_s=settings.conversation.follow_up_s, new_id=self._new_id)
        self.events: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()  # the control lane into the loop
        self.stop_event = threading.Event()
        self.debug_hang = threading.Event()  # EDGE_AGENT_DEBUG_HANG=1 + SIGUSR1: the loop hangs (watchdog test)
        self.last_progress = time.monotonic()
        self.history: list[dict[str, Any]] = []  # the last HISTORY_KEEP turn records (tests, benchmarks)
        self.wake_phrases = [wake_phrase(m.model) for m in settings.wake.models]
        self.listener: Listener | None = None
        self.listener_turn: str | None = None
        self.watch: ContinuationWatch | None = None  # after the endpoint: does the user go on? (loop thread)
        self.follow_up = FollowUpDetector(vad, segmenter_factory, settings.vad.threshold)
        self.responders: dict[str, Responder] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._warm_thread: threading.Thread | None = None  # tts-warm (``_warm_replies``)
        self.loop_cpu_s = 0.0  # the loop thread's CPU (wake word, VAD, listener) since the last finished turn
        self.loop_audio_s = 0.0  # seconds of audio it processed in that time
        self.headroom = Headroom(settings.vad.trailing_silence_s)  # what this machine affords (headroom.py)
        if brain is not None and hasattr(brain, "headroom"):
            brain.headroom = self.headroom  # its idle prefill asks it (llm.idle_prefill: auto)
        self._sweeps = 0  # chunks since the other threads started giving way to the loop (_give_way)
        self.loop_lag_max_s = 0.0  # the loop's largest backlog (now - a chunk's end when it was taken) in that time
        self.preroll = PreRoll(settings.vad.pre_roll_s)
        # the last seconds heard, for the second look at a doubtful wake detection (only if a model has a band)
        specs = getattr(wake, "specs", None) or {}  # (a detector without specs has no bands)
        self.wake_audio = (PreRoll(WAKE_RING_S) if any(sp.second_look_band > 0 for sp in specs.values()) else None)
        self.recorder = (DebugRecorder(settings.path(str(settings.log.debug_audio_dir)))
                         if settings.log.debug_audio_dir else None)  # what the wake word and STT heard, as WAVs
        self.state_listeners: list[Callable[[State, State], None]] = [self._log_state]
        self.turn_listeners: list[Callable[[Turn, dict[str, Any]], None]] = [self._record_turn]
        self.bridge: MqttBridge | None = None
        if mqtt is not None:
            from .mqtt_bridge import MqttBridge

            self.bridge = MqttBridge(self, mqtt)
            self.bridge.attach()
        self.timers = getattr(brain, "timers", None)  # the brain's TimerManager (None: a brain without timers)
        if brain is not None:
            brain.on_intent = self._on_intent
            brain.may_act = self._may_act
        self._looking: dict[str, threading.Event] = {}  # turn id -> its wake_settled, while its second look is out
        self.timer_bridge = TimerBridge(self)
        if self.timers is not None:
            self.timers.on_finished = self.timer_bridge.on_finished
        # file mode's extras (the input's end and length) come from the FileSource; a microphone has neither
        self.file_source: FileSource | None = source if isinstance(source, FileSource) else None

    # ------------------------------------------------------------------ read-only views of the controller
    @property
    def state(self) -> State:
        return self.controller.state

    @property
    def state_since(self) -> float:
        return self.controller.state_since

    @property
    def turn(self) -> Turn | None:
        return self.controller.turn

    @property
    def muted(self) -> bool:
        return self.controller.muted

    def _new_id(self) -> str:
        self.turn_count += 1
        return f"{self.s.site.site_id}-{int(time.time())}-{self.turn_count}"

    # ------------------------------------------------------------------ posting events (any thread)
    def post(self, event: ev.Event) -> None:
        self.events.put(event)

    def announce(self, text: str, *, preannounce: bool = False) -> None:
        self.post(ev.Announce(time.monotonic(), text, preannounce))

    def set_mute(self, muted: bool) -> None:
        log.info("muted: %s", bool(muted))
        self.post(ev.Mute(time.monotonic(), bool(muted)))

    def set_sensitivity(self, value: float) -> None:
        # 0..1 sensitivity maps to threshold 1 - value on every wake model (a detector setting, not turn state)
        self.wake.threshold_override = max(0.05, min(0.95, 1.0 - float(value)))

    def announce_command(self, text: str) -> None:
        """Run a command ("turn off the light") as if it had been said now, as a turn of its own."""
        self.post(ev.RunCommand(time.monotonic(), text))

    def _may_act(self, call: Any) -> bool:
        """Before an intent is executed (on the responder's thread): not before the turn's wake word is settled,
        and not in a turn that was cancelled meanwhile (a dropped wake word's turn acts on nothing)."""
        responder = current_responder()
        return responder.may_act(call) if responder is not None else True

    def _on_intent(self, call: Any, result: Any) -> None:
        """An intent was executed (on the responder's thread): published at once, recorded in that turn's record."""
        responder = current_responder()
        turn_id = responder.turn_id if responder is not None else None
        offline = self.bridge.publish_intent(call, result, turn_id) if self.bridge is not None else False
        if responder is not None:
            responder.hub_offline = responder.hub_offline or offline
            self.post(ev.IntentExecuted(time.monotonic(), responder.turn_id, call.to_json(), hub_offline=offline))

    # ------------------------------------------------------------------ subscribers
    def _log_state(self, state: State, previous: State) -> None:
        log.info("state: %s -> %s", previous.value, state.value)

    def _record_turn(self, turn: Turn, record: dict[str, Any]) -> None:
        # a "continued" turn's words are in the turn that continued it: the history holds the request once
        dropped = ("no_speech", "deferred", "continued", "wake_rejected")
        if turn.outcome not in dropped and self.brain is not None and turn.transcript:
            try:
                self.brain.commit_turn(turn.transcript, turn.reply_spoken, turn.interrupted)
            except Exception as e:  # noqa: BLE001
                log.warning("history update failed: %s", e)
        self.history.append(record)
        if len(self.history) > HISTORY_KEEP:
            del self.history[: len(self.history) - HISTORY_KEEP]
        self.turn_log.write(record)
        if self.recorder is not None:
            self.recorder.turn_finished(turn.turn_id)

    # ------------------------------------------------------------------ the controller and its actions
    def dispatch(self, event: ev.Event) -> None:
        """Loop thread only: one event through the controller, then its actions."""
        if isinstance(event, ev.Transcribed) and event.compute_s:
            self.headroom.observe_decode(event.compute_s)  # the decode's wall time: can this machine speculate?
        for action in self.controller.handle(event):
            try:
                self._execute(action)
            except EdgeAgentError as e:
                log.error("error[%s] carrying out %s: %s", e.code, type(action).__name__, e.message)
            except Exception:  # noqa: BLE001 - one failed action must not stop the others or the loop
                log.exception("carrying out %s failed", type(action).__name__)
        if isinstance(event, ev.WakeChecked):
            settled = self._looking.pop(event.turn_id, None)
            if settled is not None:  # after the controller's verdict (a rejected turn's cancel is set by now)
                settled.set()

    def _drain_events(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.dispatch(event)

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

    # ------------------------------------------------------------------ main loop
    def _start_services(self) -> None:
        if self.timers is not None:
            self.timers.start_thread()
        if self.bridge is not None:
            self.bridge.subscribe_entity_states()
        if self.s.tts.warm_replies:
            self._warm_thread = threading.Thread(target=self._warm_replies, name="tts-warm", daemon=True)
            self._warm_thread.start()

    def _warm_replies(self) -> None:
        """The ``tts-warm`` thread: the home's likely fast-path replies synthesized into the phrase cache, one at a
        time and only while no turn runs and the audio loop keeps up (it peeks at the state and ``headroom``, never
        writes them), so the first command on each device replays its reply instead of synthesizing it on the
        critical path. It runs at nice ``BACKGROUND_NICE`` (priority.py): on a board where each synthesis takes a
        second or more, the loop, a turn's decode, the LLM and the reply's own synthesis go first. Stops at
        shutdown."""
        lower_this_thread(BACKGROUND_NICE)  # not fatal where refused: it still waits for idle turns
        texts = self.brain.handler.likely_replies()[: self.s.tts.warm_replies]
        done, t0 = 0, time.monotonic()
        for text in texts:
            while not self.stop_event.is_set() and (self.state != State.IDLE or self.controller.responding
                                                     or self.speaker.busy or self.headroom.lagging):
                self.stop_event.wait(WARM_IDLE_POLL_S)
            if self.stop_event.is_set():
                log.info("tts: warm-up stopped at shutdown after %d of %d likely replies", done, len(texts))
                return
            try:
                self.tts.prewarm([text])
                done += 1
            except EdgeAgentError as e:  # a voice that cannot say it: the turn will say so, not this thread
                log.warning("tts warm-up of %r failed: %s", text, e.message)
        if texts:
            log.info("tts: %d of %d likely replies warmed in %.1f s", done, len(texts), time.monotonic() - t0)

    def run(self) -> int:
        self._start_services()
        self.source.open()
        if self.speaker.file is not None and self.file_source is not None:
            self.speaker.file_t0 = self.file_source.t0  # output WAV and input WAV share one timeline
        if self.bridge is not None:
            # the retained state is this run's from the start, not what the last run left (or had queued)
            self.bridge.publish_state(self.state, self.state)
        tail_start: float | None = None
        if self.notifier is not None:
            self.notifier.ready(f"listening ({self.state.value})")
        while not self.stop_event.is_set():
            chunk = self.source.read(timeout=0.5)
            self.last_progress = time.monotonic()
            while self.debug_hang.is_set():  # a deliberately hung loop: the watchdog must notice (see cli_run)
                time.sleep(1.0)
            if self.notifier is not None:
                self.notifier.progress(f"{self.state.value}; turns {self.turn_count}")
            self._drain_events()
            if chunk is None:
                if not self.source.alive:
                    self._recover_source()
            else:
                lag = time.monotonic() - chunk.t_end  # the loop's backlog: > 0 when it is behind the microphone
                self.headroom.observe_lag(lag)
                if self.headroom.yield_to_loop:
                    self._give_way()
                self.loop_lag_max_s = max(self.loop_lag_max_s, lag)
                c0 = time.thread_time()
                try:
                    self._process(chunk)
                except EdgeAgentError as e:
                    log.error("error[%s]: %s", e.code, e.message)
                except Exception:  # noqa: BLE001 - the loop must survive anything a stage throws
                    log.exception("unexpected error in the loop; continuing")
                self.loop_cpu_s += time.thread_time() - c0  # ONNX wake/VAD run single-threaded on this thread
                self.loop_audio_s += len(chunk.samples) / SAMPLE_RATE
            self._drain_events()
            self.dispatch(ev.Tick(time.monotonic()))
            if self.exit_at_end and self.file_source is not None and self.file_source.exhausted:
                if tail_start is None:
                    tail_start = time.monotonic()
                quiet = self.state == State.IDLE and not self.controller.responding and not self.speaker.busy \
                    and not self.controller.pending
                if quiet or time.monotonic() - tail_start > FILE_TAIL_MAX_S:
                    break
        self.shutdown()
        return 0

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
            text, accepted = "", True
            try:
                if audio is not None and len(audio):
                    text = self.stt.unprimed().transcribe(audio).text  # the wake phrase, not the home's names
                    accepted = confirms_wake(text, phrase)
            except Exception as e:  # noqa: BLE001 - the check must never take a turn down with it
                log.warning("second look at wake word %s failed (%s); accepting it", det.model, e)
            self.post(ev.WakeChecked(time.monotonic(), turn_id, accepted, text, det.model, det.score, det.cutoff,
                                     det.band, compute_s=time.monotonic() - t0))

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

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, timeout: float = SHUTDOWN_S) -> None:
        """Ordered: stop input, cancel the turn, stop output, flush MQTT, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()  # the loop has ended (a file's end or a signal): background work stops too
        if self.notifier is not None:
            self.notifier.stopping()
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001
            log.warning("closing input: %s", e)
        if self.listener is not None:
            self.listener.close()
        if not self.exit_at_end:
            # logged as what it was: cut short by the shutdown, with what was actually played
            self.dispatch(ev.Shutdown(time.monotonic()))
        for turn_id, thread in list(self._threads.items()):
            thread.join(max(0.1, deadline - time.monotonic() - 1.0))
            if thread.is_alive():
                log.warning("turn %s still running at shutdown; not waited for", turn_id)
        if self._warm_thread is not None:  # inside a synthesis: never let the interpreter exit under ONNX Runtime
            self._warm_thread.join(max(0.1, deadline - time.monotonic() - 1.0))
        self._drain_events()  # the responders' last events: their turns are logged
        # file mode: the output WAV is written, at least as long as the input WAV
        self.speaker.close(min_s=self.file_source.duration if self.file_source is not None else None)
        if self.timers is not None:
            self.timers.stop()
        if self.mqtt is not None:
            try:
                self.mqtt.stop(timeout=max(0.5, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                log.warning("MQTT stop: %s", e)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Engine:
        from .build import build_engine

        return build_engine(cls, settings, **kw)
