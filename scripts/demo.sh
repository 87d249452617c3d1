#!/usr/bin/env bash
# Builds ringway, starts the bundled upstream and the gateway on config/demo.yaml, and
# sends a few requests through it. The gateway keeps running until Ctrl-C; with --once
# the script stops everything after the requests.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

echo "==> building (release)"
cargo build --release --locked --bins

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

get() {
  # GET a URL and print the status line, a few headers and the body.
  if command -v curl >/dev/null; then
    curl -sS -i --max-time 5 "$@" || true
  else
    python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
args = sys.argv[1:]
url = args[-1]
headers = {}
# The curl flags this script uses: -H 'Name: value'.
for flag, value in zip(args, args[1:]):
    if flag == "-H":
        name, _, v = value.partition(":")
        headers[name.strip()] = v.strip()
try:
    r = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
except urllib.error.HTTPError as e:
    r = e
print(f"HTTP/1.1 {r.status}")
for k, v in r.headers.items():
    print(f"{k}: {v}")
print()
print(r.read().decode(errors="replace"))
PY
  fi
  echo
}

wait_ready() {
  # Ready once its own Admin API says so; a gateway that exited (a port already in use)
  # is not waited for, nor mistaken for whatever else answers on the port.
  local gateway=$1
  for _ in $(seq 1 100); do
    if ! kill -0 "$gateway" 2>/dev/null; then
      echo "the gateway exited; see its log above" >&2
      exit 1
    fi
    if python3 -c 'import json, sys, urllib.request
sys.exit(0 if "ringway" in json.load(urllib.request.urlopen("http://127.0.0.1:8001/", timeout=1)).get("tagline", "") else 1)' 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "the gateway did not come up; see its log above" >&2
  exit 1
}

echo "==> starting the bundled upstream on 127.0.0.1:9001"
target/release/ringway-upstream --listen 127.0.0.1:9001 --name demo-upstream >/dev/null &
pids+=($!)
echo "==> starting ringway on config/demo.yaml (proxy 127.0.0.1:8000, admin 127.0.0.1:8001)"
target/release/ringway run -c config/demo.yaml &
pids+=($!)
wait_ready $!

echo "==> GET /api/users/123 without a token (user-service has the jwt plugin: 401)"
get http://127.0.0.1:8000/api/users/123
token=$(target/release/ringway jwt sign --secret demo-secret --key demo-app --claim sub=user123)
echo "==> GET /api/users/123 with a token from 'ringway jwt sign --secret demo-secret --key demo-app'"
get -H "Authorization: Bearer $token" http://127.0.0.1:8000/api/users/123
echo "==> GET /api/accounts/7 (no plugin; /api/accounts stripped, sent on the service's path: the upstream echoes /echo/accounts/7)"
get http://127.0.0.1:8000/api/accounts/7
echo "==> GET /echo/hello?x=1 (the upstream echoes what it received: note X-Forwarded-*)"
get http://127.0.0.1:8000/echo/hello?x=1
echo "==> GET /nowhere (no route: Kong's 404)"
get http://127.0.0.1:8000/nowhere
echo "==> GET http://127.0.0.1:8001/status (Admin API)"
get http://127.0.0.1:8001/status

if $once; then
  exit 0
fi
echo "==> ringway is running: proxy http://127.0.0.1:8000, admin http://127.0.0.1:8001. Ctrl-C stops it."
wait
