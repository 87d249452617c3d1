#!/usr/bin/env bash
# CPU profile of ringway under wrk load, rendered as a flame graph.
#
# usage: perf/profile.sh [--duration S] [--workers N] [--path /size/100] [--dwarf] [--no-pin] [--no-build]
#
#   --duration S   seconds of perf record (default 10); wrk runs 2 s longer
#   --dwarf        unwind with DWARF (--call-graph dwarf) instead of frame pointers (-g);
#                  deeper Rust stacks, bigger perf.data and a slower `perf script`
#
# Writes perf/out/perf.data, perf/out/stacks.folded, perf/out/flame.svg and perf/out/top20.txt.
# This VM has no hardware PMU, so the event is cpu-clock (a software timer), not cycles.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

duration=10 workers=1 path=/size/100 dwarf=0 pin=1 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --path) path=$2; shift 2 ;;
    --dwarf) dwarf=1; shift ;;
    --no-pin) pin=0; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "perf/profile.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ "$duration" =~ ^[0-9]+$ && "$workers" =~ ^[0-9]+$ ]] || { echo "perf/profile.sh: --duration/--workers need whole numbers" >&2; exit 2; }
log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in perf wrk curl python3 timeout; do command -v "$tool" >/dev/null || die "$tool missing (run scripts/bench-setup.sh)"; done
if [ "$build" = 1 ]; then log "building (cargo build --release --bins)"; cargo build --release --bins || die "build failed"; fi
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  log "installing inferno (cargo install inferno --locked)"
  timeout 1800 cargo install inferno --locked || die "could not install inferno"
fi

# Hardware counters?
if perf stat -e instructions -x, true 2>&1 | grep -q -E 'not supported|not counted|<not'; then
  log "no hardware performance counters here (perf stat -e instructions: not supported): sampling with the software event cpu-clock"
else
  log "hardware counters are available; still sampling cpu-clock for comparability"
fi

NAME=profile BUDGET_FACTOR=3
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"
read -r UP RW ADMIN <<<"$(python3 -c '
import socket; s=[socket.socket() for _ in range(3)]
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
log "ringway pid $RW_PID, driver $driver; warm-up 2 s"
timeout 30 "${pin_load[@]}" wrk -t1 -c64 -d2s "http://127.0.0.1:$RW$path" >/dev/null

freq=999 callgraph=(-g)
if [ "$dwarf" = 1 ]; then freq=499 callgraph=(--call-graph dwarf,16384); fi
callgraph+=(-F "$freq")
timeout -k 5 $((duration + 30)) "${pin_load[@]}" wrk -t1 -c64 -d"$((duration + 2))s" --latency "http://127.0.0.1:$RW$path" >"$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
sleep 1
rm -f "$OUT/perf.data" "$OUT/perf.data.old"
log "perf record -e cpu-clock ${callgraph[*]} -p $RW_PID for $duration s"
timeout -k 5 $((duration + 60)) perf record -e cpu-clock "${callgraph[@]}" -p "$RW_PID" -o "$OUT/perf.data" -- sleep "$duration" 2>"$WORK/perf-record.log" \
  || { cat "$WORK/perf-record.log" >&2; die "perf record failed"; }
wait "$WRK_PID" || die "wrk failed"
grep -E 'Requests/sec|requests in' "$OUT/wrk.txt" >&2 || true

log "rendering the flame graph"
timeout 900 perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/stacks.folded"
inferno-flamegraph --title "ringway ($driver, $workers worker(s)) under wrk -c64 $path, cpu-clock" <"$OUT/stacks.folded" >"$OUT/flame.svg"
timeout 600 perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.01 \
  >"$WORK/report.txt" 2>/dev/null || die "perf report failed"
awk '!/^#/ && NF && n < 20 {sub(/[ \t-]+$/, ""); print; n++}' "$WORK/report.txt" >"$OUT/top20.txt"
samples=$(awk '/^# Samples:/ {print $3; exit}' "$WORK/report.txt")
echo "top 20 symbols by self time ($samples cpu-clock samples at $freq Hz; ringway served $(awk '/requests in/ {print $1}' "$OUT/wrk.txt") requests in the wrk run):"
cat "$OUT/top20.txt"
log "wrote perf/out/flame.svg, perf/out/stacks.folded, perf/out/top20.txt, perf/out/perf.data"
