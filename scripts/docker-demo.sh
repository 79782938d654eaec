#!/usr/bin/env bash
# The docker compose load demo, for real, on a Docker engine:
#   1. base images: local stand-ins when no registry can be pulled from
#      (scripts/docker-base-images.sh), then a cold and a cached image build;
#   2. `compose up --build --abort-on-container-exit --exit-code-from publisher`: the
#      aggregator turns healthy, then the publisher runs the seed's demo (5,000 events,
#      DUP_RATE=0.2) and must exit 0 with its self-check OK;
#   3. checks: ./data holds the database, owned by uid 10001; after `down` and `up`
#      again the counters are carried over, `curl localhost:8000/stats` works from the
#      host, the container runs as uid 10001, and re-publishing the same events
#      yields only duplicates;
#   4. `compose down` cleans up (also on failure).
# Figures and the demo's output go to target/docker-demo/ (summary.md for the README).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/docker-demo
mkdir -p "$OUT" data
export EVENTS=5000 DUP_RATE=0.2 BATCH_SIZE=1
PORT=8000

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose --ansi never "$@"
  else
    docker-compose --ansi never "$@"
  fi
}
cleanup() { compose down --remove-orphans >/dev/null 2>&1 || true; }
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "docker demo: port $PORT is in use on this host; it needs it for the compose file's 8000:8000" >&2
  exit 1
fi
trap cleanup EXIT
fail() {
  echo "docker demo: $*" >&2
  compose logs --no-color --tail 50 >&2 || true
  exit 1
}
seconds() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.0f}')"; }

echo "== base images"
scripts/docker-base-images.sh

echo "== image build, first then cached"
# The first build is cold on a fresh engine (CI); on a used one its layers may be cached.
first=cold
docker image inspect event-aggregator:latest >/dev/null 2>&1 && first="with the engine's earlier layers"
t0=$(seconds)
compose build >"$OUT/build-first.log" 2>&1 || { tail -n 40 "$OUT/build-first.log"; fail "the build failed"; }
t1=$(seconds)
compose build >"$OUT/build-cached.log" 2>&1 || { tail -n 40 "$OUT/build-cached.log"; fail "cached build failed"; }
t2=$(seconds)
cold=$(elapsed "$t0" "$t1")
cached=$(elapsed "$t1" "$t2")
size=$(docker image inspect event-aggregator:latest --format '{{.Size}}')
size_mb=$(python3 -c "print(f'{$size / 1e6:.1f}')")
echo "$first build ${cold} s, cached ${cached} s, runtime image ${size_mb} MB"

echo "== compose up (the demo)"
# ./data must be writable by the image's user.
chown -R 10001:10001 data
set +e
compose up --build --abort-on-container-exit --exit-code-from publisher 2>&1 | tee "$OUT/up.log"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || fail "the publisher exited $status"
grep -q "self-check  OK" "$OUT/up.log" || fail "no passing self-check in the compose output"
run_id=$(grep -o 'publisher run [0-9a-f]*' "$OUT/up.log" | awk '{print $3}' | tail -n 1 || true)
[ -n "$run_id" ] || fail "no publisher report in the compose output"
# The aggregator's last line before it stopped: what it had stored.
compose logs --no-color aggregator >"$OUT/aggregator.log" 2>&1
flushed=$(grep 'writer flushed and stopped' "$OUT/aggregator.log" | tail -n 1 || true)
unique=$(sed -n 's/.*unique_processed=\([0-9]*\).*/\1/p' <<<"$flushed")
duplicates=$(sed -n 's/.*duplicate_dropped=\([0-9]*\).*/\1/p' <<<"$flushed")
[ -n "$unique" ] && [ -n "$duplicates" ] || fail "no shutdown counters in the compose output"
[ -s data/aggregator.redb ] || fail "./data holds no database"
[ "$(stat -c %u data/aggregator.redb)" = 10001 ] || fail "the database is not owned by uid 10001"
compose down

echo "== up again: counters carried over, /stats from the host"
compose up -d aggregator
container=$(compose ps -q aggregator || true)
[ -n "$container" ] || fail "the aggregator container did not start"
health=starting
for _ in $(seq 120); do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$container")
  [ "$health" = healthy ] && break
  sleep 0.5
done
[ "$health" = healthy ] || fail "the image's HEALTHCHECK says $health"
stats=$(curl -fsS "localhost:$PORT/stats") || fail "curl localhost:$PORT/stats failed"
echo "$stats" >"$OUT/stats-after-restart.json"
read -r got_unique got_duplicates < <(python3 -c \
  'import json,sys; s=json.loads(sys.argv[1]); print(s["unique_processed"], s["duplicate_dropped"])' "$stats")
[ "$got_unique $got_duplicates" = "$unique $duplicates" ] ||
  fail "counters after restart: $got_unique/$got_duplicates, before: $unique/$duplicates"
uid=$(compose exec -T aggregator id -u | tr -d '\r') || fail "cannot run id in the aggregator container"
[ "$uid" = 10001 ] || fail "the aggregator runs as uid $uid"

echo "== the same events again: only duplicates"
compose run --rm publisher --events "$EVENTS" --batch-size "$BATCH_SIZE" --concurrency 16 \
  --run-id "$run_id" 2>&1 | tee "$OUT/republish.log"
grep -q "acknowledged $EVENTS events: 0 stored, $EVENTS duplicates" "$OUT/republish.log" ||
  fail "re-publishing stored new events"
grep -q "self-check  OK" "$OUT/republish.log" || fail "the re-publish self-check failed"

echo "== down"
compose down
left=$(compose ps -q | wc -l)
[ "$left" -eq 0 ] || fail "$left containers left after down"

{
  echo "| figure | value |"
  echo "|---|---|"
  echo "| image build, $first (base images present) | ${cold} s |"
  echo "| image build again, every layer cached | ${cached} s |"
  echo "| runtime image \`event-aggregator:latest\` | ${size_mb} MB |"
  echo "| stored / duplicates after the demo | $unique / $duplicates |"
  echo "| the container's uid | $uid |"
  echo
  echo '```'
  grep -E '^publisher_1 +\||^publisher-1 +\|' "$OUT/up.log" | sed 's/^publisher[-_]1 *| //' | grep -v '^progress:'
  echo '```'
} >"$OUT/summary.md"
cat "$OUT/summary.md"
echo "docker demo passed"
