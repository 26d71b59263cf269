"""Vosk (Kaldi) as an STT engine: truly streaming, every ``feed()`` decodes and partials arrive while the user
speaks; ``finish()`` only flushes the last few frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .config import VoskSettings
from .errors import ModelError, SttError
from .stt import SttEngine, SttSpec, SttStream, register_stt


class VoskEngine(SttEngine):
    """Vosk (Kaldi) streaming recognizer: partials while the user speaks, finals at pauses and at ``finish()``."""

    name = "vosk"

    def __init__(self, settings: VoskSettings, model_path: Path) -> None:
        super().__init__(model_path)
        self.settings = settings
        self.model: Any = None

    def _load(self) -> None:
        try:
            import vosk
        except ImportError as e:  # pragma: no cover - installation problem
            raise SttError(f"vosk is not installed ({e})", fix="pip install vosk==0.3.45") from None
        vosk.SetLogLevel(-1)  # Kaldi's own logging goes to stderr and would drown ours
        if not (self.model_path / "conf" / "model.conf").is_file() and not (self.model_path / "am").is_dir():
            raise ModelError(f"{self.model_path} does not look like a Vosk model folder (no am/ or conf/model.conf)",
                             fix="point stt.vosk.model at an unpacked Vosk model folder, or a manifest name")
        try:
            self.model = vosk.Model(str(self.model_path))
        except Exception as e:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"cannot load the Vosk model in {self.model_path}: {e}",
                             fix="fetch it again with `edge-agent models fetch NAME --force`") from None

    def _open_stream(self) -> SttStream:
        import vosk

        rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
        rec.SetWords(True)
        return VoskStream(rec)


class VoskStream(SttStream):
    engine_name = "vosk"

    def __init__(self, recognizer: Any) -> None:
        super().__init__()
        self.rec = recognizer
        self._finals: list[str] = []
        self._last = ""

    def _feed(self, samples: np.ndarray) -> str | None:
        if self.rec.AcceptWaveform(samples.tobytes()):
            self._add_final(self.rec.Result())
            current = self._joined()
        else:
            partial = json.loads(self.rec.PartialResult()).get("partial", "").strip()
            current = self._joined(partial)
        if current and current != self._last:
            self._last = current
            return current
        return None

    def _add_final(self, result_json: str) -> None:
        text = json.loads(result_json).get("text", "").strip()
        if text:
            self._finals.append(text)

    def _joined(self, tail: str = "") -> str:
        return " ".join([*self._finals, tail] if tail else self._finals)

    def _finish(self) -> str:
        self._add_final(self.rec.FinalResult())
        return self._joined()


register_stt(SttSpec(
    name="vosk", settings=lambda s: s.stt.vosk, model=lambda v: v.model, model_kind="stt_vosk",
    create=lambda v, path: VoskEngine(v, path), package="vosk",
))
