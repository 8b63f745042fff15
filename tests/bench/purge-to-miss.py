#!/usr/bin/env python3
"""Purge to miss: how long after a URL purge every edge of a local cluster
stops serving the object.

    tests/bench/purge-to-miss.py --bin target/release --nodes 16 --rounds 120

With --varnish, `purgecast dev --varnish` also runs a Varnish beside every
node, purged through the node's Varnish sink, and each round times the
Varnish caches too, side by side with the edges.

Starts `purgecast dev` (built-in origin), then per round: caches
http://bench.test/obj/K on every edge (two GETs each, the second must be a
hit), notes the time, runs `purgectl purge --url ...` (hard, no --wait)
against a random node, and polls every edge until it answers
`Cache-Status: ...fwd=miss`. The round's time is from just before purgectl
starts until the last edge's first miss has been read. purgectl's own
process start-up is part of it, so the run also times purgectl calls that do
nothing (`--version`) and one that makes a gRPC call but purges nothing
(`members`).

Standard library only. One thread: the pollers are asyncio coroutines over
plain keep-alive HTTP/1.1 connections, so no GIL hand-offs between them add
to the times. Binds and connects to 127.0.0.1 only; stops the cluster it
started on exit.
"""

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "bench.test"


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(name, ms):
    return (f"{name:<34} n={len(ms):<4} P50 {pct(ms, 50):8.2f} ms  P90 {pct(ms, 90):8.2f} ms  "
            f"P99 {pct(ms, 99):8.2f} ms  max {max(ms):8.2f} ms")


class Edge:
    """One keep-alive connection to an edge (or a Varnish); reconnects when
    it breaks."""

    def __init__(self, port, varnish=False):
        self.port = port
        self.varnish = varnish
        self.reader = None
        self.writer = None

    def is_miss(self, fields):
        if self.varnish:
            return fields.get("x-cache", "") == "MISS"
        return "fwd=miss" in fields.get("cache-status", "")

    def is_hit(self, fields):
        if self.varnish:
            return fields.get("x-cache", "") == "HIT"
        return fields.get("cache-status", "") == "purgecast; hit"

    async def get(self, path):
        """GET path with Host: bench.test; returns (status, header fields)."""
        for attempt in range(2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                fields = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.strip()
                await self.reader.readexactly(int(fields.get("content-length", "0")))
                if fields.get("connection", "").lower() == "close":
                    self.close()
                return status, fields
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                self.close()
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def first_miss(edge, path, t0, deadline, gap):
    """Polls until the edge answers a miss; returns (ms since t0, polls)."""
    polls = 0
    while (left := deadline - time.perf_counter()) > 0:
        try:
            _, fields = await asyncio.wait_for(edge.get(path), timeout=left)
        except asyncio.TimeoutError:
            edge.close()
            break
        polls += 1
        if edge.is_miss(fields):
            return (time.perf_counter() - t0) * 1e3, polls
        if gap:
            await asyncio.sleep(gap)
    return None, polls


async def warm(edges, path):
    for edge in edges:
        await asyncio.wait_for(edge.get(path), timeout=10)
    results = await asyncio.wait_for(asyncio.gather(*(e.get(path) for e in edges)), timeout=10)
    cold = [e.port for e, (_, fields) in zip(edges, results) if not e.is_hit(fields)]
    if cold:
        raise RuntimeError(f"{path} is not a hit on edges {cold}")


async def time_process(argv):
    t = time.perf_counter()
    p = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(p.communicate(), timeout=30)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise RuntimeError(f"{argv} did not finish in 30 s")
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {err.decode(errors='replace')}")
    return (time.perf_counter() - t) * 1e3


async def bench(args, grpc_ports, edge_ports, varnish_ports):
    purgectl = os.path.join(args.bin, "purgectl")
    edges = [Edge(p) for p in edge_ports] + [Edge(p, varnish=True) for p in varnish_ports]
    n_edges = len(edge_ports)
    rng = random.Random(args.seed)
    totals, firsts, ctl_times, polls_per_round = [], [], [], []
    v_totals, v_firsts = [], []
    gap = args.poll_gap_ms / 1e3
    # Object numbers unique to this run, so a rerun against the same cluster
    # never starts from an object some earlier run left in a purged state.
    base = int(time.time()) % 100_000 * 1000
    for r in range(args.rounds):
        path = f"/obj/{base + r}"
        await warm(edges, path)
        node = rng.randrange(len(grpc_ports))
        argv = [purgectl, "--endpoint", f"http://127.0.0.1:{grpc_ports[node]}", "purge",
                "--url", f"http://{HOST}{path}"]
        t0 = time.perf_counter()
        deadline = t0 + args.timeout
        ctl = asyncio.ensure_future(time_process(argv))
        got = await asyncio.gather(*(first_miss(e, path, t0, deadline, gap) for e in edges))
        ctl_times.append(await ctl)
        times = [t for t, _ in got]
        polls_per_round.append(sum(n for _, n in got))
        if any(t is None for t in times):
            missing = [e.port for e, t in zip(edges, times) if t is None]
            print(f"round {r}: edges {missing} still hit after {args.timeout} s", file=sys.stderr)
            totals.append(args.timeout * 1e3)
            continue
        totals.append(max(times[:n_edges]))
        firsts.append(min(times[:n_edges]))
        if varnish_ports:
            v_totals.append(max(times[n_edges:]))
            v_firsts.append(min(times[n_edges:]))
        if args.verbose:
            print(f"round {r:3} via node {node:2}: first {min(times):7.2f} ms, last {max(times):7.2f} ms, "
                  f"purgectl {ctl_times[-1]:7.2f} ms, {polls_per_round[-1]} polls")
        await asyncio.sleep(args.pause_ms / 1e3)

    # purgectl doing nothing, and doing one gRPC call that purges nothing.
    version = [await time_process([purgectl, "--version"]) for _ in range(args.ctl_samples)]
    members = [await time_process([purgectl, "--endpoint", f"http://127.0.0.1:{grpc_ports[i % len(grpc_ports)]}",
                                   "members"]) for i in range(args.ctl_samples)]
    for e in edges:
        e.close()

    print(f"{len(edges)} edges, {args.rounds} rounds, poll gap {args.poll_gap_ms} ms, "
          f"median {statistics.median(polls_per_round):.0f} polls per round")
    print(summary("purge -> miss on every edge", totals))
    print(summary("purge -> miss on the first edge", firsts))
    if varnish_ports:
        print(summary("purge -> miss on every Varnish", v_totals))
        print(summary("purge -> miss on the first Varnish", v_firsts))
    print(summary("purgectl purge (process, wall)", ctl_times))
    print(summary("purgectl --version (process)", version))
    print(summary("purgectl members (process+RPC)", members))


def start_cluster(args):
    os.makedirs(os.path.dirname(args.dir.rstrip("/")) or ".", exist_ok=True)
    log = open(os.path.join(tempfile.gettempdir(), f"purge-to-miss-dev-{os.getpid()}.log"), "w+")
    dev = subprocess.Popen(
        [os.path.join(args.bin, "purgecast"), "dev", "--nodes", str(args.nodes), "--fresh",
         "--dir", args.dir, "--base-port", str(args.base_port)] + (["--varnish"] if args.varnish else []),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        log.seek(0)
        text = log.read()
        if "every one sees all" in text:
            return dev, log, text
        if dev.poll() is not None:
            break
        time.sleep(0.2)
    stop_cluster(dev, log)
    raise RuntimeError(f"the cluster did not come up:\n{text}")


def stop_cluster(dev, log):
    log.seek(0)
    node_pids = [int(p) for p in re.findall(r" pid (\d+)", log.read())]
    if dev.poll() is None:
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    for pid in node_pids:  # should be gone with dev; in case they are not
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.close()
    os.unlink(log.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release", help="directory of purgecast and purgectl")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--dir", default="/tmp/bench16")
    ap.add_argument("--base-port", type=int, default=27100)
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds a round may take")
    ap.add_argument("--poll-gap-ms", type=float, default=0.0, help="pause between one edge's polls (0: tight)")
    ap.add_argument("--pause-ms", type=float, default=100.0, help="pause between rounds")
    ap.add_argument("--ctl-samples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--varnish", action="store_true", help="also time a Varnish per node, purged by its sink")
    args = ap.parse_args()
    if not (1 <= args.nodes <= 64 and 1 <= args.rounds <= 10_000 and 0 < args.timeout <= 60):
        ap.error("nodes 1-64, rounds 1-10000, timeout up to 60 s")

    dev, log, text = start_cluster(args)
    try:
        grpc = [int(p) for p in re.findall(r"grpc http://127\.0\.0\.1:(\d+)", text)]
        edge = [int(p) for p in re.findall(r"edge http://127\.0\.0\.1:(\d+)", text)]
        varnish = [int(p) for p in re.findall(r"varnish http://127\.0\.0\.1:(\d+)", text)]
        if len(grpc) != args.nodes or len(edge) != args.nodes:
            raise RuntimeError(f"expected {args.nodes} nodes in dev's output:\n{text}")
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
              f"{args.nodes} nodes, edges {edge[0]}..{edge[-1]}")
        asyncio.run(bench(args, grpc, edge, varnish))
        print(f"load at the end {os.getloadavg()[0]:.2f}")
    finally:
        stop_cluster(dev, log)


if __name__ == "__main__":
    main()
