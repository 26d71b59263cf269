"""``edge-agent say TEXT [-o OUT.wav] [--json]`` (``cli_say``): the configured TTS engine speaks the text to the
speaker, or writes it to a WAV file at the voice's rate, and reports the timings. The output device is checked before
the slow voice load (a missing one says to write a WAV file instead); on the speaker, sentences play gaplessly on one
stream while a worker thread synthesizes the next ones (``_play_stream``)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import resample, write_wav
from .errors import AudioError, TtsError
from .text import speakable
from .tts import make_tts

if TYPE_CHECKING:
    import argparse

    from .config import Settings

log = logging.getLogger("edge_agent.tts")  # the TTS log name, as before the split

NO_OUTPUT_FIX = 'write a WAV file instead: edge-agent say "TEXT" -o OUT.wav (or set audio.output_device to a ' \
                "speaker listed by `edge-agent devices`)"


def _output_device(settings: Settings) -> Any:
    """The configured (or default) output device, or an AudioError that says to write a WAV file instead."""
    dev = settings.audio.output_device
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library itself is missing
        raise AudioError(f"no audio output: PortAudio is not available ({e})", fix=NO_OUTPUT_FIX) from None
    try:
        info = sd.query_devices(dev, kind="output")
    except (sd.PortAudioError, ValueError) as e:
        what = "no default audio output device" if dev is None else f"audio.output_device {dev!r} is not usable"
        raise AudioError(f"{what} ({e})", fix=NO_OUTPUT_FIX) from None
    if int(info.get("max_output_channels", 0)) < 1:
        raise AudioError(f"audio device {info.get('name')!r} has no output channels", fix=NO_OUTPUT_FIX)
    return dev


def _play_stream(chunks: Iterator[np.ndarray], rate: int, device: Any) -> None:
    """Play sentences gaplessly on one output stream while a worker thread synthesizes the next ones.

    The worker only synthesizes and enqueues; this thread only writes to the device. Playback of sentence 1 thus
    overlaps synthesis of sentence 2, and the stream is opened once (no click or gap between sentences).
    """
    import queue

    import sounddevice as sd

    play_rate = rate
    try:
        sd.check_output_settings(device=device, samplerate=rate, channels=1, dtype="int16")
    except (sd.PortAudioError, ValueError):
        play_rate = int(sd.query_devices(device, kind="output")["default_samplerate"])
        log.debug("output device does not take %d Hz; resampling to %d Hz", rate, play_rate)
    todo: queue.Queue[np.ndarray | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                todo.put(resample(chunk, rate, play_rate))
        except BaseException as e:  # handed to the playing thread, which raises it
            todo.put(e)
        finally:
            todo.put(None)

    worker = threading.Thread(target=produce, name="tts-synth", daemon=True)
    worker.start()
    try:
        with sd.OutputStream(samplerate=play_rate, channels=1, dtype="int16", device=device) as out:
            while (item := todo.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                out.write(item.reshape(-1, 1))
    except sd.PortAudioError as e:
        raise AudioError(f"playback failed ({e})", fix=NO_OUTPUT_FIX) from None
    finally:
        stop.set()
        worker.join(timeout=5.0)


def cli_say(args: argparse.Namespace, settings: Settings) -> int:
    """``edge-agent say TEXT [-o OUT.wav] [--json]``: speak to the speaker, or write a WAV at the voice's rate."""
    text = args.text or ""
    if not text.strip():
        raise TtsError("nothing to say: the text is empty",
                       fix='pass the words to speak: edge-agent say "Hello there."')
    if not speakable(text):
        raise TtsError(f"nothing to say: {text!r} has no speakable words (markup, JSON and symbols are skipped)",
                       fix='pass plain words: edge-agent say "Hello there."')
    device = None if args.output else _output_device(settings)  # fail before the slow model load

    tts = make_tts(settings)
    tts.load()
    rate = tts.sample_rate
    t0 = time.monotonic()
    if args.output:
        chunks = list(tts.synthesize(text))
        audio = np.concatenate(chunks)
        try:
            write_wav(args.output, audio, rate)
        except OSError as e:
            raise AudioError(f"{args.output}: cannot write the WAV file ({e.strerror})",
                             fix="pick a writable path for -o") from None
        output: str = str(args.output)
    else:
        _play_stream(tts.synthesize(text), rate, device)
        output = "speaker"
    wall = time.monotonic() - t0
    st = tts.last_stats
    assert st is not None
    result = {
        "output": output,
        "engine": tts.name,
        "tts": tts.turn_record(),  # which backend spoke (a server's fallback says why)
        "sample_rate": rate,
        "duration_s": round(st.audio_s, 3),
        "synth_s": round(st.synth_s, 3),
        "first_audio_s": round(st.first_audio_s, 3),
        "rtf": round(st.rtf, 3),
        "sentences": st.chunks,
        "load_s": round(tts.load_s, 3),
        "wall_s": round(wall, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        where = f"wrote {output}" if args.output else "played"
        print(f"{where}: {st.audio_s:.2f} s of audio at {rate} Hz in {st.chunks} sentence(s); synthesized in "
              f"{st.synth_s:.2f} s (RTF {st.rtf:.2f}), first audio after {st.first_audio_s:.2f} s", file=sys.stderr)
    return 0
