"""The turn controller with plain event sequences and numbers: the one writer of turn state."""

from __future__ import annotations

import itertools

from edge_agent import turn_events as ev
from edge_agent.controller import TurnController
from edge_agent.turn_events import State


def _ctl(follow_up_s: float = 3.0, queue_max: int = 16) -> TurnController:
    ids = itertools.count(1)
    return TurnController(follow_up_s=follow_up_s, new_id=lambda: f"t{next(ids)}", queue_max=queue_max)


def kinds(actions: list[ev.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def states(actions: list[ev.Action]) -> list[str]:
    return [a.state.value for a in actions if isinstance(a, ev.SetState)]


def finished(actions: list[ev.Action]) -> list[ev.Turn]:
    return [a.turn for a in actions if isinstance(a, ev.TurnFinished)]


def wake(c: TurnController, t: float) -> list[ev.Action]:
    return c.handle(ev.WakeDetected(t, "hey_jarvis", 0.9, t - 0.01))


def answer(c: TurnController, t: float, text: str = "what time is it") -> str:
    """Wake → endpoint → transcript: the turn is being answered; returns its id."""
    wake(c, t)
    tid = c.turn.turn_id
    c.handle(ev.SpeechStarted(t + 0.2, tid, t + 0.2))
    c.handle(ev.Endpointed(t + 1.5, tid, t + 1.1))
    c.handle(ev.Transcribed(t + 1.6, tid, text))
    return tid


def test_a_turn_from_wake_word_to_follow_up_and_back_to_idle():
    c = _ctl()
    a = wake(c, 10.0)
    assert states(a) == ["listening"] and kinds(a) == ["SetState", "OpenListener"]
    tid = c.turn.turn_id
    assert c.turn.t_wake == 9.99 and c.turn.t_listen == 10.0
    a = c.handle(ev.Endpointed(11.5, tid, 11.1))
    assert states(a) == ["thinking"] and isinstance(a[-1], ev.StartResponse) and a[-1].text is None
    c.handle(ev.Transcribed(11.6, tid, "what time is it", speculative=True, compute_s=0.3))
    c.handle(ev.FirstToken(11.7, tid))
    assert states(c.handle(ev.ReplyStarted(11.8, tid))) == ["speaking"]
    a = c.handle(ev.ResponseDone(13.0, tid, reply_text="It is ten.", reply_spoken="It is ten.",
                                 t_first_audio=11.85, t_playback_end=12.9))
    (turn,) = finished(a)
    rec = turn.to_json()
    assert rec["transcript"] == "what time is it" and rec["stt_speculative"] is True
    assert (rec["t_speech_end"], rec["t_endpoint"], rec["t_transcript"]) == (11.1, 11.5, 11.6)
    assert (rec["t_first_token"], rec["t_first_audio"], rec["t_playback_end"]) == (11.7, 11.85, 12.9)
    assert rec["outcome"] == "answered" and states(a) == ["follow_up"] and "ResetDetectors" in kinds(a)
    assert states(c.handle(ev.Tick(15.9))) == []  # 2.9 s into the 3 s window
    assert states(c.handle(ev.Tick(16.1))) == ["idle"]


def test_follow_up_speech_opens_a_turn_without_the_wake_word():
    c = _ctl()
    tid = answer(c, 0.0)
    c.handle(ev.ResponseDone(3.0, tid))
    a = c.handle(ev.FollowUpSpeech(4.0))
    assert states(a) == ["listening"] and isinstance(a[-1], ev.OpenListener) and a[-1].after_wake is False
    assert c.turn.t_wake is None
    # the wake word said now restarts it from the detection: the speech-opened turn is closed, never logged
    a = wake(c, 4.5)
    assert kinds(a) == ["CloseListener", "OpenListener"] and a[0].turn_id != c.turn.turn_id
    assert finished(a) == []


def test_barge_in_interrupts_and_both_turns_keep_their_own_times():
    """Defect 7: after a barge-in the next turn still logs t_first_audio and t_playback_end."""
    c = _ctl()
    t1 = answer(c, 0.0)
    c.handle(ev.ReplyStarted(2.0, t1))
    a = wake(c, 3.0)  # the user says the wake word while the reply plays
    assert kinds(a) == ["Interrupt", "SetState", "OpenListener"]
    old = a[0].turn
    assert old.interrupted and old.outcome == "interrupted"
    t2 = c.turn.turn_id
    # the interrupted responder ends a little later, with what was played
    (done1,) = finished(c.handle(ev.ResponseDone(3.05, t1, reply_text="A long answer.", reply_spoken="A long —",
                                                 t_first_audio=2.05, t_playback_end=3.02)))
    assert done1.turn_id == t1 and done1.reply_spoken == "A long —" and done1.t_playback_end == 3.02
    assert c.state == State.LISTENING  # the old turn's end does not move the new one
    c.handle(ev.Endpointed(4.5, t2, 4.2))
    (done2,) = finished(c.handle(ev.ResponseDone(6.0, t2, t_first_audio=4.9, t_playback_end=5.9)))
    assert (done2.t_first_audio, done2.t_playback_end) == (4.9, 5.9)


def test_no_speech_timeout_plays_a_cue_and_logs_the_turn():
    c = _ctl()
    wake(c, 0.0)
    tid = c.turn.turn_id
    a = c.handle(ev.NoSpeech(3.0, tid))
    assert kinds(a) == ["CloseListener", "SetState", "PlayCue", "TurnFinished"] and states(a) == ["idle"]
    assert finished(a)[0].outcome == "no_speech"
    # the next turn after a timeout keeps its times (defect 7)
    t2 = answer(c, 10.0)
    (done,) = finished(c.handle(ev.ResponseDone(13.0, t2, t_first_audio=12.0, t_playback_end=12.8)))
    assert done.t_first_audio == 12.0 and done.t_playback_end == 12.8


def test_arbitration_lost_only_drops_a_turn_still_listening():
    c = _ctl()
    wake(c, 0.0)
    tid = c.turn.turn_id
    a = c.handle(ev.ArbitrationLost(0.3, tid))
    assert states(a) == ["idle"] and finished(a)[0].outcome == "deferred" and "PlayCue" not in kinds(a)
    # once the endpoint has passed, a late verdict changes nothing (it used to clear the listener under the loop)
    t2 = answer(c, 5.0)
    assert c.handle(ev.ArbitrationLost(6.6, t2)) == []
    assert c.state == State.THINKING


def test_intents_land_in_the_turn_that_executed_them():
    """Defect 8: a timer's command runs as its own turn; its intent never lands in the current turn's record."""
    c = _ctl()
    t1 = answer(c, 0.0)
    a = c.handle(ev.RunCommand(1.7, "turn off the kitchen light"))
    assert a == []  # busy: queued, not run beside the turn
    c.handle(ev.IntentExecuted(1.8, t1, {"name": "HassGetCurrentTime"}))
    a = c.handle(ev.ResponseDone(3.0, t1))
    (t1_rec,) = finished(a)
    start = [x for x in a if isinstance(x, ev.StartResponse)]
    assert len(start) == 1 and start[0].text == "turn off the kitchen light" and start[0].turn.kind == "command"
    t2 = start[0].turn.turn_id
    assert states(a) == ["follow_up", "thinking"]
    # a voice turn cannot start while the command answers; its intent goes to its own record
    c.handle(ev.IntentExecuted(3.1, t2, {"name": "HassTurnOff"}))
    (t2_rec,) = finished(c.handle(ev.ResponseDone(3.5, t2)))
    assert [i["name"] for i in t1_rec.intents] == ["HassGetCurrentTime"]
    assert [i["name"] for i in t2_rec.intents] == ["HassTurnOff"] and t2_rec.transcript == "turn off the kitchen light"
    assert c.state == State.IDLE  # a command turn has no follow-up window


def test_announcements_wait_for_the_turn_and_the_queue_is_bounded():
    c = _ctl(queue_max=2)
    answer(c, 0.0)
    for i in range(4):
        assert c.handle(ev.Announce(1.0 + i, f"note {i}")) == []
    assert c.dropped == 2 and len(c.pending) == 2
    a = c.handle(ev.ResponseDone(3.0, c.turn.turn_id))
    speak = [x for x in a if isinstance(x, ev.SpeakAnnouncement)]
    assert [s.text for s in speak] == ["note 0"] and c.state == State.THINKING
    a = c.handle(ev.ResponseDone(4.0, speak[0].turn.turn_id))
    assert finished(a)[0].outcome == "announcement"
    assert [x.text for x in a if isinstance(x, ev.SpeakAnnouncement)] == ["note 1"]


def test_stop_word_and_shutdown_interrupt_only_a_reply():
    c = _ctl()
    assert c.handle(ev.StopWord(0.0)) == []
    tid = answer(c, 1.0)
    a = c.handle(ev.StopWord(3.0))
    assert kinds(a) == ["Interrupt", "SetState"] and states(a) == ["idle"]
    assert c.handle(ev.StopWord(3.1)) == []  # idle now: nothing to interrupt
    (done,) = finished(c.handle(ev.ResponseDone(3.2, tid)))
    assert done.outcome == "interrupted" and c.state == State.IDLE
    t2 = answer(c, 10.0)
    a = c.handle(ev.Shutdown(11.7))
    assert kinds(a) == ["Interrupt"] and a[0].turn.outcome == "shutdown"
    assert finished(c.handle(ev.ResponseDone(11.8, t2)))[0].outcome == "shutdown"


def test_muted_ignores_the_wake_word_and_follow_up_speech():
    c = _ctl()
    c.handle(ev.Mute(0.0, True))
    assert wake(c, 1.0) == [] and c.state == State.IDLE
    c.handle(ev.Mute(2.0, False))
    assert states(wake(c, 3.0)) == ["listening"]


def test_echo_cancelled_barge_in_opens_a_turn_without_the_wake_word():
    c = _ctl()
    answer(c, 0.0)
    a = c.handle(ev.BargeIn(2.5))
    assert kinds(a) == ["Interrupt", "SetState", "OpenListener"] and a[-1].after_wake is False


def test_responder_outcome_applies_unless_the_turn_was_cut():
    c = _ctl()
    tid = answer(c, 0.0)
    (t,) = finished(c.handle(ev.ResponseDone(2.0, tid, outcome="error", error="llm: timed out")))
    assert (t.outcome, t.error) == ("error", "llm: timed out") and c.state == State.IDLE
    assert c.handle(ev.ResponseDone(2.1, tid)) == []  # a second report of the same turn is ignored


def test_an_early_end_holds_the_reply_and_speech_resuming_continues_the_request():
    c = _ctl()
    wake(c, 10.0)
    tid = c.turn.turn_id
    c.handle(ev.SpeechStarted(10.3, tid, 10.3))
    a = c.handle(ev.Endpointed(11.5, tid, 11.3, verdict="complete", early=True, hold_s=0.2))
    assert isinstance(a[-1], ev.StartResponse)
    assert c.turn.early_end and c.turn.ending == "complete" and c.turn.hold_until == 11.7
    c.handle(ev.Transcribed(11.55, tid, "turn on the kitchen light"))
    c.handle(ev.ReplyStarted(11.7, tid))
    utterance = object()
    a = c.handle(ev.Continued(11.9, tid, audio=utterance))
    assert kinds(a) == ["Interrupt", "SetState", "OpenListener"] and states(a) == ["listening"]
    opened = a[-1]
    assert opened.resume_audio is utterance and not opened.after_wake and not opened.keep_preroll
    new = c.turn
    assert new.turn_id != tid and new.continues == tid and new.t_wake == 9.99 and new.t_speech_start == 10.3
    # the interrupted turn finishes later, logged as continued; the new one keeps listening
    (old,) = finished(c.handle(ev.ResponseDone(12.0, tid, reply_spoken="Turned on—")))
    assert old.outcome == "continued" and old.interrupted and c.state == State.LISTENING
    rec = new.to_json()
    assert rec["continues"] == tid and rec["early_end"] is False


def test_continued_after_a_normal_endpoint_too_but_never_for_another_turn_or_an_answer():
    c = _ctl()
    tid = answer(c, 10.0)  # a normal endpoint, the reply not heard yet
    a = c.handle(ev.Continued(12.0, tid, audio="so far"))
    assert kinds(a) == ["Interrupt", "SetState", "OpenListener"] and c.turn.continues == tid
    c2 = _ctl()
    wake(c2, 10.0)
    t1 = c2.turn.turn_id
    c2.handle(ev.Endpointed(11.0, t1, 10.8, verdict="complete", early=True))
    wake(c2, 11.5)  # a new wake word started another turn meanwhile
    assert c2.handle(ev.Continued(11.6, t1)) == []
    c3 = _ctl()
    c3.handle(ev.Announce(1.0, "Which room?", then="ask", ask=object()))
    (spoken,) = list(c3.open.values())
    c3.handle(ev.ResponseDone(2.0, spoken.turn_id))  # listening for the automation's answer
    t3 = c3.turn.turn_id
    c3.handle(ev.Endpointed(3.0, t3, 2.8))
    assert c3.handle(ev.Continued(3.2, t3)) == []  # an answer to an automation's question is never continued


def checked(c: TurnController, t: float, tid: str, accepted: bool, text: str = "") -> list[ev.Action]:
    return c.handle(ev.WakeChecked(t, tid, accepted, text, "hey_jarvis", 0.62, 0.5, 0.3, compute_s=0.18))


def test_a_rejected_second_look_drops_the_turn_still_listening_without_a_cue():
    c = _ctl()
    a = wake(c, 10.0)  # a doubtful detection opens listening exactly as a clear one: no wait
    assert kinds(a) == ["SetState", "OpenListener"] and c.state == State.LISTENING
    tid = c.turn.turn_id
    c.handle(ev.SpeechStarted(10.1, tid, 10.05))
    a = checked(c, 10.2, tid, False, "Hey Jack, pass me the salt.")
    assert kinds(a) == ["CloseListener", "SetState", "TurnFinished"] and states(a) == ["idle"]
    assert a[0].turn_id == tid and "PlayCue" not in kinds(a)
    rec = finished(a)[0].to_json()
    assert rec["outcome"] == "wake_rejected" and rec["interrupted"] is False
    look = rec["stages"]["wake_check"]
    assert look == {"model": "hey_jarvis", "score": 0.62, "cutoff": 0.5, "band": 0.3,
                    "transcript": "Hey Jack, pass me the salt.", "accepted": False, "decision": "dropped", "t": 10.2,
                    "compute_s": 0.18}
    # the listener's own late events for that turn change nothing; the next wake word works as usual
    assert c.handle(ev.Endpointed(10.9, tid, 10.6)) == [] and c.state == State.IDLE
    assert states(wake(c, 12.0)) == ["listening"] and c.turn.turn_id != tid


def test_an_accepted_second_look_only_records_itself():
    c = _ctl()
    tid = answer(c, 0.0)  # even after the endpoint (the check lost the race): nothing changes
    a = checked(c, 1.7, tid, True, "Hey Jarvis, what time is it?")
    assert a == [] and c.state == State.THINKING
    c.handle(ev.ReplyStarted(2.0, tid))
    (turn,) = finished(c.handle(ev.ResponseDone(3.0, tid, t_first_audio=2.0, t_playback_end=2.9)))
    assert turn.outcome == "answered"
    assert turn.to_json()["stages"]["wake_check"]["decision"] == "accepted"


def test_a_late_rejection_interrupts_only_before_anything_was_done_or_said():
    # past the endpoint, nothing executed, nothing spoken: the answer is stopped before it is heard
    c = _ctl()
    tid = answer(c, 0.0)
    a = checked(c, 1.7, tid, False, "Hey Travis")
    assert kinds(a) == ["Interrupt", "SetState"] and states(a) == ["idle"] and a[0].turn.turn_id == tid
    (turn,) = finished(c.handle(ev.ResponseDone(1.8, tid, outcome="empty")))
    assert turn.outcome == "wake_rejected" and turn.interrupted and c.state == State.IDLE
    assert turn.stages["wake_check"]["decision"] == "interrupted"
    # an intent already executed: it is only logged, the turn goes on
    c = _ctl()
    tid = answer(c, 0.0, "turn on the light")
    c.handle(ev.IntentExecuted(1.65, tid, {"name": "HassTurnOn"}))
    assert checked(c, 1.7, tid, False, "Hey Travis") == [] and c.state == State.THINKING
    assert c.turn.stages["wake_check"]["decision"] == "too_late"
    # already speaking: only logged
    c = _ctl()
    tid = answer(c, 0.0)
    c.handle(ev.ReplyStarted(1.65, tid))
    assert checked(c, 1.7, tid, False) == [] and c.state == State.SPEAKING
    # an unknown or finished turn: nothing
    assert checked(c, 1.8, "t99", False) == [] and c.state == State.SPEAKING


def test_a_rejected_second_look_never_touches_a_newer_turn():
    c = _ctl()
    wake(c, 0.0)
    t1 = c.turn.turn_id
    c.handle(ev.NoSpeech(3.0, t1))  # that turn ended by itself
    wake(c, 5.0)
    t2 = c.turn.turn_id
    assert checked(c, 5.2, t1, False) == [] and c.state == State.LISTENING and c.turn.turn_id == t2
