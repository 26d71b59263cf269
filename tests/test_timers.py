"""TimerManager driven by an injected clock: plain numbers in, finished timers out."""

from __future__ import annotations

import time

import pytest

from edge_agent.errors import ToolError
from edge_agent.timers import Timer, TimerManager, duration_words


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def env() -> tuple[TimerManager, Clock, list[Timer]]:
    clock, fired = Clock(), []
    return TimerManager(on_finished=fired.append, clock=clock), clock, fired


def test_fires_once_at_the_right_time(env) -> None:
    tm, clock, fired = env
    t = tm.start(minutes=1, seconds=30, name="tea")
    clock.t += 89.9
    assert tm.tick() == [] and fired == []
    assert tm.status()[0]["total_seconds_left"] == 0  # rounds 0.1 s
    clock.t += 0.1
    assert tm.tick() == [t] and fired == [t]
    assert tm.tick() == [] and tm.timers == []  # removed: fires once


def test_late_bound_callback_and_finished_text() -> None:
    clock, fired = Clock(), []
    tm = TimerManager(clock=clock)
    tm.on_finished = fired.append
    tm.start(minutes=5, name="pizza")
    tm.start(seconds=30)
    clock.t += 300
    assert [t.finished_text() for t in tm.tick()] == ["Your 30 second timer is done.", "Your pizza timer is done."]
    assert len(fired) == 2


def test_tick_takes_an_explicit_time(env) -> None:
    tm, clock, fired = env
    a = tm.start(seconds=10)
    b = tm.start(seconds=5)
    assert tm.tick(now=clock.t + 20) == [b, a]  # soonest first
    assert fired == [b, a]


def test_pause_and_unpause(env) -> None:
    tm, clock, fired = env
    tm.start(seconds=60)
    clock.t += 20
    tm.pause()
    clock.t += 1000  # paused time does not count
    assert tm.tick() == []
    assert tm.status()[0]["total_seconds_left"] == 40 and tm.status()[0]["is_active"] is False
    tm.unpause()
    clock.t += 39
    assert tm.tick() == []
    clock.t += 1
    assert len(tm.tick()) == 1


def test_increase_decrease(env) -> None:
    tm, clock, fired = env
    tm.start(minutes=5, name="pizza")
    tm.increase(60, name="pizza")
    assert tm.status()[0]["total_seconds_left"] == 360
    clock.t += 100
    tm.decrease(200, name="pizza")
    assert tm.status()[0]["total_seconds_left"] == 60
    tm.decrease(10_000, name="pizza")  # cannot go below zero: finishes at the next tick
    assert tm.status()[0]["total_seconds_left"] == 0
    assert len(tm.tick()) == 1
    with pytest.raises(ToolError, match="above 0"):
        tm.start(seconds=5) and tm.increase(0)


def test_selection(env) -> None:
    tm, clock, fired = env
    tm.start(minutes=5, name="pizza", area="Kitchen")
    tm.start(minutes=10, area="Living Room")
    assert tm.find(start_minutes=10)[0].area == "Living Room"
    assert tm.find(name="PIZZA")[0].start_minutes == 5
    assert tm.find(area="kitchen")[0].name == "pizza"
    with pytest.raises(ToolError, match="2 timers match; say which: the pizza timer, the 10 minute timer"):
        tm.pause()
    with pytest.raises(ToolError, match="^there is no timer named soup$"):  # said after "Sorry, I can't do that: "
        tm.cancel(name="soup")
    with pytest.raises(ToolError, match="^there is no 7 minute timer in the Kitchen$"):
        tm.cancel(start_minutes=7, area="Kitchen")
    assert tm.cancel(start_minutes=10).start_minutes == 10
    assert tm.cancel().name == "pizza"  # the only one left
    assert tm.cancel_all() == []


def test_a_misheard_timer_name_finds_the_one_close_to_it(env) -> None:
    """Whisper's "stop the past timer" for the pasta one: the one timer whose name is close is meant; two as close,
    or none close enough, is never a guess."""
    tm, clock, fired = env
    tm.start(minutes=8, name="pasta")
    tm.start(minutes=3, name="eggs")
    assert [t.name for t in tm.find(name="past")] == ["pasta"]
    assert [t.name for t in tm.find(name="egg")] == ["eggs"]
    assert tm.find(name="pizza") == [] and tm.find(name="tea") == []  # not close enough
    assert tm.cancel(name="past").name == "pasta"
    tm.start(minutes=2, name="bread")
    tm.start(minutes=4, name="breed")
    assert tm.find(name="bred") == []  # "bread" and "breed" are as close: never a guess between them
    assert [t.name for t in tm.find(name="bread")] == ["bread"]  # an exact name is never in doubt


def test_cancel_all_by_area(env) -> None:
    tm, clock, fired = env
    tm.start(minutes=1, area="Kitchen")
    tm.start(minutes=2, area="Kitchen")
    tm.start(minutes=3, area="Office")
    assert len(tm.cancel_all(area="Kitchen")) == 2
    assert [t.area for t in tm.timers] == ["Office"]


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({}, "above 0 seconds"), ({"minutes": -1}, "minutes: -1 is negative"), ({"hours": 25}, "up to 24 hours")])
def test_bad_durations(env, kwargs, pattern) -> None:
    with pytest.raises(ToolError, match=pattern):
        env[0].start(**kwargs)


def test_limit_and_failing_callback() -> None:
    clock = Clock()

    def boom(t: Timer) -> None:
        raise RuntimeError("speaker unplugged")

    tm = TimerManager(on_finished=boom, clock=clock, max_timers=2)
    tm.start(seconds=1)
    tm.start(seconds=2)
    with pytest.raises(ToolError, match="too many timers"):
        tm.start(seconds=3)
    clock.t += 5
    assert len(tm.tick()) == 2  # a failing callback does not stop the others


def test_duration_words() -> None:
    assert duration_words(330, adjective=False) == "5 minutes and 30 seconds"
    assert duration_words(3690, adjective=False) == "1 hour, 1 minute and 30 seconds"
    assert duration_words(300) == "5 minute"


def test_background_thread_fires_real_timer() -> None:
    fired: list[Timer] = []
    tm = TimerManager(on_finished=fired.append)
    tm.start_thread(period_s=0.01)
    try:
        tm.start(seconds=0.05)
        deadline = time.monotonic() + 2
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        tm.stop()
    assert len(fired) == 1


# ---------------------------------------------------------------------- kept across restarts (plain numbers)
class Wall(Clock):
    def __init__(self) -> None:
        self.t = 1_800_000_000.0


def _pair(path, fired):
    mono, wall = Clock(), Wall()
    return TimerManager(on_finished=fired.append, clock=mono, wall=wall, store=path), mono, wall


def test_timers_survive_a_restart(tmp_path) -> None:
    store, fired = tmp_path / "state" / "timers.json", []
    tm, mono, wall = _pair(store, fired)
    tm.start(minutes=10, name="pizza")
    tm.start(minutes=5, name="tea", area="Kitchen")
    tm.pause(name="tea")
    mono.t += 60
    wall.t += 60
    tm.tick()
    assert store.exists()
    # power cut: 2 minutes later a new process (its monotonic clock starts elsewhere) restores them
    tm2, mono2, wall2 = _pair(store, fired)
    mono2.t = 5.0
    wall2.t = wall.t + 120
    restored = {t.name: t for t in tm2.restore()}
    assert set(restored) == {"pizza", "tea"}
    assert tm2.remaining(restored["pizza"]) == pytest.approx(600 - 60 - 120)  # it kept running while off
    assert tm2.remaining(restored["tea"]) == pytest.approx(300)  # paused: its time left is kept
    assert not restored["tea"].active and restored["tea"].area == "Kitchen"
    mono2.t += 419.9
    assert tm2.tick() == []
    mono2.t += 0.2
    assert [t.name for t in tm2.tick()] == ["pizza"]
    assert fired[-1].finished_text() == "Your pizza timer is done."
    assert [t.name for t in TimerManager(store=store, clock=mono2, wall=lambda: wall2.t + 420).restore()] == ["tea"]


def test_a_timer_that_ran_out_while_off_rings_at_once_and_says_so(tmp_path) -> None:
    store, fired = tmp_path / "timers.json", []
    tm, mono, wall = _pair(store, fired)
    tm.start(seconds=30, name="egg")
    tm2, _, wall2 = _pair(store, fired)
    wall2.t = wall.t + 90
    tm2.restore()
    assert [t.name for t in tm2.tick()] == ["egg"]
    assert fired[0].missed_s == pytest.approx(60)
    assert fired[0].finished_text() == "While I was off, your egg timer finished, 1 minute ago."
    assert TimerManager(store=store, clock=Clock(), wall=Wall()).restore() == []  # rung: no longer saved


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "timers": []}', '{"version": 1, "timers": 5}',
                                     '{"version": 1, "timers": [{"name": "x"}]}'])
def test_an_unreadable_timer_file_is_set_aside_never_a_crash(tmp_path, content, caplog) -> None:
    store = tmp_path / "timers.json"
    store.write_text(content)
    tm = TimerManager(store=store, clock=Clock(), wall=Wall())
    assert tm.restore() == []
    assert (tmp_path / "timers.json.bad").read_text() == content
    assert "unreadable" in caplog.text and "timers.json.bad" in caplog.text
    tm.start(seconds=10)
    assert store.exists()  # and saving works again


def test_a_timer_file_that_cannot_be_written_degrades_to_memory(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fired: list[Timer] = []
    mono = Clock()
    tm = TimerManager(on_finished=fired.append, clock=mono, store=blocker / "timers.json")  # parent is a file
    tm.start(seconds=5, name="a")
    tm.start(seconds=6, name="b")
    assert caplog.text.count("cannot save") == 1  # said once, not per change
    mono.t += 6
    assert [t.name for t in tm.tick()] == ["a", "b"]
