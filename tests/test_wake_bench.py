"""tools/wake_bench.py: the sweep counts events with the detector's own rule, and the PNG writer it shares
(tools/pngplot.py) writes a PNG."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import pngplot  # noqa: E402
import wake_bench as wb  # noqa: E402


def test_count_events_rising_edges_and_refractory():
    t = np.arange(0, 10, 0.1)
    s = np.zeros_like(t)
    s[10:13] = 0.9   # one event at 1.0 s (three frames above: one rising edge)
    s[20] = 0.6      # 2.0 s: only above the low cutoff, within 2 s of the first
    s[40:42] = 0.95  # 4.0 s
    trace = np.stack([t, s], axis=1)
    assert wb.count_events(trace, 0.8, 2.0) == 2
    assert wb.count_events(trace, 0.5, 2.0) == 2  # 2.0 s is refractory after 1.0 s
    assert wb.count_events(trace, 0.5, 0.5) == 3
    assert wb.count_events(trace, 0.99, 2.0) == 0
    # each detection carries the score of the frame that crossed the cutoff, as the live detector's does
    assert wb.events(trace, 0.5, 0.5) == [(1.0, 0.9), (2.0, 0.6), (4.0, 0.95)]
    assert wb.events(np.zeros((0, 2)), 0.5, 2.0) == []


def test_false_accepts_are_traced_to_their_scene():
    """Each event on the one timeline of all negative files goes back to its file and scene (the manifest of
    make_negative_set.py); a file's offset includes the gap the bench leaves between files."""
    files = [{"file": "neg-000.wav", "seconds": 60.0, "segments": [
                 {"scene": "tv", "background": "music", "snr_db": 0.0, "start_s": 0.0, "seconds": 30.0},
                 {"scene": "near_miss", "start_s": 30.0, "seconds": 30.0}]},
             {"file": "neg-001.wav", "seconds": 60.0, "segments": [
                 {"scene": "quiet", "start_s": 0.0, "seconds": 60.0}]}]
    starts = [(0.0, files[0]), (70.0, files[1])]
    got = wb.fa_by_scene([(12.0, 0.7), (31.5, 0.9), (45.0, 0.6), (75.0, 0.55)], starts)
    assert list(got) == ["near_miss", "tv", "quiet"]  # the most first
    assert got["near_miss"]["fa"] == 2 and got["tv"]["fa"] == 1 and got["quiet"]["fa"] == 1
    assert got["tv"]["events"] == [{"file": "neg-000.wav", "t_s": 12.0, "score": 0.7, "background": "music",
                                    "snr_db": 0.0}]
    assert got["quiet"]["events"][0]["file"] == "neg-001.wav" and got["quiet"]["events"][0]["t_s"] == 5.0
    assert wb.scene_hours({"files": files}) == {"near_miss": round(30 / 3600, 3), "quiet": round(60 / 3600, 3),
                                                "tv": round(30 / 3600, 3)}


def test_second_look_bench_decides_each_band_from_the_transcripts():
    import wake_second_look_bench as slb

    true = {"score": 0.62, "transcript": "Hey Jarvis, what time is it?"}
    near = {"score": 0.62, "transcript": "Hey Jack, pass me the salt."}
    clear = {"score": 0.95}
    assert slb.accepted(true, 0.5, 0.3, "hey jarvis") and not slb.accepted(near, 0.5, 0.3, "hey jarvis")
    assert slb.accepted(near, 0.5, 0.0, "hey jarvis")  # band 0: the second look is off
    assert slb.accepted(clear, 0.5, 0.3, "hey jarvis")
    assert slb.accepted({**near, "peak": 0.97}, 0.5, 0.3, "hey jarvis", key="peak")  # its run rose out of the band
    # a transcript that spells the name otherwise is decided by Whisper's probability of it, as the engine does
    spelled = {"score": 0.62, "transcript": "Hey, Jardis.", "name_prob": 0.71}
    assert slb.accepted(spelled, 0.5, 0.3, "hey jarvis")
    assert not slb.accepted({**spelled, "name_prob": 0.08}, 0.5, 0.3, "hey jarvis")


def test_png_writer_round_trip(tmp_path):
    img = np.zeros((7, 5, 3), np.uint8)
    img[3, 2] = (10, 200, 30)
    path = tmp_path / "x.png"
    pngplot.write_png(path, img)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (5, 7)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    raw = zlib.decompress(data[start:start + length])
    rows = np.frombuffer(raw, np.uint8).reshape(7, 1 + 15)
    assert (rows[:, 0] == 0).all() and tuple(rows[3, 1 + 6:1 + 9]) == (10, 200, 30)


def test_wake_look_renderings_runs_the_real_detector_and_look(store, tmp_path):
    """tools/wake_look_renderings.py on real parts (Piper, microWakeWord, Whisper tiny.en): every fresh rendering of
    "Hey Jarvis!" is detected, and one that fired in the band (the whole band, 0.97-0.9999) was looked at with a
    transcript."""
    import json

    import wake_look_renderings as wlr

    from .conftest import require_model

    for m in ("hey_jarvis_v2", "oww_features", "whisper_tiny_en", "piper_joe_medium"):
        require_model(store, m)
    out = tmp_path / "r.json"
    assert wlr.main(["Hey Jarvis!", "-n", "3", "--band", "0.0299", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3 and all(r.get("score", 0) >= 0.97 for r in rows), rows
    looks = [r["look0.0"] for r in rows if "look0.0" in r]
    assert len(looks) == 3 and all(lk["transcript"] for lk in looks), rows
    assert sum(lk["accepted"] for lk in looks) >= 2, rows  # about 1 in 60 is heard "Hey, Jardis."
