#!/usr/bin/env python3
"""Soak: mixed load at a fixed share of the measured maximum, for minutes, against one server.

Run it through scripts/soak.sh. The load, all on 127.0.0.1, per 10-second segment:
  single   single events, 16 connections, 20 % repeats within the segment
  batch    JSON arrays of 100, 4 connections, 20 % repeats
  ndjson   gzip NDJSON batches of 100, 4 connections, 20 % repeats
  replay   an earlier segment's batch run re-sent (the same ids): repeats across time
  reads    GET /events pages and GET /stats from one keep-alive connection

First each writing stream runs closed-loop for a calibration window; the soak then paces each
at `--load` (default 0.8) of the rate it reached there (the publisher's `--rate`: open loop,
latency counted from each request's scheduled start). Every 10 s it samples the server's RSS,
open files and the segment's p99. At the end it reads back every stored event of the soak's
topics and checks them against what the publishers acknowledged (their `--acked-out` maps).

Fails (exit 1) if RSS after the warm-up grows more than 10 % (the median of the last third of
the samples against that of the first third; peaks are reported), if any acknowledged event is
missing, if any event is stored twice, if a publisher gave up on a request, or if the server's
counters disagree with what is stored. Writes samples.json and summary.md into `--out`.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Server  # noqa: E402  (same directory)

ROOT = Path(__file__).resolve().parent.parent
SEGMENT = 10.0
TOPICS = 16
PREFIX = "soak"

# name: (events per request, connections, extra publisher arguments)
STREAMS = {
    "single": (1, 16, []),
    "batch": (100, 4, []),
    "ndjson": (100, 4, ["--format", "ndjson", "--gzip"]),
}
REPLAY_CONNECTIONS = 2


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    p.add_argument("--load", type=float, default=0.8, help="share of the calibrated maximum")
    p.add_argument("--calibrate", type=float, default=15.0, help="seconds of closed-loop load")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    p.add_argument("--out", default=str(ROOT / "target" / "soak"))
    p.add_argument("--tmp", default=str(ROOT / "target" / "soak-data"))
    p.add_argument("--rss-report-only", action="store_true",
                   help="report RSS without judging it (runs too short for a steady state)")
    return p.parse_args()


class Soak:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin_dir)
        self.out = Path(args.out)
        self.acked_dir = self.out / "acked"
        shutil.rmtree(self.out, ignore_errors=True)
        self.acked_dir.mkdir(parents=True)
        self.data = Path(args.tmp)
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        self.server = Server("aggregator", [str(self.bin / "aggregator")],
                             {"DB_PATH": str(self.data / "aggregator.redb")})
        self.runs = {}  # run id -> the acked-map files of its publishers
        self.batch_runs = []  # (run id, events) of finished batch segments, for replays
        self.gave_up = 0
        self.segment_no = 0
        self.commits = (0.0, 0)  # commit time total (ms) and commits, at the last sample

    # -- publishers -------------------------------------------------------------------------

    def publisher(self, name, batch, connections, extra, events, run_id, rate=None, limit=SEGMENT):
        self.segment_no += 1
        acked = self.acked_dir / f"{self.segment_no:05d}-{name}"
        argv = [str(self.bin / "publisher"), "--url", self.server.url, "--json", "--no-check",
                "--topics", str(TOPICS), "--topic-prefix", PREFIX, "--payload-bytes", "100",
                "--duplicate", "0.2", "--events", str(events), "--batch-size", str(batch),
                "--concurrency", str(connections), "--duration-limit", str(limit),
                "--run-id", run_id, "--seed", str(zlib.crc32(run_id.encode())),
                "--acked-out", str(acked), "--max-retries", "1000", *extra]
        if rate:
            argv += ["--rate", f"{rate:.3f}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        return name, run_id, events, acked, proc

    def finish(self, started):
        """Wait for the publishers of one segment; their reports by stream name."""
        reports = {}
        for name, run_id, events, acked, proc in started:
            out, _ = proc.communicate()
            if proc.returncode not in (0, 1):
                sys.exit(f"publisher {name} failed with {proc.returncode}")
            report = json.loads(out)
            self.gave_up += report["errors"].get("gave up", 0)
            self.runs.setdefault(run_id, []).append(acked)
            reports[name] = report
            if name == "batch":
                self.batch_runs.append((run_id, events))
        return reports

    def segment(self, rates, limit=SEGMENT):
        """One segment of every stream; `rates` are requests/s (None: closed loop)."""
        stamp = f"{time.time_ns():x}"[-10:]
        started = []
        for name, (batch, connections, extra) in STREAMS.items():
            rate = rates.get(name) if rates else None
            # Enough planned for the segment at the calibrated rate (closed loop: generous).
            requests = rate * limit * 1.3 if rate else (400_000 if batch == 1 else 30_000)
            events = max(int(requests * batch), batch)
            started.append(self.publisher(name, batch, connections, extra, events, f"{name}-{stamp}",
                                          rate, limit))
        if rates and self.batch_runs:
            run_id, events = random.choice(self.batch_runs)
            rate = rates["replay"]
            started.append(self.publisher("replay", 100, REPLAY_CONNECTIONS, [], events, run_id, rate, limit))
        return self.finish(started)

    # -- reads ------------------------------------------------------------------------------

    def reader(self, stop, latencies):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        while not stop.is_set():
            topic = f"{PREFIX}.{random.randrange(TOPICS)}"
            path = random.choice([f"/events?topic={topic}&limit=100&after={random.randrange(100_000)}",
                                  "/stats"])
            t0 = time.monotonic()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    latencies.append(time.monotonic() - t0)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            stop.wait(0.02)

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, t, reports, reads):
        pid = self.server.proc.pid
        with urllib.request.urlopen(self.server.url + "/stats", timeout=30) as r:
            stats = json.loads(r.read())
        open_files = len(os.listdir(f"/proc/{pid}/fd"))
        events = sum(r["events_sent"] for r in reports.values())
        p99 = max(r["latency"]["p99_ms"] for r in reports.values())
        reads.sort()
        read_p99 = reads[int(len(reads) * 0.99)] * 1000 if reads else 0.0
        s = {"t": round(t, 1), "rss_mib": round(self.server.rss_mib(), 1), "open_files": open_files,
             "events_per_s": round(events / SEGMENT), "publish_p99_ms": p99,
             "p99_ms": {k: r["latency"]["p99_ms"] for k, r in reports.items()},
             "read_p99_ms": round(read_p99, 2), "reads": len(reads),
             "retries": sum(r["retries"] for r in reports.values()),
             "stored_keys": stats["unique_processed"], "recent_keys": stats["dedup"]["recent_keys"],
             "key_log_pairs": stats["writer"]["key_log_pairs"],
             "mean_commit_ms": self.mean_commit_ms(stats["writer"])}
        print(f"t={s['t']:6.0f}s rss={s['rss_mib']:7.1f} MiB fds={open_files:4d} "
              f"events/s={s['events_per_s']:8,d} publish p99={p99:7.2f} ms read p99={read_p99:6.2f} ms "
              f"retries={s['retries']} stored={s['stored_keys']:,} key log={s['key_log_pairs']:,} "
              f"commit={s['mean_commit_ms']:.1f} ms",
              flush=True)
        return s

    def mean_commit_ms(self, writer):
        """Mean commit time since the last sample (from /stats's running mean)."""
        total = writer["avg_commit_ms"] * writer["batches"]
        last_total, last_batches = self.commits
        self.commits = (total, writer["batches"])
        return (total - last_total) / max(writer["batches"] - last_batches, 1)

    # -- the check at the end ---------------------------------------------------------------

    def acked_maps(self):
        """Run id -> bytearray, 1 where any publisher of that run had the key acknowledged."""
        maps = {}
        for run_id, files in self.runs.items():
            merged = None
            for f in files:
                data = bytearray(f.read_bytes())
                if merged is None:
                    merged = data
                else:
                    merged = bytearray(a | b for a, b in zip(merged, data))
            maps[run_id] = merged
        return maps

    def verify(self):
        maps = self.acked_maps()
        seen = {run_id: bytearray(len(m)) for run_id, m in maps.items()}
        stored = twice = foreign = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=120)
        for topic in range(TOPICS):
            after = 0
            while after is not None:
                conn.request("GET", f"/events?topic={PREFIX}.{topic}&limit=10000&after={after}")
                page = json.loads(conn.getresponse().read())
                for e in page["events"]:
                    run_id, _, n = e["event_id"].rpartition("-")
                    hits = seen.get(run_id)
                    if hits is None:
                        foreign += 1
                        continue
                    i = int(n)
                    twice += hits[i]
                    hits[i] = 1
                    stored += 1
                after = page["next_after"]
        missing = sum(sum(1 for a, s in zip(m, seen[r]) if a and not s) for r, m in maps.items())
        acked = sum(sum(m) for m in maps.values())
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())
        return {"acked_keys": acked, "stored": stored, "missing": missing, "twice": twice,
                "foreign": foreign, "unique_processed": stats["unique_processed"]}

    # -- the run ----------------------------------------------------------------------------

    def run(self):
        a = self.args
        self.server.ready()
        print(f"calibrating: every stream closed-loop for {a.calibrate:.0f} s", flush=True)
        cal = self.segment(None, limit=a.calibrate)
        rates = {k: a.load * r["requests_per_second"] for k, r in cal.items()}
        # Replays take a third of the batch stream's share.
        rates["replay"] = rates["batch"] / 3
        rates["batch"] -= rates["replay"]
        for k, r in cal.items():
            print(f"  {k:7s} max {r['events_per_second']:10,.0f} events/s "
                  f"({r['requests_per_second']:8,.0f} req/s) -> soak at {rates[k]:8,.1f} req/s", flush=True)
        stop = threading.Event()
        reads = []
        reader = threading.Thread(target=self.reader, args=(stop, reads), daemon=True)
        reader.start()
        samples = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.minutes * 60:
            reports = self.segment(rates)
            batch_reads, reads[:] = list(reads), []
            samples.append(self.sample(time.monotonic() - t0, reports, batch_reads))
        stop.set()
        reader.join()
        result = self.verify()
        self.report(cal, rates, samples, result)
        self.server.stop()
        return self.failures(samples, result)

    def failures(self, samples, result):
        fails = []
        first, last = rss_thirds(samples, self.args.warmup)
        if self.args.rss_report_only:
            pass
        elif first is None:
            fails.append("too short: fewer than three samples after the warm-up")
        elif last > first * 1.10:
            fails.append(f"RSS grew from {first:.1f} to {last:.1f} MiB after the warm-up (> 10 %)")
        if result["missing"]:
            fails.append(f"{result['missing']} acknowledged events are not stored")
        if result["twice"]:
            fails.append(f"{result['twice']} events are stored twice")
        if result["foreign"]:
            fails.append(f"{result['foreign']} stored events no publisher sent")
        if result["unique_processed"] != result["stored"]:
            fails.append(f"unique_processed {result['unique_processed']} != {result['stored']} stored")
        if self.gave_up:
            fails.append(f"publishers gave up on {self.gave_up} requests")
        return fails

    def report(self, cal, rates, samples, result):
        (self.out / "samples.json").write_text(json.dumps(
            {"calibration": cal, "rates_req_per_s": rates, "samples": samples, "result": result}, indent=1))
        after = [s for s in samples if s["t"] >= self.args.warmup] or samples
        lines = [
            f"soak: {self.args.minutes:g} min at {self.args.load:.0%} of the calibrated maximum, "
            f"warm-up {self.args.warmup:.0f} s, {len(samples)} samples",
            "",
            "| figure | after warm-up: first | min | max | last |",
            "|---|---|---|---|---|",
        ]
        for key, label in [("rss_mib", "RSS MiB"), ("open_files", "open files"),
                           ("events_per_s", "events/s"), ("publish_p99_ms", "publish p99 ms (worst stream)"),
                           ("read_p99_ms", "read p99 ms")]:
            vals = [s[key] for s in after]
            lines.append(f"| {label} | {vals[0]:,} | {min(vals):,} | {max(vals):,} | {vals[-1]:,} |")
        first, last = rss_thirds(samples, self.args.warmup)
        if first is not None:
            lines += ["", f"RSS median, first third after the warm-up {first:.1f} MiB, last third "
                      f"{last:.1f} MiB ({(last / first - 1) * 100:+.1f} %; fails above +10 %)"]
        lines += ["", f"acknowledged keys {result['acked_keys']:,}, stored {result['stored']:,}, "
                  f"missing {result['missing']}, twice {result['twice']}, "
                  f"unique_processed {result['unique_processed']:,}"]
        text = "\n".join(lines)
        (self.out / "summary.md").write_text(text + "\n")
        print(text, flush=True)


def rss_thirds(samples, warmup):
    """Median RSS of the first and of the last third of the samples after the warm-up.

    Growth is judged on these, not on single samples: a stall fills the queue for a moment
    (bounded by QUEUE_CAPACITY_EVENTS) and the peak shows in the report, but only a level that
    stays up is growth."""
    rss = [s["rss_mib"] for s in samples if s["t"] >= warmup]
    if len(rss) < 3:
        return None, None
    n = len(rss) // 3
    return statistics.median(rss[:n]), statistics.median(rss[-n:])


def main():
    soak = Soak(parse_args())
    try:
        fails = soak.run()
    finally:
        soak.server.stop()
        shutil.rmtree(soak.data, ignore_errors=True)
    if fails:
        for f in fails:
            print(f"FAIL: {f}", file=sys.stderr)
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    main()
