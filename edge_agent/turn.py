"""One turn's record and the turn log.

The record is written by the turn controller alone (``controller.py``); worker threads report what they measured in
events. ``spoken_text`` tells exactly what reached the speaker, so history and logs hold what was said.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio_io import Segment

log = logging.getLogger(__name__)

OUTCOMES = ("answered", "no_speech", "empty", "error", "interrupted", "shutdown", "deferred", "announcement",
            "wake_rejected")


def spoken_text(segments: Sequence[Segment]) -> str:
    """Exactly what reached the speaker: whole sentences, and the played share of an interrupted one."""
    parts = []
    for seg in segments:
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


def playback_times(segments: Sequence[Segment]) -> tuple[float | None, float | None]:
    """(first reply sample handed to the device, last one) over this turn's own segments: per turn, so a barge-in
    or a no-speech timeout in between never leaves the next turn without its times."""
    played = [s for s in segments if s.played > 0]
    firsts = [s.t_first for s in played if getattr(s, "t_first", None) is not None]
    ends = [s.t_done for s in played if s.t_done is not None]
    return (min(firsts) if firsts else None), (max(ends) if ends else None)


# A silence longer than this between two sentences of one reply means the voice ran dry: the next sentence was not
# synthesized (or not written by the LLM) by the time the one before had played. Sentences are queued back to
# back, so between them the speaker's own hand-over takes at most a block or two (20 ms each).
GAP_MIN_S = 0.06


def playback_gaps(segments: Sequence[Segment], min_s: float = GAP_MIN_S) -> dict[str, float | int] | None:
    """The reply's underruns: silences of at least ``min_s`` between a sentence played to its end and the next
    one's first sample (the voice waited for text or synthesis). None for a reply of fewer than two played
    sentences; else ``{"count", "total_s", "max_s"}`` (zeros when the voice never ran dry)."""
    played = [s for s in segments if s.played > 0 and s.t_first is not None]
    if len(played) < 2:
        return None
    gaps = [round(b.t_first - a.t_done, 4) for a, b in zip(played, played[1:], strict=False)
            if a.t_done is not None and a.played >= len(a.audio)]
    over = [g for g in gaps if g >= min_s]
    return {"count": len(over), "total_s": round(sum(over), 4), "max_s": round(max(over, default=0.0), 4)}


def _settled() -> threading.Event:
    e = threading.Event()
    e.set()  # a clear detection, a follow-up, a command: nothing to wait for
    return e


@dataclass
class Turn:
    """Everything one turn measured, said and did; written as one JSON line when it ends.

    Only the controller writes these fields. ``cancel`` is the turn's control token: set (by the engine, on the
    controller's ``Interrupt`` action) to stop its generation and synthesis. ``wake_settled`` is the other: clear
    while a doubtful wake word's second look is out (the engine clears it when the look starts and sets it once the
    controller has handled ``WakeChecked``); the responder acts on nothing before it is set."""

    turn_id: str
    t_wake: float | None
    wake_model: str | None = None
    kind: str = "voice"  # voice | command (a timer's delayed command) | announcement
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
    heard: str = ""  # the transcript before the wake phrase's remnant was stripped
    reply_text: str = ""  # everything the brain produced
    reply_spoken: str = ""  # what was played (the played share of an interrupted sentence, ending in "—")
    intents: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    outcome: str = "answered"
    error: str | None = None
    used_llm: bool = False
    hub_offline: bool = False  # an intent was queued while MQTT was down: the reply says it will be sent later
    stt_compute_s: float | None = None
    speculative: bool = False  # the transcript came from the transcription started at the first pause
    ending: str | None = None  # the words' ending verdict at the endpoint (edge_agent/ending.py)
    early_end: bool = False  # ended before the normal silence: a complete command
    hold_until: float | None = None  # the reply's first audio waits until then (an early end without echo cancel)
    continues: str | None = None  # the turn this one continues (speech resumed after its early end)
    stages: dict[str, Any] = field(default_factory=dict)  # per-stage figures reported by the workers
    then: str | None = None  # an announcement that asks: "ask" or "conversation" (listen for the reply after it)
    ask: Any = None  # the ask.AskRequest this turn speaks, or answers
    cancel: threading.Event = field(default_factory=threading.Event)
    wake_settled: threading.Event = field(default_factory=_settled)

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        rec = {
            "turn_id": self.turn_id,
            "kind": self.kind,
            "transcript": self.transcript,
            "reply_spoken": self.reply_spoken,
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
            "ending": self.ending,
            "early_end": self.early_end,
        }
        if self.continues is not None:
            rec["continues"] = self.continues
        if self.stages:
            rec["stages"] = self.stages
        if self.ask is not None:
            rec["ask"] = self.ask.to_json()
        return rec


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
