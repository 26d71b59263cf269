"""The pi5 / pi4 CPU budgets fitted to the machine: the pure fit with numbers, then the real reference decode
(faster-whisper tiny.en over pocketsphinx-testdata's read speech) measured, cached and looked up again."""

from __future__ import annotations

import json

import pytest

from edge_agent import pi_presets
from edge_agent.cpu_budget import PI4_CPUS, PI5_CPUS, CpuBudgetError
from edge_agent.pi_presets import PUBLISHED_WHISPER_S, fit, machine_presets, resolve

from .conftest import require_model


def test_the_fit_is_the_cpu_work_over_the_published_time():
    # the Xeon's calibration (docs/pi-calibration.md): 0.57 CPU s per utterance -> the fixed presets
    assert fit(0.57, 2) == {"pi5": round(0.57 / 1.48, 3), "pi4": round(0.57 / 3.42, 3)}
    assert abs(fit(0.57, 2)["pi5"] - PI5_CPUS) < 0.01 and abs(fit(0.57, 2)["pi4"] - PI4_CPUS) < 0.01
    # a CPU twice as fast needs half the quota to be as slow as the same board
    assert fit(0.285, 2)["pi5"] == pytest.approx(fit(0.57, 2)["pi5"] / 2, abs=0.001)
    # a machine as slow as a Pi 5 cannot imitate one
    with pytest.raises(CpuBudgetError, match="no faster than that board"):
        fit(3.2, 2)
    with pytest.raises(CpuBudgetError):
        fit(0.0, 2)


def test_presets_are_measured_on_this_cpu_then_cached(settings, store, ps_data, tmp_path):
    require_model(store, settings.stt.whisper.model)
    cache = tmp_path / "pi-presets.json"
    other = {"key": {"cpu": "some other CPU", "ncpus": 4}, "work_s": 1.0}
    cache.write_text(json.dumps({"machines": [other]}))
    first = machine_presets(settings, cache=cache)
    assert first.source == "measured", first
    # tiny.en's decode of a 3-7 s read sentence: tenths of a CPU second on any x86-64 or Pi 5, never zero
    assert 0.05 < first.work_s < 3.0
    assert first.cpus == fit(first.work_s, first.key["ncpus"])
    assert first.cpus["pi4"] < first.cpus["pi5"]
    again = machine_presets(settings, cache=cache)
    # the number cached is the number fitted: a rounding boundary cannot make the lookup differ from the measurement
    assert again.source == "cached" and again.cpus == first.cpus and again.work_s == first.work_s
    kept = json.loads(cache.read_text())["machines"]
    assert other in kept and len(kept) == 2  # another machine's fit is kept beside this one's
    assert "fitted here" in first.describe("pi5") and f"{PUBLISHED_WHISPER_S['pi5']:g} s" in first.describe("pi5")


def test_a_measurement_on_a_rounding_boundary_is_fitted_as_it_is_cached(settings, tmp_path, monkeypatch):
    # CI once measured a number whose pi4 quota rounded to 0.163 while the 5-digit cached copy gave 0.162
    monkeypatch.setattr(pi_presets, "reference_clips", lambda d: ["a clip"])
    monkeypatch.setattr(pi_presets, "measure_work", lambda s, clips: 0.5557500049999999)
    cache = tmp_path / "c.json"
    first = machine_presets(settings, cache=cache)
    again = machine_presets(settings, cache=cache)
    assert (first.source, again.source) == ("measured", "cached")
    assert first.cpus == again.cpus == fit(0.55575, first.key["ncpus"]) and first.work_s == again.work_s == 0.55575


def test_without_the_recordings_the_fixed_fit_is_used_and_says_why(settings, tmp_path, caplog):
    empty = tmp_path / "none"
    empty.mkdir()
    with caplog.at_level("WARNING"):
        p = machine_presets(settings, cache=tmp_path / "c.json", clips_dir=empty)
    assert p.source == "fixed" and p.cpus == {"pi5": PI5_CPUS, "pi4": PI4_CPUS}
    assert "pocketsphinx-testdata" in caplog.text and "no reference recordings" in p.why
    assert "Xeon" in p.describe("pi4") and not (tmp_path / "c.json").exists()


def test_a_number_is_taken_as_it_is(settings, monkeypatch):
    monkeypatch.setattr(pi_presets, "machine_presets", lambda s: pytest.fail("a number needs no fit"))
    assert resolve("0.5", settings)[0] == 0.5
    with pytest.raises(CpuBudgetError, match="neither a preset nor a number"):
        resolve("pi3", settings)
