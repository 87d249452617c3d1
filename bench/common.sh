# Sourced by bench/plugins.sh, tls.sh, soak.sh, floor.sh and ab.sh once they have parsed
# their options (NAME set to the script's name): a tool check, a scratch directory and the
# servers started (both gone on exit), free loopback ports, CPU pinning on 2+ cores, and
# the side-by-side measurement of two proxies.

require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
    command -v "$tool" >/dev/null || { echo "$NAME.sh: $tool is missing (scripts/bench-setup.sh installs the tools)" >&2; exit 1; }
  done
}

work=$(mktemp -d "/tmp/ringway-$NAME.XXXXXX")
# Scratch directories removed on exit; a script adds its own (say, one on tmpfs).
scratch=("$work")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "${scratch[@]}"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_full LABEL PORT: waits (up to 10 s) until PORT answers /size/16384 in full.
wait_full() {
  local _
  for _ in $(seq 1 100); do
    [ "$(curl -s "http://127.0.0.1:$2/size/16384" | wc -c)" = 16384 ] && return 0
    sleep 0.1
  done
  echo "$NAME.sh: $1 did not answer /size/16384 in full" >&2
  exit 1
}

# cpu_ns PID...: CPU time in nanoseconds of the given processes, all their threads.
cpu_ns() {
  local pid
  for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f\n", s}'
}

# wrk_pair PORT_A "PIDS_A" PORT_B "PIDS_B" PATH: two proxies at once on the pinned core, each
# saturated by its own wrk for $duration s; prints "a_ns b_ns a_requests b_requests" (CPU
# per request of each over the same seconds). Exits on any error or non-2xx answer.
wrk_pair() {
  local port_a=$1 pids_a=$2 port_b=$3 pids_b=$4 path=$5 a0 b0 a1 b1 wa wb f ra rb
  # shellcheck disable=SC2086
  a0=$(cpu_ns $pids_a); b0=$(cpu_ns $pids_b)
  "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$port_a$path" >"$work/wrk-a.txt" &
  wa=$!
  "${pin_load[@]}" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$port_b$path" >"$work/wrk-b.txt" &
  wb=$!
  wait "$wa" "$wb"
  # shellcheck disable=SC2086
  a1=$(cpu_ns $pids_a); b1=$(cpu_ns $pids_b)
  for f in a b; do
    if grep -q -E "Non-2xx|Socket errors" "$work/wrk-$f.txt"; then
      echo "$NAME.sh: errors in the $path run of a pair:" >&2; cat "$work/wrk-$f.txt" >&2; exit 1
    fi
  done
  ra=$(awk '/requests in/ {print $1}' "$work/wrk-a.txt"); rb=$(awk '/requests in/ {print $1}' "$work/wrk-b.txt")
  echo "$(( (a1 - a0) / ra )) $(( (b1 - b0) / rb )) $ra $rb"
}

pin_proxy=(); pin_load=()
if [ "$(nproc)" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi
