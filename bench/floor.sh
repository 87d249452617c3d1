#!/usr/bin/env bash
# CPU per request of ringway and nginx against the floor: a byte relay that does no HTTP
# work (bench/relay.rs: one upstream connection per client connection, recv and send on
# io_uring with ringway's ring setup). What the relay costs is the kernel's socket work
# for one proxied request on this machine; what ringway costs above it is its own.
# Each figure comes from a pair run side by side: two proxies on the same pinned core,
# each saturated by its own wrk (wrk and the upstream on the other core), so whatever
# this shared machine does happens to both at once (the method of bench/plugins.sh).
# Pairs: ringway beside the relay, nginx beside the relay, ringway beside nginx; for a
# small (100 B) and a 16 KiB body; the order rotates by round. Medians over rounds,
# min-max shown. nginx is configured as in bench/run.sh (bench/nginx.conf.in).
# Then the latency each adds over going straight to the upstream, one at a time, under
# evenly paced load (bench/paced.rs, 32 connections) at --rate requests a second (default:
# nginx's median small-body rate beside ringway, about half of what it manages alone).
# Last, at --near-rate (default 5000, light enough for the load generator's core to carry
# a relay too): the relay on the proxy's core against the relay on the load generator's
# core, whose hops cross no core: the difference is what the cross-core wake-ups cost.
# Usage: bench/floor.sh [--duration S] [--rounds R] [--rate Q] [--near-rate Q] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=4
rounds=5
rate=""
near_rate=5000
build=true
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --rate) rate=$2; shift ;;
    --near-rate) near_rate=$2; shift ;;
    --no-build) build=false ;;
    *) echo "floor.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$duration" =~ ^[0-9]+$ && "$rounds" =~ ^[0-9]+$ && "$duration" -gt 0 && "$rounds" -gt 0 ]] \
  || { echo "floor.sh: --duration and --rounds take whole numbers above 0" >&2; exit 2; }
for r in "$rate" "$near_rate"; do
  [ -z "$r" ] || { [[ "$r" =~ ^[1-9][0-9]{0,5}$ ]] || [ "$r" = 1000000 ]; } \
    || { echo "floor.sh: --rate and --near-rate take a whole number from 1 to 1000000" >&2; exit 2; }
done

NAME=floor
source bench/common.sh
require wrk curl python3 nginx
if $build; then
  cargo build --release --bins >&2
  cargo build --release --example relay --example paced >&2
fi
for example in relay paced; do
  [ -x target/release/examples/$example ] || { echo "floor.sh: target/release/examples/$example is missing (run without --no-build)" >&2; exit 1; }
done

up_port=$(free_port); rw_port=$(free_port); admin_port=$(free_port)
ngx_port=$(free_port); relay_port=$(free_port); near_port=$(free_port)

printf '_format_version: "3.0"\nservices:\n  - name: origin\n    url: http://127.0.0.1:%s\n    routes:\n      - name: all\n        paths: [/]\n' \
  "$up_port" >"$work/ringway.yaml"
mkdir -p "$work/nginx"
sed -e "s|@PREFIX@|$work/nginx|g" -e "s|@WORKERS@|1|" -e "s|@NOFILE@|4096|" \
  -e "s|@WORKER_CONNECTIONS@|1024|" -e "s|@UPPORT@|$up_port|" -e "s|@PORT@|$ngx_port|" \
  -e "s|@REUSEPORT@||" bench/nginx.conf.in >"$work/nginx/nginx.conf"

timeout 3600 "${pin_load[@]}" target/release/ringway-upstream --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
# Not under `timeout`: $! must be the server itself (taskset execs it) for the CPU figures;
# the exit trap stops them.
"${pin_proxy[@]}" target/release/ringway run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:$rw_port" \
  --admin-listen "127.0.0.1:$admin_port" --workers 1 --data-dir "$work/data" --log-level warn &
rw_pid=$!
pids+=($rw_pid)
"${pin_proxy[@]}" nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
ngx_pid=$!
pids+=($ngx_pid)
"${pin_proxy[@]}" target/release/examples/relay --listen "127.0.0.1:$relay_port" --upstream "127.0.0.1:$up_port" &
relay_pid=$!
pids+=($relay_pid)
# The same relay on the other core, beside the load generator and the upstream (latency only).
"${pin_load[@]}" target/release/examples/relay --listen "127.0.0.1:$near_port" --upstream "127.0.0.1:$up_port" &
pids+=($!)

port_of() {
  case $1 in
    ringway) echo "$rw_port" ;; nginx) echo "$ngx_port" ;; relay) echo "$relay_port" ;;
    relay-near) echo "$near_port" ;; direct) echo "$up_port" ;;
  esac
}
for name in ringway nginx relay relay-near; do wait_full "$name" "$(port_of "$name")"; done

# The processes whose CPU counts: nginx is its master and its workers.
pids_of() {
  case $1 in
    ringway) echo "$rw_pid" ;;
    relay) echo "$relay_pid" ;;
    nginx) echo "$ngx_pid" $(pgrep -P "$ngx_pid") ;;
  esac
}
# pair A B PATH: A and B at once, each under its own wrk. Prints "A B PATH a_ns b_ns a_rps b_rps".
pair() {
  local a=$1 b=$2 path=$3 a_ns b_ns ra rb
  read -r a_ns b_ns ra rb < <(wrk_pair "$(port_of "$a")" "$(pids_of "$a")" "$(port_of "$b")" "$(pids_of "$b")" "$path")
  echo "$a $b $path $a_ns $b_ns $(( ra / duration )) $(( rb / duration ))"
}

for path in /size/100 /size/16384; do
  for name in ringway nginx relay; do
    "${pin_load[@]}" wrk -t1 -c64 -d1s "http://127.0.0.1:$(port_of "$name")$path" >/dev/null
  done
done
pairs=("ringway relay" "nginx relay" "ringway nginx")
results=()
for round in $(seq 1 "$rounds"); do
  for path in /size/100 /size/16384; do
    for i in "${!pairs[@]}"; do
      read -r a b <<<"${pairs[$(((i + round) % ${#pairs[@]}))]}"
      result=$(pair "$a" "$b" "$path")
      results+=("$result")
      echo "round $round: $result" | awk '{printf "round %s %s: %s %s ns/req (%s req/s) beside %s %s ns/req (%s req/s)\n", $2, $5, $3, $6, $8, $4, $7, $9}' >&2
    done
  done
done

printf '%s\n' "${results[@]}" >"$work/pairs.txt"
if [ -z "$rate" ]; then
  rate=$(awk '$3 == "/size/100" && ($1 == "nginx" || $2 == "nginx") && ($1 == "ringway" || $2 == "ringway") {
    v = ($1 == "nginx") ? $6 : $7; print v }' "$work/pairs.txt" | sort -n | awk '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d\n", int(m / 100 + 0.5) * 100 }')
  [ "${rate:-0}" -gt 0 ] || { echo "floor.sh: no nginx rate measured to pace the latency runs at (give --rate)" >&2; exit 1; }
fi
# latency RATE FILE TARGET...: one target at a time under paced load at RATE, the order
# rotating by round; a line "round target p50_us p99_us rate" per run into FILE.
latency() {
  local rate=$1 file=$2 round i name
  shift 2
  local targets=("$@")
  : >"$file"
  for round in $(seq 1 "$rounds"); do
    for i in "${!targets[@]}"; do
      name=${targets[$(((i + round) % ${#targets[@]}))]}
      timeout -k 5 $((duration + 30)) "${pin_load[@]}" target/release/examples/paced --addr "127.0.0.1:$(port_of "$name")" \
        --duration "$duration" --rate "$rate" --conns 32 --out "$work/paced.json"
      python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); s = d["scheduled"]
if d["errors"]: sys.exit("floor.sh: %d errors in the paced run against %s" % (d["errors"], sys.argv[3]))
print(sys.argv[2], sys.argv[3], s["p50_us"], s["p99_us"], d["rate"])' "$work/paced.json" "$round" "$name" >>"$file"
      echo "round $round: paced $rate req/s: $(tail -n 1 "$file" | awk '{printf "%s p50 %s us, p99 %s us", $2, $3, $4}')" >&2
    done
  done
}
latency "$rate" "$work/latency.txt" direct relay ringway nginx
latency "$near_rate" "$work/near.txt" direct relay relay-near

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 - "$work/pairs.txt" "$commit" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" "$(uname -r)" \
  "$duration" "$rounds" "$work/latency.txt" "$rate" "$work/near.txt" "$near_rate" <<'PY'
import json, statistics, sys
med = statistics.median
rows = [line.split() for line in open(sys.argv[1])]
commit, cpu, kernel = sys.argv[2:5]
out = {"commit": commit, "cpu": cpu, "kernel": kernel, "duration_s": int(sys.argv[5]),
       "rounds": int(sys.argv[6]), "pairs": []}
print(f"CPU per request beside the floor (commit {commit}, {cpu}, kernel {kernel}; each pair "
      "side by side on one pinned core; medians of the rounds, min-max)\n")
print("| body | ringway ns/req | nginx ns/req | relay (floor) ns/req | ringway / relay | nginx / relay | ringway / nginx |")
print("|---|---|---|---|---|---|---|")
for path, label in (("/size/100", "100 B"), ("/size/16384", "16 KiB")):
    ratios, costs = {}, {}
    for a, b, p, a_ns, b_ns, a_rps, b_rps in rows:
        if p != path:
            continue
        a_ns, b_ns = int(a_ns), int(b_ns)
        ratios.setdefault(f"{a}/{b}", []).append(a_ns / b_ns)
        costs.setdefault(a, []).append(a_ns)
        costs.setdefault(b, []).append(b_ns)
        out["pairs"].append({"path": p, "a": a, "b": b, "a_ns_per_req": a_ns, "b_ns_per_req": b_ns,
                             "a_req_s": int(a_rps), "b_req_s": int(b_rps)})
    cell = lambda v: f"{med(v):.3f} ({min(v):.3f}-{max(v):.3f})"
    print(f"| {label} | {med(costs['ringway']):,.0f} | {med(costs['nginx']):,.0f} | {med(costs['relay']):,.0f} "
          f"| {cell(ratios['ringway/relay'])} | {cell(ratios['nginx/relay'])} | {cell(ratios['ringway/nginx'])} |")
    out[label] = {k: med(v) for k, v in ratios.items()}
print()
for label in ("100 B", "16 KiB"):
    r = out[label]
    print(f"- {label}: ringway costs {r['ringway/relay']:.2f}x the floor, nginx {r['nginx/relay']:.2f}x; "
          f"ringway/nginx side by side {r['ringway/nginx']:.3f}; the floor is {1 / r['nginx/relay']:.2f}x nginx")

# Added latency: each target's paced p50 / p99 minus direct's in the same round, medians.
def added_latency(path, names):
    """{(name, "p50"|"p99"): [per-round differences]}, direct's medians, the raw lines."""
    lines = [line.split() for line in open(path)]
    by = {(r[0], r[1]): (float(r[2]), float(r[3])) for r in lines}
    rounds_seen = sorted({r[0] for r in lines})
    added = {(n, q): [by[(rd, n)][i] - by[(rd, "direct")][i] for rd in rounds_seen
                      if (rd, n) in by and (rd, "direct") in by]
             for n in names for i, q in enumerate(("p50", "p99"))}
    direct = {q: med([by[(rd, "direct")][i] for rd in rounds_seen if (rd, "direct") in by])
              for i, q in enumerate(("p50", "p99"))}
    return added, direct, lines

def span(values):
    return f"{med(values):+.0f} ({min(values):+.0f} to {max(values):+.0f})"

rate, near_rate = int(sys.argv[8]), int(sys.argv[10])
names = ("relay", "ringway", "nginx")
added, direct, lines = added_latency(sys.argv[7], names)
print(f"\nLatency added over direct at {rate:,} req/s, evenly paced (bench/paced.rs, 32 connections; "
      "from each request's scheduled instant; one target at a time; medians of per-round differences, min-max)\n")
print("| | direct µs | relay | ringway | nginx | relay / nginx | ringway / nginx |")
print("|---|---|---|---|---|---|---|")
out["latency"] = {"rate": rate, "raw": lines}
for q in ("p50", "p99"):
    a = {n: med(added[(n, q)]) for n in names}
    rel = lambda n: f"{a[n] / a['nginx']:.2f}" if a["nginx"] > 0 else "n/a"
    print(f"| {q} | {direct[q]:.0f} | {span(added[('relay', q)])} | {span(added[('ringway', q)])} "
          f"| {span(added[('nginx', q)])} | {rel('relay')} | {rel('ringway')} |")
    out["latency"][q] = {"direct_us": direct[q], **{f"{n}_added_us": a[n] for n in a}}

names = ("relay", "relay-near")
added, direct, lines = added_latency(sys.argv[9], names)
print(f"\nThe same relay on the proxy's core and on the load generator's core, at {near_rate:,} req/s "
      "(its hops there cross no core)\n")
print("| | direct µs | relay, proxy's core | relay, load generator's core |")
print("|---|---|---|---|")
out["cross_core"] = {"rate": near_rate, "raw": lines}
for q in ("p50", "p99"):
    print(f"| {q} | {direct[q]:.0f} | {span(added[('relay', q)])} | {span(added[('relay-near', q)])} |")
    out["cross_core"][q] = {"direct_us": direct[q], "relay_added_us": med(added[("relay", q)]),
                            "relay_near_added_us": med(added[("relay-near", q)])}
json.dump(out, open("bench/results/floor.json", "w"), indent=1)
PY
echo "(raw pairs in bench/results/floor.json)" >&2
