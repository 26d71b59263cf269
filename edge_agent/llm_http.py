"""The OpenAI-compatible server's wire, for ``llm_openai.OpenAiBackend`` and the doctor's server check: the API key
(from an environment variable or a file, never logged), the endpoint parsed from ``base_url``, one HTTP/1.1 request
per connection with its own deadlines, the server-sent event stream, the token counts a server reports, and the
server's health (marked down after a failure, probed in the background with a back-off doubling from
``RETRY_MIN_S`` to ``llm.openai.retry_max_s``). Standard library only (``http.client``, ``ssl``)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import OpenAiSettings
from .errors import ConfigError
from .llm_backend import CallStats

log = logging.getLogger("edge_agent.llm_openai")  # the backend's log name, as before the split

RETRY_MIN_S = 0.5  # first back-off after a failure; doubles up to llm.openai.retry_max_s
MAX_ERROR_BODY = 2000  # bytes of an HTTP error body kept for the message
MAX_LINE = 1 << 20  # one SSE line; a longer one is garbage
CANCEL_POLL_S = 0.05  # how often the watcher looks at the cancel event while a read blocks


class RemoteFailure(Exception):
    """The server did not give a usable answer; ``reason`` is one word for the turn log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def shutdown_socket(sock: socket.socket) -> None:
    """Shut a socket both ways so a read blocked on it returns at once (a deadline, a cancel); closed is fine."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def api_key(s: OpenAiSettings) -> str | None:
    """The API key from ``api_key_env`` or ``api_key_file`` (never logged), or None."""
    if s.api_key_env:
        import os

        value = os.environ.get(s.api_key_env)
        if value is None:
            raise ConfigError(f"llm.openai.api_key_env: environment variable {s.api_key_env} is not set",
                              fix=f"export {s.api_key_env}=... or use llm.openai.api_key_file")
        return value.strip()
    if s.api_key_file:
        p = Path(s.api_key_file).expanduser()
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"llm.openai.api_key_file: cannot read {p}: {e.strerror}") from None
        return lines[0].strip() if lines else ""
    return None


@dataclass(frozen=True)
class Endpoint:
    """Where the server is and how to talk to it (parsed once from ``base_url``)."""

    scheme: str
    host: str
    port: int
    path: str  # the API root's path, without a trailing slash ("/v1")
    url: str  # base_url as given, for messages (it never holds the key)

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"llm.openai.base_url: {base_url!r} is not an http(s) URL",
                              fix="e.g. http://192.168.1.10:8080/v1")
        if u.username or u.password:
            raise ConfigError("llm.openai.base_url must not carry credentials",
                              fix="put the key in llm.openai.api_key_env or api_key_file")
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname, port, u.path.rstrip("/"), base_url)


class Http:
    """One request per connection (no pooling: a turn makes one to three calls, and a fresh connection never
    inherits a half-read stream from a cancelled one)."""

    def __init__(self, endpoint: Endpoint, settings: OpenAiSettings, key: str | None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._key = key
        self._ssl: ssl.SSLContext | None = None
        if endpoint.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=settings.ca_file)

    def open(self, method: str, path: str, body: dict[str, Any] | None, *, timeout: float,
             done: threading.Event | None = None, cancel: threading.Event | None = None,
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect, send, read the status line and headers (within ``timeout``). ``RemoteFailure`` otherwise.
        With ``cancel`` (and ``done``, set by the caller when it has finished with the connection), a watcher
        thread shuts the socket down as soon as ``cancel`` is set, so no read outlives a cancel."""
        e = self.endpoint
        conn: http.client.HTTPConnection
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(e.host, e.port, timeout=self.settings.connect_timeout_s,
                                               context=self._ssl)
        else:
            conn = http.client.HTTPConnection(e.host, e.port, timeout=self.settings.connect_timeout_s)
        headers = {"Accept": "text/event-stream, application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if cancel is not None and done is not None:
            threading.Thread(target=_watch, args=(cancel, done, conn), name="llm-remote-cancel", daemon=True).start()
        try:
            conn.connect()
        except ssl.SSLError as err:
            conn.close()
            raise RemoteFailure("tls", f"TLS with {e.host}:{e.port} failed ({err.reason or err})") from None
        except TimeoutError:
            conn.close()
            raise RemoteFailure("unreachable", f"no connection to {e.host}:{e.port} within "
                                f"{self.settings.connect_timeout_s:g} s") from None
        except OSError as err:
            conn.close()
            raise RemoteFailure("unreachable", f"cannot connect to {e.host}:{e.port} ({err.strerror or err})"
                                ) from None
        try:
            assert conn.sock is not None
            conn.sock.settimeout(max(0.05, timeout))
            conn.request(method, e.path + path, body=data, headers=headers)
            resp = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise RemoteFailure("timeout", f"no answer within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise RemoteFailure("connection", f"the connection failed ({type(err).__name__}: {err})") from None
        if resp.status != 200:
            try:
                text = resp.read(MAX_ERROR_BODY).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            conn.close()
            reason = "auth" if resp.status in (401, 403) else "http"
            raise RemoteFailure(reason, f"HTTP {resp.status} {resp.reason}: {text.strip()[:300]}")
        return conn, resp


class Health:
    """Whether the server is believed up; after a failure a background thread probes it with back-off. ``what``
    names the server in the log (the Wyoming STT fallback uses it too)."""

    def __init__(self, probe: Any, retry_max_s: float, what: str = "LLM server") -> None:
        self._probe = probe  # () -> None, raises RemoteFailure
        self.retry_max_s = retry_max_s
        self.what = what
        self.up = True
        self.reason = ""
        self.since = 0.0
        self.recoveries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark_down(self, failure: RemoteFailure) -> None:
        with self._lock:
            if self.up:
                log.warning("%s down (%s): %s; probing it in the background", self.what, failure.reason,
                            failure.detail)
                self.up, self.reason, self.since = False, failure.reason, time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                name = "llm-remote-retry" if self.what == "LLM server" else "remote-retry"
                self._thread = threading.Thread(target=self._retry, name=name, daemon=True)
                self._thread.start()

    def _retry(self) -> None:
        delay = RETRY_MIN_S
        while not self._stop.wait(delay):
            try:
                self._probe()
            except RemoteFailure as e:
                log.debug("%s still down: %s", self.what, e)
                delay = min(self.retry_max_s, delay * 2)
                continue
            with self._lock:
                log.info("%s back after %.1f s", self.what, time.monotonic() - self.since)
                self.up, self.reason = True, ""
                self.recoveries += 1
            return

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout=2.0)


def _watch(cancel: threading.Event, done: threading.Event, conn: http.client.HTTPConnection) -> None:
    """Close the socket as soon as the turn is cancelled, so a blocked read returns at once."""
    while not done.wait(CANCEL_POLL_S):
        if cancel.is_set():
            sock = getattr(conn, "sock", None)
            if sock is not None:
                shutdown_socket(sock)
            return


def _sse(resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, *, first_s: float, idle_s: float,
         end: float, cancel: threading.Event | None, got_first: Any) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, until ``[DONE]`` or the end of the body. Each read waits at
    most ``first_s`` before the first piece, ``idle_s`` after it, and never past ``end``."""
    data: list[str] = []
    while True:
        now = time.monotonic()
        if now >= end:
            raise RemoteFailure("timeout", "the reply took longer than the call's deadline")
        wait = min(idle_s if got_first() else first_s, end - now)
        sock = conn.sock
        if sock is not None:
            sock.settimeout(max(0.05, wait))
        try:
            raw = resp.readline(MAX_LINE)
        except TimeoutError:
            if cancel is not None and cancel.is_set():
                return
            raise RemoteFailure("timeout", f"nothing from the server for {wait:.1f} s") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            if cancel is not None and cancel.is_set():
                return
            raise RemoteFailure("connection", f"the stream broke ({type(e).__name__})") from None
        if cancel is not None and cancel.is_set():
            return
        if not raw:
            return  # end of the body
        if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
            raise RemoteFailure("malformed", "an event line longer than 1 MiB")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:  # the end of one event
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    return
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise RemoteFailure("malformed", f"an event is not JSON: {payload[:80]!r}") from None
                if not isinstance(event, dict):
                    raise RemoteFailure("malformed", "an event is not a JSON object")
                if "error" in event and not event.get("choices"):
                    err = event["error"]
                    msg = err.get("message") if isinstance(err, dict) else err
                    raise RemoteFailure("http", f"the server reported an error: {str(msg)[:200]}")
                yield event
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive ping)
        field_, _, value = line.partition(":")
        if field_ == "data":
            data.append(value[1:] if value.startswith(" ") else value)
        elif field_ not in ("event", "id", "retry"):
            raise RemoteFailure("malformed", f"not a server-sent event stream: {line[:80]!r}")


def _usage(stats: CallStats, event: dict[str, Any]) -> None:
    """Token counts and times where the server tells them: OpenAI's ``usage``; llama-server's ``timings``."""
    usage = event.get("usage")
    if isinstance(usage, dict):
        stats.n_prompt = int(usage.get("prompt_tokens") or stats.n_prompt)
        stats.n_gen = int(usage.get("completion_tokens") or stats.n_gen)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and details.get("cached_tokens"):
            stats.n_cached = int(details["cached_tokens"])
    timings = event.get("timings")
    if isinstance(timings, dict):
        try:
            cached = int(timings.get("cache_n") or 0)
            stats.n_cached = cached
            stats.n_prompt = int(timings.get("prompt_n") or 0) + cached
            stats.t_prompt_s = float(timings.get("prompt_ms") or 0.0) / 1000
            stats.n_gen = int(timings.get("predicted_n") or stats.n_gen)
            stats.t_gen_s = float(timings.get("predicted_ms") or 0.0) / 1000
        except (TypeError, ValueError):
            pass


__all__ = ["CANCEL_POLL_S", "MAX_ERROR_BODY", "MAX_LINE", "RETRY_MIN_S", "Endpoint", "Health", "Http", "RemoteFailure",
           "api_key", "shutdown_socket"]
