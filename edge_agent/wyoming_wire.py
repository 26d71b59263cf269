"""Wyoming's wire, read with limits: one event (``read_event``) from a socket file with its header line and data
bounded (the package's own ``read_event`` cannot tell garbage from a closed connection and would read any length a
broken server announces) and its PCM audio as int16 mono (``pcm_to_int16``); a wait is ended at its deadline by
``llm_http.shutdown_socket``. Anything but a well-formed event is a ``RemoteFailure`` with its reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .llm_http import RemoteFailure

MAX_LINE = 64 * 1024  # bytes of one event's JSON header
MAX_DATA = 1 << 20  # bytes of one event's data or payload (an audio chunk is a few KB)


def read_event(f: Any) -> Any:
    """One Wyoming event (``wyoming.event.Event``) from a socket file, bounded; ``RemoteFailure`` otherwise."""
    from wyoming.event import Event

    try:
        line = f.readline(MAX_LINE + 1)
    except TimeoutError:
        raise RemoteFailure("timeout", "nothing from the server within the deadline") from None
    except OSError as e:
        raise RemoteFailure("closed", f"the connection failed ({e})") from None
    if not line:
        raise RemoteFailure("closed", "the server closed the connection before its answer ended")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise RemoteFailure("malformed", f"an event header longer than {MAX_LINE} bytes")
    try:
        header = json.loads(line)
    except ValueError:
        raise RemoteFailure("malformed", f"not a Wyoming event: {line[:60]!r}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise RemoteFailure("malformed", f"an event without a type: {line[:60]!r}")
    data = header.get("data") or {}
    lengths = [header.get("data_length") or 0, header.get("payload_length") or 0]
    if not isinstance(data, dict) or any(not isinstance(n, int) or n < 0 or n > MAX_DATA for n in lengths):
        raise RemoteFailure("malformed", f"an event with bad data or lengths: {line[:80]!r}")
    blobs = []
    for n in lengths:
        try:
            blob = f.read(n) if n else b""
        except TimeoutError:
            raise RemoteFailure("timeout", "the server stopped mid-event") from None
        except OSError as e:
            raise RemoteFailure("closed", f"the connection failed ({e})") from None
        if len(blob) < n:
            raise RemoteFailure("closed", "the server closed the connection mid-event")
        blobs.append(blob)
    if blobs[0]:
        try:
            extra = json.loads(blobs[0])
        except ValueError:
            raise RemoteFailure("malformed", "an event's data is not JSON") from None
        if not isinstance(extra, dict):
            raise RemoteFailure("malformed", "an event's data is not a mapping")
        data = {**data, **extra}
    return Event(type=header["type"], data=data, payload=blobs[1] or None)


def pcm_to_int16(payload: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian PCM of 1, 2 or 4 bytes per sample, interleaved channels, as int16 mono (channels averaged)."""
    frame = width * channels
    if width not in (1, 2, 4) or channels < 1 or len(payload) % frame:
        raise RemoteFailure("malformed", f"audio of width {width}, {channels} channel(s) and {len(payload)} bytes")
    if width == 1:  # unsigned 8-bit
        x = (np.frombuffer(payload, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        x = np.frombuffer(payload, dtype="<i2").astype(np.int32)
    else:
        x = np.frombuffer(payload, dtype="<i4").astype(np.int64) >> 16
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return np.clip(x, -32768, 32767).astype(np.int16)
