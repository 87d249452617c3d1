#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (not part of CI): needs a nightly toolchain
# and cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/TARGET/;
# each one becomes a corpus file and a regression unit test.
# Usage: fuzz/run.sh [SECONDS per target (60)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_head response_head chunked jwt config route)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target ($seconds s)" >&2
  # New inputs go to corpus/ (not committed); seeds/ is the committed starting point.
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 2>&1 \
    | grep -E "^#[0-9]+[[:space:]]+(DONE|INITED)|^Done|ERROR|panicked|SUMMARY" || true
done
