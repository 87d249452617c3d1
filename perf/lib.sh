# Shared by perf/profile.sh and perf/syscalls.sh (sourced, not run): a scratch directory
# removed on success, every server started killed on exit, CPU pinning, background starts
# bounded by `timeout`, and readiness polling. The caller sets NAME (the scratch
# directory's prefix), duration and pin, and defines log and die.
OUT=$ROOT/perf/out
mkdir -p "$OUT"
WORK=$(mktemp -d "/tmp/ringway-$NAME.XXXXXX")
SERVER_PIDS=()
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    local alive=0
    for pid in "${SERVER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for pid in "${SERVER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$rc" = 0 ] && rm -rf "$WORK" || log "logs kept in $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin_proxy=() pin_load=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  pin_proxy=(taskset -c 0); lc=1; [ "$(nproc)" -gt 2 ] && lc="1-$(( $(nproc) - 1 ))"; pin_load=(taskset -c "$lc")
  log "pinned: the proxy on CPU 0, wrk and the upstream on CPU $lc"
fi
budget=$((duration * ${BUDGET_FACTOR:-3} + 600))
start_bg() {  # LOG CMD... -> STARTED_PID (timeout's child, i.e. CMD itself)
  local logfile=$1 tpid child="" i; shift
  timeout -k 5 "$budget" "$@" >"$logfile" 2>&1 &
  tpid=$!; SERVER_PIDS+=("$tpid")
  for i in $(seq 1 100); do
    child=$(awk '{print $1}' "/proc/$tpid/task/$tpid/children" 2>/dev/null || true)
    [ -n "$child" ] && break; sleep 0.05
  done
  [ -n "$child" ] || die "could not start $* (log $logfile)"
  SERVER_PIDS+=("$child"); STARTED_PID=$child
}
wait_http() {
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0; sleep 0.1
  done
  return 1
}
