"""The turn's vocabulary: its states, the typed events posted to the turn controller and the actions it answers with.

Events come from the loop thread (wake word, listener, ticks) and from the worker threads (responder, arbitration,
timers, MQTT, wake-check) through the engine's control queue; each carries its own time. Actions are what the engine
carries out (``engine_actions.py``) and what its subscribers hear. Frozen dataclasses, no behaviour: the transition
function that turns one into the other is ``controller.TurnController``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .turn import Turn


class State(enum.StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    FOLLOW_UP = "follow_up"


RESPONDING = (State.THINKING, State.SPEAKING)


# --------------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    t: float  # monotonic seconds


@dataclass(frozen=True)
class WakeDetected(Event):
    model: str
    score: float
    t_detect: float  # audio time at the end of the frame the detector fired on


@dataclass(frozen=True)
class StopWord(Event):
    pass


@dataclass(frozen=True)
class BargeIn(Event):
    """Speech while a reply plays, on an echo-cancelled source."""


@dataclass(frozen=True)
class FollowUpSpeech(Event):
    """Real speech in the follow-up window: a turn without the wake word."""


@dataclass(frozen=True)
class SpeechStarted(Event):
    turn_id: str
    t_audio: float


@dataclass(frozen=True)
class Endpointed(Event):
    turn_id: str
    t_speech_end: float
    verdict: str | None = None  # the words' ending verdict (edge_agent/ending.py)
    early: bool = False  # before the normal silence: a complete command
    hold_s: float = 0.0  # the reply's first audio waits this long (the normal silence not yet over, no echo cancel)


@dataclass(frozen=True)
class Continued(Event):
    """Speech resumed soon after the endpoint (before the reply was heard, or on an echo-cancelled source within
    ``ending.CONTINUE_WINDOW_S``): the request goes on. The reply stops; a new turn hears the whole utterance
    (``audio``: what was said so far, and the pause)."""

    turn_id: str
    audio: Any = None


@dataclass(frozen=True)
class NoSpeech(Event):
    turn_id: str


@dataclass(frozen=True)
class ArbitrationLost(Event):
    turn_id: str


@dataclass(frozen=True)
class WakeChecked(Event):
    """The second look at a doubtful wake detection (the engine's wake-check thread, ``wake_verify.py``): did
    speech-to-text of the audio up to the detection say the wake phrase? The turn it opened was listening meanwhile;
    a rejected one is dropped if it still is (outcome ``wake_rejected``, no cue)."""

    turn_id: str
    accepted: bool
    transcript: str = ""
    model: str = ""
    score: float = 0.0
    cutoff: float = 0.0
    band: float = 0.0
    compute_s: float | None = None
    name_prob: float | None = None  # the STT model's P(name | first words) where the transcript missed it


@dataclass(frozen=True)
class Transcribed(Event):
    turn_id: str
    text: str
    heard: str = ""
    speculative: bool = False
    compute_s: float | None = None


@dataclass(frozen=True)
class IntentExecuted(Event):
    turn_id: str
    intent: dict[str, Any]
    hub_offline: bool = False


@dataclass(frozen=True)
class FirstToken(Event):
    turn_id: str


@dataclass(frozen=True)
class ReplyStarted(Event):
    """The first reply segment was queued on the speaker."""

    turn_id: str


@dataclass(frozen=True)
class ResponseDone(Event):
    """The responder finished (its playback ended or was cut): the turn's own measurements."""

    turn_id: str
    reply_text: str = ""
    reply_spoken: str = ""
    used_llm: bool = False
    outcome: str | None = None  # "empty" or "error" when the responder decided so; None: answered
    error: str | None = None
    t_first_audio: float | None = None
    t_playback_end: float | None = None
    stages: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Announce(Event):
    """Words to speak when the assistant is free (MQTT say, a timer). ``then``: "ask" listens for the reply to
    ``ask`` (an ``ask.AskRequest``) without the wake word; "conversation" listens for a normal turn."""

    text: str
    preannounce: bool = False  # a chime before the words
    then: str | None = None
    ask: Any = None


@dataclass(frozen=True)
class RunCommand(Event):
    """A timer's delayed command ("in 5 minutes turn off the light"): a turn of its own, never beside another."""

    text: str


@dataclass(frozen=True)
class Tick(Event):
    pass


@dataclass(frozen=True)
class Mute(Event):
    muted: bool


@dataclass(frozen=True)
class Shutdown(Event):
    pass


# --------------------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Action:
    pass


@dataclass(frozen=True)
class SetState(Action):
    state: State
    previous: State


@dataclass(frozen=True)
class OpenListener(Action):
    turn: Turn
    after_wake: bool  # the pre-roll ends with the wake phrase (else: speech that opened a turn by itself)
    keep_preroll: bool = True  # False after the assistant spoke a question: the pre-roll holds its own voice
    no_speech_s: float | None = None  # how long to wait for the reply to start (None: vad.no_speech_timeout_s)
    resume_audio: Any = None  # a continued request: the utterance so far, heard again before the live audio


@dataclass(frozen=True)
class CloseListener(Action):
    turn_id: str


@dataclass(frozen=True)
class Interrupt(Action):
    turn: Turn


@dataclass(frozen=True)
class StartResponse(Action):
    turn: Turn
    text: str | None = None  # a command turn's words (no STT); None: the listener's transcript


@dataclass(frozen=True)
class SpeakAnnouncement(Action):
    turn: Turn
    text: str
    preannounce: bool = False


@dataclass(frozen=True)
class PlayCue(Action):
    kind: str


@dataclass(frozen=True)
class ResetDetectors(Action):
    pass


@dataclass(frozen=True)
class TurnFinished(Action):
    turn: Turn
