"""Audio at the edges: microphone and speaker through sounddevice, or WAV files in file mode (the speaker itself is in
``speaker.py``; its names are re-exported here).

Sources yield ``AudioChunk``s in the internal format (16 kHz mono int16) stamped on the monotonic clock.
``MicSource``'s PortAudio callback only copies the block into a bounded queue (dropping and counting the oldest when
the consumer falls behind); conversion happens on the reader's thread. ``Speaker`` plays queued segments in short
blocks from its own thread so that ``flush()`` silences it within one block, and it counts exactly how many samples of
each segment reached the device, which is what the turn log and the history call "spoken".
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, AudioChunk, InputConverter, read_wav
from .config import AudioSettings
from .errors import AudioError
from .speaker import (  # noqa: F401 - re-exported: callers import the output side from here
    OUTPUT_BLOCK_S,
    SPEAKER_RETRY_S,
    Segment,
    Speaker,
    for_device,
    output_rates,
    played_samples,
)

log = logging.getLogger(__name__)

# Microphone watchdog. A vanished device does not always raise: PortAudio may simply stop calling back (stall), and
# PulseAudio/PipeWire move the stream of an unplugged microphone to another source (often a sink's monitor), which
# delivers exact digital zeros. A real microphone always has a noise floor, so either condition means "gone".
MIC_STALL_S = 3.0  # no block at all for this long → the microphone is treated as lost and reopened
MIC_DEAD_AIR_S = 8.0  # only exact zeros for this long → the same
MIC_DEAD_AIR_MAX_S = 60.0  # still only zeros after a reopen (a hardware mute): retry ever more slowly, up to this


def _sd() -> Any:
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioError(f"PortAudio is not available ({e})",
                         fix="install it: apt-get install libportaudio2") from None
    return sd


def _close_stream(stream: Any, abort: bool = False) -> None:
    """Stop (or abort, dropping what is buffered) and close a PortAudio stream; a vanished device may make either
    raise, which must not stop a shutdown or a recovery."""
    if stream is None:
        return
    try:
        stream.abort() if abort else stream.stop()
        stream.close()
    except Exception:  # noqa: BLE001 - PortAudio errors have no stable type
        pass


def list_devices() -> list[dict[str, Any]]:
    sd = _sd()
    out = []
    try:
        devices = sd.query_devices()
        default_in, default_out = sd.default.device
    except Exception as e:  # noqa: BLE001 - PortAudio errors have no stable type
        raise AudioError(f"cannot list audio devices: {e}") from None
    for i, d in enumerate(devices):
        out.append({
            "index": i, "name": d["name"], "hostapi": sd.query_hostapis(d["hostapi"])["name"],
            "inputs": d["max_input_channels"], "outputs": d["max_output_channels"],
            "default_samplerate": d["default_samplerate"],
            "default_input": i == default_in, "default_output": i == default_out,
        })
    return out


def cli_devices(args: Any, settings: Any) -> int:
    import json

    devices = list_devices()
    if args.json:
        print(json.dumps({"devices": devices}, indent=2))
        return 0
    if not devices:
        print("no audio devices found (file mode still works: edge-agent run --input IN.wav --output OUT.wav)")
    for d in devices:
        roles = [r for r, ok in (("in", d["inputs"]), ("out", d["outputs"])) if ok]
        mark = ("*" if d["default_input"] else " ") + ("*" if d["default_output"] else " ")
        print(f"{mark}{d['index']:3d} {d['name']:<40} {'/'.join(roles):<7} {d['inputs']}in {d['outputs']}out "
              f"{d['default_samplerate']:.0f} Hz  [{d['hostapi']}]")
    print("(* default input / default output)")
    return 0


def find_device(spec: str | int | None, kind: str) -> int | None:
    """A device index from config (index, or a name substring); None = the system default. Clear error if absent."""
    sd = _sd()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    try:
        devices = sd.query_devices()
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"cannot list audio devices: {e}") from None
    usable = [i for i, d in enumerate(devices) if d[key] > 0]
    hint = ("use file mode: edge-agent run --input IN.wav --output OUT.wav" if kind == "input"
            else "use --output OUT.wav, or connect a speaker")
    if not usable:
        raise AudioError(f"no audio {kind} device found on this machine", fix=hint)
    if spec is None:
        default = sd.default.device[0 if kind == "input" else 1]
        if default is None or default < 0 or default not in usable:
            return usable[0]
        return int(default)
    if isinstance(spec, int):
        if spec not in usable:
            raise AudioError(f"audio.{kind}_device: {spec} is not an {kind} device",
                             fix="run `edge-agent devices` to see the indexes")
        return spec
    for i in usable:
        if spec.lower() in devices[i]["name"].lower():
            return i
    raise AudioError(f"audio.{kind}_device: no {kind} device matches {spec!r}",
                     fix="run `edge-agent devices` to see the names")


# --------------------------------------------------------------------------------------------------- sources


class DropQueue:
    """A bounded queue that drops the OLDEST item when full, and counts what it dropped."""

    def __init__(self, maxsize: int) -> None:
        self._q: collections.deque[Any] = collections.deque()
        self.maxsize = maxsize
        self.dropped = 0
        self._cv = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cv:
            if len(self._q) >= self.maxsize:
                self._q.popleft()
                self.dropped += 1
            self._q.append(item)
            self._cv.notify()

    def get(self, timeout: float | None = None) -> Any:
        with self._cv:
            if not self._q and not self._cv.wait_for(lambda: bool(self._q), timeout):
                raise queue.Empty
            return self._q.popleft()

    def clear(self) -> None:
        with self._cv:
            self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


def choose_input_format(accepts: Callable[[int, int], bool], default_rate: int,
                        max_channels: int) -> tuple[int, int]:
    """The capture format to ask a device for: 16 kHz mono when it takes it (no conversion at all), else the cheapest
    conversion it accepts (mixing channels is cheaper than resampling). Array microphones (ReSpeaker, USB arrays)
    often take only several channels, or only their own rate. Nothing accepted: the device's rate with up to two
    channels (opening it then fails with the device's own error)."""
    default_rate = int(default_rate) or SAMPLE_RATE
    max_channels = max(1, int(max_channels))
    candidates: list[tuple[int, int]] = []
    for rate in (SAMPLE_RATE, default_rate):
        for channels in (1, min(2, max_channels), max_channels):
            if (rate, channels) not in candidates:
                candidates.append((rate, channels))
    for rate, channels in candidates:
        if accepts(rate, channels):
            return rate, channels
    return default_rate, min(2, max_channels)


class MicSource:
    """Live capture at the device's own rate and channel count, converted to the internal format on read.

    ``rate`` / ``channels`` force a capture format (tests, diagnostics); None chooses by ``choose_input_format``.
    """

    def __init__(self, settings: AudioSettings, *, rate: int | None = None, channels: int | None = None) -> None:
        self.settings = settings
        self.want_rate, self.want_channels = rate, channels
        self.queue = DropQueue(settings.input_queue_blocks)
        self.stream: Any = None
        self.status_flags = 0  # PortAudio overflow flags seen
        self._last_drop_log = 0
        self.error: str | None = None
        self.t_last_block = time.monotonic()  # watchdog: when the callback last delivered a block
        self.t_last_sound = time.monotonic()  # watchdog: when a block last held anything but exact zeros
        self.dead_air_s = MIC_DEAD_AIR_S  # doubles each time a reopen brings only zeros again; reset by sound

    def open(self) -> None:
        sd = _sd()
        dev = find_device(self.settings.input_device, "input")
        info = sd.query_devices(dev)

        def accepts(rate: int, channels: int) -> bool:
            try:
                sd.check_input_settings(device=dev, samplerate=rate, channels=channels, dtype="int16")
                return True
            except Exception:  # noqa: BLE001 - PortAudio errors have no stable type
                return False

        if self.want_rate and self.want_channels:
            rate, channels = self.want_rate, self.want_channels
        else:
            rate, channels = choose_input_format(accepts, info["default_samplerate"], info["max_input_channels"])
            rate, channels = self.want_rate or rate, self.want_channels or channels
        self.converter = InputConverter(rate, channels)
        blocksize = int(rate * self.settings.block_ms / 1000)

        def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            # Only copy and enqueue: everything else happens on the reader's thread.
            if status:
                self.status_flags += 1
            self.t_last_block = now = time.monotonic()
            self.queue.put((now, indata.copy()))

        self.error = None
        self.t_last_block = self.t_last_sound = time.monotonic()
        try:
            self.stream = sd.InputStream(device=dev, samplerate=rate, channels=channels, dtype="int16",
                                         blocksize=blocksize, callback=callback,
                                         finished_callback=self._finished)
            self.stream.start()
        except Exception as e:  # noqa: BLE001
            raise AudioError(f"cannot open the microphone {info['name']!r}: {e}",
                             fix="check `edge-agent devices`, or use --input IN.wav") from None
        self.device_name = info["name"]
        log.info("microphone: %s at %d Hz, %d channel(s), %d ms blocks", info["name"], rate, channels,
                 self.settings.block_ms)

    def _finished(self) -> None:
        self.error = "input stream stopped"

    def read(self, timeout: float = 1.0) -> AudioChunk | None:
        """The next chunk, or None after ``timeout`` (then check ``alive``: None from a lost microphone)."""
        try:
            t_arrival, block = self.queue.get(timeout)
        except queue.Empty:
            if self.error is None and self.stream is not None \
                    and time.monotonic() - self.t_last_block > MIC_STALL_S:
                self.error = f"no audio from the microphone for {MIC_STALL_S:.0f} s"
            return None
        if self.queue.dropped != self._last_drop_log:
            log.warning("capture queue full: %d blocks dropped so far", self.queue.dropped)
            self._last_drop_log = self.queue.dropped
        if block.any():
            self.t_last_sound = t_arrival
            self.dead_air_s = MIC_DEAD_AIR_S
        elif t_arrival - self.t_last_sound > self.dead_air_s and self.error is None:
            self.error = (f"the microphone delivered only digital silence for {self.dead_air_s:.0f} s "
                          "(unplugged, muted in hardware, or moved by the sound server to another source)")
            self.dead_air_s = min(self.dead_air_s * 2, MIC_DEAD_AIR_MAX_S)
            return None
        samples = self.converter(block)
        return AudioChunk(samples, t_arrival - len(samples) / SAMPLE_RATE)

    @property
    def alive(self) -> bool:
        return self.stream is not None and bool(self.stream.active) and self.error is None

    def close(self) -> None:
        _close_stream(self.stream)
        self.stream = None


class FileSource:
    """A WAV file as a microphone. ``realtime`` paces it like live capture; after its end it yields silence
    (``exhausted`` is then True) so the turn in progress can finish."""

    def __init__(self, path: str | Path, block_ms: int = 80, realtime: bool = False) -> None:
        self.samples = read_wav(path)
        self.block = int(SAMPLE_RATE * block_ms / 1000)
        self.realtime = realtime
        self.pos = 0
        self.t0: float | None = None
        self.silence_blocks = 0

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.samples)

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def open(self) -> None:
        self.t0 = time.monotonic()

    def read(self, timeout: float = 1.0) -> AudioChunk | None:
        assert self.t0 is not None, "open() first"
        if self.exhausted:
            chunk = np.zeros(self.block, dtype=np.int16)
            self.silence_blocks += 1
        else:
            chunk = self.samples[self.pos:self.pos + self.block]
        start = self.pos / SAMPLE_RATE
        self.pos += self.block
        if self.realtime:
            due = self.t0 + self.pos / SAMPLE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return AudioChunk(chunk, self.t0 + start)
        # Not paced: stamp with the time the chunk became available to the loop.
        now = time.monotonic()
        return AudioChunk(chunk, now - len(chunk) / SAMPLE_RATE)

    alive = True

    def close(self) -> None:
        pass
