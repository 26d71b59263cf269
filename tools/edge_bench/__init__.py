"""Benchmarks on the real voice loop (``edge-agent bench``, ``tools/bench.py``) and their generated spoken request
set (``tools/make_bench_set.py``). They live beside the product, not in the runtime package ``edge_agent``: the
daemon never imports them. ``run.py`` holds the measurements and the report, ``bench_set.py`` the request set."""

from .run import main

__all__ = ["main"]
