"""`edge-agent wake enroll --record`: the take rules and the prompt script (pure), then the whole session through the
real sounddevice path on virtual PulseAudio devices: prompts spoken by Piper into the virtual speaker, a simulated
household member answering each prompt with real speech into the virtual microphone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio import SAMPLE_RATE, read_wav
from edge_agent.wake_record import Script, TakeCheck, TakeRules, check_take, phrase_of


def tone(seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


# ------------------------------------------------------------------------------------------------ take rules


def test_a_good_wake_take_passes():
    c = check_take(tone(1.2, 0.1), 0.9, "wake")
    assert c.ok and c.problems == () and -24 < c.rms_dbfs < -22  # a 0.1 sine: RMS 0.0707 = -23 dBFS


def test_nothing_heard():
    c = check_take(None, 0.0, "wake")
    assert not c.ok and c.problems == ("nothing heard",)


def test_too_short_and_too_long_wake_takes():
    assert check_take(tone(0.8, 0.1), 0.3, "wake").problems[0].startswith("too short (0.3 s")
    assert check_take(tone(4.0, 0.1), 3.4, "wake").problems[0].startswith("too long (3.4 s")
    # the recording hit its cap while the member still talked: too long whatever the VAD measured
    assert check_take(tone(4.0, 0.1), 2.0, "wake", cut_short=True).problems[0].startswith("too long")
    assert check_take(tone(1.0, 0.1), 0.4, "wake").ok and check_take(tone(3.2, 0.1), 3.0, "wake").ok


def test_too_quiet():
    # amplitude 0.01: RMS -43 dBFS, under the -40 dBFS floor; 0.02 (-37 dBFS) passes
    assert check_take(tone(1.0, 0.01), 0.8, "wake").problems[0].startswith("too quiet (-43 dBFS")
    assert check_take(tone(1.0, 0.02), 0.8, "wake").ok


def test_clipped():
    loud = np.clip(1.2 * 32767 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE), -32768, 32767)
    c = check_take(loud.astype(np.int16), 0.8, "wake")
    assert not c.ok and c.problems[-1].startswith("clipped") and c.clipped > 0.3
    # a few samples at the rails (0.05 %) are a peak, not clipping
    x = tone(1.0, 0.1)
    x[:8] = 32767
    assert check_take(x, 0.8, "wake").ok


def test_other_speech_take_needs_a_few_seconds():
    assert check_take(tone(2.5, 0.1), 2.0, "other").problems[0].startswith("too short (2.0 s of speech")
    assert check_take(tone(12.0, 0.1), 11.0, "other").ok  # no upper limit on other speech
    assert check_take(tone(4.0, 0.1), 3.5, "other", TakeRules(other_min_s=4.0)).problems[0].startswith("too short")


def test_phrase_of_the_model():
    assert phrase_of("hey_jarvis") == "hey Jarvis"
    assert phrase_of("hey_jarvis_v2") == "hey Jarvis"
    assert phrase_of("okay_nabu_v2", "Okay Nabu") == "Okay Nabu"


# ------------------------------------------------------------------------------------------------ the script

GOOD = TakeCheck(True, (), 1.0, -20.0, 0.0)
SILENT = TakeCheck(False, ("nothing heard",), 0.0, -120.0, 0.0)


def other(s: float) -> TakeCheck:
    return TakeCheck(True, (), s, -20.0, 0.0)


def test_script_two_members_in_order():
    s = Script(["anna", "ben"], "hey Jarvis", takes=3, other_target_s=10.0)
    seen = []
    while (step := s.current()) is not None:
        seen.append((step.member, step.kind, step.index, step.attempt))
        s.took(other(6.0) if step.kind == "other" else GOOD)
    assert seen == [("anna", "wake", 1, 1), ("anna", "wake", 2, 1), ("anna", "wake", 3, 1),
                    ("anna", "other", 1, 1), ("anna", "other", 2, 1),  # 6 s + 6 s reach the 10 s asked for
                    ("ben", "wake", 1, 1), ("ben", "wake", 2, 1), ("ben", "wake", 3, 1),
                    ("ben", "other", 1, 1), ("ben", "other", 2, 1)]
    assert s.done and s.failed is None


def test_script_prompts_name_the_member_and_the_phrase():
    s = Script(["anna"], "hey Jarvis", takes=3)
    assert s.current().text == "anna, say 'hey Jarvis' now."
    s.took(GOOD)
    assert s.current().text == "Say 'hey Jarvis' again."
    s.took(TakeCheck(False, ("too quiet (-45 dBFS; at least -40): speak up",), 0.8, -45.0, 0.0))
    assert s.current().text == "Once more: too quiet. Say 'hey Jarvis' now." and s.current().attempt == 2
    s.took(GOOD)
    s.took(GOOD)
    assert s.current().kind == "other" and "anything else" in s.current().text


def test_script_bounded_retries_then_fails():
    s = Script(["anna"], "hey Jarvis", takes=3, retries=2)
    s.took(GOOD)
    for _ in range(3):  # the first try and two retries
        assert s.current() is not None
        s.took(SILENT)
    assert s.current() is None and not s.done
    assert s.failed == "anna: wake take 2 was still bad after 3 tries: nothing heard"


def test_script_other_speech_stops_after_max_takes():
    s = Script(["anna"], "hey Jarvis", takes=3, other_target_s=10.0, max_other_takes=2)
    for _ in range(3):
        s.took(GOOD)
    s.took(other(3.0))
    assert s.current().text == "Please keep talking: a few more sentences of anything."
    s.took(other(3.0))
    assert s.done  # 6 s after two takes: enough to train on, the report says how much


# ------------------------------------------------------------------------------------------------ the real session

OTHER_TEXT = ("I went to the market this morning and bought apples, bread and a piece of cheese. Then I walked home "
              "along the river, where the ducks were swimming. In the afternoon I will read a book and call my sister.")


class Member:
    """A household member: reads the CLI's lines as they come; each time it listens, answers into the virtual
    microphone (the wake clips in turn for a wake take; the long reading for other speech). ``silent`` never
    answers. Every line is kept; waits are deadlines on the lines, never fixed sleeps."""

    def __init__(self, proc: subprocess.Popen, va, wake: list, other: Path, silent: bool = False) -> None:
        self.proc, self.va, self.wake, self.other, self.silent = proc, va, wake, other, silent
        self.lines: list[str] = []
        self.answered: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.silent or not line.startswith("listening ("):
                continue
            if " wake take " in line:
                clip = self.wake[len([a for a in self.answered if a == "wake"]) % len(self.wake)]
                self.answered.append("wake")
            else:
                clip = self.other
                self.answered.append("other")
            self.va.say(clip)

    def wait_line(self, pred, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for x in list(self.lines):
                if pred(x):
                    return x
            if self.proc.poll() is not None and not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError("no such line; got:\n" + "\n".join(self.lines[-40:]))


@pytest.fixture(scope="module")
def pulse():
    from pulse import VirtualAudio

    va = VirtualAudio().start()
    yield va
    va.stop()


def enroll_cmd(tmp: Path, *extra: str, config: str = "") -> list[str]:
    cfg = tmp / "config.yaml"
    cfg.write_text("site: {site_id: test, area: Kitchen}\n" + config)
    return [sys.executable, "-u", "-m", "edge_agent", "-c", str(cfg), "wake", "enroll", "--model", "hey_jarvis",
            "--out", str(tmp / "v.json"), "--keep", str(tmp / "takes"), *extra]


@pytest.mark.slow
def test_enroll_from_the_microphone_with_spoken_prompts(pulse, store, speech_dir, tmp_path):
    """Prompts spoken by Piper into the virtual speaker; the member answers each into the virtual microphone; the
    takes are cut by the VAD and saved; the verifier is written, loads, and the report counts the clips."""
    from conftest import ROOT, piper_wav, require_model

    from edge_agent.wake_verifier import load

    for m in ("hey_jarvis", "oww_features", "silero_vad", "piper_joe_medium"):
        require_model(store, m)
    wake = [piper_wav(store, "Hey Jarvis.", speech_dir / f"hj-{s}.wav", length_scale=s) for s in (0.9, 1.0, 1.1, 1.2)]
    other = piper_wav(store, OTHER_TEXT, speech_dir / "other-talk.wav")
    # the first answer is clipped (said far too close to the microphone): it must be refused and asked again
    clipped = np.clip(read_wav(wake[1]).astype(np.int32) * 12, -32768, 32767).astype(np.int16)
    pulse.start_recording()
    t0 = time.monotonic()
    proc = subprocess.Popen(enroll_cmd(tmp_path, "--record", "anna"), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(pulse.env, EDGE_AGENT_CACHE=str(tmp_path / "cache")))
    member = Member(proc, pulse, [clipped, *wake], other)
    try:
        code = proc.wait(150)
    finally:
        if proc.poll() is None:
            proc.kill()
    member.thread.join(5)
    wall = time.monotonic() - t0
    speaker = pulse.stop_recording()
    err = proc.stderr.read()
    out = "\n".join(member.lines)
    assert code == 0, f"exit {code}\n{out}\n{err[-3000:]}"
    assert "prompts are printed here" not in out  # there is a speaker: the prompts were spoken
    assert "prompt: anna, say 'hey Jarvis' now." in out
    assert "  not used: clipped (" in out and "prompt: Once more: clipped. Say 'hey Jarvis' now." in out, out
    # the prompts reached the virtual speaker: several seconds of sound on its monitor
    loud = np.abs(speaker.astype(np.int32)) > 500
    assert loud.sum() / pulse.rec_rate > 3.0, f"{loud.sum() / pulse.rec_rate:.1f} s of sound on the speaker"
    # the takes: 4 wake takes and the other speech, each cut to the utterance with a little padding
    takes = tmp_path / "takes" / "anna"
    wakes = sorted(takes.glob("wake-*.wav"))
    others = sorted(takes.glob("other-*.wav"))
    assert len(wakes) == 4 and others, sorted(takes.iterdir())
    for w, src in zip(wakes, wake, strict=True):
        n, m = len(read_wav(w)) / SAMPLE_RATE, len(read_wav(src)) / SAMPLE_RATE
        assert 0.5 < n < m + 1.5, (w.name, n, m)  # the clip plus at most the padding, never the silence around it
    talk = sum(len(read_wav(o)) for o in others) / SAMPLE_RATE
    assert talk > 8.0, talk
    assert not list(tmp_path.glob(".takes.partial*"))
    # the verifier: written, loads, and the report says what it used
    v = load(tmp_path / "v.json")
    assert v.model == "hey_jarvis"
    assert "anna: 4 wake clips (3 to train, 1 held back)" in out, out
    assert "held back, verifier trained without them: wake clips accepted" in out
    print(f"enroll --record: {wall:.1f} s wall; {len(others)} other-speech take(s), {talk:.1f} s\n" + out)


@pytest.mark.slow
def test_a_silent_member_times_out_and_nothing_is_written(pulse, tmp_path):
    from conftest import ROOT

    # no such speaker: the prompts are printed instead, and the first line says so
    proc = subprocess.Popen(enroll_cmd(tmp_path, "--record", "anna", "--listen-timeout", "1.5", "--retries", "1",
                                       config="audio: {output_device: no-such-speaker}\n"), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(pulse.env, EDGE_AGENT_CACHE=str(tmp_path / "cache")))
    member = Member(proc, pulse, [], Path("/dev/null"), silent=True)
    code = proc.wait(90)
    member.thread.join(5)
    err = proc.stderr.read()
    out = "\n".join(member.lines)
    assert code == 2, (code, out, err)
    assert "prompts are printed here, not spoken (no speaker: audio.output_device: no output device matches " \
        "'no-such-speaker')" in out, out
    assert out.count("prompt: ") == 2  # the first try and one retry
    assert "anna: wake take 1 was still bad after 2 tries: nothing heard" in err, err
    assert not (tmp_path / "v.json").exists() and not (tmp_path / "takes").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["config.yaml"], ["cache", "config.yaml"])


@pytest.mark.slow
def test_ctrl_c_mid_session_leaves_nothing_behind(pulse, store, speech_dir, tmp_path):
    import signal

    from conftest import ROOT, piper_wav

    wake = [piper_wav(store, "Hey Jarvis.", speech_dir / "hj-1.0.wav")]
    proc = subprocess.Popen(enroll_cmd(tmp_path, "--record", "anna", "--no-speak"), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(pulse.env, EDGE_AGENT_CACHE=str(tmp_path / "cache")))
    member = Member(proc, pulse, wake, Path("/dev/null"))
    try:
        member.wait_line(lambda x: x.startswith("listening (anna, wake take 2"), 60)  # take 1 is saved by now
        assert list(tmp_path.glob(".takes.partial/anna/wake-1.wav"))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    member.thread.join(5)
    assert code == 130, (code, member.lines, proc.stderr.read()[-2000:])
    assert "interrupted: no takes and no verifier written" in member.lines
    assert sorted(p.name for p in tmp_path.iterdir()) in (["config.yaml"], ["cache", "config.yaml"])
