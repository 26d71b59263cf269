"""The turn controller: the one writer of turn state.

``TurnController.handle(event) -> list[Action]`` is pure: no threads, no clock, no I/O. Events carry their own time.
The engine's loop thread is the only caller; worker threads (responder, arbitration, timers, MQTT) post events to
the loop's control queue instead of touching the state. The actions are carried out by the engine (open the
listener, start the responder, interrupt, play a cue, log the finished turn); state changes are actions too, and the
MQTT link, the turn log and the systemd notifier subscribe to them.

States: idle → listening → thinking → speaking → follow_up → idle (see docs/architecture.md for the table). The
states, events and actions themselves are in ``turn_events.py``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from .turn import Turn
from .turn_events import (
    RESPONDING,
    Action,
    Announce,
    ArbitrationLost,
    BargeIn,
    CloseListener,
    Continued,
    Endpointed,
    Event,
    FirstToken,
    FollowUpSpeech,
    IntentExecuted,
    Interrupt,
    Mute,
    NoSpeech,
    OpenListener,
    PlayCue,
    ReplyStarted,
    ResetDetectors,
    ResponseDone,
    RunCommand,
    SetState,
    Shutdown,
    SpeakAnnouncement,
    SpeechStarted,
    StartResponse,
    State,
    StopWord,
    Tick,
    Transcribed,
    TurnFinished,
    WakeChecked,
    WakeDetected,
)

log = logging.getLogger(__name__)

QUEUE_MAX = 16  # announcements / timer commands waiting for the assistant to be free


# --------------------------------------------------------------------------------------------------- controller
class TurnController:
    """(state, event) → (state, actions). Pure: time comes with the events, ids from ``new_id``."""

    def __init__(self, *, follow_up_s: float, new_id: Callable[[], str], queue_max: int = QUEUE_MAX) -> None:
        self.follow_up_s = follow_up_s
        self.new_id = new_id
        self.state = State.IDLE
        self.state_since = 0.0
        self.turn: Turn | None = None  # the current turn (listening, responding, or just answered)
        self.open: dict[str, Turn] = {}  # turns whose responder still runs (an interrupted one finishes later)
        self.muted = False
        self.pending: deque[Announce | RunCommand] = deque()  # waiting for the assistant to be free
        self.queue_max = queue_max
        self.dropped = 0  # announcements/commands dropped because the queue was full

    # ---------------------------------------------------------------- helpers
    def _set(self, state: State, t: float, out: list[Action]) -> None:
        if state == self.state:
            return
        out.append(SetState(state, self.state))
        self.state, self.state_since = state, t

    def _new_turn(self, t: float, *, kind: str = "voice", t_wake: float | None = None,
                  model: str | None = None) -> Turn:
        turn = Turn(turn_id=self.new_id(), t_wake=t_wake, wake_model=model, kind=kind, t_listen=t)
        self.turn = turn
        return turn

    def _open_listening(self, t: float, out: list[Action], *, t_wake: float | None = None, model: str | None = None
                        ) -> None:
        old = self.turn
        if old is not None and self.state == State.LISTENING:
            out.append(CloseListener(old.turn_id))  # a follow-up turn restarted by the wake word: nothing said yet
        turn = self._new_turn(t, t_wake=t_wake, model=model)
        self._set(State.LISTENING, t, out)
        out.append(OpenListener(turn, after_wake=t_wake is not None))

    def _interrupt(self, outcome: str, out: list[Action]) -> None:
        turn = self.turn
        if turn is None or turn.turn_id not in self.open or turn.cancel.is_set():
            return
        turn.interrupted = True
        turn.outcome = outcome
        out.append(Interrupt(turn))

    def _current(self, turn_id: str) -> Turn | None:
        turn = self.turn
        return turn if turn is not None and turn.turn_id == turn_id else None

    def _known(self, turn_id: str) -> Turn | None:
        return self.open.get(turn_id) or self._current(turn_id)

    def _start_pending(self, t: float, out: list[Action]) -> None:
        if not self.pending or self.state not in (State.IDLE, State.FOLLOW_UP):
            return
        item = self.pending.popleft()
        if isinstance(item, Announce):
            turn = self._new_turn(t, kind="announcement")
            turn.outcome = "announcement"
            turn.reply_text = item.text
            turn.then, turn.ask = item.then, item.ask
            self.open[turn.turn_id] = turn
            self._set(State.THINKING, t, out)
            out.append(SpeakAnnouncement(turn, item.text, item.preannounce))
        else:
            turn = self._new_turn(t, kind="command")
            turn.transcript = item.text
            turn.t_transcript = t
            self.open[turn.turn_id] = turn
            self._set(State.THINKING, t, out)
            out.append(StartResponse(turn, text=item.text))

    def _enqueue(self, item: Announce | RunCommand, t: float, out: list[Action]) -> None:
        if len(self.pending) >= self.queue_max:
            self.dropped += 1
            log.warning("%s dropped (%d waiting): %s", type(item).__name__, len(self.pending), item.text)
            return
        self.pending.append(item)
        self._start_pending(t, out)

    def _listen_for_reply(self, spoken: Turn, t: float, out: list[Action]) -> None:
        """After a question (ask, start_conversation): listen without the wake word, the pre-roll dropped."""
        turn = self._new_turn(t, kind="answer" if spoken.then == "ask" else "voice")
        turn.ask = spoken.ask
        self._set(State.LISTENING, t, out)
        out.append(OpenListener(turn, after_wake=False, keep_preroll=False,
                                no_speech_s=getattr(spoken.ask, "timeout_s", None)))

    def _wake_checked(self, ev: WakeChecked, out: list[Action]) -> None:
        """A rejected second look drops its turn while it only listens (like ``ArbitrationLost``); a turn already
        past its endpoint is interrupted only while nothing was executed or spoken; later it is only logged."""
        turn = self._known(ev.turn_id)
        decision = "accepted" if ev.accepted else "too_late"
        if turn is not None and not ev.accepted:
            if self.turn is turn and self.state == State.LISTENING:
                decision = "dropped"
                turn.outcome = "wake_rejected"
                out.append(CloseListener(turn.turn_id))
                self._set(State.IDLE, ev.t, out)
                out.append(TurnFinished(turn))
            elif self.turn is turn and self.state == State.THINKING and not turn.intents:
                decision = "interrupted"
                self._interrupt("wake_rejected", out)
                self._set(State.IDLE, ev.t, out)
        log.info("second look at wake word %s (score %.3f, cutoff %.3f, band %.3f): heard %r%s -> %s (%s)",
                 ev.model, ev.score, ev.cutoff, ev.band, ev.transcript,
                 "" if ev.name_prob is None else f", the name's probability {ev.name_prob:.2f}",
                 "accepted" if ev.accepted else "rejected", decision)
        if turn is not None:
            turn.stages["wake_check"] = {"model": ev.model, "score": round(ev.score, 4), "cutoff": round(ev.cutoff, 4),
                                         "band": ev.band, "transcript": ev.transcript, "accepted": ev.accepted,
                                         "decision": decision, "t": round(ev.t, 4),
                                         "compute_s": None if ev.compute_s is None else round(ev.compute_s, 4),
                                         **({} if ev.name_prob is None else {"name_prob": round(ev.name_prob, 4)})}
        if decision == "dropped":
            self._start_pending(ev.t, out)

    # ---------------------------------------------------------------- the transition function
    def handle(self, ev: Event) -> list[Action]:
        out: list[Action] = []
        t = ev.t
        if isinstance(ev, WakeDetected):
            if self.muted:
                return out
            if self.state in RESPONDING:
                self._interrupt("interrupted", out)
            follow_up_turn = self.state == State.LISTENING and self.turn is not None and self.turn.t_wake is None
            if self.state != State.LISTENING or follow_up_turn:
                self._open_listening(t, out, t_wake=ev.t_detect, model=ev.model)
        elif isinstance(ev, StopWord):
            if self.state in RESPONDING:
                self._interrupt("interrupted", out)
                self._set(State.IDLE, t, out)
        elif isinstance(ev, BargeIn):
            if self.state in RESPONDING:
                self._interrupt("interrupted", out)
                self._open_listening(t, out)
        elif isinstance(ev, Continued):
            old = self._current(ev.turn_id)
            if old is not None and self.state in RESPONDING and old.kind == "voice" and old.ask is None:
                self._interrupt("continued", out)
                turn = self._new_turn(t, t_wake=old.t_wake, model=old.wake_model)
                turn.t_speech_start, turn.continues = old.t_speech_start, old.turn_id
                self._set(State.LISTENING, t, out)
                out.append(OpenListener(turn, after_wake=False, keep_preroll=False, resume_audio=ev.audio))
        elif isinstance(ev, FollowUpSpeech):
            if self.state == State.FOLLOW_UP and not self.muted:
                self._open_listening(t, out)
        elif isinstance(ev, SpeechStarted):
            turn = self._current(ev.turn_id)
            if turn is not None and self.state == State.LISTENING:
                turn.t_speech_start = ev.t_audio
        elif isinstance(ev, Endpointed):
            turn = self._current(ev.turn_id)
            if turn is not None and self.state == State.LISTENING:
                turn.t_speech_end = ev.t_speech_end
                turn.t_endpoint = t
                turn.ending, turn.early_end = ev.verdict, ev.early
                turn.hold_until = t + ev.hold_s if ev.hold_s > 0 else None
                self.open[turn.turn_id] = turn
                self._set(State.THINKING, t, out)
                out.append(StartResponse(turn))
        elif isinstance(ev, (NoSpeech, ArbitrationLost)):
            turn = self._current(ev.turn_id)
            if turn is not None and self.state == State.LISTENING:
                turn.outcome = "no_speech" if isinstance(ev, NoSpeech) else "deferred"
                out.append(CloseListener(turn.turn_id))
                self._set(State.IDLE, t, out)
                if isinstance(ev, NoSpeech):
                    out.append(PlayCue("timeout"))
                out.append(TurnFinished(turn))
                self._start_pending(t, out)
        elif isinstance(ev, WakeChecked):
            self._wake_checked(ev, out)
        elif isinstance(ev, Transcribed):
            turn = self._known(ev.turn_id)
            if turn is not None:
                turn.transcript, turn.heard = ev.text, ev.heard or ev.text
                turn.t_transcript = t
                turn.speculative = ev.speculative
                turn.stt_compute_s = ev.compute_s
        elif isinstance(ev, IntentExecuted):
            turn = self._known(ev.turn_id)  # by id: a timer's command never lands in another turn's record
            if turn is not None:
                turn.intents.append(ev.intent)
                turn.t_intent = t
                turn.hub_offline = turn.hub_offline or ev.hub_offline
        elif isinstance(ev, FirstToken):
            turn = self._known(ev.turn_id)
            if turn is not None and turn.t_first_token is None:
                turn.t_first_token = t
        elif isinstance(ev, ReplyStarted):
            if self._current(ev.turn_id) is not None and self.state == State.THINKING:
                self._set(State.SPEAKING, t, out)
        elif isinstance(ev, ResponseDone):
            turn = self.open.pop(ev.turn_id, None)
            if turn is None:
                return out
            turn.reply_text = ev.reply_text or turn.reply_text
            turn.reply_spoken = ev.reply_spoken
            turn.used_llm = ev.used_llm
            turn.t_first_audio = ev.t_first_audio
            turn.t_playback_end = ev.t_playback_end
            turn.stages.update(ev.stages)
            if ev.outcome and turn.outcome in ("answered", "announcement"):
                turn.outcome, turn.error = ev.outcome, ev.error
            out.append(TurnFinished(turn))
            if self.turn is turn:
                answered = turn.outcome == "answered" and not turn.interrupted and turn.kind == "voice"
                if turn.then and not turn.interrupted and turn.outcome == "announcement":
                    self._listen_for_reply(turn, t, out)
                    return out
                if answered and self.follow_up_s > 0:
                    self._set(State.FOLLOW_UP, t, out)
                    out.append(ResetDetectors())
                elif self.state != State.LISTENING:
                    self._set(State.IDLE, t, out)
            self._start_pending(t, out)
        elif isinstance(ev, (Announce, RunCommand)):
            self._enqueue(ev, t, out)
        elif isinstance(ev, Tick):
            if self.state == State.FOLLOW_UP and t - self.state_since > self.follow_up_s:
                self._set(State.IDLE, t, out)
            self._start_pending(t, out)
        elif isinstance(ev, Mute):
            self.muted = ev.muted
        elif isinstance(ev, Shutdown):
            self._interrupt("shutdown", out)
        return out

    @property
    def responding(self) -> bool:
        return bool(self.open)
