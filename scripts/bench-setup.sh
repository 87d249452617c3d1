#!/usr/bin/env bash
# Installs the tools the load benchmarks need, only the ones that are missing:
#   wrk, nginx, perf (linux-perf), strace  -> Debian packages via apt-get
#   oha                                    -> cargo install oha --locked  (~9 min on 2 cores)
#   inferno (flame graphs, --with-inferno) -> cargo install inferno --locked
#
# Environment:
#   BENCH_NO_OHA_INSTALL=1   never build oha (the fixed-rate scenarios are then skipped)
#   BENCH_NO_APT=1           never call apt-get (report what is missing and carry on)
# Options:
#   --no-oha        same as BENCH_NO_OHA_INSTALL=1
#   --with-inferno  also install inferno (used by perf/profile.sh)
set -euo pipefail

want_oha=1
want_inferno=0
for arg in "$@"; do
  case "$arg" in
    --no-oha) want_oha=0 ;;
    --with-inferno) want_inferno=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
[ "${BENCH_NO_OHA_INSTALL:-0}" = "1" ] && want_oha=0

export PATH="$HOME/.cargo/bin:$PATH"

sudo_cmd=()
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then sudo_cmd=(sudo -n); fi
fi

# command -> Debian package
declare -A pkg_for=([wrk]=wrk [nginx]=nginx [perf]=linux-perf [strace]=strace [taskset]=util-linux [curl]=curl)
missing=()
for cmd in wrk nginx perf strace taskset; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("${pkg_for[$cmd]}")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${BENCH_NO_APT:-0}" = "1" ]; then
    echo "bench-setup: missing packages (BENCH_NO_APT=1, not installing): ${missing[*]}" >&2
  else
    echo "bench-setup: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 "${sudo_cmd[@]}" apt-get update -qq
    timeout 600 "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "bench-setup: wrk, nginx, perf, strace, taskset present"
fi

if command -v oha >/dev/null 2>&1; then
  echo "bench-setup: oha present ($(oha --version 2>/dev/null | head -1))"
elif [ "$want_oha" = "1" ]; then
  echo "bench-setup: installing oha with 'cargo install oha --locked' (takes ~9 minutes on 2 cores)"
  timeout 1800 cargo install oha --locked
else
  echo "bench-setup: oha missing and not installing it (BENCH_NO_OHA_INSTALL=1 / --no-oha): fixed-rate scenarios will be skipped"
fi

if [ "$want_inferno" = "1" ]; then
  if command -v inferno-flamegraph >/dev/null 2>&1 && command -v inferno-collapse-perf >/dev/null 2>&1; then
    echo "bench-setup: inferno present"
  else
    echo "bench-setup: installing inferno with 'cargo install inferno --locked'"
    timeout 1800 cargo install inferno --locked
  fi
fi
