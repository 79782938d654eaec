#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (the body decoder: JSON, arrays, {"events"},
# NDJSON, gzip, zstd; and the record codec), each for FUZZ_SECONDS (default 60),
# starting from the committed seeds in fuzz/seeds/<target> (test bodies and records).
# A crash fails the run and leaves its input in fuzz/artifacts/<target>/; fix it with
# a regression test named for it. Needs the nightly toolchain (cargo-fuzz uses
# -Zsanitizer); installs cargo-fuzz from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzzing skipped: no nightly toolchain here (cargo-fuzz needs one)"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd fuzz
cargo +nightly fuzz build -O
for target in decode record_codec; do
  corpus=$(mktemp -d)
  cp "seeds/$target"/* "$corpus/"
  echo "fuzzing $target for ${SECONDS_EACH}s"
  if ! cargo +nightly fuzz run -O "$target" "$corpus" -- \
      -max_total_time="$SECONDS_EACH" -max_len=8192 -print_final_stats=1 >"$corpus.log" 2>&1; then
    tail -40 "$corpus.log"
    echo "fuzz target $target crashed; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units" "$corpus.log" | head -2
  rm -rf "$corpus" "$corpus.log"
done
