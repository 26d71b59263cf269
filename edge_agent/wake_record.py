"""``edge-agent wake enroll --record NAME ...``: enrollment from the microphone, with spoken prompts.

For each member named (several in one session, in the order given) the device speaks a prompt through the configured
output ("Anna, say 'hey Jarvis' now.") ``--takes`` times, then asks for about 10 s of other speech. Each answer is
recorded from the configured microphone through the product's input edge (``audio_io.MicSource``), cut by Silero VAD
(the utterance with ``PAD_S`` on each side), checked (``check_take``: nothing heard, too short or long, too quiet,
clipped) and asked again when bad (at most ``--retries`` times). The wake model is run over every wake take: a take
it never fires on is still used (the verifier learns the voice from its most wake-like frames), and the terminal says
so. The takes are written as WAV files (``--keep DIR``, default beside the verifier) and the usual enrollment
(``wake_enroll.enroll``) runs on them.

The pure parts: ``check_take`` (the take rules, in numbers) and ``Script`` (which prompt comes next, retries). The
audio I/O is at the edge: ``Prompter`` (Piper + ``Speaker``, or the terminal when there is no speaker) and
``TakeRecorder`` (``MicSource`` + ``SileroVad`` + ``Segmenter``). Nothing is written until every take is in: the
takes go to a hidden folder that is renamed to ``--keep`` at the end; a timeout or Ctrl-C removes it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import SAMPLE_RATE, write_wav
from .errors import AudioError, ConfigError

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

PAD_S = 0.3  # audio kept before the speech start and after the speech end of a take
CLIP_LEVEL = 32000  # |sample| at or above this counts as clipped (int16 full scale is 32767)


# --------------------------------------------------------------------------------------------------- take rules


@dataclass(frozen=True)
class TakeRules:
    """What a good take is, per kind (``wake``: the wake phrase alone; ``other``: anything else)."""

    wake_min_s: float = 0.4  # voiced span: "hey jarvis" said fast is ~0.5 s
    wake_max_s: float = 3.0  # longer: a sentence, not the phrase alone (or the room was noisy)
    other_min_s: float = 3.0  # one take of other speech; takes add up to ``other_target_s``
    quiet_dbfs: float = -40.0  # RMS of the voiced span below this: too quiet (or too far)
    clip_fraction: float = 0.001  # more samples than this fraction at the rails: clipped (too loud / too close)


@dataclass(frozen=True)
class TakeCheck:
    ok: bool
    problems: tuple[str, ...]
    speech_s: float
    rms_dbfs: float
    clipped: float  # fraction of samples at the rails


RULES = TakeRules()


def rms_dbfs(audio: np.ndarray) -> float:
    if len(audio) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) / 32768.0
    return 20.0 * float(np.log10(max(rms, 1e-6)))


def check_take(audio: np.ndarray | None, speech_s: float, kind: str, rules: TakeRules = RULES, *,
               cut_short: bool = False) -> TakeCheck:
    """Judge one take: ``audio`` the cut take (None: nothing heard before the timeout), ``speech_s`` its voiced span
    as the VAD saw it, ``cut_short`` when the recording hit its length cap while the speaker was still talking."""
    if audio is None or len(audio) == 0:
        return TakeCheck(False, ("nothing heard",), 0.0, -120.0, 0.0)
    problems: list[str] = []
    level = rms_dbfs(audio)
    clipped = float(np.mean(np.abs(audio.astype(np.int32)) >= CLIP_LEVEL))
    if kind == "wake":
        if speech_s < rules.wake_min_s:
            problems.append(f"too short ({speech_s:.1f} s of speech; the wake phrase takes at least "
                            f"{rules.wake_min_s:.1f} s)")
        if cut_short or speech_s > rules.wake_max_s:
            problems.append(f"too long ({speech_s:.1f} s of speech): say only the wake phrase, then pause")
    elif speech_s < rules.other_min_s:
        problems.append(f"too short ({speech_s:.1f} s of speech; keep talking for at least {rules.other_min_s:.0f} s)")
    if level < rules.quiet_dbfs:
        problems.append(f"too quiet ({level:.0f} dBFS; at least {rules.quiet_dbfs:.0f}): speak up or come closer")
    if clipped > rules.clip_fraction:
        problems.append(f"clipped ({clipped:.1%} of samples at full scale): speak softer or step back")
    return TakeCheck(not problems, tuple(problems), speech_s, level, clipped)


# --------------------------------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Step:
    member: str
    kind: str  # "wake" or "other"
    index: int  # 1-based take number of this kind for this member
    attempt: int  # 1-based try of this take
    text: str  # what the device says


@dataclass
class Script:
    """The session as a state machine: which prompt comes next, given how the previous take went. Pure."""

    members: list[str]
    phrase: str
    takes: int = 4
    other_target_s: float = 10.0
    retries: int = 2  # extra tries of one take after a bad one
    max_other_takes: int = 4
    _m: int = 0
    _kind: str = "wake"
    _index: int = 1
    _attempt: int = 1
    _other_s: float = 0.0
    _other_takes: int = 0
    _last_problem: str = ""
    failed: str | None = None  # why the session gave up (a take still bad after its retries)
    done: bool = False

    def current(self) -> Step | None:
        if self.done or self.failed:
            return None
        name = self.members[self._m]
        if self._kind == "wake":
            lead = f"{name}, say '{self.phrase}' now." if self._index == 1 and self._attempt == 1 \
                else f"Say '{self.phrase}' again." if self._attempt == 1 \
                else f"Once more: {self._last_problem}. Say '{self.phrase}' now."
        else:
            lead = ("Now say a few sentences of anything else, for about ten seconds." if self._other_takes == 0
                    and self._attempt == 1 else
                    f"Once more: {self._last_problem}. Say a few sentences of anything else." if self._attempt > 1
                    else "Please keep talking: a few more sentences of anything.")
        return Step(name, self._kind, self._index, self._attempt, lead)

    def took(self, check: TakeCheck) -> None:
        """Advance by the result of the current step's take."""
        step = self.current()
        assert step is not None, "the script is over"
        if not check.ok:
            self._last_problem = check.problems[0].split(" (")[0]
            if self._attempt > self.retries:
                self.failed = (f"{step.member}: {step.kind} take {step.index} was still bad after "
                               f"{self._attempt} tries: {'; '.join(check.problems)}")
                return
            self._attempt += 1
            return
        self._attempt = 1
        if self._kind == "wake":
            if self._index < self.takes:
                self._index += 1
                return
            self._kind, self._index = "other", 1
            return
        self._other_s += check.speech_s
        self._other_takes += 1
        if self._other_s >= self.other_target_s - 0.5 or self._other_takes >= self.max_other_takes:
            self._next_member()
        else:
            self._index += 1

    def _next_member(self) -> None:
        self._m += 1
        self._kind, self._index, self._attempt, self._other_s, self._other_takes = "wake", 1, 1, 0.0, 0
        if self._m >= len(self.members):
            self.done = True


def phrase_of(model: str, spec_phrase: str = "") -> str:
    """The spoken wake phrase: the model's own when it says it, else its name ('hey_jarvis_v2' -> 'hey Jarvis')."""
    if spec_phrase:
        return spec_phrase
    words = re.sub(r"_v\d+(\.\d+)*$", "", Path(model).stem).replace("_", " ").split()
    return " ".join(w if i == 0 else w.capitalize() for i, w in enumerate(words)) or model


# --------------------------------------------------------------------------------------------------- the edges


class Prompter:
    """Says a prompt through Piper and the product's ``Speaker`` on the configured output; without a speaker (or when
    it fails), prints it to the terminal instead. Every prompt is also printed."""

    def __init__(self, settings: Settings, say: Callable[[str], None], *, speak: bool = True) -> None:
        self.say = say
        self.speaker: Any = None
        self.tts: Any = None
        self.reason = ""
        if not speak:
            self.reason = "--no-speak"
            return
        from .audio_io import find_device

        try:
            find_device(settings.audio.output_device, "output")
        except AudioError as e:
            self.reason = f"no speaker: {e.message}"
            return
        from .speaker import Speaker
        from .tts import make_tts

        self.tts = make_tts(settings)
        self.tts.load()
        try:
            self.speaker = Speaker(self.tts.sample_rate, device=settings.audio.output_device)
            self.speaker.start()
        except AudioError as e:
            self.reason = f"the speaker did not open: {e.message}"
            self.speaker = None

    @property
    def spoken(self) -> bool:
        return self.speaker is not None

    def prompt(self, text: str, timeout: float = 30.0) -> None:
        self.say(f"prompt: {text}")
        if self.speaker is None:
            return
        from .speaker import Segment

        audio = np.concatenate(list(self.tts.synthesize(text)))
        seg = Segment(audio, self.tts.sample_rate, text)
        self.speaker.play(seg)
        if not seg.done.wait(timeout):
            raise AudioError("the speaker did not play the prompt", fix="check `edge-agent devices`")
        # the last block was handed to the device; wait for it to leave the loudspeaker before listening
        latency = float(getattr(self.speaker.stream, "latency", 0.0) or 0.0)
        time.sleep(min(latency, 0.5) + 0.05)

    def close(self) -> None:
        if self.speaker is not None:
            self.speaker.close()


@dataclass
class Take:
    audio: np.ndarray | None  # the cut take (None: nothing heard)
    speech_s: float = 0.0
    cut_short: bool = False
    events: list[str] = field(default_factory=list)


class TakeRecorder:
    """Records one utterance at a time from the configured microphone (``MicSource``: the real sounddevice path),
    cut by the VAD: from ``PAD_S`` before the speech start to ``PAD_S`` after its end."""

    def __init__(self, settings: Settings) -> None:
        from .audio_io import MicSource
        from .vad import SileroVad

        self.settings = settings
        self.vad = SileroVad.from_settings(settings)
        self.mic = MicSource(settings.audio)
        self.mic.open()

    def take(self, *, timeout_s: float, max_s: float, trailing_silence_s: float,
             on_ready: Callable[[], None] = lambda: None) -> Take:
        from .vad import VAD_FRAME_S, Segmenter

        vs = dataclasses.replace(self.settings.vad, no_speech_timeout_s=timeout_s, max_utterance_s=max_s,
                                 trailing_silence_s=trailing_silence_s)
        seg = Segmenter(vs)
        self.vad.reset()
        self.mic.queue.clear()  # what was heard while the prompt played is not the answer
        on_ready()
        got: list[np.ndarray] = []
        start = end = None
        cut_short = False
        deadline = time.monotonic() + timeout_s + max_s + 5.0
        while not seg.done:
            if time.monotonic() > deadline:
                raise AudioError("the microphone stopped delivering audio", fix="check `edge-agent devices`")
            chunk = self.mic.read(timeout=1.0)
            if chunk is None:
                if not self.mic.alive:
                    raise AudioError(f"the microphone stopped: {self.mic.error or 'stream ended'}",
                                     fix="check `edge-agent devices`")
                continue
            got.append(chunk.samples)
            for p in self.vad.process(chunk.samples):
                for ev in seg.process(VAD_FRAME_S, p >= vs.threshold):
                    if ev.kind == "speech_start":
                        start = ev.t
                    elif ev.kind == "endpoint":
                        end = ev.t
                    elif ev.kind == "max_length":
                        end, cut_short = ev.t, True
        if start is None or end is None:
            return Take(None)
        audio = np.concatenate(got)
        a = max(0, int((start - PAD_S) * SAMPLE_RATE))
        b = min(len(audio), int((end + PAD_S) * SAMPLE_RATE))
        return Take(audio[a:b].copy(), end - start, cut_short)

    def close(self) -> None:
        self.mic.close()


# --------------------------------------------------------------------------------------------------- the session


def record_session(script: Script, prompter: Prompter, recorder: TakeRecorder, folder: Path,
                   wake_score: Callable[[np.ndarray], float], cutoff: float, say: Callable[[str], None], *,
                   timeout_s: float = 8.0, rules: TakeRules = RULES) -> dict[str, dict[str, list[Path]]]:
    """Run the script: prompt, record, check, save each good take into ``folder/<member>/``. Returns per member
    ``{"wake": [...], "other": [...]}``. Raises ``AudioError`` when a take stays bad (silence included)."""
    out: dict[str, dict[str, list[Path]]] = {}
    while (step := script.current()) is not None:
        prompter.prompt(step.text)
        ready = lambda: say(f"listening ({step.member}, {step.kind} take {step.index}, try {step.attempt}) ...")  # noqa: E731,B023
        if step.kind == "wake":
            t = recorder.take(timeout_s=timeout_s, max_s=rules.wake_max_s + 1.0, trailing_silence_s=0.6,
                              on_ready=ready)
        else:
            t = recorder.take(timeout_s=timeout_s, max_s=script.other_target_s + 5.0, trailing_silence_s=1.5,
                              on_ready=ready)
        check = check_take(t.audio, t.speech_s, step.kind, rules, cut_short=t.cut_short)
        if not check.ok:
            say(f"  not used: {'; '.join(check.problems)}")
            script.took(check)
            continue
        assert t.audio is not None
        files = out.setdefault(step.member, {"wake": [], "other": []})
        path = folder / step.member / f"{step.kind}-{len(files[step.kind]) + 1}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, t.audio)
        note = ""
        if step.kind == "wake":
            best = wake_score(t.audio)
            note = (f"; the wake model fired (score {best:.3f})" if best >= cutoff else
                    f"; the wake model did not fire on it (best score {best:.3f} < {cutoff:.3f}): still used, the "
                    "verifier learns the voice from its most wake-like frames")
        say(f"  ok: {check.speech_s:.1f} s of speech, {check.rms_dbfs:.0f} dBFS{note}")
        files[step.kind].append(path)
        script.took(check)
    if script.failed:
        silent = "nothing heard" in script.failed
        raise AudioError(script.failed + (f" (listened {timeout_s:.0f} s each time)" if silent else ""),
                         fix="check that the microphone hears the room (`edge-agent devices`, audio.input_device), "
                             "then enroll again" if silent else "enroll again, closer to the microphone and in a "
                             "quiet room")
    return out


def cli_record(args: Any, settings: Settings, ext: Any, say: Callable[[str], None]) -> list[Any]:
    """Record the members named by ``--record`` and return them as ``wake_enroll.Speaker``s, their takes kept in
    ``--keep`` (default beside the verifier). Nothing is left behind when it fails or is interrupted."""
    from .wake_enroll import MIN_WAKE_CLIPS, Extractor, Speaker, pad  # noqa: F401

    names = list(args.record)
    if len(set(names)) != len(names):
        raise ConfigError("--record names a member twice", fix="name each member once")
    if args.takes < MIN_WAKE_CLIPS:
        raise ConfigError(f"--takes {args.takes}: at least {MIN_WAKE_CLIPS} wake takes per member are needed")
    keep = Path(args.keep).expanduser() if args.keep else args.keep_default
    if keep.exists() and any(keep.iterdir()):
        raise ConfigError(f"--keep {keep}: the folder exists and is not empty",
                          fix="pick a new folder for the takes (--keep DIR) or move the old one away")
    from .audio_io import find_device

    try:
        find_device(settings.audio.input_device, "input")  # no microphone: a clear error before Piper and the VAD load
    except AudioError as e:
        raise AudioError(f"--record needs a microphone: {e.message}",
                         fix="connect one (`edge-agent devices`, audio.input_device), or enroll from recordings: "
                             "--speaker NAME W1.wav W2.wav W3.wav --other-speech TALK.wav") from None
    prompter = Prompter(settings, say, speak=not args.no_speak)
    if not prompter.spoken:
        say(f"prompts are printed here, not spoken ({prompter.reason})")
    tmp = keep.with_name(f".{keep.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    recorder = None
    try:
        recorder = TakeRecorder(settings)
        phrase = phrase_of(ext.name, getattr(ext.spec, "phrase", ""))
        script = Script(names, phrase, takes=args.takes, other_target_s=args.other_seconds, retries=args.retries)

        def wake_score(audio: np.ndarray) -> float:
            scores, _ = ext.run(pad(audio), lambda i, t, s: False)
            return float(scores.max()) if len(scores) else 0.0

        takes = record_session(script, prompter, recorder, tmp, wake_score, ext.cutoff, say,
                               timeout_s=args.listen_timeout)
        prompter.prompt("Thank you. That is all.")
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            say("interrupted: no takes and no verifier written")
        raise
    finally:
        if recorder is not None:
            recorder.close()
        prompter.close()
    keep.parent.mkdir(parents=True, exist_ok=True)
    if keep.exists():
        keep.rmdir()  # empty (checked above)
    tmp.replace(keep)
    args.kept = keep
    say(f"takes saved in {keep}")
    return [Speaker(n, [keep / p.relative_to(tmp) for p in takes[n]["wake"]],
                    [keep / p.relative_to(tmp) for p in takes[n]["other"]]) for n in names]
