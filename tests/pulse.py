"""Virtual audio devices for end-to-end tests: a private PulseAudio with a null sink (the speaker) and a pipe source
(the microphone), as in shared/FACTS.md. The real sounddevice/PortAudio path of edge-agent captures from it and plays
into it; the test writes speech into the microphone in real time and records the speaker's monitor with parec.

All times are on the system-wide monotonic clock, the same one edge-agent stamps its turn log with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_agent.audio import SAMPLE_RATE, read_wav

FEED_BLOCK_S = 0.02  # the feeder writes 20 ms at a time, paced in real time


class VirtualAudio:
    def __init__(self) -> None:
        for tool in ("pulseaudio", "pactl", "parec"):
            assert shutil.which(tool), f"{tool} missing: apt-get install pulseaudio pulseaudio-utils"
        self.dir = Path(tempfile.mkdtemp(prefix="ea-pulse-"))
        self.fifo = self.dir / "mic.fifo"
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(self.dir), PULSE_SERVER=f"unix:{self.dir}/pulse/native")
        self._pending: list[tuple[np.ndarray, threading.Event, list[float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._fifo_fd: int | None = None
        self._parec: subprocess.Popen | None = None
        self.rec_t0: float | None = None
        self._rec_chunks: list[bytes] = []
        self._rec_bytes = 0
        self._rec_origin: float | None = None
        self.rec_rate = 16000

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VirtualAudio:
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                        "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=spk"],
                       env=self.env, check=True, capture_output=True)
        for _ in range(50):
            if subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        self.add_mic()
        self._pactl("set-default-sink", "spk")
        # The null sink's monitor only yields data while something plays: a silent stream keeps its clock running,
        # so a recording of the speaker is continuous and its sample positions map to wall-clock time.
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--rate=16000", "--channels=1", "--format=s16le", "--device=spk",
             "--latency-msec=20",
             "/dev/zero"], env=self.env)
        self._feeder = threading.Thread(target=self._feed, name="mic-feeder", daemon=True)
        self._feeder.start()
        return self

    def _pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def add_mic(self) -> None:
        self.mic_module = self._pactl("load-module", "module-pipe-source", "source_name=mic", f"file={self.fifo}",
                                      "format=s16le", f"rate={SAMPLE_RATE}", "channels=1").strip()
        self._pactl("set-default-source", "mic")
        self._fifo_fd = None  # the feeder reopens the new FIFO

    def remove_mic(self) -> None:
        fd, self._fifo_fd = self._fifo_fd, None
        if fd is not None:
            os.close(fd)
        self._pactl("unload-module", self.mic_module)

    def stop(self) -> None:
        self._stop.set()
        if self._feeder:
            self._feeder.join(timeout=2)
        self.stop_recording()
        if getattr(self, "_keepalive", None):
            self._keepalive.terminate()
            self._keepalive.wait(timeout=5)
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ microphone
    def say(self, wav: str | Path | np.ndarray, wait: bool = False) -> list[float]:
        """Queue speech into the microphone (after what is already queued). Returns a list that gets
        [t_start, t_end] (monotonic) once it has been written."""
        audio = wav if isinstance(wav, np.ndarray) else read_wav(wav)
        done, times = threading.Event(), []
        with self._lock:
            self._pending.append((audio.astype(np.int16), done, times))
        if wait:
            done.wait()
        return times

    def wait_said(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def _feed(self) -> None:
        block = int(SAMPLE_RATE * FEED_BLOCK_S)
        # "Silence" is a real microphone's noise floor (+-1 LSB, about -90 dBFS), never exact digital zeros: edge-agent
        # treats long exact zeros as a lost microphone (the sound server moved the stream to another source).
        silence = np.random.default_rng(0).integers(-1, 2, block).astype(np.int16).tobytes()
        cur: tuple[np.ndarray, threading.Event, list[float]] | None = None
        pos = 0
        t_next = time.monotonic()
        while not self._stop.is_set():
            if self._fifo_fd is None:
                try:
                    self._fifo_fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    time.sleep(0.05)
                    t_next = time.monotonic()
                    continue
            if cur is None:
                with self._lock:
                    if self._pending:
                        cur, pos = self._pending[0], 0
                        cur[2].append(time.monotonic())
            if cur is not None:
                data = cur[0][pos:pos + block]
                pos += block
                payload = data.tobytes() + silence[len(data) * 2:]
                if pos >= len(cur[0]):
                    cur[2].append(time.monotonic() + FEED_BLOCK_S)
                    cur[1].set()
                    with self._lock:
                        self._pending.pop(0)
                    cur = None
            else:
                payload = silence
            try:
                os.write(self._fifo_fd, payload)
            except BlockingIOError:
                pass  # pulse is not reading (no client): drop, like a real microphone would
            except OSError:
                self._fifo_fd = None
            t_next += FEED_BLOCK_S
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.monotonic()

    # ------------------------------------------------------------------ speaker
    def start_recording(self) -> None:
        """Record the speaker's monitor. parec writes to a pipe that a thread reads as it arrives, stamping each
        block, so sample positions map to the monotonic clock (a file would be buffered and lose its ends)."""
        self._rec_chunks: list[bytes] = []
        self._rec_bytes = 0
        self._rec_origin: float | None = None
        self._parec = subprocess.Popen(
            ["parec", "-d", "spk.monitor", f"--rate={self.rec_rate}", "--channels=1", "--format=s16le", "--raw",
             "--latency-msec=10"], env=self.env, stdout=subprocess.PIPE)
        self._rec_thread = threading.Thread(target=self._record, args=(self._parec,), daemon=True)
        self._rec_thread.start()
        time.sleep(0.5)

    def _record(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            data = os.read(fd, 640)
            if not data:
                break
            t = time.monotonic()
            self._rec_chunks.append(data)
            self._rec_bytes += len(data)
            # the origin is the earliest time consistent with every block's arrival (least delivery latency)
            origin = t - (self._rec_bytes // 2) / self.rec_rate
            if self._rec_origin is None or origin < self._rec_origin:
                self._rec_origin = origin

    def stop_recording(self) -> np.ndarray:
        """Stop recording and return it; ``rec_t0`` is the monotonic time of its first sample."""
        if self._parec is not None:
            self._parec.terminate()
            self._parec.wait(timeout=5)
            self._rec_thread.join(timeout=5)
            self._parec = None
        self.rec_t0 = self._rec_origin
        return self.recording()

    def recording(self) -> np.ndarray:
        data = b"".join(getattr(self, "_rec_chunks", []))
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").copy()

    def rec_time(self, t: float) -> float:
        """A monotonic time as a position (seconds) in the speaker recording."""
        assert self.rec_t0 is not None
        return t - self.rec_t0


def active_spans(audio: np.ndarray, rate: int, threshold_dbfs: float = -45.0, window_s: float = 0.01,
                 min_gap_s: float = 0.3) -> list[tuple[float, float]]:
    """(start, end) seconds of non-silent stretches, gaps shorter than ``min_gap_s`` merged."""
    win = max(1, int(rate * window_s))
    n = len(audio) // win
    if n == 0:
        return []
    frames = audio[: n * win].astype(np.float64).reshape(n, win)
    rms = np.sqrt(np.mean(frames ** 2, axis=1)) / 32768.0
    loud = 20 * np.log10(np.maximum(rms, 1e-9)) > threshold_dbfs
    spans: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start * window_s, i * window_s))
            start = None
    if start is not None:
        spans.append((start * window_s, n * window_s))
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s - merged[-1][1] < min_gap_s:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged
