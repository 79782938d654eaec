#!/usr/bin/env bash
# Spec-driven tests: schemathesis (PyPI) generates requests from /openapi.json and
# checks every response against it (status codes, content types, response schemas,
# no 5xx, invalid input rejected, valid input accepted). Bounded: deterministic
# generation, 30 examples per operation.
# Strings are generated as ASCII because the contract limits lengths in bytes, which
# a JSON Schema maxLength (characters) cannot state exactly.
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
timeout 600 "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --max-examples 30 --generation-deterministic --generation-codec ascii \
  --request-timeout 10 --max-failures 20
