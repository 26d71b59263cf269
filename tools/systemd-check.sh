#!/usr/bin/env bash
# Run the edge-agent service under a real systemd and check its contract with it, step by step (PASS/FAIL).
# Not part of CI: it builds a Debian bookworm root file system with debootstrap (Debian's packages, ~2 min the first
# time, reused after), boots it with systemd-nspawn, and runs tools/install-service.sh inside it, as a user would.
#
#   sudo tools/systemd-check.sh             build or reuse the container, install, check, power the container off
#   sudo tools/systemd-check.sh --keep      leave the container running afterwards (look around with the printed
#                                           nsenter command; run again to reuse it)
#   sudo tools/systemd-check.sh --rebuild   throw the root file system away and build it again
#   sudo tools/systemd-check.sh --hang=sigstop   test the watchdog with SIGSTOP even when the debug hook exists
#
# Environment: EDGE_AGENT_CHECK_DIR (root file system, default /var/lib/machines/edge-agent-check),
# EDGE_AGENT_CACHE (the host's wheel cache bound in so llama-cpp-python is not compiled twice; default
# ~/.cache/edge-agent).
#
# What it checks (the unit is systemd/edge-agent.service, unchanged apart from what the installer adjusts):
#   a) Type=notify: READY=1 only after the models are loaded (state "activating" while loading; the journal's
#      "models loaded" line comes before systemd's "Started"), then StatusText is the daemon's STATUS=
#   b) `systemctl status` shows the daemon's STATUS line
#   c) WatchdogSec=: a hung main loop is killed and restarted (NRestarts grows). With the engine's debug hook
#      (EDGE_AGENT_DEBUG_HANG=1 + SIGUSR1: the loop hangs, other threads live on) when the installed code has it;
#      otherwise SIGSTOP on the whole process stands in for it
#   d) Restart=on-failure after a crash (SIGSEGV) and after SIGKILL
#   e) `systemctl stop` within 5 s with a clean exit status. With the broker down, "Hey Jarvis. What time is it?"
#      (Piper's voice, played into the microphone) makes a real turn whose messages wait in the on-disk outbox; the
#      stop keeps them there. With the broker back they are delivered after the start, "offline" is published at
#      the stop, and the retained state is the daemon's current one (not the previous run's last state).
#
# How the container stands in for a Pi:
#   - The code is installed by tools/install-service.sh (PYTHON=/usr/bin/python3: the container's Debian Python 3.11,
#     as on Raspberry Pi OS) into /opt/edge-agent; the checkout is bound in read-only and copied, its models with it.
#     The host's .venv is not used: it is built on a Python under /root, which ProtectHome=yes hides from the
#     service (the installer refuses such a venv), and a venv does not move between paths anyway.
#   - Sound: no sound card here, so a PulseAudio owned by the service user (edge-agent-check-audio.service) offers a
#     null sink as the speaker and a sine-wave source as the microphone (paced by PulseAudio's clock, never digital
#     silence, so the microphone watchdog stays calm without a feeder process). The service reaches it through ALSA's
#     pulse plugin (PULSE_SERVER set by a drop-in), the way the unit's comments describe a PipeWire/PulseAudio
#     desktop. The unit's own sandbox is kept as it is.
#   - MQTT: a Mosquitto inside the container on a free loopback port (the container shares the host's network, so
#     the default 1883 could meet another broker); /etc/edge-agent/config.yaml gets that port.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${EDGE_AGENT_CHECK_DIR:-/var/lib/machines/edge-agent-check}"
MACHINE=edge-agent-check
RUN="/run/edge-agent-check"           # host side: the nspawn pid and console log
HOST_CACHE="${EDGE_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent}"
KEEP=0
REBUILD=0
HANG_MODE=auto
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    --rebuild) REBUILD=1 ;;
    --hang=sigstop|--hang=sigusr1|--hang=auto) HANG_MODE="${a#--hang=}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "systemd-check: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "systemd-check: run as root (debootstrap, systemd-nspawn, nsenter)" >&2; exit 2; }

T0=$(date +%s)
step() { printf '\n=== %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
indent() { sed 's/^/    | /'; }
RESULTS=()
pass() { RESULTS+=("PASS  $*"); printf '  PASS  %s\n' "$*"; }
fail() { RESULTS+=("FAIL  $*"); printf '  FAIL  %s\n' "$*"; }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# ---------------------------------------------------------------------------------------------- host tools
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  step "host: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

CT_PID=""
# ct CMD...: run in the container (all its namespaces, through its PID 1's), with a clean environment.
ct() {
  nsenter -t "$CT_PID" -a -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 SYSTEMD_PAGER= "$@"
}

# ---------------------------------------------------------------------------------------------- 1. root fs
ROOTFS_PKGS=(libportaudio2 libgomp1 pulseaudio pulseaudio-utils libasound2-plugins mosquitto mosquitto-clients
             rsync procps)
step "root file system $DIR"
if [ "$REBUILD" = 1 ] && [ -d "$DIR" ]; then
  if [ -f "$RUN/nspawn.pid" ] && kill -0 "$(cat "$RUN/nspawn.pid")" 2>/dev/null; then
    echo "systemd-check: the container is running (pid $(cat "$RUN/nspawn.pid")); stop it before --rebuild" >&2
    exit 2
  fi
  info "--rebuild: removing it"
  rm -rf --one-file-system "$DIR"
fi
if [ ! -f "$DIR/.edge-agent-check-rootfs" ]; then
  if [ ! -x "$DIR/usr/bin/python3" ]; then
    info "debootstrap bookworm (minbase + systemd, dbus, python3): a few minutes"
    mkdir -p "$(dirname "$DIR")"
    debootstrap --variant=minbase --include=systemd,dbus,python3,python3-venv,ca-certificates bookworm "$DIR" \
      > "$DIR.debootstrap.log" 2>&1 || { tail -20 "$DIR.debootstrap.log"; exit 1; }
  fi
  info "packages for the check: ${ROOTFS_PKGS[*]}"
  # Not booted yet: a plain nspawn (its own mount and pid namespaces, the host's network for apt).
  systemd-nspawn -q -D "$DIR" --register=no --keep-unit /bin/sh -c \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${ROOTFS_PKGS[*]} >/dev/null" \
    2>&1 | grep -v 'Attempted to remove disk file system' | tail -5 | indent
  # Debian's Mosquitto would listen on 1883 of the host's loopback (the network is shared): the check starts its own.
  ln -sf /dev/null "$DIR/etc/systemd/system/mosquitto.service"
  echo edge-agent-check > "$DIR/etc/hostname"
  date -u +%FT%TZ > "$DIR/.edge-agent-check-rootfs"
else
  info "reusing it (built $(cat "$DIR/.edge-agent-check-rootfs"); --rebuild to start afresh)"
fi

# pip inside the container must reach the package sources the host's pip reaches: the host's extra CA certificates
# (a proxy in the way signs with its own CA) and its pip configuration, with any local folders it names (wheel
# folders, file:// indexes) bound in read-only.
PIP_BINDS=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$DIR/usr/local/share/ca-certificates"
  cp -p /usr/local/share/ca-certificates/*.crt "$DIR/usr/local/share/ca-certificates/"
fi
for f in /etc/pip.conf "$HOME/.config/pip/pip.conf"; do
  [ -f "$f" ] || continue
  mkdir -p "$DIR$(dirname "$f")"
  cp -p "$f" "$DIR$f"
  # an index folder ".../simple" links to its files beside it: bind its parent
  for p in $(grep -oE '(file://)?/[^ ]+' "$f" | sed -E 's#^file://##; s#/simple/?$##'); do
    [ -d "$p" ] && PIP_BINDS+=("--bind-ro=$p")
  done
done

# Test fixtures (not part of the product), rewritten on every run.
mkdir -p "$DIR/etc/edge-agent-check"
cat > "$DIR/etc/systemd/system/edge-agent-check-audio.service" <<'EOF'
# systemd-check fixture: sound devices for the service user without a sound card. The "room" is a null sink whose
# monitor is the microphone: a quiet 440 Hz hum is looped into it all the time (a live microphone never delivers
# digital silence), and `paplay -d room speech.wav` speaks into it. The daemon's speaker is the null sink "spk".
[Unit]
Description=edge-agent check: PulseAudio (microphone room.monitor, speaker spk) for the edge-agent user
[Service]
User=edge-agent
Group=edge-agent
RuntimeDirectory=edge-agent-check-audio
RuntimeDirectoryMode=0755
Environment=HOME=/run/edge-agent-check-audio XDG_RUNTIME_DIR=/run/edge-agent-check-audio
Environment=PULSE_SERVER=unix:/run/edge-agent-check-audio/native
ExecStart=/usr/bin/pulseaudio --daemonize=no --exit-idle-time=-1 -n --use-pid-file=no \
  "--load=module-native-protocol-unix socket=/run/edge-agent-check-audio/native auth-anonymous=1" \
  "--load=module-null-sink sink_name=spk" \
  "--load=module-null-sink sink_name=room" \
  "--load=module-sine-source source_name=hum rate=16000 frequency=440" \
  "--load=module-loopback source=hum sink=room latency_msec=20"
ExecStartPost=/bin/sh -c 'for i in $$(seq 100); do pactl set-default-source room.monitor 2>/dev/null && break; sleep 0.1; done; pactl set-default-sink spk && pactl set-source-volume hum 3%%'
EOF
cat > "$DIR/etc/systemd/system/edge-agent-check-broker.service" <<'EOF'
# systemd-check fixture: an MQTT broker on a loopback port (/etc/edge-agent-check/mosquitto.conf).
[Unit]
Description=edge-agent check: Mosquitto
[Service]
ExecStart=/usr/sbin/mosquitto -c /etc/edge-agent-check/mosquitto.conf
EOF

# ---------------------------------------------------------------------------------------------- 2. boot
mkdir -p "$RUN"
step "booting the container (systemd-nspawn --boot)"
if [ -f "$RUN/nspawn.pid" ] && kill -0 "$(cat "$RUN/nspawn.pid")" 2>/dev/null; then
  info "already running (nspawn pid $(cat "$RUN/nspawn.pid")): reusing it"
else
  [ -d "$HOST_CACHE" ] || mkdir -p "$HOST_CACHE"
  # The checkout read-only (the installer copies it); the host's wheel cache so llama-cpp-python is built once.
  systemd-nspawn -D "$DIR" --boot --register=no --keep-unit --machine="$MACHINE" \
    --bind-ro="$SRC:/mnt/edge-agent-src" --bind="$HOST_CACHE:/root/.cache/edge-agent" "${PIP_BINDS[@]}" \
    > "$RUN/console.log" 2>&1 < /dev/null &
  echo $! > "$RUN/nspawn.pid"
fi
NSPAWN_PID="$(cat "$RUN/nspawn.pid")"
# nspawn's first child is short-lived; the container's PID 1 is the child whose command is systemd.
for _ in $(seq 150); do
  CT_PID="$(pgrep -P "$NSPAWN_PID" -x systemd | head -1 || true)"
  [ -n "$CT_PID" ] && break
  sleep 0.2
done
[ -n "$CT_PID" ] || { echo "systemd-check: the container did not start:" >&2; tail -20 "$RUN/console.log" >&2; exit 1; }
state=""
for _ in $(seq 120); do
  state="$(ct systemctl is-system-running 2>/dev/null || true)"
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
info "container PID 1 is host pid $CT_PID; systemd $(ct systemctl --version | head -1 | cut -d' ' -f2); system: $state"
info "inside: nsenter -t $CT_PID -a systemctl status edge-agent"
[ "$state" = degraded ] && ct systemctl --failed --no-legend | indent
check "container boots to a running systemd (is-system-running: $state)" test "$state" = running -o "$state" = degraded
ct update-ca-certificates >/dev/null 2>&1 || true

cleanup() {
  if [ "$KEEP" = 1 ]; then
    info "--keep: the container stays up (nspawn pid $NSPAWN_PID); power it off with: nsenter -t $CT_PID -a systemctl poweroff"
    return
  fi
  ct systemctl poweroff >/dev/null 2>&1 || true
  for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$NSPAWN_PID" 2>/dev/null && kill "$NSPAWN_PID" 2>/dev/null
  rm -f "$RUN/nspawn.pid"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------- 3. install
step "tools/install-service.sh inside the container (PYTHON=/usr/bin/python3, --no-start)"
if ! ls "$HOST_CACHE"/wheels/*/llama_cpp_python-*.whl >/dev/null 2>&1; then
  info "no llama-cpp-python wheel in $HOST_CACHE: setup will compile it (about 7 minutes on 2 cores)"
fi
if command -v git >/dev/null && git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  info "installing the working tree of $SRC: commit $(git -C "$SRC" log -1 --format=%h)," \
    "$(git -C "$SRC" status --porcelain --untracked-files=no | wc -l) tracked file(s) modified"
fi
t=$(date +%s)
if ! ct /usr/bin/env PYTHON=/usr/bin/python3 /mnt/edge-agent-src/tools/install-service.sh --no-start \
    > "$RUN/install.log" 2>&1; then
  tail -30 "$RUN/install.log" | indent
  fail "install-service.sh (log: $RUN/install.log)"
  exit 1
fi
grep -E '^==>' "$RUN/install.log" | sed 's/\x1b\[[0-9;]*m//g' | indent
pass "install-service.sh ($(( $(date +%s) - t )) s)"

PORT="$(ct /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" \
  > "$DIR/etc/edge-agent-check/mosquitto.conf"
# The user's config is kept by the installer; only the broker port is the check's.
ct sed -i -E "/^mqtt:/,/^[a-z]/ s/^(  port:).*/\\1 $PORT/" /etc/edge-agent/config.yaml
mkdir -p "$DIR/etc/systemd/system/edge-agent.service.d"
cat > "$DIR/etc/systemd/system/edge-agent.service.d/50-check-audio.conf" <<'EOF'
# systemd-check: the sound devices are the fixture PulseAudio's, reached through ALSA's pulse plugin.
[Unit]
Requires=edge-agent-check-audio.service
After=edge-agent-check-audio.service
[Service]
Environment=PULSE_SERVER=unix:/run/edge-agent-check-audio/native
EOF
rm -f "$DIR/etc/systemd/system/edge-agent.service.d/60-check-hang.conf"
ct systemctl daemon-reload
ct systemctl stop edge-agent >/dev/null 2>&1 || true
ct systemctl reset-failed edge-agent >/dev/null 2>&1 || true
ct systemctl restart edge-agent-check-audio edge-agent-check-broker
info "broker on 127.0.0.1:$PORT; audio: $(ct runuser -u edge-agent -- env PULSE_SERVER=unix:/run/edge-agent-check-audio/native \
  pactl info 2>/dev/null | grep -E '^Default (Sink|Source)' | tr '\n' ' ')"
ct runuser -u edge-agent -- env PULSE_SERVER=unix:/run/edge-agent-check-audio/native \
  /opt/edge-agent/.venv/bin/edge-agent -c /etc/edge-agent/config.yaml devices 2>&1 | head -12 | indent || true

REQUEST="Hey Jarvis. What time is it?"
if [ ! -s "$DIR/root/edge-agent-check-request.wav" ]; then
  info "making the spoken request with the installed Piper voice: '$REQUEST'"
  ct /opt/edge-agent/.venv/bin/edge-agent -c /etc/edge-agent/config.yaml say "$REQUEST" \
    -o /root/edge-agent-check-request.wav 2>&1 | sed 's/^[0-9-]* [0-9:,]* //' | indent
fi

# ---------------------------------------------------------------------------------------------- helpers
prop() { ct systemctl show -p "$1" --value edge-agent; }
# wait_active TIMEOUT [OLD_PID]: until ActiveState=active (with a MainPID other than OLD_PID); prints each change of
# ActiveState/SubState/StatusText with the seconds since the call. Returns 1 on timeout.
wait_active() {
  local timeout="$1" old="${2:-}" start last="" now line
  start=$(date +%s.%N)
  while :; do
    line="$(ct systemctl show -p ActiveState -p SubState -p StatusText -p MainPID edge-agent | sort | tr '\n' ' ')"
    now=$(date +%s.%N)
    local shown; shown="$(echo "$line" | sed -E 's/MainPID=[0-9]+ //')"
    if [ "$shown" != "$last" ]; then
      printf '    %6.1f s  %s\n' "$(awk "BEGIN{print $now - $start}")" "$line"
      last="$shown"
    fi
    if echo "$line" | grep -q 'ActiveState=active '; then
      local pid; pid="$(echo "$line" | sed -E 's/.*MainPID=([0-9]+).*/\1/')"
      [ -z "$old" ] || [ "$pid" != "$old" ] && return 0
    fi
    awk "BEGIN{exit !($now - $start > $timeout)}" && return 1
    sleep 0.5
  done
}
# jcursor: the journal's current position; journal_since CURSOR: the unit's entries after it (its own and PID 1's).
jcursor() { ct journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'; }
journal_since() { ct journalctl --no-pager -o short-monotonic -u edge-agent --after-cursor "$1" "${@:2}"; }
outbox_files() { ct find /var/lib/edge-agent/outbox -type f 2>/dev/null | grep -vc '\.tmp$' || true; }

# ---------------------------------------------------------------------------------------------- a) READY
step "a) READY=1 only after the models are loaded"
since="$(jcursor)"
ct systemctl start --no-block edge-agent
seen_activating=0
log="$RUN/a.states"
wait_active 240 | tee "$log" || true
grep -q 'ActiveState=activating' "$log" && seen_activating=1
check "the unit is 'activating' while the models load (seen before 'active')" test "$seen_activating" = 1
no_status_while_activating() { ! grep 'ActiveState=activating' "$log" | grep -q 'StatusText=[^ ]'; }
active_with_status() { [ "$(prop ActiveState)" = active ] && [ -n "$(prop StatusText)" ]; }
check "no STATUS= while activating (the daemon has said nothing yet)" no_status_while_activating
check "active with the daemon's STATUS= ('listening ...' or '<state>; turns N')" active_with_status
j="$(journal_since "$since")"
echo "$j" | grep -E 'models loaded|Started|ready:|listening|error' | indent
loaded_line="$(echo "$j" | grep -n 'models loaded' | head -1 | cut -d: -f1)"
started_line="$(echo "$j" | grep -n 'Started edge-agent' | head -1 | cut -d: -f1)"
check "the journal's 'models loaded' line comes before systemd's 'Started' (READY)" \
  test -n "$loaded_line" -a -n "$started_line" -a "${loaded_line:-0}" -lt "${started_line:-0}"

# ---------------------------------------------------------------------------------------------- b) STATUS
step "b) the daemon's STATUS lines in systemctl status"
sleep 3
st="$(ct systemctl status edge-agent --no-pager --lines=3 2>&1 || true)"
echo "$st" | indent
check "systemctl status shows 'Status: \"...\"' from the daemon" grep -qE 'Status: "[a-z]' <<<"$st"
s1="$(prop StatusText)"; sleep 2; s2="$(prop StatusText)"
info "StatusText: '$s1' then '$s2'"
check "StatusText tracks the loop ('<state>; turns N')" grep -qE '; turns [0-9]+' <<<"$s2"

# ---------------------------------------------------------------------------------------------- c) watchdog
step "c) the watchdog restarts a hung main loop (WatchdogSec=$(prop WatchdogUSec))"
if [ "$HANG_MODE" = sigusr1 ] || { [ "$HANG_MODE" = auto ] && grep -rqs EDGE_AGENT_DEBUG_HANG "$DIR/opt/edge-agent/edge_agent/"; }; then
  info "the installed code has the debug hang hook: drop-in EDGE_AGENT_DEBUG_HANG=1, then SIGUSR1"
  printf '[Service]\nEnvironment=EDGE_AGENT_DEBUG_HANG=1\n' \
    > "$DIR/etc/systemd/system/edge-agent.service.d/60-check-hang.conf"
  ct systemctl daemon-reload
  ct systemctl restart edge-agent
  HANG=(systemctl kill -s SIGUSR1 edge-agent)
  how="SIGUSR1 (loop hangs, other threads live)"
else
  info "SIGSTOP on the main process stands in for a hung loop (--hang=$HANG_MODE; debug hook in the installed code:" \
    "$(grep -rqs EDGE_AGENT_DEBUG_HANG "$DIR/opt/edge-agent/edge_agent/" && echo yes || echo no))"
  HANG=(systemctl kill -s SIGSTOP --kill-who=main edge-agent)
  how="SIGSTOP stand-in"
fi
n0="$(prop NRestarts)"; pid0="$(prop MainPID)"; since="$(jcursor)"
info "NRestarts=$n0 MainPID=$pid0; ${HANG[*]}"
ct "${HANG[@]}"
ok=0
wait_active 300 "$pid0" && ok=1
n1="$(prop NRestarts)"
journal_since "$since" | grep -Ei 'watchdog|signal|Main process exited|Failed with|Scheduled restart|Started' | indent
check "watchdog ($how): killed and restarted, NRestarts $n0 -> $n1, active again" \
  test "$ok" = 1 -a "$n1" -gt "$n0"
check "the journal names the watchdog as the cause ('Watchdog timeout')" grep -q 'Watchdog timeout' <<<"$(journal_since "$since")"
if [ -f "$DIR/etc/systemd/system/edge-agent.service.d/60-check-hang.conf" ]; then
  rm -f "$DIR/etc/systemd/system/edge-agent.service.d/60-check-hang.conf"
  ct systemctl daemon-reload
fi

# ---------------------------------------------------------------------------------------------- d) crash
for sig in SIGSEGV SIGKILL; do
  step "d) Restart=on-failure after $sig"
  n0="$(prop NRestarts)"; pid0="$(prop MainPID)"; since="$(jcursor)"
  info "NRestarts=$n0 MainPID=$pid0; systemctl kill -s $sig --kill-who=main edge-agent"
  ct systemctl kill -s "$sig" --kill-who=main edge-agent
  ok=0
  wait_active 240 "$pid0" && ok=1
  n1="$(prop NRestarts)"
  journal_since "$since" | grep -Ei 'Main process exited|Failed with|Scheduled restart|Started' | indent
  check "$sig: restarted by systemd (NRestarts $n0 -> $n1), READY again" test "$ok" = 1 -a "$n1" -gt "$n0"
done

# ---------------------------------------------------------------------------------------------- e) stop
# stop_timed: systemctl stop, prints and sets STOP_S, RESULT, EXIT (Result, ExecMainCode/Status).
stop_timed() {
  local a b
  a=$(date +%s.%N); ct systemctl stop edge-agent; b=$(date +%s.%N)
  STOP_S="$(awk "BEGIN{print $b - $a}")"
  RESULT="$(prop Result)"; EXIT="$(prop ExecMainCode)/$(prop ExecMainStatus)"
  info "systemctl stop took $(printf '%.2f' "$STOP_S") s; Result=$RESULT ExecMainCode/Status=$EXIT (1/0 = exited, 0)"
}
fast() { awk "BEGIN{exit !($STOP_S < 5)}"; }

step "e1) broker down: a spoken request queues its messages, then systemctl stop"
ct systemctl stop edge-agent-check-broker
ct systemctl restart edge-agent
turns0="$(ct sh -c 'cat /var/lib/edge-agent/turns.jsonl 2>/dev/null | wc -l')"
info "speaking into the room: '$REQUEST' (paplay -d room)"
ct paplay -s unix:/run/edge-agent-check-audio/native -d room /root/edge-agent-check-request.wav
turned=0
for _ in $(seq 120); do
  [ "$(ct sh -c 'cat /var/lib/edge-agent/turns.jsonl 2>/dev/null | wc -l')" -gt "$turns0" ] && { turned=1; break; }
  sleep 0.5
done
ct sh -c 'tail -1 /var/lib/edge-agent/turns.jsonl 2>/dev/null' | ct python3 -c '
import json, sys
for line in sys.stdin:
    t = json.loads(line)
    print("turn:", {k: t.get(k) for k in ("transcript", "outcome", "reply_spoken", "intents")})' | cut -c1-300 | indent
check "a live turn through the sandboxed service (turn log written)" test "$turned" = 1
info "StatusText: '$(prop StatusText)'"
sleep 1
q="$(outbox_files)"
info "outbox files in /var/lib/edge-agent/outbox while the broker is down: $q"
check "the turn's messages are queued on disk while the broker is down" test "$q" -ge 1
since="$(jcursor)"
stop_timed
journal_since "$since" | grep -Ei 'mqtt|signal|shutting|Deactivated' | tail -6 | indent
check "stop within 5 s (broker down)" fast
check "clean exit (Result=success, status 0)" test "$RESULT" = success -a "$EXIT" = 1/0
q2="$(outbox_files)"
check "the undelivered messages are kept in the outbox ($q2 file(s))" test "$q2" -ge 1

step "e2) broker back: the queued messages are delivered, then systemctl stop"
ct systemctl start edge-agent-check-broker
sleep 0.5
ct systemctl reset-failed edge-agent-check-sub >/dev/null 2>&1 || true
since="$(jcursor)"
ct systemd-run -q --unit=edge-agent-check-sub /usr/bin/mosquitto_sub -h 127.0.0.1 -p "$PORT" -v -t 'edge-agent/#' \
  -F '%t %p'
ct systemctl start edge-agent
delivered=0
for _ in $(seq 60); do
  [ "$(outbox_files)" = 0 ] && { delivered=1; break; }
  sleep 0.5
done
check "the outbox is empty once the broker is back (every queued message PUBACKed)" test "$delivered" = 1
sleep 1
stop_timed
sleep 0.5
ct systemctl stop edge-agent-check-sub
subs="$(ct journalctl --no-pager -o cat -u edge-agent-check-sub --after-cursor "$since" | grep -E '^edge-agent/' || true)"
echo "$subs" | cut -c1-160 | indent
journal_since "$since" | grep -Ei 'mqtt|signal|shutting|Deactivated' | tail -6 | indent
check "stop within 5 s (broker up)" fast
check "clean exit (Result=success, status 0)" test "$RESULT" = success -a "$EXIT" = 1/0
check "the subscriber got the turn's messages queued while the broker was down (intent or transcript)" \
  grep -qE '^edge-agent/[^ ]+/(intent/|last_transcript )' <<<"$subs"
check "availability 'online' after the start, 'offline' at the stop (ordered shutdown)" \
  grep -qzE 'availability online.*availability offline' <<<"$subs"
check "nothing left in the outbox after the stop" test "$(outbox_files)" = 0
last_state="$(grep -E '^edge-agent/[^ ]+/state ' <<<"$subs" | tail -1 | cut -d' ' -f2-)"
info "the last state published before the stop: '$last_state' (the daemon was idle)"
check "the retained state is the daemon's own after a restart ('idle'), not the previous run's last" \
  test "$last_state" = idle

# ---------------------------------------------------------------------------------------------- summary
step "summary ($(( $(date +%s) - T0 )) s)"
printf '  %s\n' "${RESULTS[@]}"
fails=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^FAIL' || true)
[ "$fails" = 0 ] && echo "all $(( ${#RESULTS[@]} )) checks passed" || echo "$fails of ${#RESULTS[@]} checks FAILED"
[ "$fails" = 0 ]
