"""Word error rate and ``finish()`` latency of an STT engine over recordings with reference transcripts.

    .venv/bin/python tools/wer.py                      # pocketsphinx librivox + cards, configured engine
    .venv/bin/python tools/wer.py --window 0 15 --repeat 3 --json
    .venv/bin/python tools/wer.py --engine vosk --model vosk_small_ko DIR

A directory is read either as a pocketsphinx test set (a ``transcription``/``*.transcription`` file whose lines are
``<s> words </s> (file_id)``) or as ``NAME.wav`` files each with a ``NAME.txt`` reference. ``--window`` compares
values of ``stt.whisper.encoder_window_s`` (0 = Whisper's full 30 s window). Latency is the median ``finish()``
time after a warm-up; WER is pooled over the words of all files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.audio import read_wav  # noqa: E402
from edge_agent.config import load_settings  # noqa: E402
from edge_agent.stt import WhisperEngine, make_engine, normalize_text, word_error_rate  # noqa: E402

PS_DATA = Path("/usr/share/pocketsphinx/test/data")
TRANSCRIPT_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()]+)\)\s*$")


def read_transcripts(directory: Path) -> list[tuple[Path, str]]:
    """(audio file, reference text) pairs for a directory (see the module docstring for the layouts)."""
    pairs: list[tuple[Path, str]] = []
    for tfile in sorted([*directory.glob("transcription"), *directory.glob("*.transcription")]):
        for line in tfile.read_text(encoding="utf-8").splitlines():
            m = TRANSCRIPT_LINE.match(line.strip())
            if not m:
                continue
            for ext in (".wav", ".raw"):
                audio = directory / (m.group("id") + ext)
                if audio.is_file():
                    pairs.append((audio, normalize_text(m.group("text"))))
                    break
    if not pairs:
        for wav in sorted(directory.glob("*.wav")):
            ref = wav.with_suffix(".txt")
            if ref.is_file():
                pairs.append((wav, normalize_text(ref.read_text(encoding="utf-8"))))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path, help="test set folders (default: pocketsphinx librivox and cards)")
    p.add_argument("-c", "--config", default=None)
    p.add_argument("--engine", choices=["whisper", "vosk"])
    p.add_argument("--model")
    p.add_argument("--window", type=float, nargs="*", help="stt.whisper.encoder_window_s values to compare")
    p.add_argument("--beam", type=int, help="override stt.whisper.beam_size")
    p.add_argument("--repeat", type=int, default=1, help="transcribe each file this many times (latency median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    settings = load_settings(args.config) if args.config else load_settings(
        Path(__file__).resolve().parent.parent / "config.yaml")
    dirs = args.dirs or [PS_DATA / "librivox", PS_DATA / "cards"]
    items = [(f, ref, read_wav(f)) for d in dirs for f, ref in read_transcripts(d)]
    windows: list[float | None] = list(args.window) if args.window else [None]
    report = []
    for window in windows:
        ws = settings.stt.whisper
        if window is not None:
            ws = dataclasses.replace(ws, encoder_window_s=window)
        if args.beam:
            ws = dataclasses.replace(ws, beam_size=args.beam)
        stt = dataclasses.replace(settings.stt, whisper=ws)
        engine = make_engine(stt, settings, engine=args.engine, model=args.model)
        engine.load()
        engine.warmup()
        rows, errors, words, latencies = [], 0.0, 0, []
        for f, ref, audio in items:
            times = []
            for _ in range(args.repeat):
                result = engine.transcribe(audio)
                times.append(result.compute_s)
            wer = word_error_rate(ref, result.text)
            n = len(ref.split())
            errors += wer * n
            words += n
            latencies.append(statistics.median(times))
            rows.append({"file": str(f), "audio_s": round(result.audio_s, 2), "ref": ref, "hyp": result.text,
                         "wer": round(wer, 3), "finish_s": round(statistics.median(times), 3)})
        summary = {"engine": engine.name, "encoder_window_s": ws.encoder_window_s if engine.name == "whisper" else None,
                   "beam_size": ws.beam_size, "load_s": round(engine.load_s or 0, 2), "files": len(rows),
                   "wer": round(errors / max(words, 1), 4), "finish_median_s": round(statistics.median(latencies), 3),
                   "finish_max_s": round(max(latencies), 3),
                   "fallbacks": engine.fallbacks if isinstance(engine, WhisperEngine) else None, "rows": rows}
        report.append(summary)
        if not args.json:
            for r in rows:
                print(f"  {Path(r['file']).name:<48} {r['audio_s']:5.2f}s finish {r['finish_s']:.3f}s "
                      f"WER {r['wer']:.2f}  {r['hyp']!r}")
            print(f"{engine.name} window={summary['encoder_window_s']} beam={ws.beam_size}: WER {summary['wer']:.3f} "
                  f"over {words} words, finish median {summary['finish_median_s']:.3f}s max "
                  f"{summary['finish_max_s']:.3f}s, full-window redos {summary['fallbacks']}")
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
