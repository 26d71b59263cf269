"""systemd notify over a real unix datagram socket (the kind systemd binds for NOTIFY_SOCKET), bound in a temp dir."""

from __future__ import annotations

import logging
import socket

import pytest

from edge_agent.notify import SystemdNotifier, watchdog_seconds

RECV_TIMEOUT_S = 2.0


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def recv(self) -> dict[str, str]:
        self.sock.settimeout(RECV_TIMEOUT_S)
        data = self.sock.recv(4096).decode("latin-1")
        return dict(line.split("=", 1) for line in data.splitlines())

    def pending(self) -> bool:
        """Whether a datagram is waiting (a send to a unix datagram socket is queued before send() returns)."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sd = FakeSystemd(path)
    yield sd
    sd.close()


def test_ready_status_watchdog_stopping_arrive(systemd):
    n = SystemdNotifier()
    assert n.enabled
    assert n.ready("listening (idle)")
    assert systemd.recv() == {"READY": "1", "STATUS": "listening (idle)"}
    assert n.status("loading models")
    assert systemd.recv() == {"STATUS": "loading models"}
    assert n.progress("idle; turns 3")
    assert systemd.recv() == {"WATCHDOG": "1", "STATUS": "idle; turns 3"}
    assert n.stopping()
    assert systemd.recv()["STOPPING"] == "1"
    # a newline in a status cannot smuggle another assignment in
    assert n.status("bad\nREADY=1 café ☃")
    assert systemd.recv() == {"STATUS": "bad READY=1 café ?"}
    assert not systemd.pending()


def test_watchdog_pings_are_rate_limited(systemd, monkeypatch):
    clock = [100.0]
    n = SystemdNotifier(clock=lambda: clock[0])
    assert n.interval == pytest.approx(1.5)  # WATCHDOG_USEC / 2
    sent = []
    for t in (100.0, 100.5, 101.49, 101.5, 102.0, 103.0, 103.1):
        clock[0] = t
        if n.progress(f"t={t}"):
            sent.append(t)
            assert systemd.recv() == {"WATCHDOG": "1", "STATUS": f"t={t}"}
        else:
            assert not systemd.pending()
    assert sent == [100.0, 101.5, 103.0]
    # a long watchdog still gets a ping every 2 s, and no watchdog at all: the same (STATUS stays fresh)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert SystemdNotifier().interval == 2.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert SystemdNotifier().interval == 2.0


def test_watchdog_settings_from_the_environment(monkeypatch):
    import os

    assert watchdog_seconds({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_seconds({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 20.0
    assert watchdog_seconds({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_seconds({}) is None


def test_without_systemd_every_call_is_a_quiet_no_op(monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    with caplog.at_level(logging.DEBUG, logger="edge_agent.notify"):
        assert not n.enabled
        assert not n.ready("x") and not n.progress("x") and not n.status("x") and not n.stopping()
    assert caplog.records == []


def test_socket_removed_mid_run_warns_once_and_recovers(systemd, caplog):
    clock = [0.0]
    n = SystemdNotifier(clock=lambda: clock[0])
    assert n.ready("idle")
    assert systemd.recv()["READY"] == "1"
    systemd.close()  # systemd's end goes away (socket closed and its file removed)
    with caplog.at_level(logging.INFO, logger="edge_agent.notify"):
        for _ in range(5):
            clock[0] += 2.0
            assert n.progress("idle") is False  # no exception escapes
        assert n.status("still here") is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        msg = warnings[0].getMessage()
        assert "NOTIFY_SOCKET=" + str(systemd.path) in msg
        assert "systemd's watchdog may kill the service" in msg
        assert n.failures == 6

        # systemd's socket is back: the next ping reconnects, and the recovery is logged once
        back = FakeSystemd(systemd.path)
        try:
            clock[0] += 2.0
            assert n.progress("idle again")
            assert back.recv() == {"WATCHDOG": "1", "STATUS": "idle again"}
            recovered = [r for r in caplog.records if "works again" in r.getMessage()]
            assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
            # and a new failure after the recovery is reported again
            back.close()
            clock[0] += 2.0
            assert not n.progress("x")
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
        finally:
            back.close()
