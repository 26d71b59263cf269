"""A Wyoming speech-to-text server as an STT engine (``stt.engine: wyoming``): Home Assistant's protocol, served by
``wyoming-faster-whisper`` (or any Wyoming ASR) on a home server, so a small board only streams audio.

The audio goes out while the user speaks: ``feed()`` only queues the chunk (the loop thread never waits on the
network), and one sender thread per utterance connects, sends ``transcribe`` + ``audio-start``, then each chunk as it
arrives. ``finish()`` sends ``audio-stop`` and waits for the ``transcript`` at most ``stt.wyoming.timeout_s``; an
unreachable, hung or garbled server is an ``SttError`` naming the server, never a hang. The server's events are read
with limits (``wyoming_wire.read_event``): a header line or an announced length past any real event's is garbage,
never a read of whatever a broken server announces.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .config import WyomingSttSettings
from .errors import SttError
from .llm_http import RemoteFailure, shutdown_socket
from .stt import SttEngine, SttSpec, SttStream, register_stt
from .wyoming_wire import read_event

log = logging.getLogger(__name__)

QUEUE_CHUNKS = 600  # queued chunks per utterance (60 s of 100 ms blocks): a stuck sender drops, never blocks feed()
IDLE_S = 60.0  # a stream neither fed nor finished for this long (an abandoned turn) ends its sender thread
_STOP = object()


class WyomingSttEngine(SttEngine):
    """One TCP connection per utterance to a Wyoming ASR server."""

    name = "wyoming"

    def __init__(self, settings: WyomingSttSettings) -> None:
        super().__init__(Path(f"tcp://{settings.host}:{settings.port}"))
        self.settings = settings

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _load(self) -> None:
        try:
            import wyoming  # noqa: F401
        except ImportError as e:  # pragma: no cover - installation problem
            raise SttError(f"wyoming is not installed ({e})", fix="pip install wyoming==1.10.2") from None

    def warmup(self) -> float:
        """The server loads its model on its own; one tiny request checks it answers (a failure is only logged)."""
        try:
            return super().warmup()
        except SttError as e:
            log.warning("stt: Wyoming server %s did not answer the warm-up: %s", self.address, e.message)
            return 0.0

    def describe(self) -> tuple[dict[str, Any], float]:
        """The server's ``info`` (Wyoming ``describe``) and the round-trip time in seconds."""
        from wyoming.event import write_event
        from wyoming.info import Describe

        t0 = time.monotonic()
        with self._connect() as sock, sock.makefile("rwb") as f:
            write_event(Describe().event(), f)
            try:
                event = read_event(f)
            except RemoteFailure as e:
                raise SttError(f"the Wyoming server {self.address} did not answer describe ({e.detail})") from None
        if event.type != "info":
            raise SttError(f"the Wyoming server {self.address} did not answer describe with info")
        return event.data, time.monotonic() - t0

    def _connect(self) -> socket.socket:
        s = self.settings
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout_s)
        except OSError as e:
            raise SttError(f"cannot connect to the Wyoming STT server {self.address} ({e.strerror or e})",
                           fix="start the server (README: One server, several rooms) or check stt.wyoming") from None
        sock.settimeout(s.timeout_s)
        return sock

    def _open_stream(self) -> SttStream:
        return WyomingStream(self)


class WyomingStream(SttStream):
    engine_name = "wyoming"

    def __init__(self, engine: WyomingSttEngine) -> None:
        super().__init__()
        self.engine = engine
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._done = threading.Event()
        self._text: str | None = None
        self._error: str | None = None
        self.failure_reason = ""  # one word for the turn log when it failed (as the LLM's fallback_reason)
        self._dropped = 0
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="stt-wyoming", daemon=True)
        self._thread.start()

    def _feed(self, samples: np.ndarray) -> str | None:
        try:
            self._queue.put_nowait(samples.tobytes())
        except queue.Full:
            self._dropped += 1
        return None

    def _finish(self) -> str:
        s = self.engine.settings
        try:
            self._queue.put(_STOP, timeout=0.1)
        except queue.Full:
            self._error = self._error or "the sender is stuck (queue full)"
        if not self._done.wait(s.timeout_s):
            self._abort()
            self.failure_reason = "timeout"
            raise SttError(f"no transcript from the Wyoming STT server {self.engine.address} within {s.timeout_s:g} "
                           "s of the end of speech", fix="check the server, or raise stt.wyoming.timeout_s")
        if self._error is not None:
            raise SttError(f"the Wyoming STT server {self.engine.address} failed: {self._error}",
                           fix="check the server (edge-agent check)")
        if self._dropped:
            log.warning("stt: %d audio chunks were dropped while the server was slow", self._dropped)
        return self._text or ""

    @property
    def failed(self) -> bool:
        """The server already failed this utterance (before ``finish()``): a fallback need not wait for it."""
        return self._done.is_set() and self._error is not None

    def _fail(self, reason: str, error: str) -> None:
        self.failure_reason, self._error = reason, error

    def _abort(self) -> None:
        sock = self._sock
        if sock is not None:
            shutdown_socket(sock)

    def _run(self) -> None:
        from wyoming.asr import Transcribe
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.event import write_event

        fmt = {"rate": SAMPLE_RATE, "width": 2, "channels": 1}
        try:
            try:
                sock = self._sock = self.engine._connect()
            except SttError as e:
                self._fail("unreachable", e.message)
                return
            with sock, sock.makefile("rwb") as f:
                write_event(Transcribe(language=self.engine.settings.language or None).event(), f)
                write_event(AudioStart(**fmt).event(), f)
                while True:
                    item = self._queue.get(timeout=IDLE_S)
                    if item is _STOP:
                        break
                    write_event(AudioChunk(audio=item, **fmt).event(), f)
                write_event(AudioStop().event(), f)
                chunks: list[str] = []
                while True:
                    try:
                        event = read_event(f)
                    except RemoteFailure as e:  # closed, timed out, or not a Wyoming event within the limits
                        reason = {"closed": "connection"}.get(e.reason, e.reason)
                        self._fail(reason, e.detail if reason != "connection" else "the connection closed before "
                                   f"the transcript ({e.detail})")
                        return
                    if event.type == "transcript":
                        text = event.data.get("text")
                        if not isinstance(text, str):
                            self._fail("malformed", "the transcript has no text")
                            return
                        self._text = text.strip() or " ".join(chunks).strip()
                        return
                    if event.type == "transcript-chunk":
                        chunks.append(str(event.data.get("text", "")))
                    elif event.type == "error":
                        self._fail("error", f"the server reported: {event.data.get('text', event.data)}")
                        return
        except queue.Empty:
            self._fail("abandoned", "the stream was abandoned (not finished)")
        except TimeoutError as e:
            self._fail("timeout", f"TimeoutError: {e}")
        except OSError as e:
            self._fail("connection", f"{type(e).__name__}: {e}")
        except (ValueError, KeyError, AttributeError, TypeError) as e:  # not Wyoming events: garbage
            self._fail("malformed", f"{type(e).__name__}: {e}")
        finally:
            self._done.set()


register_stt(SttSpec(
    name="wyoming",
    settings=lambda s: s.stt.wyoming,
    model=lambda _own: None,  # the model lives on the server
    model_kind=None,
    create=lambda own, _path: WyomingSttEngine(own),
    package="wyoming",
    threads=lambda _own: 0,
))
