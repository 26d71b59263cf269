"""`edge-agent run` in file mode through the real entry point: the same loop over a recording, then exit."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.audio import read_wav, rms_dbfs

from .conftest import ROOT, run_cli
from .speech import compose

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def request_wav(store, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_run")
    # a request every plausible transcription of which the fast path answers the same way ("kitchen light" was
    # once heard as "kitchen white" on a busy machine, which asks back instead of acting)
    return compose(store, [("silence", 0.5), ("wake", "Hey Jarvis!"), ("silence", 0.5),
                           ("piper", "What time is it?"), ("silence", 1.0)], d / "req.wav")


def _no_sound(tmp_path: Path) -> dict:
    return {"XDG_RUNTIME_DIR": str(tmp_path), "PULSE_SERVER": f"unix:{tmp_path}/nothing"}


def test_file_mode_writes_the_reply_and_the_turn_log(request_wav, tmp_path):
    out, log = tmp_path / "out.wav", tmp_path / "turns.jsonl"
    proc = run_cli("run", "--input", str(request_wav), "--output", str(out), "--turn-log", str(log), "--no-mqtt",
                   "--home", str(ROOT / "tests" / "data" / "home.yaml"), env=_no_sound(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    turns = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(turns) == 1 and [i["name"] for i in turns[0]["intents"]] == ["HassGetCurrentTime"], turns
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1
    audio = read_wav(out)
    assert rms_dbfs(audio) > -60 and np.abs(audio).max() > 1000, "the reply is not in the output file"


def test_file_mode_without_output_on_a_machine_without_sound(request_wav, tmp_path):
    """No --output and no sound card: replies are logged and timed, nothing fails."""
    log = tmp_path / "turns.jsonl"
    proc = run_cli("run", "--input", str(request_wav), "--turn-log", str(log), "--no-mqtt",
                   "--home", str(ROOT / "tests" / "data" / "home.yaml"), env=_no_sound(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    turns = [json.loads(x) for x in log.read_text().splitlines()]
    assert turns and turns[0]["reply_spoken"], turns


def test_exit_while_the_tts_warms_replies_is_clean(tmp_path):
    """A file that ends at once: the tts-warm thread is inside a synthesis when the loop ends, and the daemon must
    stop it and exit 0 (a daemon thread inside ONNX Runtime at interpreter exit aborts the process)."""
    from edge_agent.audio import write_wav

    wav = tmp_path / "quiet.wav"
    write_wav(wav, np.zeros(1600, dtype=np.int16))
    for attempt in range(2):
        proc = run_cli("run", "--input", str(wav), "--no-mqtt", "--home", str(ROOT / "tests" / "data" / "home.yaml"),
                       env=_no_sound(tmp_path), timeout=300)
        assert proc.returncode == 0, (attempt, proc.stderr[-3000:])
        assert "terminate called" not in proc.stderr
        assert "tts: warm-up stopped at shutdown" in proc.stderr or "likely replies warmed" in proc.stderr


def test_realtime_needs_an_input_file():
    proc = run_cli("run", "--realtime")
    assert proc.returncode == 2 and "--realtime only makes sense with --input" in proc.stderr


def test_missing_input_file_is_a_clear_error(tmp_path):
    proc = run_cli("run", "--input", str(tmp_path / "nope.wav"), "--no-mqtt", env=_no_sound(tmp_path))
    assert proc.returncode == 2 and "no such audio file" in proc.stderr and "Traceback" not in proc.stderr
