"""The early end, spoken (tools/hesitation_eval.py): its scoring with plain records (fast), and the real path once:
Piper says commands with a pause inside them through `edge-agent run --input X.wav --realtime` with a real
Mosquitto, and what arrives on MQTT is judged."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import hesitation_eval as he  # noqa: E402
import spoken_eval as se  # noqa: E402


def _heard(key: str, transcript: str, published: list[dict], **rec: object) -> se.Heard:
    rec.setdefault("outcome", "answered")
    return se.Heard(key, transcript, "", False, str(rec["outcome"]), published, 0.0, record=dict(rec))


def _msg(intent: str, entities: list[str], **slots: object) -> dict:
    return {"intent": intent, "entities": entities, "slots": slots, "turn_id": "t"}


def test_the_set_has_forty_items_half_of_them_hard_and_every_pause_inside_a_hesitation():
    items, plain = he.load_set()
    assert len(items) >= 40 and sum(it["kind"] == "hard" for it in items) * 2 >= len(items)
    assert all(0.3 <= it["pause_s"] <= 0.6 and it["a"] and it["b"] and it["expect"] for it in items)
    assert plain and all(not p["b"] for p in plain)


def test_scoring_a_corrected_action_is_right_and_a_wrong_device_is_left_standing():
    it = {"key": "h1", "kind": "hard", "a": "Turn on the kitchen light", "b": "to thirty percent.", "pause_s": 0.3,
          "expect": [{"intent": "HassLightSet", "entities": ["light.kitchen"], "slots": {"brightness": 30}}]}
    corrected = [
        _heard("h1", "Turn on the kitchen light.", [_msg("HassTurnOn", ["light.kitchen"], name="Kitchen Light")],
               outcome="continued", early_end=True, ending="complete"),
        _heard("h1", "Turn on the kitchen light to thirty percent.",
               [_msg("HassLightSet", ["light.kitchen"], name="Kitchen Light", brightness=30)],
               t_speech_end=10.0, t_first_audio=10.9),
    ]
    row = he.score_item(it, corrected)
    assert row["right"] and not row["wrong"] and row["heard_whole"] and row["continued"] == 1
    assert row["ended_early"] == 1 and row["first_audio_s"] == 0.9
    it2 = {"key": "h2", "kind": "hard", "a": "Turn off the light", "b": "in the bedroom.", "pause_s": 0.5,
           "expect": [{"intent": "HassTurnOff", "entities": ["light.bedroom_lamp"]}]}
    cut = [_heard("h2", "Turn off the light.", [_msg("HassTurnOff", ["light.living_room_lamp"])]),
           _heard("h2", "in the bedroom", [])]
    row = he.score_item(it2, cut)
    assert not row["right"] and row["wrong"] == ["light.living_room_lamp"] and not row["heard_whole"]
    timer = {"key": "h3", "kind": "hard", "a": "Set a timer for ten minutes", "b": "and thirty seconds.",
             "pause_s": 0.5, "expect": [{"intent": "HassStartTimer", "slots": {"minutes": 10, "seconds": 30}}]}
    row = he.score_item(timer, [_heard("h3", "Set a timer for ten minutes.", [_msg("HassStartTimer", [], minutes=10)])])
    assert row["wrong"] == ["timer {'minutes': 10}"] and not row["right"]
    s = he.summarize([he.score_item(it, corrected), he.score_item(it2, cut)])
    assert s["hard"]["wrong_left_standing"] == 1 and s["hard"]["right"] == 1 and s["hard"]["continued"] == 1


def test_spoken_hesitations_end_early_only_when_complete_and_leave_no_wrong_command(tmp_path):
    items, plain = he.load_set()
    by = {(it["a"], it["b"]): it for it in items}
    chosen = [by[("Turn on the", "kitchen light.")],  # not a request before the pause: waits for the rest
              by[("Turn off the light", "in the bedroom.")],  # hard: the living room's light would be wrong
              by[("Set the thermostat to twenty", "two degrees.")]]  # hard: a number the next word changes
    chosen += [plain[0], plain[1]]
    from edge_agent.brain import Brain
    from edge_agent.config import load_settings

    matcher = Brain.from_settings(load_settings(he.ROOT / "config.yaml"), home_file=str(se.HOME),
                                  use_llm=False).matcher
    # The early end can only cut the silence once the speculation's verdict is in: the first pause (0.12 s) plus a
    # decode of 0.15-0.3 s, depending on the CPU (0.25 s on an AVX2-only EPYC, where at the default 0.4 s the normal
    # end came first). A longer normal silence lets the mechanism show on any CPU; what it wins at the default is
    # the bench's to measure.
    normal_s = 0.8
    res = he.run_mode("plain", chosen, tmp_path, matcher, extra_config=f"vad: {{trailing_silence_s: {normal_s}}}\n")
    assert res["info"].get("exit") == 0, res["info"]
    rows = {r["key"]: r for r in res["rows"]}
    for it in chosen:
        r = rows[it["key"]]
        assert not r["wrong"], r  # no wrong device command left standing, whatever Whisper heard
        if it["b"]:
            # the second half was never heard as a request of its own, nor dropped
            assert all(he.covers(t, it["a"]) for t in r["transcripts"]), r
    early = [r for r in res["rows"] if r["kind"] == "plain" and r["ended_early"]]
    assert early, res["rows"]  # complete commands said in one go end early
    assert all(r["right"] for r in early), early
    # without echo cancel the reply of an early end waits out the normal silence
    assert all(r["first_audio_s"] is not None and r["first_audio_s"] >= normal_s - 0.05 for r in early), early


def test_a_timers_delayed_command_is_scored_with_the_item_that_set_it():
    it = {"key": "h31", "kind": "hard", "a": "Set a timer for five minutes", "b": "and twenty seconds.",
          "pause_s": 0.4, "expect": [{"intent": "HassStartTimer", "slots": {"minutes": 5, "seconds": 20}}]}
    heard = [_heard("h0", "Set a timer for 5 minutes", [_msg("HassStartTimer", [], minutes=5)], kind="command"),
             _heard("h31", "Set a timer for 5 minutes in 20 seconds.",
                    [_msg("HassStartTimer", [], seconds=20, conversation_command="Set a timer for 5 minutes")])]
    he.attribute_delayed(heard)
    assert heard[0].key == "h31"  # not the first item's window, where its missing speech time put it
    row = he.score_item(it, heard)
    assert not row["right"] and len(row["wrong"]) == 2  # misheard "and" as "in": a delayed 5-minute timer
