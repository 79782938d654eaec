#!/usr/bin/env bash
# Stage profile of one workload (docs/perf.md): builds the aggregator with frame pointers
# and line tables into target/prof, the publisher as usual, then runs scripts/profile.py.
# Usage: scripts/profile.sh single|batch|replay-out|replay-in [--scale 0.5]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
cargo build --release --bin publisher
CARGO_TARGET_DIR=target/prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --bin aggregator
exec python3 scripts/profile.py "$@"
