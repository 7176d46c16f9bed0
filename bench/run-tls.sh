#!/usr/bin/env bash
# TLS interception (issue 15 item 7): sockstap's STLS=mitm beside Squid's ssl-bump, in one run,
# against one nginx HTTPS origin (4k.bin, Cache-Control: max-age=3600), with wrk under proxychains4
# (LD_PRELOAD: every connect() goes through the proxy: SOCKS5 for sockstap, HTTP CONNECT for Squid;
# proxy_dns, so the proxy gets the name origin.bench.test, which both resolve from their own hosts
# setting). Two measures, each after a warm-up that fills the leaf caches and the HTTP caches:
#
#   handshakes  wrk with "Connection: close": every request is a new tunnel, a new TLS handshake
#               with the proxy's leaf (warm: issued in the warm-up) and one cached GET
#               (wrk never resumes a TLS session: it does not call SSL_set_session)
#   hits        wrk over keep-alive connections: HTTPS cache hits per second inside the TLS
#
# Proxies: sockstap (SOCKSTAP=tls CACHE=do STLS=mitm; a fresh hit is answered with no connection to
# the origin at all, docs/tls-interception.md), sockstap with STRATEGY=dial-first (dials and
# verifies the origin for every tunnel, as Squid's peek-then-bump does), and Squid ssl-bump
# (Debian's squid-openssl binary; when the installed squid lacks ssl-crtd, the package is fetched
# with apt-get download and unpacked under the run's directory, so the system's squid, which the
# routing tests use, is left alone). Results: bench/results/raw/tls-*.jsonl and a table in .md.
#
#   bench/run-tls.sh [--secs S] [--conns N]
#
# Ports: BENCH_PORT_BASE (22000) + 700 (origin), +701 (sockstap), +702 (sockstap dial-first),
# +703 (squid). Needs: nginx wrk proxychains4 openssl curl, squid-openssl (or apt-get download).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=10 CONNS=20
while [ $# -gt 0 ]; do
  case $1 in
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "bench-tls: unknown option $1" >&2; exit 2 ;;
  esac
done
missing=""
for t in nginx wrk proxychains4 openssl curl; do command -v $t >/dev/null || missing="$missing $t"; done
[ -z "$missing" ] || { echo "bench-tls: missing:$missing (apt-get install -y nginx wrk proxychains4 openssl curl); skipped" >&2; exit 0; }

B=$(( ${BENCH_PORT_BASE:-22000} + 700 ))
ORIGIN=$B SOCKSTAP=$((B + 1)) DIALFIRST=$((B + 2)) SQUID=$((B + 3))
NAME=origin.bench.test
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sockstap-bench-tls.XXXXXX")
chmod 755 "$WORK"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench/results/raw/tls-$STAMP.jsonl"
mkdir -p "$(dirname "$OUT")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "bench-tls: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the origin's PKI and nginx over TLS -------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=bench origin CA' \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$WORK/origin-ca.key" -out "$WORK/origin-ca.pem" -days 2 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$NAME" \
  -keyout "$WORK/origin.key" -out "$WORK/origin.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$NAME" >"$WORK/origin.ext"
openssl x509 -req -in "$WORK/origin.csr" -CA "$WORK/origin-ca.pem" -CAkey "$WORK/origin-ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/origin.ext" -out "$WORK/origin.pem" 2>/dev/null
mkdir -p "$WORK/www" "$WORK/nginx/tmp"
head -c 4096 /dev/zero | tr '\0' 'a' >"$WORK/www/4k.bin"
cat >"$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/tmp;
  proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp;
  uwsgi_temp_path $WORK/nginx/tmp;
  scgi_temp_path $WORK/nginx/tmp;
  types { application/octet-stream bin; }
  server {
    listen 127.0.0.1:$ORIGIN ssl reuseport backlog=4096;
    ssl_certificate $WORK/origin.pem;
    ssl_certificate_key $WORK/origin.key;
    ssl_session_cache shared:S:10m;
    root $WORK/www;
    location / { add_header Cache-Control "max-age=3600"; }
    location = /nginx_status { stub_status; }
  }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null --cacert "$WORK/origin-ca.pem" --resolve "$NAME:$ORIGIN:127.0.0.1" "https://$NAME:$ORIGIN/4k.bin" && break; sleep 0.1; done
origin_accepts() { curl -s --cacert "$WORK/origin-ca.pem" --resolve "$NAME:$ORIGIN:127.0.0.1" "https://$NAME:$ORIGIN/nginx_status" | awk 'NR==3 {print $1}'; }

# --- sockstap, twice ----------------------------------------------------------------------------
newest=$(find "$ROOT/src" -name '*.ts' -newer "$ROOT/dist/cli.js" 2>/dev/null | head -1 || true)
if [ ! -f "$ROOT/dist/cli.js" ] || [ -n "$newest" ]; then (cd "$ROOT" && npm run build --silent >/dev/null); fi
start_sockstap() { # PORT NAME RULE
  mkdir -p "$WORK/$2"
  node "$ROOT/dist/cli.js" "-P127.0.0.1:$1/socks" "SOCKSTAP=$3" CACHE=do STLS=mitm "TLSCAFILE=$WORK/origin-ca.pem" \
    "HOSTS=$NAME/127.0.0.1" "STATEDIR=$WORK/$2" >"$WORK/$2.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$2/ca/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.1; done
}
start_sockstap "$SOCKSTAP" sockstap tls
SOCKSTAP_PID=${PIDS[-1]}
start_sockstap "$DIALFIRST" sockstap-dialfirst 'tls:::STRATEGY=dial-first'
DIALFIRST_PID=${PIDS[-1]}

# --- Squid ssl-bump -----------------------------------------------------------------------------
SQUID_BIN="" CERTGEN=""
if command -v squid >/dev/null && squid -v | grep -q -- --enable-ssl-crtd && [ -x /usr/lib/squid/security_file_certgen ]; then
  SQUID_BIN=$(command -v squid) CERTGEN=/usr/lib/squid/security_file_certgen
else
  (cd "$WORK" && apt-get download squid-openssl >/dev/null 2>&1 && dpkg-deb -x squid-openssl_*.deb "$WORK/squid-openssl") || true
  [ -x "$WORK/squid-openssl/usr/sbin/squid" ] && SQUID_BIN="$WORK/squid-openssl/usr/sbin/squid" CERTGEN="$WORK/squid-openssl/usr/lib/squid/security_file_certgen"
fi
if [ -n "$SQUID_BIN" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=bench squid bump CA' \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$WORK/squid-ca.key" -out "$WORK/squid-ca.pem" -days 2 2>/dev/null
  mkdir -p "$WORK/squid"
  "$CERTGEN" -c -s "$WORK/squid/ssl_db" -M 16MB >/dev/null
  printf '127.0.0.1 %s\n' "$NAME" >"$WORK/squid/hosts"
  chown -R proxy:proxy "$WORK/squid" "$WORK/squid-ca.key" 2>/dev/null || true
  cat >"$WORK/squid/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID ssl-bump tls-cert=$WORK/squid-ca.pem tls-key=$WORK/squid-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program $CERTGEN -s $WORK/squid/ssl_db -M 16MB
sslcrtd_children 5
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$WORK/origin-ca.pem
hosts_file $WORK/squid/hosts
visible_hostname bench-squid
acl bench_src src 127.0.0.0/8
http_access allow bench_src
http_access deny all
cache_mem 256 MB
maximum_object_size_in_memory 4 MB
memory_cache_mode always
access_log none
cache_store_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid/squid.pid
coredump_dir $WORK/squid
icp_port 0
htcp_port 0
pinger_enable off
via off
workers 1
max_filedescriptors 19000
client_persistent_connections on
server_persistent_connections on
shutdown_lifetime 1 seconds
cache_effective_user proxy
EOF
  "$SQUID_BIN" -N -f "$WORK/squid/squid.conf" &
  PIDS+=($!)
  SQUID_PID=${PIDS[-1]}
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SQUID") 2>/dev/null && break; sleep 0.1; done
else
  echo "bench-tls: no ssl-bump-capable squid (squid-openssl); Squid skipped" >&2
fi

# --- wrk under proxychains4 ---------------------------------------------------------------------
wrk_via() { # TYPE PORT ARGS...
  local type=$1 port=$2; shift 2
  cat >"$WORK/pc-$port.conf" <<EOF
strict_chain
quiet_mode
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
$type 127.0.0.1 $port
EOF
  proxychains4 -q -f "$WORK/pc-$port.conf" wrk "$@" 2>&1
}
ca_of() { case $1 in squid) echo "$WORK/squid-ca.pem" ;; sockstap) echo "$WORK/sockstap/ca/ca.pem" ;; *) echo "$WORK/sockstap-dialfirst/ca/ca.pem" ;; esac; }
check() { # NAME TYPE PORT: one verified fetch through the proxy (curl trusts only the proxy's CA)
  local proxy
  if [ "$2" = http ]; then proxy=(--proxy "http://127.0.0.1:$3"); else proxy=(--socks5-hostname "127.0.0.1:$3"); fi
  curl -sS -o /dev/null -w '%{http_code}' --cacert "$(ca_of "$1")" "${proxy[@]}" "https://$NAME:$ORIGIN/4k.bin"
}
# wrk's summary as JSON: requests/s, transfer, errors, p50/p99 latency.
parse() { # NAME MEASURE < wrk output
  awk -v name="$1" -v measure="$2" -v origin="$3" -v icpt="${4:-0}" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
    /Requests\/sec:/ {rps=$2}
    / 50%/ {p50=$2} / 99%/ {p99=$2}
    /Non-2xx/ {non2xx=$NF}
    /Socket errors:/ {gsub(",", ""); errs=$4+$6+$8+$10}
    / requests in / {n=$1}
    END {printf "{\"name\":\"%s\",\"measure\":\"%s\",\"rps\":%s,\"requests\":%s,\"p50\":\"%s\",\"p99\":\"%s\",\"non2xx\":%d,\"socketErrors\":%d,\"originConnections\":%s,\"intercepted\":%s,\"loadavg\":\"%s\"}\n", name, measure, rps+0, n+0, p50, p99, non2xx+0, errs+0, origin+0, icpt+0, load}'
}
pid_of() { case $1 in squid) echo "$SQUID_PID" ;; sockstap) echo "$SOCKSTAP_PID" ;; *) echo "$DIALFIRST_PID" ;; esac; }
# wrk's stop at the end of a run cuts handshakes in flight, which sockstap takes for a client
# refusing its leaf (pinning: the name's next tunnels are relayed untouched for an hour). A reload
# (SIGHUP) forgets pinned names; the leaf and HTTP caches stay. Squid needs nothing of the sort.
forget() { # NAME
  [ "$1" = squid ] && return
  kill -HUP "$(pid_of "$1")"
  sleep 1
}
intercepted() { # NAME: tunnels intercepted so far (sessions.jsonl), 0 for Squid
  [ "$1" = squid ] && { echo 0; return; }
  grep -c '"intercepted":true' "$WORK/$1/log/sessions.jsonl" 2>/dev/null || echo 0
}
measure() { # NAME TYPE PORT
  local name=$1 type=$2 port=$3 url="https://$NAME:$ORIGIN/4k.bin" a b i out code
  code=$(check "$name" "$type" "$port" || true)
  [ "$code" = 200 ] || { echo "bench-tls: $name: a verified fetch through it answered '$code'; skipped" >&2; return 0; }
  # Warm-up: leaves issued, the object cached, the origin's sessions made.
  wrk_via "$type" "$port" -t1 -c "$CONNS" -d 3s -H 'Connection: close' "$url" >/dev/null
  wrk_via "$type" "$port" -t1 -c "$CONNS" -d 2s "$url" >/dev/null
  forget "$name"
  a=$(origin_accepts) i=$(intercepted "$name")
  out=$(wrk_via "$type" "$port" -t1 -c "$CONNS" -d "${SECS}s" --latency -H 'Connection: close' "$url")
  sleep 0.5
  b=$(origin_accepts)
  echo "$out" | parse "$name" handshakes $((b - a)) $(( $(intercepted "$name") - i )) | tee -a "$OUT"
  forget "$name"
  a=$(origin_accepts) i=$(intercepted "$name")
  out=$(wrk_via "$type" "$port" -t1 -c "$CONNS" -d "${SECS}s" --latency "$url")
  sleep 0.5
  b=$(origin_accepts)
  echo "$out" | parse "$name" hits $((b - a)) $(( $(intercepted "$name") - i )) | tee -a "$OUT"
  forget "$name"
}
# Interleaved: each proxy's two measures back to back, the order alternating over two rounds, so
# the shared machine's load falls on all of them alike.
for round in 1 2; do
  if [ $round = 1 ]; then order="squid sockstap sockstap-dialfirst"; else order="sockstap-dialfirst sockstap squid"; fi
  for p in $order; do
    case $p in
      squid) [ -n "$SQUID_BIN" ] && measure squid http "$SQUID" ;;
      sockstap) measure sockstap socks5 "$SOCKSTAP" ;;
      sockstap-dialfirst) measure sockstap-dialfirst socks5 "$DIALFIRST" ;;
    esac
  done
done
# Time to issue a new leaf (20 concurrently; the unit test prints it), in the same run.
leaf=$(cd "$ROOT" && node --import tsx --test --test-name-pattern='issuing time' test/unit/tls.test.ts 2>/dev/null | grep -o 'time to issue one leaf: .*' | head -1 || true)
node "$ROOT/bench/tls-report.mjs" "$OUT" | tee "${OUT%.jsonl}.md"
[ -n "$leaf" ] && printf '\n%s\n' "$leaf" | tee -a "${OUT%.jsonl}.md"
true
