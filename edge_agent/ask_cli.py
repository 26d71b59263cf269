"""``edge-agent ask TEXT``: the intents the brain would publish and what it would say (no audio, no MQTT)."""

from __future__ import annotations

import json
import time
from typing import Any

from .config import Settings
from .errors import EdgeAgentError


def cli_ask(args: Any, settings: Settings) -> int:
    """``edge-agent ask TEXT``: the intents the brain would publish and what it would say (no audio, no MQTT)."""
    from .brain import Brain

    t0 = time.monotonic()
    brain = Brain.from_settings(settings, home_file=getattr(args, "home", None), use_llm=not args.no_llm)
    if getattr(args, "llm_only", False):
        if brain.llm is None:
            raise EdgeAgentError("--llm-only and --no-llm exclude each other", fix="pass only one of them")
        brain.fast_path = False
    t_build = time.monotonic() - t0
    area = args.area or settings.site.area or None
    resp = brain.respond(args.text, area=area)
    reply = resp.wait()
    timings = {"build_s": round(t_build, 3), **resp.timings}
    if resp.t_first_token is not None:
        timings["ttft_s"] = round(resp.t_first_token - resp.t_start, 3)
    out = {"intents": [c.to_json() for c in resp.intents], "reply": reply, "used_llm": resp.used_llm,
           # every call the handler was given, also those that failed or wait for a yes (conformance counts these)
           "recognized": [r.call.to_json() for r in resp.results],
           "pending_confirmation": resp.pending.to_json() if resp.pending else None,
           "error": resp.error, "timings": timings}
    if args.json:
        print(json.dumps(out, ensure_ascii=False, default=str))
    else:
        for c in resp.intents:
            print(f"intent: {c.name} {json.dumps(c.slots, ensure_ascii=False)} -> {', '.join(c.entities) or '-'}")
        if resp.pending:
            print(f"waiting for a yes: {resp.pending.name} {json.dumps(resp.pending.slots)}")
        print(reply)
    return 0
