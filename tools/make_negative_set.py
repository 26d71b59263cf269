#!/usr/bin/env python3
"""Make a negative set for the wake word: hours of audio in which nobody says "hey jarvis", reproducibly.

    nice -n 10 .venv/bin/python tools/make_negative_set.py [--hours 3] [--out DIR] [--seed 12]

Everything comes from what installs here, nothing is downloaded:
* real read speech and commands: Debian's pocketsphinx-testdata recordings;
* Piper (the joe voice, the assistant's own voice: also its typical replies played back) at several speeds and
  noise scales, and espeak-ng in several accents, sexes and speeds, reading varied household text;
* near misses: "hey" + names that rhyme with or start like "Jarvis" (Jack, Travis, Jarvie, Harvey, Marvin, ...)
  and words like it (harvest, service, jar of ...), inside sentences;
* backgrounds: synthetic music (chords, melody, percussion), white / pink / brown noise, babble, at several levels,
  and TV-like mixtures of speech over music.

A pool of sentences is synthesized once (cached in ``OUT/pool``) and reused under different mixes (speed, gain,
background, SNR, neighbours), so the set's hours cost minutes of synthesis. The output is ``OUT/neg-NNN.wav``
(5-minute 16 kHz mono files) and ``OUT/manifest.json`` with each file's segments (kind, source, background, SNR).
The same seed gives the same audio. The folder is a cache: never commit it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.audio import SAMPLE_RATE, read_wav, resample, write_wav  # noqa: E402

DEFAULT_OUT = Path(os.environ.get("EDGE_AGENT_CACHE", Path.home() / ".cache" / "edge-agent")) / "wake-negatives"
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
FILE_S = 300  # seconds per output file
SET_VERSION = 1
WAKE_WORDS = ("jarvis",)  # never in any text of this set

# ------------------------------------------------------------------------------------------------ text

NAMES_NEAR = ["Jack", "Travis", "Jarvie", "Harvey", "Marvin", "Charlie", "Jarrod", "Davis", "Mavis", "Jervin",
              "Garvey", "Carlos", "Jasper", "Jarvik", "Artie", "Janice", "Chavez", "Parvez", "Jay", "Jarmo"]
NEAR_TAILS = ["pass me the salt.", "are you coming?", "look at this.", "what time is it?", "did you feed the cat?",
              "turn that down please.", "we're leaving in five minutes.", "have you seen my keys?",
              "come and help me.", "dinner is ready."]
NEAR_WORDS = ["The harvest was late this year.", "The service was slow but friendly.", "Pass the jar of jam.",
              "Hard work pays off.", "Her car is in the garage.", "A nervous start to the match.",
              "Our viscous oil needs changing.", "Jarring noises came from the kitchen.", "Are we nervous? Hardly.",
              "Marvellous, absolutely marvellous.", "Hey, is this yours?", "Hey there, how are you?",
              "Hey, just a second.", "Hey, Jess, are you there?", "Hey, jazz music is on the radio."]
SUBJECTS = ["My sister", "The neighbour", "Our dog", "The kids", "Grandma", "The plumber", "My boss", "The teacher",
            "Everyone at work", "The baker down the road", "Our landlord", "The new intern", "Tom", "Anna",
            "The football team", "The delivery driver"]
VERBS = ["said that", "told me that", "thinks that", "forgot that", "was surprised that", "complained that",
         "mentioned that", "is sure that", "heard that", "asked whether"]
CLAUSES = ["the train was late again", "it will rain all weekend", "the shop closes at six", "the soup needs salt",
           "the heating is broken", "the match starts at eight", "we should paint the fence", "prices went up",
           "the garden looks lovely", "the meeting was cancelled", "the cat knocked over a glass",
           "the bread is still warm", "the bus route has changed", "the film was far too long",
           "tomorrow is a holiday", "the printer is out of ink", "the river flooded last spring",
           "the library has new books", "the car needs new tyres", "the concert sold out"]
READ = [
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "The old man sat by the window and watched the boats come into the harbour.",
    "Add two cups of flour, a pinch of salt and a spoon of sugar, then stir slowly.",
    "The committee will review the proposal at its next meeting in March.",
    "Temperatures will fall overnight, with frost likely in rural areas.",
    "Please remember to switch off the lights when you leave the office.",
    "The museum is open every day except Monday, from ten until five.",
    "She opened the letter, read it twice, and put it back in the envelope.",
    "Traffic is heavy on the ring road this morning because of roadworks.",
    "In the second half the visitors scored twice and won the game.",
    "Water the tomatoes every evening while the weather stays dry.",
    "The recipe calls for three eggs, but two will do in a pinch.",
    "Our flight was delayed by two hours, so we had lunch at the airport.",
    "He practised the piano every afternoon until his fingers ached.",
    "The shares closed slightly higher after a quiet day of trading.",
    "A light breeze moved the curtains and the room smelled of coffee.",
    "Scientists have found a new species of frog in the rainforest.",
    "The bridge will be closed for repairs from Friday night until Monday.",
    "Could you bring the washing in before it starts to rain?",
    "I think we need more milk, eggs and a loaf of bread.",
    "What would you like for dinner tonight, pasta or soup?",
    "The children built a snowman in the garden this morning.",
    "Don't forget your umbrella, it's going to pour later.",
    "Let's watch the news and then go to bed early.",
    "Turn left at the church and the house is on the right.",
    "The battery is low, so plug the phone in when you get home.",
    "Did you hear the thunder last night? It woke the baby.",
    "We are going to the seaside on Saturday if the weather holds.",
    "My favourite season is autumn, when the leaves turn red and gold.",
    "The team celebrated after finishing the project two weeks early.",
]
REPLIES = [  # what the assistant itself says (played back through its speaker)
    "Turning on the kitchen light.", "The living room light is now off.", "It is twenty past seven.",
    "Today is Tuesday, the fourth of March.", "Timer set for ten minutes.", "Your timer is done.",
    "The temperature in the bedroom is twenty one degrees.", "Sorry, I didn't catch that.",
    "I set the thermostat to nineteen degrees.", "Okay, cancelled.", "The front door is locked.",
    "Paris is the capital of France.", "There are five minutes left on your pasta timer.",
    "Which light do you mean, the kitchen or the hallway?", "Done. The fan is on.",
]


def household_text(rng: np.random.Generator, n: int) -> list[str]:
    """At least ``n`` varied sentences: every near miss and read text, then generated gossip up to ``n``."""
    out = list(READ) + list(NEAR_WORDS)
    for name in NAMES_NEAR:
        out.append(f"Hey {name}, {NEAR_TAILS[int(rng.integers(len(NEAR_TAILS)))]}")
        out.append(f"{name}, {NEAR_TAILS[int(rng.integers(len(NEAR_TAILS)))]}")
    while len(out) < n:
        out.append(f"{SUBJECTS[int(rng.integers(len(SUBJECTS)))]} {VERBS[int(rng.integers(len(VERBS)))]} "
                   f"{CLAUSES[int(rng.integers(len(CLAUSES)))]}.")
    for t in out:
        assert not any(w in t.lower() for w in WAKE_WORDS), t
    return out


# ------------------------------------------------------------------------------------------------ voices

ESPEAK = [("en-us", 150), ("en-us", 185), ("en", 140), ("en-gb-x-rp", 160), ("en-gb-scotland", 150),
          ("en-029", 150), ("en-us+f3", 165), ("en-us+f2", 140), ("en+m7", 140), ("en+f4", 175),
          ("en-gb-x-gbclan", 150), ("en-gb-x-gbcwmd", 160), ("en-us+m3", 200), ("en+klatt", 150)]
PIPER = [(1.0, 0.667), (0.85, 0.667), (1.2, 0.8), (1.0, 0.4), (1.35, 0.667), (0.9, 0.9)]  # length, noise scale


@dataclass
class Clip:
    kind: str  # read | near | reply | real
    source: str
    audio: np.ndarray


def _key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:14]


def espeak(text: str, voice: str, speed: int, pool: Path) -> np.ndarray:
    path = pool / f"e-{_key(text, voice, speed)}.wav"
    if not path.exists():
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", tmp.name, text], check=True,
                           capture_output=True)
            write_wav(path, read_wav(tmp.name))
    return read_wav(path)


class Piper:
    def __init__(self, models_dir: Path) -> None:
        from piper import PiperVoice

        from edge_agent.models import ModelStore

        self.voice = PiperVoice.load(str(ModelStore(models_dir).require("piper_joe_medium")))

    def say(self, text: str, length: float, noise: float, pool: Path | None) -> np.ndarray:
        """``text`` at 16 kHz, cached in ``pool`` by its words and settings (the same rendering every time); with
        no pool a fresh one (Piper samples its voice's variation at random)."""
        path = None if pool is None else pool / f"p-{_key(text, length, noise)}.wav"
        if path is not None and path.exists():
            return read_wav(path)
        from piper.config import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length, noise_scale=noise)
        audio = np.concatenate([c.audio_int16_array for c in self.voice.synthesize(text, cfg)])
        audio = resample(audio, self.voice.config.sample_rate, SAMPLE_RATE)
        if path is not None:
            write_wav(path, audio)
        return audio


def real_recordings() -> list[Clip]:
    clips = []
    for p in sorted((PS_DATA / "librivox").glob("*.wav")) + sorted((PS_DATA / "cards").glob("*.wav")):
        clips.append(Clip("real", f"pocketsphinx:{p.parent.name}/{p.name}", read_wav(p)))
    for p in sorted(PS_DATA.glob("*.raw")) + sorted((PS_DATA / "tidigits").rglob("*.raw")):
        raw = np.fromfile(p, dtype="<i2")
        if len(raw) > SAMPLE_RATE // 2:
            clips.append(Clip("real", f"pocketsphinx:{p.relative_to(PS_DATA)}", raw.astype(np.int16)))
    return clips


def make_pool(out: Path, rng: np.random.Generator, models_dir: Path, n_sentences: int, log) -> list[Clip]:
    pool = out / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    texts = household_text(rng, n_sentences)
    clips = real_recordings()
    log(f"pool: {len(clips)} real recordings ({sum(len(c.audio) for c in clips) / SAMPLE_RATE / 60:.1f} min)")
    piper = Piper(models_dir)
    t0 = time.monotonic()
    for i, text in enumerate(texts):
        kind = "near" if any(n in text for n in NAMES_NEAR) or text in NEAR_WORDS else "read"
        ev, sp = ESPEAK[i % len(ESPEAK)]
        clips.append(Clip(kind, f"espeak:{ev}@{sp}", espeak(text, ev, sp, pool)))
        if i % 2 == 0 or kind == "near":  # Piper is the slower voice: every near miss, half the rest
            length, noise = PIPER[i % len(PIPER)]
            clips.append(Clip(kind, f"piper:joe@{length}/{noise}", piper.say(text, length, noise, pool)))
        if i % 50 == 49:
            log(f"pool: {i + 1}/{len(texts)} sentences, {time.monotonic() - t0:.0f} s")
    for j, text in enumerate(REPLIES):
        length, noise = PIPER[j % len(PIPER)]
        clips.append(Clip("reply", "piper:joe(reply)", piper.say(text, length, noise, pool)))
    log(f"pool: {len(clips)} clips, {sum(len(c.audio) for c in clips) / SAMPLE_RATE / 60:.1f} min of speech")
    return clips


# ------------------------------------------------------------------------------------------------ backgrounds


def noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    w = rng.standard_normal(n)
    if color == "white":
        x = w
    else:
        spec = np.fft.rfft(w)
        f = np.arange(len(spec), dtype=float)
        f[0] = 1.0
        spec /= np.sqrt(f) if color == "pink" else f  # pink 1/f power, brown 1/f^2
        x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def music(rng: np.random.Generator, n: int) -> np.ndarray:
    """Synthetic music: a chord progression with harmonics, a melody and percussion, in a random key and tempo."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(70, 150)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    prog = rng.choice([0, 3, 5, 7, 8, 10], size=4)
    bar = 4 * beat
    for k in range(int(n / SAMPLE_RATE / bar) + 1):
        a, b = int(k * bar * SAMPLE_RATE), min(n, int((k + 1) * bar * SAMPLE_RATE))
        if a >= n:
            break
        tt = t[a:b] - t[a]
        env = np.exp(-tt * 0.8)
        base = root * 2 ** (prog[k % 4] / 12)
        for iv in (0, 4, 7):
            f = base * 2 ** (iv / 12)
            for h in (1, 2, 3):
                out[a:b] += env * np.sin(2 * np.pi * f * h * tt) / h
        step = beat / 2
        for m in range(int(bar / step)):
            c, d = a + int(m * step * SAMPLE_RATE), min(b, a + int((m + 1) * step * SAMPLE_RATE))
            if c >= d:
                continue
            f = base * 2 ** (rng.choice([0, 2, 4, 7, 9, 12]) / 12) * 2
            tm = t[c:d] - t[c]
            out[c:d] += 0.8 * np.exp(-tm * 4) * np.sin(2 * np.pi * f * tm) * (1 + 0.3 * np.sin(2 * np.pi * 5 * tm))
            if m % 2 == 0:  # kick / hat
                out[c:d] += 1.2 * np.exp(-tm * 30) * np.sin(2 * np.pi * 55 * tm)
            else:
                out[c:d] += 0.3 * np.exp(-tm * 60) * rng.standard_normal(d - c)
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9)


# ------------------------------------------------------------------------------------------------ composing

SCENES = [  # (scene, weight)
    ("read_clean", 3), ("conversation", 3), ("near_miss", 2), ("replies", 1), ("speech_noise", 3),
    ("tv", 3), ("music", 1), ("noise", 1), ("babble", 1), ("quiet", 1),
]


def speech_track(rng: np.random.Generator, clips: list[Clip], seconds: float, kinds: tuple[str, ...],
                 gap: tuple[float, float]) -> tuple[np.ndarray, list[str]]:
    """Clips of the given kinds one after another (speed-varied by resampling), with pauses between."""
    pick = [c for c in clips if c.kind in kinds]
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    pos, used = int(rng.uniform(0, 0.5) * SAMPLE_RATE), []
    while pos < n:
        c = pick[int(rng.integers(len(pick)))]
        speed = float(rng.choice([0.92, 1.0, 1.0, 1.08]))
        a = c.audio.astype(np.float64)
        if speed != 1.0:
            a = resample(c.audio, int(SAMPLE_RATE * speed), SAMPLE_RATE).astype(np.float64)
        a *= 10 ** (rng.uniform(-6, 3) / 20) * 3000 / rms(a)
        end = min(n, pos + len(a))
        out[pos:end] += a[:end - pos]
        used.append(c.source)
        pos = end + int(rng.uniform(*gap) * SAMPLE_RATE)
    return out, used


def scene(rng: np.random.Generator, clips: list[Clip], name: str, seconds: float) -> tuple[np.ndarray, dict]:
    n = int(seconds * SAMPLE_RATE)
    info: dict = {"scene": name}
    if name == "read_clean":
        x, used = speech_track(rng, clips, seconds, ("read", "real"), (0.3, 1.5))
    elif name == "conversation":
        x, used = speech_track(rng, clips, seconds, ("read", "near", "real"), (0.1, 0.6))
    elif name == "near_miss":
        x, used = speech_track(rng, clips, seconds, ("near",), (0.4, 1.5))
    elif name == "replies":
        x, used = speech_track(rng, clips, seconds, ("reply", "read"), (0.5, 2.0))
    elif name in ("speech_noise", "tv", "babble"):
        x, used = speech_track(rng, clips, seconds, ("read", "near", "real", "reply"), (0.2, 1.2))
        if name == "speech_noise":
            color = str(rng.choice(["white", "pink", "brown"]))
            bg = noise(rng, n, color)
            info["background"] = f"{color} noise"
        elif name == "tv":
            bg = music(rng, n)
            info["background"] = "music"
        else:
            bg = np.zeros(n)
            for _ in range(4):
                b, _u = speech_track(rng, clips, seconds, ("read", "real"), (0.0, 0.3))
                bg += b
            bg /= rms(bg)
            info["background"] = "babble (4 voices)"
        snr = float(rng.choice([20, 10, 5, 0]))
        x = x + bg * rms(x) / 10 ** (snr / 20)
        info["snr_db"] = snr
    elif name == "music":
        x, used = music(rng, n) * 3000, []
    elif name == "noise":
        color = str(rng.choice(["white", "pink", "brown"]))
        x, used = noise(rng, n, color) * 10 ** (rng.uniform(-50, -25) / 20) * 32768, []
        info["background"] = f"{color} noise"
    else:  # quiet room: faint noise
        x, used = noise(rng, n, "pink") * 10 ** (-60 / 20) * 32768, []
    info["sources"] = sorted(set(used))
    return x, info


def make_set(out: Path, hours: float, seed: int, models_dir: Path, n_sentences: int = 160, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = make_pool(out, rng, models_dir, n_sentences, log)
    names, weights = zip(*SCENES, strict=True)
    p = np.array(weights, float) / sum(weights)
    files = []
    n_files = int(np.ceil(hours * 3600 / FILE_S))
    t0 = time.monotonic()
    for k in range(n_files):
        frng = np.random.default_rng([seed, k])  # each file on its own stream: reproducible file by file
        parts, segs, done = [], [], 0.0
        while done < FILE_S:
            length = min(FILE_S - done, float(frng.uniform(20, 60)))
            name = str(frng.choice(names, p=p))
            x, info = scene(frng, clips, name, length)
            info.update({"start_s": round(done, 2), "seconds": round(length, 2)})
            parts.append(x)
            segs.append(info)
            done += length
        audio = np.concatenate(parts)
        peak = np.max(np.abs(audio))
        if peak > 32000:
            audio *= 32000 / peak
        path = out / f"neg-{k:03d}.wav"
        write_wav(path, audio.astype(np.int16))
        files.append({"file": path.name, "seconds": round(len(audio) / SAMPLE_RATE, 2), "segments": segs})
        log(f"{path.name}: {len(segs)} scenes ({time.monotonic() - t0:.0f} s so far)")
    manifest = {"version": SET_VERSION, "seed": seed, "hours": round(sum(f["seconds"] for f in files) / 3600, 3),
                "sentences": n_sentences, "pool_clips": len(clips), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--sentences", type=int, default=160, help="distinct sentences synthesized for the pool")
    ap.add_argument("--models-dir", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    m = make_set(args.out, args.hours, args.seed, args.models_dir, args.sentences,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"{m['hours']} h in {len(m['files'])} files -> {args.out} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
