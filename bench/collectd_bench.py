#!/usr/bin/env python3
"""Agent vs collectd, side by side, monitoring the same Go processes (issue #4).

N Go processes (default 50; the truthsrv fixture, -quiet) are watched at a 1 s
interval by both daemons at once:

  ferret    one rule matching them, with the `scheduler` collector, plus the
            `heap` collector when its library (libferret_heap.so in BIN_DIR) and
            manifest (plugins.d/heap.yaml) exist; jsonl sink to a file;
            self-metrics at the default 10 s.
  collectd  Debian's collectd-core, foreground (-f), its own config in a temp
            dir: the `processes` plugin with one ProcessMatch per process
            (context switches on, file descriptors and memory maps off: the
            closest to the scheduler collector's figures), `csv` plugin output.

After a warm-up, each daemon's CPU time (utime+stime, /proc/PID/stat) over the
window, RSS (/proc/PID/statm, sampled every second), and the figures each
produced per interval (ferret: metric points for the watched processes in its
jsonl; collectd: values in its csv files) are printed.

Usage: bench/collectd_bench.py BIN_DIR TRUTHSRV [--procs 50] [--warmup 10] [--window 60]
"""
import argparse, collections, glob, json, os, random, shutil, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("truthsrv")
ap.add_argument("--procs", type=int, default=50)
ap.add_argument("--warmup", type=float, default=10)
ap.add_argument("--window", type=float, default=60)
ap.add_argument("--collectors", default="scheduler,heap",
                help="ferret's collectors, comma-separated (e.g. scheduler,heap,cpu_profiler)")
args = ap.parse_args()

collectd = shutil.which("collectd") or "/usr/sbin/collectd"
if not os.access(collectd, os.X_OK):
    sys.exit("collectd not found (bash scripts/setup.sh --bench installs collectd-core)")

tick = os.sysconf("SC_CLK_TCK")
page = os.sysconf("SC_PAGE_SIZE")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-collectd-bench-")
token = str(random.randint(100000, 999999))
children = []

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def rss_bytes(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * page

def rss_parts(pid):
    """(anonymous, file-backed) resident bytes, from /proc/PID/status."""
    f = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("RssAnon", "RssFile", "RssShmem"):
            f[k] = int(v.split()[0]) * 1024
    return f.get("RssAnon", 0), f.get("RssFile", 0) + f.get("RssShmem", 0)

wanted = [c for c in args.collectors.split(",") if c]
collectors = [c for c in wanted if os.path.exists(f"{args.bin}/libferret_{c}.so") and os.path.exists(f"{repo}/plugins.d/{c}.yaml")]
missing = sorted(set(wanted) - set(collectors))
heap = "heap" in collectors

# Each process gets a unique trailing argument (truthsrv's flag parsing stops
# there and ignores it), so one regex per process selects it in both daemons.
def tag(i):
    return f"bench-{token}-{i:02d}"

ferret_config = f"""
agent:
  interval: 1s
plugins:
  paths: [{repo}/plugins.d]
rules:
  - name: bench
    match:
      cmdline: " bench-{token}-[0-9]+$"
    collectors:
{"".join(f"      {c}: {{}}{chr(10)}" for c in collectors)}pipeline:
  sinks:
    - type: jsonl
      path: {tmp}/ferret.jsonl
"""
open(f"{tmp}/ferret.yaml", "w").write(ferret_config)

matches = "".join(f'  ProcessMatch "go{i:02d}" " {tag(i)}$"\n' for i in range(args.procs))
collectd_config = f"""# collectd for the side-by-side benchmark (bench/collectd_bench.py)
Hostname "bench"
FQDNLookup false
BaseDir "{tmp}/collectd"
PIDFile "{tmp}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin logfile
<Plugin logfile>
  LogLevel "info"
  File "{tmp}/collectd.log"
</Plugin>
LoadPlugin processes
LoadPlugin csv
<Plugin csv>
  DataDir "{tmp}/csv"
  StoreRates false
</Plugin>
<Plugin processes>
  CollectContextSwitch true
  CollectFileDescriptor false
  CollectMemoryMaps false
  CollectDelayAccounting false
{matches}</Plugin>
"""
os.makedirs(f"{tmp}/collectd")
open(f"{tmp}/collectd.conf", "w").write(collectd_config)

agent = cd = None
try:
    for i in range(args.procs):
        children.append(subprocess.Popen([args.truthsrv, "-quiet", tag(i)], stdout=subprocess.DEVNULL))
    time.sleep(1)
    dead = [p.args for p in children if p.poll() is not None]
    if dead:
        sys.exit(f"Go processes exited at startup: {dead[:3]}")
    agent = subprocess.Popen([f"{args.bin}/ferret", "run", "--config", f"{tmp}/ferret.yaml"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/ferret.log", "w"))
    cd = subprocess.Popen([collectd, "-f", "-C", f"{tmp}/collectd.conf"],
                          stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/collectd.stderr", "w"))
    time.sleep(args.warmup)
    for name, p in (("ferret", agent), ("collectd", cd)):
        if p.poll() is not None:
            sys.exit(f"{name} exited during warm-up (status {p.returncode}); see {tmp}")
    daemons = {"ferret": agent.pid, "collectd": cd.pid}
    c0 = {n: cpu_seconds(p) for n, p in daemons.items()}
    go0 = sum(cpu_seconds(p.pid) for p in children)
    w0, t0 = time.time(), time.monotonic()
    rss = {n: [] for n in daemons}
    parts = {n: [] for n in daemons}
    while time.monotonic() - t0 < args.window:
        for n, p in daemons.items():
            rss[n].append(rss_bytes(p))
            parts[n].append(rss_parts(p))
        time.sleep(1)
    c1 = {n: cpu_seconds(p) for n, p in daemons.items()}
    w1, t1 = time.time(), time.monotonic()
    elapsed = t1 - t0
    go_cpu = sum(cpu_seconds(p.pid) for p in children) - go0
    agent.terminate()
    cd.terminate()
    agent.wait(10)
    cd.wait(10)

    # Figures in the window. ferret: metric points whose resource is a watched process.
    ferret_points = 0
    ferret_names = collections.Counter()
    pids = set()
    for line in open(f"{tmp}/ferret.jsonl"):
        o = json.loads(line)
        if o.get("signal") != "metric" or o.get("resource", {}).get("ferret.rule") != "bench":
            continue
        if not (w0 * 1e9 <= o["time_unix_nano"] < w1 * 1e9):
            continue
        ferret_points += 1
        ferret_names[o["name"]] += 1
        pids.add(o["resource"].get("process.pid"))
    # collectd: every csv line is one value list (epoch,value[,value...]).
    # Per-process series live in processes-goNN/, host-wide ones (process states,
    # fork rate) in processes/.
    cdf = {"process": [0, 0, set()], "host": [0, 0, set()], "rss_lists": 0}
    for path in glob.glob(f"{tmp}/csv/*/*/*"):
        kind = "process" if "-go" in path.split("/")[-2] else "host"
        typ = os.path.basename(path).rsplit("-", 3)[0]
        for line in open(path):
            if line.startswith("epoch"):
                continue
            cols = line.strip().split(",")
            if w0 <= float(cols[0]) < w1:
                cdf[kind][0] += 1
                cdf[kind][1] += len(cols) - 1
                cdf[kind][2].add(typ)
                if typ == "ps_rss":
                    cdf["rss_lists"] += 1
    matched = len(glob.glob(f"{tmp}/csv/*/processes-go*"))

    print(f"side by side, {args.procs} Go processes (truthsrv -quiet, {os.path.basename(args.truthsrv)}), interval 1 s, "
          f"{elapsed:.0f} s window after a {args.warmup:.0f} s warm-up:")
    for n in daemons:
        cpu = 100 * (c1[n] - c0[n]) / elapsed
        anon = max(a for a, _ in parts[n]) / 2**20
        filed = max(f for _, f in parts[n]) / 2**20
        print(f"  {n:8s} CPU {cpu:.2f}% of one core ({c1[n] - c0[n]:.2f} s), "
              f"RSS max {max(rss[n]) / 2**20:.1f} MiB, mean {sum(rss[n]) / len(rss[n]) / 2**20:.1f} MiB "
              f"(anonymous max {anon:.1f} MiB, file-backed max {filed:.1f} MiB)")
    # Per interval = over the collection rounds that fell in the window (one
    # process.thread.count point per process per round; one ps_rss line per match).
    rounds = ferret_names["process.thread.count"] / max(len(pids), 1)
    print(f"  ferret   collectors: {', '.join(collectors)}{' (not built here: ' + ', '.join(missing) + ')' if missing else ''}; "
          f"{ferret_points / rounds:.0f} metric points per interval ({rounds:.0f} rounds in the window) for {len(pids)} processes "
          f"({ferret_points / rounds / max(len(pids), 1):.1f} per process); per name: "
          + ", ".join(f"{k} {v / rounds:.0f}" for k, v in sorted(ferret_names.items())))
    lists, values, types = cdf["process"]
    rounds = cdf["rss_lists"] / max(matched, 1)
    print(f"  collectd processes plugin: {values / rounds:.0f} values per interval ({rounds:.0f} rounds) in {lists / rounds:.0f} value lists "
          f"for {matched} ProcessMatch series ({values / rounds / max(matched, 1):.1f} per process; "
          f"types: {', '.join(sorted(types))}); plus host-wide {cdf['host'][1] / rounds:.0f} values "
          f"({', '.join(sorted(cdf['host'][2]))})")
    print(f"  the {args.procs} watched processes used {go_cpu:.2f} s CPU in total in the window")
    print(f"  (files: {tmp})")
finally:
    for p in children + [agent, cd]:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
