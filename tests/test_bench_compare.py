"""The bench's pure parts around its figures: the two sequential baselines' summary and routing, the three-column
comparison (tools/edge_bench/compare.py) with its markdown and stacked-stage PNG, and the shared PNG writer
(tools/pngplot.py). Small synthetic result dicts; no models."""

from __future__ import annotations

import struct
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import pngplot  # noqa: E402
from edge_bench import compare  # noqa: E402
from edge_bench import run as bench  # noqa: E402


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB, filter-0 PNG as written by pngplot, decoded with zlib alone (height × width × 3)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 2)
            size = (w, h)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert size is not None
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, 3)


# --------------------------------------------------------------------------------------------------- pngplot


def test_png_round_trip_and_text(tmp_path):
    img = pngplot.canvas(40, 12)
    pngplot.rect(img, 2, 3, 6, 5, (10, 200, 30))
    drawn = pngplot.text(img, 10, 2, "Hi", (255, 0, 0))
    assert drawn == pngplot.text_width("HI") == 11  # two glyphs of 5 px and one column between them
    pngplot.write_png(tmp_path / "x.png", img)
    back = decode_png((tmp_path / "x.png").read_bytes())
    assert back.shape == (12, 40, 3)
    assert tuple(back[3, 2]) == (10, 200, 30) and tuple(back[4, 5]) == (10, 200, 30)
    assert tuple(back[5, 2]) == (255, 255, 255) and tuple(back[3, 6]) == (255, 255, 255)  # the end is exclusive
    red = np.all(back == (255, 0, 0), axis=2)
    ys, xs = np.nonzero(red)
    assert ys.min() >= 2 and ys.max() <= 8 and xs.min() >= 10 and xs.max() <= 20
    assert red[2:9, 10:15].sum() == pngplot.FONT["H"].sum()  # the H glyph, pixel for pixel


def test_text_is_clipped_and_unknown_characters_are_drawn_as_a_question_mark():
    img = pngplot.canvas(8, 8)
    pngplot.text(img, 5, 5, "WW", scale=2)  # runs off the canvas: no error
    assert (img != 255).any()
    a, b = pngplot.canvas(6, 7), pngplot.canvas(6, 7)
    pngplot.text(a, 0, 0, "§")
    pngplot.text(b, 0, 0, "?")
    assert (a == b).all() and (a != 255).any()
    assert pngplot.text_width("a → b") == pngplot.text_width("A -> B")


# --------------------------------------------------------------------------------------------------- synthetic runs


def e2e(scale: float) -> dict:
    """Stage summaries as ``run.aggregate`` writes them; ``scale`` slows the whole run down."""

    def s(med: float, p95: float, n: int) -> dict:
        return {"n": n, "median_ms": med * scale, "p95_ms": p95 * scale, "mean_ms": med * scale}

    return {"fast": {"n": 4, "stages": {"endpoint": s(150, 400, 4), "transcript": s(160, 420, 4),
                                        "intent_or_token": s(170, 430, 4), "first_audio": s(300, 600, 4)}},
            "llm": {"n": 2, "stages": {"endpoint": s(400, 420, 2), "transcript": s(390, 430, 2),  # below the endpoint
                                       "intent_or_token": s(800, 900, 2), "first_audio": s(1500, 1700, 2)}}}


def rows() -> list[dict]:
    def turn(**stages):
        return {"turn": {"stages": stages}}

    return [{"kind": "command", **turn(stt_speculation_cpu_s=0.1, brain_cpu_s=0.01, tts_first_cpu_s=0.2)},
            {"kind": "command", **turn(stt_speculation_cpu_s=0.3, brain_cpu_s=0.03, tts_first_cpu_s=0.2)},
            {"kind": "command", **turn(stt_speculation_cpu_s=0.2, brain_cpu_s=0.02)},
            {"kind": "question", **turn(brain_cpu_s=1.5, llm_calls=1, llm_uncached_tokens=20, llm_gen_tokens=12)},
            {"kind": "question", **turn(brain_cpu_s=2.5, llm_calls=2, llm_uncached_tokens=40, llm_gen_tokens=30)}]


def base_row(pipeline: str, kind: str, engine_s: float, endpoint_s: float, answer_s: float, route: str) -> dict:
    stt_s, tts_s = 0.1, 0.2
    return {"pipeline": pipeline, "kind": kind, "engine_first_audio_s": engine_s, "endpoint_s": endpoint_s,
            "stt_s": stt_s, "answer_s": answer_s, "tts_s": tts_s,
            "first_audio_s": endpoint_s + stt_s + answer_s + tts_s,
            "stt_cpu_s": 0.1, "answer_cpu_s": answer_s, "tts_cpu_s": 0.2, "route": route,
            "used_llm": route == "llm"}


def baselines() -> list[dict]:
    out = []
    for engine_s in (0.2, 0.25, 0.3):  # commands
        out.append(base_row("naive", "command", engine_s, 0.4, 0.01, "brain"))
        out.append(base_row("ha_chain", "command", engine_s, 0.7, 0.01, "templates"))
    out.append(base_row("naive", "command", 0.35, 0.4, 0.01, "brain"))  # the engine's tolerant tier took it ...
    out.append(base_row("ha_chain", "command", 0.35, 0.7, 1.0, "llm"))  # ... HA's templates missed: its LLM answered
    for engine_s in (1.0, 1.2):  # questions
        out.append(base_row("naive", "question", engine_s, 0.4, 1.3, "brain"))
        out.append(base_row("ha_chain", "question", engine_s, 0.7, 1.3, "llm"))
    return out


def result(budget: str | None, scale: float) -> dict:
    res = {"mode": "quick", "date": "2026-11-30 05:00 UTC", "load_start": [1.0, 0.8, 0.7],
           "load_end": [1.5, 1.0, 0.8], "machine": {"cores": 2, "cpu_model": "Test CPU"}, "e2e": e2e(scale),
           "rows": rows(), "baseline_summary": bench.summarize_baselines(baselines()), "endpoint_wait_s": 0.4}
    if budget:
        cpus = {"pi5": 0.38, "pi4": 0.17}[budget]
        res["cpu_budget"] = {"spec": budget, "cpus": cpus, "quota_us": int(cpus * 10000), "period_us": 10000,
                             "throttled_periods": 10, "periods": 100}
    else:
        res["cpu_budget"] = None
    return res


@pytest.fixture
def three():
    return [result(None, 1.0), result("pi5", 2.0), result("pi4", 4.0)]


# --------------------------------------------------------------------------------------------------- baselines


def test_baselines_are_summarized_per_pipeline_and_kind_against_the_engine_on_the_same_requests():
    s = bench.summarize_baselines(baselines())
    assert set(s) == {"naive", "ha_chain"} and set(s["naive"]) == {"fast", "llm"}
    ha = s["ha_chain"]["fast"]
    assert ha["n"] == 4 and ha["routes"] == {"templates": 3, "llm": 1} and ha["used_llm"] == 1
    # engine median over the same 4 commands 0.275 s; the chain's 1.01 s (the HA-template commands)
    assert ha["engine"]["median_ms"] == pytest.approx(275.0)
    assert ha["chain"]["median_ms"] == pytest.approx(1010.0)
    assert ha["ratio_of_medians"] == pytest.approx(round(1010 / 275, 2))
    assert ha["parts_median_ms"]["endpoint_s"] == pytest.approx(700.0)
    naive = s["naive"]["llm"]
    assert naive["n"] == 2 and naive["chain"]["median_ms"] == pytest.approx(2000.0)
    assert naive["speedup_median"] == pytest.approx(round(float(np.median([2.0 / 1.0, 2.0 / 1.2])), 2))
    assert s["naive"]["fast"]["cpu_median_s"] == {"stt_cpu_s": 0.1, "answer_cpu_s": 0.01, "tts_cpu_s": 0.2}


def test_targets_hold_the_engine_to_four_and_two_and_a_half_times_the_ha_chain():
    res = {"baseline_summary": bench.summarize_baselines(baselines())}
    rows = {name: (measured, verdict) for name, _, measured, verdict in bench.targets(res)}
    fast = next(v for k, v in rows.items() if k.startswith("commands: speed-up over the HA-style chain"))
    llm = next(v for k, v in rows.items() if k.startswith("LLM answers: speed-up over the HA-style chain"))
    assert fast == ("3.67", "NOT met")  # 1010 / 275 ms < 4
    assert llm == ("2.09", "NOT met")  # 2300 / 1100 ms < 2.5
    res["baseline_summary"]["ha_chain"]["fast"]["ratio_of_medians"] = 4.2
    rows = {name: verdict for name, _, _, verdict in bench.targets(res)}
    assert rows[next(k for k in rows if k.startswith("commands: speed-up over the HA"))] == "met"


def test_the_report_shows_the_engine_beside_both_baselines():
    md = "\n".join(bench.baseline_markdown({"baseline_summary": bench.summarize_baselines(baselines())}))
    assert "| streaming engine (the same requests) | 275 | 342 | 1100 | 1190 |" in md, md
    assert "| Home Assistant-style chain: 0.7 s of silence" in md and "| naive: the engine's endpoint wait" in md
    assert "| speed-up over the HA-style chain" in md and "3.67×" in md
    assert "3 templates, 1 llm" in md
    assert bench.baseline_markdown({}) == []
    # baselines on different requests: the engine is shown on each one's own requests
    uneven = [b for b in baselines() if not (b["pipeline"] == "naive" and b["engine_first_audio_s"] == 0.35)]
    md = "\n".join(bench.baseline_markdown({"baseline_summary": bench.summarize_baselines(uneven)}))
    assert "| streaming engine (the naive pipeline's requests) | 250 |" in md, md
    assert "| streaming engine (the HA-style chain's requests) | 275 |" in md, md


def test_ha_routing_sends_what_its_templates_miss_to_the_llm_and_restores_the_fast_path(tmp_path):
    """``sequential_turn`` with the HA-style chain: the fast path only where the exact templates match."""
    from edge_agent.audio import write_wav

    write_wav(tmp_path / "r.wav", np.zeros(16000 * 2, np.int16))

    class Brain:
        fast_path = True
        seen: list = []

        def __init__(self, exact: bool) -> None:
            self.matcher = SimpleNamespace(recognize=lambda text, area: object() if exact else None)

        def reset(self) -> None:
            pass

        def respond(self, text, area=None):
            self.seen.append(self.fast_path)
            fast = self.fast_path
            return SimpleNamespace(wait=lambda: "Done.", timings={}, used_llm=not fast)

    for exact, route in ((True, "templates"), (False, "llm")):
        brain = Brain(exact)
        m = SimpleNamespace(s=SimpleNamespace(site=SimpleNamespace(area="Kitchen"),
                                              vad=SimpleNamespace(trailing_silence_s=0.4)),
                            stt=SimpleNamespace(transcribe=lambda x: SimpleNamespace(text="Hey Jarvis, hello there")),
                            brain=brain, tts=SimpleNamespace(synthesize_all=lambda t: np.zeros(2205, np.int16),
                                                             sample_rate=22050))
        row = {"request": {"file": "r.wav", "kind": "command", "wake_end_s": 0.5, "request_end_s": 1.5},
               "lat": {"first_audio": 0.3}}
        naive, ha = bench.baseline_chains(m.s)
        b = bench.sequential_turn(m, tmp_path, row, ha)
        assert b["route"] == route and b["used_llm"] == (not exact) and b["endpoint_s"] == 0.7
        assert brain.seen[-1] is exact and brain.fast_path is True  # restored after the answer
        assert b["first_audio_s"] == pytest.approx(0.7 + b["stt_s"] + b["answer_s"] + b["tts_s"])
        assert b["text"] == "hello there" and b["reply_audio_s"] == pytest.approx(0.1)
        b = bench.sequential_turn(m, tmp_path, row, naive)
        assert b["route"] == "brain" and b["endpoint_s"] == 0.4 and brain.seen[-1] is True


# --------------------------------------------------------------------------------------------------- compare


def test_columns_are_named_after_their_cpu_budget(three):
    assert [compare.column_label(r) for r in three] == [
        "this machine", "simulated Pi 5 (0.38 CPU)", "simulated Pi 4 (0.17 CPU)"]
    assert compare.column_label({"cpu_budget": {"spec": "0.5", "cpus": 0.5}}) == "0.5 CPU"
    staged = {"cpu_budget": {"spec": "pi5", "cpus": 0.324, "stages": {"llm": {"cpus": 0.567}}}}  # --stage-fit
    assert compare.column_label(staged) == "simulated Pi 5 (0.324 CPU, LLM 0.567)"
    assert compare.short_label(staged) == "Pi 5+LLM (sim)" and compare.short_label(three[1]) == "Pi 5 (sim)"


def test_markdown_puts_the_runs_side_by_side(three):
    md = compare.markdown(three)
    assert "| | this machine | simulated Pi 5 (0.38 CPU) | simulated Pi 4 (0.17 CPU) |" in md
    assert "| → endpoint | 150 / 400 | 300 / 800 | 600 / 1600 |" in md, md  # commands, median / p95 per run
    assert "| → intent published | 170 / 430 | 340 / 860 | 680 / 1720 |" in md
    assert "| → first LLM token | 800 / 900 | 1600 / 1800 | 3200 / 3600 |" in md
    # CPU per stage: medians over the turns that report it (commands: 0.1, 0.3, 0.2 → 0.2; questions 1.5, 2.5 → 2)
    assert "| STT speculation at the first pause (CPU s) | 0.200 | 0.200 | 0.200 |" in md
    assert "| brain, whole answer (fast path or LLM) (CPU s) | 2.00 | 2.00 | 2.00 |" in md
    assert "| LLM uncached prompt tokens per turn | 30.0 | 30.0 | 30.0 |" in md
    assert "| speed-up over the HA-style chain | 3.67× | 3.67× | 3.67× |" in md
    assert "| HA-style chain: endpoint + transcript + answer + synthesis, medians | 700 + 100 + 10 + 200 |" in md
    assert "throttled 10/100 periods" in md and "1.00/0.80/0.70 → 1.50/1.00/0.80" in md
    assert md.count("| **commands (fast path)**") == 3 and md.count("| **LLM answers**") == 3


def test_engine_segments_stack_up_to_the_median_first_audio(three):
    seg = compare.engine_segments(three[0], "fast")
    assert seg == pytest.approx([0.15, 0.01, 0.01, 0.13])
    seg = compare.engine_segments(three[0], "llm")  # the transcript median below the endpoint's: no negative part
    assert seg == pytest.approx([0.4, 0.0, 0.4, 0.7]) and sum(seg) == pytest.approx(1.5)
    assert compare.engine_segments({"e2e": {}}, "fast") is None
    assert compare.chain_segments(three[0], "ha_chain", "llm") == pytest.approx([0.7, 0.1, 1.3, 0.2])


def test_bars_per_run_engine_then_baselines(three):
    groups = compare.bars(three, "fast")
    assert [[(b.group, b.label) for b in g] for g in groups][1] == [
        ("Pi 5 (sim)", "engine"), ("Pi 5 (sim)", "naive"), ("Pi 5 (sim)", "HA chain")]
    assert groups[0][2].note == "×3.7" and groups[0][0].note == ""
    bare = dict(three[0], baseline_summary={})
    assert [b.label for g in compare.bars([bare], "fast") for b in g] == ["engine"]


def test_the_picture_says_what_each_run_was(three):
    lines = compare.run_lines(three)
    assert lines[2] == "Pi 4 (sim): quick run, 4 commands + 2 LLM answers, 2026-11-30 05:00 UTC, load 1.0"


@pytest.mark.parametrize("span, step", [(1.2, 0.2), (0.35, 0.05), (7.0, 1.0), (26.0, 5.0)])
def test_nice_step(span, step):
    assert compare.nice_step(span) == pytest.approx(step)


def test_the_png_decodes_and_draws_each_bar_to_scale(three, tmp_path):
    path = tmp_path / "stages.png"
    layout = compare.plot(three, path)
    img = decode_png(path.read_bytes())
    assert img.shape == (layout["height"], layout["width"], 3)
    assert [p["title"] for p in layout["panels"]] == ["commands (fast path)", "LLM answers"]
    for panel in layout["panels"]:
        assert len(panel["bars"]) == 9  # three runs × engine, naive, HA chain
        px_per_s = panel["plot_w"] / panel["xmax_s"]
        for bar in panel["bars"]:
            for k, (a, c) in enumerate(bar["spans"]):
                if c - a >= 2:  # each stage's colour is there, inside its own span
                    assert tuple(img[bar["y"] + 5, (a + c) // 2]) == compare.STAGE_COLORS[k]
        eng, naive, ha = panel["bars"][6:9]  # Pi 4: the chain's 0.7 s silence wait is drawn 0.7 s long
        assert (ha["spans"][0][1] - ha["spans"][0][0]) == pytest.approx(0.7 * px_per_s, abs=1.5)
        assert ha["spans"][-1][1] > naive["spans"][-1][1]
    fast = layout["panels"][0]
    # a slower run has a longer engine bar: this machine 0.3 s, Pi 4 1.2 s (commands)
    assert fast["bars"][6]["spans"][-1][1] - compare.LEFT == pytest.approx(
        4 * (fast["bars"][0]["spans"][-1][1] - compare.LEFT), abs=3)
    assert (img[:, :, 0] < 50).sum() > 1000  # text and axes were drawn in black


def test_compare_cli_writes_the_table_and_the_picture(three, tmp_path, capsys):
    import json

    paths = []
    for i, r in enumerate(three):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    md, png = tmp_path / "out" / "t.md", tmp_path / "out" / "s.png"
    assert compare.main([*map(str, paths), "--markdown", str(md), "--png", str(png), "--chains", "ha_chain"]) == 0
    assert "simulated Pi 4 (0.17 CPU)" in md.read_text() and "simulated Pi 4" in capsys.readouterr().out
    img = decode_png(png.read_bytes())
    assert img.shape[1] == compare.WIDTH
    assert compare.main([str(tmp_path / "missing.json")]) == 2
    assert "fix:" in capsys.readouterr().err


def test_wake_bench_draws_through_the_shared_writer(tmp_path):
    import wake_bench

    assert not hasattr(wake_bench, "write_png")  # moved to tools/pngplot.py, not copied
    sweep = [{"cutoff": c, "fa_per_h": 10 * (1 - c), "fr_clean": 100 * c ** 4, "fr_white 10 dB": 100 * c ** 2}
             for c in np.linspace(0.1, 0.99, 12)]
    wake_bench.plot({"models": {"a": {"sweep": sweep, "at_cutoff": sweep[6]}}}, tmp_path / "w.png")
    img = decode_png((tmp_path / "w.png").read_bytes())
    assert img.shape == (440, 640, 3) and (np.all(img == wake_bench.COLORS[0], axis=2)).sum() > 100
