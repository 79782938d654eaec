#!/usr/bin/env python3
"""CPU per event, per stage, of one workload: `perf record -e cpu-clock` on the aggregator
while the publisher sends, then each sample is given to a stage of the data path.

A sample belongs to the stage of the frame nearest the leaf that names one (so the
allocator's and the kernel's time count toward the stage that called them). Stages are
listed per thread: handlers (tokio workers and the blocking pool), writer, settler.

Needs a build with frame pointers and line tables (scripts/profile.sh makes one in
target/prof). Usage: scripts/profile.sh single|batch|replay-out|replay-in [--scale S]
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROF_BIN = ROOT / "target" / "prof" / "release" / "aggregator"

# (stage, pattern) in the order they are tried for each frame, leaf first.
STAGES = [
    ("handler: disk check", r"Store::contains|store::read::|^redb::"),
    ("handler: encode", r"codec::encode|ingest::new_record|bincode::"),
    ("handler: filter", r"maybe_stored|bloomfilter::"),
    ("handler: claim", r"Deduper::claim|ClaimSet|dashmap::"),
    ("handler: key", r"EventKey::new|KeyHasher::hash|xxh3"),
    ("handler: validate", r"validate::|check_timestamp|check_topic|check_event_id|chrono::"),
    ("handler: parse", r"decode::wire|serde_json::de|decode::decode|decode::split|ndjson"),
    ("handler: decompress", r"decompress|flate2|ruzstd|miniz"),
    ("handler: queue push + ack wait", r"IngestQueue::push|Ticket::|ingest::await_ack|Queued::outcome"),
    # With fat LTO most of ingest (key, claim, filter, record building) is inlined here.
    ("handler: ingest (key, claim, filter; inlined)", r"Ingest>::queue|ingest::Ingest|read_decode_and_queue"),
    ("handler: response", r"serde_json::ser|Json<|IntoResponse|PublishResponse"),
    ("handler: body read", r"read_body|Limited|BodyExt|collect"),
    ("writer: events table", r"write_events|EVENTS"),
    ("writer: merge slices (log and tree)", r"write_merge_slice|write_tree_slice|index::|runs::"),
    ("writer: commit", r"WriteTransaction::commit|commit_inner|TransactionalMemory|flush_write_buffer"),
    ("settler: settle", r"settler::|Settler"),
    ("http (hyper, tcp)", r"hyper::|hyper_util::|tcp_|sock_|http::serve|axum::"),
]
COMPILED = [(s, re.compile(p)) for s, p in STAGES]


def thread_of(comm):
    if comm.startswith("writer"):
        return "writer"
    if comm.startswith("settler"):
        return "settler"
    return "handlers"


def stage_of(thread, frames):
    if thread != "handlers" and any(re.search(r"fdatasync|fsync|ext4_sync_file", f) for f in frames):
        return f"{thread}: fsync"
    for sym in frames:
        for stage, pat in COMPILED:
            if pat.search(sym):
                # Each thread's samples go to its own stages (or the shared http ones).
                owner = stage.split(":")[0].rstrip("s") if ":" in stage else None
                if owner not in (None, thread.rstrip("s")):
                    continue
                return stage
    if thread != "handlers":
        return f"{thread}: other"
    if any(f.startswith("mi_") or "clear_page" in f for f in frames[:3]):
        return "handlers: allocator (unattributed)"
    return "handlers: other (runtime, syscalls)"


def parse(script_out):
    """Yield (comm, [symbols leaf first]) per sample of `perf script`."""
    comm, frames = None, []
    for line in script_out:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line.startswith((" ", "\t")):
            comm = line.split()[0]
        else:
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+ .*|\s\(.*\)$", "", parts[1]).strip())
    if comm is not None:
        yield comm, frames


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=["single", "batch", "replay-out", "replay-in"])
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--freq", type=int, default=999)
    p.add_argument("--reuse", action="store_true", help="classify the last recorded profile again")
    args = p.parse_args()
    perf_data = ROOT / "target" / "prof" / f"perf-{args.workload}.data"
    if args.reuse:
        report = json.loads(perf_data.with_suffix(".json").read_text())
        return summarize(args, str(perf_data), report)
    bench.RELEASE = ROOT / "target" / "release"
    events, batch, dup = {"single": (100_000, 1, 0.2), "batch": (2_000_000, 1000, 0.2),
                          "replay-out": (2_000_000, 1000, 0.0), "replay-in": (500_000, 1000, 0.0)}[args.workload]
    events = int(events * args.scale)
    bench.WINDOW["keys"] = int(1_000_000 * args.scale)
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        agg = bench.Server("aggregator", [str(PROF_BIN)], {"DB_PATH": f"{d}/a.redb",
                                                          "RECENT_KEYS_CAPACITY": str(bench.WINDOW["keys"])})
        agg.ready()
        run_id = None
        if args.workload.startswith("replay"):
            run_id = "profiled"
            bench.publish(agg, events, batch, duplicate=0, run_id=run_id)
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(args.freq), "-g",
                                 "-p", str(agg.proc.pid), "-o", str(perf_data)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        report = bench.publish(agg, events, batch, duplicate=dup, run_id=run_id)
        perf.send_signal(2)
        perf.wait()
        agg.stop()
    perf_data.with_suffix(".json").write_text(json.dumps(report))
    summarize(args, str(perf_data), report)


def summarize(args, perf_data, report):
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "comm,ip,sym"],
                         capture_output=True, text=True).stdout.splitlines()
    counts = collections.Counter()
    total = 0
    for comm, frames in parse(out):
        thread = thread_of(comm)
        counts[stage_of(thread, frames)] += 1
        total += 1
    cpu_us = report["server_cpu_seconds"] * 1e6 / report["events_sent"]
    print(f"workload {args.workload}: {report['events_sent']:,} events, {report['events_per_second']:,.0f} events/s, "
          f"server {report['server_cores']:.2f} cores, {cpu_us:.2f} CPU µs/event, {total} samples\n")
    print("| stage | share | CPU µs/event |\n|---|---|---|")
    for stage, c in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {100 * c / total:.1f} % | {cpu_us * c / total:.3f} |")


if __name__ == "__main__":
    main()
