"""Conformance of the fast path with Home Assistant's English intent tests (tools/conformance.py, in-process).

Measured on this repository: 942 of 944 sentences (99.8 %) of the supported intents with the documented
normalizations; 81.4 % under Home Assistant's exact slot rule (the tests are from 2025, the templates from 2026:
see tools/conformance.py); 73.6 % / 61.8 % with the packaged templates alone.
The 60 sentences of the newer 2026-format files pass under the exact rule.

The tolerant tier (edge_agent/fuzzy.py) runs only on what the templates miss: on these sentences it never fires (all
944 match exactly), so the figures above are the exact tier's. Said inside fillers ("could you ... for me please")
940/944 (99.6 %) still pass (templates alone 924: a timer's free-text name swallowed "for me please"); "... if you
can": 844/944 (89.4 %) with the tolerant tier, 13/944 (1.4 %) with the templates alone (the misses are mostly
commands whose target the fixtures home does not have, which the tolerant tier never acts on).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import conformance  # noqa: E402

from edge_agent.config import HomeSettings  # noqa: E402
from edge_agent.home import Home  # noqa: E402

DIR = conformance.DEFAULT_DIR
OVERALL_MIN = 0.99  # reached: 0.998
PER_INTENT_MIN = 0.95


TIERS: dict[str, int] = {}


@pytest.fixture(scope="module")
def report() -> conformance.Report:
    assert (DIR / "_fixtures.yaml").is_file(), f"{DIR} is missing Home Assistant's intent tests"
    cases = conformance.load_cases(DIR)
    home = Home.load(HomeSettings(), DIR / "_fixtures.yaml")
    return conformance.run_conformance(conformance.fast_matcher(DIR / "_fixtures.yaml", tiers=TIERS), cases,
                                       home=home)


def test_tolerant_tier_leaves_template_sentences_alone(report: conformance.Report) -> None:
    # every conformance sentence is matched by the exact templates; the tolerant tier never changes one
    assert TIERS == {"exact": 944}


def test_exact_rule_figure(report: conformance.Report) -> None:
    home = Home.load(HomeSettings(), DIR / "_fixtures.yaml")
    strict = conformance.run_conformance(lambda s, a: next(
        (o.got for o in report.outcomes if o.case.sentence == s and o.case.area == a), None),
        conformance.load_cases(DIR), strict=True, home=home)
    assert 0.80 <= strict.rate < OVERALL_MIN  # 81.4 % measured: the 2025 tests spell some slots differently


def test_fillers_around_template_sentences() -> None:
    """Every conformance sentence said inside politeness fillers still gives the same intent and slots."""
    cases = [conformance.Case(c.file, f"could you {c.sentence.rstrip('?.!')} for me please", c.intent, c.slots,
                              c.area) for c in conformance.load_cases(DIR)]
    home = Home.load(HomeSettings(), DIR / "_fixtures.yaml")
    tiers: dict[str, int] = {}
    rep = conformance.run_conformance(conformance.fast_matcher(DIR / "_fixtures.yaml", tiers=tiers), cases, home=home)
    exact = conformance.run_conformance(conformance.fast_matcher(DIR / "_fixtures.yaml", tolerant=False), cases,
                                        home=home)
    assert rep.rate >= 0.99, [f"{o.case.sentence!r}: {o.why}" for o in rep.outcomes if not o.ok][:20]
    assert rep.passed > exact.passed and tiers.get("tolerant", 0) > 0  # measured 940 vs 924


def test_overall_rate(report: conformance.Report) -> None:
    assert len(report.outcomes) == 944
    fails = [f"{o.case.sentence!r}: {o.why}" for o in report.outcomes if not o.ok]
    assert report.rate >= OVERALL_MIN, f"{report.rate:.3f} < {OVERALL_MIN}; failures:\n" + "\n".join(fails)


def test_every_intent_is_covered_and_passes(report: conformance.Report) -> None:
    per = report.per_intent()
    from edge_agent.intents import SUPPORTED_INTENTS

    assert set(per) == set(SUPPORTED_INTENTS)
    low = {k: f"{ok}/{n}" for k, (ok, n) in per.items() if ok / n < PER_INTENT_MIN}
    assert not low, f"intents below {PER_INTENT_MIN}: {low}"
    assert "| **overall** |" in report.markdown()
    assert report.to_json()["overall"]["total"] == 944


def case(intent: str, slots: dict, sentence: str = "s") -> conformance.Case:
    return conformance.Case("f.yaml", sentence, intent, slots, None)


def test_compare_follows_home_assistant_rules() -> None:
    c = case("HassTurnOn", {"name": "Ceiling Fan"})
    assert conformance.compare(c, ("HassTurnOn", {"name": "Ceiling Fan"})) == (True, "")
    assert conformance.compare(c, None) == (False, "no match")
    assert conformance.compare(c, ("HassTurnOff", {"name": "Ceiling Fan"}))[1] == "intent HassTurnOff"
    assert conformance.compare(c, ("HassTurnOn", {"name": "Ceiling Fan", "area": "Kitchen"}))[1].startswith(
        "unexpected slot area")
    assert conformance.compare(case("HassTurnOn", {"name": "A", "area": "K"}), ("HassTurnOn", {"name": "A"}))[1] \
        == "missing slot area"
    # an expected list means "any of these"; numbers compare by value
    t = case("HassStartTimer", {"minutes": 5, "name": ["pizza ", "pizza"]})
    assert conformance.compare(t, ("HassStartTimer", {"minutes": 5.0, "name": "pizza"}))[0]
    assert not conformance.compare(t, ("HassStartTimer", {"minutes": 6, "name": "pizza"}))[0]


def test_compare_normalizations_are_explicit() -> None:
    home = Home.load(HomeSettings(), DIR / "_fixtures.yaml")
    fans = case("HassTurnOn", {"area": "Kitchen", "domain": "fan", "name": "all"})
    got = ("HassTurnOn", {"area": "Kitchen", "domain": "fan"})
    assert conformance.compare(fans, got)[0]
    assert not conformance.compare(fans, got, strict=True)[0]
    scene = case("HassTurnOn", {"domain": "scene", "name": "Party Mode"})
    got = ("HassTurnOn", {"name": "Party Mode"})
    assert conformance.compare(scene, got, home=home)[0]  # implied by the named entity
    assert not conformance.compare(scene, got, strict=True, home=home)[0]
    wrong = case("HassTurnOn", {"domain": "light", "name": "Party Mode"})
    assert not conformance.compare(wrong, got, home=home)[0]  # only a domain the entity really has
    ls = case("HassLightSet", {"area": "Bedroom", "brightness": 50})
    assert conformance.compare(ls, ("HassLightSet", {"area": "Bedroom", "brightness": 50, "domain": "light"}))[0]
    assert not conformance.compare(ls, ("HassLightSet", {"area": "Bedroom", "brightness": 50, "domain": "fan"}))[0]


def test_ask_json_shapes() -> None:
    f = conformance._intent_from_ask_json
    assert f({"intents": [{"name": "HassTurnOn", "slots": {"name": "A"}}]}) == ("HassTurnOn", {"name": "A"})
    assert f({"results": [{"call": {"name": "HassNevermind", "slots": {}}}]}) == ("HassNevermind", {})
    assert f({"speech": "hello"}) is None
    # a call that was recognized but could not be carried out still counts as recognized
    assert f({"recognized": {"name": "HassTurnOff", "slots": {"area": "Kitchen"}}, "intents": []}) == (
        "HassTurnOff", {"area": "Kitchen"})


def test_2026_format_suite_exact() -> None:
    """The newer per-intent test files (own small home each) pass under Home Assistant's exact slot rule."""
    rep = conformance.run_v2(DIR, conformance.fast_factory)
    assert len(rep.outcomes) == 60
    fails = [f"{o.case.file} {o.case.sentence!r}: {o.why}" for o in rep.outcomes if not o.ok]
    assert rep.rate == 1.0, "\n".join(fails)
