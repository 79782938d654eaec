#!/usr/bin/env bash
# Renders the status page (GET /) in headless Chromium while the publisher sends load,
# checks that the rendered page shows live counters, and keeps a screenshot in
# target/dashboard.png. Needs Debian's chromium (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
. scripts/common.sh
PORT=$(free_port)
cargo build --release --bins
data=$(mktemp -d)
server=""
publisher=""
cleanup() {
  for pid in $publisher $server; do kill "$pid" 2>/dev/null || true; done
  # The server saves its dedup filter as it stops: let it finish before removing its dir.
  for pid in $publisher $server; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT
API_PORT=$PORT DB_PATH="$data/aggregator.redb" RUST_LOG=warn target/release/aggregator &
server=$!
wait_ready "$server" "$PORT"
target/release/publisher --url "http://127.0.0.1:$PORT" --events 1000000 --batch-size 100 --concurrency 2 \
  --topics 5 --duration-limit 20 --json >/dev/null &
publisher=$!

chrome() {
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$data/chrome" --window-size=1280,860 --virtual-time-budget=6000 "$@" \
    "http://127.0.0.1:$PORT/" 2>/dev/null
}
# Wait until the publisher's events show in /stats, then render.
python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request
for _ in range(300):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/stats") as r:
            if json.load(r)["received"] > 0:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("no events reached the server")
PY
dom=$(chrome --dump-dom)
received=$(printf '%s' "$dom" | grep -o 'id="received">[0-9,]*<' | grep -o '[0-9,]*' | tr -d ',')
topics=$(printf '%s' "$dom" | grep -o 'id="topics">[^<]*<' || true)
echo "rendered: received=${received:-none} ${topics}"
[ -n "$received" ] && [ "$received" -gt 0 ]
printf '%s' "$topics" | grep -q 'sim\.'
chrome --screenshot="$PWD/target/dashboard.png" >/dev/null
size=$(stat -c %s target/dashboard.png)
echo "screenshot: target/dashboard.png ($size bytes)"
[ "$size" -gt 20000 ]
echo "dashboard renders with data"
