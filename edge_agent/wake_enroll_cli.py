"""``edge-agent wake enroll``'s command line: its arguments (``enroll_parser``, ``--speaker`` and ``--other-speech``
kept in order), the members they name (``speakers_from``) and ``cli_enroll``, which checks the files, records the
``--record`` members (wake_record.py), runs ``wake_enroll.enroll`` and writes the verifier and its report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .wake_enroll import MIN_WAKE_CLIPS, Speaker, default_negatives, enroll, extractor_for, negative_chunks
from .wake_verifier import DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from .config import Settings


class _Ordered(argparse.Action):
    """Keeps ``--speaker`` and ``--other-speech`` in command-line order: other speech belongs to the speaker before."""

    def __call__(self, parser: Any, ns: Any, values: Any, option_string: str | None = None) -> None:
        items = list(getattr(ns, "items", None) or [])
        items.append((self.dest, list(values)))
        ns.items = items


def enroll_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent wake enroll",
                                description="Train a household verifier for a wake model from recordings of each "
                                            "member (WAV files, 16 kHz mono is best; others are converted).")
    p.add_argument("-c", "--config", help="config file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--model", help="wake model (a wake.models entry or manifest name; default: the first configured)")
    p.add_argument("--speaker", dest="speaker", nargs="+", action=_Ordered, metavar=("NAME", "WAKE.wav"),
                   help="a member's name, then their recordings of the wake phrase (at least 3); repeatable")
    p.add_argument("--other-speech", dest="other", nargs="+", action=_Ordered, metavar="WAV",
                   help="the member named before it saying other things (~10 s in all)")
    p.add_argument("--record", nargs="+", default=[], metavar="NAME",
                   help="record these members from the microphone, one after the other, with spoken prompts "
                        "(Piper on audio.output_device; printed when there is no speaker)")
    p.add_argument("--takes", type=int, default=4, help="--record: wake phrase takes per member (default 4: "
                   f"{MIN_WAKE_CLIPS} to train and 1 held back to check)")
    p.add_argument("--other-seconds", type=float, default=10.0,
                   help="--record: seconds of other speech per member (default 10)")
    p.add_argument("--retries", type=int, default=2, help="--record: tries of a bad take after the first (default 2)")
    p.add_argument("--listen-timeout", type=float, default=8.0,
                   help="--record: seconds to wait for speech after a prompt (default 8)")
    p.add_argument("--keep", type=Path, help="--record: folder for the takes (default: <verifier>.takes beside it); "
                   "must not exist or be empty")
    p.add_argument("--no-speak", action="store_true", help="--record: print the prompts instead of speaking them")
    p.add_argument("--impostors", nargs="+", type=Path, default=[], metavar="WAV",
                   help="people outside the household (guests, the TV) saying the wake phrase: taught as negatives, "
                        "so that only the members' voices wake it")
    p.add_argument("--negatives", type=Path, help="negative set folder (tools/make_negative_set.py; default "
                   f"{default_negatives()} when it exists) or WAV files' folder")
    p.add_argument("--negative-minutes", type=float, default=10.0, help="minutes of it to learn from (default 10)")
    p.add_argument("--out", type=Path, help="verifier file to write (default: <model>.verifier.json beside the config)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="verifier acceptance probability")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(items=[])
    return p


def speakers_from(items: list[tuple[str, list[str]]], recorded: int = 0) -> list[Speaker]:
    """``--speaker NAME WAV...`` / ``--other-speech WAV...`` items in command-line order -> speakers (``recorded``:
    how many members ``--record`` adds, so none given here is fine then)."""
    out: list[Speaker] = []
    for kind, values in items:
        if kind == "speaker":
            if len(values) < 2:
                raise ConfigError(f"--speaker {values[0]}: no recordings given",
                                  fix=f"--speaker {values[0]} WAKE1.wav WAKE2.wav WAKE3.wav ...")
            if any(s.name == values[0] for s in out):
                raise ConfigError(f"--speaker {values[0]} is given twice", fix="list all of a member's clips once")
            out.append(Speaker(values[0], [Path(v) for v in values[1:]]))
        else:
            if not out:
                raise ConfigError("--other-speech comes before any --speaker",
                                  fix="give --other-speech after the --speaker it belongs to")
            out[-1].other += [Path(v) for v in values]
    if not out and not recorded:
        raise ConfigError("no household member given",
                          fix="--speaker NAME WAKE1.wav WAKE2.wav WAKE3.wav ..., or --record NAME (the microphone)")
    for s in out:
        if len(s.wake) < MIN_WAKE_CLIPS:
            raise ConfigError(f"--speaker {s.name}: {len(s.wake)} wake clip(s); at least {MIN_WAKE_CLIPS} are needed",
                              fix=f"record {s.name} saying the wake phrase {MIN_WAKE_CLIPS} or more times")
    return out


def cli_enroll(args: argparse.Namespace, settings: Settings) -> int:
    if not 0.0 < args.threshold < 1.0:
        raise ConfigError(f"--threshold: {args.threshold} is out of range; allowed: between 0 and 1")
    speakers = speakers_from(args.items, recorded=len(args.record))
    clash = {sp.name for sp in speakers} & set(args.record)
    if clash:
        raise ConfigError(f"--record {sorted(clash)[0]} is also given with --speaker", fix="name each member once")
    for sp in speakers:
        for p in sp.wake + sp.other:
            if not Path(p).is_file():
                raise ConfigError(f"--speaker {sp.name}: {p} does not exist", fix="check the path of the recording")
    folder = args.negatives
    if folder is None and default_negatives().is_dir():
        folder = default_negatives()
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"--negatives {folder}: not a folder",
                          fix="make the set with `tools/make_negative_set.py --out DIR`")
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    if folder is None:
        say("no negative set (tools/make_negative_set.py): the verifier learns only from the members' other speech")
    ext = extractor_for(settings, args.model)
    for p in args.impostors:
        if not p.is_file():
            raise ConfigError(f"--impostors: {p} does not exist", fix="check the path of the recording")
    out = args.out or _default_out(args, ext.name)
    if args.record:
        from .wake_record import cli_record

        args.keep_default = out.with_name(out.name.removesuffix(".json") + ".takes")
        speakers += cli_record(args, settings, ext, say)
    verifier, report = enroll(ext, speakers, negative_chunks(folder, args.negative_minutes), impostors=args.impostors,
                              threshold=args.threshold, log=say)
    verifier.save(out)
    report["out"] = str(out)
    if args.record:
        report["takes"] = str(args.kept)
    entry = next((i for i, m in enumerate(settings.wake.models) if m.model == (args.model or ext.name)), 0)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {out} (trained on {report['trained_on']['positive_frames']} wake frames, "
              f"{report['trained_on']['negative_frames']} negative frames)")
        print(f"use it: set wake.models[{entry}].verifier: {out}")
    return 0


def _default_out(args: argparse.Namespace, name: str) -> Path:
    from .cli import default_config_path

    cfg = Path(args.config) if args.config else default_config_path()
    base = cfg.resolve().parent if cfg else Path.cwd()
    return base / f"{name}.verifier.json"
