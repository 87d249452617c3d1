# Sourced by bench/plugins.sh, bench/tls.sh and bench/soak.sh once they have parsed their
# options (NAME set to the script's name): a tool check, a scratch directory and the
# servers started (both gone on exit), free loopback ports, and CPU pinning on 2+ cores.

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

pin_proxy=(); pin_load=()
if [ "$(nproc)" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi
