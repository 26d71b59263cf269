#!/usr/bin/env bash
# Set up edge-agent on this machine, then run it or test it. Safe to re-run: every step is skipped when done.
#
#   tools/setup.sh run  [edge-agent run args]   set up, then start the assistant with config.yaml
#   tools/setup.sh test [pytest args]           set up (with test tools), then run the whole test suite
#   tools/setup.sh                              set up only
#
# Steps: Debian / Raspberry Pi OS packages (installed when we have the rights, else listed), the virtual environment
# in .venv/, pinned Python packages (llama-cpp-python is compiled once and its wheel cached in
# ~/.cache/edge-agent/wheels, so a second setup is quick), then the default models (verified by SHA-256).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-setup}"
[ $# -gt 0 ] && shift
case "$MODE" in run|test|setup) ;; *) echo "usage: tools/setup.sh [run|test|setup] [args]" >&2; exit 2 ;; esac

PYTHON="${PYTHON:-python3}"
CACHE="${EDGE_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent}"
WHEELS="$CACHE/wheels"
LLAMA_VERSION="0.3.36"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------- system packages
RUNTIME_PKGS=(libportaudio2 libgomp1 ca-certificates)
BUILD_PKGS=(build-essential cmake)            # llama-cpp-python is compiled from source
TEST_PKGS=(pulseaudio pulseaudio-utils libasound2-plugins mosquitto mosquitto-clients espeak-ng sox
           pocketsphinx-testdata systemd rsync)   # systemd: systemd-analyze verify of the unit
want=("${RUNTIME_PKGS[@]}" "${BUILD_PKGS[@]}")
[ "$MODE" = test ] && want+=("${TEST_PKGS[@]}")
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo";
  else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    say "missing system packages (no rights to install them here): ${missing[*]}"
    echo "    install them with: sudo apt-get install -y ${missing[*]}" >&2
  else
    say "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------------------------------------- Python
"$PYTHON" - <<'PY' || { echo "edge-agent needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 2; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp_want="$(cat requirements.lock requirements-test.txt pyproject.toml | sha256sum | cut -c1-16)"
stamp_have="$(cat .venv/.edge-agent-setup 2>/dev/null || true)"
if [ "$stamp_want" != "$stamp_have" ]; then
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    say "compiling llama-cpp-python $LLAMA_VERSION once (about 7 minutes on 2 cores; cached in $WHEELS)"
    "${PIP[@]}" wheel --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
  fi
  say "installing pinned Python packages"
  "${PIP[@]}" install --find-links "$WHEELS" -r requirements.lock
  # openwakeword's metadata demands tflite-runtime (no wheels past Python 3.11); we run it on ONNX Runtime.
  "${PIP[@]}" install --no-deps openwakeword==0.5.1
  "${PIP[@]}" install -r requirements-test.txt   # pytest: small, and lets a Pi run the suite too
  "${PIP[@]}" install --no-deps -e .
  echo "$stamp_want" > .venv/.edge-agent-setup
else
  say "Python packages up to date"
fi

# ---------------------------------------------------------------------------------------------- models
say "models (default profile)"
.venv/bin/edge-agent models fetch
if [ "$MODE" = test ]; then
  .venv/bin/edge-agent models fetch vosk_small_ko   # the Vosk model installable without internet, for its tests
fi

case "$MODE" in
  run)
    say "starting edge-agent (Ctrl-C to stop)"
    exec .venv/bin/edge-agent run "$@" ;;
  test)
    say "running the test suite"
    exec .venv/bin/python -m pytest "$@" ;;
  *)
    say "ready: .venv/bin/edge-agent --help" ;;
esac
