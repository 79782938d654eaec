#!/usr/bin/env bash
# End-to-end figures: the aggregator and the bare axum handler (examples/bare_handler.rs)
# run side by side and get the same publisher workloads, so each figure is also a
# ratio measured in one run. Usage: scripts/bench.sh [scale]   (scale 1 = full size)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-1}
cargo build --release --bins --example bare_handler
DATA=$(mktemp -d)
AGG_PORT=8210 BARE_PORT=8211
DB_PATH=$DATA/agg.redb API_PORT=$AGG_PORT RUST_LOG=warn target/release/aggregator &
AGG=$!
target/release/examples/bare_handler 127.0.0.1:$BARE_PORT 2>/dev/null &
BARE=$!
trap 'kill $AGG $BARE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
PUB=target/release/publisher
n() { python3 -c "print(int($1 * $SCALE))"; }

# run NAME URL [publisher args...]: one publisher run, its JSON report kept in $DATA/NAME.json
run() {
  local name=$1 url=$2; shift 2
  "$PUB" --url "$url" --json --topics 16 "$@" > "$DATA/$name.json"
}
row() { # row LABEL AGG_REPORT [BARE_REPORT]
  python3 - "$DATA/$2.json" "${3:+$DATA/$3.json}" "$1" <<'PY'
import json, sys
agg = json.load(open(sys.argv[1]))
bare = json.load(open(sys.argv[2])) if sys.argv[2] else None
ratio = f"{agg['events_per_second'] / bare['events_per_second']:.2f}" if bare else "-"
bare_eps = f"{bare['events_per_second']:,.0f}" if bare else "-"
l = agg["latency"]
print(f"| {sys.argv[3]} | {agg['events_per_second']:,.0f} | {agg['requests_per_second']:,.0f} | {bare_eps} | {ratio} "
      f"| {l['p50_ms']:.2f} / {l['p99_ms']:.2f} | {'OK' if agg['self_check']['ok'] else 'MISMATCH'} |")
PY
}

# Workloads (a)-(d) of the measurement issue; each against both servers where it applies.
run a_agg  "http://127.0.0.1:$AGG_PORT"  --events "$(n 200000)" --batch-size 1 --concurrency 64 --duplicate 0 --ack durable
run a_bare "http://127.0.0.1:$BARE_PORT" --events "$(n 200000)" --batch-size 1 --concurrency 64 --duplicate 0 --no-check
run a2_agg "http://127.0.0.1:$AGG_PORT" --events "$(n 200000)" --batch-size 1 --concurrency 64 --duplicate 0 --ack buffered
run b_agg  "http://127.0.0.1:$AGG_PORT"  --events "$(n 2000000)" --batch-size 1000 --concurrency 8 --duplicate 0.2 --ack durable
run b_bare "http://127.0.0.1:$BARE_PORT" --events "$(n 2000000)" --batch-size 1000 --concurrency 8 --duplicate 0.2 --no-check
run c_store "http://127.0.0.1:$AGG_PORT" --events "$(n 1000000)" --batch-size 1000 --concurrency 8 --duplicate 0 --run-id resend
run c_agg  "http://127.0.0.1:$AGG_PORT"  --events "$(n 1000000)" --batch-size 1000 --concurrency 8 --duplicate 0 --run-id resend
run c_bare "http://127.0.0.1:$BARE_PORT" --events "$(n 1000000)" --batch-size 1000 --concurrency 8 --duplicate 0 --no-check
run d_agg  "http://127.0.0.1:$AGG_PORT"  --events "$(n 2000000)" --batch-size 1000 --format ndjson --concurrency 8 --duplicate 0.2
run d_bare "http://127.0.0.1:$BARE_PORT" --events "$(n 2000000)" --batch-size 1000 --format ndjson --concurrency 8 --duplicate 0.2 --no-check

echo "| workload | aggregator events/s | requests/s | bare handler events/s | ratio | p50 / p99 ms | self-check |"
echo "|---|---|---|---|---|---|---|"
row "(a) single events, c=64, durable" a_agg a_bare
row "(a') single events, c=64, buffered acks" a2_agg a_bare
row "(b) batches of 1000, 20 % dup, durable" b_agg b_bare
row "(c) batches of 1000, 100 % dup (re-send)" c_agg c_bare
row "(d) NDJSON 1000 lines, 20 % dup" d_agg d_bare
