"""systemd notify protocol for a ``Type=notify`` unit with ``WatchdogSec=``: READY, STATUS, WATCHDOG, STOPPING.

``SystemdNotifier`` sends through the ``sdnotify`` package to the datagram socket systemd names in ``NOTIFY_SOCKET``
(no variable: not started by systemd, every call does nothing). ``progress()`` is the watchdog ping: it must only be
called from the voice loop when the loop made progress, so a hung loop stops pinging and systemd restarts the service;
it sends at most every min(WATCHDOG_USEC / 2, 2 s).

A failure to send never escapes (the voice loop must not die of its supervisor's socket), but it is not silent either:
the first failed send logs one warning naming ``NOTIFY_SOCKET`` and what it means; nothing more is logged while it
keeps failing, and the recovery is logged once. The socket is reconnected on the next send after a failure.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import sdnotify

log = logging.getLogger(__name__)

MAX_PING_INTERVAL_S = 2.0  # watchdog pings at most this far apart (and at most half of WATCHDOG_USEC)


def watchdog_seconds(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (``WATCHDOG_USEC``, ``WATCHDOG_PID``), or None."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (a parent that exec'd us without clearing it)
    return int(usec) / 1e6


def _field(text: str) -> str:
    """A value safe for one line of the protocol: no newline (it would start another assignment), Latin-1 only
    (sdnotify encodes with it)."""
    return " ".join(str(text).split()).encode("latin-1", "replace").decode("latin-1")


class SystemdNotifier:
    """``ready(status)``, ``status(text)``, ``progress(status)`` (rate-limited WATCHDOG=1 + STATUS), ``stopping()``.

    Each returns True when the message was sent, False when it was skipped (rate limit, no systemd) or failed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog_s = watchdog_seconds()
        self.interval = min(self.watchdog_s / 2, MAX_PING_INTERVAL_S) if self.watchdog_s else MAX_PING_INTERVAL_S
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._last_ping: float | None = None
        self._failing = False
        self.failures = 0  # sends that failed, for tests and diagnostics
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> bool:
        return self._send(f"READY=1\nSTATUS={_field(status)}")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={_field(text)}")

    def progress(self, status: str) -> bool:
        """The loop made progress: ping the watchdog (and update STATUS) unless the last ping is recent."""
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        self._last_ping = now
        return self._send(f"WATCHDOG=1\nSTATUS={_field(status)}")

    def stopping(self, status: str = "stopping") -> bool:
        return self._send(f"STOPPING=1\nSTATUS={_field(status)}")

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    # ------------------------------------------------------------------------------------------------------------
    def _send(self, message: str) -> bool:
        if self.address is None:
            return False
        with self._lock:
            try:
                if self._notifier is None:
                    # debug=True: sdnotify raises instead of swallowing, so a failure can be reported
                    self._notifier = sdnotify.SystemdNotifier(debug=True)
                self._notifier.notify(message)
            except Exception as e:  # noqa: BLE001 - OSError mostly; nothing may reach the voice loop
                self.failures += 1
                self._disconnect()  # a peer that went away never comes back on the same connection
                if not self._failing:
                    self._failing = True
                    log.warning("systemd notify: cannot send to NOTIFY_SOCKET=%s (%s); systemd's watchdog may kill "
                                "the service and its status is not updated. Retrying on every message; logged "
                                "again when it works.", self.address, e)
                return False
            if self._failing:
                self._failing = False
                log.info("systemd notify: sending to NOTIFY_SOCKET=%s works again", self.address)
            return True

    def _disconnect(self) -> None:
        notifier, self._notifier = self._notifier, None
        sock = getattr(notifier, "socket", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
