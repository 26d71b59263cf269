"""``edge-agent wake enroll``: train a household verifier from a few recordings of each member.

    edge-agent wake enroll --model hey_jarvis --out ~/.config/edge-agent/hey_jarvis.verifier.json \\
        --speaker anna a1.wav a2.wav a3.wav a4.wav --other-speech anna-talk.wav \\
        --speaker ben b1.wav b2.wav b3.wav b4.wav --other-speech ben-talk.wav \\
        [--negatives DIR] [--negative-minutes 10]

Each ``--speaker NAME`` takes that member's recordings of the wake phrase (at least 3; openWakeWord recommends a
few), each ``--other-speech`` after it about 10 s of the same member saying anything else. The wake model runs over
every clip as it would live; the features it saw where it fired on a wake clip are positives, the features of
their other speech and of a slice of the negative set (``tools/make_negative_set.py``; every frame where the model
came near firing, and a frame every 0.32 s) are negatives. ``wake_verifier.train`` fits the logistic regression.

Before the final fit on everything, a part is held back (the last quarter of each member's wake clips when they gave
4 or more, the last quarter of their other speech, every 4th minute of the negative slice) and a verifier trained
without it is scored on it, exactly as the detector would use it: the report says how many held-back wake clips it
accepts and how many held-back detections on other speech and on the negative set it rejects.

The command line (its arguments, the checks of the files, writing the verifier) is ``wake_enroll_cli.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import SAMPLE_RATE, read_wav
from .errors import ConfigError
from .wake_verifier import DEFAULT_L2, DEFAULT_THRESHOLD, Verifier, train

if TYPE_CHECKING:
    from .config import Settings
    from .wake import WakeDetector

MIN_WAKE_CLIPS = 3  # per speaker, as openWakeWord's verifier recipe asks
LEAD_S, TAIL_S = 1.0, 0.6  # silence around a wake clip, so the model has context before and time to fire after
POS_OFFSETS = (0, 320, 640, 960)  # samples: each wake clip is run from these starts (varied frames, as openWakeWord)
NEG_EVERY_S = 0.32  # a negative frame kept every this many seconds...
NEG_FLOOR = 0.1  # ...and every frame whose score reaches this fraction of the cutoff (the near misses)
CHUNK_S = 60  # the negative slice is taken in chunks of this length, spread over the set's files
HOLD_EVERY = 4  # every 4th negative chunk is held back


def default_negatives() -> Path:
    """Where ``tools/make_negative_set.py`` writes the negative set by default."""
    return Path(os.environ.get("EDGE_AGENT_CACHE", Path.home() / ".cache" / "edge-agent")) / "wake-negatives"


@dataclass
class Speaker:
    name: str
    wake: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- features


class Extractor:
    """One wake model run as live (the detector's framing and sliding window), collecting the verifier's features."""

    def __init__(self, det: WakeDetector) -> None:
        self.det = det
        self.name = det.names[0]
        self.spec = det.specs[self.name]
        self.cutoff = det.threshold_for(self.name)

    def run(self, audio: np.ndarray, keep: Callable[[int, float, float], bool]
            ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every (window-averaged) score of the model over ``audio``, and the features of the frames ``keep(i, t,
        score)`` wants, after a reset (each clip starts fresh)."""
        self.det.reset()
        scores: list[float] = []
        feats: list[np.ndarray] = []

        def on_score(name: str, t: float, score: float) -> None:
            if name != self.name:
                return
            if keep(len(scores), t, score):
                feats.append(self.det.verifier_features(name).astype(np.float64))
            scores.append(score)

        self.det.on_score = on_score
        try:
            self.det.process(audio, len(audio) / SAMPLE_RATE)
        finally:
            self.det.on_score = None
        return np.asarray(scores), feats

    def positive(self, audio: np.ndarray) -> tuple[list[np.ndarray], float]:
        """Features where the model fires on a wake clip (from several start offsets); when it never fires, those
        of its three best frames. Returns (rows, the clip's best score)."""
        padded = pad(audio)
        rows: list[np.ndarray] = []
        best = 0.0
        for off in POS_OFFSETS:
            scores, feats = self.run(padded[off:], lambda i, t, s: s >= self.cutoff)
            rows += feats
            best = max(best, float(scores.max()) if len(scores) else 0.0)
        if not rows:  # the model misses this clip: still learn the voice from its most wake-like frames
            scores, _ = self.run(padded, lambda i, t, s: False)
            top = set(np.argsort(scores)[-3:].tolist())
            _, rows = self.run(padded, lambda i, t, s: i in top)
        return rows, best

    def negative(self, audio: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Features of audio that is not the wake phrase: (a frame every ``NEG_EVERY_S`` and the near misses, the
        frames where the model fires: the hard negatives the verifier is there for)."""
        floor = NEG_FLOOR * self.cutoff
        last = [-1]
        kept: list[float] = []

        def keep(i: int, t: float, s: float) -> bool:
            slot = int(t / NEG_EVERY_S)
            if s >= floor or slot != last[0]:
                last[0] = slot
                kept.append(s)
                return True
            return False

        rows = self.run(audio, keep)[1]
        easy = [r for r, s in zip(rows, kept, strict=True) if s < self.cutoff]
        hard = [r for r, s in zip(rows, kept, strict=True) if s >= self.cutoff]
        return easy, hard

    def detections(self, audio: np.ndarray, verifier: Verifier | None) -> int:
        """How many detections the model makes in ``audio`` with this verifier (None: without one)."""
        self.det.reset()
        self.det.set_verifier(self.name, verifier)
        try:
            return len(self.det.process(audio, len(audio) / SAMPLE_RATE))
        finally:
            self.det.set_verifier(self.name, None)


def pad(audio: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_S * SAMPLE_RATE), np.int16), audio,
                           np.zeros(int(TAIL_S * SAMPLE_RATE), np.int16)])


def negative_chunks(folder: Path | None, minutes: float, files: list[Path] | None = None
                    ) -> list[tuple[str, np.ndarray]]:
    """``minutes`` of the negative set (or of ``files``) in ``CHUNK_S`` chunks, spread evenly over its files."""
    if folder is None or minutes <= 0:
        return []
    files = files or sorted(folder.glob("neg-*.wav")) or sorted(folder.glob("*.wav"))
    if not files:
        raise ConfigError(f"--negatives {folder}: no WAV files there",
                          fix="make the set with `tools/make_negative_set.py`, or point at a folder of WAV files")
    n = max(1, round(minutes * 60 / CHUNK_S))
    out = []
    for k in range(n):
        f = files[k % len(files)]
        audio = read_wav(f)
        per_file = -(-n // len(files))
        slot = k // len(files)
        start = int((slot + 0.5) / per_file * max(0, len(audio) - CHUNK_S * SAMPLE_RATE))
        out.append((f"{f.name}@{start // SAMPLE_RATE}s", audio[start:start + CHUNK_S * SAMPLE_RATE]))
    return out


# --------------------------------------------------------------------------------------------------- enrollment


def _split_other(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(len(audio) * 0.75)
    return audio[:cut], audio[cut:]


def enroll(ext: Extractor, speakers: list[Speaker], negatives: list[tuple[str, np.ndarray]], *,
           impostors: list[Path] | None = None, threshold: float = DEFAULT_THRESHOLD, l2: float = DEFAULT_L2,
           log: Callable[[str], None] = print) -> tuple[Verifier, dict[str, Any]]:
    """Train the household verifier for ``ext``'s model; returns it (fit on everything) and the report.
    ``impostors``: people outside the household saying the wake phrase (hard negatives, every 4th held back)."""
    engine = ext.spec.engine
    kind = ext.det.verifier_kind(ext.name)
    pos_train: list[np.ndarray] = []
    pos_held: list[tuple[str, np.ndarray]] = []
    neg_train: list[np.ndarray] = []
    hard_train: list[np.ndarray] = []
    neg_held_rows: list[np.ndarray] = []
    hard_held: list[np.ndarray] = []
    held_other: list[tuple[str, np.ndarray]] = []
    report: dict[str, Any] = {"model": ext.name, "engine": engine, "cutoff": round(ext.cutoff, 4), "speakers": {}}
    pos_all: list[np.ndarray] = []
    for sp in speakers:
        n_hold = len(sp.wake) // 4 if len(sp.wake) >= MIN_WAKE_CLIPS + 1 else 0
        entry: dict[str, Any] = {"wake_clips": len(sp.wake), "held_back": n_hold, "missed_by_model": [],
                                 "other_speech_s": 0.0}
        for i, path in enumerate(sp.wake):
            audio = read_wav(path)
            rows, best = ext.positive(audio)
            if best < ext.cutoff:
                entry["missed_by_model"].append(f"{path.name} (best score {best:.3f})")
            pos_all += rows
            if i < len(sp.wake) - n_hold:
                pos_train += rows
            else:
                pos_held.append((f"{sp.name}:{path.name}", audio))
        other = [read_wav(p) for p in sp.other]
        if other:
            talk = np.concatenate(other)
            entry["other_speech_s"] = round(len(talk) / SAMPLE_RATE, 1)
            first, last = _split_other(talk)
            easy, hard = ext.negative(first)
            neg_train += easy
            hard_train += hard
            easy, hard = ext.negative(last)
            neg_held_rows += easy
            hard_held += hard
            held_other.append((sp.name, last))
        report["speakers"][sp.name] = entry
        log(f"{sp.name}: {len(sp.wake)} wake clips ({len(sp.wake) - n_hold} to train, {n_hold} held back), "
            f"{entry['other_speech_s']:.1f} s of other speech"
            + (f"; the wake model missed {len(entry['missed_by_model'])}: "
               + ", ".join(entry["missed_by_model"]) if entry["missed_by_model"] else ""))
    held_neg: list[tuple[str, np.ndarray]] = []
    n_neg_rows = 0
    n_hard = 0
    for k, (name, audio) in enumerate(negatives):
        easy, hard = ext.negative(audio)
        n_neg_rows += len(easy) + len(hard)
        n_hard += len(hard)
        if k % HOLD_EVERY == HOLD_EVERY - 1:
            neg_held_rows += easy
            hard_held += hard
            held_neg.append((name, audio))
        else:
            neg_train += easy
            hard_train += hard
    report["negative_set_s"] = len(negatives) * CHUNK_S
    log(f"negative set: {len(negatives)} x {CHUNK_S} s ({len(held_neg)} held back), {n_neg_rows} frames, "
        f"{n_hard} of them where the model fired")
    held_imp: list[tuple[str, np.ndarray]] = []
    n_imp = 0
    for k, path in enumerate(impostors or []):
        audio = pad(read_wav(path))
        rows = ext.run(audio, lambda i, t, s: s >= ext.cutoff)[1]  # where the model fires on someone else
        n_imp += len(rows)
        if k % HOLD_EVERY == HOLD_EVERY - 1:
            hard_held += rows
            held_imp.append((path.name, audio))
        else:
            hard_train += rows
    if impostors:
        report["impostor_clips"] = len(impostors)
        log(f"impostors (not the household, saying the wake phrase): {len(impostors)} clips ({len(held_imp)} held "
            f"back), {n_imp} frames where the model fired")
    if not pos_train or not neg_train:
        raise ConfigError("not enough material to train: no " + ("wake frames" if not pos_train else "negatives"),
                          fix="give --other-speech for each member and/or --negatives DIR")
    meta = {"model": ext.name, "engine": engine, "features": kind}
    trial = train(np.vstack(pos_train), np.vstack(neg_train), hard=_stack(hard_train), l2=l2, threshold=threshold,
                  **meta)
    report["held_back"] = evaluate(ext, trial, pos_held, held_other, held_neg, held_imp)
    hb = report["held_back"]
    log(f"held back, verifier trained without them: wake clips accepted {hb['wake_accepted']}/{hb['wake_detected']} "
        f"detected by the model ({hb['wake_clips']} clips); other speech: {hb['other_rejected']}/"
        f"{hb['other_detections']} detections rejected; negative set ({len(held_neg) * CHUNK_S} s): "
        f"{hb['negative_rejected']}/{hb['negative_detections']} detections rejected"
        + (f"; impostors: {hb['impostor_rejected']}/{hb['impostor_detections']} detections rejected"
           if held_imp else ""))
    if hb["wake_probabilities"]:
        log("  held-back wake clips' best verifier probability: "
            + ", ".join(f"{k} {v:.3f}" for k, v in hb["wake_probabilities"].items()))
    if neg_held_rows or hard_held:
        p = trial.probabilities(np.vstack(neg_held_rows + hard_held))
        hb["negative_frames_accepted"] = f"{int((p >= threshold).sum())}/{len(p)}"
        log(f"  held-back negative frames (other speech + negative set) the verifier would accept: "
            f"{hb['negative_frames_accepted']}")
    speakers_used = {sp.name: len(sp.wake) for sp in speakers}
    final = train(np.vstack(pos_all), np.vstack(neg_train + neg_held_rows), hard=_stack(hard_train + hard_held),
                  l2=l2, threshold=threshold, speakers=speakers_used, **meta)
    report["trained_on"] = {"positive_frames": len(pos_all),
                            "negative_frames": len(neg_train) + len(neg_held_rows) + len(hard_train) + len(hard_held),
                            "hard_negative_frames": len(hard_train) + len(hard_held)}
    return final, report


def _stack(rows: list[np.ndarray]) -> np.ndarray | None:
    return np.vstack(rows) if rows else None


def evaluate(ext: Extractor, v: Verifier, wake: list[tuple[str, np.ndarray]],
             other: list[tuple[str, np.ndarray]], neg: list[tuple[str, np.ndarray]],
             impostors: list[tuple[str, np.ndarray]] = ()) -> dict[str, Any]:
    """Score a verifier on held-back audio with the detector's own rules (it is asked only when the model fires)."""
    out: dict[str, Any] = {"wake_clips": len(wake), "wake_detected": 0, "wake_accepted": 0, "wake_probabilities": {},
                           "other_detections": 0, "other_rejected": 0, "negative_detections": 0,
                           "negative_rejected": 0, "impostor_detections": 0, "impostor_rejected": 0}
    for name, audio in wake:
        padded = pad(audio)
        before = ext.detections(padded, None)
        after = ext.detections(padded, v)
        out["wake_detected"] += before > 0
        out["wake_accepted"] += after > 0 and before > 0
        _, feats = ext.run(padded, lambda i, t, s: s >= ext.cutoff)
        if feats:
            out["wake_probabilities"][name] = float(v.probabilities(np.vstack(feats)).max())
    for key, items in (("other", other), ("negative", neg), ("impostor", impostors)):
        for _, audio in items:
            before = ext.detections(audio, None)
            after = ext.detections(audio, v)
            out[f"{key}_detections"] += before
            out[f"{key}_rejected"] += before - after
    return out


# --------------------------------------------------------------------------------------------------- detector


def extractor_for(settings: Settings, model: str | None) -> Extractor:
    """A detector of just this model (no verifier), as configured in ``wake.models`` or named on the command line."""
    from .config import WakeModelSettings
    from .preflight import resolve_model
    from .wake import WakeDetector, _feature_paths, engine_for_file, resolve_spec

    configured = {m.model: m for m in settings.wake.models}
    if model is None:
        entry = settings.wake.models[0]
    elif model in configured:
        entry = configured[model]
    else:
        entry = WakeModelSettings(model=model, engine=engine_for_file(resolve_model(settings, model, "wake")))
    spec = dataclasses.replace(resolve_spec(settings, dataclasses.replace(entry, verifier=None),
                                            where=f"--model {entry.model}"), refractory_s=2.0)
    return Extractor(WakeDetector([spec], *_feature_paths(settings, [spec])))
