#!/usr/bin/env python3
"""What a namespaced target costs the agent (issue #16) — target: no more than
5 % more agent CPU than the same targets on the host.

N copies of one truthsrv build (Go 1.27, stripped, static, -quiet) run either
plainly on the host or each in its own container made the way the test harness
makes them (Tests/GoTestSupport/Containers.swift): `unshare --pid --mount --fork
--mount-proc`, a tmpfs mounted inside holding the binary, a Docker-style cgroup
(/system.slice/docker-<id>.scope) in every cgroup hierarchy. A release agent
monitors them with the scheduler and heap plugins at 1 s; its CPU (process CPU
clock, all threads) over a window after a warm-up is the figure. The rounds
alternate plain and namespaced so drift on the machine hits both alike.

Usage (root): bench/namespace_cost_bench.py BIN_DIR [--procs 20] [--window 30] [--rounds 3]
"""
import argparse, ctypes, os, random, secrets, shutil, signal, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("--procs", type=int, default=20)
ap.add_argument("--window", type=float, default=30)
ap.add_argument("--warmup", type=float, default=8)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-nsbench-")
go = "/opt/ferret-go/go1.27.3/bin/go"
binary = os.path.join(tmp, "truthsrv")
env = dict(os.environ, GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0",
           GOCACHE=os.path.join(tmp, "gocache"))
subprocess.run([go, "build", "-buildvcs=false", "-ldflags=-s -w", "-o", binary, "."], check=True, env=env,
               cwd=os.path.join(repo, "Tests/GoIntrospectionTests/Fixtures/truthsrv"))

librt = ctypes.CDLL("librt.so.1", use_errno=True)
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

def cpu_seconds(pid):
    clk = ctypes.c_int()
    if librt.clock_getcpuclockid(pid, ctypes.byref(clk)) != 0:
        raise OSError("clock_getcpuclockid")
    ts = timespec()
    librt.clock_gettime(clk, ctypes.byref(ts))
    return ts.tv_sec + ts.tv_nsec / 1e9

def hierarchies():
    out = []
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        l, r = left.split(), right.split()
        if r[0] == "cgroup2" or (r[0] == "cgroup" and any(o in r[2].split(",") for o in ("name=systemd", "pids", "cpu"))):
            out.append(l[4])
    return out

def start(namespaced, i):
    if not namespaced:
        return subprocess.Popen([binary, "-quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), []
    cid = secrets.token_hex(32)
    dirs = []
    for h in hierarchies():
        d = f"{h}/system.slice/docker-{cid}.scope"
        try:
            os.makedirs(d, exist_ok=True)
            dirs.append(d)
        except OSError:
            pass
    app = os.path.join(tmp, f"ct-{i}")
    os.makedirs(app, exist_ok=True)
    join = "; ".join(f"echo $$ > '{d}/cgroup.procs'" for d in dirs)
    script = f"set -e; {join}; mount -t tmpfs ct '{app}'; cp '{binary}' '{app}/truthsrv'; exec '{app}/truthsrv' -quiet"
    p = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child",
                          "--propagation", "private", "/bin/sh", "-c", script],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, dirs

def stop(procs):
    for p, _ in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(0.3)
    for _, dirs in procs:
        for d in dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.05)

config = os.path.join(tmp, "config.yaml")
with open(config, "w") as f:
    f.write(f"""
agent: {{ interval: 1s, self_metrics_interval: 10s }}
plugins: {{ paths: [{repo}/plugins.d] }}
rules:
  - name: bench
    match: {{ runtime: go, comm: truthsrv }}
    collectors: {{ scheduler: {{}}, heap: {{}} }}
pipeline:
  sinks: [ {{ type: jsonl, path: {tmp}/out.jsonl }} ]
""")

def measure(namespaced):
    procs = [start(namespaced, i) for i in range(args.procs)]
    time.sleep(1)
    agent = subprocess.Popen([os.path.join(args.bin, "ferret"), "run", "--config", config],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, FERRET_PLUGIN_PATH=args.bin))
    try:
        time.sleep(args.warmup)
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(args.window)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        attached = sum(1 for line in open(f"{tmp}/out.jsonl") if '"process.attach"' in line)
        unverified = sum(1 for line in open(f"{tmp}/out.jsonl") if "go.runtime.unverified" in line)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()
        stop(procs)
        os.remove(f"{tmp}/out.jsonl")
    return 100 * (c1 - c0) / (t1 - t0), attached, unverified

results = {"plain": [], "namespaced": []}
try:
    for r in range(args.rounds):
        for kind in (["plain", "namespaced"] if r % 2 == 0 else ["namespaced", "plain"]):
            pct, attached, unverified = measure(kind == "namespaced")
            if attached < args.procs or unverified:
                print(f"{kind}: only {attached} of {args.procs} attached, {unverified} unverified readings", file=sys.stderr)
                sys.exit(1)
            results[kind].append(pct)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

plain, ns = statistics.median(results["plain"]), statistics.median(results["namespaced"])
print(f"| targets | agent CPU, % of a core, median (min–max) |")
print(f"|---|---|")
for k in ("plain", "namespaced"):
    v = results[k]
    print(f"| {args.procs} {k} | {statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f}) |")
print(f"\nnamespaced / plain = {ns / plain:.3f} (target ≤ 1.05); load average {os.getloadavg()}")
