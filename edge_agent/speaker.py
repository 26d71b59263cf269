"""The output edge: ``Speaker`` plays queued reply ``Segment``s through sounddevice, or into a WAV file aligned with the
input clock in file mode. It plays in short blocks from its own thread so that ``flush()`` silences it within one
block, and it counts exactly how many samples of each segment reached the device, which is what the turn log and the
history call "spoken". A device that refuses the voice's rate is opened at its own, each segment resampled to it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import resample, to_int16, write_wav
from .errors import AudioError

log = logging.getLogger("edge_agent.audio_io")  # the audio edge's log name, as before the split

OUTPUT_BLOCK_S = 0.02  # speaker write granularity: interruption latency is about one block plus device latency
SPEAKER_RETRY_S = 1.0  # after an output error, reopen the device at most this often


def _io() -> Any:
    """The device layer (``audio_io``: PortAudio, device lookup, stream closing), looked up at call time: ``audio_io``
    re-exports this module's names, so it cannot be imported here at module level."""
    from . import audio_io

    return audio_io


@dataclass
class Segment:
    """One piece of reply audio (a sentence), with the text it speaks."""

    audio: np.ndarray  # int16 at ``rate``
    rate: int
    text: str = ""
    played: int = 0  # samples handed to the device so far
    done: threading.Event = field(default_factory=threading.Event)
    t_done: float | None = None  # monotonic time its last sample was handed to the device (or it was dropped)
    t_first: float | None = None  # speaker clock time its first block was handed to the device (None: never played)

    @property
    def fraction_played(self) -> float:
        return self.played / max(1, len(self.audio))


def output_rates(voice_rate: int, device_default_rate: float | int | None) -> list[int]:
    """Rates to open the speaker at, in order: the voice's own (no resampling), then the device's default (a device
    that refuses the voice's 22,050 Hz, e.g. a USB or HDMI output that only takes 48 kHz)."""
    rates = [int(voice_rate)]
    if device_default_rate and int(device_default_rate) not in rates:
        rates.append(int(device_default_rate))
    return rates


def for_device(audio: np.ndarray, rate: int, device_rate: int) -> np.ndarray:
    """One segment's int16 audio at the device's rate (resampled whole, at the output edge)."""
    if rate == device_rate:
        return audio
    return to_int16(resample(to_int16(audio), rate, device_rate))


def played_samples(device_samples_played: int, segment_len: int, device_len: int) -> int:
    """How many of a segment's own samples the device has played, after ``device_samples_played`` of its resampled
    ``device_len``: proportional, exact at both ends (all of it once the last device sample is played)."""
    if device_len <= 0 or device_samples_played >= device_len:
        return segment_len
    return device_samples_played * segment_len // device_len


class Speaker:
    """Plays queued segments on a thread, in short blocks, so a flush silences it within ``OUTPUT_BLOCK_S``.

    The sink is either a sounddevice OutputStream (``device`` mode) or a WAV file aligned with the input clock
    (file mode). ``on_first_audio(t)`` fires when the first sample of a reply is handed to the device.
    ``rate`` is the rate asked for (the voice's); a device that refuses it is opened at its default rate, and
    ``self.rate`` is then that rate: every segment is resampled to it on the speaker thread.
    """

    def __init__(self, rate: int, *, device: str | int | None = None, file: str | Path | None = None,
                 realtime: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.voice_rate = rate  # what was asked for
        self.rate = rate  # what the sink plays at
        self.device = device
        self.file = Path(file) if file else None
        self.realtime = realtime
        self.clock = clock
        self.segments: queue.Queue[Segment | None] = queue.Queue()
        self.current: Segment | None = None
        self._flush = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.on_first_audio: Callable[[float], None] | None = None
        self.on_segment_done: Callable[[Segment], None] | None = None
        self.t_last_audio: float | None = None  # last reply sample of the current reply (reset per reply)
        self.t_any_audio: float | None = None  # last sample of anything played (never reset): the echo tail
        self.file_samples: list[np.ndarray] = []
        self.file_t0: float | None = None  # clock time that sample 0 of the output file corresponds to
        self.stream: Any = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)

    def start(self, t0: float | None = None) -> None:
        if self.file is None:
            self._open_device()
        self.file_t0 = t0 if t0 is not None else self.clock()
        self._thread.start()

    def _open_device(self) -> None:
        sd = _io()._sd()
        dev = _io().find_device(self.device, "output")
        try:
            default_rate = sd.query_devices(dev)["default_samplerate"]
        except Exception:  # noqa: BLE001 - PortAudio errors have no stable type
            default_rate = None
        errors = []
        for rate in output_rates(self.voice_rate, default_rate):
            stream = None
            try:
                stream = sd.OutputStream(device=dev, samplerate=rate, channels=1, dtype="int16",
                                         blocksize=int(rate * OUTPUT_BLOCK_S), latency="low")
                stream.start()
            except Exception as e:  # noqa: BLE001 - PortAudio errors have no stable type
                _io()._close_stream(stream, abort=True)
                errors.append(f"{rate} Hz: {e}")
                continue
            if rate != self.voice_rate and rate != self.rate:
                log.warning("speaker: the device refused %d Hz (%s); playing at its own %d Hz, resampling each "
                            "reply", self.voice_rate, errors[0], rate)
            self.stream, self.rate = stream, rate
            return
        self.stream = None
        raise AudioError(f"cannot open the speaker: {'; '.join(errors)}",
                         fix="check `edge-agent devices`, or use --output")

    def _device_lost(self) -> None:
        """An output error (device unplugged): drop the broken stream; ``_emit`` reopens it later. A broken
        PortAudio stream never recovers by itself, even when the device comes back."""
        stream, self.stream = self.stream, None
        self._retry_at = time.monotonic() + SPEAKER_RETRY_S
        _io()._close_stream(stream, abort=True)

    # -------------------------------------------------------------- control lane
    def play(self, seg: Segment) -> None:
        self._idle.clear()
        self.segments.put(seg)

    def flush(self, wait: float = 0.5) -> None:
        """Stop now: the current segment ends at the next block, queued ones are dropped. Returns once done (or
        after ``wait`` seconds), so segments played after this call are not dropped."""
        self._flush.set()
        deadline = time.monotonic() + wait
        while self._flush.is_set() and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def close(self, min_s: float | None = None) -> None:
        """Stop playing; in file mode write the output WAV, at least ``min_s`` seconds long (the input's length)."""
        self._stop.set()
        self._flush.set()
        self.segments.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        _io()._close_stream(self.stream)
        if self.file is not None:
            self.write_file(min_s)

    def write_file(self, min_s: float | None = None) -> None:
        """Write the output WAV: silence where nothing played, padded with silence to ``min_s`` seconds."""
        if self.file is None:
            return
        audio = np.concatenate(self.file_samples) if self.file_samples else np.zeros(0, dtype=np.int16)
        need = int(round((min_s or 0.0) * self.rate))
        if need > len(audio):
            audio = np.concatenate([audio, np.zeros(need - len(audio), dtype=np.int16)])
        write_wav(self.file, audio, self.rate)

    # -------------------------------------------------------------- the thread
    def _emit(self, block: np.ndarray) -> None:
        if self.file is None and self.stream is None:
            if time.monotonic() < getattr(self, "_retry_at", 0.0):
                raise AudioError("the speaker is unavailable (retrying)")
            self._retry_at = time.monotonic() + SPEAKER_RETRY_S
            self._open_device()
            self.error = None
            log.warning("speaker: output device reopened")
        if self.stream is not None:
            self.stream.write(block.reshape(-1, 1))
            return
        # File sink: place the block at the current clock position (silence before it), paced if realtime.
        assert self.file_t0 is not None
        now = self.clock()
        have = sum(len(b) for b in self.file_samples)
        want_pos = int((now - self.file_t0) * self.rate)
        if want_pos > have:
            self.file_samples.append(np.zeros(want_pos - have, dtype=np.int16))
        self.file_samples.append(block)
        if self.realtime:
            time.sleep(len(block) / self.rate)

    def _run(self) -> None:
        while not self._stop.is_set():
            block_n = max(1, int(self.rate * OUTPUT_BLOCK_S))  # the rate can change when the device is reopened
            if self._flush.is_set():
                self._drain_after_flush()
            try:
                seg = self.segments.get(timeout=0.02) if self.stream is None else self.segments.get_nowait()
            except queue.Empty:
                if self.segments.empty() and self.current is None:
                    self._idle.set()
                if self.stream is not None:
                    # Keep a device stream fed between replies: an idle ALSA/PulseAudio stream underruns and then
                    # swallows the start of the next reply. Writing blocks at the device's pace, so this also
                    # paces this thread.
                    try:
                        self.stream.write(np.zeros((block_n, 1), dtype=np.int16))
                    except Exception:  # noqa: BLE001 - a lost device is handled when the next reply is played
                        time.sleep(OUTPUT_BLOCK_S)
                continue
            if seg is None:
                break
            if self._flush.is_set():
                # a flush drops everything that was queued before it
                seg.done.set()
                self._drain_after_flush()
                continue
            self.current = seg
            audio = for_device(seg.audio, seg.rate, self.rate)
            i = 0
            while i < len(audio):
                if self._flush.is_set():
                    break
                block = audio[i:i + block_n]
                if seg.t_first is None:
                    seg.t_first = self.clock()
                if self.t_last_audio is None and self.on_first_audio:
                    self.on_first_audio(self.clock())
                try:
                    self._emit(block)
                except Exception as e:  # noqa: BLE001 - a vanished device must not kill the loop
                    msg = e.message if isinstance(e, AudioError) else str(e)
                    if self.error != msg:
                        log.error("speaker error, reply continues in the log only: %s", msg)
                    self.error = msg
                    if self.file is None:
                        self._device_lost()
                    break
                i += len(block)
                seg.played = played_samples(i, len(seg.audio), len(audio))
                self.t_last_audio = self.t_any_audio = self.clock()
            self.current = None
            seg.t_done = self.clock()
            seg.done.set()
            if self.on_segment_done:
                self.on_segment_done(seg)
            if self._flush.is_set():
                self._drain_after_flush()
            if self.segments.empty():
                self._idle.set()

    def _drain_after_flush(self) -> None:
        while True:
            try:
                s = self.segments.get_nowait()
            except queue.Empty:
                break
            if s is None:
                self._stop.set()
                break
            s.done.set()
        self._flush.clear()
        self._idle.set()

    def new_reply(self) -> None:
        """Reset first-audio tracking for the next reply."""
        self.t_last_audio = None
