#!/usr/bin/env python3
"""Storm: the highest purge rate a local cluster sustains with completion
P99 under a bound, and what each purge costs every node in CPU and bytes.

    cargo build --release -p purgecast-node -p purgecast-client
    tests/bench/storm.py --bin target/release --out storm.json --svg storm.svg
    tests/bench/storm.py --bin target/release --modes one --kinds tag \\
        --selectors 1,100 --rates 500,1000,2000,4000 --seconds 20

purgectl must be this tree's (`purgectl bench --selectors`). The default
sweep is 2 modes x 2 kinds x 3 selector counts x up to 5 rates, each run
--seconds plus draining, --settle and --cooldown: under 20 minutes.

Starts `purgecast dev --nodes 16 --no-edge` (the edges and the demo origin
are off: the store applies purges the same way without them, and 16 idle
HTTP caches would only take CPU from a 2-core machine; --edges keeps them),
waits until dev has written its cluster file (dev writes it only once every
node sees every other alive), then for every entry mode, selector kind and
selectors per purge, runs `purgectl --json bench` at each rate of --rates
for --seconds:

  one     every purge enters through node --entry-node
          (`purgectl bench --endpoints <that node>`);
  spread  each purge enters through a node picked at random
          (`purgectl bench --cluster-file`).

In both modes purgectl polls a purge's status on the node it entered
through, so in `one` mode that node also answers every poll. Completion is
the origin's own figure (accept to the last live member's applied-ack).

A rate is sustained when completion P99 <= --p99-ms, no purge failed or
timed out, and purgectl kept up (accept throughput >= --min-throughput x the
target rate; below that the load generator or the entry node's accept path
was the limit, not the spread). The first rate that is not sustained is
recorded and ends that configuration's sweep; the highest sustained rate is
the last one before it.

Around every run the script samples each node process's CPU time
(/proc/PID/stat) and its Prometheus counters (purgecast_peer_* from
node/src/transport/stats.rs, apply and purge counters), and while the run
lasts the apply backlog gauges. It reports per purge and per node: CPU ms,
payload bytes sent (purgecast_peer_bytes_sent_total) and wire bytes sent
(purgecast_peer_udp_bytes_sent_total, QUIC headers, acks and retransmissions
included), min/median/max over the nodes and the entry node separately in
`one` mode, each net of the idle cluster's own rate (measured once before
the sweep). QUIC's wire counters are copied into the metrics once a second
per connection, so every "after" sample waits --settle seconds (> 1) after
purgectl exits. The JSON keeps the raw deltas, the idle rates and the
window, so anything can be recomputed.

Where the bottleneck is, the table's last columns hint: host% near 100
(the 2 cores are spent; compare the entry node's CPU in `one` mode),
iow% high (fsyncs queue on the disk), apply% near 100 on a node or a
growing backlog (its apply worker is saturated), ctl% near 100 or accept
throughput short of the target (the load generator is the limit).

Standard library only. Binds and connects to 127.0.0.1 only; every wait is
bounded; stops the cluster it started on exit (also on Ctrl-C or SIGTERM).
"""

import argparse
import http.client
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"

# Per node, before and after each run. Histograms appear as _sum/_count.
COUNTERS = [
    "purgecast_peer_bytes_sent_total",
    "purgecast_peer_bytes_received_total",
    "purgecast_peer_udp_bytes_sent_total",
    "purgecast_peer_udp_bytes_received_total",
    "purgecast_peer_frames_sent_total",
    "purgecast_peer_streams_sent_total",
    "purgecast_peer_udp_datagrams_sent_total",
    "purgecast_peer_send_dropped_total",
    "purgecast_peer_send_failed_total",
    "purgecast_peer_messages_sent_total",
    "purgecast_purges_accepted_total",
    "purgecast_purges_received_total",
    "purgecast_purges_applied_total",
    "purgecast_purge_duplicates_total",
    "purgecast_flushes_total",
    "purgecast_apply_errors_total",
    "purgecast_purge_apply_seconds_sum",
    "purgecast_purge_apply_seconds_count",
    # Acks reaching a node: one per member and purge without ack relays,
    # one batch per PoP and window with them.
    'purgecast_peer_messages_received_total{kind="applied"}',
    'purgecast_peer_messages_received_total{kind="applied_by"}',
]
ACKS = COUNTERS[-2:]
# Sampled during a run too; their maximum over the run is kept.
GAUGES = ["purgecast_apply_backlog", "purgecast_apply_held", "purgecast_store_deferred_purges"]


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind through the `finally` that stops the cluster."""


def on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


# --- /proc --------------------------------------------------------------


def proc_stat(pid):
    """(ppid, utime + stime in ticks) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may hold spaces or ')': split at
    # the last one. What follows starts at field 3 (state).
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def proc_argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def node_name_of(argv):
    """`purgecast run --config DIR/node-i/config.toml` -> "node-i", else None.
    dev.rs starts each node exactly so (and the demo origin, when on, as
    `purgecast origin --listen ...`, which this does not match). The words
    are looked for after argv[0], not at argv[1], so that a wrapper or an
    interpreter in front (a script standing in for purgecast) still matches."""
    for k in range(1, len(argv) - 2):
        if argv[k] == "run" and argv[k + 1] == "--config":
            return os.path.basename(os.path.dirname(argv[k + 2])) or None
    return None


def find_node_pids(dev_pid):
    """Node processes by name. dev.rs spawns every node directly (no shell)
    with Command::new(current_exe) ... spawn(), so they are the children of
    the dev process: scan /proc for processes whose parent is dev and whose
    command line is `... run --config .../node-i/config.toml`. (The cluster
    file's `pid` fields name the same processes; main() checks they agree.)"""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(entry)
        if st is None or st[0] != dev_pid:
            continue
        name = node_name_of(proc_argv(entry))
        if name:
            found[name] = int(entry)
    return found


def machine_ticks():
    """(busy, iowait, total) jiffies of all CPUs, from /proc/stat's first
    line. iowait is idle time with a disk write outstanding: 16 stores
    fsyncing on one disk show up there, not as busy."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    # guest and guest_nice (fields 9, 10) are already in user and nice.
    total = sum(fields[:8])
    return total - idle - iowait, iowait, total


def children_cpu_s():
    """CPU seconds of this script's reaped children (that is, the purgectl
    runs: dev is not reaped until the end)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- metrics ------------------------------------------------------------


def http_get(url, timeout=5.0):
    """GET on loopback with http.client (urllib would honour http_proxy)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname != LOOPBACK:
        raise RuntimeError(f"refusing non-loopback URL {url}")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request("GET", u.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


def parse_metrics(text, names):
    """Sum over every label set of each of `names` (absent: 0); a name
    written with its labels, `name{k="v"}`, is that one series."""
    wanted = set(names)
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series = line.rsplit(" ", 1)[0]
        name = series.split("{", 1)[0]
        for key in {name, series} & wanted:
            try:
                out[key] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return out


def scrape(node, names):
    status, text = http_get(node["metrics"])
    if status != 200:
        raise RuntimeError(f"{node['name']}: metrics answered {status}")
    return parse_metrics(text, names)


def snapshot(nodes):
    """Per node: CPU ticks, RSS and counters; plus the machine's CPU and
    purgectl's. CPU first and counters after, per node, so the two windows
    overlap as closely as one scrape allows."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    snap = {"t": time.monotonic(), "machine": machine_ticks(), "client_cpu_s": children_cpu_s(),
            "script_cpu_s": me.ru_utime + me.ru_stime, "nodes": {}}
    for node in nodes:
        st = proc_stat(node["pid"])
        if st is None:
            raise RuntimeError(f"{node['name']} (pid {node['pid']}) is gone; see its node.log")
        snap["nodes"][node["name"]] = {
            "cpu_ticks": st[1],
            "rss_kib": proc_rss_kib(node["pid"]),
            "metrics": scrape(node, COUNTERS + GAUGES),
        }
    return snap


def deltas(before, after):
    """Per node: CPU ms and counter increases between two snapshots."""
    out = {}
    for name, a in after["nodes"].items():
        b = before["nodes"][name]
        d = {k: a["metrics"][k] - b["metrics"][k] for k in COUNTERS}
        d["cpu_ms"] = (a["cpu_ticks"] - b["cpu_ticks"]) * 1000.0 / CLK_TCK
        d["rss_kib"] = a["rss_kib"]
        out[name] = d
    return out


def gauges_max(nodes, into):
    """Folds the current gauges of every node into `into` (max per node)."""
    for node in nodes:
        try:
            g = scrape(node, GAUGES)
        except (OSError, RuntimeError):
            continue  # a missed sample; the after-snapshot will tell if the node is gone
        seen = into.setdefault(node["name"], dict.fromkeys(GAUGES, 0.0))
        for k in GAUGES:
            seen[k] = max(seen[k], g[k])


def wait_quiet(nodes, limit):
    """Waits until no node has an apply backlog (a previous overloaded run
    may leave one); returns the seconds waited, or None if it never did."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        busy = False
        for node in nodes:
            try:
                g = scrape(node, GAUGES)
            except (OSError, RuntimeError):
                busy = True
                break
            if g["purgecast_apply_backlog"] > 0 or g["purgecast_apply_held"] > 0:
                busy = True
                break
        if not busy:
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


# --- the cluster --------------------------------------------------------


def start_cluster(args):
    """Starts `purgecast dev`; returns (dev Popen, log file, cluster file dict)."""
    # dev's --fresh empties --dir but not a cluster file outside it, and a
    # stale file would look like a cluster that is up.
    try:
        os.unlink(args.cluster_file)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(args.dir)), exist_ok=True)
    log = open(os.path.join(tempfile.gettempdir(), f"storm-dev-{os.getpid()}.log"), "w+")
    argv = [os.path.join(args.bin, "purgecast"), "dev", "--nodes", str(args.nodes), "--fresh",
            "--dir", args.dir, "--base-port", str(args.base_port), "--cluster-file", args.cluster_file,
            "--pops", str(args.pops), "--purge-rate", str(args.purge_rate),
            "--ack-relay", "true" if args.ack_relay else "false",
            "--batch-peer-frames", "true" if args.batch_peer_frames else "false"]
    if not args.edges:
        argv.append("--no-edge")
    print("starting:", " ".join(argv), flush=True)
    # Its own session: a Ctrl-C reaches this script only, which then stops
    # dev with SIGTERM so that dev stops its nodes in order.
    dev = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        try:
            with open(args.cluster_file) as f:
                cluster = json.load(f)
            if len(cluster.get("nodes", [])) == args.nodes:
                return dev, log, cluster
        except (OSError, ValueError):
            pass  # not written yet, or half written
        if dev.poll() is not None:
            break
        time.sleep(0.2)
    log.seek(0)
    text = log.read()
    stop_cluster(dev, log, [], keep_log=True)
    raise RuntimeError(f"the cluster did not come up within {args.start_timeout:.0f} s; dev's log "
                       f"({log.name}):\n{text[-4000:]}")


def stop_cluster(dev, log, nodes, keep_log=False):
    if dev.poll() is None:
        dev.send_signal(signal.SIGTERM)
        try:
            # dev gives the nodes 5 s, then the origin 5 s, before SIGKILL.
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()  # its nodes get SIGTERM from PR_SET_PDEATHSIG
            dev.wait(timeout=10)
    for node in nodes:
        # Only if the pid still runs that node's command line: after dev
        # is gone a pid could in principle be reused.
        if node_name_of(proc_argv(node["pid"])) == node["name"]:
            try:
                os.kill(node["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    log.close()
    if not keep_log:
        os.unlink(log.name)


def wait_metrics(nodes, limit):
    """The real node serves metrics before its API, so this passes at once
    after dev's announcement; it guards the first snapshot all the same."""
    deadline = time.monotonic() + limit
    for node in nodes:
        while True:
            try:
                scrape(node, GAUGES)
                break
            except (OSError, RuntimeError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node['name']}: no metrics at {node['metrics']} ({e})")
                time.sleep(0.2)


def cluster_nodes(cluster, dev_pid):
    nodes = []
    for n in cluster["nodes"]:
        for key in ("grpc", "metrics"):
            if urllib.parse.urlsplit(n[key]).hostname != LOOPBACK:
                raise RuntimeError(f"{n['name']} {key} {n[key]} is not on {LOOPBACK}")
        nodes.append({"name": n["name"], "grpc": n["grpc"], "metrics": n["metrics"], "pid": int(n["pid"])})
    by_proc = find_node_pids(dev_pid)
    by_file = {n["name"]: n["pid"] for n in nodes}
    if by_proc != by_file:
        raise RuntimeError(f"node processes under dev (pid {dev_pid}) {by_proc} do not match the cluster file {by_file}")
    return nodes


# --- one run ------------------------------------------------------------


def run_bench(args, purgectl, targets, kind, selectors, rate):
    """One `purgectl bench`; returns (report or None, error or None, wall s)."""
    purges = max(2, round(rate * args.seconds))
    argv = [purgectl, "--json", "bench", *targets, "--purges", str(purges), "--rate", f"{rate:g}",
            "--selector", kind, "--selectors", str(selectors), "--timeout", f"{args.purge_timeout:g}s",
            "--poll-interval", f"{args.poll_interval_ms:g}ms", "--concurrency", str(args.concurrency),
            "--seed", str(args.seed)]
    # Issuing takes --seconds when purgectl keeps up; allow it three times
    # that, then every purge's own timeout, before calling the run hung.
    limit = 3 * args.seconds + args.purge_timeout + 30
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        return None, f"purgectl bench did not finish in {limit:.0f} s", time.monotonic() - t0
    finally:
        if p.poll() is None:  # Ctrl-C or SIGTERM while it ran
            p.kill()
            p.wait(timeout=10)
    wall = time.monotonic() - t0
    # 0: all completed; 2 (EXIT_INCOMPLETE): some did not, the report says which.
    if p.returncode not in (0, 2):
        lines = err.decode(errors="replace").strip().splitlines() or ["(nothing on stderr)"]
        return None, f"purgectl exited {p.returncode}: {lines[-1][-500:]}", wall
    try:
        return json.loads(out), None, wall
    except ValueError as e:
        return None, f"purgectl printed no JSON report ({e}): {out[:500]!r}", wall


def spread(values):
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def per_purge(d, idle, window, accepted, entry):
    """Per-purge costs of every node, net of the idle cluster's own rate."""
    nodes = {}
    for name, x in d.items():
        i = idle[name]
        nodes[name] = {
            "cpu_ms": (x["cpu_ms"] - i["cpu_ms_per_s"] * window) / accepted,
            "bytes_sent": (x["purgecast_peer_bytes_sent_total"] - i["bytes_sent_per_s"] * window) / accepted,
            "wire_bytes_sent": (x["purgecast_peer_udp_bytes_sent_total"] - i["wire_bytes_sent_per_s"] * window)
            / accepted,
            "acks_in": sum(x[k] for k in ACKS) / accepted,
        }
    out = {"nodes": nodes}
    for k in ("cpu_ms", "bytes_sent", "wire_bytes_sent", "acks_in"):
        out[k] = spread([v[k] for v in nodes.values()])
        if entry is not None:
            out[k]["entry"] = nodes[entry][k]
    return out


def verdict(args, report, error):
    """Why a run does not count as sustained (empty: it does)."""
    if error:
        return [error]
    why = []
    c = report.get("completion")
    if c is None:
        why.append("no purge completed")
    elif c["p99_ms"] > args.p99_ms:
        why.append(f"P99 {c['p99_ms']:.1f} ms > {args.p99_ms:g} ms")
    if report["failed"]:
        why.append(f"{report['failed']} purge calls failed")
    if report["timed_out"]:
        why.append(f"{report['timed_out']} timed out")
    if report["completed"] < report["purges"] and not (report["failed"] or report["timed_out"]):
        why.append(f"only {report['completed']} of {report['purges']} completed")
    if report["throughput_per_s"] < args.min_throughput * report["target_rate"]:
        why.append(f"accept throughput {report['throughput_per_s']:.0f}/s < "
                   f"{args.min_throughput:g} x {report['target_rate']:g}/s")
    return why


def one_run(args, nodes, idle, purgectl, mode, kind, selectors, rate):
    entry = nodes[args.entry_node]["name"] if mode == "one" else None
    if mode == "one":
        targets = ["--endpoints", nodes[args.entry_node]["grpc"]]
    else:
        targets = ["--cluster-file", args.cluster_file]
    quiet_wait = wait_quiet(nodes, args.quiet_timeout)
    if quiet_wait is None:
        print(f"  warning: apply backlogs did not drain in {args.quiet_timeout:g} s; running anyway", flush=True)
    before = snapshot(nodes)
    # Gauges while purgectl runs, from a thread: the main thread is blocked
    # in communicate().
    gauges, done = {}, threading.Event()

    def watch():
        while not done.wait(args.watch_interval):
            gauges_max(nodes, gauges)

    watcher = threading.Thread(target=watch, daemon=True) if args.watch_interval > 0 else None
    if watcher:
        watcher.start()
    try:
        report, error, wall = run_bench(args, purgectl, targets, kind, selectors, rate)
    finally:
        done.set()
        if watcher:
            watcher.join(timeout=10)
    time.sleep(args.settle)
    after = snapshot(nodes)
    window = after["t"] - before["t"]
    d = deltas(before, after)
    for snap in (before, after):  # a run shorter than --watch-interval has no other sample
        for name, x in snap["nodes"].items():
            seen = gauges.setdefault(name, dict.fromkeys(GAUGES, 0.0))
            for k in GAUGES:
                seen[k] = max(seen[k], x["metrics"][k])
    busy_b, iowait_b, total_b = before["machine"]
    busy_a, iowait_a, total_a = after["machine"]
    run = {
        "mode": mode, "kind": kind, "selectors": selectors, "rate": rate, "seconds": args.seconds,
        "entry_node": entry, "report": report, "error": error, "purgectl_wall_s": wall, "window_s": window,
        "quiet_wait_s": quiet_wait,
        "machine_busy": (busy_a - busy_b) / max(1, total_a - total_b),
        "machine_iowait": (iowait_a - iowait_b) / max(1, total_a - total_b),
        "purgectl_cpu_ms": (after["client_cpu_s"] - before["client_cpu_s"]) * 1000.0,
        # This script's own CPU (its scrapes, mostly), taken from the same cores.
        "script_cpu_ms": (after["script_cpu_s"] - before["script_cpu_s"]) * 1000.0,
        "node_deltas": d, "gauges_max": gauges,
    }
    accepted = report["accepted"] if report else 0
    run["per_purge"] = per_purge(d, idle, window, accepted, entry) if accepted else None
    # Apply worker busy share: seconds spent applying batches per second of
    # window, the likeliest saturated stage when fsync dominates.
    run["apply_busy"] = spread([x["purgecast_purge_apply_seconds_sum"] / window for x in d.values()])
    run["why_not_sustained"] = verdict(args, report, error)
    run["sustained"] = not run["why_not_sustained"]
    return run


# --- output -------------------------------------------------------------


def columns(r):
    """(header, width, text) of one run's table row; r None: headers only."""
    rep = (r or {}).get("report") or {}
    c = rep.get("completion") or {}
    pp = (r or {}).get("per_purge") or {}
    cpu, wire, payload, acks = (pp.get(k) or {} for k in ("cpu_ms", "wire_bytes_sent", "bytes_sent", "acks_in"))
    backlog = max((g["purgecast_apply_backlog"] for g in (r or {}).get("gauges_max", {}).values()), default=None)
    apply_busy = ((r or {}).get("apply_busy") or {}).get("max")
    ctl = r and r["purgectl_cpu_ms"] / 10 / r["window_s"]  # ms per s -> % of one core
    return [
        ("mode", -6, r and r["mode"]),
        ("kind", -4, r and r["kind"]),
        ("sel", 3, r and r["selectors"]),
        ("rate", 6, r and f"{r['rate']:g}"),
        ("thru/s", 6, fmt(rep.get("throughput_per_s"), 0)),
        ("done", 11, r and (f"{rep['completed']}/{rep['purges']}" if rep else "error")),
        ("P50ms", 6, fmt(c.get("p50_ms"), 1)),
        ("P99ms", 6, fmt(c.get("p99_ms"), 1)),
        ("ok", -3, r and ("yes" if r["sustained"] else "NO")),
        ("|", 1, "|"),
        ("cpu:min", 7, fmt(cpu.get("min"), 2)),
        ("med", 6, fmt(cpu.get("median"), 2)),
        ("max", 6, fmt(cpu.get("max"), 2)),
        ("entry", 6, fmt(cpu.get("entry"), 2)),
        ("|", 1, "|"),
        ("wire:min", 8, fmt(wire.get("min"), 0)),
        ("med", 7, fmt(wire.get("median"), 0)),
        ("max", 7, fmt(wire.get("max"), 0)),
        ("entry", 7, fmt(wire.get("entry"), 0)),
        ("|", 1, "|"),
        ("payload:med", 11, fmt(payload.get("median"), 0)),
        ("entry", 7, fmt(payload.get("entry"), 0)),
        ("|", 1, "|"),
        ("acks:max", 8, fmt(acks.get("max"), 1)),
        ("entry", 6, fmt(acks.get("entry"), 1)),
        ("|", 1, "|"),
        ("host%", 5, r and f"{r['machine_busy'] * 100:.0f}"),
        ("iow%", 4, r and f"{r['machine_iowait'] * 100:.0f}"),
        ("apply%", 6, fmt(None if apply_busy is None else apply_busy * 100, 0)),
        ("backlog", 7, fmt(backlog, 0)),
        ("ctl%", 5, fmt(ctl, 0)),
    ]


def fmt(v, prec):
    return "-" if v is None else f"{v:.{prec}f}"


def table_line(r=None):
    cells = []
    for head, width, text in columns(r):
        text = head if r is None else str(text)
        cells.append(text.ljust(-width) if width < 0 else text.rjust(width))
    return " ".join(cells)


TABLE_NOTE = """\
Per purge and per node, net of the idle cluster: cpu = CPU ms (min, median,
max over the nodes; entry = the node every purge entered through, mode
one), wire = bytes sent in QUIC datagrams, payload = bytes of frames sent,
acks = ack messages received (applied and relayed batches; max over the
nodes, and at the entry node, where every purge's acks end in mode one).
host% = the machine's CPU busy, iow% = its CPU idle waiting for the disk
(both over all cores); apply% = the busiest node's apply worker
(share of the window spent writing purge batches); backlog = the largest
apply backlog seen (jobs waiting for the apply queue); ctl% = purgectl's
CPU, in % of one core."""


def config_key(r):
    return (r["mode"], r["kind"], r["selectors"])


def config_label(key):
    mode, kind, sel = key
    return f"{'one node' if mode == 'one' else 'spread'}, {kind} x{sel}"


def summarize(runs):
    out = []
    for key in dict.fromkeys(config_key(r) for r in runs):
        mine = [r for r in runs if config_key(r) == key]
        ok = [r["rate"] for r in mine if r["sustained"]]
        broke = next((r for r in mine if not r["sustained"]), None)
        out.append({
            "mode": key[0], "kind": key[1], "selectors": key[2],
            "max_sustained_rate": max(ok) if ok else None,
            "first_unsustained_rate": broke["rate"] if broke else None,
            "why": broke["why_not_sustained"] if broke else [],
        })
    return out


def write_json(path, doc):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# Six colours told apart also in greyscale-ish print; the mode is the dash.
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2"]


def write_svg(path, runs, bound_ms, title):
    """Rate (log x, ticks at the rates run) against completion P99 (log y).
    One line per configuration: colour = kind and selectors, solid = spread,
    dashed = one node; hollow markers for runs that were not sustained."""
    pts = [(r, r["report"]["completion"]["p99_ms"]) for r in runs
           if r["report"] and r["report"].get("completion")]
    W, H, L, R, T, B = 760, 440, 64, 200, 34, 46  # size and margins
    pw, ph = W - L - R, H - T - B
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{L + pw / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']
    if not pts:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no completed runs</text></svg>')
        with open(path, "w") as f:
            f.write("\n".join(parts) + "\n")
        return
    rates = sorted({r["rate"] for r, _ in pts})
    x_lo, x_hi = math.log10(rates[0]), math.log10(rates[-1])
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    pad = (x_hi - x_lo) * 0.05
    x_lo, x_hi = x_lo - pad, x_hi + pad
    ys = [max(p, 0.01) for _, p in pts] + [bound_ms]
    y_lo, y_hi = math.log10(min(ys)) - 0.1, math.log10(max(ys)) + 0.1

    def sx(rate):
        return L + (math.log10(rate) - x_lo) / (x_hi - x_lo) * pw

    def sy(ms):
        return T + ph - (math.log10(max(ms, 0.01)) - y_lo) / (y_hi - y_lo) * ph

    parts.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    for e in range(math.floor(y_lo), math.ceil(y_hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if not y_lo <= math.log10(v) <= y_hi:
                continue
            y = sy(v)
            grid = "#ddd" if m == 1 else "#f0f0f0"
            parts.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{grid}"/>')
            parts.append(f'<text x="{L - 5}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for rate in rates:
        x = sx(rate)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{T + ph}" stroke="#eee"/>')
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T + ph}" y2="{T + ph + 4}" stroke="#444"/>')
        parts.append(f'<text x="{x:.1f}" y="{T + ph + 16}" text-anchor="middle">{rate:g}</text>')
    yb = sy(bound_ms)
    parts.append(f'<line x1="{L}" x2="{L + pw}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#000" stroke-dasharray="2,3"/>')
    parts.append(f'<text x="{L + 4}" y="{yb - 4:.1f}">P99 bound {bound_ms:g} ms</text>')
    parts.append(f'<text x="{L + pw / 2}" y="{H - 8}" text-anchor="middle">purges per second (log)</text>')
    parts.append(f'<text transform="translate(16 {T + ph / 2}) rotate(-90)" text-anchor="middle">'
                 f'completion P99, ms (log)</text>')
    keys = list(dict.fromkeys(config_key(r) for r, _ in pts))
    styles = list(dict.fromkeys((k[1], k[2]) for k in keys))
    for n, key in enumerate(keys):
        colour = COLOURS[styles.index((key[1], key[2])) % len(COLOURS)]
        dash = ' stroke-dasharray="6,4"' if key[0] == "one" else ""
        line = sorted(((r["rate"], p, r["sustained"]) for r, p in pts if config_key(r) == key))
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y, _) in enumerate(line))
        parts.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>')
        for x, y, ok in line:
            fill = colour if ok else "white"
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{fill}" stroke="{colour}"/>')
        ly = T + 8 + n * 16
        parts.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 40}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="1.6"{dash}/>')
        parts.append(f'<text x="{L + pw + 46}" y="{ly + 4}">{escape(config_label(key))}</text>')
    ly = T + 8 + len(keys) * 16 + 6
    parts.append(f'<circle cx="{L + pw + 26}" cy="{ly}" r="3" fill="white" stroke="#444"/>')
    parts.append(f'<text x="{L + pw + 46}" y="{ly + 4}">not sustained</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


# --- main ---------------------------------------------------------------


def measure_idle(nodes, seconds):
    before = snapshot(nodes)
    time.sleep(seconds)
    after = snapshot(nodes)
    window = after["t"] - before["t"]
    return {name: {"cpu_ms_per_s": x["cpu_ms"] / window,
                   "bytes_sent_per_s": x["purgecast_peer_bytes_sent_total"] / window,
                   "wire_bytes_sent_per_s": x["purgecast_peer_udp_bytes_sent_total"] / window}
            for name, x in deltas(before, after).items()}


def csv(kind):
    def parse(text):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    return parse


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release", help="directory of purgecast and purgectl")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--pops", type=int, default=1, help="purgecast dev --pops")
    ap.add_argument("--ack-relay", type=lambda v: {"true": True, "false": False}[v], default=True,
                    help="purgecast dev --ack-relay: true (default) or false, every member acking the origin itself")
    ap.add_argument("--batch-peer-frames", type=lambda v: {"true": True, "false": False}[v], default=True,
                    help="purgecast dev --batch-peer-frames: true (default) or false, a QUIC stream per frame")
    ap.add_argument("--edges", action="store_true", help="keep the nodes' HTTP edges and the demo origin on")
    ap.add_argument("--dir", default="/tmp/storm")
    ap.add_argument("--cluster-file", default="/tmp/storm.json")
    ap.add_argument("--base-port", type=int, default=24100,
                    help="dev uses base+i, +1000+i, +2000+i, +6000+i (+3000+i, +4000 with --edges); "
                         "keep them below 32768, where the kernel picks outgoing ports")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the cluster to come up")
    ap.add_argument("--modes", type=csv(str), default=["one", "spread"], help="one,spread")
    ap.add_argument("--kinds", type=csv(str), default=["url", "tag"], help="url,tag")
    ap.add_argument("--selectors", type=csv(int), default=[1, 10, 100], help="selectors per purge, 1-100 each")
    ap.add_argument("--purge-rate", type=int, default=100000,
                    help="each node's default-zone rate limit (purgecast dev --purge-rate); the default lifts "
                         "it out of the way, so the runs find the purge plane's limit, not the API's")
    ap.add_argument("--rates", type=csv(float), default=[100, 200, 500, 1000, 2000], help="purges per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="issue time of each run")
    ap.add_argument("--entry-node", type=int, default=0, help="the node every purge enters through in mode one")
    ap.add_argument("--p99-ms", type=float, default=50.0, help="completion P99 bound")
    ap.add_argument("--min-throughput", type=float, default=0.9,
                    help="a run must accept at least this share of the target rate (0: no check)")
    ap.add_argument("--purge-timeout", type=float, default=10.0, help="purgectl bench --timeout, seconds")
    ap.add_argument("--poll-interval-ms", type=float, default=500.0,
                    help="purgectl bench --poll-interval; completion is the origin's own figure either way, and "
                         "frequent polls load every entry node (20 ms polls doubled the spread mode's P99)")
    ap.add_argument("--concurrency", type=int, default=32, help="purgectl bench --concurrency")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle baseline before the sweep")
    ap.add_argument("--cooldown", type=float, default=5.0, help="pause between runs, seconds")
    ap.add_argument("--settle", type=float, default=1.5,
                    help="wait after a run before sampling (> 1 s: QUIC byte counters are copied once a second)")
    ap.add_argument("--quiet-timeout", type=float, default=60.0,
                    help="seconds to wait for the apply backlogs to drain before a run")
    ap.add_argument("--watch-interval", type=float, default=2.0,
                    help="seconds between gauge samples during a run (0: off; each takes CPU from the nodes)")
    ap.add_argument("--out", default="storm.json", help="results (JSON), rewritten after every run")
    ap.add_argument("--svg", help="also write a rate vs P99 plot here")
    args = ap.parse_args()
    if not 1 <= args.nodes <= 64:
        ap.error("--nodes 1-64")
    if not 0 <= args.entry_node < args.nodes:
        ap.error("--entry-node must name one of the nodes")
    if set(args.modes) - {"one", "spread"} or not args.modes:
        ap.error("--modes: one, spread")
    if set(args.kinds) - {"url", "tag"} or not args.kinds:
        ap.error("--kinds: url, tag")
    if not args.selectors or any(not 1 <= s <= 100 for s in args.selectors):
        ap.error("--selectors: 1-100 each")
    if not args.rates or any(not (r > 0 and math.isfinite(r)) for r in args.rates):
        ap.error("--rates: positive numbers")
    if not (0 < args.seconds <= 600 and 0 < args.purge_timeout <= 120 and args.settle > 1.0):
        ap.error("--seconds up to 600, --purge-timeout up to 120, --settle above 1")
    if args.base_port < 1024 or args.base_port + 6000 + args.nodes > 65535:
        ap.error("--base-port: 1024 .. 65535-6000-nodes")
    args.rates = sorted(set(args.rates))
    return args


def main():
    args = parse_args()
    purgectl = os.path.join(args.bin, "purgectl")
    for exe in (purgectl, os.path.join(args.bin, "purgecast")):
        if not os.access(exe, os.X_OK):
            sys.exit(f"{exe}: not an executable (--bin)")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    doc = {"meta": {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "args": vars(args),
                    "cpus": os.cpu_count(), "clk_tck": CLK_TCK, "load_at_start": os.getloadavg()[0]},
           "runs": [], "summary": []}
    dev = log = None
    nodes = []
    failed = False
    try:
        dev, log, cluster = start_cluster(args)
        nodes = cluster_nodes(cluster, dev.pid)
        wait_metrics(nodes, 30)
        doc["meta"]["nodes"] = nodes
        print(f"{len(nodes)} nodes up (pids {nodes[0]['pid']}..), {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.2f}; idle baseline {args.idle_seconds:g} s", flush=True)
        time.sleep(args.cooldown)  # start-up's own work (membership, first flushes) out of the baseline
        idle = measure_idle(nodes, args.idle_seconds)
        doc["meta"]["idle"] = idle
        print("idle per node: cpu {:.1f} ms/s, wire {:.0f} B/s (medians); per-purge costs below are net of it"
              .format(statistics.median(v["cpu_ms_per_s"] for v in idle.values()),
                      statistics.median(v["wire_bytes_sent_per_s"] for v in idle.values())))
        print(TABLE_NOTE)
        print(table_line(), flush=True)
        first = True
        for mode in args.modes:
            for kind in args.kinds:
                for sel in args.selectors:
                    for rate in args.rates:
                        if not first:
                            time.sleep(args.cooldown)
                        first = False
                        r = one_run(args, nodes, idle, purgectl, mode, kind, sel, rate)
                        doc["runs"].append(r)
                        doc["summary"] = summarize(doc["runs"])
                        write_json(args.out, doc)
                        print(table_line(r), flush=True)
                        if not r["sustained"]:
                            print(f"  not sustained: {'; '.join(r['why_not_sustained'])}", flush=True)
                            break
    except BaseException:
        failed = True
        raise
    finally:
        # A second Ctrl-C during the clean-up would leave dev running in
        # its own session: the clean-up is bounded, so let it finish.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if dev is not None:
            stop_cluster(dev, log, nodes, keep_log=failed)
            if failed:
                print(f"dev's log kept: {log.name}; node logs in {args.dir}/node-*/node.log", file=sys.stderr)
        if doc["runs"]:
            doc["meta"]["load_at_end"] = os.getloadavg()[0]
            doc["summary"] = summarize(doc["runs"])
            write_json(args.out, doc)
            if args.svg:
                title = f"{args.nodes} nodes, completion P99 vs purge rate ({args.seconds:g} s per run)"
                write_svg(args.svg, doc["runs"], args.p99_ms, title)
    print("\nhighest sustained rate (P99 <= {:g} ms, no failures, throughput kept up):".format(args.p99_ms))
    for s in doc["summary"]:
        best = "none" if s["max_sustained_rate"] is None else f"{s['max_sustained_rate']:g}/s"
        if s["first_unsustained_rate"] is None:
            nxt = "  (never broke: the bound lies above --rates)" if s["max_sustained_rate"] is not None else ""
        else:
            nxt = f"  (broke at {s['first_unsustained_rate']:g}/s: {'; '.join(s['why'])})"
        print(f"  {config_label((s['mode'], s['kind'], s['selectors'])):<22} {best}{nxt}")
    print(f"results: {args.out}" + (f", plot: {args.svg}" if args.svg else ""))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Stop) as e:
        sys.exit(f"stopped ({str(e) or 'SIGINT'})")
