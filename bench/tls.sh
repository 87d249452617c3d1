#!/usr/bin/env bash
# HTTPS: ringway and nginx terminating TLS with the same certificate (ECDSA P-256,
# generated here) in front of the bundled upstream, interleaved and repeated:
#   keep-alive  wrk over 64 TLS connections: requests/s and proxy CPU µs per request
#   handshakes  wrk with "Connection: close": a full handshake per request, so
#               requests/s is handshakes/s
# One worker each; on 2+ cores the proxy is pinned to CPU 0, wrk and the upstream to
# CPU 1. Prints a Markdown table (medians, min-max) and the ringway/nginx ratios.
# Usage: bench/tls.sh [--duration S] [--rounds R] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=8
rounds=3
build=true
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-build) build=false ;;
    *) echo "tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

NAME=tls
source bench/common.sh
require wrk nginx openssl curl python3
$build && cargo build --release --bins >&2

up_port=$(free_port); rw_port=$(free_port); rw_admin=$(free_port); ng_port=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext "subjectAltName=DNS:bench.test" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

cat >"$work/ringway.yaml" <<YAML
_format_version: "3.0"
ringway:
  ssl_cert: $work/cert.pem
  ssl_cert_key: $work/key.pem
  latency_headers: false
services:
  - name: origin
    url: http://127.0.0.1:$up_port
    routes: [{name: all, paths: [/]}]
YAML

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 10000000;
    upstream origin { server 127.0.0.1:$up_port; keepalive 256; }
    server {
        listen 127.0.0.1:$ng_port ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
NGINX

timeout 900 "${pin_load[@]}" target/release/ringway-upstream --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
"${pin_proxy[@]}" target/release/ringway run -c "$work/ringway.yaml" --proxy-listen "127.0.0.1:$rw_port ssl" \
  --admin-listen "127.0.0.1:$rw_admin" --workers 1 --data-dir "$work/data" --log-level warn &
rw_pid=$!; pids+=($rw_pid)
"${pin_proxy[@]}" nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
ng_pid=$!; pids+=($ng_pid)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$rw_admin/status/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
for port in $rw_port $ng_port; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/cert.pem" \
    --resolve "bench.test:$port:127.0.0.1" "https://bench.test:$port/size/100")
  [ "$code" = 200 ] || { echo "tls.sh: https on port $port answered $code" >&2; exit 1; }
done

# CPU of the whole proxy: ringway's process, or nginx's master and workers.
ticks() {
  local pid=$1 total=0 p
  for p in $pid $(pgrep -P "$pid" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}
# run TARGET SCENARIO: prints "target scenario req/s cpu_us_per_req"
run() {
  local target=$1 scenario=$2 port pid t0 t1 out reqs extra=()
  if [ "$target" = ringway ]; then port=$rw_port; pid=$rw_pid; else port=$ng_port; pid=$ng_pid; fi
  [ "$scenario" = handshakes ] && extra=(-H "Connection: close")
  t0=$(ticks "$pid")
  out=$("${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "${extra[@]}" "https://127.0.0.1:$port/size/100")
  t1=$(ticks "$pid")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  python3 -c "r=$reqs; d=$duration; t=$((t1 - t0)); hz=$(getconf CLK_TCK); print('$target $scenario', round(r/d), round(t/hz*1e6/max(r,1), 2))"
}

"${pin_load[@]}" wrk -t1 -c64 -d2s "https://127.0.0.1:$rw_port/size/100" >/dev/null
"${pin_load[@]}" wrk -t1 -c64 -d2s "https://127.0.0.1:$ng_port/size/100" >/dev/null
results=()
for round in $(seq 1 "$rounds"); do
  order=(ringway nginx); [ $((round % 2)) = 0 ] && order=(nginx ringway)
  for scenario in keep-alive handshakes; do
    for target in "${order[@]}"; do
      results+=("$(run "$target" "$scenario")")
      echo "round $round: ${results[-1]}" >&2
    done
  done
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    target, scenario, rps, cpu = line.split()
    rows.setdefault((scenario, target), []).append((float(rps), float(cpu)))
print("| scenario | target | req/s median (min-max) | proxy CPU us/req |")
print("|---|---|---|---|")
med = {}
for (scenario, target), v in sorted(rows.items()):
    r = [x for x, _ in v]; c = [y for _, y in v]
    med[(scenario, target)] = (statistics.median(r), statistics.median(c))
    print(f"| {scenario} | {target} | {statistics.median(r):,.0f} ({min(r):,.0f}-{max(r):,.0f}) | {statistics.median(c):.2f} |")
for scenario in ("keep-alive", "handshakes"):
    rw, ng = med[(scenario, "ringway")], med[(scenario, "nginx")]
    print(f"- {scenario}: ringway/nginx req/s **{rw[0] / ng[0]:.2f}x**, CPU per request {rw[1] / ng[1]:.2f}x")
'
