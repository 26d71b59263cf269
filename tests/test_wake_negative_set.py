"""tools/make_negative_set.py: the text never says the wake word, backgrounds have the stated colour, and the
composition is reproducible from the seed (pure logic: synthetic clips stand in for the synthesized pool)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import make_negative_set as mns  # noqa: E402


def test_text_has_near_misses_but_never_the_wake_word():
    texts = mns.household_text(np.random.default_rng(1), 300)
    assert len(texts) >= 300 and len(set(texts)) > 150
    assert not [t for t in texts if "jarvis" in t.lower()]
    assert "Hey Jack, " in " ".join(texts) and any(t.startswith("Hey Travis") for t in texts)
    assert sum(t.startswith("Hey ") for t in texts) >= len(mns.NAMES_NEAR)


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / mns.SAMPLE_RATE)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_noise_colours():
    rng = np.random.default_rng(0)
    ratios = {}
    for color in ("white", "pink", "brown"):
        x = mns.noise(rng, 160000, color)
        assert abs(np.sqrt(np.mean(x ** 2)) - 1.0) < 1e-6
        # power per octave: flat per Hz (white) doubles per octave; pink is equal per octave; brown halves
        ratios[color] = band_power(x, 2000, 4000) / band_power(x, 1000, 2000)
    assert 1.7 < ratios["white"] < 2.3 and 0.8 < ratios["pink"] < 1.25 and 0.4 < ratios["brown"] < 0.62, ratios


def fake_clips() -> list:
    rng = np.random.default_rng(5)
    kinds = ["read", "near", "reply", "real"]
    return [mns.Clip(k, f"fake:{k}{i}", (rng.standard_normal(8000 + 800 * i) * 2000).astype(np.int16))
            for i in range(6) for k in kinds]


def test_scenes_are_reproducible_and_mix_at_the_stated_snr():
    clips = fake_clips()
    a, info_a = mns.scene(np.random.default_rng([12, 3]), clips, "tv", 8.0)
    b, info_b = mns.scene(np.random.default_rng([12, 3]), clips, "tv", 8.0)
    c, _ = mns.scene(np.random.default_rng([12, 4]), clips, "tv", 8.0)
    assert info_a == info_b and np.array_equal(a, b) and not np.array_equal(a, c)
    assert info_a["background"] == "music" and info_a["snr_db"] in (20, 10, 5, 0)
    assert len(a) == 8 * mns.SAMPLE_RATE
    for name, _w in mns.SCENES:
        x, info = mns.scene(np.random.default_rng(7), clips, name, 5.0)
        assert len(x) == 5 * mns.SAMPLE_RATE and info["scene"] == name
        assert np.isfinite(x).all() and mns.rms(x) > 1.0
