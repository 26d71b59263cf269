"""The voice loop: idle → listening → thinking → speaking → follow-up → idle, turn after turn.

Threads and queues (see docs/architecture.md):
- capture: PortAudio's callback copies blocks into ``MicSource.queue`` (bounded, drops oldest, counted); in file mode
  ``FileSource`` is read directly by the loop.
- loop (``Engine.run``): reads chunks, runs the wake word always (to start turns and to interrupt replies), and
  while listening the VAD, the endpointing state machine and the streaming STT feed. It never waits on the LLM/TTS.
- responder (one per turn): STT finish → brain (fast path or LLM, streaming text) → sentence splitter → ``synth``.
- synth: Piper turns each sentence into audio and queues it on the speaker.
- speaker: plays segments in 20 ms blocks; flushes within one block on interruption.
Control lane: ``Turn.cancel`` (an Event) stops generation and synthesis; ``Speaker.flush`` drops queued audio.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import memory
from .audio import SAMPLE_RATE, AudioChunk, write_wav
from .audio_io import FileSource, MicSource, Segment, Speaker
from .config import Settings
from .errors import AudioError, EdgeAgentError, ModelError
from .intent import IntentCall

log = logging.getLogger(__name__)

VAD_FRAME_S = 512 / SAMPLE_RATE  # Silero's frame: 32 ms
SPECULATE_AFTER_S = 0.12  # silence after speech before a speculative transcription of the audio so far starts
FILE_TAIL_MAX_S = 60.0  # in file mode, how long to wait after the input ends for the last turn to finish
MISSED_COMMAND_MAX_S = 120.0  # a timer's command that fell due longer ago (device off) is not run late
HISTORY_KEEP = 500  # turn records kept in memory (the turn log on disk has them all)
DEBUG_WAKE_S = 2.5  # seconds of audio saved per wake detection by the debug recorder


class State(enum.StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    FOLLOW_UP = "follow_up"


@dataclass
class Turn:
    """Everything one turn measured, said and did; written as one JSON line when it ends."""

    turn_id: str
    t_wake: float | None
    wake_model: str | None = None
    t_listen: float = 0.0
    t_speech_start: float | None = None
    t_speech_end: float | None = None
    t_endpoint: float | None = None
    t_transcript: float | None = None
    t_first_token: float | None = None
    t_intent: float | None = None
    t_first_audio: float | None = None
    t_playback_end: float | None = None
    transcript: str = ""
    reply_text: str = ""  # everything the brain produced
    segments: list[Segment] = field(default_factory=list)
    intents: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    outcome: str = "answered"  # answered | no_speech | empty | error | interrupted | shutdown
    error: str | None = None
    used_llm: bool = False
    hub_offline: bool = False  # an intent was queued while MQTT was down: the reply says it will be sent later
    stt_compute_s: float | None = None
    speculative: bool = False  # the transcript came from the transcription started at the first pause
    cancel: threading.Event = field(default_factory=threading.Event)
    audio: list[np.ndarray] = field(default_factory=list)  # what STT heard (debug recorder)

    def spoken_text(self) -> str:
        """Exactly what reached the speaker: whole sentences, and the played share of an interrupted one."""
        parts = []
        for seg in self.segments:
            if seg.played >= len(seg.audio):
                parts.append(seg.text)
            elif seg.played > 0:
                words = seg.text.split()
                n = int(round(len(words) * seg.fraction_played))
                if n:
                    parts.append(" ".join(words[:n]) + " —")
                break
            else:
                break
        return " ".join(p.strip() for p in parts if p.strip())

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "turn_id": self.turn_id,
            "transcript": self.transcript,
            "reply_spoken": self.spoken_text(),
            "reply_full": self.reply_text,
            "intents": self.intents,
            "interrupted": self.interrupted,
            "outcome": self.outcome,
            "error": self.error,
            "used_llm": self.used_llm,
            "wake_model": self.wake_model,
            "t_wake": r(self.t_wake),
            "t_speech_start": r(self.t_speech_start),
            "t_speech_end": r(self.t_speech_end),
            "t_endpoint": r(self.t_endpoint),
            "t_transcript": r(self.t_transcript),
            "t_first_token": r(self.t_first_token),
            "t_intent": r(self.t_intent),
            "t_first_audio": r(self.t_first_audio),
            "t_playback_end": r(self.t_playback_end),
            "stt_compute_s": r(self.stt_compute_s),
            "stt_speculative": self.speculative,
        }


class Speculation:
    """A transcription of the utterance so far, started at the first pause: if the user does not go on speaking,
    the endpoint finds the transcript ready instead of starting it (the trailing silence is spent on it)."""

    def __init__(self, stt: Any, audio: np.ndarray) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(stt, audio), name="stt-speculation", daemon=True)
        self.thread.start()

    def _run(self, stt: Any, audio: np.ndarray) -> None:
        try:
            self.result = stt.transcribe(audio)
        except BaseException as e:  # noqa: BLE001 - reported through .error; the normal path takes over
            self.error = e

    def wait(self) -> Any:
        self.thread.join()
        return self.result


class TurnLog:
    """One JSON line per turn, to a file and/or stdout. A full disk degrades to logging, never to a crash."""

    def __init__(self, path: str | Path | None, stdout: bool = False) -> None:
        self.path = Path(path) if path else None
        self.stdout = stdout
        self.failed = False
        if self.path:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                log.error("turn log %s unusable (%s); turns go to the log only", self.path, e)
                self.path = None

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False)
        if self.stdout:
            print(line, flush=True)
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                self.failed = False
            except OSError as e:
                if not self.failed:
                    log.error("cannot write the turn log %s (%s); continuing without it", self.path, e)
                self.failed = True
        log.info("turn %s", line)


HUB_OFFLINE_NOTE = "The hub is offline; I'll send that when it's back."
SELF_ECHO_TAIL_S = 0.6  # a detection this soon after a segment ended may still be its echo


def _mentions_wake(text: str, phrases: list[str]) -> bool:
    words = re.findall(r"[a-z']+", text.lower())
    for phrase in phrases:
        last = phrase.split()[-1] if phrase.split() else ""
        if last and last in words:
            return True
    return False


def wake_phrase(model_name: str) -> str:
    """'hey_jarvis_v0.1' -> 'hey jarvis': the words to strip from the start of a transcript."""
    base = Path(model_name).stem
    base = re.sub(r"_v\d+(\.\d+)*$", "", base)
    return base.replace("_", " ").strip().lower()


WAKE_TAIL_SIMILARITY = 0.4  # a short fragment set off by punctuation, this similar to the wake word, is its tail
WAKE_WORD_SIMILARITY = 0.75  # an unpunctuated leading word this similar to the wake word is the wake word misheard
WAKE_FILLERS = frozenset({"a", "ah", "eh", "hey", "hay", "hi", "oh", "ok", "okay", "uh", "um"})
WAKE_TAIL_MIN_VOICE_S = 0.1  # voice in the pre-roll before a pause that counts as the wake word's end
WAKE_TAIL_MIN_PAUSE_S = 0.15  # a pause this long ends the wake phrase; gaps inside "turn on" are shorter
WAKE_HOLD_MAX_S = 0.35  # after a detection inside the wake phrase, wait this long at most for its pause


def _similar(a: str, b: str) -> float:
    import difflib

    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def strip_wake_words(text: str, phrases: list[str], fuzzy: bool = True) -> str:
    """Remove a leading wake phrase (or its last word, e.g. 'Jarvis,') that the pre-roll let into the transcript.

    With ``fuzzy`` (a turn opened by the wake word) also a misheard rendering of it: a one- or two-word fragment
    set off by punctuation ('Vis. Turn on the light.', 'A Jarvis. What time is it?'), or an unpunctuated leading
    word very like the wake word ('A Jarvis Turn on the light'). A word that is not wake-like is never removed, so
    'Vis turn, on the light' keeps its verb."""
    t = text.strip()
    for phrase in sorted(phrases, key=len, reverse=True):
        words = phrase.split()
        for k in range(len(words)):
            pat = r"^\W*" + r"\W+".join(re.escape(w) for w in words[k:]) + r"\b[\s,.!?]*"
            new = re.sub(pat, "", t, flags=re.IGNORECASE)
            if new != t:
                return new.strip()
    if not fuzzy:
        return t
    lasts = [p.split()[-1] for p in phrases if p.split()]
    wake_words = [w for p in phrases for w in p.split() if w.lower() not in WAKE_FILLERS]
    tokens = list(re.finditer(r"[A-Za-z']+", t))
    for k in (2, 1):
        if len(tokens) < k + 2:  # the request left over must have at least two words
            continue
        head = [m.group(0) for m in tokens[:k]]
        sep = t[tokens[k - 1].end():tokens[k].start()]
        rest = t[tokens[k].start():].strip()
        if re.search(r"[,.!?]", sep):
            if k == 1:
                ok = any(_similar(head[0], w) >= WAKE_TAIL_SIMILARITY for w in lasts)
            else:
                ok = all(h.lower() in WAKE_FILLERS or any(_similar(h, w) >= WAKE_TAIL_SIMILARITY for w in wake_words)
                         for h in head) and any(h.lower() not in WAKE_FILLERS for h in head)
        else:
            ok = len(head[-1]) >= 4 and any(_similar(head[-1], w) >= WAKE_WORD_SIMILARITY for w in lasts) \
                and all(h.lower() in WAKE_FILLERS for h in head[:-1])
        if ok:
            return rest
    return t


def wake_tail_cut(voiced: list[bool], frame_s: float) -> int:
    """Where the request starts in a pre-roll that ends at the wake detection, in frames.

    The wake phrase is the first voice in it; the first pause of at least ``WAKE_TAIL_MIN_PAUSE_S`` after at least
    ``WAKE_TAIL_MIN_VOICE_S`` of it ends the phrase, and what follows the pause's start is the request's beginning
    (or nothing, when no voice follows). Shorter gaps are inside words or between them ('turn on'), so without such
    a pause the whole pre-roll is kept (0) and the transcript's leading wake phrase is stripped later: cutting
    there could drop the request's first word. No voice at all: nothing to keep."""
    n = len(voiced)
    if not any(voiced):
        return n
    need_pause = max(1, round(WAKE_TAIL_MIN_PAUSE_S / frame_s))
    need_voice = max(1, round(WAKE_TAIL_MIN_VOICE_S / frame_s))
    voice = gap = 0
    for i, v in enumerate(voiced):
        if v:
            voice += 1
            gap = 0
        elif voice:
            gap += 1
            if gap >= need_pause:
                if voice < need_voice:
                    return 0
                start = i - gap + 1
                return start if any(voiced[start:]) else n
    return 0


class WakeTailGate:
    """Holds the audio that follows a wake detection while the wake phrase may still be going on.

    The detector fires before the phrase has ended (often inside "...vis"). Fed to STT, that remnant comes back as
    "service." or "Nervous." and, now and then, swallows the request's first word ("on the kitchen light"). So when
    the pre-roll ends in voice, the audio is held, from STT and from the endpointer alike, until the first pause of
    ``WAKE_TAIL_MIN_PAUSE_S``: the held wake remnant is dropped and STT gets the pause and what follows. No such
    pause within ``WAKE_HOLD_MAX_S`` of the detection means a request run on in one breath: everything held is
    released, nothing lost (the transcript's wake phrase is stripped later). Pure: chunks and per-frame voiced flags
    in; audio for STT and the voiced flags for the endpointer out."""

    def __init__(self, preroll: np.ndarray, trailing_unvoiced: int, frame_s: float) -> None:
        self.held: list[np.ndarray] = [preroll]
        self.flags: list[list[bool]] = [[]]  # the endpointer never sees the pre-roll
        self.need_pause = max(1, round(WAKE_TAIL_MIN_PAUSE_S / frame_s))
        self.gap = trailing_unvoiced
        self.pause_chunk: int | None = 0 if trailing_unvoiced else None
        self.after_s = 0.0  # audio held since the detection

    def push(self, samples: np.ndarray, voiced: list[bool]) -> tuple[np.ndarray, list[bool]] | None:
        """Once decided (the gate is then done): the audio to feed STT and the voiced flags of the chunks released
        to the endpointer. None while still holding."""
        idx = len(self.held)
        self.held.append(samples)
        self.flags.append(list(voiced))
        self.after_s += len(samples) / SAMPLE_RATE
        for v in voiced:
            if v:
                self.gap, self.pause_chunk = 0, None
                continue
            if self.gap == 0:
                self.pause_chunk = idx
            self.gap += 1
            if self.gap >= self.need_pause:
                start = min((self.pause_chunk or 0) + 1, idx)  # the first chunk that lies inside the pause
                return np.concatenate(self.held[start:]), [f for fl in self.flags[start:] for f in fl]
        if self.after_s >= WAKE_HOLD_MAX_S:
            return self.flush(), [f for fl in self.flags for f in fl]
        return None

    def flush(self) -> np.ndarray:
        """Everything held (the turn ended, or no pause came)."""
        return np.concatenate(self.held)


# --------------------------------------------------------------------------------------------------- engine


class Engine:
    """The whole loop. Components are built by ``Engine.from_settings`` and passed in (tests can pass their own)."""

    def __init__(self, settings: Settings, *, source: Any, speaker: Speaker, wake: Any, vad: Any,
                 segmenter_factory: Any, stt: Any, brain: Any, tts: Any, mqtt: Any = None, stop_wake: Any = None,
                 turn_log: TurnLog | None = None, exit_at_end: bool = False) -> None:
        self.s = settings
        self.source, self.speaker, self.wake, self.vad = source, speaker, wake, vad
        self.segmenter_factory = segmenter_factory
        self.stt, self.brain, self.tts, self.mqtt, self.stop_wake = stt, brain, tts, mqtt, stop_wake
        self.turn_log = turn_log or TurnLog(None)
        self.exit_at_end = exit_at_end
        self.state = State.IDLE
        self.state_since = time.monotonic()
        self.turn: Turn | None = None
        self.turn_count = 0
        self.muted = False
        self.stop_event = threading.Event()
        self.last_progress = time.monotonic()
        self.responder: threading.Thread | None = None
        self.announcements: queue.Queue[str] = queue.Queue(maxsize=16)
        self.history: list[dict[str, Any]] = []  # the last HISTORY_KEEP turn records (tests, benchmarks)
        self.wake_phrases = [wake_phrase(m.model) for m in settings.wake.models]
        self._lock = threading.RLock()
        self._stt_stream: Any = None
        self._segmenter: Any = None
        self._follow_seg: Any = None  # detects speech start in the follow-up window
        self._speculation: Speculation | None = None
        self._wake_gate: WakeTailGate | None = None  # holds audio while the wake phrase may still be going on
        self._silence_s = 0.0  # unvoiced time since the last voiced frame of the current utterance
        from .vad import PreRoll

        self.preroll = PreRoll(settings.vad.pre_roll_s)
        # debug recorder (log.debug_audio_dir): the last seconds the wake word heard, saved at each detection
        self.wake_tape = PreRoll(DEBUG_WAKE_S) if settings.log.debug_audio_dir else None
        speaker.on_first_audio = self._on_first_audio
        if mqtt is not None:
            mqtt.on_say = self.announce
            mqtt.on_mute = self._set_mute
            mqtt.on_timer = self._on_timer_command
            if hasattr(mqtt, "on_sensitivity"):
                mqtt.on_sensitivity = self._set_sensitivity
        if brain is not None:
            brain.on_intent = self._on_intent
            timers = getattr(brain, "timers", None)
            if timers is not None and hasattr(timers, "on_finished"):
                timers.on_finished = self._on_timer_finished

    # ------------------------------------------------------------------ state
    def set_state(self, state: State) -> None:
        if state == self.state:
            return
        log.info("state: %s -> %s", self.state.value, state.value)
        self.state = state
        self.state_since = time.monotonic()
        if self.mqtt is not None:
            try:
                self.mqtt.publish_state(state.value)
            except Exception as e:  # noqa: BLE001
                log.warning("state publish failed: %s", e)

    def _set_mute(self, muted: bool) -> None:
        self.muted = bool(muted)
        log.info("muted: %s", self.muted)

    def _set_sensitivity(self, value: float) -> None:
        # 0..1 sensitivity maps to threshold 1 - value on every wake model
        self.wake.threshold_override = max(0.05, min(0.95, 1.0 - float(value)))

    def announce(self, text: str) -> None:
        try:
            self.announcements.put_nowait(text)
        except queue.Full:
            log.warning("announcement dropped (queue full): %s", text)

    def _on_timer_finished(self, timer: Any) -> None:
        """A timer rang: a cue, then it says which one (or runs its delayed command)."""
        command = getattr(timer, "command", None)
        missed = getattr(timer, "missed_s", 0.0)
        if command and missed > MISSED_COMMAND_MAX_S:
            # a delayed command that fell due while the device was off is not run late ("turn off the oven")
            from .timers import duration_words

            log.warning("timer command %r fell due %.0f s ago while the device was off; not run", command, missed)
            self._play_cue("done")
            self.announce(f"While I was off, it was time to {command.rstrip('.!?')}, "
                          f"{duration_words(missed, adjective=False)} ago. I did not do it; please ask again.")
            return
        if command and self.brain is not None:
            self.announce_command(command)
            return
        text = timer.finished_text() if hasattr(timer, "finished_text") else "Your timer is done."
        self._play_cue("done")
        self.announce(text)

    def announce_command(self, text: str) -> None:
        """Run a delayed command ("in 5 minutes, turn off the light") as if it had been said now."""
        def run() -> None:
            try:
                response = self.brain.respond(text, area=self.s.site.area or None)
                self.announce("".join(response).strip() or "Done.")
            except Exception as e:  # noqa: BLE001
                log.error("timer command %r failed: %s", text, e)
        threading.Thread(target=run, name="timer-command", daemon=True).start()

    def _on_timer_command(self, cmd: dict[str, Any]) -> None:
        """Inbound MQTT timer/set (already validated by the link)."""
        timers = getattr(self.brain, "timers", None)
        if timers is None:
            return
        action, sel = cmd["action"], {k: cmd[k] for k in ("name",) if k in cmd}
        try:
            if action == "start":
                t = timers.start(seconds=cmd["seconds"], name=cmd.get("name"), area=self.s.site.area or None)
                log.info("timer %s started over MQTT (%.0f s)", t.id, cmd["seconds"])
            elif action == "cancel":
                timers.cancel(**sel) if sel else timers.cancel_all()
            elif action == "pause":
                timers.pause(**sel)
            elif action == "resume":
                timers.unpause(**sel)
            elif action == "add":
                timers.increase(cmd["seconds"], **sel)
            elif action == "remove":
                timers.decrease(cmd["seconds"], **sel)
            elif action == "status":
                self.announce(self.brain.handler.handle(IntentCall("HassTimerStatus"), self.s.site.area or None).speech)
        except EdgeAgentError as e:
            log.warning("MQTT timer %s: %s", action, e.message)

    def _on_intent(self, call: Any, result: Any) -> None:
        turn = self.turn
        if turn is not None:
            turn.t_intent = time.monotonic()
            turn.intents.append(call.to_json())
        if self.mqtt is not None:
            try:
                self.mqtt.publish_intent(call, turn_id=turn.turn_id if turn else None, text=call.text,
                                         commands=getattr(result, "commands", []) if result else [],
                                         dry_run=self.s.mqtt.dry_run)
            except Exception as e:  # noqa: BLE001 - the outbox keeps it; a publish error never ends a turn
                log.error("intent publish failed: %s", e)
            # Tell the truth when something for the home waits in the outbox; a local answer (time, timers) is not
            # delayed by the broker and needs no such note.
            commands = getattr(result, "commands", []) if result else []
            if turn is not None and commands and not getattr(self.mqtt, "connected", True) \
                    and not self.s.mqtt.dry_run:
                turn.hub_offline = True

    def _on_first_audio(self, t: float) -> None:
        turn = self.turn
        if turn is not None and turn.t_first_audio is None:
            turn.t_first_audio = t

    # ------------------------------------------------------------------ main loop
    def _start_services(self) -> None:
        timers = getattr(self.brain, "timers", None)
        if timers is not None and hasattr(timers, "start_thread"):
            timers.start_thread()
        if self.mqtt is not None and self.brain is not None:
            handler = getattr(self.brain, "handler", None)
            for entity in getattr(getattr(self.brain, "home", None), "entities", {}).values():
                if entity.state_topic and handler is not None:
                    self.mqtt.subscribe(entity.state_topic,
                                        lambda _t, text, eid=entity.id: handler.set_state(eid, text.strip()))

    def run(self) -> int:
        self._start_services()
        self.source.open()
        if self.speaker.file is not None and getattr(self.source, "t0", None) is not None:
            self.speaker.file_t0 = self.source.t0  # output WAV and input WAV share one timeline
        self.set_state(State.IDLE)
        tail_start: float | None = None
        notify = _SystemdNotifier()
        notify.ready(f"listening ({self.state.value})")
        while not self.stop_event.is_set():
            chunk = self.source.read(timeout=0.5)
            self.last_progress = time.monotonic()
            notify.progress(f"{self.state.value}; turns {self.turn_count}")
            if chunk is None:
                if not getattr(self.source, "alive", True):
                    self._recover_source()
                continue
            try:
                self._process(chunk)
            except EdgeAgentError as e:
                log.error("error[%s]: %s", e.code, e.message)
            except Exception:  # noqa: BLE001 - the loop must survive anything a stage throws
                log.exception("unexpected error in the loop; continuing")
            if not self.announcements.empty() and self.state in (State.IDLE, State.FOLLOW_UP):
                self._start_announcement(self.announcements.get_nowait())
            if self.exit_at_end and getattr(self.source, "exhausted", False):
                if tail_start is None:
                    tail_start = time.monotonic()
                quiet = self.state == State.IDLE and not self._responding() and not self.speaker.busy
                if quiet or time.monotonic() - tail_start > FILE_TAIL_MAX_S:
                    break
        self.shutdown()
        return 0

    def _responding(self) -> bool:
        return self.responder is not None and self.responder.is_alive()

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
        if self.wake_tape is not None:
            self.wake_tape.push(chunk)
        speaking = self.state in (State.THINKING, State.SPEAKING) or self.speaker.busy
        t_audio = self.speaker.t_any_audio
        echo_tail = t_audio is not None and time.monotonic() - t_audio < SELF_ECHO_TAIL_S
        # Half-duplex guard: without echo cancellation the assistant hears itself, so the wake threshold is raised.
        self.wake.threshold_boost = (self.s.wake.self_trigger_guard
                                     if (speaking or echo_tail) and not self.s.audio.echo_cancel else 0.0)
        detections = [] if self.muted else self.wake.process(chunk.samples, chunk.t_end)
        if detections and (speaking or echo_tail) and not self.s.audio.echo_cancel \
                and self._hearing_own_wake_phrase():
            log.info("ignoring wake word %s (%.2f): the reply being played says it", detections[0].model,
                     detections[0].score)
            detections = []
        stops = self.stop_wake.process(chunk.samples, chunk.t_end) if (self.stop_wake and speaking) else []
        if stops and speaking:
            log.info("stop word %s (%.2f): interrupting", stops[0].model, stops[0].score)
            self._interrupt()
            self.set_state(State.IDLE)
            return
        if detections:
            det = max(detections, key=lambda d: d.score)
            log.info("wake word %s score %.3f at %.2f", det.model, det.score, det.t)
            if speaking:
                self._interrupt()
            # A follow-up turn opened by speech alone that then turns out to be the wake word starts over from
            # the detection; otherwise the pause after "hey jarvis" would end it with nothing but the wake word.
            follow_up_turn = self.state == State.LISTENING and self.turn is not None and self.turn.t_wake is None
            if self.state != State.LISTENING or follow_up_turn:
                self._start_listening(det.t, det.model, include_preroll=True)
                self._record_wake(det)
                self._arbitrate(det)
                return
        if self.state == State.LISTENING:
            self._listen(chunk)
        elif self.state == State.FOLLOW_UP:
            if time.monotonic() - self.state_since > self.s.conversation.follow_up_s:
                self.set_state(State.IDLE)
            else:
                self._listen(chunk)
        elif speaking and self.s.audio.echo_cancel and self.vad is not None:
            # With an echo-cancelled source any speech may interrupt.
            probs = self.vad.process(chunk.samples)
            if probs and max(probs) > max(0.8, self.s.vad.threshold):
                log.info("speech during reply (echo-cancelled source): interrupting")
                self._interrupt()
                self._start_listening(None, None, include_preroll=True, after_wake=False)

    def _record_wake(self, det: Any) -> None:
        if self.wake_tape is None or self.turn is None:
            return
        audio = self.wake_tape.drain()
        name = f"{self.turn.turn_id}-wake-{det.model}-{det.score:.2f}.wav"
        path = self.s.path(str(self.s.log.debug_audio_dir)) / name
        try:
            write_wav(path, audio)
        except OSError as e:
            log.warning("debug recorder: %s", e)

    def _arbitrate(self, det: Any) -> None:
        """Several rooms, one broker: listening starts at once (nothing is lost); if another device heard the wake
        word better within the arbitration window, this turn is dropped silently."""
        if self.mqtt is None:
            return
        turn = self.turn
        try:
            self.mqtt.publish_hotword(det.model, det.score)
        except Exception as e:  # noqa: BLE001
            log.debug("hotword publish: %s", e)
        arbiter = getattr(self.mqtt, "arbiter", None)
        if arbiter is None:
            return

        def decide() -> None:
            if not arbiter.claim(det.score) and self.turn is turn and self.state == State.LISTENING:
                log.info("another device heard the wake word better: not answering")
                with self._lock:
                    if turn is not None:
                        turn.cancel.set()
                        turn.outcome = "deferred"
                    self._stt_stream = None
                    self._segmenter = None
                    self.set_state(State.IDLE)

        threading.Thread(target=decide, name="arbitration", daemon=True).start()

    def _hearing_own_wake_phrase(self) -> bool:
        """Half-duplex guard: without echo cancellation the microphone hears the reply, so a wake word inside the
        text being played (or played within the echo tail) is the assistant's own voice, not the user's."""
        turn = self.turn
        if turn is None:
            return False
        now = time.monotonic()
        for seg in turn.segments:
            recent = seg.played > 0 and (not seg.done.is_set() or now - (seg.t_done or now) < SELF_ECHO_TAIL_S)
            if recent and _mentions_wake(seg.text, self.wake_phrases):
                return True
        return False

    def _new_turn(self, t_wake: float | None, model: str | None) -> Turn:
        self.turn_count += 1
        turn = Turn(turn_id=f"{self.s.site.site_id}-{int(time.time())}-{self.turn_count}", t_wake=t_wake,
                    wake_model=model)
        self.turn = turn
        return turn

    def _start_listening(self, t_wake: float | None, model: str | None, include_preroll: bool,
                         after_wake: bool = True) -> None:
        """Open a turn. The pre-roll (speech that began before the wake word was recognized) goes to STT so it is
        not lost; after a wake word the endpointer starts at the detection, or at the wake phrase's end when the
        detection fired inside it (``WakeTailGate``), because the wake word's tail must not count as the request (a
        pause after "hey jarvis" is normal)."""
        turn = self._new_turn(t_wake, model)
        turn.t_listen = time.monotonic()
        self._segmenter = self.segmenter_factory()
        self.vad.reset()
        self._stt_stream = self.stt.open_stream()
        self._speculation = None
        self._silence_s = 0.0
        self.set_state(State.LISTENING)
        t_pre = self.preroll.t_start
        audio = self.preroll.drain() if include_preroll else np.zeros(0, dtype=np.int16)
        self.preroll.clear()
        self._wake_gate = None
        if after_wake or not len(audio):
            audio = self._trim_wake_tail(audio) if after_wake else audio
            if len(audio) and self._wake_gate is None:
                self._feed_stt(turn, audio)
        else:
            self._listen(AudioChunk(audio, t_pre if t_pre is not None else time.monotonic()))

    def _trim_wake_tail(self, audio: np.ndarray) -> np.ndarray:
        """The pre-roll ends with the wake word: keep what follows its pause (see ``wake_tail_cut``). When it ends
        in voice with no pause, the wake phrase may still be going on: hold it (``WakeTailGate``)."""
        if not len(audio):
            return audio
        probs = self.vad.process(audio)  # no reset after: the VAD goes on warm into the live audio that follows
        frame = int(VAD_FRAME_S * SAMPLE_RATE)
        voiced = [p >= self.s.vad.threshold for p in probs]
        cut = wake_tail_cut(voiced, VAD_FRAME_S)
        if cut == 0 and any(voiced):
            trailing = len(voiced) - 1 - max(i for i, v in enumerate(voiced) if v)
            self._wake_gate = WakeTailGate(audio, trailing, VAD_FRAME_S)
            return audio
        return audio[cut * frame:] if cut < len(probs) else audio[:0]

    def _feed_stt(self, turn: Turn, audio: np.ndarray) -> None:
        if self._stt_stream is None or not len(audio):
            return
        partial = self._stt_stream.feed(audio)
        if partial:
            log.debug("partial: %s", partial)
        if self.s.log.debug_audio_dir:
            turn.audio.append(audio.copy())

    def _listen(self, chunk: AudioChunk) -> None:
        """VAD + endpointing + streaming STT for one chunk while listening (or in the follow-up window)."""
        from .vad import SegmentEvent

        turn = self.turn
        if self.state == State.FOLLOW_UP:
            # no wake word: only real speech (min_speech_s voiced, across chunks) opens a turn
            if self._follow_seg is None:
                self._follow_seg = self.segmenter_factory()
            for p in self.vad.process(chunk.samples):
                if any(ev.kind == SegmentEvent.SPEECH_START
                       for ev in self._follow_seg.feed(VAD_FRAME_S, p >= self.s.vad.threshold)):
                    self._follow_seg = None
                    self.vad.reset()
                    self._start_listening(None, None, include_preroll=True, after_wake=False)
                    return
            return
        assert turn is not None and self._segmenter is not None
        flags = [p >= self.s.vad.threshold for p in self.vad.process(chunk.samples)]
        if self._wake_gate is not None:
            released = self._wake_gate.push(chunk.samples, flags)
            if released is None:
                return  # the wake phrase may still be going on: neither STT nor the endpointer hear it yet
            audio, flags = released
            self._wake_gate = None
            self._feed_stt(turn, audio)
        else:
            self._feed_stt(turn, chunk.samples)
        for voiced in flags:
            if voiced:
                self._silence_s = 0.0
                self._speculation = None  # the user went on: what was transcribed is stale
            elif self._segmenter.in_speech:
                self._silence_s += VAD_FRAME_S
                if self._silence_s >= SPECULATE_AFTER_S and self._speculation is None \
                        and self._stt_stream is not None:
                    audio = self._stt_stream.snapshot()
                    if audio is not None and len(audio):
                        self._speculation = Speculation(self.stt, audio)
            for ev in self._segmenter.feed(VAD_FRAME_S, voiced):
                kind = ev.kind
                # Event time on the chunk clock: how far back from this chunk's end the event lies in audio time.
                # (Live and --realtime: equal to start + offset; unpaced file mode: still ordered with the rest.)
                t_ev = chunk.t_end - max(0.0, self._segmenter.t - ev.t)
                if kind == SegmentEvent.SPEECH_START:
                    turn.t_speech_start = t_ev
                elif kind in (SegmentEvent.ENDPOINT, SegmentEvent.MAX_LENGTH):
                    turn.t_speech_end = t_ev
                    turn.t_endpoint = time.monotonic()
                    self._end_listening(turn)
                    return
                elif kind == SegmentEvent.TIMEOUT:
                    turn.outcome = "no_speech"
                    self._stt_stream = None
                    self.set_state(State.IDLE)
                    self._play_cue("timeout")
                    self._finish_turn(turn)
                    return

    def _end_listening(self, turn: Turn) -> None:
        if self._wake_gate is not None:  # the turn ended while the wake phrase's end was awaited: nothing is lost
            self._feed_stt(turn, self._wake_gate.flush())
            self._wake_gate = None
        stream, self._stt_stream = self._stt_stream, None
        speculation, self._speculation = self._speculation, None
        self.set_state(State.THINKING)
        self.responder = threading.Thread(target=self._respond, args=(turn, stream, speculation), name="responder",
                                          daemon=True)
        self.responder.start()

    # ------------------------------------------------------------------ responder
    def _respond(self, turn: Turn, stream: Any, speculation: Speculation | None = None) -> None:
        try:
            result = speculation.wait() if speculation is not None else None
            turn.speculative = result is not None
            if result is None:
                result = stream.finish()
            turn.t_transcript = time.monotonic()
            turn.stt_compute_s = getattr(result, "compute_s", None)
            # only a turn opened by the wake word can start with its misheard tail
            turn.transcript = strip_wake_words(result.text, self.wake_phrases, fuzzy=turn.t_wake is not None)
            if turn.transcript != result.text.strip():
                log.info("transcript: %r (heard %r)", turn.transcript, result.text)
            else:
                log.info("transcript: %r", turn.transcript)
            if self.mqtt is not None and turn.transcript:
                try:
                    self.mqtt.publish_transcript(turn.transcript)
                except Exception as e:  # noqa: BLE001
                    log.warning("transcript publish failed: %s", e)
            if not turn.transcript:
                turn.outcome = "empty"
                self._speak_fixed(turn, "Sorry, I didn't catch that.")
            else:
                self._answer(turn)
        except EdgeAgentError as e:
            log.error("turn %s failed: error[%s] %s", turn.turn_id, e.code, e.message)
            turn.outcome, turn.error = "error", f"{e.code}: {e.message}"
            if not turn.cancel.is_set():
                self._speak_fixed(turn, "Sorry, something went wrong. Please try again.")
        except Exception as e:  # noqa: BLE001
            log.exception("turn %s failed", turn.turn_id)
            turn.outcome, turn.error = "error", repr(e)
            if not turn.cancel.is_set():
                self._speak_fixed(turn, "Sorry, something went wrong. Please try again.")
        finally:
            self._wait_playback(turn)
            self._finish_turn(turn)

    def _answer(self, turn: Turn) -> None:
        from .text import SentenceBuffer

        response = self.brain.respond(turn.transcript, area=self.s.site.area or None, cancel=turn.cancel)
        sentences = SentenceBuffer(first_clause_words=self.s.tts.first_clause_words)
        synth_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()  # (sentence, worth caching)
        synth = threading.Thread(target=self._synth_worker, args=(turn, synth_q), name="synth", daemon=True)
        synth.start()
        try:
            for fragment in response:
                if turn.cancel.is_set():
                    break
                if turn.t_first_token is None and getattr(response, "t_first_token", None):
                    turn.t_first_token = response.t_first_token
                turn.reply_text += fragment
                # Fast-path replies repeat ("Turned on the kitchen light."): cached. An LLM's sentences rarely do:
                # caching them would only fill memory with one-off audio.
                cacheable = not getattr(response, "used_llm", False)
                for sentence in sentences.push(fragment):
                    synth_q.put((sentence, cacheable))
            if not turn.cancel.is_set():
                cacheable = not getattr(response, "used_llm", False)
                for sentence in sentences.flush():
                    synth_q.put((sentence, cacheable))
                if turn.hub_offline:  # tell the truth: the command waits in the outbox
                    turn.reply_text += " " + HUB_OFFLINE_NOTE
                    synth_q.put((HUB_OFFLINE_NOTE, True))
        finally:
            synth_q.put(None)
            turn.used_llm = bool(getattr(response, "used_llm", False))
            turn.t_first_token = getattr(response, "t_first_token", None) or turn.t_first_token
            if isinstance(getattr(response, "error", None), str) and turn.outcome == "answered":
                turn.outcome, turn.error = "error", response.error  # e.g. the LLM timed out (apology spoken)
            synth.join()

    def _synth_worker(self, turn: Turn, q: queue.Queue[tuple[str, bool] | None]) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            if turn.cancel.is_set():
                continue
            sentence, cacheable = item
            try:
                # Repeated replies come from the bounded phrase cache, synthesized once.
                use_cache = cacheable and hasattr(self.tts, "cached")
                audio = self.tts.cached(sentence) if use_cache else self.tts.synthesize_all(sentence)
            except Exception as e:  # noqa: BLE001
                log.error("TTS failed for %r: %s", sentence, e)
                continue
            self._play(turn, audio, sentence)

    def _play(self, turn: Turn, audio: np.ndarray, text: str) -> None:
        if turn.cancel.is_set() or self.turn is not turn:
            return
        seg = Segment(audio=audio, rate=self.tts.sample_rate, text=text)
        turn.segments.append(seg)
        if self.state == State.THINKING:
            self.set_state(State.SPEAKING)
        self.speaker.play(seg)

    def _speak_fixed(self, turn: Turn, text: str) -> None:
        audio = self.tts.cached(text) if hasattr(self.tts, "cached") else self.tts.synthesize_all(text)
        turn.reply_text = text
        self._play(turn, audio, text)

    def _play_cue(self, kind: str) -> None:
        try:
            audio = self.tts.cue_tone(kind)
            self.speaker.play(Segment(audio=audio, rate=self.tts.sample_rate, text=""))
        except Exception as e:  # noqa: BLE001
            log.warning("cue failed: %s", e)

    def _wait_playback(self, turn: Turn) -> None:
        for seg in list(turn.segments):
            while not seg.done.wait(0.05):
                if turn.cancel.is_set():
                    break
        if turn.segments and turn.t_first_audio is not None:
            turn.t_playback_end = self.speaker.t_last_audio

    def _interrupt(self) -> None:
        turn = self.turn
        if turn is not None and not turn.cancel.is_set():
            turn.cancel.set()
            turn.interrupted = True
            turn.outcome = "interrupted"
        self.speaker.flush()
        if turn is not None:
            turn.t_playback_end = self.speaker.t_last_audio

    def _finish_turn(self, turn: Turn) -> None:
        with self._lock:
            if turn.outcome not in ("no_speech",) and self.brain is not None and turn.transcript:
                try:
                    self.brain.commit_turn(turn.transcript, turn.spoken_text(), turn.interrupted)
                except Exception as e:  # noqa: BLE001
                    log.warning("history update failed: %s", e)
            record = turn.to_json()
            self.history.append(record)
            if len(self.history) > HISTORY_KEEP:
                del self.history[: len(self.history) - HISTORY_KEEP]
            self.turn_log.write(record)
            if self.s.log.debug_audio_dir and turn.audio:
                try:
                    write_wav(self.s.path(str(self.s.log.debug_audio_dir)) / f"{turn.turn_id}-stt.wav",
                              np.concatenate(turn.audio))
                except OSError as e:
                    log.warning("debug recorder: %s", e)
            turn.audio.clear()
            if self.turn is turn:
                self.speaker.new_reply()
                if turn.outcome in ("answered",) and self.s.conversation.follow_up_s > 0 and not turn.interrupted:
                    self._segmenter = None
                    self._follow_seg = None
                    self.vad.reset()
                    self.wake.reset()
                    self.set_state(State.FOLLOW_UP)
                elif self.state != State.LISTENING:
                    self.set_state(State.IDLE)
        memory.trim()  # a turn's buffers are freed: give the pages back (see memory.py)

    def _start_announcement(self, text: str) -> None:
        turn = self._new_turn(None, None)
        turn.outcome = "announcement"
        turn.reply_text = text
        self.set_state(State.THINKING)

        def speak() -> None:
            from .text import split_sentences

            try:
                for sentence in split_sentences(text) or [text]:
                    if turn.cancel.is_set():
                        break
                    self._play(turn, self.tts.synthesize_all(sentence), sentence)
            finally:
                self._wait_playback(turn)
                self._finish_turn(turn)

        self.responder = threading.Thread(target=speak, name="announce", daemon=True)
        self.responder.start()

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, timeout: float = 4.0) -> None:
        """Ordered: stop input, cancel the turn, stop output, flush MQTT, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001
            log.warning("closing input: %s", e)
        if self.turn is not None and self._responding():
            if not self.exit_at_end:
                # logged as what it was: cut short by the shutdown, with what was actually played
                self.turn.cancel.set()
                self.turn.interrupted = True
                self.turn.outcome = "shutdown"
            self.responder.join(max(0.1, deadline - time.monotonic() - 1.0))
        # file mode: the output WAV is written, at least as long as the input WAV
        self.speaker.close(min_s=getattr(self.source, "duration", None))
        timers = getattr(self.brain, "timers", None)
        if timers is not None and hasattr(timers, "stop"):
            timers.stop()
        if self.mqtt is not None:
            try:
                self.mqtt.stop(timeout=max(0.5, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                log.warning("MQTT stop: %s", e)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Settings, *, input_file: str | None = None, output_file: str | None = None,
                      realtime: bool = False, home_file: str | None = None, turn_log: str | None = None,
                      use_mqtt: bool = True) -> Engine:
        from .preflight import check_models_for

        problems = check_models_for(settings)
        if problems:
            raise ModelError("models are missing or corrupt:\n  " + "\n  ".join(problems),
                             fix="run `edge-agent models fetch` (or fix the paths in the config)")
        from .brain import Brain
        from .stt import make_engine
        from .tts import PiperTts
        from .vad import Segmenter, SileroVad
        from .wake import WakeDetector

        if input_file:
            source: Any = FileSource(input_file, settings.audio.block_ms, realtime=realtime)
        else:
            source = MicSource(settings.audio)
            from .audio_io import find_device

            find_device(settings.audio.input_device, "input")  # clear error now if there is no microphone
        t0 = time.monotonic()
        tts = PiperTts.from_settings(settings)
        tts.load()
        if output_file:
            speaker = Speaker(tts.sample_rate, file=output_file, realtime=realtime or not input_file)
        elif input_file:
            speaker = _speaker_or_null(settings, tts.sample_rate, realtime)
        else:
            speaker = Speaker(tts.sample_rate, device=settings.audio.output_device)
        wake = WakeDetector.from_settings(settings)
        stop_wake = WakeDetector.from_settings(settings, stop=True) if settings.wake.stop_models else None
        vad = SileroVad.from_settings(settings)
        stt = make_engine(settings.stt, settings)
        stt.load()
        brain = Brain.from_settings(settings, home_file=home_file, keep_timers=not input_file)
        mqtt = None
        if use_mqtt and settings.mqtt.enabled:
            from .config import mqtt_password
            from .mqtt import MqttLink

            mqtt = MqttLink(settings.mqtt, settings.site, password=mqtt_password(settings.mqtt))
        # warm-up so the first turn is as fast as the rest
        stt.warmup()
        tts.warmup()
        if hasattr(tts, "prewarm"):
            tts.prewarm(["Sorry, I didn't catch that.", "Sorry, something went wrong. Please try again."])
        if hasattr(brain, "warmup"):
            brain.warmup()
        log.info("models loaded and warmed up in %.1f s", time.monotonic() - t0)
        if mqtt is not None:
            mqtt.start()
        engine = cls(settings, source=source, speaker=speaker, wake=wake, vad=vad,
                     segmenter_factory=lambda: Segmenter(settings.vad), stt=stt, brain=brain, tts=tts, mqtt=mqtt,
                     stop_wake=stop_wake,
                     turn_log=TurnLog(turn_log or settings.log.turn_log and settings.path(settings.log.turn_log),
                                      settings.log.turn_log_stdout),
                     exit_at_end=bool(input_file))
        speaker.start(t0=None)
        if input_file and speaker.file is not None:
            speaker.file_t0 = time.monotonic()
        return engine


class _NullSpeaker(Speaker):
    """No output device in file mode: replies are timed as if played, and logged."""

    def _open_device(self) -> None:
        self.stream = None  # nothing to open

    def _emit(self, block: np.ndarray) -> None:
        if self.realtime:
            time.sleep(len(block) / self.rate)


def _speaker_or_null(settings: Settings, rate: int, realtime: bool) -> Speaker:
    try:
        from .audio_io import find_device

        find_device(settings.audio.output_device, "output")
        return Speaker(rate, device=settings.audio.output_device)
    except AudioError:
        log.info("no output device: replies are logged only (use --output OUT.wav to keep them)")
        return _NullSpeaker(rate, file=None, realtime=realtime)


class _SystemdNotifier:
    """READY/STATUS/WATCHDOG for Type=notify units; pinged only from the loop when it makes progress."""

    def __init__(self) -> None:
        self.sock = None
        self.last = 0.0
        addr = os.environ.get("NOTIFY_SOCKET")
        if addr:
            import socket

            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.sock.connect(addr)
            except OSError:
                self.sock = None
        usec = os.environ.get("WATCHDOG_USEC")
        self.interval = (int(usec) / 1e6 / 2) if usec and usec.isdigit() else 5.0

    def _send(self, msg: str) -> None:
        if self.sock is not None:
            try:
                self.sock.send(msg.encode())
            except OSError:
                pass

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def progress(self, status: str) -> None:
        now = time.monotonic()
        if now - self.last >= min(self.interval, 2.0):
            self.last = now
            self._send(f"WATCHDOG=1\nSTATUS={status}")


def cli_run(args: Any, settings: Settings) -> int:
    if args.realtime and not args.input:
        raise AudioError("--realtime only makes sense with --input FILE.wav")
    if not args.input:
        # Live mode needs a microphone: say so plainly before loading anything.
        from .audio_io import find_device

        try:
            find_device(settings.audio.input_device, "input")
        except AudioError as e:
            raise AudioError(
                e.message,
                fix="plug in a USB microphone (see `edge-agent devices`), or run the same loop over a recording: "
                    "edge-agent run --input IN.wav --output OUT.wav",
            ) from None
    engine = Engine.from_settings(settings, input_file=args.input, output_file=args.output,
                                  realtime=args.realtime, home_file=args.home, turn_log=args.turn_log,
                                  use_mqtt=not args.no_mqtt)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        engine.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("ready: say the wake word (%s)", ", ".join(engine.wake_phrases))
    print(f"edge-agent: listening for {', '.join(engine.wake_phrases)}", file=sys.stderr, flush=True)
    return engine.run()
