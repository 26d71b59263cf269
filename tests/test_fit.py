"""Does the configuration fit the board: the projection of both critical paths from measured stage times, with
plain numbers (this machine's figures, and the published Pi 4 / Pi 5 ones), and the advice with its config lines."""

from __future__ import annotations

import json

import pytest

from edge_agent.config import load_settings
from edge_agent.fit import Speed, judge, projected_answer_s, projected_command_s

from .conftest import require_model, run_cli

S = load_settings(data={"mqtt": {"enabled": False}})
THIS_MACHINE = Speed(stt_decode_s=0.30, utterance_s=3.5, llm_prompt_tps=83, llm_gen_tps=25, tts_first_s=0.30)
PI5 = Speed(stt_decode_s=1.5, utterance_s=3.5, llm_prompt_tps=60, llm_gen_tps=21, tts_first_s=0.45)
PI4 = Speed(stt_decode_s=3.4, utterance_s=3.5, llm_prompt_tps=20, llm_gen_tps=8, tts_first_s=1.1)


def test_projection_hides_the_decode_in_the_trailing_silence():
    # 0.4 s silence, of which 0.28 s after the speculation starts: a 0.30 s decode costs only 0.02 s more
    assert projected_answer_s(THIS_MACHINE, S) == pytest.approx(0.4 + 0.02 + 0.30 + 40 / 83 + 8 / 25)
    # a complete command ends as soon as the speculation (0.12 s + its 0.30 s decode) has judged it
    assert projected_command_s(THIS_MACHINE, S) == pytest.approx(0.12 + 0.30 + 0.03 + 0.30)
    fast = Speed(stt_decode_s=0.01, utterance_s=3.5, llm_prompt_tps=83, llm_gen_tps=25, tts_first_s=0.30)
    assert projected_command_s(fast, S) == pytest.approx(0.15 + 0.03 + 0.30)  # never before 0.15 s of silence
    off = load_settings(data={"mqtt": {"enabled": False}, "vad": {"early_end": False}})
    assert projected_command_s(THIS_MACHINE, off) == pytest.approx(0.4 + 0.02 + 0.03 + 0.30)


def test_this_machine_fits_both_budgets():
    assert [(v.name, v.ok) for v in judge(THIS_MACHINE, S)] == [("speed: commands", True), ("speed: answers", True)]


@pytest.mark.parametrize("board", [PI5, PI4])
def test_a_pi_with_whisper_is_told_to_use_the_streaming_engine(board):
    cmd, ans = judge(board, S)[:2]
    assert not cmd.ok and "engine: vosk" in cmd.fix and "vosk_small_en" in cmd.fix
    assert "Whisper cannot finish in time" in cmd.detail
    assert not ans.ok and "backend: openai" in ans.fix


def test_with_vosk_the_advice_is_about_the_silence_not_the_engine():
    vosk = load_settings(data={"mqtt": {"enabled": False}, "stt": {"engine": "vosk"}})
    slow = Speed(stt_decode_s=0.9, utterance_s=3.5, llm_prompt_tps=60, llm_gen_tps=21, tts_first_s=0.45)
    cmd = judge(slow, vosk)[0]
    assert not cmd.ok and "trailing_silence_s" in cmd.fix and "engine: vosk" not in cmd.fix


@pytest.mark.slow
def test_check_speed_measures_this_machine(store):
    for m in ("whisper_tiny_en", "qwen2_5_coder_0_5b", "piper_joe_medium"):
        require_model(store, m)
    proc = run_cli("check", "--speed", "--json", timeout=600)
    report = json.loads(proc.stdout)
    speed = {c["what"]: c for c in report["checks"] if c["what"].startswith("speed:")}
    assert set(speed) == {"speed: commands", "speed: answers", "speed: audio loop"}, report
    assert "of one core here" in speed["speed: audio loop"]["detail"]
    assert speed["speed: audio loop"]["status"] == "ok"  # this machine's loop has room to spare
    assert all(c["status"] in ("ok", "warn") for c in speed.values()), speed
    assert "s from the end of speech to the first audio" in speed["speed: commands"]["detail"]
    assert " tok/s" in speed["speed: answers"]["detail"] and " 0 tok/s" not in speed["speed: answers"]["detail"]


def test_a_board_too_slow_to_speculate_leaves_the_background_work_off():
    """A Pi 4's decode (3.4 s) is longer than the 1.08 s the endpoint waits for one: the speculation and the idle
    prefill stay off (auto), the transcript starts at the endpoint, and forcing either on is advised against."""
    bg = judge(PI4, S)[2]
    assert bg.name == "speed: background work" and bg.ok and "stay off here (auto)" in bg.detail
    forced = load_settings(data={"mqtt": {"enabled": False}, "llm": {"idle_prefill": "on"}})
    bg = judge(PI4, forced)[2]
    assert not bg.ok and "llm.idle_prefill forced on" in bg.detail and "idle_prefill: auto" in bg.fix
    assert projected_command_s(PI4, S) == pytest.approx(0.4 + 3.4 + 0.03 + 1.1)  # no early end without a verdict
    assert len(judge(THIS_MACHINE, forced)) == 2  # where a decode fits there is nothing to say


def test_a_loop_that_takes_too_much_of_a_core_is_told_what_to_drop():
    """The audio loop (wake word + VAD on every chunk) measured in CPU seconds per second of audio: under the limit
    nothing to change; over it, one wake word only, and the stop words dropped where they are configured."""
    from dataclasses import replace

    from edge_agent.fit import LOOP_SHARE_MAX, loop_verdict

    assert loop_verdict(THIS_MACHINE, S) is None  # not measured: nothing said
    light = loop_verdict(replace(THIS_MACHINE, loop_cpu_per_s=0.06), S)
    assert light is not None and light.ok and "6% of one core" in light.detail
    heavy = replace(PI4, loop_cpu_per_s=LOOP_SHARE_MAX + 0.2)
    v = loop_verdict(heavy, S)
    assert v is not None and not v.ok and "fall behind the microphone" in v.detail and "one wake word" in v.fix
    stops = load_settings(data={"mqtt": {"enabled": False}, "wake": {"stop_models": [{"model": "hey_jarvis"}]}})
    assert "stop_models: []" in loop_verdict(heavy, stops).fix
    assert [x.name for x in judge(heavy, S)][-1] == "speed: audio loop"
