# Shared by tools/install-service.sh and tools/uninstall-service.sh: sourced, never run on its own.
# Defaults, messages, the options both take (--prefix, --root, --dry-run, --help) and their checks.

PREFIX=/opt/edge-agent
ROOT=""
DRY=0
SERVICE_USER=edge-agent
STATE_DIR=/var/lib/edge-agent
ETC_DIR=/etc/edge-agent
UNIT_NAME=edge-agent.service

die() { echo "$PROG: $*" >&2; exit 2; }
say() { printf '==> %s\n' "$*" >&2; }
# The calling script's header comment, up to `set -euo`, is its help.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# run CMD...: execute, or print under --dry-run.
run() {
  if [ "$DRY" = 1 ]; then printf '    (dry run) %s\n' "$*" >&2; else "$@"; fi
}

# common_opt ARGS...: take one shared option from the front of ARGS. Sets TAKEN to the words it used, 0 when the
# first word is not a shared option (the script handles it, or calls it unknown).
common_opt() {
  TAKEN=1
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; TAKEN=2 ;;
    --prefix=*) PREFIX="${1#*=}" ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; TAKEN=2 ;;
    --root=*) ROOT="${1#*=}" ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage ;;
    *) TAKEN=0 ;;
  esac
}

# check_paths: PREFIX absolute, not /, no spaces or '#' (it goes into the unit file); ROOT normalized. Sets LIVE
# (1: no staging root, so users, ownership and systemd are touched) and then requires root unless --dry-run.
check_paths() {
  case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path, got '$PREFIX'" ;;
  esac
  PREFIX="${PREFIX%/}"
  [ -n "$PREFIX" ] || die "--prefix must not be /"
  case "$PREFIX" in *[[:space:]]*|*'#'*) die "--prefix must not contain spaces or '#': '$PREFIX'" ;; esac
  if [ -n "$ROOT" ]; then
    ROOT="$(realpath -m "$ROOT")"
    [ "$ROOT" != / ] || ROOT=""
  fi
  LIVE=0; [ -z "$ROOT" ] && LIVE=1
  if [ "$LIVE" = 1 ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0), or use --root DIR / --dry-run"
  fi
}
