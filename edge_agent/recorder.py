"""The debug recorder (``log.debug_audio_dir``): what the wake word and STT heard, as WAV files, for diagnosing a
real board. At each detection it saves the last ``DEBUG_WAKE_S`` the detector heard (``<turn>-wake-<model>-<score>
.wav``) and, when a turn ends, the audio its STT was fed (``<turn>-stt.wav``). A full disk is a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioChunk, write_wav
from .vad import PreRoll

log = logging.getLogger(__name__)

DEBUG_WAKE_S = 2.5  # seconds of audio saved per wake detection


class DebugRecorder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tape = PreRoll(DEBUG_WAKE_S)
        self.turn_audio: dict[str, list[np.ndarray]] = {}

    def push(self, chunk: AudioChunk) -> None:
        self.tape.push(chunk)

    def wake(self, turn_id: str, det: Any) -> None:
        self._write(f"{turn_id}-wake-{det.model}-{det.score:.2f}.wav", self.tape.drain())

    def keep(self, turn_id: str, audio: list[np.ndarray]) -> None:
        if audio:
            self.turn_audio[turn_id] = audio

    def turn_finished(self, turn_id: str) -> None:
        audio = self.turn_audio.pop(turn_id, None)
        if audio:
            self._write(f"{turn_id}-stt.wav", np.concatenate(audio))

    def _write(self, name: str, audio: np.ndarray) -> None:
        try:
            write_wav(self.folder / name, audio)
        except OSError as e:
            log.warning("debug recorder: %s", e)
