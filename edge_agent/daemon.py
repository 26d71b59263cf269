"""``edge-agent run``: the daemon's entry point: a clear error without a microphone, the engine built from the
settings, signals (SIGTERM/SIGINT: ordered shutdown; SIGUSR1 with EDGE_AGENT_DEBUG_HANG=1: a hung loop for the
watchdog check), then the loop."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from .config import Settings
from .engine import Engine
from .errors import AudioError

log = logging.getLogger(__name__)


def cli_run(args: Any, settings: Settings) -> int:
    if args.realtime and not args.input:
        raise AudioError("--realtime only makes sense with --input FILE.wav")
    if not args.input:
        # Live mode needs a microphone: say so plainly before loading anything.
        from .audio_io import find_device

        try:
            find_device(settings.audio.input_device, "input")
        except AudioError as e:
            raise AudioError(
                e.message,
                fix="plug in a USB microphone (see `edge-agent devices`), or run the same loop over a recording: "
                    "edge-agent run --input IN.wav --output OUT.wav",
            ) from None
    engine = Engine.from_settings(settings, input_file=args.input, output_file=args.output,
                                  realtime=args.realtime, home_file=args.home, turn_log=args.turn_log,
                                  use_mqtt=not args.no_mqtt)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        engine.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if os.environ.get("EDGE_AGENT_DEBUG_HANG") == "1":
        # For tools/systemd-check.sh: SIGUSR1 hangs the main loop (other threads live on), so the watchdog's
        # restart of a hung loop can be shown under a real systemd. Off unless the variable is set.
        def on_hang(signum: int, frame: Any) -> None:
            log.warning("SIGUSR1 with EDGE_AGENT_DEBUG_HANG=1: the main loop hangs now (watchdog test)")
            engine.debug_hang.set()

        signal.signal(signal.SIGUSR1, on_hang)
    log.info("ready: say the wake word (%s)", ", ".join(engine.wake_phrases))
    print(f"edge-agent: listening for {', '.join(engine.wake_phrases)}", file=sys.stderr, flush=True)
    return engine.run()
