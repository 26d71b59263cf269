"""The benchmark's spoken request set, generated reproducibly from text (``tools/make_bench_set.py``).

Why generated: no recorded English commands with a wake word exist here, so requests are spoken by the real Piper
voice (two speaking rates) and by espeak-ng (two accents, two rates): "Hey Jarvis" + a pause + the request, clean and
with white/pink noise at fixed SNRs. Real human speech comes from Debian's pocketsphinx test recordings (WER) and,
with the same synthetic requests said *without* the wake word plus noise, makes the negative audio for wake false
accepts. Everything is seeded: the same version of the code and models gives the same files and the same manifest.

The manifest (``manifest.json``) lists every file with its expected transcript and intent (``"llm"`` for
questions), the voice, the noise and its SNR, and where the request lies in the file (seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.audio import SAMPLE_RATE, read_wav, resample, write_wav
from edge_agent.config import Settings
from edge_agent.errors import AudioError, ModelError

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("~/.cache/edge-agent/bench").expanduser()
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
WAKE_TEXT = "Hey Jarvis!"
LEAD_S, PAUSE_S, TAIL_S = 0.6, 0.5, 1.2  # silence before the wake word, after it, and after the request
SET_VERSION = 2  # bump when the composition changes, so cached files are not reused

# (spoken text, expected intent): name, resolved entities and the slots that must match
COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("Turn on the kitchen light.", {"name": "HassTurnOn", "entities": ["light.kitchen"]}),
    ("Turn off the kitchen light.", {"name": "HassTurnOff", "entities": ["light.kitchen"]}),
    ("Set the living room lamp to 50 percent.",
     {"name": "HassLightSet", "entities": ["light.living_room_lamp"], "slots": {"brightness": 50}}),
    ("What time is it?", {"name": "HassGetCurrentTime"}),
    ("Start a timer for 5 minutes.", {"name": "HassStartTimer", "slots": {"minutes": 5}}),
    ("Turn on the living room lamp.", {"name": "HassTurnOn", "entities": ["light.living_room_lamp"]}),
    ("Set the kitchen light to 20 percent.",
     {"name": "HassLightSet", "entities": ["light.kitchen"], "slots": {"brightness": 20}}),
    ("What is the date today?", {"name": "HassGetCurrentDate"}),
    ("Set a timer for 10 minutes.", {"name": "HassStartTimer", "slots": {"minutes": 10}}),
    ("Turn off the living room lamp.", {"name": "HassTurnOff", "entities": ["light.living_room_lamp"]}),
    # Held out (written after the matcher, never tuned to): everyday phrasings, most of which the templates and the
    # tolerant tier miss, so the LLM's tool call is measured on real requests.
    ("Make the living room lamp a bit dimmer, like thirty percent.",
     {"name": "HassLightSet", "entities": ["light.living_room_lamp"], "slots": {"brightness": 30}}),
    ("Could the kitchen be a little brighter, say eighty percent?",
     {"name": "HassLightSet", "entities": ["light.kitchen"], "slots": {"brightness": 80}}),
    ("We're leaving, so the kitchen light can go off now.", {"name": "HassTurnOff", "entities": ["light.kitchen"]}),
    ("I can't see a thing in the kitchen, put the light on.", {"name": "HassTurnOn", "entities": ["light.kitchen"]}),
    ("The living room lamp should be at about forty percent.",
     {"name": "HassLightSet", "entities": ["light.living_room_lamp"], "slots": {"brightness": 40}}),
    ("Please get the kitchen light going.", {"name": "HassTurnOn", "entities": ["light.kitchen"]}),
]
QUESTIONS: list[str] = [
    "What is the capital of France?",
    "How many days are in a leap year?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Why is the sky blue?",
    "Tell me a fun fact about the moon.",
]
# Speech without the wake word (negatives): everyday sentences, some close to the wake phrase in sound.
NEGATIVE_TEXTS: list[str] = [
    "Hey, are you coming to dinner tonight?",
    "Jarred peppers are on the top shelf.",
    "Harvest season starts early this year.",
    "Hey Jack, pass me the salt please.",
    "The weather is nice, let's go for a walk.",
    "Did you remember to water the plants?",
    "I think the movie starts at eight.",
    "Charlie's car is parked in the driveway.",
]


@dataclass(frozen=True)
class Voice:
    """One speaker: Piper joe at a length scale, or an espeak-ng voice at a speed (words per minute)."""

    name: str
    engine: str  # "piper" | "espeak"
    length_scale: float = 1.0
    espeak_voice: str = "en-us"
    speed: int = 160


VOICES: list[Voice] = [
    Voice("piper-joe-1.0", "piper", length_scale=1.0),
    Voice("piper-joe-1.25", "piper", length_scale=1.25),
    Voice("espeak-en-us-150", "espeak", espeak_voice="en-us", speed=150),
    Voice("espeak-en-us-175", "espeak", espeak_voice="en-us", speed=175),
    Voice("espeak-en-gb-150", "espeak", espeak_voice="en-gb", speed=150),
    Voice("espeak-en-gb-175", "espeak", espeak_voice="en-gb", speed=175),
]
# (name, noise colour, SNR dB); SNR relative to the speech's active level
CONDITIONS: list[tuple[str, str | None, float | None]] = [
    ("clean", None, None), ("white20", "white", 20.0), ("white10", "white", 10.0),
    ("pink20", "pink", 20.0), ("pink10", "pink", 10.0),
]
QUICK_VOICES = ["piper-joe-1.0", "espeak-en-us-150"]
QUICK_CONDITIONS = ["clean", "white10"]
QUICK_COMMANDS = 4
QUICK_QUESTIONS = 3

BENCH_HOME = """\
# The home the benchmark's commands refer to (same shape as Home Assistant's intent test fixtures).
areas:
  - {id: kitchen, name: Kitchen}
  - {id: living_room, name: Living Room}
  - {id: entrance, name: Entrance}
entities:
  - {id: light.kitchen, name: Kitchen Light, area: kitchen, mqtt: {preset: zigbee2mqtt, device: kitchen_light}}
  - {id: light.living_room_lamp, name: Living Room Lamp, area: living_room, mqtt: {preset: tasmota, device: lamp1}}
  - {id: lock.front_door, name: Front Door, area: entrance}
"""


# --------------------------------------------------------------------------------------------------- signal


def _seed(*parts: Any) -> int:
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS float noise: white, or pink (1/f power, by shaping the spectrum of white noise)."""
    w = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(w)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        w = np.fft.irfft(spec / np.sqrt(f), n)
    elif color != "white":
        raise ValueError(f"unknown noise colour {color!r}")
    return w / (np.sqrt(np.mean(w ** 2)) or 1.0)


def active_rms(x: np.ndarray) -> float:
    """RMS of the voiced part (20 ms frames within 30 dB of the loudest): speech level without its pauses."""
    f = x.astype(np.float64)
    n = len(f) // 320
    if n == 0:
        return float(np.sqrt(np.mean(f ** 2))) if len(f) else 0.0
    e = np.mean(f[: n * 320].reshape(n, 320) ** 2, axis=1)
    keep = e >= e.max() * 10 ** (-3.0)
    return float(np.sqrt(np.mean(e[keep])))


def add_noise(x: np.ndarray, color: str, snr_db: float, seed: int) -> np.ndarray:
    """``x`` plus noise at ``snr_db`` below the speech's active level, over the whole file (pauses included)."""
    rng = np.random.default_rng(seed)
    level = active_rms(x) / 10 ** (snr_db / 20)
    y = x.astype(np.float64) + colored_noise(len(x), color, rng) * level
    return np.clip(y, -32768, 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.int16)


# --------------------------------------------------------------------------------------------------- voices


class Speakers:
    """Text → 16 kHz int16 speech for each ``Voice``; each utterance is cached as a WAV under ``cache``."""

    def __init__(self, settings: Settings, cache: Path) -> None:
        self.settings = settings
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self._piper: Any = None

    def say(self, voice: Voice, text: str) -> np.ndarray:
        key = hashlib.sha1(f"{SET_VERSION}|{voice}|{text}".encode()).hexdigest()[:16]
        path = self.cache / f"{voice.name}-{key}.wav"
        if not path.exists():
            audio = self._piper_say(voice, text) if voice.engine == "piper" else self._espeak_say(voice, text)
            write_wav(path, audio)
        return read_wav(path)

    def _piper_say(self, voice: Voice, text: str) -> np.ndarray:
        from piper.config import SynthesisConfig

        if self._piper is None:
            from piper import PiperVoice

            from edge_agent.preflight import resolve_model

            self._piper = PiperVoice.load(str(resolve_model(self.settings, self.settings.tts.voice, "tts")))
        cfg = SynthesisConfig(length_scale=voice.length_scale)
        audio = np.concatenate([c.audio_int16_array for c in self._piper.synthesize(text, cfg)])
        return resample(audio, self._piper.config.sample_rate, SAMPLE_RATE).astype(np.int16)

    def _espeak_say(self, voice: Voice, text: str) -> np.ndarray:
        if shutil.which("espeak-ng") is None:
            raise AudioError("espeak-ng is not installed", fix="apt-get install espeak-ng")
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "e.wav"
            subprocess.run(["espeak-ng", "-v", voice.espeak_voice, "-s", str(voice.speed), "-w", str(out), text],
                           check=True, capture_output=True)
            return read_wav(out)  # read_wav resamples any WAV to 16 kHz mono int16


# --------------------------------------------------------------------------------------------------- the set


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def wake_detects(detector: Any, audio: np.ndarray) -> bool:
    """Whether the wake detector fires anywhere in ``audio`` (fresh state; a little silence appended)."""
    detector.reset()
    x = np.concatenate([audio, silence(0.5)])
    return bool(detector.process(x, len(x) / SAMPLE_RATE))


def make_bench_set(settings: Settings, out: Path = DEFAULT_DIR, *, quick: bool = False, force: bool = False,
                   negative_minutes: float | None = None) -> dict[str, Any]:
    """Write the request WAVs, the negative base clips, a home file and ``manifest.json`` into ``out``.

    Voices whose spoken wake phrase openWakeWord does not detect (clean, on its own) are left out and listed under
    ``dropped_voices``: the set measures the product with voices its wake model accepts. ``quick`` makes the small
    subset used by ``bench --quick``. Returns the manifest.
    """
    from edge_agent.wake import WakeDetector

    out = Path(out).expanduser()
    name = "manifest-quick.json" if quick else "manifest.json"
    mpath = out / name
    if mpath.exists() and not force:
        m = json.loads(mpath.read_text())
        if m.get("version") == SET_VERSION and all((out / r["file"]).exists() for r in m["requests"]):
            return m
    out.mkdir(parents=True, exist_ok=True)
    speakers = Speakers(settings, out / "pieces")
    detector = WakeDetector.from_settings(settings)
    voices = [v for v in VOICES if not quick or v.name in QUICK_VOICES]
    conditions = [c for c in CONDITIONS if not quick or c[0] in QUICK_CONDITIONS]
    commands = COMMANDS[:QUICK_COMMANDS] if quick else COMMANDS
    questions = QUESTIONS[:QUICK_QUESTIONS] if quick else QUESTIONS
    kept: list[Voice] = []
    dropped: list[str] = []
    for v in voices:
        wake = speakers.say(v, WAKE_TEXT)
        (kept if wake_detects(detector, np.concatenate([silence(LEAD_S), wake])) else dropped).append(v)
    dropped_names = [v.name for v in dropped]
    if not kept:
        raise ModelError("openWakeWord detected the wake phrase in none of the benchmark voices",
                         fix="check the wake model (edge-agent wake FILE.wav) and wake.models in the config")
    requests: list[dict[str, Any]] = []
    req_dir = out / "requests"
    req_dir.mkdir(exist_ok=True)
    items: list[tuple[str, str, Any]] = [("command", t, e) for t, e in commands] + [("question", q, "llm")
                                                                                       for q in questions]
    for v in kept:
        wake = speakers.say(v, WAKE_TEXT)
        for i, (kind, text, expected) in enumerate(items):
            req = speakers.say(v, text)
            clean = np.concatenate([silence(LEAD_S), wake, silence(PAUSE_S), req, silence(TAIL_S)])
            req_start = (len(silence(LEAD_S)) + len(wake) + len(silence(PAUSE_S))) / SAMPLE_RATE
            for cond, color, snr in conditions:
                audio = clean if color is None else add_noise(clean, color, float(snr), _seed(v.name, text, cond))
                path = req_dir / f"{kind[0]}{i:02d}-{v.name}-{cond}.wav"
                if force or not path.exists():
                    write_wav(path, audio)
                requests.append({
                    "file": _rel(path, out), "kind": kind, "text": text, "expected": expected, "voice": v.name,
                    "condition": cond, "noise": color, "snr": snr, "wake_end_s": round((LEAD_S * SAMPLE_RATE +
                                                                                       len(wake)) / SAMPLE_RATE, 3),
                    "request_start_s": round(req_start, 3),
                    "request_end_s": round(req_start + len(req) / SAMPLE_RATE, 3),
                    "duration_s": round(len(audio) / SAMPLE_RATE, 3),
                })
    # negatives: real read speech + synthetic speech without the wake word (varied and noised at bench time)
    neg_dir = out / "negatives"
    neg_dir.mkdir(exist_ok=True)
    negatives: list[dict[str, Any]] = []
    if LIBRIVOX.is_dir():
        for wav in sorted(LIBRIVOX.glob("*.wav")):
            negatives.append({"file": str(wav), "source": "librivox"})
    neg_texts = NEGATIVE_TEXTS + [t for t, _ in commands] + questions
    for v in kept if not quick else kept[:1]:
        for i, text in enumerate(neg_texts if not quick else neg_texts[:6]):
            path = neg_dir / f"n{i:02d}-{v.name}.wav"
            if force or not path.exists():
                write_wav(path, np.concatenate([silence(0.3), speakers.say(v, text), silence(0.3)]))
            negatives.append({"file": _rel(path, out), "source": v.name, "text": text})
    home = out / "home.yaml"
    home.write_text(BENCH_HOME, encoding="utf-8")
    manifest = {
        "version": SET_VERSION, "quick": quick, "wake_text": WAKE_TEXT, "home": "home.yaml",
        "voices": [asdict(v) for v in kept], "dropped_voices": dropped_names,
        "conditions": [{"name": c, "noise": n, "snr": s} for c, n, s in conditions],
        "requests": requests, "negatives": negatives,
        "negative_minutes": negative_minutes if negative_minutes is not None else (3.0 if quick else 60.0),
        "librivox": str(LIBRIVOX),
    }
    mpath.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("bench set: %d requests (%d voices kept, dropped %s), %d negative clips in %s", len(requests),
             len(kept), dropped_names or "none", len(negatives), out)
    return manifest


def negative_stream(manifest: dict[str, Any], root: Path, seconds: float, seed: int = 7,
                    block_s: float = 10.0) -> Iterator[np.ndarray]:
    """The negative clips looped and varied until ``seconds`` of audio: each repeat gets its own gain (-15..0 dB),
    speed (0.9..1.1 by resampling), noise (none, white or pink at 5..30 dB SNR) and a gap of 0.2..2 s. Yields
    blocks of about ``block_s`` seconds, so an hour never has to sit in memory at once."""
    rng = np.random.default_rng(seed)
    clips = []
    for n in manifest["negatives"]:
        p = Path(n["file"])
        clips.append(read_wav(p if p.is_absolute() else root / p))
    if not clips:
        raise AudioError("the bench set has no negative clips", fix="run tools/make_bench_set.py again")
    total = int(seconds * SAMPLE_RATE)
    made = 0
    buf: list[np.ndarray] = []
    held = 0
    k = 0
    while made < total:
        clip = clips[k % len(clips)]
        k += 1
        x = clip.astype(np.float64) * 10 ** (rng.uniform(-15, 0) / 20)
        speed = float(rng.choice([0.9, 0.95, 1.0, 1.05, 1.1]))  # steps of 800 Hz: cheap polyphase ratios
        if speed != 1.0:
            x = resample(x.astype(np.float32), int(round(SAMPLE_RATE * speed)), SAMPLE_RATE).astype(np.float64)
        choice = rng.integers(0, 3)
        if choice:
            lvl = active_rms(x.astype(np.int16)) / 10 ** (rng.uniform(5, 30) / 20)
            x = x + colored_noise(len(x), "white" if choice == 1 else "pink", rng) * lvl
        gap = np.zeros(int(rng.uniform(0.2, 2.0) * SAMPLE_RATE))
        piece = np.clip(np.concatenate([x, gap]), -32768, 32767).astype(np.int16)[: total - made]
        made += len(piece)
        buf.append(piece)
        held += len(piece)
        if held >= block_s * SAMPLE_RATE:
            yield np.concatenate(buf)
            buf, held = [], 0
    if buf:
        yield np.concatenate(buf)


def librivox_cases(root: Path = LIBRIVOX) -> list[tuple[Path, str]]:
    """(wav, reference transcript) of the real read speech in pocketsphinx-testdata."""
    trans = root / "transcription"
    if not trans.is_file():
        return []
    cases = []
    for line in trans.read_text().splitlines():
        line = line.strip()
        if not line or "(" not in line:
            continue
        text, _, ident = line.rpartition("(")
        ident = ident.rstrip(")").strip()
        wav = root / f"{ident}.wav"
        if wav.is_file():
            cases.append((wav, text.replace("<s>", "").replace("</s>", "").strip()))
    return cases
