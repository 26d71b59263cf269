"""Can this machine afford the work that only helps where there are spare cycles? (pure logic, no threads)

Two pieces of background work make a turn faster on a machine with cycles to spare and slower on one without:

- the speculative transcription at the first pause (``listener.Speculation``), and the endpoint's wait for its
  verdict (``ending.SPECULATION_WAIT_MAX_S`` past the normal silence);
- the LLM's idle prefill of the history between turns (``Brain._idle_prefill``).

On a slow board (a Pi 4, imitated by a 0.17-CPU quota) a Whisper decode takes longer than the pause it was meant to
fill, so the endpoint waits the whole 0.8 s for a verdict that never comes in time, and every thread that runs beside
the audio loop takes CPU the loop needs to keep up with the microphone: its backlog grows and the endpoint comes
later still (docs/benchmarks.md, "The Pi 4 budget"). ``Headroom`` is fed two measured figures and answers whether
the work is affordable now:

- ``observe_decode(seconds)``: the wall time of each STT decode (a speculation's or the final one), which includes
  whatever slowed it down (a small CPU, a CPU quota, other load); kept as a moving average;
- ``observe_lag(seconds)``: the audio loop's backlog when it takes a chunk (now minus the chunk's end).

The work is affordable when a decode fits in the time the endpoint waits for it anyway (from the first pause,
``SPECULATE_AFTER_S``, to the normal silence plus ``SPECULATION_WAIT_MAX_S``) and the loop is not behind. With no
decode measured yet it is affordable (the fast machine's behaviour from the first turn). ``stt.speculate`` and
``llm.idle_prefill`` choose: ``on`` (always), ``off`` (never), ``auto`` (this module).

Once the loop has fallen ``YIELD_AFTER_LAG_S`` behind, ``yield_to_loop`` is set for good: the engine then lowers the
priority of every other thread (``priority.py``), so the loop keeps up with the microphone whatever else runs.
"""

from __future__ import annotations

from . import ending

SPECULATE_AFTER_S = 0.12  # silence after speech before a speculative transcription starts (listener.py uses it)
LAG_MAX_S = 0.3  # the loop counts as behind when a chunk is taken this long after it ended (4 blocks of 80 ms)
LAG_RECOVER_S = 0.1  # ... and as caught up again below this
DECODE_ALPHA = 0.5  # weight of the newest decode in the moving average
YIELD_AFTER_LAG_S = 0.5  # once the loop is this far behind, every other thread gives way to it (priority.py)


def decode_budget_s(normal_silence_s: float) -> float:
    """The longest decode the endpoint would wait for: started at the first pause, done by the normal silence plus
    the speculation's wait (1.08 s with the default 0.4 s silence)."""
    return normal_silence_s - SPECULATE_AFTER_S + ending.SPECULATION_WAIT_MAX_S


def afford(decode_s: float | None, lagging: bool, normal_silence_s: float) -> bool:
    """Is background work affordable: the expected decode (None: not measured yet) fits the endpoint's wait, and the
    audio loop is not behind."""
    if lagging:
        return False
    return decode_s is None or decode_s <= decode_budget_s(normal_silence_s)


def choose(mode: str, affordable: bool) -> bool:
    """A setting's ``on`` / ``off`` / ``auto`` with this machine's figure."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return affordable


def speculation_wait_s(normal_silence_s: float, started_at_silence_s: float, decode_s: float | None) -> float:
    """The silence after which the turn ends while a speculation still runs: the normal silence plus
    ``ending.SPECULATION_WAIT_MAX_S`` when the speculation (started ``started_at_silence_s`` into the pause) is expected
    to be done by then, else just the normal silence: a decode that cannot finish in time never delays the endpoint
    (the final transcript then takes it up, or starts its own)."""
    limit = normal_silence_s + ending.SPECULATION_WAIT_MAX_S
    if decode_s is not None and started_at_silence_s + decode_s > limit:
        return normal_silence_s
    return limit


class Headroom:
    """The measured figures and the decisions above. Written from several threads (the loop: ``observe_lag``; the
    loop on a ``Transcribed`` event: ``observe_decode``); each write is one float assignment."""

    def __init__(self, normal_silence_s: float) -> None:
        self.normal_silence_s = normal_silence_s
        self.decode_s: float | None = None  # moving average of the STT decodes' wall time
        self.lag_s = 0.0  # the loop's latest backlog
        self.lagging = False  # behind (over LAG_MAX_S) and not yet caught up (under LAG_RECOVER_S)
        self.yield_to_loop = False  # the loop fell YIELD_AFTER_LAG_S behind once: the other threads give way, for good
        self.decodes = 0

    def observe_decode(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.decodes += 1
        prev = self.decode_s
        self.decode_s = seconds if prev is None else DECODE_ALPHA * seconds + (1 - DECODE_ALPHA) * prev

    def observe_lag(self, seconds: float) -> None:
        self.lag_s = seconds
        if seconds > YIELD_AFTER_LAG_S:
            self.yield_to_loop = True
        if seconds > LAG_MAX_S:
            self.lagging = True
        elif seconds < LAG_RECOVER_S:
            self.lagging = False

    @property
    def affordable(self) -> bool:
        return afford(self.decode_s, self.lagging, self.normal_silence_s)

    def speculate(self, mode: str) -> bool:
        return choose(mode, self.affordable)

    def idle_prefill(self, mode: str) -> bool:
        return choose(mode, self.affordable)

    def speculation_wait_s(self, started_at_silence_s: float) -> float:
        return speculation_wait_s(self.normal_silence_s, started_at_silence_s, self.decode_s)

    def summary(self) -> dict[str, float | bool | None]:
        """For the turn log's ``stages``."""
        return {"decode_s": None if self.decode_s is None else round(self.decode_s, 3),
                "affordable": self.affordable, "yield_to_loop": self.yield_to_loop}


__all__ = ["DECODE_ALPHA", "LAG_MAX_S", "LAG_RECOVER_S", "SPECULATE_AFTER_S", "YIELD_AFTER_LAG_S", "Headroom", "afford",
           "choose", "decode_budget_s", "speculation_wait_s"]
