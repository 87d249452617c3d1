#!/usr/bin/env bash
# System calls per proxied request, for ringway (and nginx for comparison).
#
# usage: perf/syscalls.sh [--duration S] [--workers N] [--path /size/100] [--no-nginx] [--no-pin] [--no-build]
#
# Attaches `strace -c -f` to the proxy (all threads; all nginx processes) for a bounded
# wrk run (-t1 -c64, default 5 s), counts the requests the client completed, and prints
# syscalls per request per syscall name. strace slows the proxy down a lot (ptrace stop per
# syscall), so the request rate here means nothing; the per-request counts do.
# With the io_uring driver, socket reads/writes/accepts are io_uring submissions and show up
# only as io_uring_enter (one enter can carry many operations); so for ringway on io_uring the
# script also counts the ring's own work per request from the kernel's io_uring tracepoints
# (`perf record`, when perf is installed and the kernel lets it read them): operations
# submitted by opcode, receives that found the socket empty and waited (poll_arm), and
# io_uring_enter calls. A separate wrk run, without strace. (A completion's wake-up is
# not counted: the kernel runs it in whichever task sent the data, not the proxy.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

duration=5 workers=1 path=/size/100 with_nginx=1 pin=1 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --path) path=$2; shift 2 ;;
    --no-nginx) with_nginx=0; shift ;;
    --no-pin) pin=0; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "perf/syscalls.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ "$duration" =~ ^[0-9]+$ && "$workers" =~ ^[0-9]+$ ]] || { echo "perf/syscalls.sh: --duration/--workers need whole numbers" >&2; exit 2; }
log() { printf '[syscalls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in strace wrk curl python3 timeout; do command -v "$tool" >/dev/null || die "$tool missing (run scripts/bench-setup.sh)"; done
[ "$with_nginx" = 0 ] || command -v nginx >/dev/null || die "nginx missing (run scripts/bench-setup.sh or pass --no-nginx)"
if [ "$build" = 1 ]; then log "building (cargo build --release --bins)"; cargo build --release --bins || die "build failed"; fi

NAME=syscalls BUDGET_FACTOR=6
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"
read -r UP RW ADMIN NGX <<<"$(python3 -c '
import socket; s=[socket.socket() for _ in range(4)]
[x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])')"

start_bg "$WORK/upstream.log" "${pin_load[@]}" target/release/ringway-upstream --listen "127.0.0.1:$UP" --workers 1
wait_http "http://127.0.0.1:$UP/size/100" 15 || die "upstream did not come up"
printf '_format_version: "3.0"\nservices:\n  - name: origin\n    url: http://127.0.0.1:%s\n    routes:\n      - name: all\n        paths: [/]\n' "$UP" >"$WORK/ringway.yaml"
mkdir -p "$WORK/data"
start_bg "$WORK/ringway.log" "${pin_proxy[@]}" target/release/ringway run -c "$WORK/ringway.yaml" \
  --proxy-listen "127.0.0.1:$RW" --admin-listen "127.0.0.1:$ADMIN" --workers "$workers" \
  --data-dir "$WORK/data" --log-level warn
RW_PID=$STARTED_PID
wait_http "http://127.0.0.1:$ADMIN/status/ready" 20 || die "ringway did not become ready"
driver=$(curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("driver","?"))')
targets=("ringway:$RW:$RW_PID")
if [ "$with_nginx" = 1 ]; then
  mkdir -p "$WORK/nginx"
  sed -e "s|@WORKERS@|$workers|g" -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@PORT@|$NGX|g" -e "s|@UPPORT@|$UP|g" \
      -e "s|@NOFILE@|4096|g" -e "s|@WORKER_CONNECTIONS@|4000|g" -e "s|@REUSEPORT@||g" \
      bench/nginx.conf.in >"$WORK/nginx/nginx.conf"
  start_bg "$WORK/nginx.log" "${pin_proxy[@]}" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
  NGX_PID=$STARTED_PID
  wait_http "http://127.0.0.1:$NGX/size/100" 15 || die "nginx did not come up"
  targets+=("nginx:$NGX:$NGX_PID")
fi

for t in "${targets[@]}"; do
  IFS=: read -r name port pid <<<"$t"
  timeout 30 "${pin_load[@]}" wrk -t1 -c64 -d1s "http://127.0.0.1:$port$path" >/dev/null
  # every process of the target (nginx: master + workers); -f follows all threads
  pids=("$pid"); for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do pids+=("$c"); done
  attach=(); for p in "${pids[@]}"; do attach+=(-p "$p"); done
  log "$name: strace -c -f ${attach[*]} during wrk -t1 -c64 -d${duration}s"
  timeout -k 5 -s INT $((duration + 20)) strace -c -f -o "$OUT/strace-$name.txt" "${attach[@]}" 2>"$WORK/strace-$name.err" &
  spid=$!
  sleep 1
  timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$port$path" >"$OUT/wrk-syscalls-$name.txt" 2>&1 \
    || die "wrk against $name failed"
  kill -INT "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  requests=$(awk '/requests in/ {print $1}' "$OUT/wrk-syscalls-$name.txt")
  [ -n "$requests" ] && [ "$requests" -gt 0 ] || die "no requests completed against $name"
  python3 - "$OUT/strace-$name.txt" "$requests" "$name" "$driver" <<'PY'
import sys
path, requests, name, driver = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows, total = [], 0
for line in open(path):
    parts = line.split()
    # % time, seconds, usecs/call, calls, [errors], syscall
    if len(parts) >= 5 and parts[0][0].isdigit() and not line.lstrip().startswith("100.00"):
        calls = int(parts[3]); errors = int(parts[4]) if len(parts) == 6 else 0
        rows.append((parts[-1], calls, errors))
rows.sort(key=lambda r: -r[1])
total = sum(r[1] for r in rows)
label = f"{name} (driver {driver})" if name == "ringway" else name
print(f"\n{label}: {requests} requests completed by wrk while strace was attached")
print(f"{'syscall':<20} {'calls':>10} {'errors':>8} {'per request':>12}")
for s, c, e in rows:
    if c / requests >= 0.0005:
        print(f"{s:<20} {c:>10} {e:>8} {c / requests:>12.3f}")
print(f"{'total':<20} {total:>10} {'':>8} {total / requests:>12.3f}")
PY
done
if [ "$driver" = io_uring ]; then
  echo "note: with io_uring, socket I/O is submitted through the ring and only io_uring_enter shows up here."
  events=(io_uring:io_uring_submit_req io_uring:io_uring_poll_arm syscalls:sys_enter_io_uring_enter)
  record=()
  for e in "${events[@]}"; do record+=(-e "$e"); done
  if ! command -v perf >/dev/null; then
    log "perf missing: no count of io_uring operations (scripts/bench-setup.sh installs it)"
  elif ! timeout 30 perf record -q -o "$WORK/probe.data" "${record[@]}" -- true >/dev/null 2>"$WORK/probe.err"; then
    log "no count of io_uring operations: perf record of the io_uring tracepoints failed here" \
      "(it needs root or kernel.perf_event_paranoid=-1, and a kernel that has io_uring_submit_req):" \
      "$(head -n 1 "$WORK/probe.err")"
  else
    log "ringway: perf record of io_uring tracepoints during wrk -t1 -c64 -d${duration}s"
    timeout -k 5 $((duration + 20)) perf record -m 1024 -o "$WORK/uring.data" "${record[@]}" -p "$RW_PID" -- sleep $((duration + 2)) \
      >"$WORK/perf-record.log" 2>&1 &
    ppid=$!
    sleep 1
    timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$RW$path" >"$OUT/wrk-uring-ringway.txt" 2>&1 \
      || die "wrk against ringway failed"
    wait "$ppid" || die "perf record failed (see $WORK/perf-record.log)"
    # Events perf could not keep up with would make every count low: said, not hidden.
    if grep -qi "lost" "$WORK/perf-record.log"; then
      log "perf lost events; the counts below are low: $(grep -i -m 1 lost "$WORK/perf-record.log")"
    fi
    requests=$(awk '/requests in/ {print $1}' "$OUT/wrk-uring-ringway.txt")
    [ -n "$requests" ] && [ "$requests" -gt 0 ] || die "no requests completed against ringway"
    timeout 300 perf script -F event,trace -i "$WORK/uring.data" >"$WORK/uring.txt" 2>/dev/null || die "perf script failed"
    python3 - "$WORK/uring.txt" "$requests" <<'PY' | tee "$OUT/uring-ops-ringway.txt"
import collections, re, sys
path, requests = sys.argv[1], int(sys.argv[2])
counts = collections.Counter()
for line in open(path):
    event = re.search(r"(io_uring:\w+|syscalls:\w+):", line)
    if not event:
        continue
    opcode = re.search(r"opcode (\w+)", line)
    counts[(event.group(1).split(":")[1], opcode.group(1) if opcode else "")] += 1
labels = {
    "io_uring_submit_req": "submitted",
    "io_uring_poll_arm": "found nothing, waited",
    "sys_enter_io_uring_enter": "io_uring_enter calls",
}
print(f"\nringway: io_uring work per request ({requests} requests by wrk with perf attached)")
print(f"{'event':<24} {'opcode':<14} {'count':>10} {'per request':>12}")
for (event, opcode), n in sorted(counts.items(), key=lambda kv: (list(labels).index(kv[0][0]), -kv[1])):
    if n / requests >= 0.0005:
        print(f"{labels[event]:<24} {opcode:<14} {n:>10} {n / requests:>12.3f}")
PY
  fi
fi
log "raw strace summaries: perf/out/strace-*.txt"
