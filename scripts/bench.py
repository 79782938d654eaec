#!/usr/bin/env python3
"""End-to-end benchmark harness of the performance issue (run it through scripts/bench.sh).

Every row runs the aggregator (durable acks, a fresh data directory) and, where the row has a
reference, the bare handler of examples/bare_handler.rs under the same publisher load in the
same run, so each figure is also a ratio. The server's CPU is read from /proc/<pid>/stat
around each load, and given as cores busy and as CPU microseconds per event.

Rows (the issue's table):
  single   single events, 64 connections, 20 % repeats
  batch    batches of 1000, 64 connections, 20 % repeats
  replay-out  a stored set larger than the recent-key window, re-sent as 100 % duplicates
  replay-in   a stored set inside the window, re-sent
  growth   10M events in five rounds of 2M (last round vs first), then a restart with 10M
           keys until /health is 200, and the RSS after it
  jetstream  single events against NATS JetStream (scripts/bench-jetstream.sh), both fsync modes

The load is the publisher's: 16 topics, ~100-byte payloads, repeats of random earlier events.
Only 127.0.0.1 is used, and every process started is stopped at the end.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROWS = ["single", "batch", "replay-out", "replay-in", "growth", "jetstream"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A started server process on a free port; `ready` waits for /health 200."""

    def __init__(self, name, argv, env=None, port=None):
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, RUST_LOG="warn", API_HOST="127.0.0.1", API_PORT=str(self.port))
        full_env.update(env or {})
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL)

    def ready(self, timeout=120.0):
        """Seconds from spawn until /health answered 200 (polled every 5 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited with {self.proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.005)
        sys.exit(f"{self.name} not ready after {timeout} s")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


WINDOW = {"keys": 1_000_000}


def aggregator(data_dir, **env):
    env = {"DB_PATH": str(Path(data_dir) / "aggregator.redb"), "RECENT_KEYS_CAPACITY": str(WINDOW["keys"]),
           **{k: str(v) for k, v in env.items()}}
    return Server("aggregator", [str(RELEASE / "aggregator")], env)


def bare():
    return Server("bare handler", [str(RELEASE / "examples" / "bare_handler"), "127.0.0.1:{port}"])


def publish(server, events, batch, concurrency=64, duplicate=0.2, run_id=None, check=True):
    """One publisher run against `server`; its JSON report plus the server's CPU."""
    argv = [str(RELEASE / "publisher"), "--url", server.url, "--json", "--topics", "16",
            "--payload-bytes", "100", "--events", str(events), "--batch-size", str(batch),
            "--concurrency", str(concurrency), "--duplicate", str(duplicate)]
    if run_id:
        argv += ["--run-id", run_id]
    if not check:
        argv.append("--no-check")
    cpu_before = server.cpu_seconds()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    cpu = server.cpu_seconds() - cpu_before
    report = json.loads(out)
    report["server_cpu_seconds"] = cpu
    report["server_cores"] = cpu / report["elapsed_seconds"]
    report["cpu_us_per_event"] = cpu * 1e6 / max(report["events_sent"], 1)
    if check and not report["self_check"]["ok"]:
        sys.exit(f"self-check failed: {report['self_check']['detail']}")
    return report


class Table:
    def __init__(self):
        self.lines = ["| workload | aggregator events/s | bare events/s | ratio | p50 / p99 ms aggregator "
                      "| p50 / p99 ms bare | server cores agg / bare | CPU µs/event agg / bare |",
                      "|---|---|---|---|---|---|---|---|"]
        self.results = {}

    def pair(self, key, label, agg, ref):
        self.results[key] = {"aggregator": agg, "bare": ref}
        la, lb = agg["latency"], ref["latency"]
        self.lines.append(
            f"| {label} | {agg['events_per_second']:,.0f} | {ref['events_per_second']:,.0f} "
            f"| {agg['events_per_second'] / ref['events_per_second']:.2f} "
            f"| {la['p50_ms']:.2f} / {la['p99_ms']:.2f} | {lb['p50_ms']:.2f} / {lb['p99_ms']:.2f} "
            f"| {agg['server_cores']:.2f} / {ref['server_cores']:.2f} "
            f"| {agg['cpu_us_per_event']:.2f} / {ref['cpu_us_per_event']:.2f} |")
        print(self.lines[-1], flush=True)

    def note(self, key, line, value):
        self.results[key] = value
        self.lines.append(line)
        print(line, flush=True)


def n(args, x):
    return max(int(x * args.scale), 1000)


def row_fresh(args, t, ref, key, label, events, batch):
    """One load on a fresh aggregator, then the same load on the bare handler."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        agg = aggregator(d)
        agg.ready()
        a = publish(agg, n(args, events), batch)
        agg.stop()
    b = publish(ref, n(args, events), batch, check=False)
    t.pair(key, label, a, b)
    return a


def row_replay(args, t, ref, key, stored, label):
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        agg = aggregator(d)
        agg.ready()
        publish(agg, stored, 1000, duplicate=0, run_id=key)
        a = publish(agg, stored, 1000, duplicate=0, run_id=key)
        agg.stop()
    if a["stored"] != 0:
        sys.exit(f"replay stored {a['stored']} events; expected 0")
    b = publish(ref, stored, 1000, duplicate=0, check=False)
    t.pair(key, label, a, b)


def row_growth(args, t):
    rounds, per_round = 5, n(args, 2_000_000)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        agg = aggregator(d)
        agg.ready()
        eps = [publish(agg, per_round, 1000, duplicate=0)["events_per_second"] for _ in range(rounds)]
        agg.stop()
        total = rounds * per_round
        t.note("growth", f"| {total:,} stored in {rounds} rounds: last round vs first "
               f"| {eps[-1]:,.0f} vs {eps[0]:,.0f} | | {eps[-1] / eps[0]:.2f} | | | | |",
               {"rounds_events_per_second": eps})
        agg = aggregator(d)
        ready = agg.ready()
        time.sleep(1)
        rss = agg.rss_mib()
        with urllib.request.urlopen(agg.url + "/stats") as r:
            dedup = json.load(r)["dedup"]
        agg.stop()
        how = "saved filter" if dedup["filter_from_snapshot"] else f"scan of {dedup['filter_keys_scanned_at_start']:,} keys"
        t.note("restart", f"| restart with {total:,} keys until /health is 200 ({how}) | {ready:.2f} s | | | | | | |",
               {"seconds": ready, "dedup": dedup})
        filter_mib = dedup["filter_bytes"] / 1048576
        t.note("rss", f"| RSS right after that restart (whole process; the page cache fills only as "
               f"reads warm it) | {rss:.0f} MiB ({rss * 1048576 / total:.1f} B/key; filter {filter_mib:.0f} MiB) "
               f"| | | | | | |", {"rss_mib": rss, "bytes_per_key": rss * 1048576 / total, "filter_mib": filter_mib})


def row_jetstream(args, t, single):
    out = Path(args.out) / "jetstream"
    env = dict(os.environ, OUT=str(out))
    subprocess.run([str(ROOT / "scripts" / "bench-jetstream.sh"), "--events", str(n(args, 100_000)),
                    "--concurrency", "64", "--topics", "16", "--duplicate", "0.2"],
                   check=True, env=env, stdout=sys.stderr)
    for mode in ["always", "default"]:
        js = json.loads((out / f"{mode}.json").read_text())
        ratio = single["events_per_second"] / js["events_per_second"]
        t.note(f"jetstream-{mode}", f"| single events vs JetStream, `sync_interval: {mode}` "
               f"| {single['events_per_second']:,.0f} | JetStream {js['events_per_second']:,.0f} | {ratio:.2f} "
               f"| {single['latency']['p50_ms']:.2f} / {single['latency']['p99_ms']:.2f} "
               f"| {js['latency']['p50_ms']:.2f} / {js['latency']['p99_ms']:.2f} "
               f"| {single['server_cores']:.2f} / {js.get('server_cpu_seconds', 0) / js['seconds']:.2f} | |", js)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="event counts times this (1 = the issue's sizes)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS}")
    p.add_argument("--out", default=None, help="directory for the JSON results (default: a new temp dir)")
    p.add_argument("--tmp", default=str(ROOT / "target" / "bench-data"), help="where data directories go")
    args = p.parse_args()
    rows = args.rows.split(",")
    WINDOW["keys"] = n(args, 1_000_000)
    args.out = args.out or tempfile.mkdtemp(prefix="bench-")
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    t = Table()
    print("\n".join(t.lines), flush=True)
    ref = bare()
    ref.ready()
    single = None
    try:
        if "single" in rows or "jetstream" in rows:
            single = row_fresh(args, t, ref, "single", "single events, 64 connections", 100_000, 1)
        if "batch" in rows:
            row_fresh(args, t, ref, "batch", "batches of 1000, 20 % repeats, 64 connections", 2_000_000, 1000)
        if "replay-out" in rows:
            row_replay(args, t, ref, "replay-out", n(args, 2_000_000),
                       "replay of a stored 2M set, 100 % repeats (window holds 1M)")
        if "replay-in" in rows:
            row_replay(args, t, ref, "replay-in", n(args, 500_000), "replay of a stored 500k set (inside the window)")
        if "growth" in rows:
            row_growth(args, t)
        if "jetstream" in rows:
            row_jetstream(args, t, single)
    finally:
        ref.stop()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(t.results, indent=1))
    print("\n" + "\n".join(t.lines))
    print(f"\nresults: {args.out}/results.json")


if __name__ == "__main__":
    main()
