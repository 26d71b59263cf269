"""The microWakeWord engine: streaming TFLite models (pymicro-wakeword's TFLite C library and micro frontend).

The micro frontend turns every 10 ms (160 samples) into 40 log-mel features once its first 30 ms window is full; all
models share those features. A model consumes ``stride`` feature rows per inference (3 for the shipped models, so one
score per 30 ms) and keeps its own streaming state inside the interpreter. Its JSON manifest beside the .tflite gives
``probability_cutoff`` and ``sliding_window_size``; the detector averages the last window of scores and compares the
mean with the cutoff, as microWakeWord does on the ESP32.
"""

from __future__ import annotations

import ctypes
import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .wake import WakeModelSpec

FRAME_SAMPLES = 160  # the micro frontend's step: 10 ms
DEFAULT_THRESHOLD = 0.97
DEFAULT_WINDOW = 5
SENSITIVITY_MID = 0.5  # a runtime sensitivity override of 0.5 (the middle) keeps the model's own cutoff
VERIFY_ROWS = 120  # frontend rows (10 ms each) a household verifier looks at: 1.2 s, a wake phrase and a little more
VERIFY_SEGMENTS = 4  # the window's rows are averaged in this many equal segments (the phrase's rough shape)
N_FEATURES = 40  # log-mel channels of the micro frontend


def pooled_features(rows: np.ndarray) -> np.ndarray:
    """A window of frontend rows (n x 40) -> the verifier's numbers: the mean of each channel in each of
    ``VERIFY_SEGMENTS`` equal segments, then each channel's standard deviation over the window (200 numbers).
    A window shorter than ``VERIFY_ROWS`` (just after a reset) is padded at the front with its first row."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, N_FEATURES)
    if len(rows) == 0:
        rows = np.zeros((1, N_FEATURES))
    if len(rows) < VERIFY_ROWS:
        rows = np.vstack([np.repeat(rows[:1], VERIFY_ROWS - len(rows), axis=0), rows])
    rows = rows[-VERIFY_ROWS:]
    segs = [seg.mean(axis=0) for seg in np.array_split(rows, VERIFY_SEGMENTS)]
    return np.concatenate([*segs, rows.std(axis=0)])


def read_manifest(path: Path) -> dict[str, Any]:
    """A microWakeWord model's JSON manifest (``<model>.json`` beside the .tflite), or {} when there is none."""
    js = path.with_suffix(".json")
    if not js.is_file():
        return {}
    try:
        return json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"microWakeWord manifest {js} is unreadable ({e})",
                         fix="restore the .json file that came with the model, or remove it to use the defaults"
                         ) from None


class _Model:
    """One streaming TFLite model: quantize the features, invoke, dequantize the probability."""

    def __init__(self, spec: WakeModelSpec, lib_path: Path) -> None:
        from pymicro_wakeword import MicroWakeWord

        self.spec = spec
        with open(spec.path, "rb") as f:
            head = f.read(8)
        if head[4:8] != b"TFL3":  # the C library crashes (not raises) on a file that is not a TFLite flatbuffer
            raise ModelError(f"microWakeWord could not load {spec.path} (not a TFLite model)",
                             fix="check that the file is a microWakeWord streaming .tflite model")
        try:
            self._m = MicroWakeWord(spec.name, wake_word=spec.phrase or spec.name, tflite_model=spec.path,
                                    probability_cutoff=spec.threshold, sliding_window_size=1,
                                    trained_languages=[], libtensorflowlite_c_path=lib_path)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"microWakeWord could not load {spec.path} ({e})",
                             fix="check that the file is a microWakeWord streaming .tflite model") from None
        if not self._m.interpreter or not self._m.model:
            raise ModelError(f"microWakeWord could not load {spec.path} (not a TFLite model)",
                             fix="check that the file is a microWakeWord streaming .tflite model")
        self._rows: list[np.ndarray] = []

    def push(self, features: np.ndarray) -> float | None:
        """Add one 10 ms feature row; the raw probability when the model ran on this row, else None."""
        m = self._m
        self._rows.append(features)
        if len(self._rows) < m.stride:
            return None
        x = np.concatenate(self._rows, axis=1)
        self._rows.clear()
        q = np.round(x / m.input_scale + m.input_zero_point).astype(m.input_dtype)
        m.lib.TfLiteTensorCopyFromBuffer(m.input_tensor, q.ctypes.data_as(ctypes.c_void_p), q.nbytes)
        m.lib.TfLiteInterpreterInvoke(m.interpreter)
        nbytes = m.lib.TfLiteTensorByteSize(m.output_tensor)
        out = np.empty(nbytes // np.dtype(m.output_dtype).itemsize, dtype=m.output_dtype)
        m.lib.TfLiteTensorCopyToBuffer(m.output_tensor, out.ctypes.data_as(ctypes.c_void_p), nbytes)
        return float((out.astype(np.float32)[0] - m.output_zero_point) * m.output_scale)

    def reset(self) -> None:
        self._rows.clear()
        self._m.reset()  # reloads the interpreter: its streaming state variables start from zero


class MicroEngine:
    """microWakeWord models by name over one shared micro frontend."""

    suffix = ".tflite"
    frame_samples = FRAME_SAMPLES

    @staticmethod
    def model_defaults(path: Path) -> dict[str, Any]:
        man = read_manifest(path)
        micro = man.get("micro", {})
        return {"threshold": float(micro.get("probability_cutoff", DEFAULT_THRESHOLD)),
                "sliding_window": int(micro.get("sliding_window_size", DEFAULT_WINDOW)),
                "phrase": str(man.get("wake_word", "")).lower()}

    @staticmethod
    def threshold(base: float, boost: float, override: float | None) -> float:
        """microWakeWord cutoffs sit near 1 (0.85-0.97), so the guard and the sensitivity act on the headroom
        ``1 - cutoff``: a boost of b keeps the fraction b of it; an override o (0..1, openWakeWord's scale where
        0.5 is the middle) scales it by (1 - o) / 0.5, so 0.5 keeps the model's own cutoff."""
        if override is not None:
            base = min(1.0, max(0.0, 1.0 - (1.0 - override) * (1.0 - base) / SENSITIVITY_MID))
        return base + boost * (1.0 - base)

    def __init__(self, models: list[WakeModelSpec], **_: Any) -> None:
        from pymicro_features import MicroFrontend
        from pymicro_wakeword import microwakeword as mww

        lib = next(iter(mww._MODULE_LIB_DIR.glob("*tensorflowlite_c.*")), None)
        if lib is None:
            raise ModelError("pymicro-wakeword ships no TFLite library for this platform",
                             fix="reinstall pymicro-wakeword==2.5.0 (wheels exist for x86-64 and aarch64 Linux)")
        for m in models:
            if m.path.suffix.lower() != ".tflite":
                raise ModelError(f"wake model {m.name!r}: {m.path} is not a .tflite file; microWakeWord runs "
                                 "TFLite models", fix="use `engine: openwakeword` for an .onnx model")
            if not m.path.is_file():
                raise ModelError(f"wake model {m.name!r}: {m.path} does not exist",
                                 fix="check the path, or use a manifest model (`edge-agent models list`)")
        self._frontend = MicroFrontend()
        self._models = [_Model(m, lib) for m in models]
        self.models: dict[str, WakeModelSpec] = {m.name: m for m in models}
        self._recent: deque[np.ndarray] = deque(maxlen=VERIFY_ROWS)  # the last frontend rows, for a verifier

    verifier_kind = "micro_logmel_pooled"

    def verifier_features(self, name: str) -> np.ndarray:
        """What a household verifier looks at for a detection: the last 1.2 s of frontend rows, pooled
        (``pooled_features``); the same for every model, as they share the frontend."""
        return pooled_features(np.array(self._recent)) if self._recent else pooled_features(np.empty((0, 40)))

    def score(self, frame: np.ndarray) -> dict[str, float]:
        data = frame.tobytes()
        out: dict[str, float] = {}
        while data:
            res = self._frontend.process_samples(data)
            data = data[max(1, res.samples_read) * 2:]
            if not res.features:
                continue
            row = np.asarray(res.features, dtype=np.float32).reshape(1, 1, -1)
            self._recent.append(row.reshape(-1))
            for m in self._models:
                p = m.push(row)
                if p is not None:
                    out[m.spec.name] = p
        return out

    def reset(self) -> None:
        self._frontend.reset()
        self._recent.clear()
        for m in self._models:
            m.reset()
