"""tools/reply_gaps.py on the real daemon: a question whose answer takes several sentences, said through `run` file
mode in real time against a real Mosquitto; the turn log carries the reply's ``stages.playback_gaps``."""

from __future__ import annotations

import json
import sys

import pytest

from edge_agent.turn import GAP_MIN_S

from .conftest import ROOT, require_model

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "tools"))


def test_a_long_answer_says_whether_its_voice_ran_dry(tmp_path, store, capsys):
    import reply_gaps

    for m in ("hey_jarvis_v2", "oww_features", "silero_vad", "whisper_tiny_en", "qwen2_5_coder_0_5b",
              "piper_joe_medium"):
        require_model(store, m)
    out = tmp_path / "gaps.json"
    assert reply_gaps.main(["-n", "1", "--answer-s", "35", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    # the question reached the LLM (not one exact transcription of it: Whisper tiny.en's spelling varies by CPU)
    assert row["transcript"] and row["used_llm"] and row["outcome"] == "answered", row
    assert row["sentences"] >= 2 and row["playback_s"] > 2.0, row
    gaps = row["gaps"]  # a reply of two or more pieces always has the record, zeros when it never ran dry
    assert set(gaps) == {"count", "total_s", "max_s"}, row
    assert gaps["count"] >= 0 and gaps["total_s"] >= gaps["count"] * GAP_MIN_S - 1e-6
    assert (gaps["max_s"] >= GAP_MIN_S) == (gaps["count"] > 0) and gaps["max_s"] <= gaps["total_s"] + 1e-6
    assert res["summary"]["replies_of_two_or_more_sentences"] == 1
    assert "ran dry" in capsys.readouterr().out
