"""Two rooms, one home server: two real daemons (distinct site ids, each with its own microphone on a private
PulseAudio) asked at the same moment, against one real Mosquitto, one ``llama_cpp.server`` with the project's GGUF
and one ``wyoming-faster-whisper`` (the reduced ``tools/rooms_bench.py``). Every request is answered, through the
shared servers, and each command's intent arrives on its own site's topic and on no other."""

from __future__ import annotations

import sys

import pytest

from .conftest import ROOT, require_model

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "tools"))


def test_two_rooms_asked_at_once_share_the_servers(tmp_path, store):
    import rooms_bench

    for m in ("hey_jarvis", "oww_features", "silero_vad", "whisper_tiny_en", "qwen2_5_coder_0_5b", "piper_joe_medium"):
        require_model(store, m)
    # the servers' queues, not their fallbacks, are under test: deadlines long enough for two rooms on a busy
    # machine (the fallbacks are tests/test_stt_fallback.py's and tests/test_remote_llm.py's)
    rig = rooms_bench.Rig(tmp_path, rooms=2, first_token_timeout_s=90.0, read_timeout_s=60.0, llm_timeout_s=150.0,
                          stt_timeout_s=60.0)
    try:
        rig.start()
        rig.prime_llm_server()  # the fixed prefix, evaluated once before the rooms start (as on a home server)
        requests = [r for r in rooms_bench.REQUESTS if r.kind in ("fast", "question")]
        phase = rig.run_phase("both", requests, turn_timeout_s=150.0)
    finally:
        rig.close()
    rows = [r for rnd in phase["rounds"] for r in rnd["rows"]]
    print("\n" + rooms_bench.report([phase], 2, {}))
    assert not phase["errors"], phase["errors"]
    assert len(rows) == 4 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    # the two rooms heard the same words at the same moment, and both went through the shared STT server
    for rnd in phase["rounds"]:
        assert {r["site"] for r in rnd["rows"]} == {"room1", "room2"}
    assert all(r["stt_backend"] == "wyoming" and not r["stt_fallback"] for r in rows), rows
    fast = [r for r in rows if r["kind"] == "fast"]
    assert all(r["intents_on_topics"] == [f"{r['site']}/HassTurnOff"] for r in fast), fast
    question = [r for r in rows if r["kind"] == "question"]
    assert all(r["used_llm"] and r["llm_backends"] and set(r["llm_backends"]) == {"openai"} for r in question), question
