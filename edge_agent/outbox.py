"""A durable, ordered, bounded on-disk queue of outgoing MQTT messages.

Why: a voice command that the user heard acknowledged ("turning on the kitchen light") must reach the hub even if the
broker is down for an hour or the power is cut a second later. Every accepted message is written to its own file
(``<seq>.json``, a monotonically increasing sequence number), fsync'd and renamed into place before ``put`` returns,
so a crash loses nothing already accepted and never leaves a half-written message behind. A new ``Outbox`` on the same
directory resumes in sequence order. A message is removed (``ack``) only after the broker acknowledged it. Puts are
serialized, but the disk write happens outside the queue's lock, so ``peek``/``ack``/``len`` never wait for an fsync.
``MqttLink`` does not call ``put`` on its callers' threads: ``outbox_writer.OutboxWriter`` does, on its own thread.

The queue is bounded (count and bytes). When full, the OLDEST non-critical messages (state updates, transcripts) are
dropped first, counted and logged; intents and device commands go only when nothing else is left. A full or
read-only disk never raises: the message is kept in memory (and delivered if the process lives), the error is logged
and counted.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)

FILE_SUFFIX = ".json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class OutMessage:
    """One outgoing message. ``critical`` messages (intents, device commands) outlive state updates when full;
    ``coalesce`` messages (retained states) replace an older undelivered message on the same topic."""

    topic: str
    payload: bytes | str
    qos: int = 1
    retain: bool = False
    critical: bool = True
    coalesce: bool = False
    msg_id: str = ""
    seq: int = -1  # assigned by the outbox
    created: float = field(default=0.0, compare=False)  # epoch seconds, assigned by the outbox

    @property
    def payload_bytes(self) -> bytes:
        return self.payload.encode("utf-8") if isinstance(self.payload, str) else self.payload

    @property
    def size(self) -> int:
        """What the message costs against the byte bound."""
        return len(self.payload_bytes) + len(self.topic.encode("utf-8"))


@dataclass
class OutboxStats:
    pending: int = 0
    pending_bytes: int = 0
    accepted: int = 0
    acked: int = 0
    dropped: int = 0  # evicted because the outbox was full
    dropped_critical: int = 0  # of those, intents/commands (only when no state update was left to drop)
    coalesced: int = 0  # older retained states replaced by a newer one on the same topic
    disk_errors: int = 0  # writes that failed; those messages live in memory only
    corrupt_files: int = 0  # unreadable files found at start, moved aside as *.bad


class Outbox:
    """Ordered durable queue: ``put`` (persist, then accept), ``peek``/``peek_many`` (oldest first), ``ack``.

    Thread-safe: the engine puts from its threads while the MQTT sender peeks and acks from its own.
    ``directory=None`` keeps everything in memory (for a disabled or test link). ``fsync_fn`` is what flushes a
    file descriptor to stable storage (``os.fsync``; a test passes a slow one to stand in for an SD card).
    """

    def __init__(self, directory: str | os.PathLike[str] | None, *, max_messages: int = 1000,
                 max_bytes: int = 4_000_000, fsync: bool = True,
                 fsync_fn: Callable[[int], None] = os.fsync) -> None:
        self._dir = Path(directory) if directory is not None else None
        self._max_messages = max(1, max_messages)
        self._max_bytes = max(1, max_bytes)
        self._fsync = fsync
        self._fsync_fn = fsync_fn
        self._lock = threading.Lock()  # the queue in memory; never held across disk I/O in put()
        self._put_lock = threading.Lock()
        self._msgs: OrderedDict[str, OutMessage] = OrderedDict()  # msg_id -> message, in seq order
        self._files: dict[str, Path] = {}  # msg_id -> its file (absent for memory-only messages)
        self._bytes = 0
        self._next_seq = 0
        self._disk_ok = True  # for logging a disk problem once per episode, not per message
        self.stats = OutboxStats()
        if self._dir is not None:
            self._load()

    # ------------------------------------------------------------------ public
    def put(self, msg: OutMessage) -> str:
        """Persist and enqueue ``msg``; returns its msg_id (a uuid-based one is made if it has none).

        Never raises for disk problems: the message is then kept in memory and the problem logged.
        """
        # One put at a time (files and memory in the same order), but the disk write happens outside the queue
        # lock: the sender's peek/ack and ``len()`` never wait for an fsync.
        with self._put_lock:
            with self._lock:
                msg_id = msg.msg_id or uuid.uuid4().hex
                if msg_id in self._msgs:
                    raise ValueError(f"outbox: duplicate msg_id {msg_id!r}")
                msg = replace(msg, msg_id=msg_id, seq=self._next_seq, created=msg.created or time.time())
                self._next_seq += 1
            path = self._write(msg)
            with self._lock:
                return self._accept(msg, path)

    def _accept(self, msg: OutMessage, path: Path | None) -> str:
        """Enqueue a message already written (``path``) or kept in memory only (None). With the lock held."""
        msg_id = msg.msg_id
        if msg.coalesce:  # after the new file is written: a power cut in between leaves both, never neither
            for old in [m for m in self._msgs.values() if m.coalesce and m.topic == msg.topic]:
                self._remove(old.msg_id)
                self.stats.coalesced += 1
        if path is not None:
            self._files[msg_id] = path
        self._msgs[msg_id] = msg
        self._bytes += msg.size
        self.stats.accepted += 1
        self._enforce_bounds(keep=msg_id)
        self._update_stats()
        return msg_id

    def peek(self) -> OutMessage | None:
        """The oldest undelivered message, or None."""
        with self._lock:
            return next(iter(self._msgs.values()), None)

    def peek_many(self, n: int) -> list[OutMessage]:
        """Up to ``n`` oldest undelivered messages, oldest first."""
        with self._lock:
            out: list[OutMessage] = []
            for m in self._msgs.values():
                if len(out) >= n:
                    break
                out.append(m)
            return out

    def ack(self, msg_id: str) -> bool:
        """Remove a delivered message; False if it was not there (already acked, dropped or coalesced)."""
        with self._lock:
            if msg_id not in self._msgs:
                return False
            self._remove(msg_id)
            self.stats.acked += 1
            self._update_stats()
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._msgs)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def directory(self) -> Path | None:
        return self._dir

    @property
    def max_messages(self) -> int:
        return self._max_messages

    def __repr__(self) -> str:
        return f"Outbox(dir={str(self._dir)!r}, pending={len(self)})"

    # ------------------------------------------------------------------ bounds
    def _enforce_bounds(self, keep: str) -> None:
        """Drop the oldest non-critical messages, then the oldest critical ones, until within bounds."""
        while len(self._msgs) > self._max_messages or self._bytes > self._max_bytes:
            victim = next((m for m in self._msgs.values() if not m.critical), None)
            if victim is None:
                victim = next((m for m in self._msgs.values() if m.msg_id != keep), None)
            if victim is None:  # a single message larger than max_bytes: keep it rather than lose it silently
                break
            self._remove(victim.msg_id)
            self.stats.dropped += 1
            if victim.critical:
                self.stats.dropped_critical += 1
            log.warning("outbox full (%d messages, %d bytes; limits %d, %d): dropped the oldest %s message to %s "
                        "(%d dropped so far)", len(self._msgs) + 1, self._bytes + victim.size, self._max_messages,
                        self._max_bytes, "critical" if victim.critical else "state", victim.topic, self.stats.dropped)

    def _update_stats(self) -> None:
        self.stats.pending = len(self._msgs)
        self.stats.pending_bytes = self._bytes

    # ------------------------------------------------------------------ disk
    def _path(self, seq: int) -> Path:
        assert self._dir is not None
        return self._dir / f"{seq:016d}{FILE_SUFFIX}"

    def _write(self, msg: OutMessage) -> Path | None:
        """Write, fsync and rename the message's file; its path, or None (memory only) if there is no disk."""
        if self._dir is None:
            return None
        raw = msg.payload_bytes
        try:
            text, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, enc = base64.b64encode(raw).decode("ascii"), "base64"
        record = {"v": FORMAT_VERSION, "seq": msg.seq, "msg_id": msg.msg_id, "topic": msg.topic, "qos": msg.qos,
                  "retain": msg.retain, "critical": msg.critical, "coalesce": msg.coalesce,
                  "created": msg.created, "payload_is_str": isinstance(msg.payload, str), "encoding": enc,
                  "payload": text}
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        final = self._path(msg.seq)
        tmp = final.with_name(f".tmp-{final.name}")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self._fsync:
                    self._fsync_fn(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            if self._fsync:
                self._fsync_dir()
        except OSError as e:
            self.stats.disk_errors += 1
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            if self._disk_ok:
                log.error("outbox: cannot write %s (%s); keeping undelivered messages in memory only until the disk "
                          "recovers (they are lost if the process stops). fix: free disk space or make %s writable",
                          final, e.strerror or e, self._dir)
            self._disk_ok = False
            return None
        if not self._disk_ok:
            log.info("outbox: writing to %s works again", self._dir)
            self._disk_ok = True
        return final

    def _fsync_dir(self) -> None:
        """Make the rename itself durable (a power cut right after put() must not lose the new file name)."""
        assert self._dir is not None
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            self._fsync_fn(fd)
        finally:
            os.close(fd)

    def _remove(self, msg_id: str) -> None:
        msg = self._msgs.pop(msg_id)
        self._bytes -= msg.size
        path = self._files.pop(msg_id, None)
        if path is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                # The message would come back after a restart: a duplicate the consumer drops by id, not a loss.
                log.warning("outbox: cannot remove %s (%s); it may be sent again after a restart", path, e.strerror)

    def _load(self) -> None:
        """Resume: read every message file in sequence order; move unreadable ones aside, never delete them."""
        assert self._dir is not None
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            names = sorted(p for p in self._dir.iterdir() if p.is_file())
        except OSError as e:
            self.stats.disk_errors += 1
            self._disk_ok = False
            log.error("outbox: cannot open %s (%s); messages will be kept in memory only. fix: make it writable or "
                      "set mqtt.outbox_dir", self._dir, e.strerror)
            return
        for p in names:
            if p.name.startswith(".tmp-"):
                # Written but never renamed: put() had not returned, so the message was never accepted.
                p.unlink(missing_ok=True)
                continue
            if not p.name.endswith(FILE_SUFFIX):
                continue
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
                raw = rec["payload"].encode("utf-8") if rec["encoding"] == "utf-8" else base64.b64decode(
                    rec["payload"])
                payload: bytes | str = raw.decode("utf-8") if rec.get("payload_is_str") else raw
                msg = OutMessage(topic=str(rec["topic"]), payload=payload, qos=int(rec["qos"]),
                                 retain=bool(rec["retain"]), critical=bool(rec["critical"]),
                                 coalesce=bool(rec.get("coalesce", False)), msg_id=str(rec["msg_id"]),
                                 seq=int(rec["seq"]), created=float(rec.get("created", 0.0)))
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.stats.corrupt_files += 1
                log.error("outbox: %s is unreadable (%s); moved aside as %s.bad", p, e, p.name)
                try:
                    p.rename(p.with_name(p.name + ".bad"))
                except OSError:
                    pass
                continue
            if msg.msg_id in self._msgs:
                continue
            self._msgs[msg.msg_id] = msg
            self._files[msg.msg_id] = p
            self._bytes += msg.size
            self._next_seq = max(self._next_seq, msg.seq + 1)
        # Files sort by their zero-padded sequence number, so self._msgs is already in order.
        self._update_stats()
        if self._msgs:
            log.info("outbox: resumed %d undelivered message(s) from %s", len(self._msgs), self._dir)
