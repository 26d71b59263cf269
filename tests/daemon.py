"""The real daemon (``python -m edge_agent -c CONFIG run``) as a subprocess, for the end-to-end tests, the fault
tests and the soak (``tools/soak.py`` imports it too).

Its merged stdout/stderr is read on a thread; every line is kept with the monotonic time it arrived (the clock the
daemon stamps its turn records with), and parsed as it comes: turn records (the ``turn {...}`` line the engine logs
for every turn, even when the turn log file cannot be written), state changes (``state: a -> b``), warnings, errors
and tracebacks. Waits are deadlines on a condition that each new line wakes, never fixed sleeps. ``stop()`` sends
SIGTERM and, past its timeout, SIGKILL.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "tests" / "data" / "home.yaml"
TURN_LINE = re.compile(r"edge_agent\.[\w.]+: turn (\{.*\})\s*$")  # the module that logs it may move
STATE_LINE = re.compile(r"state: (\w+) -> (\w+)")
READY_MARK = "edge-agent: listening for"


@dataclass(frozen=True)
class Line:
    t: float  # time.monotonic() when the line was read
    text: str


class DaemonFailed(AssertionError):
    """A wait ran out, or the daemon died while a test waited for it; the message ends with the log's tail."""


class Daemon:
    """``Daemon(config, env=..., args=[...]).start()``; ``args`` go after ``run`` (``--home`` defaults to the tests'
    home). ``log_path``: every line is also written there, stamped with its monotonic time."""

    def __init__(self, config: Path | str, *, env: dict[str, str] | None = None, args: Sequence[str] = (),
                 home: Path | str | None = HOME, log_path: Path | None = None) -> None:
        self.cmd = [sys.executable, "-m", "edge_agent", "-c", str(config), "run",
                    *(["--home", str(home)] if home is not None else []), *args]
        self.env = env
        self.log_path = log_path
        self.lines: list[Line] = []
        self.turn_records: list[tuple[float, dict[str, Any]]] = []  # every turn record, announcements too
        self.states: list[tuple[float, str, str]] = []  # (t, from, to)
        self.warnings: list[Line] = []
        self.errors: list[Line] = []
        self.tracebacks = 0
        self.state = "idle"
        self.state_since = time.monotonic()
        self.max_non_idle_s = 0.0
        self.ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._log: TextIO | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Daemon:
        if self.log_path is not None:
            self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the reader)
        self.state_since = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, name="daemon-log", daemon=True)
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None, "not started"
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code once the process has ended (and its output was read); ``DaemonFailed`` past ``timeout``."""
        assert self.proc is not None, "not started"
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DaemonFailed(f"the daemon did not exit within {timeout} s:\n{self.tail()}") from None
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` s. The exit code (-9 when killed)."""
        if self.proc is None:
            raise RuntimeError("not started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL at once (a power cut: no shutdown, no flush)."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    # ------------------------------------------------------------------ the log
    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                self._take(Line(time.monotonic(), raw.rstrip("\n")))
        finally:
            if self._log is not None:
                self._log.close()
            with self._cond:
                self._cond.notify_all()

    def _take(self, line: Line) -> None:
        text = line.text
        with self._cond:
            self.lines.append(line)
            if READY_MARK in text:
                self.ready.set()
            if text.startswith("WARNING") or " WARNING " in text:
                self.warnings.append(line)
            if text.startswith(("ERROR", "CRITICAL")) or " ERROR " in text:
                self.errors.append(line)
            if text.startswith("Traceback"):
                self.tracebacks += 1
            m = TURN_LINE.search(text)
            if m:
                try:
                    self.turn_records.append((line.t, json.loads(m.group(1))))
                except ValueError:
                    pass
            m = STATE_LINE.search(text)
            if m:
                if self.state != "idle":
                    self.max_non_idle_s = max(self.max_non_idle_s, line.t - self.state_since)
                self.states.append((line.t, m.group(1), m.group(2)))
                self.state, self.state_since = m.group(2), line.t
            self._cond.notify_all()
        if self._log is not None:
            self._log.write(f"{line.t:.2f} {text}\n")
            self._log.flush()

    def text(self, since: float = 0.0) -> str:
        with self._cond:
            return "\n".join(x.text for x in self.lines if x.t >= since)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(x.text for x in self.lines[-n:])

    def turns(self, since: float = 0.0, announcements: bool = False) -> list[dict[str, Any]]:
        """Turn records logged at or after ``since``, in order (announcements only when asked for)."""
        with self._cond:
            return [r for t, r in self.turn_records
                    if t >= since and (announcements or r.get("outcome") != "announcement")]

    def non_idle_for(self) -> float:
        return 0.0 if self.state == "idle" else time.monotonic() - self.state_since

    # ------------------------------------------------------------------ waits (deadlines)
    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str = "condition",
                 while_alive: bool = True) -> Any:
        """The first truthy value of ``predicate()``, checked on every new log line and at least every 0.1 s (for
        conditions outside the log); ``DaemonFailed`` past the deadline, or at once if the daemon dies while
        ``while_alive``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                if while_alive and self.proc is not None and self.proc.poll() is not None:
                    # the process ended: the reader may still hold its last lines; give them one more look
                    if self._reader is not None and self._reader.is_alive():
                        self._cond.wait(0.1)
                        value = predicate()
                        if value:
                            return value
                    raise DaemonFailed(f"the daemon exited ({self.proc.returncode}) while waiting for {what}:\n"
                                       + self._tail_locked())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonFailed(f"{what}: not within {timeout:g} s:\n" + self._tail_locked())
                self._cond.wait(min(0.1, left))

    def _tail_locked(self, n: int = 40) -> str:
        return "\n".join(x.text for x in self.lines[-n:])

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from now until the daemon says it is listening (models loaded)."""
        t0 = time.monotonic()
        self.wait_for(self.ready.is_set, timeout, "the daemon to start listening")
        return time.monotonic() - t0

    def wait_line(self, pattern: str, since: float = 0.0, timeout: float = 30) -> str:
        """The first line at or after ``since`` that matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)

        def found() -> str | None:
            return next((x.text for x in self.lines if x.t >= since and rx.search(x.text)), None)

        return self.wait_for(found, timeout, f"a log line matching {pattern!r}")

    def wait_turn(self, after: int, timeout: float = 150) -> dict[str, Any]:
        """The first turn (not an announcement) logged after the ``after`` turns already seen."""

        def got() -> dict[str, Any] | None:
            t = self.turns()
            return t[after] if len(t) > after else None

        return self.wait_for(got, timeout, f"turn #{after + 1} to be logged")

    def wait_state(self, state: str, since: float, timeout: float) -> float:
        """When the daemon entered ``state`` at or after ``since``."""

        def entered() -> float | None:
            return next((t for t, _, to in self.states if t >= since and to == state), None)

        return self.wait_for(entered, timeout, f"state {state}")
