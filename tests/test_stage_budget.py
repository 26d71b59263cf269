"""A stage's own CPU quota (``--stage-fit``): the pure parts with numbers, then real cgroups (a thread moved in and
back, a thread started inside staying inside), the LLM's fit measured on the real model and cached, and a real
generation running in the LLM's cgroup."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from edge_agent import cpu_budget as cb
from edge_agent import stage_budget as sb
from edge_agent.pi_presets import PUBLISHED_LLM, llm_fit, llm_presets

from .conftest import require_model
from .test_cpu_budget import _cpu_hierarchy_or_skip


def test_the_stages_are_named_in_one_variable():
    text = sb.format_stages(Path("/cg/a"), {"llm": Path("/cg/a-llm")})
    assert text == "home=/cg/a;llm=/cg/a-llm"
    assert sb.parse_stages(text) == {"home": Path("/cg/a"), "llm": Path("/cg/a-llm")}
    assert sb.parse_stages("home=/cg/a;;llm=;=x;junk") == {"home": Path("/cg/a")}
    assert sb.parse_stages(None) == {}
    assert sb.stage_cpus("llm", {}) is None


def test_a_stage_runs_as_many_threads_as_its_quota_keeps_busy():
    assert [sb.stage_threads(q) for q in (0.1, 0.57, 1.0, 1.04, 1.3, 1.96)] == [1, 1, 1, 1, 2, 2]


def test_the_llms_quota_is_its_work_per_token_times_the_boards_rate():
    # the EPYC's measurement (2026-12-03): 11 ms per prompt token, 27 ms per generated token, one thread
    work = {"prompt": 0.011, "generation": 0.027}
    fitted = llm_fit(work, 2)
    assert PUBLISHED_LLM["pi5"] == ("generation", 21.0) and fitted["pi5"] == round(0.027 * 21, 3) == 0.567
    assert PUBLISHED_LLM["pi4"] == ("prompt", 27.0) and fitted["pi4"] == round(0.011 * 27, 3) == 0.297
    # a CPU whose LLM is no faster than a Pi 5's: a quota cannot make it one
    with pytest.raises(cb.CpuBudgetError, match="no faster than that board"):
        llm_fit({"prompt": 0.011, "generation": 0.1}, 2)
    with pytest.raises(cb.CpuBudgetError, match="not a measurement"):
        llm_fit({"prompt": 0.011}, 2)


def test_stage_fit_needs_a_board_preset(settings):
    with pytest.raises(cb.CpuBudgetError, match="needs a board preset"):
        sb.with_stages(cb.CpuBudget(0.5), "0.5", settings)


def _cgroup_of_this_thread() -> str:
    for line in Path("/proc/thread-self/cgroup").read_text().splitlines():
        _, ctl, path = line.split(":", 2)
        if "cpu" in ctl.split(","):
            return path
    return ""


def _busy_ratio(seconds: float) -> float:
    w0, c0 = time.monotonic(), time.thread_time()
    while time.monotonic() - w0 < seconds:
        pass
    return (time.thread_time() - c0) / (time.monotonic() - w0)


def test_a_thread_inside_a_stage_runs_under_the_stages_quota_and_comes_back():
    h = _cpu_hierarchy_or_skip()
    if h.version != 1:
        with pytest.raises(cb.CpuBudgetError, match="threaded subtree"):
            cb.CpuBudget(1.0).stage("llm", 0.2)
        return
    with cb.CpuBudget(1.9) as b:
        stage = b.stage("llm", 0.2)
        assert stage.dir is not None and stage.dir.parent == b.dir.parent and stage.quota() == (2_000, 10_000)
        b.enter()
        assert sb.stage_dirs() == {"home": b.dir, "llm": stage.dir}
        assert sb.stage_cpus("llm") == pytest.approx(0.2)
        home = _cgroup_of_this_thread()
        assert home.endswith(b.dir.name)
        seen: dict[str, str] = {}
        with sb.inside("llm") as moved:
            assert moved and _cgroup_of_this_thread().endswith(stage.dir.name)
            # a thread started from inside (as llama.cpp starts its OpenMP workers) is created there
            t = threading.Thread(target=lambda: seen.setdefault("child", _cgroup_of_this_thread()))
            t.start()
            t.join(timeout=10)
            ratio_in = _busy_ratio(1.5)
        assert _cgroup_of_this_thread() == home
        assert seen["child"].endswith(stage.dir.name)
        assert ratio_in < 0.3, ratio_in  # the stage's 0.2 CPU, not the process's 1.9
        assert stage.stat()["nr_throttled"] > 0
        stage_dir = stage.dir
    assert cb.ENV_STAGES not in os.environ and not stage_dir.exists()
    with sb.inside("llm") as moved:  # no stage any more: the block runs where it is
        assert not moved


def test_the_llms_work_is_measured_then_cached_and_a_generation_runs_in_its_stage(settings, store, tmp_path):
    h = _cpu_hierarchy_or_skip()
    path = require_model(store, settings.llm.model)
    cache = tmp_path / "pi-presets.json"
    first = llm_presets(settings, cache=cache)
    assert first.source == "measured"
    # a 0.5B Q4_K_M model on one x86-64 thread: milliseconds per token, a prompt token cheaper than a generated one
    assert 0.0005 < first.work["prompt"] < first.work["generation"] < 0.5, first.work
    again = llm_presets(settings, cache=cache)
    assert again.source == "cached" and again.work == first.work and again.cpus == first.cpus
    assert "llm_work" in json.loads(cache.read_text())["machines"][0]
    assert "tokens/s on a Pi 5" in first.describe("pi5")
    if h.version != 1:
        return
    from edge_agent.config import LlmSettings
    from edge_agent.llm_model import Llm

    with cb.CpuBudget(1.9) as b:
        stage = b.stage("llm", first.cpus["pi5"])
        b.enter()
        m = Llm(path, LlmSettings(temperature=0.0, max_tokens=8))
        try:
            assert m.threads == sb.stage_threads(first.cpus["pi5"]) == m.first_threads
            before = stage.stat().get("nr_periods", 0)
            text = m.complete("<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n")
            assert text.strip()
            assert stage.stat().get("nr_periods", 0) > before  # the work ran in the LLM's cgroup
            assert _cgroup_of_this_thread().endswith(b.dir.name)  # and this thread is back in the process's
        finally:
            m.close()


def test_bench_stage_fit_gives_the_llm_its_own_quota_and_says_so(settings, store, monkeypatch):
    """`edge-agent bench --cpu-budget pi5 --stage-fit`: the LLM's cgroup exists beside the process's from the start,
    the results and the report's header name it, and both are gone afterwards."""
    h = _cpu_hierarchy_or_skip()
    if h.version != 1:
        pytest.skip("a stage's own quota needs cgroup v1 here")
    require_model(store, settings.llm.model)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    from edge_bench import budget
    from edge_bench.run import bench_settings, build_parser

    args = build_parser().parse_args(["--quick", "--cpu-budget", "pi5", "--stage-fit"])
    res: dict = {}
    want = llm_presets(bench_settings(None)).cpus["pi5"]
    with budget.prepared(args) as b:
        assert b is not None and set(b.stages) == {"llm"} and b.stages["llm"].cpus == want
        budget.start(args, res)
        assert sb.stage_cpus("llm") == pytest.approx(want, abs=1e-3)
        head = budget.header(args, res)
        dirs = [b.dir, b.stages["llm"].dir]
    assert res["cpu_budget"]["stages"]["llm"]["cpus"] == want
    assert "the LLM's own" in head and "tokens/s on a Pi 5" in head
    assert f"the llm's own {want:g} CPU throttled in" in head  # its own cgroup's periods, apart from the process's
    assert not any(d.exists() for d in dirs) and cb.ENV_STAGES not in os.environ


def test_an_unreadable_llm_entry_is_measured_again(settings, store, tmp_path, caplog):
    require_model(store, settings.llm.model)
    from edge_agent.pi_presets import llm_key

    cache = tmp_path / "pi-presets.json"
    cache.write_text(json.dumps({"machines": [{"key": llm_key(settings), "llm_work": {"generation": "fast"}}]}))
    with caplog.at_level("WARNING"):
        p = llm_presets(settings, cache=cache)
    assert p.source == "measured" and "unreadable LLM entry" in caplog.text
    assert llm_presets(settings, cache=cache).source == "cached"
