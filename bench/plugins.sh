#!/usr/bin/env bash
# Plugin cost: ringway with a plugin on the route against the same ringway without it.
# Each measurement runs the two side by side at the same time: two gateways on the same
# pinned core, each saturated by its own wrk, so whatever this shared machine does
# (another tenant, the clock, a neighbour on the core's sibling) happens to both at
# once. The figure is CPU per request of the plugin's gateway against the plain one's in
# the same seconds, and its inverse, capacity: requests per CPU-second, which is the
# throughput ratio of a saturated proxy core. Medians over rounds, min-max shown.
# It measures `jwt` (HS256, a token on every request), `rate-limiting` (limit_by ip, a
# limit high enough never to refuse, so every request goes through the bucket check), and
# observability: a second ringway with `prometheus` (every flag on) and `correlation-id`
# (a generated UUID, echoed), and a third with the access log (to a file) on as well,
# each against the plain route of the first.
# Then, when oha is installed (scripts/bench-setup.sh), the observed gateway at a fixed
# rate (a quarter of its throughput above): quiet, with a control reader (/status/ready),
# and with a reader fetching /metrics and /histograms every 100 ms (each read waits for
# the workers to fold their records, so a little under ten a second): the
# latency percentiles side by side, to show whether reading the numbers moves the
# proxy's p99.
# Usage: bench/plugins.sh [--duration S] [--rounds R] [--no-build] [--no-scrape]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=4
rounds=5
build=true
scrape=true
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-build) build=false ;;
    --no-scrape) scrape=false ;;
    *) echo "plugins.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

NAME=plugins
source bench/common.sh
require wrk curl python3
$build && cargo build --release --bins >&2

up_port=$(free_port); rw_port=$(free_port); admin_port=$(free_port)
obs_port=$(free_port); obs_admin_port=$(free_port)
rw2_port=$(free_port); admin2_port=$(free_port)
met_port=$(free_port); met_admin_port=$(free_port)

cat >"$work/ringway.yaml" <<YAML
_format_version: "3.0"
services:
  - name: origin
    url: http://127.0.0.1:$up_port
    routes:
      - name: plain
        paths: [/plain]
      - name: jwt
        paths: [/jwt]
        plugins:
          - name: jwt
      - name: limited
        paths: [/limited]
        plugins:
          - name: rate-limiting
            config: {second: 100000000, limit_by: ip}
consumers:
  - username: bench
    jwt_secrets:
      - key: bench
        secret: bench-secret-0123456789
YAML

# The access log goes to memory (tmpfs) when there is some, and is emptied after each
# run: at ~10 MB/s of lines a disk's writeback (kernel threads on either core, I/O
# pressure on the whole machine) would otherwise be measured along with the proxy.
log_dir=$work
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  log_dir=$(mktemp -d /dev/shm/ringway-plugins.XXXXXX)
  scratch+=("$log_dir")
fi
log_file=$log_dir/access.log

cat >"$work/metrics.yaml" <<YAML
_format_version: "3.0"
services:
  - name: origin
    url: http://127.0.0.1:$up_port
    routes:
      - name: plain
        paths: [/plain]
plugins:
  - name: prometheus
    config: {per_consumer: true, status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}
  - name: correlation-id
    config: {header_name: X-Request-ID, generator: uuid, echo_downstream: true}
YAML
# The same, and the access log.
{ printf '_format_version: "3.0"\nringway:\n  access_log: %s\n' "$log_file"
  sed 1d "$work/metrics.yaml"; } >"$work/observed.yaml"

timeout 600 "${pin_load[@]}" target/release/ringway-upstream --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
# Not under `timeout`: $! must be ringway itself (taskset execs it) for the CPU figures;
# the exit trap stops it.
"${pin_proxy[@]}" target/release/ringway run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:$rw_port" \
  --admin-listen "127.0.0.1:$admin_port" --workers 1 --data-dir "$work/data" --log-level warn &
rw_pid=$!
pids+=($rw_pid)
# A second gateway with the same config: the plugin routes' side of a pair.
"${pin_proxy[@]}" target/release/ringway run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:$rw2_port" \
  --admin-listen "127.0.0.1:$admin2_port" --workers 1 --data-dir "$work/data2" --log-level warn &
rw2_pid=$!
pids+=($rw2_pid)
"${pin_proxy[@]}" target/release/ringway run -c "$work/observed.yaml" --proxy-listen "127.0.0.1:$obs_port" \
  --admin-listen "127.0.0.1:$obs_admin_port" --workers 1 --data-dir "$work/data-observed" --log-level warn &
obs_pid=$!
pids+=($obs_pid)
"${pin_proxy[@]}" target/release/ringway run -c "$work/metrics.yaml" --proxy-listen "127.0.0.1:$met_port" \
  --admin-listen "127.0.0.1:$met_admin_port" --workers 1 --data-dir "$work/data-metrics" --log-level warn &
met_pid=$!
pids+=($met_pid)
for port in $admin_port $admin2_port $obs_admin_port $met_admin_port; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/status/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
for port in $obs_port $met_port; do
  curl -s -D - -o /dev/null "http://127.0.0.1:$port/plain/size/100" | grep -qi '^X-Request-ID' \
    || { echo "plugins.sh: the observed gateway did not echo a request ID" >&2; exit 1; }
done
for _ in $(seq 1 50); do [ -s "$log_file" ] && break; sleep 0.1; done
[ -s "$log_file" ] || { echo "plugins.sh: the access log stayed empty" >&2; exit 1; }

token=$(target/release/ringway jwt sign --secret bench-secret-0123456789 --key bench --ttl 86400 --claim sub=user123)
auth="Authorization: Bearer $token"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" "http://127.0.0.1:$rw2_port/jwt/size/100")" = 200 ] \
  || { echo "plugins.sh: the jwt route did not answer 200 with a token" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$rw2_port/jwt/size/100")" = 401 ] \
  || { echo "plugins.sh: the jwt route did not answer 401 without a token" >&2; exit 1; }

[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$rw2_port/limited/size/100")" = 200 ] \
  || { echo "plugins.sh: the rate-limited route did not answer 200" >&2; exit 1; }
curl -s -D - -o /dev/null "http://127.0.0.1:$rw2_port/limited/size/100" | grep -qi '^X-RateLimit-Limit-Second' \
  || { echo "plugins.sh: the rate-limited route did not send its headers" >&2; exit 1; }

# User-space clock ticks of a process (its whole CPU is common.sh's cpu_ns).
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# wrk_load OUT PORT PATH [HEADER]: wrk for the duration, its output to OUT.
wrk_load() {
  local out=$1 port=$2 path=$3 header=${4:-}
  if [ -n "$header" ]; then
    "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" -H "$header" "http://127.0.0.1:$port$path" >"$out"
  else
    "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$port$path" >"$out"
  fi
}
# pair NAME: the plain route on the first gateway and NAME's on its own, at once. Prints
# "NAME plain_rps plain_ns plain_user_ns rps ns user_ns" (CPU per request).
pair() {
  local name=$1 port=$rw2_port pid=$rw2_pid path=/plain/size/100 header=""
  case $name in
    jwt) path=/jwt/size/100; header=$auth ;;
    rate-limiting) path=/limited/size/100 ;;
    metrics) port=$met_port; pid=$met_pid ;;
    observability) port=$obs_port; pid=$obs_pid ;;
  esac
  local a0 b0 ua0 ub0 a1 b1 ua1 ub1 wa wb
  a0=$(cpu_ns "$rw_pid"); b0=$(cpu_ns "$pid"); ua0=$(user_ticks "$rw_pid"); ub0=$(user_ticks "$pid")
  wrk_load "$work/wrk-plain.txt" "$rw_port" /plain/size/100 &
  wa=$!
  wrk_load "$work/wrk-$name.txt" "$port" "$path" "$header" &
  wb=$!
  wait "$wa" "$wb"
  a1=$(cpu_ns "$rw_pid"); b1=$(cpu_ns "$pid"); ua1=$(user_ticks "$rw_pid"); ub1=$(user_ticks "$pid")
  : >"$log_file"
  for f in plain "$name"; do
    if grep -q "Non-2xx" "$work/wrk-$f.txt"; then echo "plugins.sh: non-2xx answers on $f" >&2; exit 1; fi
  done
  python3 -c "
ra = int('$(awk '/requests in/ {print $1}' "$work/wrk-plain.txt")')
rb = int('$(awk '/requests in/ {print $1}' "$work/wrk-$name.txt")')
tick = 1e9 / $(getconf CLK_TCK)
print('$name', round(ra / $duration), round(($a1 - $a0) / ra), round(($ua1 - $ua0) * tick / ra),
      round(rb / $duration), round(($b1 - $b0) / rb), round(($ub1 - $ub0) * tick / rb))"
}

"${pin_load[@]}" wrk -t1 -c64 -d2s "http://127.0.0.1:$rw_port/plain/size/100" >/dev/null
"${pin_load[@]}" wrk -t1 -c64 -d2s -H "$auth" "http://127.0.0.1:$rw2_port/jwt/size/100" >/dev/null
"${pin_load[@]}" wrk -t1 -c64 -d2s "http://127.0.0.1:$obs_port/plain/size/100" >/dev/null
"${pin_load[@]}" wrk -t1 -c64 -d2s "http://127.0.0.1:$met_port/plain/size/100" >/dev/null
: >"$log_file"
# The plugin order rotates by round.
scenarios=(jwt rate-limiting metrics observability)
pairs=()
for round in $(seq 1 "$rounds"); do
  line="round $round:"
  for i in "${!scenarios[@]}"; do
    name=${scenarios[$(((i + round) % ${#scenarios[@]}))]}
    result=$(pair "$name")
    pairs+=("$result")
    read -r _ prps pns _ rps ns _ <<<"$result"
    line="$line $name $rps req/s $ns ns/req vs plain $prps req/s $pns ns/req |"
  done
  echo "$line" >&2
done
printf '%s\n' "${pairs[@]}" | python3 -c '
import sys, statistics
med = statistics.median
names = (("jwt", "jwt"), ("rate-limiting", "rate-limiting"),
         ("metrics", "prometheus + correlation-id"),
         ("observability", "prometheus + correlation-id + access log"))
rows = {}
for line in sys.stdin:
    name, prps, pns, puser, rps, ns, user = line.split()
    prps, pns, puser, rps, ns, user = map(float, (prps, pns, puser, rps, ns, user))
    rows.setdefault(name, []).append((prps, pns, puser, rps, ns, user))
print("| route | CPU ns/req (plain beside it) | capacity / plain (min-max) | req/s / plain | user CPU added, ns/req |")
print("|---|---|---|---|---|")
for n, label in names:
    v = rows[n]
    cap = [p[1] / p[4] for p in v]
    print(f"| {label} | {med(p[4] for p in v):,.0f} ({med(p[1] for p in v):,.0f}) "
          f"| {med(cap):.3f} ({min(cap):.3f}-{max(cap):.3f}) | {med(p[3] / p[0] for p in v):.3f} "
          f"| {med(p[5] - p[2] for p in v):+,.0f} |")
print("(each plugin gateway measured at the same time as a plain one on the same core; capacity = "
      "plain CPU per request / the plugin gateway'"'"'s: the throughput ratio of a saturated core; medians over rounds)")
for n, label in names:
    v = rows[n]
    print(f"- {label}: capacity **{med(p[1] / p[4] for p in v):.3f}x** plain; "
          f"user-space CPU added {med(p[5] - p[2] for p in v):+,.0f} ns/req")
'

# ------------------------------------------------------- reading the numbers under load
command -v oha >/dev/null || PATH="$PATH:$HOME/.cargo/bin"
if ! $scrape; then exit 0; fi
if ! command -v oha >/dev/null; then
  echo "plugins.sh: oha is not installed: the scrape scenario is skipped (scripts/bench-setup.sh installs it)" >&2
  exit 0
fi
# The observed gateway alone, briefly, for its throughput.
obs_rps=$("${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$obs_port/plain/size/100" \
  | awk -v d="$duration" '/requests in/ {printf "%d\n", $1 / d}')
: >"$log_file"
# A quarter of its saturation: far enough below it that this machine's own hiccups do
# not make the tail.
rate=$(( obs_rps / 4 / 100 * 100 ))
[ "$rate" -ge 100 ] || rate=100
# oha NAME: prints "NAME p50_ms p99_ms p999_ms"
oha_run() {
  "${pin_load[@]}" oha -q "$rate" --latency-correction -z "${duration}s" -c 32 --no-tui \
    --output-format json "http://127.0.0.1:$obs_port/plain/size/100" >"$work/oha.json" 2>"$work/oha.err" \
    || { cat "$work/oha.err" >&2; return 1; }
  : >"$log_file"
  python3 -c "
import json; o = json.load(open('$work/oha.json')); p = o['latencyPercentiles']
codes = o.get('statusCodeDistribution', {})
assert set(codes) <= {'200'}, codes
print('$1', *(round(p[k] * 1000, 3) for k in ('p50', 'p99', 'p99.9')))"
}
# The reader keeps one connection open (as Prometheus does), so the load core does not
# also pay a process per scrape. It runs beside the load generator, and any process there
# moves the measured tail a little: so each round also runs a control reader that asks the
# same number of times for /status/ready (nothing rendered, no flush), and the figure is
# the tail with the real reader against the tail with the control.
scraper() {  # scraper PATH,PATH: every 100 ms, each path once
  exec python3 -c '
import http.client, os, sys, time
port, paths, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
n = 0
while True:
    for path in paths:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            print(f"scrape of {path} answered {r.status}", file=sys.stderr)
    n += 1
    with open(out + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(out + ".tmp", out)
    time.sleep(0.1)
' "$obs_admin_port" "$1" "$work/scrapes"
}
# with_reader PATHS NAME: the oha run while a reader asks for PATHS. The reader's output
# goes nowhere (it must not hold the caller's command substitution open), and it is
# stopped whatever the run's outcome, which is passed on.
with_reader() {
  local spid rc=0
  echo 0 >"$work/scrapes"
  "${pin_load[@]}" bash -c "$(declare -f scraper); obs_admin_port=$obs_admin_port work=$work scraper $1" \
    >/dev/null &
  spid=$!
  oha_run "$2" || rc=$?
  kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
  return "$rc"
}
echo "reading /metrics and /histograms under a fixed $rate req/s (oha -c 32, ${duration}s per run):" >&2
scraped=()
for round in $(seq 1 "$rounds"); do
  quiet=$(oha_run quiet) || exit 1
  control=$(with_reader /status/ready,/status/ready control) || exit 1
  loaded=$(with_reader /metrics,/histograms scraped) || exit 1
  scraped+=("$quiet $control $loaded $(cat "$work/scrapes")")
  echo "round $round: $quiet | $control | $loaded | $(cat "$work/scrapes") scrapes" >&2
done
printf '%s\n' "${scraped[@]}" | python3 -c '
import sys, statistics
med = statistics.median
rows = [l.split() for l in sys.stdin]
q = [[float(x) for x in r[1:4]] for r in rows]
c = [[float(x) for x in r[5:8]] for r in rows]
s = [[float(x) for x in r[9:12]] for r in rows]
print()
print("| observed gateway at a fixed rate | p50 ms | p99 ms | p99.9 ms |")
print("|---|---|---|---|")
for name, v in (("quiet", q), ("control reader: /status/ready twice, every 100 ms", c),
                ("reader: /metrics and /histograms, every 100 ms", s)):
    print(f"| {name} | {med(x[0] for x in v):.3f} | {med(x[1] for x in v):.3f} | {med(x[2] for x in v):.3f} |")
ratio = [b[1] / a[1] for a, b in zip(c, s)]
print(f"- p99 while /metrics and /histograms are read / with the control reader: **{med(ratio):.3f}x** "
      f"(median of per-round ratios, {min(ratio):.2f}-{max(ratio):.2f}); "
      f"p99 control / quiet {med(b[1] / a[1] for a, b in zip(q, c)):.3f}x; "
      f"{sum(int(r[12]) for r in rows)} reads of each endpoint")
'
