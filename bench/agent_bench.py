#!/usr/bin/env python3
"""Agent benchmarks (release build):

1. idle footprint: the agent monitors N processes (default 50) with the two
   example collectors (fdcount in C, procio in Swift) at a 1 s interval, sinks
   to a jsonl file; CPU time and RSS of the agent are read from /proc over a
   measurement window after a warm-up.
2. exec-to-attach latency: M new processes are started one by one while the
   agent runs; the agent's own histogram ferret.discovery.attach.latency (time
   from the kernel's exec event to the plugin's attach returning) is read from
   its self-metrics.

Usage: bench/agent_bench.py BIN_DIR [--procs 50] [--window 30] [--spawns 100]
"""
import argparse, json, os, random, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("--procs", type=int, default=50)
ap.add_argument("--window", type=float, default=30)
ap.add_argument("--spawns", type=int, default=100)
args = ap.parse_args()

tick = os.sysconf("SC_CLK_TCK")
page = os.sysconf("SC_PAGE_SIZE")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-bench-")
token = str(random.randint(100000, 999999))
children = []

def spawn(i):
    p = subprocess.Popen(["/bin/sleep", f"{token}.{i:04d}"])
    children.append(p)
    return p

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def rss_bytes(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * page

config = f"""
agent:
  interval: 1s
  self_metrics_interval: 1s
plugins:
  paths: [{repo}/plugins.d]
rules:
  - name: bench
    match:
      cmdline: "^/bin/sleep {token}\\\\."
    collectors:
      fdcount: {{}}
      procio: {{}}
pipeline:
  sinks:
    - type: jsonl
      path: {tmp}/out.jsonl
"""
open(f"{tmp}/config.yaml", "w").write(config)

try:
    for i in range(args.procs):
        spawn(i)
    agent = subprocess.Popen([f"{args.bin}/ferret", "run", "--config", f"{tmp}/config.yaml"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent.log", "w"))
    time.sleep(5)  # warm-up: startup scan, attach, first collects
    c0, t0 = cpu_seconds(agent.pid), time.monotonic()
    rss = []
    while time.monotonic() - t0 < args.window:
        rss.append(rss_bytes(agent.pid))
        time.sleep(1)
    c1, t1 = cpu_seconds(agent.pid), time.monotonic()
    cpu_pct = 100 * (c1 - c0) / (t1 - t0)
    points = sum(1 for l in open(f"{tmp}/out.jsonl") if '"process.open_file_descriptor.count"' in l)
    print(f"idle: {args.procs} processes, 2 collectors at 1s, {t1 - t0:.0f}s window: "
          f"agent CPU {cpu_pct:.2f}% of one core, RSS max {max(rss) / 2**20:.1f} MiB, mean {sum(rss) / len(rss) / 2**20:.1f} MiB "
          f"({points} fdcount points written)")

    for i in range(args.spawns):
        spawn(10000 + i)
        time.sleep(0.05)
    time.sleep(2.5)
    hist = mx = None
    for line in open(f"{tmp}/out.jsonl"):
        if '"ferret.discovery.attach.latency' not in line:
            continue
        o = json.loads(line)
        if o["name"] == "ferret.discovery.attach.latency":
            hist = o
        elif o["name"] == "ferret.discovery.attach.latency.max":
            mx = o["value"]
    agent.terminate()
    agent.wait(10)
    if hist is None or hist["count"] == 0:
        print("attach latency: no samples (is the netlink process connector available?)")
        sys.exit(1)
    bounds, counts, n = hist["bounds"], hist["bucket_counts"], hist["count"]
    def pct(q):
        acc = 0
        for b, c in zip(bounds + [float("inf")], counts):
            acc += c
            if acc >= q * n:
                return b
    print(f"attach latency: {n} exec->attach samples, mean {1000 * hist['sum'] / n:.2f} ms, "
          f"p50 <= {1000 * pct(0.5):g} ms, p99 <= {1000 * pct(0.99):g} ms, max {1000 * mx:.2f} ms "
          f"(bucket bounds {', '.join(f'{1000 * b:g}' for b in bounds)} ms)")
    print(f"agent exit status after SIGTERM: {agent.returncode}")
finally:
    for p in children:
        p.kill()
