"""Timers and the engine, joined: a timer that rings plays a cue and says which one, or runs its delayed command as a
turn of its own (queued through the controller, never beside another turn); one that fell due while the device was
off is announced, not run late."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import turn_events as ev

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

MISSED_COMMAND_MAX_S = 120.0  # a timer's command that fell due longer ago (device off) is not run late


class TimerBridge:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def on_finished(self, timer: Any) -> None:
        """A timer rang (timer thread): a cue, then it says which one, or its delayed command runs as a turn."""
        e = self.engine
        command, missed = timer.command, timer.missed_s
        if command and missed > MISSED_COMMAND_MAX_S:
            # a delayed command that fell due while the device was off is not run late ("turn off the oven")
            from .timers import duration_words

            log.warning("timer command %r fell due %.0f s ago while the device was off; not run", command, missed)
            e.play_cue("done")
            e.announce(f"While I was off, it was time to {command.rstrip('.!?')}, "
                       f"{duration_words(missed, adjective=False)} ago. I did not do it; please ask again.")
            return
        if command and e.brain is not None:
            e.post(ev.RunCommand(time.monotonic(), command))
            return
        e.play_cue("done")
        e.announce(timer.finished_text())
