#!/usr/bin/env bash
# ringway load benchmark: ringway vs nginx vs direct-to-upstream, in one interleaved run.
#
# usage: bench/run.sh [--workers N] [--duration S] [--rounds R] [--rate Q] [--quick]
#                     [--idle-conns N] [--no-oha] [--no-pin] [--no-build] [--no-setup] [--keep]
#
#   --workers N     ringway --workers / nginx worker_processes (default 1)
#   --duration S    seconds per measurement (default 10)
#   --rounds R      interleaved rounds; medians and min-max are reported (default 3)
#   --rate Q        fixed rate of the two latency scenarios, oha's and the evenly paced one
#                   (default: half of nginx's small-body saturation measured in this run,
#                   rounded to 100)
#   --quick         1 round of 5 s, no idle-connection scenario
#   --idle-conns N  idle keep-alive connections for the memory scenario (default 10000; 0 = off)
#   --no-oha        skip the fixed-rate (oha) scenario and do not install oha
#   --no-pin        do not pin with taskset (for machines with more than 2 cores)
#   --no-build      use the existing target/release binaries
#   --no-setup      do not run scripts/bench-setup.sh
#   --keep          keep the scratch directory (logs, raw tool output) and print its path
#
# Writes bench/results/latest.md and bench/results/latest.json (via bench/report.py).
# Load goes to 127.0.0.1 only; every process started here runs under `timeout` and is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

workers=1 duration=10 rounds=3 rate="" quick=0 idle_conns=10000 idle_set=0
no_oha=0 pin=1 build=1 setup=1 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --idle-conns) idle_conns=$2; idle_set=1; shift 2 ;;
    --no-oha) no_oha=1; shift ;;
    --no-pin) pin=0; shift ;;
    --no-build) build=0; shift ;;
    --no-setup) setup=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  rounds=1; duration=5
  [ "$idle_set" = 1 ] || idle_conns=0
fi
for v in workers duration rounds idle_conns; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "bench/run.sh: --${v//_/-} needs a whole number" >&2; exit 2; }
done
[ -z "$rate" ] || [[ "$rate" =~ ^[1-9][0-9]{0,5}$ ]] || [ "$rate" = 1000000 ] \
  || { echo "bench/run.sh: --rate needs a whole number from 1 to 1000000" >&2; exit 2; }
[ "$workers" -ge 1 ] && [ "$duration" -ge 1 ] && [ "$rounds" -ge 1 ] || { echo "bench/run.sh: workers, duration and rounds must be >= 1" >&2; exit 2; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- build and tools
if [ "$build" = 1 ]; then
  log "building (cargo build --release --bins --example paced)"
  cargo build --release --bins --example paced || die "release build failed"
fi
RINGWAY=$ROOT/target/release/ringway
UPSTREAM=$ROOT/target/release/ringway-upstream
PACED=$ROOT/target/release/examples/paced
[ -x "$RINGWAY" ] && [ -x "$UPSTREAM" ] && [ -x "$PACED" ] \
  || die "missing $RINGWAY, $UPSTREAM or $PACED (build first or drop --no-build)"

if [ "$setup" = 1 ]; then
  setup_args=()
  [ "$no_oha" = 1 ] && setup_args+=(--no-oha)
  scripts/bench-setup.sh "${setup_args[@]}" || die "scripts/bench-setup.sh failed"
fi
for tool in wrk nginx curl taskset python3 timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run scripts/bench-setup.sh)"
done
have_oha=0
if [ "$no_oha" = 0 ]; then
  if command -v oha >/dev/null; then have_oha=1
  else log "NOTE: oha is not installed: its fixed-rate scenario is skipped, the evenly paced one runs (scripts/bench-setup.sh installs oha)"; fi
else
  log "NOTE: --no-oha: oha's fixed-rate scenario is skipped, the evenly paced one runs"
fi

hard_nofile=$(ulimit -Hn)
ulimit -n "$hard_nofile" || true
if [ "$idle_conns" -gt 0 ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((idle_conns + 200)) ]; then
  die "RLIMIT_NOFILE is $(ulimit -n): too low for --idle-conns $idle_conns"
fi

# ---------------------------------------------------------------- cores
ncpu=$(nproc)
proxy_cpus="" load_cpus="" pin_note="no pinning (--no-pin)"
if [ "$pin" = 1 ]; then
  if [ "$ncpu" -lt 2 ]; then
    pin_note="no pinning (only $ncpu CPU)"
  elif [ "$ncpu" -eq 2 ] || [ "$ncpu" -le "$workers" ]; then
    proxy_cpus=0; load_cpus=$(seq -s, 1 $((ncpu - 1)))
  else
    proxy_cpus=$(seq -s, 0 $((workers - 1))); load_cpus=$(seq -s, "$workers" $((ncpu - 1)))
  fi
  if [ -n "$proxy_cpus" ]; then
    pin_note="pinned with taskset: proxy under test (ringway / nginx master+workers) on CPU $proxy_cpus; wrk/oha, the upstream and the idle-conn client on CPU $load_cpus"
  fi
fi
log "$pin_note"
pin_proxy=() pin_load=()
[ -n "$proxy_cpus" ] && pin_proxy=(taskset -c "$proxy_cpus")
[ -n "$load_cpus" ] && pin_load=(taskset -c "$load_cpus")

# ---------------------------------------------------------------- scratch dir and cleanup
WORK=$(mktemp -d /tmp/ringway-bench.XXXXXX)
RAW=$WORK/raw
mkdir -p "$RAW"
SERVER_PIDS=() TIMEOUT_PIDS=()
cleanup() {
  local rc=$? pid i alive
  trap - EXIT INT TERM
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 1 100); do
    alive=0
    for pid in "${SERVER_PIDS[@]}" "${TIMEOUT_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${SERVER_PIDS[@]}" "${TIMEOUT_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "process $pid did not stop within 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
    log "scratch directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Upper bound for every long-running process this script starts (timeout kills it after).
n_meas=$((rounds * 3 * 3 + 3))
SERVER_BUDGET=$((n_meas * (duration + 15) + 900))

# start_bg NAME LOGFILE CMD... : runs CMD under timeout; sets STARTED_PID to CMD's own PID.
start_bg() {
  local name=$1 logfile=$2 tpid child="" i
  shift 2
  timeout -k 5 "$SERVER_BUDGET" "$@" >"$logfile" 2>&1 &
  tpid=$!
  TIMEOUT_PIDS+=("$tpid")
  for i in $(seq 1 100); do
    child=$(awk '{print $1}' "/proc/$tpid/task/$tpid/children" 2>/dev/null || true)
    [ -n "$child" ] && break
    kill -0 "$tpid" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$child" ] || { cat "$logfile" >&2 || true; die "$name did not start (log: $logfile)"; }
  SERVER_PIDS+=("$child")
  STARTED_PID=$child
}

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_http URL DEADLINE_S PID : until URL answers 2xx; dies if PID exits first.
wait_http() {
  local url=$1 deadline=$(( $(date +%s) + $2 )) pid=$3
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# proc_tree PID... : the PIDs and all their descendants.
proc_tree() {
  local todo=("$@") p c
  while [ ${#todo[@]} -gt 0 ]; do
    p=${todo[0]}; todo=("${todo[@]:1}")
    [ -d "/proc/$p" ] || continue
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do todo+=("$c"); done
  done
}
# cpu_ticks PID... : utime+stime (all threads) of the PIDs and their descendants.
cpu_ticks() {
  local t=0 p v
  for p in $(proc_tree "$@"); do
    v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
rss_kib() {
  local t=0 p v
  for p in $(proc_tree "$@"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# cpu_ns PID... : CPU time in nanoseconds (all threads) of the PIDs and their descendants,
# from schedstat: finer than the clock ticks of cpu_ticks, for the side-by-side pairs.
cpu_ns() {
  local t=0 p v
  for p in $(proc_tree "$@"); do
    v=$(cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}')
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# cpu_stat : the aggregate "cpu" line of /proc/stat as a JSON array.
cpu_stat() { awk '/^cpu / {printf "[%s", $2; for (i = 3; i <= 9; i++) printf ",%s", $i; print "]"; exit}' /proc/stat; }

# jget URL KEY.PATH : one field of a JSON document.
jget() {
  curl -fsS --max-time 5 "$1" | python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v)' "$2"
}

# jnum JSON KEY : a numeric field of a compact JSON document, by its (unique) key; "null" if absent.
jnum() { local v; v=$(grep -o "\"$2\":[0-9]*" <<<"$1" | head -n 1 | cut -d: -f2); echo "${v:-null}"; }
conn_id() { jnum "$(curl -fsS --max-time 5 "http://127.0.0.1:$UP_PORT/echo")" conn_id; }

# ---------------------------------------------------------------- start the three servers
read -r UP_PORT RW_PORT RW_ADMIN NGX_PORT <<<"$(free_ports 4)"

log "starting ringway-upstream on 127.0.0.1:$UP_PORT"
start_bg upstream "$WORK/upstream.log" "${pin_load[@]}" "$UPSTREAM" --listen "127.0.0.1:$UP_PORT" --workers 1 --name bench-upstream
UP_PID=$STARTED_PID
wait_http "http://127.0.0.1:$UP_PORT/size/100" 15 "$UP_PID" || { cat "$WORK/upstream.log" >&2; die "the upstream did not answer /size/100 (is ringway-upstream still a stub?)"; }
grep -q "listening on 127.0.0.1:$UP_PORT" "$WORK/upstream.log" || log "note: the upstream did not print 'listening on 127.0.0.1:$UP_PORT'"
[ "$(conn_id)" != null ] || die "the upstream's /echo has no conn_id"

cat >"$WORK/ringway.yaml" <<EOF
_format_version: "3.0"
services:
  - name: bench-origin
    url: http://127.0.0.1:$UP_PORT
    routes:
      - name: all
        paths: [/]
EOF
log "starting ringway (--workers $workers) on 127.0.0.1:$RW_PORT, admin 127.0.0.1:$RW_ADMIN"
mkdir -p "$WORK/ringway-data"
start_bg ringway "$WORK/ringway.log" "${pin_proxy[@]}" "$RINGWAY" run -c "$WORK/ringway.yaml" \
  --proxy-listen "127.0.0.1:$RW_PORT" --admin-listen "127.0.0.1:$RW_ADMIN" \
  --workers "$workers" --data-dir "$WORK/ringway-data" --log-level warn
RW_PID=$STARTED_PID
wait_http "http://127.0.0.1:$RW_ADMIN/status/ready" 20 "$RW_PID" || { cat "$WORK/ringway.log" >&2; die "ringway did not become ready"; }
RW_DRIVER=$(jget "http://127.0.0.1:$RW_ADMIN/status" driver 2>/dev/null || echo unknown)

NGX_PREFIX=$WORK/nginx
mkdir -p "$NGX_PREFIX"
reuseport=""
[ "$workers" -gt 1 ] && reuseport=reuseport   # ringway's workers each have a SO_REUSEPORT listener
sed -e "s|@WORKERS@|$workers|g" -e "s|@PREFIX@|$NGX_PREFIX|g" -e "s|@PORT@|$NGX_PORT|g" \
    -e "s|@UPPORT@|$UP_PORT|g" -e "s|@NOFILE@|$hard_nofile|g" -e "s|@REUSEPORT@|$reuseport|g" \
    -e "s|@WORKER_CONNECTIONS@|$(( hard_nofile > 4096 ? hard_nofile - 100 : 4000 ))|g" \
    bench/nginx.conf.in >"$NGX_PREFIX/nginx.conf"
nginx -p "$NGX_PREFIX" -e "$NGX_PREFIX/error.log" -c "$NGX_PREFIX/nginx.conf" -t -q 2>"$WORK/nginx-test.log" \
  || { cat "$WORK/nginx-test.log" >&2; die "nginx rejected $NGX_PREFIX/nginx.conf"; }
log "starting nginx (worker_processes $workers) on 127.0.0.1:$NGX_PORT"
start_bg nginx "$WORK/nginx.log" "${pin_proxy[@]}" nginx -p "$NGX_PREFIX" -e "$NGX_PREFIX/error.log" -c "$NGX_PREFIX/nginx.conf"
NGX_PID=$STARTED_PID
wait_http "http://127.0.0.1:$NGX_PORT/size/100" 15 "$NGX_PID" || { cat "$NGX_PREFIX/error.log" >&2; die "nginx did not answer"; }

# Every path answers the exact body size through every target.
for port in "$UP_PORT" "$RW_PORT" "$NGX_PORT"; do
  for size in 100 16384; do
    got=$(curl -fsS --max-time 5 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/size/$size") \
      || die "GET 127.0.0.1:$port/size/$size failed"
    [ "$got" = "$size" ] || die "127.0.0.1:$port/size/$size answered $got bytes, expected $size"
  done
done
log "sanity check passed: /size/100 and /size/16384 through direct, ringway and nginx"

target_port() { case $1 in direct) echo "$UP_PORT" ;; ringway) echo "$RW_PORT" ;; nginx) echo "$NGX_PORT" ;; esac; }
target_pid() { case $1 in direct) echo "$UP_PID" ;; ringway) echo "$RW_PID" ;; nginx) echo "$NGX_PID" ;; esac; }

check_alive() {
  local name
  for name in upstream:$UP_PID ringway:$RW_PID nginx:$NGX_PID; do
    kill -0 "${name#*:}" 2>/dev/null || die "${name%%:*} (pid ${name#*:}) is no longer running (logs in $WORK)"
  done
}

# The wrk script: prints the summary and p50/p90/p99/p99.9 (wrk --latency stops at p99) as JSON.
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
EOF

# measure ROUND SCENARIO TARGET TOOL PATH [RATE]
measure() {
  local round=$1 scenario=$2 target=$3 tool=$4 path=$5 qrate=${6:-0}
  local port pid base out st c0 c1 rw0="null" rw1="null" rwt0="null" rwt1="null" t0 t1 u0 u1 s0 s1 w0 w1 rc=0
  check_alive
  port=$(target_port "$target"); pid=$(target_pid "$target")
  base=$RAW/r$round-$scenario-$target
  c0=$(conn_id)
  if [ "$target" = ringway ]; then
    st=$(curl -fsS --max-time 5 "http://127.0.0.1:$RW_ADMIN/status" || true)
    rw0=$(jnum "$st" connections_opened); rwt0=$(jnum "$st" total_requests)
  fi
  s0=$(cpu_stat); t0=$(cpu_ticks "$pid"); u0=$(cpu_ticks "$UP_PID"); w0=$(date +%s.%N)
  if [ "$tool" = wrk ]; then
    out=$base.wrk.txt
    timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" --latency \
      -s "$WORK/report.lua" "http://127.0.0.1:$port$path" >"$out" 2>&1 || rc=$?
  elif [ "$tool" = paced ]; then
    out=$base.paced.json
    timeout -k 5 $((duration + 30)) "${pin_load[@]}" "$PACED" --addr "127.0.0.1:$port" \
      --path "$path" --duration "$duration" --rate "$qrate" --conns 32 --out "$out" 2>"$base.paced.err" || rc=$?
  else
    out=$base.oha.json
    timeout -k 5 $((duration + 30)) "${pin_load[@]}" oha -q "$qrate" --latency-correction -z "${duration}s" \
      -c 32 --no-tui --output-format json "http://127.0.0.1:$port$path" >"$out" 2>"$base.oha.err" || rc=$?
  fi
  w1=$(date +%s.%N); t1=$(cpu_ticks "$pid"); u1=$(cpu_ticks "$UP_PID"); s1=$(cpu_stat)
  c1=$(conn_id)
  [ "$c0" != null ] && [ "$c1" != null ] || die "could not read conn_id from the upstream's /echo"
  if [ "$target" = ringway ]; then
    st=$(curl -fsS --max-time 5 "http://127.0.0.1:$RW_ADMIN/status" || true)
    rw1=$(jnum "$st" connections_opened); rwt1=$(jnum "$st" total_requests)
  fi
  if [ "$rc" != 0 ]; then
    for f in "$out" "$base.$tool.err"; do if [ -s "$f" ]; then cat "$f" >&2; fi; done
    die "$tool against $target exited with status $rc (output: $out, errors: $base.$tool.err)"
  fi
  cat >"$base.meta.json" <<EOF
{"round":$round,"scenario":"$scenario","target":"$target","tool":"$tool","path":"$path","rate":$qrate,
 "output":"$(basename "$out")","clk_tck":$(getconf CLK_TCK),"wall_start":$w0,"wall_end":$w1,
 "cpu_ticks":$((t1 - t0)),"upstream_cpu_ticks":$((u1 - u0)),
 "conn_id_before":$c0,"conn_id_after":$c1,
 "ringway_conns_before":$rw0,"ringway_conns_after":$rw1,"ringway_total_before":$rwt0,"ringway_total_after":$rwt1,
 "rss_kib":$(rss_kib "$pid"),"upstream_rss_kib":$(rss_kib "$UP_PID"),
 "proc_stat_before":$s0,"proc_stat_after":$s1}
EOF
  log "  round $round  $scenario  $target: $(python3 bench/report.py --one "$base.meta.json")"
}

# ---------------------------------------------------------------- warm-up
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: 2 s of wrk per target"
for target in direct ringway nginx; do
  timeout -k 5 30 "${pin_load[@]}" wrk -t1 -c64 -d2s "http://127.0.0.1:$(target_port "$target")/size/100" >/dev/null 2>&1 \
    || die "warm-up wrk against $target failed"
done
rw_rss_start=$(rss_kib "$RW_PID"); ngx_rss_start=$(rss_kib "$NGX_PID")

# ---------------------------------------------------------------- closed-loop saturation
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for round in $(seq 1 "$rounds"); do
  log "round $round/$rounds: closed-loop saturation (wrk -t1 -c64 -d${duration}s)"
  for scenario in wrk-small wrk-16k; do
    path=/size/100; [ "$scenario" = wrk-16k ] && path=/size/16384
    for target in direct ringway nginx; do
      measure "$round" "$scenario" "$target" wrk "$path"
    done
  done
done

# ---------------------------------------------------------------- side by side
# ringway and nginx at the same time on the proxy core, each saturated by its own wrk (both
# on the load core): whatever this shared machine does happens to both at once, which the
# sequential runs above cannot separate from a few per cent (the method of bench/ab.sh and
# bench/floor.sh). The figure is each proxy's CPU per request over the same seconds.
# side_by_side ROUND SCENARIO PATH
side_by_side() {
  local round=$1 scenario=$2 path=$3 base r0 r1 n0 n1 wr wn rc=0
  check_alive
  base=$RAW/pair-r$round-$scenario
  r0=$(cpu_ns "$RW_PID"); n0=$(cpu_ns "$NGX_PID")
  timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" \
    -s "$WORK/report.lua" "http://127.0.0.1:$RW_PORT$path" >"$base.ringway.wrk.txt" 2>&1 &
  wr=$!
  timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" \
    -s "$WORK/report.lua" "http://127.0.0.1:$NGX_PORT$path" >"$base.nginx.wrk.txt" 2>&1 &
  wn=$!
  wait "$wr" || rc=$?
  wait "$wn" || rc=$?
  r1=$(cpu_ns "$RW_PID"); n1=$(cpu_ns "$NGX_PID")
  [ "$rc" = 0 ] || { cat "$base.ringway.wrk.txt" "$base.nginx.wrk.txt" >&2; die "wrk side by side exited with status $rc"; }
  printf '{"round":%s,"scenario":"%s","path":"%s","ringway_cpu_ns":%s,"nginx_cpu_ns":%s,"ringway_output":"%s","nginx_output":"%s"}\n' \
    "$round" "$scenario" "$path" "$((r1 - r0))" "$((n1 - n0))" \
    "$(basename "$base.ringway.wrk.txt")" "$(basename "$base.nginx.wrk.txt")" >"$base.json"
  log "  round $round  $scenario  side by side: $(python3 bench/report.py --pair "$base.json")"
}
for round in $(seq 1 "$rounds"); do
  log "round $round/$rounds: side by side (ringway and nginx at once, each under wrk -t1 -c64 -d${duration}s)"
  for scenario in wrk-small wrk-16k; do
    path=/size/100; [ "$scenario" = wrk-16k ] && path=/size/16384
    side_by_side "$round" "$scenario" "$path"
  done
done

# ---------------------------------------------------------------- fixed rate
if [ -z "$rate" ]; then
  rate=$(python3 bench/report.py --suggest-rate "$RAW")
  log "fixed rate: $rate req/s (half of nginx's median small-body saturation in this run)"
fi
# oha releases its fixed rate in bursts on its timer's ticks; bench/paced.rs spreads the same
# rate evenly, which is what shows the latency a proxy hop adds.
tools=(paced) how="bench/paced.rs --conns 32"
if [ "$have_oha" = 1 ]; then tools=(oha paced) how="oha -q --latency-correction -c 32, then $how"; fi
for round in $(seq 1 "$rounds"); do
  log "round $round/$rounds: fixed rate $rate req/s ($how; ${duration}s each)"
  for tool in "${tools[@]}"; do
    for target in direct ringway nginx; do
      measure "$round" "$tool-rate" "$target" "$tool" /size/100 "$rate"
    done
  done
done
rw_rss_end=$(rss_kib "$RW_PID"); ngx_rss_end=$(rss_kib "$NGX_PID")

# ---------------------------------------------------------------- idle keep-alive memory
if [ "$idle_conns" -gt 0 ]; then
  for target in ringway nginx; do
    check_alive
    log "idle connections: $idle_conns idle keep-alive connections to $target"
    timeout -k 5 300 "${pin_load[@]}" python3 bench/idle_conns.py --port "$(target_port "$target")" \
      --conns "$idle_conns" --pids "$(target_pid "$target")" --out "$RAW/idle-$target.json" \
      >"$RAW/idle-$target.log" 2>&1 || { cat "$RAW/idle-$target.log" >&2; die "idle_conns.py against $target failed"; }
    log "  $(tail -n 1 "$RAW/idle-$target.log")"
    sleep 1
  done
fi
check_alive
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
rw_log_problems=$(grep -c -E 'WARN|ERROR|panick' "$WORK/ringway.log" || true)
ngx_errors=$(grep -c -E '\[(error|crit|alert|emerg)\]' "$NGX_PREFIX/error.log" || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (+ uncommitted changes)"
python3 - "$RAW/meta.json" <<PY
import json, sys
meta = {
  "started_at": "$started_at",
  "nproc": $ncpu,
  "cpu_model": $(python3 -c 'import json;print(json.dumps(next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")))'),
  "kernel": "$(uname -r)",
  "commit": "$commit",
  "ringway_version": $(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$("$RINGWAY" version 2>&1 | head -n 1)"),
  "ringway_driver": "$RW_DRIVER",
  "nginx_version": "$(nginx -v 2>&1 | sed 's/^nginx version: //')",
  "wrk_version": "$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')",
  "oha_version": "$( [ "$have_oha" = 1 ] && oha --version | head -n 1 || echo none)",
  "workers": $workers, "duration_s": $duration, "rounds": $rounds,
  "rate": ${rate:-0}, "oha": bool($have_oha), "idle_conns": $idle_conns,
  "pinning": "$pin_note", "loadavg_start": "$load_start", "loadavg_end": "$load_end",
  "ringway_rss_start_kib": $rw_rss_start, "ringway_rss_end_kib": $rw_rss_end,
  "nginx_rss_start_kib": $ngx_rss_start, "nginx_rss_end_kib": $ngx_rss_end,
  "ringway_log_warnings": ${rw_log_problems:-0}, "nginx_error_log_errors": ${ngx_errors:-0},
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY
if [ "${rw_log_problems:-0}" -gt 0 ]; then
  log "ringway logged $rw_log_problems warning/error lines; the last ones:"
  grep -E 'WARN|ERROR|panick' "$WORK/ringway.log" | tail -n 5 >&2
  tail -n 20 "$WORK/ringway.log" >"$RAW/ringway-log-tail.txt"
fi
mkdir -p bench/results
python3 bench/report.py "$RAW" --md bench/results/latest.md --json bench/results/latest.json
log "wrote bench/results/latest.md and bench/results/latest.json"
