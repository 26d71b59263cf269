"""Bench results side by side (``tools/bench_compare.py``; ``tools/bench3.sh`` runs the three benches first): this
machine, a simulated Pi 5 and a simulated Pi 4 (``edge-agent bench --cpu-budget pi5|pi4``), or any other runs.

From each result JSON of ``edge-agent bench --json`` it takes, for commands (the fast path) and LLM answers
separately: end of speech → endpoint, → final transcript, → intent published / first LLM token, → first reply audio
(median and p95, from ``e2e``), the CPU seconds of each stage per turn (medians of the turn log's ``stages``), and the
two sequential baselines run on the same requests (``baseline_summary``: the naive pipeline and the Home
Assistant-style chain) with the engine's speed-up over them. Writes a markdown table with one column per run and a
PNG of the stages stacked per run (``tools/pngplot.py``). Pure: no models, no engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tools/, for pngplot beside edge_bench
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pngplot  # noqa: E402

KINDS = (("fast", "commands (fast path)"), ("llm", "LLM answers"))
STAGE_ROWS = (  # (key in e2e stages, label for commands, label for LLM answers)
    ("endpoint", "endpoint", "endpoint"),
    ("transcript", "final transcript", "final transcript"),
    ("intent_or_token", "intent published", "first LLM token"),
    ("first_audio", "first reply audio", "first reply audio"),
)
CPU_ROWS = (  # (key in the turn log's stages, label, unit); medians over the turns that have it
    ("stt_speculation_cpu_s", "STT speculation at the first pause", "CPU s"),
    ("stt_final_cpu_s", "STT final transcript (waited for)", "CPU s"),
    ("brain_first_piece_cpu_s", "brain, to its first piece", "CPU s"),
    ("brain_cpu_s", "brain, whole answer (fast path or LLM)", "CPU s"),
    ("tts_first_cpu_s", "TTS, first sentence", "CPU s"),
    ("loop_cpu_per_audio_s", "loop thread (wake word, VAD, listener)", "CPU s per audio s"),
    ("llm_calls", "LLM calls per turn", ""),
    ("llm_uncached_tokens", "LLM uncached prompt tokens per turn", ""),
    ("llm_gen_tokens", "LLM generated tokens per turn", ""),
)
CHAIN_CPU_ROWS = (("stt_cpu_s", "whole transcript"), ("answer_cpu_s", "whole answer"), ("tts_cpu_s", "whole synthesis"))
BASELINES = (("naive", "naive sequential pipeline (the engine's endpoint wait)"),
             ("ha_chain", "Home Assistant-style chain (0.7 s of silence)"))
# the picture: one colour per stage, engine and chain alike
STAGE_COLORS = [(160, 160, 160), (31, 119, 180), (255, 127, 14), (44, 160, 44)]
LEGEND = ["end of speech -> endpoint (the silence wait)", "-> final transcript (chain: whole transcript)",
          "-> intent / first LLM token (chain: whole answer)", "-> first reply audio (chain: whole synthesis)"]


# --------------------------------------------------------------------------------------------------- reading


def load(path: Path) -> dict[str, Any]:
    res = json.loads(Path(path).read_text(encoding="utf-8"))
    res.setdefault("_path", str(path))
    return res


def column_label(res: dict[str, Any]) -> str:
    """``this machine`` or ``simulated Pi 5 (0.38 CPU)`` etc., from the run's ``cpu_budget``."""
    cb = res.get("cpu_budget")
    if not cb:
        return "this machine"
    spec = str(cb.get("spec", "")).lower()
    names = {"pi5": "Pi 5", "pi4": "Pi 4"}
    llm = (cb.get("stages") or {}).get("llm")
    own = f", LLM {llm['cpus']:g}" if llm else ""  # --stage-fit: the LLM under its own quota
    return f"simulated {names[spec]} ({cb['cpus']:g} CPU{own})" if spec in names else f"{cb.get('cpus', spec):g} CPU"


def short_label(res: dict[str, Any]) -> str:
    cb = res.get("cpu_budget")
    if not cb:
        return "this machine"
    spec = str(cb.get("spec", "")).lower()
    staged = "+LLM" if (cb.get("stages") or {}).get("llm") else ""
    return {"pi5": f"Pi 5{staged} (sim)", "pi4": f"Pi 4{staged} (sim)"}.get(spec, f"{cb.get('cpus', spec):g} CPU")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cpu_medians(res: dict[str, Any], kind: str) -> dict[str, tuple[float | None, int]]:
    """Median of each ``CPU_ROWS`` key over the run's turns of ``kind`` (fast = commands, llm = questions), with how
    many turns had it."""
    want = "command" if kind == "fast" else "question"
    stages = [((r.get("turn") or {}).get("stages") or {}) for r in res.get("rows", []) if r.get("kind") == want]
    out = {}
    for key, _, _ in CPU_ROWS:
        v = [float(s[key]) for s in stages if isinstance(s.get(key), int | float)]
        out[key] = (_median(v), len(v))
    return out


def stage(res: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
    return ((res.get("e2e") or {}).get(kind) or {}).get("stages", {}).get(key) or {}


def baseline(res: dict[str, Any], name: str, kind: str) -> dict[str, Any]:
    bs = res.get("baseline_summary") or {}
    return (bs.get(name) or {}).get(kind) or {} if isinstance(bs.get(name), dict) else {}


# --------------------------------------------------------------------------------------------------- markdown


def _ms(x: Any) -> str:
    return "–" if x is None else f"{x:.0f}"


def _pair(d: dict[str, Any]) -> str:
    return "–" if not d or d.get("median_ms") is None else f"{_ms(d['median_ms'])} / {_ms(d.get('p95_ms'))}"


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def markdown(runs: list[dict[str, Any]]) -> str:
    """One table, one column per run: stages (median / p95 ms), CPU per stage, both baselines and the speed-ups."""
    head = "| | " + " | ".join(column_label(r) for r in runs) + " |"
    sep = "|---|" + "---|" * len(runs)
    L = ["### End of speech → first reply audio: this machine and simulated Pi-class boards", "",
         "End of speech → each stage, ms, median / p95 (the engine, real time).", "", head, sep]

    def row(label: str, cells: list[str]) -> None:
        L.append(f"| {label} | " + " | ".join(cells) + " |")

    for kind, title in KINDS:
        ns = [stage(r, kind, "first_audio").get("n") for r in runs]
        row(f"**{title}** (turns)", [str(n) if n is not None else "–" for n in ns])
        for key, lab_fast, lab_llm in STAGE_ROWS:
            row(f"→ {lab_fast if kind == 'fast' else lab_llm}", [_pair(stage(r, kind, key)) for r in runs])
    L += ["", "CPU per turn, median (the turn log's `stages`: process CPU while each stage ran, its own threads "
              "and whatever else the process did meanwhile).", "", head, sep]
    for kind, title in KINDS:
        row(f"**{title}**", [""] * len(runs))
        meds = [cpu_medians(r, kind) for r in runs]
        for key, label, unit in CPU_ROWS:
            if all(m[key][1] == 0 for m in meds):
                continue
            row(f"{label}{f' ({unit})' if unit else ''}", [_num(m[key][0]) for m in meds])
    L += ["", "The same requests through two sequential baselines right after the engine answered them: end of "
              "speech → first reply audio, ms, median / p95; speed-up = the baseline's median / the engine's median "
              "on the same requests.", "", head, sep]
    for kind, title in KINDS:
        base = [baseline(r, "ha_chain", kind) or baseline(r, "naive", kind) for r in runs]
        row(f"**{title}** (requests)", [str(b.get("n", "–")) for b in base])
        row("streaming engine", [_pair(b.get("engine", {})) for b in base])
        for name, label in BASELINES:
            row(label, [_pair(baseline(r, name, kind).get("chain", {})) for r in runs])
        for name, label in BASELINES:
            row(f"speed-up over the {label.split(' (')[0].replace('Home Assistant', 'HA')}",
                [_ratio(baseline(r, name, kind).get("ratio_of_medians")) for r in runs])
        for name, label in BASELINES:
            parts = [baseline(r, name, kind).get("parts_median_ms") for r in runs]
            row(f"{label.split(' (')[0].replace('Home Assistant', 'HA')}: endpoint + transcript + answer + "
                "synthesis, medians", ["–" if not p else " + ".join(_ms(p.get(k)) for k in
                                                                     ("endpoint_s", "stt_s", "answer_s", "tts_s"))
                                       for p in parts])
            cpus = [baseline(r, name, kind).get("cpu_median_s") for r in runs]
            row(f"{label.split(' (')[0].replace('Home Assistant', 'HA')}: CPU s of transcript + answer + synthesis",
                ["–" if not c else " + ".join(_num(c.get(k)) for k, _ in CHAIN_CPU_ROWS) for c in cpus])
    row("**runs**", [""] * len(runs))
    row("run", [f"{r.get('mode', '?')}, {r.get('date', '?')}" for r in runs])
    row("load average at start → end", [f"{_load(r.get('load_start'))} → {_load(r.get('load_end'))}" for r in runs])
    row("CPU budget", [_budget(r) for r in runs])
    m = runs[0].get("machine") or {} if runs else {}
    L += ["", f"Machine: {m.get('cores', '?')} cores, {m.get('cpu_model', '?')}. A CPU budget is a cgroup quota "
              "entered after the models loaded (docs/pi-calibration.md): it imitates a board's throughput, not its "
              "memory system or SIMD width."]
    return "\n".join(L)


def _load(x: Any) -> str:
    return "–" if not x else "/".join(f"{v:.2f}" for v in x)


def _budget(res: dict[str, Any]) -> str:
    cb = res.get("cpu_budget")
    if not cb:
        return "none"
    thr = f", throttled {cb['throttled_periods']}/{cb['periods']} periods" if "periods" in cb else ""
    return f"{cb.get('cpus', '?'):g} CPU, quota {cb.get('quota_us')}/{cb.get('period_us')} µs{thr}"


# --------------------------------------------------------------------------------------------------- picture


@dataclasses.dataclass
class Bar:
    """One stacked bar: four stage segments in seconds (see ``LEGEND``) and the total it is labelled with."""

    group: str  # the run: "this machine", "Pi 5 (sim)", ...
    label: str  # "engine", "HA chain", "naive"
    segments: list[float]
    total_ms: float | None
    note: str = ""


def engine_segments(res: dict[str, Any], kind: str) -> list[float] | None:
    """The engine's stages as segments (s): differences of the cumulative stage medians (each at least the one
    before, so the bar ends at the median first audio)."""
    cum = [stage(res, kind, key).get("median_ms") for key, _, _ in STAGE_ROWS]
    if cum[-1] is None:
        return None
    out, prev = [], 0.0
    for c in cum:
        c = prev if c is None else max(prev, float(c))
        out.append((c - prev) / 1000)
        prev = c
    return out


def chain_segments(res: dict[str, Any], name: str, kind: str) -> list[float] | None:
    """A baseline's stage medians (s): endpoint wait, whole transcript, whole answer, whole synthesis."""
    p = baseline(res, name, kind).get("parts_median_ms")
    if not p:
        return None
    return [float(p.get(k) or 0.0) / 1000 for k in ("endpoint_s", "stt_s", "answer_s", "tts_s")]


def bars(runs: list[dict[str, Any]], kind: str, chains: tuple[str, ...] = ("naive", "ha_chain")) -> list[list[Bar]]:
    """Per run, its engine bar and a bar per baseline in ``chains`` that the run has."""
    out = []
    for r in runs:
        group = []
        seg = engine_segments(r, kind)
        if seg is not None:
            group.append(Bar(short_label(r), "engine", seg, stage(r, kind, "first_audio").get("median_ms")))
        for name in chains:
            cs = chain_segments(r, name, kind)
            if cs is None:
                continue
            b = baseline(r, name, kind)
            ratio = b.get("ratio_of_medians")
            group.append(Bar(short_label(r), "HA chain" if name == "ha_chain" else name, cs,
                             (b.get("chain") or {}).get("median_ms"),
                             f"×{ratio:.1f}" if ratio is not None else ""))
        if group:
            out.append(group)
    return out


def run_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per run for the picture's foot: its size, date and load."""
    out = []
    for r in runs:
        n = [stage(r, kind, "first_audio").get("n") or 0 for kind, _ in KINDS]
        load = r.get("load_start") or []
        out.append(f"{short_label(r)}: {r.get('mode', '?')} run, {n[0]} commands + {n[1]} LLM answers, "
                   f"{r.get('date', '?')}, load {load[0] if load else '?'}")
    return out


def nice_step(span: float, max_ticks: int = 8) -> float:
    """A tick step (1, 2, 2.5 or 5 times a power of ten) giving at most ``max_ticks`` ticks over ``span``."""
    span = max(span, 1e-6)
    mag = 10 ** int(f"{span:e}".split("e")[1])
    for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        if span / (m * mag) <= max_ticks:
            return m * mag
    return 10 * mag


SCALE = 2  # text scale: 10x14-pixel capitals
ROW_H, ROW_GAP, GROUP_GAP = 24, 6, 14
LEFT, RIGHT_PAD, WIDTH = 290, 210, 1200


def _panel_height(groups: list[list[Bar]]) -> int:
    n = sum(len(g) for g in groups)
    return 34 + n * (ROW_H + ROW_GAP) + max(0, len(groups) - 1) * GROUP_GAP + 50


def plot(runs: list[dict[str, Any]], path: Path, chains: tuple[str, ...] = ("naive", "ha_chain")) -> dict[str, Any]:
    """The stacked-stage picture: a panel for commands and one for LLM answers, each with its own seconds axis;
    per run the engine's bar and the baselines' bars. Returns the layout drawn (for tests and the caller)."""
    panels = [(title, bars(runs, kind, chains)) for kind, title in KINDS]
    panels = [(t, g) for t, g in panels if g]
    top, legend_h = 60, 24 * len(LEGEND) + 16 + 20 * len(runs) + 8
    height = top + sum(_panel_height(g) for _, g in panels) + legend_h
    img = pngplot.canvas(WIDTH, height)
    pngplot.text(img, 12, 10, "End of speech -> first reply audio, medians per stage (seconds)", scale=SCALE)
    pngplot.text(img, 12, 32, "Label: the median first audio (ms); ×N: a baseline's median / the engine's, same "
                              "requests", scale=SCALE)
    y = top
    layout: dict[str, Any] = {"width": WIDTH, "height": height, "panels": []}
    plot_w = WIDTH - LEFT - RIGHT_PAD
    for title, groups in panels:
        xmax = max(max(sum(b.segments), (b.total_ms or 0) / 1000) for g in groups for b in g) or 1.0
        step = nice_step(xmax)
        xmax = step * -(-xmax // step)
        pngplot.text(img, 12, y + 6, title, scale=SCALE)
        y0 = y + 34
        yy = y0
        drawn = []
        for gi, group in enumerate(groups):
            if gi:
                yy += GROUP_GAP
            g_h = len(group) * (ROW_H + ROW_GAP) - ROW_GAP
            pngplot.text(img, 12, yy + (g_h - 14) // 2, group[0].group, scale=SCALE)
            for b in group:
                pngplot.text(img, LEFT - 10 - pngplot.text_width(b.label, SCALE), yy + (ROW_H - 14) // 2, b.label,
                             scale=SCALE)
                x = float(LEFT)
                spans = []
                for k, s in enumerate(b.segments):
                    w = plot_w * s / xmax
                    pngplot.rect(img, x, yy, x + w, yy + ROW_H, STAGE_COLORS[k])
                    spans.append((round(x), round(x + w)))
                    x += w
                tag = f"{b.total_ms:.0f} ms" if b.total_ms is not None else ""
                if b.note:
                    tag += f"  {b.note}"
                pngplot.text(img, int(x) + 8, yy + (ROW_H - 14) // 2, tag, scale=SCALE)
                drawn.append({"label": b.label, "spans": spans, "y": yy})
                yy += ROW_H + ROW_GAP
        y_axis = yy + 2
        for i in range(int(round(xmax / step)) + 1):
            t = i * step
            xt = LEFT + plot_w * t / xmax
            pngplot.line(img, xt, y0 - 4, xt, y_axis, pngplot.GREY if i else pngplot.BLACK, 1)
            lab = f"{t:g}"
            pngplot.text(img, int(xt) - pngplot.text_width(lab, SCALE) // 2, y_axis + 6, lab, scale=SCALE)
        pngplot.line(img, LEFT, y_axis, LEFT + plot_w, y_axis, pngplot.BLACK, 2)
        pngplot.text(img, LEFT + plot_w // 2 - 180, y_axis + 26, "seconds from the end of speech", scale=SCALE)
        # redraw the bars over the grid lines
        for d in drawn:
            for k, (a, c) in enumerate(d["spans"]):
                pngplot.rect(img, a, d["y"], c, d["y"] + ROW_H, STAGE_COLORS[k])
        layout["panels"].append({"title": title, "xmax_s": xmax, "bars": drawn, "plot_x0": LEFT,
                                 "plot_w": plot_w})
        y += _panel_height(groups)
    for k, lab in enumerate(LEGEND):
        ly = y + 8 + 24 * k
        pngplot.rect(img, 12, ly, 40, ly + 16, STAGE_COLORS[k])
        pngplot.text(img, 50, ly + 1, lab, scale=SCALE)
    for k, line in enumerate(run_lines(runs)):  # what each column is: the picture says it, not only the docs
        pngplot.text(img, 12, y + 16 + 24 * len(LEGEND) + 20 * k, line, (90, 90, 90), scale=SCALE)
    pngplot.write_png(path, img)
    return layout


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/bench_compare.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="result JSONs of `edge-agent bench --json`, one per column "
                                                         "(e.g. this machine, --cpu-budget pi5, --cpu-budget pi4)")
    ap.add_argument("--markdown", type=Path, help="write the table here too (it is always printed)")
    ap.add_argument("--png", type=Path, help="write the stacked-stage picture here (e.g. docs/bench-stages.png)")
    ap.add_argument("--chains", default="naive,ha_chain",
                    help="baselines drawn beside the engine in the picture, comma-separated: ha_chain, naive "
                         "(default both; an empty string for the engine alone)")
    args = ap.parse_args(argv)
    try:
        runs = [load(p) for p in args.results]
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}\nfix: pass result files written by `edge-agent bench --json FILE`", file=sys.stderr)
        return 2
    md = markdown(runs)
    print(md)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md + "\n", encoding="utf-8")
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        plot(runs, args.png, tuple(c for c in args.chains.split(",") if c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
