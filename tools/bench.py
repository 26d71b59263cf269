#!/usr/bin/env python3
"""Benchmarks on the real voice loop: ``tools/bench.py [--quick|--full] [--json OUT]`` (same as ``edge-agent bench``).

The logic lives in ``tools/edge_bench/`` (beside the runtime package, not in it); this is the script entry point.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the checkout's edge_agent, and edge_bench beside this script

from edge_bench import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
