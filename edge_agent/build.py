"""Building the engine from settings: models checked, each stage made by its registry, warmed up, wired."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio_io import FileSource, MicSource, Speaker
from .config import Settings
from .errors import AudioError, ModelError
from .turn import TurnLog

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

PREWARM_PHRASES = ("not_understood", "error")  # fixed phrases a turn may need at once: synthesized at start


class _NullSpeaker(Speaker):
    """No output device in file mode: replies are timed as if played, and logged."""

    def _open_device(self) -> None:
        self.stream = None  # nothing to open

    def _emit(self, block: np.ndarray) -> None:
        if self.realtime:
            time.sleep(len(block) / self.rate)


def _speaker_or_null(settings: Settings, rate: int, realtime: bool) -> Speaker:
    try:
        from .audio_io import find_device

        find_device(settings.audio.output_device, "output")
        return Speaker(rate, device=settings.audio.output_device)
    except AudioError:
        log.info("no output device: replies are logged only (use --output OUT.wav to keep them)")
        return _NullSpeaker(rate, file=None, realtime=realtime)


def build_engine(cls: type[Engine], settings: Settings, *, input_file: str | None = None,
                 output_file: str | None = None, realtime: bool = False, home_file: str | None = None,
                 turn_log: str | None = None, use_mqtt: bool = True) -> Engine:
    from .preflight import check_models_for

    problems = check_models_for(settings)
    if problems:
        raise ModelError("models are missing or corrupt:\n  " + "\n  ".join(problems),
                         fix="run `edge-agent models fetch` (or fix the paths in the config)")
    from .brain import Brain
    from .notify import SystemdNotifier
    from .stt import make_engine, prime_with_home
    from .tts import make_tts
    from .vad import Segmenter, SileroVad
    from .wake import WakeDetector

    if input_file:
        source: Any = FileSource(input_file, settings.audio.block_ms, realtime=realtime)
    else:
        source = MicSource(settings.audio)
        from .audio_io import find_device

        find_device(settings.audio.input_device, "input")  # clear error now if there is no microphone
    t0 = time.monotonic()
    tts = make_tts(settings)  # tts.engine, from the registry
    tts.load()
    if output_file:
        speaker: Speaker = Speaker(tts.sample_rate, file=output_file, realtime=realtime or not input_file)
    elif input_file:
        speaker = _speaker_or_null(settings, tts.sample_rate, realtime)
    else:
        speaker = Speaker(tts.sample_rate, device=settings.audio.output_device)
    wake = WakeDetector.from_settings(settings)
    stop_wake = WakeDetector.from_settings(settings, stop=True) if settings.wake.stop_models else None
    vad = SileroVad.from_settings(settings)
    stt = make_engine(settings.stt, settings)
    stt.load()
    brain = Brain.from_settings(settings, home_file=home_file, keep_timers=not input_file)
    prime_with_home(stt, settings.stt, brain.home)  # the home's names, so Whisper hears "back door", not "Mac door"
    mqtt = None
    if use_mqtt and settings.mqtt.enabled:
        from .config import mqtt_password
        from .mqtt import MqttLink

        mqtt = MqttLink(settings.mqtt, settings.site, password=mqtt_password(settings.mqtt))
    # warm-up so the first turn is as fast as the rest
    stt.warmup()
    tts.warmup()
    tts.prewarm(list(PREWARM_PHRASES))
    brain.warmup()
    log.info("models loaded and warmed up in %.1f s", time.monotonic() - t0)
    if mqtt is not None:
        mqtt.start()
    engine = cls(settings, source=source, speaker=speaker, wake=wake, vad=vad,
                 segmenter_factory=lambda: Segmenter(settings.vad), stt=stt, brain=brain, tts=tts, mqtt=mqtt,
                 stop_wake=stop_wake,
                 turn_log=TurnLog(turn_log or settings.log.turn_log and settings.path(settings.log.turn_log),
                                  settings.log.turn_log_stdout),
                 exit_at_end=bool(input_file), notifier=SystemdNotifier())  # a no-op without NOTIFY_SOCKET
    speaker.start(t0=None)
    if input_file and speaker.file is not None:
        speaker.file_t0 = time.monotonic()
    return engine
