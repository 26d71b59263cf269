"""CPU seconds per thread of this process between two moments: which threads a request's CPU went to.

The engine runs inside the benchmark's process, so ``/proc/self/task`` lists its threads: the audio loop, the
responder, the synthesis and warm-up threads (Python threads, named by ``threading``), and the native worker threads
of ONNX Runtime, CTranslate2 and llama.cpp (named by their ``comm`` only). Under a CPU quota (``--cpu-budget``)
this says whether a slow turn was slow because its own work was slow or because other threads took the quota.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TASKS = Path("/proc/self/task")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def snapshot(tasks: Path = TASKS) -> dict[int, tuple[str, float]]:
    """{native thread id: (name, CPU seconds so far)}; Python threads by their ``threading`` name, others by comm."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(tasks)
    except OSError:
        return out
    for entry in tids:
        try:
            tid = int(entry)
            stat = (tasks / entry / "stat").read_text()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime (fields 14 and 15 of stat)
        out[tid] = (names.get(tid, f"native:{comm}"), cpu)
    return out


def cpu_by_thread(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                  min_s: float = 0.01) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed by thread name (threads that started meanwhile count from
    zero; ones that ended are lost), largest first, those under ``min_s`` left out."""
    spent: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        prev = before.get(tid)
        delta = cpu - (prev[1] if prev is not None and prev[0] == name else 0.0)
        spent[name] = spent.get(name, 0.0) + max(0.0, delta)
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= min_s}


class Sampler:
    """Snapshots every ``interval`` seconds on a thread of its own, from ``start`` to ``stop``, so that threads which
    end during a request (a turn's responder, a speculative decode) are counted with the CPU they had when last
    seen; ``stop`` returns ``cpu_by_thread`` over the whole span. A sweep reads one small file per thread (~1 ms)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: dict[int, tuple[str, float]] = {}
        self._last: dict[int, tuple[str, float]] = {}

    def start(self) -> Sampler:
        self._first = snapshot()
        self._last = dict(self._first)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(snapshot())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._last.update(snapshot())
        spent = cpu_by_thread(self._first, self._last)
        spent.pop("bench-cpu-sampler", None)
        return spent


def summary(spent: dict[str, float], top: int = 4) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in list(spent.items())[:top])
