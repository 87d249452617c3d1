#!/usr/bin/env bash
# Soak: mixed traffic against one ringway for a while, then checks that it returned to
# its baseline and that no request failed in a way it should not have.
#
# Traffic (two wrk processes at once, for --duration):
#   keep-alive (32 connections) cycling through: small and 16 KiB bodies, a jwt route
#     with and without a token (200 / 401), a rate-limited route (200 / 429), an
#     upstream answering 503, a chunked body, and a service balanced over two targets
#     (least-connections, passive health checks);
#   short connections (8 connections, "Connection: close") on the small body.
# Expected statuses: 200, 401, 429, 503. Anything else, or any socket error, fails.
# After the load and a settle pause (short keep-alive timeouts are configured), open
# file descriptors, client connections and idle upstream connections must be back at
# their baseline and RSS within --rss-slack MiB of it.
#
# Usage: bench/soak.sh [--duration S (600)] [--rss-slack MIB (32)] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
rss_slack=32
build=true
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rss-slack) rss_slack=$2; shift ;;
    --no-build) build=false ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
NAME=soak
source bench/common.sh
require wrk curl python3
$build && cargo build --release --bins >&2

up_port=$(free_port); rw_port=$(free_port); admin_port=$(free_port)

cat >"$work/ringway.yaml" <<YAML
_format_version: "3.0"
ringway:
  keepalive_timeout: 2000
  upstream_keepalive_idle_timeout: 2000
services:
  - name: origin
    url: http://127.0.0.1:$up_port
    routes:
      - name: open
        paths: [/open]
      - name: private
        paths: [/private]
        plugins: [{name: jwt}]
      - name: limited
        paths: [/limited]
        plugins: [{name: rate-limiting, config: {second: 200, limit_by: ip}}]
  - name: pooled
    host: soak.pool
    routes:
      - name: pooled
        paths: [/pooled]
upstreams:
  - name: soak.pool
    algorithm: least-connections
    healthchecks:
      passive:
        unhealthy: {tcp_failures: 3, timeouts: 3}
    targets:
      - target: 127.0.0.1:$up_port
      - target: localhost:$up_port
        weight: 50
consumers:
  - username: soak
    jwt_secrets: [{key: soak, secret: soak-secret-0123456789}]
YAML

timeout $((duration + 120)) target/release/ringway-upstream --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
target/release/ringway run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:$rw_port" \
  --admin-listen "127.0.0.1:$admin_port" --workers 2 --data-dir "$work/data" --log-level warn &
rw_pid=$!; pids+=($rw_pid)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$admin_port/status/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(target/release/ringway jwt sign --secret soak-secret-0123456789 --key soak --ttl 86400)

fds() { ls "/proc/$rw_pid/fd" | wc -l; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$rw_pid/status"; }
status_field() { curl -fsS "http://127.0.0.1:$admin_port/status" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
upstream_conns() {
  python3 - "$up_port" <<'PY'
import sys
port = int(sys.argv[1])
n = 0
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        f = row.split()
        # established connections whose remote end is the upstream port
        if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port:
            n += 1
print(n)
PY
}

# Warm up once, then take the baseline after the keep-alive timeouts have passed.
wrk -t1 -c8 -d2s "http://127.0.0.1:$rw_port/open/size/100" >/dev/null
sleep 4
base_fds=$(fds); base_rss=$(rss_kib); base_up=$(upstream_conns)

cat >"$work/mixed.lua" <<LUA
local paths = {
  {"/open/size/100", nil}, {"/open/size/16384", nil}, {"/open/chunked/4096", nil},
  {"/private/size/100", "Bearer $token"}, {"/private/size/100", nil},
  {"/limited/size/100", nil}, {"/open/status/503", nil},
  {"/pooled/size/100", nil}, {"/pooled/size/16384", nil},
}
LUA
cat >>"$work/mixed.lua" <<'LUA'
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() counts = {} end
local i = 0
request = function()
  i = i % #paths + 1
  local p = paths[i]
  local headers = {}
  if p[2] then headers["Authorization"] = p[2] end
  return wrk.format("GET", p[1], headers)
end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\n", k, v)) end
end
LUA

echo "soak: $duration s of mixed traffic (2 workers; keep-alive and short connections)" >&2
wrk -t1 -c32 -d"${duration}s" -s "$work/mixed.lua" "http://127.0.0.1:$rw_port" >"$work/mixed.out" &
mixed=$!
wrk -t1 -c8 -d"${duration}s" -H "Connection: close" "http://127.0.0.1:$rw_port/open/size/100" >"$work/short.out" &
short=$!
peak_rss=$base_rss
while kill -0 "$mixed" 2>/dev/null; do
  r=$(rss_kib); [ "$r" -gt "$peak_rss" ] && peak_rss=$r
  sleep 5
done
wait "$mixed" "$short" || true
sleep 5

end_fds=$(fds); end_rss=$(rss_kib); end_up=$(upstream_conns)
active=$(status_field "['server']['connections_active']")
unhealthy=$(status_field "['upstreams']['soak.pool']['unhealthy']")
total=$(status_field "['server']['total_requests']")
curl -fsS "http://127.0.0.1:$admin_port/metrics" >/dev/null
curl -fsS "http://127.0.0.1:$admin_port/histograms" >/dev/null

python3 - "$work" "$base_fds" "$end_fds" "$base_rss" "$end_rss" "$peak_rss" "$base_up" "$end_up" \
  "$active" "$total" "$rss_slack" "$duration" "$unhealthy" <<'PY'
import re, sys
work, base_fds, end_fds, base_rss, end_rss, peak_rss, base_up, end_up, active, total, slack, duration, unhealthy = sys.argv[1:]
mixed = open(f"{work}/mixed.out").read()
short = open(f"{work}/short.out").read()
def reqs(text):
    m = re.search(r"(\d+) requests in", text)
    return int(m.group(1)) if m else 0
statuses = {int(k): int(v) for k, v in re.findall(r"^status (\d+) (\d+)$", mixed, re.M)}
def socket_errors(text):
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return tuple(map(int, m.groups())) if m else (0, 0, 0, 0)
rows = [
    ("requests (mixed keep-alive)", reqs(mixed)),
    ("requests (short connections)", reqs(short)),
    ("statuses (mixed)", " ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
    ("socket errors (mixed: connect/read/write/timeout)", socket_errors(mixed)),
    ("socket errors (short)", socket_errors(short)),
    ("open fds: baseline -> end", f"{base_fds} -> {end_fds}"),
    ("RSS KiB: baseline -> peak -> end", f"{base_rss} -> {peak_rss} -> {end_rss}"),
    ("upstream connections: baseline -> end", f"{base_up} -> {end_up}"),
    ("client connections active at end", active),
    ("requests counted by ringway", total),
    ("balanced targets unhealthy at end", unhealthy),
]
print(f"| soak ({duration} s) | |")
print("|---|---|")
for k, v in rows:
    print(f"| {k} | {v} |")
ok = True
if socket_errors(mixed) != (0, 0, 0, 0) or socket_errors(short) != (0, 0, 0, 0):
    print("FAIL: socket errors"); ok = False
unexpected = set(statuses) - {200, 401, 429, 503}
if unexpected or not statuses:
    print(f"FAIL: unexpected statuses {sorted(unexpected)}"); ok = False
if "Non-2xx" in short:
    print("FAIL: non-2xx answers on the short-connection route"); ok = False
if int(end_fds) > int(base_fds) + 2:
    print("FAIL: file descriptors did not return to baseline"); ok = False
if int(end_rss) > int(base_rss) + int(slack) * 1024:
    print("FAIL: RSS did not return within the slack"); ok = False
if int(unhealthy) != 0:
    print("FAIL: a healthy target was taken out of the balanced upstream"); ok = False
if int(active) != 0:
    print("FAIL: client connections still open"); ok = False
if int(end_up) > int(base_up) + 2 * 256:
    print("FAIL: upstream connections beyond the pool bound"); ok = False
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
