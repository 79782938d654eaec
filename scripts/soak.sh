#!/usr/bin/env bash
# Soak: builds the binaries and runs scripts/soak.py (mixed load at 80 % of the calibrated
# maximum for 10 minutes by default; RSS, open files and p99 every 10 s; every acknowledged
# event checked at the end). Server settings pass through the environment.
# Usage: scripts/soak.sh [--minutes 10] [--warmup 60] [--load 0.8] [--out DIR]
#   SOAK_PROFILE=debug uses the debug binaries (what .ci/run does, after cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${SOAK_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --bins
else
  cargo build --bins
fi
exec python3 scripts/soak.py --bin-dir "target/$profile" "$@"
