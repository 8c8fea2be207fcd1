#!/usr/bin/env python3
"""A Go HTTP server's latency under wrk load, watched and not (issue #4).

One target, bench/go/okserver (a tiny handler that allocates 4 KiB and answers
"ok"), is driven by `wrk -t1 -cC -dD --latency` in three conditions, run in a
rotating order for R rounds (a fresh agent each time):

  none      no agent
  os        the agent with the `scheduler` collector at 100 ms, go_runtime: false
            (OS figures from /proc only: the agent without the Go readers)
  readers   the agent with the `scheduler` collector at 100 ms reading the Go
            runtime, plus the `heap` collector when its library
            (libferret_heap.so in BIN_DIR) and manifest (plugins.d/heap.yaml) exist
  census    readers plus the `goroutines` collector taking a census with
            stacks every second (10 times its default rate), and its goroutine
            profile (issue #19); give the server goroutines to read with --idle

--conditions picks and orders them (default none,os,readers). --idle N starts
the server with N parked goroutines (okserver -idle N).

With --pin the server runs on CPU 1 and wrk on CPU 0 (taskset; the agent is
not pinned). Off by default: on the 2-vCPU machine, shared with other work,
pinning gave a wider spread (the server, GOMAXPROCS=1 when pinned, cannot move
away from a busy CPU). Reports p50, p99 and requests/s per round and per
condition, and compares each condition's median with the round-to-round spread
of `none`.

Usage: bench/latency_bench.py BIN_DIR OKSERVER [--rounds 5] [--duration 12]
       [--connections 16] [--pin] [--conditions none,readers,census] [--idle 10000]
"""
import argparse, json, os, random, re, shutil, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("server")
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--duration", type=int, default=12)
ap.add_argument("--connections", type=int, default=16)
ap.add_argument("--pin", action="store_true")
ap.add_argument("--conditions", default="none,os,readers")
ap.add_argument("--idle", type=int, default=0)
args = ap.parse_args()

wrk = shutil.which("wrk")
if not wrk:
    sys.exit("wrk not found (bash scripts/setup.sh --bench installs it)")
pin = args.pin and os.cpu_count() >= 2
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-latency-bench-")
token = str(random.randint(100000, 999999))
heap = os.path.exists(f"{args.bin}/libferret_heap.so") and os.path.exists(f"{repo}/plugins.d/heap.yaml")

def taskset(cpu, argv):
    return (["taskset", "-c", str(cpu)] + argv) if pin else argv

def agent_config(name, go, census=False):
    collectors = f"      scheduler: {{ go_runtime: {'true' if go else 'false'} }}\n"
    if go and heap:
        collectors += "      heap: {}\n"
    if census:
        collectors += "      goroutines: { census_interval: 1s, stacks: true, profiles: true }\n"
    text = f"""
agent:
  interval: 100ms
plugins:
  paths: [{repo}/plugins.d]
rules:
  - name: bench
    match:
      cmdline: " bench-{token}$"
    collectors:
{collectors}pipeline:
  sinks:
    - type: jsonl
      path: {tmp}/{name}.jsonl
"""
    path = f"{tmp}/{name}.yaml"
    open(path, "w").write(text)
    return path

known = {
    "none": lambda: None,
    "os": lambda: agent_config("os", go=False),
    "readers": lambda: agent_config("readers", go=True),
    "census": lambda: agent_config("census", go=True, census=True),
}
wanted = args.conditions.split(",")
if "none" not in wanted or any(c not in known for c in wanted):
    sys.exit(f"--conditions: a comma-separated list of {', '.join(known)}, with none")
if "census" in wanted and not os.path.exists(f"{args.bin}/libferret_goroutines.so"):
    sys.exit(f"census: {args.bin}/libferret_goroutines.so is missing (scripts/build.sh release)")
conditions = {c: known[c]() for c in wanted}

def seconds(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)]

def run_wrk(url):
    out = subprocess.run(taskset(0, [wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]),
                         capture_output=True, text=True, check=True).stdout
    p50 = seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"p50": p50, "p99": p99, "rps": rps, "errors": errors.group(0) if errors else None}

server = subprocess.Popen(taskset(1, [args.server] + (["-idle", str(args.idle)] if args.idle else []) + [f"bench-{token}"]),
                          stdout=subprocess.PIPE, text=True)
agent = None
try:
    line = server.stdout.readline()
    addr = line.split("listening on ", 1)[1].strip()
    url = f"http://{addr}/"
    # Warm the server up (heap, GC pacing, connections) with the measured load shape.
    subprocess.run([wrk, "-t1", f"-c{args.connections}", "-d3s", url], capture_output=True, check=True)
    results = {c: [] for c in conditions}
    names = list(conditions)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in order:
            agent = None
            if conditions[c]:
                agent = subprocess.Popen([f"{args.bin}/ferret", "run", "--config", conditions[c]],
                                         stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/{c}.log", "a"))
                time.sleep(2)  # startup, attach, first collects
                if agent.poll() is not None:
                    sys.exit(f"agent exited at startup ({c}); see {tmp}/{c}.log")
            w0 = time.time()
            res = run_wrk(url)
            w1 = time.time()
            if agent:
                # How often the target was actually read during the load.
                n = 0
                want = {"readers": "go.goroutine.count", "census": "go.goroutine.census.duration"}.get(c, "process.thread.count")
                for l in open(f"{tmp}/{c}.jsonl"):
                    if f'"{want}"' in l and w0 * 1e9 <= json.loads(l)["time_unix_nano"] < w1 * 1e9:
                        n += 1
                res["reads_per_s"] = n / (w1 - w0)
                agent.terminate()
                agent.wait(10)
                agent = None
            results[c].append(res)
            extra = f", {res['reads_per_s']:.1f} readings/s" if "reads_per_s" in res else ""
            err = f", {res['errors']}" if res["errors"] else ""
            print(f"  round {r + 1} {c:8s} p50 {res['p50'] * 1e6:7.0f} µs  p99 {res['p99'] * 1e6:7.0f} µs  "
                  f"{res['rps']:9.0f} req/s{extra}{err}", flush=True)

    what = "scheduler" + (" + heap" if heap else " (heap plugin not built here)")
    idle = f", {args.idle} parked goroutines in the server" if args.idle else ""
    print(f"summary ({args.rounds} rounds x {args.duration} s, wrk -t1 -c{args.connections}, "
          f"{'server on CPU 1, wrk on CPU 0' if pin else 'unpinned'}; readers = {what} at 100 ms"
          f"{'; census = readers + goroutines census with stacks every 1 s' if 'census' in results else ''}{idle}):")
    keys = ("p50", "p99", "rps")
    med = {c: {k: statistics.median(x[k] for x in rs) for k in keys} for c, rs in results.items()}
    lo = {c: {k: min(x[k] for x in rs) for k in keys} for c, rs in results.items()}
    hi = {c: {k: max(x[k] for x in rs) for k in keys} for c, rs in results.items()}
    for c in results:
        print(f"  {c:8s} median p50 {med[c]['p50'] * 1e6:6.0f} µs ({lo[c]['p50'] * 1e6:.0f}-{hi[c]['p50'] * 1e6:.0f}), "
              f"p99 {med[c]['p99'] * 1e6:6.0f} µs ({lo[c]['p99'] * 1e6:.0f}-{hi[c]['p99'] * 1e6:.0f}), "
              f"{med[c]['rps']:7.0f} req/s ({lo[c]['rps']:.0f}-{hi[c]['rps']:.0f})")
    # Noise: how far apart the rounds of one condition are (max-min over median,
    # the widest of the three conditions); a difference of medians smaller than
    # that is not told apart from noise by this run.
    for k, label in (("p50", "p50"), ("p99", "p99"), ("rps", "req/s")):
        noise = max((hi[c][k] - lo[c][k]) / med[c][k] for c in results)
        diffs = {f"{c} vs none": (med[c][k] - med["none"][k]) / med["none"][k] for c in results if c != "none"}
        if "readers" in results and "os" in results:
            diffs["readers vs os"] = (med["readers"][k] - med["os"][k]) / med["os"][k]
        if "readers" in results and "census" in results:
            diffs["census vs readers"] = (med["census"][k] - med["readers"][k]) / med["readers"][k]
        verdict = "within noise" if all(abs(d) <= noise for d in diffs.values()) else "NOT within noise"
        print(f"  {label}: " + ", ".join(f"{c} {100 * d:+.1f}%" for c, d in diffs.items())
              + f"; round-to-round spread up to {100 * noise:.0f}% -> {verdict}")
finally:
    for p in (server, agent):
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
