#!/usr/bin/env bash
# End-to-end figures of the performance issue: builds the release binaries and runs
# scripts/bench.py, which puts the aggregator and the bare handler
# (examples/bare_handler.rs) side by side under the same publisher loads in one run.
# Usage: scripts/bench.sh [--scale 0.1] [--rows single,batch,...] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --example bare_handler
exec python3 scripts/bench.py "$@"
