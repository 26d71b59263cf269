"""The household verifier: a small logistic regression that looks again at each wake detection, and its file.

openWakeWord's published recipe for a "custom verifier": take the features its wake model saw when it fired on a few
recordings of the wake phrase from each person of the household (positives) and on their other speech (negatives),
and fit a logistic regression (standardized features, strong L2). At run time the verifier is asked only when the
wake model's score crosses the cutoff; below its own threshold the detection is dropped. Here:

* features are what the engine already has at the detection (``WakeEngine.verifier_features``): openWakeWord's
  shared speech embeddings over the model's input window (16 x 96 for ``hey_jarvis``); for microWakeWord, whose
  model internals are not exposed, the micro frontend's 40 log-mel rows over the last 1.2 s pooled to four segment
  means and a standard deviation per channel (200 numbers: the voice's spectrum and the phrase's rough shape);
* the fit is numpy only (class-balanced log loss + L2, accelerated gradient descent): no scikit-learn at run time;
* the file is JSON, plain numbers and names: no pickle, nothing executable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

FORMAT = "edge-agent-wake-verifier"
VERSION = 1
DEFAULT_THRESHOLD = 0.5  # on the class-balanced probability
DEFAULT_L2 = 0.05  # per-sample L2 weight on standardized features; strong, as openWakeWord's C=0.001 is
ENROLL_FIX = "run `edge-agent wake enroll` again to write a new verifier, or remove the `verifier:` key"


@dataclass(frozen=True)
class Verifier:
    """A trained verifier: ``probability(x) = sigmoid(weights . (x - mean) / scale + bias)``, accept at
    ``threshold``. ``model``/``engine``/``features`` say which wake model and feature kind it was trained on."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float = DEFAULT_THRESHOLD
    model: str = ""
    engine: str = ""
    features: str = ""
    speakers: dict[str, int] = field(default_factory=dict)  # clips used per speaker (for reports)
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """One probability per row of ``x`` (n x dim), or one for a single vector."""
        x = np.asarray(x, dtype=np.float64)
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return _sigmoid(z)

    def probability(self, x: np.ndarray) -> float:
        return float(self.probabilities(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])

    def accepts(self, x: np.ndarray) -> bool:
        return self.probability(x) >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "engine": self.engine,
                "features": self.features, "dim": self.dim, "threshold": self.threshold,
                "speakers": dict(self.speakers), "bias": float(self.bias),
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
                "weights": [float(v) for v in self.weights]}

    def save(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json()) + "\n", encoding="utf-8")
        tmp.replace(p)
        return p


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # stable for any z


# --------------------------------------------------------------------------------------------------- training


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = DEFAULT_L2, balanced: bool = True,
                 weight: np.ndarray | None = None, iters: int = 400, tol: float = 1e-7
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Fit ``(weights, bias, mean, scale)`` of a logistic regression on standardized ``x`` (n x d) for labels ``y``
    (0/1), minimizing the weighted mean log loss + ``l2/2 |w|^2`` by Nesterov-accelerated gradient descent with a
    step from the largest eigenvalue of the data (power iteration): deterministic, numpy only. Sample weights:
    ``weight`` (normalized to sum 1), else each class weighs half (``balanced``), else uniform."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    if not (np.any(y == 1) and np.any(y == 0)):
        raise ValueError("training needs both positive and negative examples")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature: leave it unscaled (its weight goes to 0)
    z = (x - mean) / scale
    n, d = z.shape
    if weight is not None:
        sw = np.asarray(weight, dtype=np.float64).reshape(-1)
        if sw.shape != (n,) or np.any(sw < 0) or sw.sum() <= 0:
            raise ValueError("sample weights must be n non-negative numbers, not all zero")
        sw = sw / sw.sum()
    elif balanced:
        n_pos = float(y.sum())
        sw = np.where(y == 1, 0.5 / n_pos, 0.5 / (n - n_pos))
    else:
        sw = np.full(n, 1.0 / n)
    za = np.hstack([z, np.ones((n, 1))])  # the bias as a last, unregularized column
    # Lipschitz constant of the gradient: 0.25 * lambda_max(Za^T W Za) + l2
    v = np.random.default_rng(0).standard_normal(d + 1)
    lam = 1.0
    for _ in range(30):
        u = za.T @ (sw * (za @ v))
        lam = float(np.linalg.norm(u))
        if lam == 0.0:
            break
        v = u / lam
    step = 1.0 / (0.25 * lam + l2 + 1e-12)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    theta = np.zeros(d + 1)
    prev = theta.copy()
    for k in range(1, iters + 1):
        look = theta + (k - 1) / (k + 2) * (theta - prev)
        grad = za.T @ (sw * (_sigmoid(za @ look) - y)) + reg * look
        prev = theta
        theta = look - step * grad
        if float(np.max(np.abs(theta - prev))) < tol:
            break
    return theta[:-1].copy(), float(theta[-1]), mean, scale


def train(pos: np.ndarray, neg: np.ndarray, *, hard: np.ndarray | None = None, l2: float = DEFAULT_L2,
          threshold: float = DEFAULT_THRESHOLD, **meta: Any) -> Verifier:
    """A verifier from positive feature rows (the household saying the wake phrase) and negative rows. ``hard``
    negatives are those on which the wake model fired: the only kind the verifier is asked about at run time, so
    they weigh as much as all the other negatives together (positives weigh half of everything)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    hard = np.empty((0, pos.shape[-1])) if hard is None or len(hard) == 0 else np.asarray(hard, dtype=np.float64)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1] or hard.shape[1] != pos.shape[1]:
        raise ValueError(f"positive {pos.shape} and negative {neg.shape} feature rows differ in shape")
    x = np.vstack([pos, neg, hard])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg) + len(hard))])
    share = 0.25 if len(hard) and len(neg) else 0.5  # of the total weight, for each kind of negative present
    weight = np.concatenate([np.full(len(pos), 0.5 / max(1, len(pos))),
                             np.full(len(neg), share / max(1, len(neg))),
                             np.full(len(hard), share / max(1, len(hard)))])
    w, b, mean, scale = fit_logistic(x, y, l2=l2, weight=weight)
    return Verifier(weights=w, bias=b, mean=mean, scale=scale, threshold=threshold, **meta)


# --------------------------------------------------------------------------------------------------- the file


def load(path: str | Path, *, where: str = "verifier", model: str | None = None,
         features: str | None = None, dim: int | None = None) -> Verifier:
    """Read and check a verifier file; any problem is a ``ConfigError`` naming ``where``, the file and the fix.
    ``model``, ``features`` and ``dim`` (when given) must match what the file was trained on."""
    p = Path(path).expanduser()

    def bad(why: str, fix: str = ENROLL_FIX) -> ConfigError:
        return ConfigError(f"{where}: {p}: {why}", fix=fix)

    if not p.is_file():
        raise bad("no such file", f"check the path, or write one with `edge-agent wake enroll --out {p}`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise bad(f"not a readable verifier file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"not an edge-agent wake verifier (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise bad(f"verifier file version {data.get('version')!r}; this edge-agent reads version {VERSION}")
    try:
        weights = np.asarray(data["weights"], dtype=np.float64)
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        bias = float(data["bias"])
        threshold = float(data["threshold"])
        speakers = {str(k): int(v) for k, v in dict(data.get("speakers", {})).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"a field is missing or not a number ({type(e).__name__}: {e})") from None
    n = weights.shape[0] if weights.ndim == 1 else -1
    if n <= 0 or mean.shape != (n,) or scale.shape != (n,) or int(data.get("dim", n)) != n:
        raise bad(f"weights, mean and scale must be lists of the same length (got {weights.shape}, {mean.shape}, "
                  f"{scale.shape}, dim {data.get('dim')})")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))
            and math.isfinite(bias)) or np.any(scale <= 0):
        raise bad("contains a non-finite number or a scale <= 0")
    if not 0.0 <= threshold <= 1.0:
        raise bad(f"threshold {threshold} is out of range 0 .. 1")
    v = Verifier(weights=weights, bias=bias, mean=mean, scale=scale, threshold=threshold,
                 model=str(data.get("model", "")), engine=str(data.get("engine", "")),
                 features=str(data.get("features", "")), speakers=speakers, path=p)
    if model is not None and v.model and v.model != model:
        raise bad(f"was trained for wake model {v.model!r}, not {model!r}",
                  f"point this model at its own verifier, or enroll again with --model {model}")
    if features is not None and v.features != features:
        raise bad(f"holds {v.features or 'unknown'} features; this model's engine gives {features}",
                  f"enroll again for this model: `edge-agent wake enroll --model {model or v.model} ...`")
    if dim is not None and v.dim != dim:
        raise bad(f"expects {v.dim} features per detection; this model gives {dim}",
                  "enroll again for this model: the verifier belongs to another model or feature window")
    return v
