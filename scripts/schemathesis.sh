#!/usr/bin/env bash
# Spec-driven tests: schemathesis (PyPI) generates requests from /openapi.json and
# checks every response against it (status codes, content types, response schemas,
# no 5xx, invalid input rejected, valid input accepted). Bounded: deterministic
# generation, 30 examples per operation.
# Two passes. ASCII strings, with every check: there a character is a byte, so the
# schema's maxLength states the contract's byte limits exactly. Then UTF-8 strings
# (multi-byte text is where byte limits bite), with every check but "valid input is
# accepted": a string within maxLength characters can pass the 255-byte limit, which a
# JSON Schema cannot state; tests/it/contract.rs pins that boundary
# (field_limits_count_the_bytes_of_multi_byte_text).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
# Pinned: a new release must not change what CI checks without a commit.
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-$(cat scripts/schemathesis.version)}
. scripts/common.sh
PORT=$(free_port)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
cargo build --release --bins
data=$(mktemp -d)
API_PORT=$PORT DB_PATH="$data/aggregator.redb" RUST_LOG=warn target/release/aggregator &
server=$!
# The server saves its dedup filter as it stops: let it finish before removing its dir.
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
wait_ready "$server" "$PORT"
run() {
  timeout 600 "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
    --checks all --max-examples 30 --generation-deterministic \
    --request-timeout 10 --max-failures 20 "$@"
}
echo "-- ASCII strings, every check"
run --generation-codec ascii
echo "-- UTF-8 strings, every check but positive_data_acceptance"
run --generation-codec utf-8 --exclude-checks positive_data_acceptance
