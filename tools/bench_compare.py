#!/usr/bin/env python3
"""Bench results side by side: ``tools/bench_compare.py THIS.json PI5.json PI4.json --markdown T.md --png P.png``.

The logic lives in ``tools/edge_bench/compare.py`` (pure: no models); ``tools/bench3.sh`` runs the three benches
(this machine, ``--cpu-budget pi5``, ``--cpu-budget pi4``) and then this.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the checkout's edge_agent, and edge_bench beside this script

from edge_bench.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
