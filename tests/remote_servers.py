"""Real servers on loopback for the remote-stage tests: llama-cpp-python's OpenAI-compatible server with the
project's GGUF, wyoming-faster-whisper and wyoming-piper with the project's models (one ``ServerProcess`` each), a
listener that accepts connections and never answers, and a plain HTTP server that answers with
whatever bytes a test gives it (malformed data)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .broker import free_port


class ServerProcess:
    """A real server in its own process on 127.0.0.1:port, logging to ``log_path``. ``start()`` spawns ``_argv()``
    and waits until ``_ready()`` is true (deadline ``timeout``; a process that exits or never answers is a
    RuntimeError with its log); ``kill()`` and ``start()`` again reuse the same port."""

    name = "server"

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server answers its protocol's first request (a failed attempt is False)."""
        raise NotImplementedError

    def start(self, timeout: float = 120.0):  # noqa: ANN201 - returns the subclass
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            if self._ready():
                return self
            if time.monotonic() > end:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer on {self.port} within {timeout} s")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class LlamaServer(ServerProcess):
    """``python -m llama_cpp.server`` on 127.0.0.1:port; ``kill()`` and ``start()`` again on the same port."""

    name = "llama_cpp.server"

    def __init__(self, model: Path, log_path: Path, *, threads: int = 1, port: int | None = None,
                 interrupt_requests: bool = True) -> None:
        super().__init__(log_path, port)
        self.model = Path(model)
        self.threads = threads
        # the server's default (True) cuts a streaming reply short as soon as another request arrives
        self.interrupt_requests = interrupt_requests

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                "--n_ctx", "2048", "--verbose", "False", "--interrupt_requests", str(self.interrupt_requests)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:  # noqa: S310 - loopback
                json.loads(r.read())
                return True
        except OSError:
            return False


class WyomingWhisperServer(ServerProcess):
    """``python -m wyoming_faster_whisper`` on 127.0.0.1:port with the project's Whisper folder. Ready when it
    answers Wyoming ``describe`` (``info`` holds the answer)."""

    name = "wyoming-faster-whisper"

    def __init__(self, model_dir: Path, workdir: Path, *, threads: int = 1, port: int | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.dir / "wyoming.log", port)
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.info = None

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{self.port}", "--model",
                str(self.model_dir), "--data-dir", str(self.dir), "--local-files-only", "--language", "en",
                "--beam-size", "1", "--cpu-threads", str(self.threads), "--compute-type", "int8",
                "--stt-library", "faster-whisper"]

    def _ready(self) -> bool:
        from edge_agent.config import WyomingSttSettings
        from edge_agent.errors import SttError
        from edge_agent.stt_wyoming import WyomingSttEngine

        try:
            self.info, _ = WyomingSttEngine(WyomingSttSettings(host="127.0.0.1", port=self.port)).describe()
            return True
        except SttError:
            return False


class WyomingPiperServer(ServerProcess):
    """``python -m wyoming_piper`` on 127.0.0.1:port with the project's voice folder (nothing is downloaded: the voice
    is found in --data-dir). Ready when it has answered describe and spoken a first sentence."""

    name = "wyoming-piper"
    voice = "en_US-joe-medium"

    def __init__(self, voice_dir: Path, workdir: Path, *, streaming: bool = True, port: int | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.dir / "wyoming-piper.log", port)
        self.voice_dir = Path(voice_dir)
        self.streaming = streaming

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{self.port}", "--voice", self.voice,
                "--data-dir", str(self.voice_dir), "--download-dir", str(self.dir),
                *([] if self.streaming else ["--no-streaming"])]

    def _ready(self) -> bool:
        from edge_agent.config import Settings, WyomingTtsSettings
        from edge_agent.errors import TtsError
        from edge_agent.tts_wyoming import WyomingTts

        try:
            WyomingTts(WyomingTtsSettings(host="127.0.0.1", port=self.port), Settings().tts).describe()
            return True
        except TtsError:
            return False

    def start(self, timeout: float = 120.0) -> WyomingPiperServer:
        from edge_agent.config import Settings, WyomingTtsSettings
        from edge_agent.tts_wyoming import WyomingTts

        super().start(timeout)
        # it loads the voice on the first request (seconds, more on a busy machine): ready once it has spoken
        WyomingTts(WyomingTtsSettings(host="127.0.0.1", port=self.port, timeout_s=timeout), Settings().tts)._remote(
            "Ready.")
        return self


class GarbageServer:
    """Accepts TCP connections, reads what comes, and answers every connection with ``reply`` bytes, then closes
    (a server that answers garbage); counts the connections."""

    def __init__(self, reply: bytes = b"this is not a wyoming event\n") -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                conn.recv(65536)  # the request's first bytes; then the garbage, at once
                conn.sendall(self.reply)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # drain what the client still sends until it closes
                    pass
            except OSError:
                pass

    def close(self) -> None:
        try:  # wakes the thread blocked in accept(): on Linux close() alone leaves the port listening until then
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class SilentServer:
    """Accepts TCP connections and never sends a byte (a hung server); counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # kept open, never read or answered

    def close(self) -> None:
        try:  # wakes the thread blocked in accept(): on Linux close() alone leaves the port listening until then
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.accepted:
            c.close()


class ScriptedHttpServer:
    """A real HTTP server whose answer to every request is ``self.reply`` (status, content type, body bytes)."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, "application/json", b'{"object": "list", "data": []}')
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, self.rfile.read(n)))
                status, ctype, body = outer.reply
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sse(self, events: list[object | str]) -> None:
        """Answer with a server-sent event stream of these events (objects as JSON, strings as they are)."""
        lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
        self.reply = (200, "text/event-stream", "".join(lines).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(pred, timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()
