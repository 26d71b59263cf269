#!/usr/bin/env bash
# The benchmark in three columns: this machine, a simulated Pi 5 and a simulated Pi 4, then the side-by-side table
# and the stacked-stage picture.
#
#   tools/bench3.sh [--out DIR] [--png FILE] [BENCH OPTIONS...]
#   tools/bench3.sh --full                                   # the final run: docs/bench-stages.png + DIR/three-columns.md
#   tools/bench3.sh --out /tmp/b3 --png /tmp/b3/stages.png --quick --requests 6 --skip wake,negatives,idle,wer,cli
#
# Runs `edge-agent bench BENCH OPTIONS` three times, one after the other: as it is, with --cpu-budget pi5 and with
# --cpu-budget pi4 (a cgroup CPU quota: needs root, docs/pi-calibration.md). Each run's JSON and markdown are kept in
# DIR (default ~/.cache/edge-agent/bench3/<UTC time>, outside the checkout); then tools/bench_compare.py writes DIR/three-columns.md and the
# PNG (default docs/bench-stages.png).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT="$HOME/.cache/edge-agent/bench3/$(date -u +%Y%m%d-%H%M)"
PNG="$ROOT/docs/bench-stages.png"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --png) PNG="$2"; shift 2 ;;
        --cpu-budget|--cpu-budget=*|--json|--json=*|--markdown|--markdown=*)
            echo "error: $1 is set by tools/bench3.sh for each column" >&2
            echo "fix: leave it out (the three runs are: none, pi5, pi4; their files go to --out DIR)" >&2
            exit 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "error: the simulated Pi columns need a cgroup CPU quota, which needs root" >&2
    echo "fix: run it as root (sudo tools/bench3.sh ...); docs/pi-calibration.md says what else works" >&2
    exit 2
fi
mkdir -p "$OUT"

run() {  # NAME [--cpu-budget X]
    local name="$1"; shift
    echo "== $name: $(uptime)" >&2
    "$PY" "$ROOT/tools/bench.py" "${ARGS[@]}" "$@" --json "$OUT/$name.json" --markdown "$OUT/$name.md" \
        > "$OUT/$name.out"
}
run this-machine
run pi5 --cpu-budget pi5
run pi4 --cpu-budget pi4
echo "== done: $(uptime)" >&2
"$PY" "$ROOT/tools/bench_compare.py" "$OUT/this-machine.json" "$OUT/pi5.json" "$OUT/pi4.json" \
    --markdown "$OUT/three-columns.md" --png "$PNG"
echo "wrote $OUT/three-columns.md and $PNG" >&2
