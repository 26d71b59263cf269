#!/usr/bin/env bash
# Remove the edge-agent systemd service installed by tools/install-service.sh. Run as root; safe to re-run.
#
#   sudo tools/uninstall-service.sh            stop, disable and remove the unit (code, config, state and user stay)
#   sudo tools/uninstall-service.sh --purge    also remove the user edge-agent, the prefix (/opt/edge-agent, with its
#                                              .venv and models), /etc/edge-agent and /var/lib/edge-agent (outbox,
#                                              turn log)
#
# Options: --prefix DIR (default /opt/edge-agent), --root DIR (staging root, no userdel/systemctl), --dry-run.
set -euo pipefail

PROG=uninstall-service
# shellcheck source=tools/service-common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/service-common.sh"
PURGE=0

while [ $# -gt 0 ]; do
  common_opt "$@"
  if [ "$TAKEN" -gt 0 ]; then shift "$TAKEN"; continue; fi
  case "$1" in
    --purge) PURGE=1; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
check_paths

DEST="$ROOT$PREFIX"
UNIT="$ROOT/etc/systemd/system/$UNIT_NAME"

if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  say "stopping and disabling $UNIT_NAME"
  run systemctl disable --now "$UNIT_NAME" 2>/dev/null || true   # not loaded: nothing to stop
fi
if [ -e "$UNIT" ]; then
  say "removing $UNIT"
  run rm -f "$UNIT"
  # A drop-in made with `systemctl edit edge-agent` belongs to this unit only.
  [ -d "$UNIT.d" ] && run rm -rf "$UNIT.d"
else
  say "$UNIT: not installed"
fi
if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
  run systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
fi

if [ "$PURGE" = 0 ]; then
  say "kept $DEST, $ROOT$ETC_DIR, $ROOT$STATE_DIR and the user (remove them with --purge)"
  exit 0
fi

# rm -rf only what is recognisably ours: the prefix must hold edge-agent's code.
if [ -d "$DEST" ]; then
  if [ -f "$DEST/edge_agent/__init__.py" ] && grep -q '^name = "edge-agent"' "$DEST/pyproject.toml" 2>/dev/null; then
    say "removing $DEST"
    run rm -rf "$DEST"
  else
    echo "uninstall-service: $DEST does not look like an edge-agent install (no edge_agent/ and pyproject.toml):" \
      "left in place" >&2
  fi
fi
for d in "$ROOT$ETC_DIR" "$ROOT$STATE_DIR"; do
  if [ -e "$d" ]; then say "removing $d"; run rm -rf "$d"; fi
done
# StateDirectory= may have left a private copy when DynamicUser was ever used; harmless if absent.
[ -e "$ROOT/var/lib/private/edge-agent" ] && run rm -rf "$ROOT/var/lib/private/edge-agent"
if [ "$LIVE" = 1 ] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
  say "removing user $SERVICE_USER"
  run userdel "$SERVICE_USER"
  getent group "$SERVICE_USER" >/dev/null && run groupdel "$SERVICE_USER" 2>/dev/null || true
fi
say "edge-agent removed"
