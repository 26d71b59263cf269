"""The durable outbox: order, restart, crash, bounds (state updates dropped before intents), full disk; and the
writer thread in front of it (publishing never waits for the disk; order, coalescing, bounds, close)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edge_agent import outbox as outbox_mod
from edge_agent.outbox import Outbox, OutMessage
from edge_agent.outbox_writer import OutboxWriter

ROOT = Path(__file__).resolve().parent.parent


def msg(topic: str, payload: bytes | str = "x", *, critical: bool = True, coalesce: bool = False,
        retain: bool = False) -> OutMessage:
    return OutMessage(topic=topic, payload=payload, critical=critical, coalesce=coalesce, retain=retain)


def drain(box: Outbox) -> list[OutMessage]:
    out = []
    while (m := box.peek()) is not None:
        out.append(m)
        assert box.ack(m.msg_id)
    return out


def test_fifo_put_peek_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    ids = [box.put(msg(f"t/{i}", f"p{i}")) for i in range(5)]
    assert len(box) == 5 and len(set(ids)) == 5
    assert [m.msg_id for m in box.peek_many(3)] == ids[:3]
    assert box.peek().msg_id == ids[0]
    assert box.ack(ids[0]) and not box.ack(ids[0])  # a second ack of the same id is a no-op
    assert [m.topic for m in drain(box)] == ["t/1", "t/2", "t/3", "t/4"]
    assert len(box) == 0 and box.peek() is None
    assert list((tmp_path / "ob").iterdir()) == []  # acked messages leave no file behind


def test_resume_after_restart_in_order_with_payload_types(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    box = Outbox(d)
    junk = bytes(range(256))  # not UTF-8: stored as base64, must come back byte-exact
    ids = [box.put(msg("a", "héllo")), box.put(msg("b", junk)), box.put(msg("c", b"bytes", retain=True))]
    box.ack(ids[0])
    again = Outbox(d)
    assert [m.msg_id for m in again.peek_many(10)] == ids[1:]
    b, c = again.peek_many(2)
    assert b.payload == junk and isinstance(b.payload, bytes)
    assert c.payload == b"bytes" and c.retain is True
    new_id = again.put(msg("d", "later"))
    assert [m.topic for m in again.peek_many(10)] == ["b", "c", "d"]  # a new message goes after the resumed ones
    assert Outbox(d).peek_many(10)[-1].msg_id == new_id
    assert Outbox(d).peek().payload == junk


def test_str_payload_stays_str(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put(msg("t", '{"a": "ü"}'))
    assert Outbox(tmp_path).peek().payload == '{"a": "ü"}'


def test_count_bound_drops_oldest_state_updates_before_any_intent(tmp_path: Path, caplog) -> None:
    box = Outbox(tmp_path, max_messages=4)
    intent1 = box.put(msg("intent/1"))
    state1 = box.put(msg("state", "idle", critical=False))
    intent2 = box.put(msg("intent/2"))
    state2 = box.put(msg("state", "listening", critical=False))
    with caplog.at_level(logging.WARNING, logger="edge_agent.outbox"):
        intent3 = box.put(msg("intent/3"))  # 5 > 4: the oldest state update goes
    assert [m.msg_id for m in box.peek_many(10)] == [intent1, intent2, state2, intent3]
    assert box.stats.dropped == 1 and box.stats.dropped_critical == 0
    assert "dropped the oldest state message" in caplog.text
    box.put(msg("intent/4"))  # the next state update goes, still no intent lost
    assert state2 not in [m.msg_id for m in box.peek_many(10)]
    assert state1 not in [m.msg_id for m in box.peek_many(10)]
    box.put(msg("intent/5"))  # only intents left: the OLDEST intent goes, counted as critical
    assert [m.topic for m in box.peek_many(10)] == ["intent/2", "intent/3", "intent/4", "intent/5"]
    assert box.stats.dropped == 3 and box.stats.dropped_critical == 1
    assert len(list(tmp_path.glob("*.json"))) == 4  # dropped messages' files are gone too


def test_byte_bound(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_messages=1000, max_bytes=10_000)
    for _ in range(30):
        box.put(msg("s", "x" * 999, critical=False))  # 1000 bytes each with the topic
    assert box.pending_bytes <= 10_000 and len(box) == 10
    assert box.stats.dropped == 20


def test_coalesce_keeps_only_latest_retained_state(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put(msg("intent/1"))
    for s in ("idle", "listening", "thinking"):
        box.put(msg("site/state", s, critical=False, coalesce=True, retain=True))
    box.put(msg("site/transcript", "hi", critical=False, coalesce=True, retain=True))
    assert [(m.topic, m.payload) for m in box.peek_many(10)] == [
        ("intent/1", "x"), ("site/state", "thinking"), ("site/transcript", "hi")]
    assert box.stats.coalesced == 2
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_full_disk_keeps_messages_in_memory_and_logs_once(tmp_path: Path, monkeypatch, caplog) -> None:
    box = Outbox(tmp_path)
    first = box.put(msg("a"))
    real_open = os.open

    def enospc(path, *a, **k):  # a fault injected at the OS boundary: the disk is full
        if str(path).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(outbox_mod.os, "open", enospc)
    with caplog.at_level(logging.ERROR, logger="edge_agent.outbox"):
        ids = [box.put(msg(f"b{i}")) for i in range(3)]
    assert box.stats.disk_errors == 3
    assert caplog.text.count("cannot write") == 1  # logged once per episode, not per message
    assert "No space left" in caplog.text
    assert [m.msg_id for m in box.peek_many(10)] == [first, *ids]  # delivered in order from memory
    assert not list(tmp_path.glob(".tmp-*"))
    monkeypatch.setattr(outbox_mod.os, "open", real_open)
    last = box.put(msg("c"))
    assert [m.topic for m in Outbox(tmp_path).peek_many(10)] == ["a", "c"]  # persisted again once the disk works
    assert box.ack(ids[0]) and box.peek().msg_id == first and last


def test_unusable_directory_does_not_crash(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the outbox directory should be")
    with caplog.at_level(logging.ERROR, logger="edge_agent.outbox"):
        box = Outbox(blocker / "ob")
        mid = box.put(msg("a"))
    assert box.peek().msg_id == mid and box.stats.disk_errors >= 1
    assert "cannot" in caplog.text


def test_leftovers_and_corrupt_files(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    good = box.put(msg("good"))
    (tmp_path / ".tmp-0000000000000099.json").write_text("{half")  # never renamed: never accepted
    (tmp_path / "0000000000000050.json").write_text("{not json")  # damaged: kept aside, never deleted
    again = Outbox(tmp_path)
    assert [m.msg_id for m in again.peek_many(10)] == [good]
    assert again.stats.corrupt_files == 1
    assert (tmp_path / "0000000000000050.json.bad").exists()
    assert not (tmp_path / ".tmp-0000000000000099.json").exists()


def test_hard_kill_right_after_put_loses_nothing(tmp_path: Path) -> None:
    """A real process puts messages, says how many were accepted, and is SIGKILLed mid-stream."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from edge_agent.outbox import Outbox, OutMessage
        box = Outbox({str(tmp_path / 'ob')!r})
        i = 0
        while True:
            box.put(OutMessage(topic="t", payload=str(i)))
            print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    accepted = -1
    try:
        for line in proc.stdout:
            accepted = int(line)
            if accepted >= 40:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    payloads = [int(m.payload) for m in Outbox(tmp_path / "ob").peek_many(10_000)]
    assert accepted >= 40
    # Everything whose put() returned is there, in order, with no gaps (one more may have been in flight).
    assert payloads[: accepted + 1] == list(range(accepted + 1))
    assert payloads == list(range(len(payloads)))


@pytest.mark.parametrize("fsync", [True, False])
def test_put_cost(tmp_path: Path, fsync: bool) -> None:
    """Not a benchmark: put() with fsync must stay cheap enough for a few messages per turn (< 50 ms here)."""
    import time

    box = Outbox(tmp_path, fsync=fsync)
    t0 = time.perf_counter()
    for i in range(20):
        box.put(msg("t", str(i)))
    per_put = (time.perf_counter() - t0) / 20
    print(f"outbox put (fsync={fsync}): {per_put * 1000:.2f} ms")
    assert per_put < 0.05


# =========================================================================================== the writer thread


class GatedDisk:
    """An fsync that blocks until the test opens the gate: the disk is as slow as the test wants, deterministically."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()  # the writer is inside an fsync

    def fsync(self, fd: int) -> None:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        os.fsync(fd)


def wmsg(topic: str, payload: str = "x", **kw) -> OutMessage:
    return OutMessage(topic=topic, payload=payload, msg_id=f"id-{topic}-{payload}", **kw)


def wait_until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_writer_submit_returns_while_the_disk_is_blocked_then_writes_in_order(tmp_path: Path) -> None:
    disk = GatedDisk()
    box = Outbox(tmp_path, fsync_fn=disk.fsync)
    woken: list[int] = []
    writer = OutboxWriter(box, on_written=lambda: woken.append(1))
    msgs = [wmsg(f"intent/{i}") for i in range(5)]
    for m in msgs:
        t0 = time.perf_counter()
        writer.submit(m)
        assert time.perf_counter() - t0 < 0.02
    assert disk.entered.wait(5)
    assert len(writer) == 5 and len(box) == 0  # nothing accepted by the outbox yet: all waiting for the disk
    assert not list(tmp_path.glob("0*.json"))
    disk.gate.set()
    assert writer.flush(5)
    assert [m.msg_id for m in box.peek_many(10)] == [m.msg_id for m in msgs]  # ids kept, order kept
    seqs = [m.seq for m in box.peek_many(10)]
    assert seqs == sorted(seqs) and len(list(tmp_path.glob("0*.json"))) == 5 and len(woken) == 5
    assert [m.msg_id for m in Outbox(tmp_path).peek_many(10)] == [m.msg_id for m in msgs]  # really on disk


def test_writer_coalesces_queued_states_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    disk = GatedDisk()
    box = Outbox(tmp_path, fsync_fn=disk.fsync)
    writer = OutboxWriter(box)
    writer.submit(wmsg("intent/a"))
    assert disk.entered.wait(5)  # "intent/a" is being written; the rest waits in the queue
    for m in (wmsg("state", "listening", critical=False, coalesce=True, retain=True), wmsg("intent/b"),
              wmsg("state", "thinking", critical=False, coalesce=True, retain=True),
              wmsg("state", "speaking", critical=False, coalesce=True, retain=True)):
        writer.submit(m)
    assert len(writer) == 3 and writer.stats.coalesced == 2
    disk.gate.set()
    assert writer.flush(5)
    assert [(m.topic, m.payload) for m in box.peek_many(10)] == [
        ("intent/a", "x"), ("intent/b", "x"), ("state", "speaking")]


def test_writer_full_queue_drops_state_updates_first_and_never_a_critical_message(tmp_path: Path) -> None:
    disk = GatedDisk()
    box = Outbox(tmp_path, fsync_fn=disk.fsync)
    writer = OutboxWriter(box, max_queued=3)
    writer.submit(wmsg("intent/a"))
    assert disk.entered.wait(5)
    for m in (wmsg("state", "idle", critical=False), wmsg("intent/b"), wmsg("intent/c")):
        writer.submit(m)
    writer.submit(wmsg("intent/d"))  # full: the queued state update goes
    assert writer.stats.dropped == 1
    writer.submit(wmsg("state", "late", critical=False))  # full of critical messages: this state update goes
    assert writer.stats.dropped == 2
    done = threading.Event()
    blocked = threading.Thread(target=lambda: (writer.submit(wmsg("intent/e")), done.set()))
    blocked.start()
    assert wait_until(lambda: writer.stats.waits == 1)  # a critical message waits for room, it is not dropped
    assert not done.is_set()
    disk.gate.set()
    assert done.wait(5)
    blocked.join(5)
    assert writer.flush(5)
    assert [m.topic for m in box.peek_many(10)] == ["intent/a", "intent/b", "intent/c", "intent/d", "intent/e"]


def test_writer_close_drains_and_then_writes_before_returning(tmp_path: Path, caplog) -> None:
    disk = GatedDisk()
    box = Outbox(tmp_path, fsync_fn=disk.fsync)
    writer = OutboxWriter(box)
    writer.submit(wmsg("intent/a"))
    assert disk.entered.wait(5)
    with caplog.at_level(logging.ERROR, logger="edge_agent.outbox_writer"):
        assert writer.close(0.1) is False  # the disk does not answer: close gives up at its timeout, says so
    assert "not yet on disk" in caplog.text
    disk.gate.set()  # the thread kept writing: nothing is lost while the process lives
    assert writer.flush(5) and [m.topic for m in box.peek_many(10)] == ["intent/a"]
    assert writer.close(1.0) is True
    writer.submit(wmsg("intent/b"))  # closed: on disk when submit returns
    assert len(writer) == 0 and len(list(tmp_path.glob("0*.json"))) == 2
    writer.open()
    disk.gate.clear()
    disk.entered.clear()
    t0 = time.perf_counter()
    writer.submit(wmsg("intent/c"))  # open again: returns at once
    assert time.perf_counter() - t0 < 0.02 and len(writer) == 1
    disk.gate.set()
    assert writer.flush(5) and [m.topic for m in box.peek_many(10)] == ["intent/a", "intent/b", "intent/c"]


def test_peek_ack_and_len_do_not_wait_for_a_put_that_is_writing(tmp_path: Path) -> None:
    """The sender (peek/ack) and ``MqttLink.pending`` (len) must not stall behind an fsync of the writer."""
    disk = GatedDisk()
    box = Outbox(tmp_path, fsync_fn=disk.fsync)
    disk.gate.set()
    first = box.put(msg("intent/1"))
    disk.gate.clear()
    disk.entered.clear()
    writing = threading.Thread(target=box.put, args=(msg("intent/2"),))
    writing.start()
    assert disk.entered.wait(5)
    t0 = time.perf_counter()
    assert len(box) == 1 and box.peek().msg_id == first and box.ack(first) and len(box) == 0
    assert time.perf_counter() - t0 < 0.5  # not the 10 s the blocked write would take
    disk.gate.set()
    writing.join(5)
    assert [m.topic for m in box.peek_many(10)] == ["intent/2"]
