#!/usr/bin/env bash
# Install edge-agent as a systemd service (Raspberry Pi OS / Debian). Run as root from a checkout; safe to re-run
# (an upgrade is: pull, then run this again).
#
#   sudo tools/install-service.sh                  copy to /opt/edge-agent, build .venv + fetch models, start
#   sudo tools/install-service.sh --no-start       everything, and enable at boot, but do not (re)start now
#   tools/install-service.sh --root DIR --skip-setup --no-start     lay the files out under DIR (tests, images)
#
# Options:
#   --prefix DIR    where the code, .venv and models go (default /opt/edge-agent; absolute)
#   --root DIR      staging root: every path is prefixed with DIR; no useradd, chown or systemctl (needs --skip-setup:
#                   a virtual environment only works at the path it was built for)
#   --skip-setup    do not run tools/setup.sh in the prefix (the .venv and models are already there)
#   --no-start      enable the unit but do not (re)start it now
#   --dry-run       print what would be done, change nothing
#
# What it does, each step skipped when already done:
#   1. system user "edge-agent" (no login, home /var/lib/edge-agent, supplementary group audio)
#   2. copies this repository to the prefix (without .venv, state/, .git and caches; models are copied, never deleted)
#   3. runs tools/setup.sh there: system packages, .venv, pinned packages, default models (verified)
#   4. /etc/edge-agent/config.yaml from the repository's config.yaml, ONLY if absent (a user's config is never
#      overwritten), with models_dir in the prefix and every writable path under /var/lib/edge-agent
#   5. /etc/systemd/system/edge-agent.service (ExecStart adjusted to the prefix), daemon-reload, enable, restart
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG=install-service
# shellcheck source=tools/service-common.sh
. "$SRC/tools/service-common.sh"
SKIP_SETUP=0
NO_START=0

while [ $# -gt 0 ]; do
  common_opt "$@"
  if [ "$TAKEN" -gt 0 ]; then shift "$TAKEN"; continue; fi
  case "$1" in
    --skip-setup) SKIP_SETUP=1; shift ;;
    --no-start) NO_START=1; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ -n "$ROOT" ] && [ "$SKIP_SETUP" = 0 ]; then
  die "--root needs --skip-setup: a .venv built under $ROOT$PREFIX would not work at $PREFIX"
fi
check_paths

DEST="$ROOT$PREFIX"
ETC="$ROOT$ETC_DIR"
STATE="$ROOT$STATE_DIR"
UNIT="$ROOT/etc/systemd/system/$UNIT_NAME"

# install_if_changed TMPFILE TARGET MODE: replace TARGET only when its content differs (keeps mtimes on re-runs).
install_if_changed() {
  local tmp="$1" target="$2" mode="$3"
  if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
    say "$target: unchanged"
    rm -f "$tmp"
    return 0
  fi
  say "$target: $([ -f "$target" ] && echo updated || echo installed)"
  if [ "$DRY" = 1 ]; then rm -f "$tmp"; return 0; fi
  mkdir -p "$(dirname "$target")"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$target"
}

# ---------------------------------------------------------------------------------------------- 1. user
if [ "$LIVE" = 1 ]; then
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER exists"
    id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx audio || run usermod -aG audio "$SERVICE_USER"
  else
    say "creating system user $SERVICE_USER"
    getent group audio >/dev/null || run groupadd --system audio
    run useradd --system --user-group --groups audio --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-agent voice assistant" "$SERVICE_USER"
  fi
else
  say "staging root $ROOT: not creating user $SERVICE_USER"
fi

# ---------------------------------------------------------------------------------------------- 2. code
# Excluded: the source's virtual environment (not relocatable), runtime state, VCS data and caches. Models are
# copied so that a checkout that already fetched them needs no second download; in the destination they are never
# deleted (setup may have fetched more than the source has). Files end up owned by root and not writable by others:
# the service must not be able to change its own code.
TOP_EXCLUDES=(.venv state .git build dist)
ANY_EXCLUDES=(__pycache__ .pytest_cache .mypy_cache .ruff_cache '*.pyc' '*.part' '*.egg-info')
if [ "$(cd "$SRC" && pwd -P)" = "$( (cd "$DEST" 2>/dev/null && pwd -P) || true)" ]; then
  say "$DEST is this checkout: nothing to copy"
elif command -v rsync >/dev/null && [ -z "${EDGE_AGENT_NO_RSYNC:-}" ]; then
  say "copying $SRC -> $DEST (rsync)"
  args=(-rlpt --delete --no-owner --no-group --chmod=go-w --filter='protect /models/*/')
  for e in "${TOP_EXCLUDES[@]}"; do args+=(--exclude="/$e"); done
  for e in "${ANY_EXCLUDES[@]}"; do args+=(--exclude="$e"); done
  run mkdir -p "$DEST"
  run rsync "${args[@]}" "$SRC/" "$DEST/"
else
  # No rsync (a minimal image): tar keeps modes and mtimes, so a second run leaves the same bytes and times. Files
  # deleted from the source stay behind in the destination until --purge (harmless: nothing imports them).
  say "copying $SRC -> $DEST (tar; with rsync, files deleted upstream would be removed too)"
  args=()
  for e in "${TOP_EXCLUDES[@]}"; do args+=(--exclude="./$e"); done
  for e in "${ANY_EXCLUDES[@]}"; do args+=(--exclude="$e"); done
  if [ "$DRY" = 1 ]; then
    run tar -C "$SRC" "${args[@]}" -cf - . "| tar -C $DEST -xf -"
  else
    mkdir -p "$DEST"
    tar -C "$SRC" "${args[@]}" -cf - . | tar -C "$DEST" --no-same-owner -xf -
    chmod -R go-w "$DEST"
  fi
fi

# ---------------------------------------------------------------------------------------------- 3. venv + models
if [ "$SKIP_SETUP" = 1 ]; then
  say "skipping tools/setup.sh (--skip-setup)"
else
  if [ ! -e "$DEST/.venv" ]; then
    py="$(readlink -f "$(command -v "${PYTHON:-python3}" || echo "${PYTHON:-python3}")")"
    case "$py" in
      /home/*|/root/*|/run/user/*)
        msg="${PYTHON:-python3} is $py, inside a home directory the service cannot reach (ProtectHome=yes): run this installer with PYTHON=/usr/bin/python3 (the system Python)"
        [ "$DRY" = 1 ] && echo "    (dry run) would stop here: $msg" >&2 || die "$msg" ;;
    esac
  fi
  say "building $DEST/.venv and fetching the default models (tools/setup.sh)"
  run "$DEST/tools/setup.sh" setup
fi
if [ -x "$DEST/.venv/bin/python" ] || [ -L "$DEST/.venv/bin/python" ]; then
  # A venv only links to its base interpreter. One under a home directory (pyenv, conda, ~/.local) is invisible to
  # the service (ProtectHome=yes) and usually unreadable for its user: refuse now rather than fail at every start.
  base="$(readlink -f "$DEST/.venv/bin/python")"
  case "$base" in
    /home/*|/root/*|/run/user/*)
      die "$DEST/.venv is built on $base, inside a home directory the service cannot reach (ProtectHome=yes):" \
          "rm -rf $DEST/.venv, then run this installer again with PYTHON=/usr/bin/python3 (the system Python)" ;;
  esac
  # /opt is read-only to the service: compile the bytecode once now (the unit sets PYTHONDONTWRITEBYTECODE).
  run "$DEST/.venv/bin/python" -m compileall -q "$DEST/edge_agent" >/dev/null
fi

# ---------------------------------------------------------------------------------------------- 4. config
# Relative paths in config.yaml resolve against the code directory, which the service cannot write: point models_dir
# at the prefix explicitly and every writable path at the state directory.
if [ -f "$ETC/config.yaml" ]; then
  say "$ETC/config.yaml exists: kept as it is (never overwritten)"
else
  [ -f "$SRC/config.yaml" ] || die "$SRC/config.yaml is missing"
  tmp="$(mktemp)"
  sed -E \
    -e "s#^models_dir:.*#models_dir: $PREFIX/models#" \
    -e "s#^(  outbox_dir:).*#\\1 $STATE_DIR/outbox#" \
    -e "s#^(  turn_log:).*#\\1 $STATE_DIR/turns.jsonl#" \
    -e "s#^(  prefix_cache_dir:).*#\\1 $STATE_DIR/llm_prefix#" \
    -e "s#^(  timers_file:).*#\\1 $STATE_DIR/timers.json#" \
    "$SRC/config.yaml" > "$tmp"
  for want in "models_dir: $PREFIX/models" "outbox_dir: $STATE_DIR/outbox" "turn_log: $STATE_DIR/turns.jsonl" \
              "prefix_cache_dir: $STATE_DIR/llm_prefix" "timers_file: $STATE_DIR/timers.json"; do
    grep -q "^ *$want\$" "$tmp" || { rm -f "$tmp"; die "config.yaml has no '${want%%:*}:' line to rewrite"; }
  done
  # Anything else still relative to the read-only code directory would fail only at run time: refuse now.
  if grep -nE '^ *[a-z_]+: *(state|\./)' "$tmp" >&2; then
    rm -f "$tmp"; die "config.yaml has other writable paths relative to the code directory (above): add them here"
  fi
  { echo "# edge-agent service configuration, written by tools/install-service.sh from $PREFIX/config.yaml."
    echo "# Yours to edit: re-running the installer never overwrites it. Check it with:"
    echo "#   $PREFIX/.venv/bin/edge-agent -c $ETC_DIR/config.yaml check"
    cat "$tmp"; } > "$tmp.new"
  rm -f "$tmp"
  install_if_changed "$tmp.new" "$ETC/config.yaml" 0640
fi
run mkdir -p "$STATE"
if [ "$LIVE" = 1 ]; then
  # The config may hold the MQTT password: readable by root and the service only.
  run chown root:"$SERVICE_USER" "$ETC" "$ETC/config.yaml"
  run chmod 0750 "$ETC"
  run chown "$SERVICE_USER":"$SERVICE_USER" "$STATE"
  run chmod 0750 "$STATE"
fi

# ---------------------------------------------------------------------------------------------- 5. unit
tmp="$(mktemp)"
sed "s#/opt/edge-agent#$PREFIX#g" "$SRC/systemd/$UNIT_NAME" > "$tmp"
install_if_changed "$tmp" "$UNIT" 0644

# Before systemd tries: can the service user run the program, read the config and every model it names?
if [ "$LIVE" = 1 ] && [ "$DRY" = 0 ] && [ -x "$DEST/.venv/bin/edge-agent" ] && command -v runuser >/dev/null; then
  say "checking as user $SERVICE_USER: config and models (edge-agent config check)"
  if ! (cd / && runuser -u "$SERVICE_USER" -- "$DEST/.venv/bin/edge-agent" -c "$ETC_DIR/config.yaml" config check); then
    echo "install-service: the service user cannot use this install (above). Fix it, then re-run; the full" \
      "doctor: sudo -u $SERVICE_USER $DEST/.venv/bin/edge-agent -c $ETC_DIR/config.yaml check" >&2
    exit 1
  fi
fi

if [ "$LIVE" = 0 ]; then
  say "staging root: skipping systemctl (daemon-reload, enable, start)"
elif ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
  say "systemd is not running here: unit installed, start it with: systemctl enable --now edge-agent"
else
  run systemctl daemon-reload
  run systemctl enable "$UNIT_NAME"
  if [ "$NO_START" = 1 ]; then
    say "not starting (--no-start): systemctl start edge-agent"
  else
    # restart, not start: a re-run after an upgrade must load the new code. Type=notify: this waits for READY=1.
    say "starting edge-agent (waits until models are loaded and audio is open)"
    if ! run systemctl restart "$UNIT_NAME"; then
      echo "edge-agent did not start; see: journalctl -u edge-agent -n 50" >&2
      echo "and run the doctor: $PREFIX/.venv/bin/edge-agent -c $ETC_DIR/config.yaml check" >&2
      exit 1
    fi
    run systemctl --no-pager --lines=0 status "$UNIT_NAME" || true
  fi
fi
say "done. Config: $ETC_DIR/config.yaml; log: journalctl -u edge-agent -f; doctor: $PREFIX/.venv/bin/edge-agent -c $ETC_DIR/config.yaml check"
