#!/usr/bin/env python3
"""Generate the benchmark's spoken request set (reproducible, from text): ``tools/make_bench_set.py [--quick]
[--out DIR] [--force]``. See ``tools/edge_bench/bench_set.py`` for what is in it; ``edge-agent bench`` calls the
same code (and reuses the files when they are already there)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the checkout's edge_agent, and edge_bench beside this script

from edge_bench.bench_set import DEFAULT_DIR, make_bench_set  # noqa: E402

from edge_agent.config import REPO_ROOT, load_settings  # noqa: E402
from edge_agent.errors import EdgeAgentError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"folder (default {DEFAULT_DIR})")
    ap.add_argument("--quick", action="store_true", help="the small subset used by `bench --quick`")
    ap.add_argument("--force", action="store_true", help="write every file again")
    ap.add_argument("--negative-minutes", type=float, help="minutes of negative audio the bench should make")
    ap.add_argument("-c", "--config", default=str(REPO_ROOT / "config.yaml"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        m = make_bench_set(load_settings(args.config), args.out, quick=args.quick, force=args.force,
                           negative_minutes=args.negative_minutes)
    except EdgeAgentError as e:
        print(f"error[{e.code}]: {e.message}" + (f"\nfix: {e.fix}" if e.fix else ""), file=sys.stderr)
        return 2
    kinds = {k: sum(r["kind"] == k for r in m["requests"]) for k in ("command", "question")}
    print(f"{len(m['requests'])} requests ({kinds['command']} commands, {kinds['question']} questions) from voices "
          f"{[v['name'] for v in m['voices']]} (dropped: {m['dropped_voices'] or 'none'}), "
          f"{len(m['negatives'])} negative clips, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
