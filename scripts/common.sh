# Shared by the check scripts (source it): a free loopback port, and a wait that
# proves the server answering is the one the script started.

# A TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PID PORT: until the aggregator started as PID answers /health on PORT.
# Fails if PID exits first (e.g. the port was taken and some other process answers).
wait_ready() {
  local pid=$1 port=$2
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "the aggregator (pid $pid) exited before it was ready" >&2; return 1; }
    if target/release/aggregator --api-port "$port" healthcheck 2>/dev/null; then
      kill -0 "$pid" 2>/dev/null && return 0
    fi
    sleep 0.1
  done
  echo "the aggregator (pid $pid) did not answer on port $port within 30 s" >&2
  return 1
}
