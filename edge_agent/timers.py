"""Voice timers: start, cancel, pause, resume, add/remove time, status; finished timers fire a callback.

The manager is a pure state machine over an injected clock (seconds, monotonic): ``tick(now)`` fires whatever has
finished, so tests drive time with plain numbers. ``start_thread()`` runs the same ``tick`` from a small background
thread for the daemon. Timers are selected the way Home Assistant's timer intents select them: by name, by area, by
their starting duration ("cancel the 5 minute timer"), or, when only one timer exists, that one.

With a ``store`` file, every change is saved (atomically, with the wall-clock end of each running timer) and
``restore()`` brings the timers back after a restart or a power cut; one that ran out while the device was off
rings at once and says so (``Timer.missed_s``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ToolError

log = logging.getLogger(__name__)

MAX_TIMER_S = 24 * 3600  # a voice timer longer than a day is almost certainly a misrecognition
MISSED_S = 5.0  # a restored timer that ran out longer ago than this says it finished while the device was off
STORE_VERSION = 1


@dataclass
class Timer:
    id: int
    name: str | None
    area: str | None
    start_hours: int
    start_minutes: int
    start_seconds: int
    total_s: float  # current full length (changes with increase/decrease)
    started_at: float  # clock time when the current running stretch began
    elapsed_before_s: float = 0.0  # run time accumulated before the current stretch (pauses)
    active: bool = True  # False while paused
    command: str | None = None  # a conversation command to run when it finishes ("open the garage door in 5 min")
    missed_s: float = 0.0  # restored after a restart: how long ago it ran out while the device was off

    def remaining(self, now: float) -> float:
        run = self.elapsed_before_s + ((now - self.started_at) if self.active else 0.0)
        return max(0.0, self.total_s - run)

    def describe(self) -> str:
        """'the pizza timer' / 'the 5 minute timer' / 'the kitchen timer'."""
        if self.name:
            return f"the {self.name} timer"
        return f"the {duration_words(self.start_hours * 3600 + self.start_minutes * 60 + self.start_seconds)} timer"

    def finished_text(self) -> str:
        """What to say when it rings: 'Your pizza timer is done.' (a command timer runs its command instead)."""
        if self.missed_s > MISSED_S:
            return (f"While I was off, your {self.describe().removeprefix('the ')} finished, "
                    f"{duration_words(self.missed_s, adjective=False)} ago.")
        return f"Your {self.describe().removeprefix('the ')} is done."

    def status(self, now: float) -> dict[str, Any]:
        left = round(self.remaining(now))
        return {"id": self.id, "name": self.name, "area": self.area, "is_active": self.active,
                "start_hours": self.start_hours, "start_minutes": self.start_minutes,
                "start_seconds": self.start_seconds, "total_seconds_left": left,
                "hours_left": left // 3600, "minutes_left": (left % 3600) // 60, "seconds_left": left % 60,
                "command": self.command}


def duration_words(seconds: float, *, adjective: bool = True) -> str:
    """3690 -> '1 hour 1 minute and 30 seconds'; adjective form keeps units singular ('5 minute timer')."""
    s = int(round(seconds))
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n} {unit}" + ("" if n == 1 or adjective else "s"))
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class TimerManager:
    """All timers of this device; thread-safe; ``on_finished(timer)`` runs on the ticking thread."""

    def __init__(self, on_finished: Callable[[Timer], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_timers: int = 20,
                 store: str | Path | None = None, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._store = Path(store) if store else None
        self._store_error: str | None = None
        self._on_finished = on_finished
        self._max = max_timers
        self._timers: dict[int, Timer] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def on_finished(self) -> Callable[[Timer], None] | None:
        """The callback for finished timers; may be set after construction (the engine wires it up)."""
        return self._on_finished

    @on_finished.setter
    def on_finished(self, callback: Callable[[Timer], None] | None) -> None:
        self._on_finished = callback

    # ------------------------------------------------------------------ commands
    def start(self, hours: float = 0, minutes: float = 0, seconds: float = 0, name: str | None = None,
              area: str | None = None, command: str | None = None) -> Timer:
        """Start a timer; raises ToolError for a zero, negative or over-a-day duration or too many timers."""
        for label, v in (("hours", hours), ("minutes", minutes), ("seconds", seconds)):
            if v < 0:
                raise ToolError(f"{label}: {v} is negative; a timer needs a positive duration")
        total = hours * 3600 + minutes * 60 + seconds
        if total <= 0:
            raise ToolError("hours/minutes/seconds: a timer needs a duration above 0 seconds")
        if total > MAX_TIMER_S:
            raise ToolError(f"hours/minutes/seconds: {duration_words(total, adjective=False)} is too long; "
                            "allowed: up to 24 hours")
        with self._lock:
            if len(self._timers) >= self._max:
                raise ToolError(f"too many timers ({self._max}); cancel one first")
            t = Timer(next(self._ids), name.strip() if name else None, area, int(hours), int(minutes),
                      int(seconds), float(total), self._clock(), command=command)
            self._timers[t.id] = t
            self._save()
            return t

    def find(self, name: str | None = None, area: str | None = None, start_hours: int | None = None,
             start_minutes: int | None = None, start_seconds: int | None = None) -> list[Timer]:
        """Timers matching every given selector (none given = all timers)."""
        with self._lock:
            out = list(self._timers.values())
        if any(v is not None for v in (start_hours, start_minutes, start_seconds)):
            out = [t for t in out if (t.start_hours, t.start_minutes, t.start_seconds)
                   == (start_hours or 0, start_minutes or 0, start_seconds or 0)]
        if name:
            key = name.strip().casefold()
            exact = [t for t in out if (t.name or "").casefold() == key]
            out = exact or _close_name(key, out)
        if area:
            key = area.strip().casefold()
            out = [t for t in out if (t.area or "").casefold() == key]
        return out

    def select_one(self, **selectors: Any) -> Timer:
        """Exactly one timer for the selectors, or ToolError saying why (none / which one?)."""
        found = self.find(**selectors)
        if not found:
            raise ToolError(_no_timer(selectors))
        if len(found) > 1:
            found_active = [t for t in found if t.active]
            if len(found_active) == 1 and not any(selectors.values()):
                return found_active[0]
            raise ToolError(f"{len(found)} timers match; say which: "
                            + ", ".join(t.describe() for t in found))
        return found[0]

    def cancel(self, timer_id: int | None = None, **selectors: Any) -> Timer:
        with self._lock:
            t = self._timers[timer_id] if timer_id in self._timers else self.select_one(**selectors)
            del self._timers[t.id]
            self._save()
            return t

    def cancel_all(self, area: str | None = None) -> list[Timer]:
        with self._lock:
            gone = self.find(area=area)
            for t in gone:
                del self._timers[t.id]
            self._save()
            return gone

    def pause(self, **selectors: Any) -> Timer:
        with self._lock:
            t = self.select_one(**selectors)
            if t.active:
                now = self._clock()
                t.elapsed_before_s += now - t.started_at
                t.active = False
                self._save()
            return t

    def unpause(self, **selectors: Any) -> Timer:
        with self._lock:
            t = self.select_one(**selectors)
            if not t.active:
                t.started_at = self._clock()
                t.active = True
                self._save()
            return t

    def increase(self, seconds: float, **selectors: Any) -> Timer:
        if seconds <= 0:
            raise ToolError("hours/minutes/seconds: the time to add must be above 0")
        with self._lock:
            t = self.select_one(**selectors)
            if t.remaining(self._clock()) + seconds > MAX_TIMER_S:
                raise ToolError("hours/minutes/seconds: a timer can run at most 24 hours")
            t.total_s += seconds
            self._save()
            return t

    def decrease(self, seconds: float, **selectors: Any) -> Timer:
        """Remove time; a timer decreased to nothing finishes at the next tick."""
        if seconds <= 0:
            raise ToolError("hours/minutes/seconds: the time to remove must be above 0")
        with self._lock:
            t = self.select_one(**selectors)
            t.total_s = max(t.total_s - seconds, t.total_s - t.remaining(self._clock()))
            self._save()
            return t

    def status(self, **selectors: Any) -> list[dict[str, Any]]:
        now = self._clock()
        return [t.status(now) for t in sorted(self.find(**selectors), key=lambda t: t.remaining(now))]

    def remaining(self, timer: Timer) -> float:
        return timer.remaining(self._clock())

    @property
    def timers(self) -> list[Timer]:
        with self._lock:
            return list(self._timers.values())

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        """Write every timer to the store (under the lock). A failure (full disk, read-only) is logged once and
        never stops a timer: they keep running in memory."""
        if self._store is None:
            return
        now, wall = self._clock(), self._wall()
        rows = []
        for t in self._timers.values():
            left = t.remaining(now)
            rows.append({"name": t.name, "area": t.area, "start_hours": t.start_hours,
                         "start_minutes": t.start_minutes, "start_seconds": t.start_seconds, "total_s": t.total_s,
                         "remaining_s": round(left, 3), "active": t.active,
                         "ends_at": round(wall + left, 3) if t.active else None, "command": t.command})
        tmp = self._store.with_name(self._store.name + ".tmp")
        try:
            self._store.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": STORE_VERSION, "saved_at": round(wall, 3), "timers": rows}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._store)
            if self._store_error:
                log.info("timers: saving to %s works again", self._store)
            self._store_error = None
        except OSError as e:
            if self._store_error is None:
                log.warning("timers: cannot save to %s (%s); timers keep running but will not survive a restart",
                            self._store, e.strerror or e)
            self._store_error = str(e)

    def restore(self) -> list[Timer]:
        """Load the timers saved before a restart. Running ones continue from their wall-clock end (one that ran
        out meanwhile rings at the next tick, with ``missed_s``); paused ones keep their time left. A missing file
        is no timers; an unreadable one is set aside as ``*.bad`` with a warning naming it, never a crash."""
        if self._store is None or not self._store.exists():
            return []
        try:
            data = json.loads(self._store.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
                raise ValueError(f"not a version {STORE_VERSION} timer file")
            rows = data["timers"]
            if not isinstance(rows, list):
                raise ValueError("'timers' is not a list")
            wall, now = self._wall(), self._clock()
            restored = []
            with self._lock:
                for row in rows:
                    total = float(row["total_s"])
                    if row.get("active"):
                        left = float(row["ends_at"]) - wall
                    else:
                        left = float(row["remaining_s"])
                    left = min(max(left, -10 * MAX_TIMER_S), total)
                    t = Timer(next(self._ids), row.get("name"), row.get("area"), int(row.get("start_hours", 0)),
                              int(row.get("start_minutes", 0)), int(row.get("start_seconds", 0)), total, now,
                              elapsed_before_s=total - max(left, 0.0), active=bool(row.get("active")),
                              command=row.get("command"), missed_s=max(0.0, -left))
                    self._timers[t.id] = t
                    restored.append(t)
                self._save()
        except (OSError, ValueError, KeyError, TypeError) as e:
            bad = self._store.with_name(self._store.name + ".bad")
            log.warning("timers: %s is unreadable (%s); moved to %s, starting with no timers",
                        self._store, e, bad.name)
            try:
                os.replace(self._store, bad)
            except OSError:
                pass
            return []
        if restored:
            log.info("timers: restored %d from %s", len(restored), self._store)
        return restored

    # ------------------------------------------------------------------ time
    def tick(self, now: float | None = None) -> list[Timer]:
        """Remove and report finished timers (calling on_finished for each); returns them, soonest first."""
        now = self._clock() if now is None else now
        with self._lock:
            done = sorted((t for t in self._timers.values() if t.active and t.remaining(now) <= 0),
                          key=lambda t: t.started_at + t.total_s - t.elapsed_before_s)
            for t in done:
                del self._timers[t.id]
            if done:
                self._save()
        for t in done:
            if self._on_finished is not None:
                try:
                    self._on_finished(t)
                except Exception:  # a failing callback must not kill the timer thread
                    log.exception("timer %s: on_finished failed", t.id)
        return done

    def start_thread(self, period_s: float = 0.2) -> None:
        """Tick from a daemon thread every ``period_s`` until ``stop()``."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(period_s):
                self.tick()

        self._thread = threading.Thread(target=loop, name="timers", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


TIMER_NAME_MIN = 80  # rapidfuzz ratio for a misheard timer name ("the past timer" for the pasta one)


def _close_name(key: str, timers: list[Timer]) -> list[Timer]:
    """The one named timer whose name is close to ``key`` when none has it exactly: Whisper's "past" for "pasta",
    "egg" for "eggs". Never a guess between two: two names as close (or none close enough) give nothing."""
    from rapidfuzz import fuzz

    scored = sorted(((fuzz.ratio(key, t.name.casefold()), t.id, t) for t in timers if t.name), reverse=True)
    if not scored or scored[0][0] < TIMER_NAME_MIN or (len(scored) > 1 and scored[1][0] >= scored[0][0] - 5):
        return []
    return [scored[0][2]]


def _no_timer(selectors: dict[str, Any]) -> str:
    """What is said when no timer matches (it follows "Sorry, I can't do that: "), in words, no brackets: "there is
    no 10 minute timer named soup in the kitchen"."""
    start = [selectors.get(k) for k in ("start_hours", "start_minutes", "start_seconds")]
    what = "timer"
    if any(v is not None for v in start):
        h, m, s = (v or 0 for v in start)
        what = f"{duration_words(h * 3600 + m * 60 + s)} timer"
    if selectors.get("name"):
        what += f" named {selectors['name']}"
    if selectors.get("area"):
        what += f" in the {selectors['area']}"
    return f"there is no {what}"
