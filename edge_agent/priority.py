"""The audio loop first: once it has fallen behind the microphone, every other thread of the process gives way.

On a board with a small CPU (a Pi 4, imitated by a 0.17-CPU quota) the loop's wake word and VAD need about a third of
what there is (0.05-0.07 CPU seconds per second of audio), and the scheduler shares the CPU evenly between runnable
threads: while Whisper's two threads, the LLM and the synthesis run, the loop gets less than it needs, its backlog
grows, and every endpoint comes that much later (docs/benchmarks.md, "The Pi 4 budget"). A thread may lower its own
priority (a higher nice value) without any privilege, and so may a process for its other threads: the loop keeps
nice 0 and the rest get ``BACKGROUND_NICE``, so that the loop runs whenever it has a chunk to take and the others
share what is left (on Linux the nice value is per thread; a thread inherits its creator's).

Raising a priority back needs a privilege (``RLIMIT_NICE``), so the change is one-way: the engine makes it only once
the loop has actually fallen behind (``headroom.Headroom.yield_to_loop``), which does not happen on a machine with
time to spare, and then keeps it for the life of the process (threads started later are lowered on the next sweep).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10  # weight ~110 against the loop's 1024 when both want the CPU
TASKS = "/proc/self/task"


def lower_other_threads(keep: int, nice: int = BACKGROUND_NICE, tasks: str = TASKS) -> int:
    """Give every thread of this process except ``keep`` (a native thread id) a nice value of at least ``nice``;
    returns how many were changed. Where threads cannot be listed (not Linux) nothing happens."""
    try:
        tids = [int(n) for n in os.listdir(tasks)]
    except (OSError, ValueError):
        return 0
    changed = 0
    for tid in tids:
        if tid == keep:
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except OSError:  # the thread ended meanwhile, or the system does not allow it: nothing to do
            continue
    return changed


def lower_this_thread(nice: int = BACKGROUND_NICE) -> bool:
    """Give the calling thread a nice value of ``nice`` (background work: the TTS warm-up, the closest-sentence
    build); False where the system does not allow it (the work then runs at the priority it has)."""
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as e:
        log.debug("could not lower the priority of thread %s: %s", threading.current_thread().name, e)
        return False
    return True


__all__ = ["BACKGROUND_NICE", "lower_other_threads", "lower_this_thread"]
