"""The household verifier's math and file, with plain numbers (no audio, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.wake_enroll_cli import speakers_from
from edge_agent.wake_micro import VERIFY_ROWS, pooled_features
from edge_agent.wake_verifier import FORMAT, Verifier, fit_logistic, load, train


def toy(seed: int = 0, d: int = 20, n_pos: int = 12, n_neg: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Separable toy features: positives around +1 on the first 3 dimensions, negatives around -1; the rest noise."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(0, 1, (n_pos, d))
    neg = rng.normal(0, 1, (n_neg, d))
    pos[:, :3] += 2.0
    neg[:, :3] -= 2.0
    return pos, neg


def test_separable_features_are_accepted_and_rejected() -> None:
    pos, neg = toy()
    v = train(pos, neg, model="m", engine="openwakeword", features="oww_embeddings")
    assert all(v.accepts(x) for x in pos)
    assert not any(v.accepts(x) for x in neg)
    tpos, tneg = toy(seed=1)  # unseen rows from the same classes
    assert (v.probabilities(tpos) >= 0.5).mean() == 1.0
    assert (v.probabilities(tneg) >= 0.5).mean() == 0.0
    assert set(np.argsort(-np.abs(v.weights))[:3]) == {0, 1, 2}  # it learned the informative dimensions


def test_fit_matches_the_exact_optimum_of_a_one_dimensional_problem() -> None:
    # x in {-1, +1}, labels overlap: 3 of 4 at +1 are positive, 1 of 4 at -1. Unregularized, balanced weights:
    # the optimum puts p(+1) = 0.75 and p(-1) = 0.25 (the empirical rates), i.e. bias 0 and w * scale = ln 3.
    x = np.array([[1.0]] * 4 + [[-1.0]] * 4)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    w, b, mean, scale = fit_logistic(x, y, l2=0.0, balanced=False, iters=5000, tol=1e-12)
    v = Verifier(weights=w, bias=b, mean=mean, scale=scale)
    assert v.probability(np.array([1.0])) == pytest.approx(0.75, abs=1e-3)
    assert v.probability(np.array([-1.0])) == pytest.approx(0.25, abs=1e-3)


def test_class_balance_lets_a_few_positives_count() -> None:
    pos, neg = toy(n_pos=3, n_neg=3000)
    v = train(pos, neg)
    assert all(v.accepts(x) for x in pos)


def test_training_needs_both_classes_and_matching_shapes() -> None:
    pos, neg = toy()
    with pytest.raises(ValueError):
        train(pos, neg[:, :5])
    with pytest.raises(ValueError):
        fit_logistic(pos, np.ones(len(pos)))


def test_constant_feature_does_not_break_standardization() -> None:
    pos, neg = toy()
    pos[:, 5] = 7.0
    neg[:, 5] = 7.0
    v = train(pos, neg)
    assert np.all(np.isfinite(v.weights)) and v.scale[5] == 1.0


def test_file_round_trips_as_plain_json(tmp_path: Path) -> None:
    pos, neg = toy()
    v = train(pos, neg, threshold=0.4, model="hey_jarvis", engine="openwakeword", features="oww_embeddings",
              speakers={"anna": 4, "ben": 5})
    path = v.save(tmp_path / "v.json")
    data = json.loads(path.read_text())  # plain JSON: names and numbers only
    assert data["format"] == FORMAT and data["dim"] == 20 and data["speakers"] == {"anna": 4, "ben": 5}
    back = load(path, model="hey_jarvis", features="oww_embeddings", dim=20)
    assert back.threshold == 0.4 and back.speakers == {"anna": 4, "ben": 5} and back.path == path
    x = np.vstack([pos, neg])
    np.testing.assert_allclose(back.probabilities(x), v.probabilities(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("content, words", [
    ("{not json", "not a readable verifier file"),
    ('{"format": "something-else"}', "not an edge-agent wake verifier"),
    (json.dumps({"format": FORMAT, "version": 99}), "version 99"),
    (json.dumps({"format": FORMAT, "version": 1, "weights": [1, 2], "mean": [0], "scale": [1, 1], "bias": 0,
                 "threshold": 0.5}), "same length"),
    (json.dumps({"format": FORMAT, "version": 1, "weights": [1], "mean": [0], "scale": [0], "bias": 0,
                 "threshold": 0.5}), "scale <= 0"),
    (json.dumps({"format": FORMAT, "version": 1, "weights": [1], "mean": [0], "scale": [1], "bias": 0,
                 "threshold": 2}), "out of range"),
    (json.dumps({"format": FORMAT, "version": 1, "weights": ["a"], "mean": [0], "scale": [1], "bias": 0,
                 "threshold": 0.5}), "not a number"),
])
def test_a_bad_file_gives_a_clear_error_naming_the_file_and_the_fix(tmp_path: Path, content: str, words: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ConfigError) as e:
        load(p, where="wake.models[0].verifier")
    assert words in e.value.message and str(p) in e.value.message
    assert e.value.message.startswith("wake.models[0].verifier: ")
    assert "edge-agent wake enroll" in (e.value.fix or "")


def test_a_pickle_or_missing_file_is_refused(tmp_path: Path) -> None:
    import pickle

    p = tmp_path / "v.pkl"
    p.write_bytes(pickle.dumps({"format": FORMAT}))
    with pytest.raises(ConfigError, match="not a readable verifier file"):
        load(p)
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.json")


def test_a_verifier_for_another_model_or_feature_kind_is_refused(tmp_path: Path) -> None:
    pos, neg = toy()
    path = train(pos, neg, model="hey_jarvis", engine="openwakeword", features="oww_embeddings").save(
        tmp_path / "v.json")
    with pytest.raises(ConfigError, match="trained for wake model 'hey_jarvis', not 'alexa'"):
        load(path, model="alexa")
    with pytest.raises(ConfigError, match="micro_logmel_pooled"):
        load(path, features="micro_logmel_pooled")
    with pytest.raises(ConfigError, match="expects 20 features"):
        load(path, dim=1536)


def test_micro_pooling_gives_segment_means_and_spread() -> None:
    rows = np.zeros((VERIFY_ROWS, 40))
    rows[:, 0] = np.repeat([1.0, 2.0, 3.0, 4.0], VERIFY_ROWS // 4)
    f = pooled_features(rows)
    assert f.shape == (200,)
    assert f[[0, 40, 80, 120]].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert f[160] == pytest.approx(np.std([1, 2, 3, 4]))
    short = pooled_features(rows[-10:])  # just after a reset: padded with the first row it has
    assert short.shape == (200,) and short[0] == 4.0


def test_speakers_keep_their_other_speech_in_command_line_order() -> None:
    items = [("speaker", ["anna", "a1.wav", "a2.wav", "a3.wav"]), ("other", ["a-talk.wav"]),
             ("speaker", ["ben", "b1.wav", "b2.wav", "b3.wav", "b4.wav"]), ("other", ["b-talk.wav", "b-more.wav"])]
    anna, ben = speakers_from(items)
    assert (anna.name, [p.name for p in anna.other]) == ("anna", ["a-talk.wav"])
    assert (ben.name, len(ben.wake), [p.name for p in ben.other]) == ("ben", 4, ["b-talk.wav", "b-more.wav"])
    with pytest.raises(ConfigError, match="at least 3"):
        speakers_from([("speaker", ["anna", "a1.wav", "a2.wav"])])
    with pytest.raises(ConfigError, match="before any --speaker"):
        speakers_from([("other", ["x.wav"])])
    with pytest.raises(ConfigError, match="no household member"):
        speakers_from([])


def test_the_doctor_shows_each_cutoff_and_whether_a_verifier_loads(tmp_path: Path) -> None:
    import dataclasses

    from edge_agent.config import load_settings
    from edge_agent.preflight import check_wake

    base = load_settings(Path(__file__).resolve().parent.parent / "config.yaml")

    def with_verifier(path: str | None):
        models = [dataclasses.replace(base.wake.models[0], model="hey_jarvis", engine="openwakeword",
                                      threshold=None, verifier=path)]
        return dataclasses.replace(base, wake=dataclasses.replace(base.wake, models=models))

    (plain,) = check_wake(with_verifier(None))
    assert plain.status == "ok" and "hey_jarvis (openwakeword): cutoff 0.50, window 1" in plain.detail
    assert "no household verifier" in plain.detail
    pos, neg = toy(d=1536)
    good = train(pos, neg, model="hey_jarvis", engine="openwakeword", features="oww_embeddings",
                 speakers={"anna": 4}).save(tmp_path / "v.json")
    (loaded,) = check_wake(with_verifier(str(good)))
    assert loaded.status == "ok" and f"household verifier loaded: {good}" in loaded.detail
    assert "anna 4" in loaded.detail
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    (failed,) = check_wake(with_verifier(str(bad)))
    assert failed.status == "fail" and str(bad) in failed.detail and "wake enroll" in failed.fix


def test_enroll_command_line_keeps_members_other_speech_and_impostors_apart() -> None:
    from edge_agent.wake_enroll_cli import enroll_parser

    args = enroll_parser().parse_args(["--speaker", "anna", "a1.wav", "a2.wav", "a3.wav", "--other-speech", "t.wav",
                                       "--impostors", "guest.wav", "tv.wav", "--speaker", "ben", "b1.wav", "b2.wav",
                                       "b3.wav", "--negative-minutes", "5"])
    anna, ben = speakers_from(args.items)
    assert [p.name for p in anna.other] == ["t.wav"] and ben.other == [] and len(ben.wake) == 3
    assert [p.name for p in args.impostors] == ["guest.wav", "tv.wav"] and args.negative_minutes == 5
