#!/usr/bin/env bash
# sockstap benchmark: sockstap next to microsocks, Dante and a direct connection, in one run, on
# loopback only. `npm run bench` runs this; `npm run bench -- --help` lists the options.
#
# Every process this script starts is recorded by PID and stopped by that PID on exit. Every load
# loop is bounded in count and in time (loadgen has an alarm() on top of its own limits).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [--quick] [--tests LIST] [--proxies LIST] [--bytes N] [--secs S] [--idle N]

  --quick          small sizes: 256 MiB transfers, 3 s rate, 1,000 idle tunnels (about 1 minute)
  --tests LIST     comma-separated: bulk,lat,connlat,rate,idle,http,tls (default: all; http is
                   bench/run-http.sh: cache hits of 4 KiB and 1 MiB through the HTTP door and a
                   tapped SOCKS tunnel beside Varnish and Squid, as ratios; tls is
                   bench/run-tls.sh: intercepted TLS handshakes and HTTPS cache hits per second
                   beside Squid ssl-bump; each skipped when its tools are missing)
  --proxies LIST   comma-separated: direct,sockstap,sockstap-js,sockstap-w2,relay,relay-pipe,
                   microsocks,dante (default: direct,sockstap,sockstap-js,sockstap-w2,microsocks,dante;
                   sockstap relays untapped tunnels with splice(2) on its native thread, sockstap-js
                   is the same with RELAY=js (the JavaScript relay), sockstap-w2 is sockstap with
                   WORKERS=2 (two processes on the same port); "relay"/"relay-pipe" are
                   bench/socks-relay.ts with the splice thread or with pipe(), for comparison)
  --bytes N        bytes per bulk transfer (default 1 GiB = 1073741824)
  --secs S         connection-rate duration (default 10)
  --idle N         idle tunnels (default 10000, capped by RLIMIT_NOFILE: (limit-50)/2)

Ports (below the ephemeral range): BENCH_PORT_BASE (default 22000)+1..+4 target server,
+80 microsocks, +81 Dante, +90 sockstap, +91 relay, +92 relay-pipe, +93 sockstap-w2, +94 sockstap-js.
Raw results: bench/results/raw/run-DATE.jsonl; the table is printed and saved next to it.
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BASE=${BENCH_PORT_BASE:-22000}
TESTS=bulk,lat,connlat,rate,idle,http,tls
PROXIES=direct,sockstap,sockstap-js,sockstap-w2,microsocks,dante
BYTES=1073741824
SECS=10
IDLE=10000
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --tests) TESTS=$2; shift ;;
    --proxies) PROXIES=$2; shift ;;
    --bytes) BYTES=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then BYTES=268435456; SECS=3; IDLE=1000; fi
LAT_COUNT=5000; CONNLAT_COUNT=2000
[ "$QUICK" = 1 ] && { LAT_COUNT=1000; CONNLAT_COUNT=300; }

has() { command -v "$1" >/dev/null 2>&1; }
want() { [[ ",$1," == *",$2,"* ]]; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sockstap-bench.XXXXXX")
chmod 755 "$WORK" # Dante's children run as nobody
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites ----------------------------------------------------------------------------
install_pkgs() {
  if [ "$(id -u)" != 0 ]; then
    echo "bench: $* missing and not root: install with 'sudo apt-get install -y $*'; skipping those peers" >&2
    return 1
  fi
  echo "bench: installing $* with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
missing=()
want "$PROXIES" microsocks && ! has microsocks && missing+=(microsocks)
want "$PROXIES" dante && ! has danted && missing+=(dante-server)
has gcc || missing+=(gcc)
[ ${#missing[@]} -gt 0 ] && { install_pkgs "${missing[@]}" || true; }
has gcc || { echo "bench: gcc is needed to build bench/loadgen.c" >&2; exit 1; }
want "$PROXIES" microsocks && ! has microsocks && PROXIES=${PROXIES//microsocks/}
want "$PROXIES" dante && ! has danted && PROXIES=${PROXIES//dante/}

LOADGEN=$WORK/loadgen
gcc -O2 -Wall -o "$LOADGEN" "$ROOT/bench/loadgen.c"

if want "$PROXIES" sockstap || want "$PROXIES" sockstap-js || want "$PROXIES" sockstap-w2; then
  newest_src=$(find "$ROOT/src" -name '*.ts' -newer "$ROOT/dist/cli.js" 2>/dev/null | head -1 || true)
  if [ ! -f "$ROOT/dist/cli.js" ] || [ -n "$newest_src" ]; then
    echo "bench: building sockstap (npm run build)" >&2
    (cd "$ROOT" && npm run build --silent >/dev/null)
  fi
fi

# Idle tunnels: 2 descriptors each in a one-process proxy, so the fd limit caps them.
NOFILE=$(ulimit -Hn)
ulimit -n "$NOFILE" 2>/dev/null || true
[ "$NOFILE" != unlimited ] && [ $(((NOFILE - 50) / 2)) -lt "$IDLE" ] && IDLE=$(((NOFILE - 50) / 2))

# ---- servers ----------------------------------------------------------------------------------
# start NAME PORT CMD...: runs CMD in the background, records its PID, waits for PORT to listen.
STARTED_PID=
start() {
  local name=$1 port=$2; shift 2
  "$@" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$STARTED_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: $name did not start on port $port:" >&2
  tail -5 "$WORK/$name.log" >&2
  return 1
}
stop() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

port_of() {
  case $1 in
    microsocks) echo $((BASE + 80)) ;; dante) echo $((BASE + 81)) ;; sockstap) echo $((BASE + 90)) ;; sockstap-w2) echo $((BASE + 93)) ;; sockstap-js) echo $((BASE + 94)) ;;
    relay) echo $((BASE + 91)) ;; relay-pipe) echo $((BASE + 92)) ;;
  esac
}

# start_proxy NAME: starts a fresh proxy; STARTED_PID is the process whose tree is measured.
start_proxy() {
  local name=$1 port
  port=$(port_of "$name")
  case $name in
    microsocks) start microsocks "$port" microsocks -i 127.0.0.1 -p "$port" ;;
    dante)
      # Loopback only, no authentication; one mother process that forks its children.
      cat >"$WORK/danted.conf" <<EOF
logoutput: stderr
internal: 127.0.0.1 port = $port
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
timeout.negotiate: 30
timeout.io: 0
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0
  log: error }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8
  command: connect
  log: error }
EOF
      start dante "$port" danted -f "$WORK/danted.conf" -p "$WORK/danted.pid" ;;
    sockstap)
      mkdir -p "$WORK/sockstap"
      start sockstap "$port" node "$ROOT/dist/cli.js" "-P127.0.0.1:$port/socks" "STATEDIR=$WORK/sockstap" ;;
    sockstap-js)
      mkdir -p "$WORK/sockstap-js"
      start sockstap-js "$port" node "$ROOT/dist/cli.js" "-P127.0.0.1:$port/socks" RELAY=js "STATEDIR=$WORK/sockstap-js" ;;
    sockstap-w2)
      mkdir -p "$WORK/sockstap-w2"
      start sockstap-w2 "$port" node "$ROOT/dist/cli.js" "-P127.0.0.1:$port/socks" WORKERS=2 "STATEDIR=$WORK/sockstap-w2" ;;
    relay) start relay "$port" node --import tsx "$ROOT/bench/socks-relay.ts" "$port" splice ;;
    relay-pipe) start relay-pipe "$port" node --import tsx "$ROOT/bench/socks-relay.ts" "$port" pipe ;;
  esac
}

mkdir -p "$ROOT/bench/results/raw"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$ROOT/bench/results/raw/run-$STAMP.jsonl
{
  echo "{\"env\":true,\"date\":\"$STAMP\",\"node\":\"$(node --version)\",\"kernel\":\"$(uname -r)\",\"cpus\":$(nproc),\
\"microsocks\":\"$(dpkg-query -W -f='${Version}' microsocks 2>/dev/null || true)\",\
\"dante\":\"$(dpkg-query -W -f='${Version}' dante-server 2>/dev/null || true)\",\"bytes\":$BYTES,\"idle\":$IDLE}"
} >"$RAW"

start target $((BASE + 1)) "$LOADGEN" target "$BASE"
TARGET_PID=$STARTED_PID

# record NAME JSON: one result line, tagged with the proxy's name.
record() { echo "{\"proxy\":\"$1\",${2#\{}" | tee -a "$RAW" >&2; }

measure() {
  local name=$1 pid=$2 proxy=$3
  local lg=("$LOADGEN")
  if want "$TESTS" bulk; then
    record "$name" "$("${lg[@]}" bulk --proxy "$proxy" --target "$BASE" --dir down --bytes "$BYTES" --pid "$pid" --max-secs 120)"
    record "$name" "$("${lg[@]}" bulk --proxy "$proxy" --target "$BASE" --dir up --bytes "$BYTES" --pid "$pid" --max-secs 120)"
  fi
  if want "$TESTS" lat; then
    record "$name" "$("${lg[@]}" lat --proxy "$proxy" --target "$BASE" --count "$LAT_COUNT" --max-secs 60)"
  fi
  if want "$TESTS" rate; then
    # A short warm-up first (JIT, Dante's pre-forked children), then the measured run.
    "${lg[@]}" rate --proxy "$proxy" --target "$BASE" --secs 1 --max-secs 20 >/dev/null
    record "$name" "$("${lg[@]}" rate --proxy "$proxy" --target "$BASE" --conc 50 --secs "$SECS" --max-secs $((SECS + 30)))"
  fi
  # Unloaded connection setup, after the rate test so that every proxy's connect path is warm
  # (a fresh Node process needs a few thousand connections of JIT warm-up; docs/performance.md).
  if want "$TESTS" connlat; then
    want "$TESTS" rate || "${lg[@]}" rate --proxy "$proxy" --target "$BASE" --secs 2 --max-secs 20 >/dev/null
    record "$name" "$("${lg[@]}" connlat --proxy "$proxy" --target "$BASE" --count "$CONNLAT_COUNT" --max-secs 60)"
  fi
}

IFS=, read -r -a LIST <<<"$PROXIES"
echo "bench: tests=$TESTS proxies=$PROXIES bytes=$BYTES rate=${SECS}s idle=$IDLE" >&2
for name in "${LIST[@]}"; do
  [ -n "$name" ] || continue
  if [ "$name" = direct ]; then
    measure direct 0 none
    continue
  fi
  want "$TESTS" bulk || want "$TESTS" lat || want "$TESTS" connlat || want "$TESTS" rate || continue
  start_proxy "$name" || continue
  pid=$STARTED_PID
  measure "$name" "$pid" "127.0.0.1:$(port_of "$name")"
  stop "$pid"
done

# Memory with idle tunnels: a fresh process for each proxy, measured over its process tree.
if want "$TESTS" idle; then
  for name in "${LIST[@]}"; do
    [ -n "$name" ] && [ "$name" != direct ] || continue
    start_proxy "$name" || continue
    pid=$STARTED_PID
    record "$name" "$("$LOADGEN" idle --proxy "127.0.0.1:$(port_of "$name")" --target "$BASE" --count "$IDLE" \
      --pid "$pid" --settle 3 --max-secs 300)"
    stop "$pid"
  done
fi
stop "$TARGET_PID"

node --import tsx "$ROOT/bench/report.ts" "$RAW" | tee "${RAW%.jsonl}.md"

if want "$TESTS" http; then
  echo
  if [ "$QUICK" = 1 ]; then bash "$ROOT/bench/run-http.sh" --secs 3; else bash "$ROOT/bench/run-http.sh" --secs "$SECS"; fi
fi

if want "$TESTS" tls; then
  echo
  if [ "$QUICK" = 1 ]; then bash "$ROOT/bench/run-tls.sh" --secs 3; else bash "$ROOT/bench/run-tls.sh" --secs "$SECS"; fi
fi
