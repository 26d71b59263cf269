#!/usr/bin/env python3
"""Benchmarks on the real voice loop: ``tools/bench.py [--quick|--full] [--json OUT]`` (same as ``edge-agent bench``).

The logic lives in ``edge_agent/bench.py`` so the installed CLI has it too; this is the script entry point.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.bench import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
