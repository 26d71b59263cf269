"""Persist outgoing messages to the ``Outbox`` on a writer thread, so publishing never waits for an fsync.

Why: ``Outbox.put`` fsyncs the message file and its directory; on an SD card that is tens of milliseconds, and the
callers are the audio loop (state changes) and a turn's responder (intents), before the reply is spoken. Here a
publish only appends to a bounded in-memory queue; one writer thread takes messages in order and puts them into the
outbox, then wakes the sender.

The honest trade: a message is durable once the writer has fsync'd it (normally a few ms after ``submit``), not when
``submit`` (and with it ``MqttLink.publish``) returns. A power cut inside that window loses what was still queued;
a clean stop does not, because ``close`` waits for the queue to drain (up to its timeout), and after ``close`` every
``submit`` writes before it returns, as the outbox alone did.

Guarantees kept: one writer, FIFO, so outbox sequence numbers follow the order of ``submit``; msg_ids are the
caller's; a retained state (``coalesce``) replaces an older one on the same topic still in the queue, like the
outbox does; when the queue is full the oldest queued state update (not critical) is dropped first, and a critical
message (intent, device command) is never dropped here: the caller waits for room instead (a disk that slow is
logged). The outbox's own bounds and drop rule then apply as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .outbox import Outbox, OutMessage

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    submitted: int = 0
    written: int = 0
    coalesced: int = 0  # a queued retained state replaced by a newer one before it was written
    dropped: int = 0  # queued state updates dropped because the queue was full
    waits: int = 0  # submits of a critical message that had to wait for room
    max_queued: int = 0  # high-water mark of the queue
    errors: int = 0  # put() raised (a bug, e.g. a duplicate id); logged


class OutboxWriter:
    """``submit(msg)`` returns at once; a daemon thread (started on demand) persists messages in order."""

    def __init__(self, outbox: Outbox, *, max_queued: int = 1000,
                 on_written: Callable[[], None] = lambda: None, name: str = "outbox-writer") -> None:
        self.outbox = outbox
        self._max = max(1, max_queued)
        self._on_written = on_written
        self._name = name
        self._q: deque[OutMessage] = deque()
        self._cond = threading.Condition()
        self._busy = False  # a message taken from the queue is being written
        self._sync = False  # after close(): submit() waits until its message is written
        self._thread: threading.Thread | None = None
        self.stats = WriterStats()

    def __len__(self) -> int:
        """Messages submitted but not yet in the outbox."""
        with self._cond:
            return len(self._q) + (1 if self._busy else 0)

    def submit(self, msg: OutMessage) -> None:
        """Queue ``msg`` (its msg_id must be set) for the writer; see the module docstring for the drop rule."""
        if not msg.msg_id:
            raise ValueError("OutboxWriter.submit needs a message with its msg_id set")
        with self._cond:
            if msg.coalesce:
                for old in [m for m in self._q if m.coalesce and m.topic == msg.topic]:
                    self._q.remove(old)
                    self.stats.coalesced += 1
            waited_since: float | None = None
            while len(self._q) >= self._max:
                victim = next((m for m in self._q if not m.critical), None)
                if victim is not None:
                    self._q.remove(victim)
                    self.stats.dropped += 1
                    log.warning("outbox writer: %d messages waiting for the disk; dropped the oldest state update "
                                "to %s (%d so far)", len(self._q) + 1, victim.topic, self.stats.dropped)
                    continue
                if not msg.critical:  # only critical ones queued: this state update is the one to go
                    self.stats.dropped += 1
                    return
                if waited_since is None:
                    waited_since = time.monotonic()
                    self.stats.waits += 1
                    log.warning("outbox writer: %d critical messages waiting for the disk; publishing waits for room",
                                len(self._q))
                self._ensure_thread()
                self._cond.wait(1.0)
            self._q.append(msg)
            self.stats.submitted += 1
            self.stats.max_queued = max(self.stats.max_queued, len(self._q))
            self._ensure_thread()
            self._cond.notify_all()
            if self._sync:  # closed: the caller asked for the old behaviour (persisted on return)
                self._cond.wait_for(lambda: not self._q and not self._busy)

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted is in the outbox (or ``timeout``); True if the queue is empty."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._q and not self._busy, timeout=max(0.0, timeout))

    def close(self, timeout: float) -> bool:
        """Drain the queue within ``timeout``; from now on ``submit`` writes before it returns. True if drained.

        Whatever is left after the timeout stays queued and the thread keeps writing it while the process lives.
        """
        drained = self.flush(timeout)
        with self._cond:
            self._sync = True
            left = len(self._q) + (1 if self._busy else 0)
            self._cond.notify_all()
        if not drained:
            log.error("outbox writer: %d message(s) not yet on disk after %.1f s (a very slow disk); still writing",
                      left, timeout)
        return drained

    def open(self) -> None:
        """Back to returning at once from ``submit`` (after a ``close``)."""
        with self._cond:
            self._sync = False

    # ------------------------------------------------------------------ the thread
    def _ensure_thread(self) -> None:
        """Start the writer if it is not running (called with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._q), timeout=5.0):
                    self._thread = None  # idle: end; the next submit starts a new one
                    return
                msg = self._q.popleft()
                self._busy = True
                self._cond.notify_all()  # room for a waiting critical submit
            try:
                self.outbox.put(msg)
                self.stats.written += 1
            except Exception:  # noqa: BLE001 - the writer must outlive a bad message
                self.stats.errors += 1
                log.exception("outbox writer: could not queue the message to %s", msg.topic)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            try:
                self._on_written()
            except Exception:  # noqa: BLE001
                log.exception("outbox writer: on_written callback failed")
