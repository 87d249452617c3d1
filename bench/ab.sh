#!/usr/bin/env bash
# CPU per request of two ringway builds, side by side: the way to judge a change to the
# proxy path. Both gateways run on the same pinned core at the same time, each saturated
# by its own wrk (wrk and the upstream on the other core), so whatever this shared machine
# does happens to both at once (the method of bench/plugins.sh and bench/floor.sh); the
# order in which the two wrk runs start alternates by round. Medians over rounds, min-max
# shown. A ratio below 1 means the candidate costs less per request than the base.
# Usage: bench/ab.sh --base BIN [--candidate BIN] [--duration S] [--rounds R] [--path P]...
#   --base       the ringway binary to compare against (say, a build of main kept aside)
#   --candidate  default target/release/ringway (built first unless --no-build)
#   --path       the upstream path to load, repeatable (default /size/100 and /size/16384)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=4
rounds=5
base=""
candidate=target/release/ringway
build=true
paths=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=$2; shift ;;
    --candidate) candidate=$2; build=false; shift ;;
    --duration) duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --path) paths+=("$2"); shift ;;
    --no-build) build=false ;;
    *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$duration" =~ ^[0-9]+$ && "$rounds" =~ ^[0-9]+$ && "$duration" -gt 0 && "$rounds" -gt 0 ]] \
  || { echo "ab.sh: --duration and --rounds take whole numbers above 0" >&2; exit 2; }
[ -n "$base" ] || { echo "ab.sh: --base BIN is required (a ringway binary to compare against)" >&2; exit 2; }
[ ${#paths[@]} -gt 0 ] || paths=(/size/100 /size/16384)
for p in "${paths[@]}"; do
  [[ "$p" =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "ab.sh: --path takes a plain path, got $p" >&2; exit 2; }
done

NAME=ab
source bench/common.sh
require wrk curl python3
$build && cargo build --release --bins >&2
for bin in "$base" "$candidate"; do
  [ -x "$bin" ] || { echo "ab.sh: $bin is not an executable" >&2; exit 1; }
done
[ -x target/release/ringway-upstream ] || { echo "ab.sh: target/release/ringway-upstream is missing (run without --no-build)" >&2; exit 1; }

up_port=$(free_port)
printf '_format_version: "3.0"\nservices:\n  - name: origin\n    url: http://127.0.0.1:%s\n    routes:\n      - name: all\n        paths: [/]\n' \
  "$up_port" >"$work/ringway.yaml"
timeout 3600 "${pin_load[@]}" target/release/ringway-upstream --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)

declare -A port pid
for side in base candidate; do
  port[$side]=$(free_port)
  bin=$base; [ "$side" = candidate ] && bin=$candidate
  # Not under `timeout`: $! must be the gateway itself (taskset execs it) for its CPU.
  "${pin_proxy[@]}" "$bin" run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:${port[$side]}" \
    --admin-listen "127.0.0.1:$(free_port)" --workers 1 --data-dir "$work/data-$side" --log-level warn &
  pid[$side]=$!
  pids+=($!)
done
for side in base candidate; do wait_full "the $side gateway" "${port[$side]}"; done

# pair FIRST SECOND PATH: both under their own wrk at once; prints "PATH base_ns candidate_ns".
pair() {
  local first=$1 second=$2 path=$3 first_ns second_ns
  read -r first_ns second_ns _ _ < <(wrk_pair "${port[$first]}" "${pid[$first]}" "${port[$second]}" "${pid[$second]}" "$path")
  if [ "$first" = base ]; then echo "$path $first_ns $second_ns"; else echo "$path $second_ns $first_ns"; fi
}

for path in "${paths[@]}"; do
  for side in base candidate; do "${pin_load[@]}" wrk -t1 -c64 -d1s "http://127.0.0.1:${port[$side]}$path" >/dev/null; done
done
: >"$work/pairs.txt"
for round in $(seq 1 "$rounds"); do
  for path in "${paths[@]}"; do
    if (( round % 2 )); then result=$(pair base candidate "$path"); else result=$(pair candidate base "$path"); fi
    echo "$result" >>"$work/pairs.txt"
    echo "round $round: $result" | awk '{printf "round %s %s: base %s ns/req, candidate %s ns/req\n", $2, $3, $4, $5}' >&2
  done
done

python3 - "$work/pairs.txt" "$base" "$candidate" <<'PY'
import statistics, sys
med = statistics.median
rows = [line.split() for line in open(sys.argv[1])]
print(f"\nbase {sys.argv[2]}, candidate {sys.argv[3]}: CPU ns per request side by side, "
      "medians of the rounds (min-max)\n")
print("| path | base ns/req | candidate ns/req | candidate / base |")
print("|---|---|---|---|")
for path in dict.fromkeys(r[0] for r in rows):
    b = [int(r[1]) for r in rows if r[0] == path]
    c = [int(r[2]) for r in rows if r[0] == path]
    ratio = [y / x for x, y in zip(b, c)]
    print(f"| {path} | {med(b):,.0f} | {med(c):,.0f} | {med(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}) |")
PY
