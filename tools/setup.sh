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
LLAMA_VERSION="0.3.36"
# llama.cpp is compiled for the architecture, never for the CPU the build happens to run on (-march=native): a wheel
# built natively on an Intel Xeon with AMX dies with SIGILL on its first LLM call (llama.cpp's worker threads never
# ask the kernel for AMX tile state), and one built on AVX-512 hardware dies on a CPU without it. x86-64 gets the
# AVX2/FMA/F16C level (every x86-64 CPU since 2013-2015, Intel Haswell / AMD Excavator), AVX-512 and AMX off;
# aarch64 gets the Armv8.0-A baseline with NEON, which runs on a Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76). The
# variant names the wheel cache folder, so a wheel built with other flags is never picked up.
case "$(uname -m)" in
  x86_64|amd64)
    LLAMA_VARIANT="x86_64-avx2"
    LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  aarch64|arm64)
    LLAMA_VARIANT="aarch64-armv8.0"
    LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a" ;;
  *)
    LLAMA_VARIANT="$(uname -m)-generic"
    LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" ;;
esac
LLAMA_CMAKE_ARGS="${EDGE_AGENT_LLAMA_CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}"
WHEELS="$CACHE/wheels/$LLAMA_VARIANT"
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
stamp_want="$( (cat requirements.lock pyproject.toml; echo "$LLAMA_CMAKE_ARGS") | sha256sum | cut -c1-16)"
stamp_have="$(cat .venv/.edge-agent-setup 2>/dev/null || true)"
if [ "$stamp_want" != "$stamp_have" ]; then
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    say "compiling llama-cpp-python $LLAMA_VERSION once for $LLAMA_VARIANT (about 7 minutes on 2 cores; cached in $WHEELS)"
    # --no-cache-dir: pip keys its cache of built wheels by the source alone, not by CMAKE_ARGS, so it would hand back
    # a wheel built earlier with other flags (a native one, say) instead of compiling this variant
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "${PIP[@]}" wheel --no-cache-dir --no-deps --no-binary llama-cpp-python -w "$WHEELS" \
      "llama-cpp-python==$LLAMA_VERSION"
  fi
  say "installing pinned Python packages"
  "${PIP[@]}" install --find-links "$WHEELS" -r requirements.lock
  # openwakeword's metadata demands tflite-runtime (no wheels past Python 3.11); we run it on ONNX Runtime.
  "${PIP[@]}" install --no-deps openwakeword==0.5.1
  "${PIP[@]}" install --no-deps -e .
  echo "$stamp_want" > .venv/.edge-agent-setup
else
  say "Python packages up to date"
fi
# The test tools (pytest, and the real servers the tests start on loopback) only where the suite runs.
if [ "$MODE" = test ]; then
  test_want="$(cat requirements-test.txt | sha256sum | cut -c1-16)"
  if [ "$test_want" != "$(cat .venv/.edge-agent-test-setup 2>/dev/null || true)" ]; then
    say "installing the test tools (requirements-test.txt)"
    "${PIP[@]}" install -r requirements-test.txt
    echo "$test_want" > .venv/.edge-agent-test-setup
  fi
fi

# ---------------------------------------------------------------------------------------------- models
say "models (default profile)"
.venv/bin/edge-agent models fetch
if [ "$MODE" = test ]; then
  # models the tests use beyond the default profile: the Vosk model installable without internet
  .venv/bin/edge-agent models fetch vosk_small_ko
fi

# A wheel from the cache is trusted only once it has run here: one LLM call in a subprocess (a build that uses an
# instruction this CPU or kernel refuses dies with SIGILL there, and the message names the feature and the fix).
GGUF="$(.venv/bin/python -c 'from edge_agent.config import load_settings; from edge_agent.models import ModelStore, resolve
s = load_settings(); print(resolve(s.llm.model, ModelStore(s.models_path), "llm"))' 2>/dev/null || true)"
if [ -n "$GGUF" ] && [ -f "$GGUF" ]; then
  smoke_stamp="$stamp_want-$(sha256sum "$GGUF" | cut -c1-16 2>/dev/null)-$(uname -m)-$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo | sha256sum | cut -c1-8)"
  if [ "$(cat .venv/.edge-agent-llm-ok 2>/dev/null)" != "$smoke_stamp" ]; then
    say "checking that llama.cpp runs on this CPU"
    if .venv/bin/python -m edge_agent.cpu "$GGUF"; then
      echo "$smoke_stamp" > .venv/.edge-agent-llm-ok
    else
      rm -f .venv/.edge-agent-setup   # the next run reinstalls once the wheel is rebuilt
      exit 3
    fi
  fi
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
