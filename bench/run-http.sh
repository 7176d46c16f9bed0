#!/usr/bin/env bash
# HTTP cache hits: sockstap (HTTP door, and a SOCKS5 tunnel tapped with SOCKSTAP=http) beside
# Varnish (reverse) and Squid (forward), in one run, against the shared harness's nginx origin
# (4k.bin and 1m.bin, Cache-Control: max-age=3600), with wrk. Printed as ratios to Squid and Varnish.
#
#   bench/run-http.sh [--secs S] [--conns N] [--files LIST] [--servers LIST]
#
#   SOCKSTAP_ARGS="WORKERS=2" adds parameters to the sockstap under test.
#   --servers LIST  comma-separated: varnish,squid,sockstap,sockstap-socks,baseline (default: all
#                   but baseline; baseline is the HTTP door of another checkout's dist/cli.js, named
#                   by BASELINE_DIR, for before/after figures in the same run)
#
# Uses ../shared/bench (run-http.sh, proxies/ctl.sh) from a private copy, so its pid files and
# results never mix with another run's; the origin's request counter (nginx stub_status) is read
# around every wrk run by that harness, so "every request a hit" is measured. The SOCKS path is
# wrk under proxychains4 (LD_PRELOAD: every connect() goes through sockstap's SOCKS5 door).
# Ports: BENCH_PORT_BASE (22000) + 500 + the harness's offsets (nginx +180, squid +128, varnish
# +181); sockstap +190 (HTTP door) and +191 (SOCKS). Needs: wrk nginx squid varnish proxychains4.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=10 CONNS=50 FILES=4k.bin,1m.bin SERVERS=varnish,squid,sockstap,sockstap-socks
while [ $# -gt 0 ]; do
  case $1 in
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench-http: unknown option $1" >&2; exit 2 ;;
  esac
done
want() { [[ ",$SERVERS," == *",$1,"* ]]; }

SHARED=""
for d in "${SHARED_BENCH:-}" "$ROOT/../shared/bench" "$ROOT/../../shared/bench"; do
  [ -n "$d" ] && [ -x "$d/run-http.sh" ] && { SHARED=$(cd "$d" && pwd); break; }
done
[ -n "$SHARED" ] || { echo "bench-http: ../shared/bench not found (set SHARED_BENCH); skipped" >&2; exit 0; }
missing=""
for t in wrk nginx curl; do command -v $t >/dev/null || missing="$missing $t"; done
want squid && ! command -v squid >/dev/null && missing="$missing squid"
want varnish && ! command -v varnishd >/dev/null && missing="$missing varnish"
want sockstap-socks && ! command -v proxychains4 >/dev/null && missing="$missing proxychains4"
[ -z "$missing" ] || { echo "bench-http: missing:$missing (apt-get install -y wrk nginx squid varnish proxychains4); skipped" >&2; exit 0; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sockstap-bench-http.XXXXXX")
cp -r "$SHARED" "$WORK/h"
rm -rf "$WORK/h/.run" "$WORK/h/results"
H="$WORK/h"
export BENCH_PORT_BASE=$(( ${BENCH_PORT_BASE:-22000} + 500 ))
export BENCH_RESULTS="$WORK/results"
B=$BENCH_PORT_BASE
NGINX=$((B + 180)) DOOR=$((B + 190)) SOCKS=$((B + 191))
OUT="$ROOT/bench/results/raw/http-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$(dirname "$OUT")"

SOCKSTAP_PID=""
cleanup() {
  [ -n "$SOCKSTAP_PID" ] && kill "$SOCKSTAP_PID" 2>/dev/null && wait "$SOCKSTAP_PID" 2>/dev/null
  "$H/proxies/ctl.sh" stop nginx >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$H" && make >/dev/null)
"$H/proxies/ctl.sh" start nginx >/dev/null
run() { "$H/run-http.sh" "$@" --runs 1 --duration "$SECS" --conns "$CONNS" --files "$FILES" 2>&1 | grep -E 'warm-up|WARN|error' >&2 || true; }

if want baseline; then
  [ -f "${BASELINE_DIR:-}/dist/cli.js" ] || { echo "bench-http: baseline needs BASELINE_DIR with dist/cli.js" >&2; exit 2; }
  mkdir -p "$WORK/baseline"
  node "$BASELINE_DIR/dist/cli.js" "-P127.0.0.1:$((B + 192))/http" CACHE=do "STATEDIR=$WORK/baseline" >"$WORK/baseline.out" 2>&1 &
  BASE_PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$((B + 192))/" 2>/dev/null && break; sleep 0.1; done
  run "http://127.0.0.1:$((B + 192))" --mode forward --name baseline --pid "$BASE_PID"
  kill "$BASE_PID"; wait "$BASE_PID" 2>/dev/null || true
fi
want varnish && run "http://127.0.0.1:$((B + 181))" --mode reverse --name varnish --start "$("$H/proxies/ctl.sh" cmd varnish)"
want squid && run "http://127.0.0.1:$((B + 128))" --mode forward --name squid --start "$("$H/proxies/ctl.sh" cmd squid)"

if want sockstap || want sockstap-socks; then
  newest=$(find "$ROOT/src" -name '*.ts' -newer "$ROOT/dist/cli.js" 2>/dev/null | head -1 || true)
  if [ ! -f "$ROOT/dist/cli.js" ] || [ -n "$newest" ]; then (cd "$ROOT" && npm run build --silent >/dev/null); fi
  mkdir -p "$WORK/sockstap"
  # SOCKSTAP_ARGS: more parameters for sockstap (e.g. WORKERS=2), split on spaces.
  # shellcheck disable=SC2086
  node "$ROOT/dist/cli.js" "-P127.0.0.1:$DOOR/http" "-P127.0.0.1:$SOCKS/socks" CACHE=do SOCKSTAP=http \
    "STATEDIR=$WORK/sockstap" ${SOCKSTAP_ARGS:-} >"$WORK/sockstap.out" 2>&1 &
  SOCKSTAP_PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$DOOR/" 2>/dev/null && break; sleep 0.1; done
  want sockstap && run "http://127.0.0.1:$DOOR" --mode forward --name sockstap --pid "$SOCKSTAP_PID"
  if want sockstap-socks; then
    # wrk in reverse mode straight at nginx, its connect() sent through sockstap's SOCKS5 door.
    cat >"$WORK/proxychains.conf" <<EOF
strict_chain
quiet_mode
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
socks5 127.0.0.1 $SOCKS
EOF
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexec proxychains4 -q -f %s %s "$@"\n' "$WORK/proxychains.conf" "$(command -v wrk)" >"$WORK/bin/wrk"
    chmod +x "$WORK/bin/wrk"
    for f in ${FILES//,/ }; do
      curl -s -o /dev/null --socks5 "127.0.0.1:$SOCKS" "http://127.0.0.1:$NGINX/$f"
      curl -s -o /dev/null --socks5 "127.0.0.1:$SOCKS" "http://127.0.0.1:$NGINX/$f"
    done
    PATH="$WORK/bin:$PATH" run "http://127.0.0.1:$NGINX" --mode reverse --name sockstap-socks --pid "$SOCKSTAP_PID"
  fi
fi

cat "$BENCH_RESULTS"/raw/http-*.jsonl >"$OUT"
node "$ROOT/bench/http-report.mjs" "$OUT" | tee "${OUT%.jsonl}.md"
