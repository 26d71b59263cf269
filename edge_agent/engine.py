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
The per-chunk work is the data lane (``engine_audio.AudioLane``); the controller's actions are carried out by
``engine_actions.TurnActions``; both are bases of ``Engine``.
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

from . import turn_events as ev
from .audio import SAMPLE_RATE
from .audio_io import FileSource
from .config import Settings
from .controller import TurnController
from .engine_actions import TurnActions
from .engine_audio import AudioLane
from .errors import EdgeAgentError
from .headroom import Headroom
from .listener import ContinuationWatch, FollowUpDetector, Listener
from .priority import BACKGROUND_NICE, lower_this_thread
from .recorder import DebugRecorder
from .responder import HUB_OFFLINE_NOTE, Responder
from .responder import current as current_responder
from .timer_bridge import TimerBridge
from .turn import Turn, TurnLog
from .turn_events import State
from .vad import PreRoll, Segmenter
from .wake_tail import strip_wake_words, wake_phrase
from .wake_verify import WAKE_AUDIO_S

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
SHUTDOWN_S = 4.0  # ordered shutdown finishes within this (systemd's stop timeout is longer)
WARM_IDLE_POLL_S = 0.25  # the tts-warm thread waits for an idle engine in steps of this
CLOCK_WARM_POLL_S = 10.0  # how often the tts-warm thread looks whether the clock's replies moved on
WAKE_RING_S = WAKE_AUDIO_S + 0.5  # the recent audio kept for a second look (a chunk may end after the detection)


class Engine(AudioLane, TurnActions):
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
        self.replies_warm = threading.Event()  # set once tts-warm has the likely replies (then it keeps the clock's)
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
            if not self._wait_idle():
                log.info("tts: warm-up stopped at shutdown after %d of %d likely replies", done, len(texts))
                return
            try:
                self.tts.prewarm([text])
                done += 1
            except EdgeAgentError as e:  # a voice that cannot say it: the turn will say so, not this thread
                log.warning("tts warm-up of %r failed: %s", text, e.message)
        if texts:
            log.info("tts: %d of %d likely replies warmed in %.1f s", done, len(texts), time.monotonic() - t0)
        self.replies_warm.set()
        self._warm_clock()

    def _wait_idle(self) -> bool:
        """Block the ``tts-warm`` thread until no turn runs, nothing plays and the loop keeps up; False at shutdown."""
        while not self.stop_event.is_set() and (self.state != State.IDLE or self.controller.responding
                                                 or self.speaker.busy or self.headroom.lagging):
            self.stop_event.wait(WARM_IDLE_POLL_S)
        return not self.stop_event.is_set()

    def _warm_clock(self) -> None:
        """Then the ``tts-warm`` thread keeps the clock's replies warm until shutdown: the time for this minute and
        the next and today's date (``Handlers.clock_replies``), each synthesized while idle before anyone can ask,
        the ones gone stale (the last minute, yesterday) dropped from the cache. About one synthesis a minute (the
        thirteenth session's bench synthesized "It is 0:43." 0.36 s after the intent on the simulated Pi 5)."""
        phrases = getattr(self.tts, "phrases", None)
        if not (hasattr(phrases, "__contains__") and hasattr(phrases, "discard")):  # a voice that keeps no cache
            return
        before: list[str] = []  # the last poll's replies: those no longer wanted are stale
        failed: set[str] = set()  # a voice that cannot say it is not asked again every poll
        while not self.stop_event.is_set():
            wanted = self.brain.handler.clock_replies()
            for stale in set(before).difference(wanted):
                phrases.discard(stale)
            before = wanted
            for text in wanted:
                if text in phrases or text in failed:  # warm already (or said by a turn)
                    continue
                if not self._wait_idle():
                    return
                try:
                    self.tts.prewarm([text])
                except EdgeAgentError as e:
                    failed.add(text)
                    log.warning("tts warm-up of %r failed: %s", text, e.message)
            self.stop_event.wait(CLOCK_WARM_POLL_S)

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
