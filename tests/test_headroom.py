"""headroom.py: what a machine affords, decided from measured figures (plain numbers, no models)."""

from __future__ import annotations

import pytest

from edge_agent import ending
from edge_agent.headroom import LAG_MAX_S, Headroom, afford, choose, decode_budget_s, speculation_wait_s

NORMAL = 0.4  # vad.trailing_silence_s default


def test_decode_budget_is_the_endpoints_wait_from_the_first_pause() -> None:
    assert decode_budget_s(NORMAL) == pytest.approx(NORMAL - 0.12 + ending.SPECULATION_WAIT_MAX_S)  # 1.08 s


@pytest.mark.parametrize(("decode_s", "expected"), [
    (None, True),  # nothing measured yet: the fast machine's behaviour from the first turn
    (0.13, True),  # this 2-core x86 machine: a speculation takes ~0.13 s
    (0.7, True),  # a Pi 5 (0.38 CPU here): ~0.5-0.9 s
    (1.65, False),  # a Pi 4 (0.17 CPU here): 1.2-2.5 s, longer than the pause it was meant to fill
])
def test_afford_by_the_decode_time(decode_s: float | None, expected: bool) -> None:
    assert afford(decode_s, False, NORMAL) is expected


def test_a_loop_behind_the_microphone_affords_nothing() -> None:
    assert not afford(0.1, True, NORMAL)
    assert not afford(None, True, NORMAL)


def test_modes() -> None:
    assert choose("on", False) and choose("auto", True)
    assert not choose("off", True) and not choose("auto", False)


def test_speculation_wait_unchanged_when_the_decode_fits() -> None:
    limit = NORMAL + ending.SPECULATION_WAIT_MAX_S
    assert speculation_wait_s(NORMAL, 0.12, None) == pytest.approx(limit)
    assert speculation_wait_s(NORMAL, 0.12, 0.13) == pytest.approx(limit)
    assert speculation_wait_s(NORMAL, 0.12, 1.0) == pytest.approx(limit)  # done at 1.12 s <= 1.2 s


def test_a_decode_that_cannot_finish_in_time_never_delays_the_endpoint() -> None:
    assert speculation_wait_s(NORMAL, 0.12, 1.65) == pytest.approx(NORMAL)
    assert speculation_wait_s(NORMAL, 0.5, 0.8) == pytest.approx(NORMAL)  # started late in a long pause


def test_headroom_follows_the_decodes() -> None:
    h = Headroom(NORMAL)
    assert h.affordable and h.speculate("auto") and h.idle_prefill("auto")
    h.observe_decode(0.12)
    assert h.affordable
    for _ in range(3):  # the machine got slow (a quota, other load): the average follows within a few decodes
        h.observe_decode(2.0)
    assert not h.affordable and not h.speculate("auto") and not h.idle_prefill("auto")
    assert h.speculate("on") and not h.speculate("off")
    assert h.speculation_wait_s(0.12) == pytest.approx(NORMAL)
    for _ in range(4):  # and back
        h.observe_decode(0.3)
    assert h.affordable
    h.observe_decode(0.0)  # no figure (an engine without timing) changes nothing
    assert h.decodes == 8


def test_headroom_lag_has_hysteresis() -> None:
    h = Headroom(NORMAL)
    h.observe_lag(0.05)
    assert h.affordable
    h.observe_lag(LAG_MAX_S + 0.1)
    assert not h.affordable
    h.observe_lag(0.2)  # catching up, not caught up
    assert not h.affordable
    h.observe_lag(0.01)
    assert h.affordable
    assert h.summary() == {"decode_s": None, "affordable": True, "yield_to_loop": False}


def test_the_loop_once_far_behind_is_given_way_to_for_good() -> None:
    h = Headroom(NORMAL)
    h.observe_lag(0.4)  # behind, but not far: nothing is reniced yet
    assert h.lagging and not h.yield_to_loop
    h.observe_lag(0.6)
    h.observe_lag(0.0)
    assert h.yield_to_loop and h.affordable  # caught up again; the other threads keep giving way


def test_other_threads_give_way_to_the_loop() -> None:
    """priority.py on real threads, in a process of its own (the change is one-way): every thread but the caller
    gets the background nice value (Linux only)."""
    import os
    import subprocess
    import sys

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("threads cannot be listed here")
    code = """
import os, threading
from edge_agent.priority import BACKGROUND_NICE, lower_other_threads
started, stop, tid = threading.Event(), threading.Event(), []
def worker():
    tid.append(threading.get_native_id()); started.set(); stop.wait(10)
t = threading.Thread(target=worker); t.start(); started.wait(5)
me = threading.get_native_id()
changed = lower_other_threads(me)
assert changed >= 1, changed
assert os.getpriority(os.PRIO_PROCESS, tid[0]) >= BACKGROUND_NICE
assert os.getpriority(os.PRIO_PROCESS, me) == 0  # the loop keeps its own
assert lower_other_threads(me) == 0  # nothing left to lower
assert lower_other_threads(me, tasks="/nonexistent") == 0
stop.set(); t.join(5)
print("ok")
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
