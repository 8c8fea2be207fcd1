#!/usr/bin/env python3
"""The http_tracer's cost to the traced service (issue #6).

The target is the tracer's fixture service (Tests/HTTPTracingTests/Fixtures/
httpsrv, newest Go toolchain, CGO_ENABLED=0, symbols kept so bpftrace can name
the function). wrk drives it (`wrk -t1 -cC -dD --latency`, keep-alive) on two
handlers:

  noop   /ok/bench            writes "ok"
  1ms    /slow/bench?ms=1     sleeps 1 ms, then writes "slow"

in three conditions, in a rotating order for R rounds:

  off     nothing attached
  floor   bpftrace with an empty uprobe on net/http.serverHandler.ServeHTTP
          (`uprobe:BIN:"net/http.serverHandler.ServeHTTP" {}`): the cost of one
          uprobe hit per request, the floor any uprobe tracer pays
  metrics `ferret run` (BIN_DIR, a release build) with the http_tracer on the
          service, `spans: false`: probes, events and RED histograms only
  on      the same with spans (the default), written to a jsonl file

For each handler and condition it prints requests/s and p99 per round and the
medians; each condition's loss against `off`; and per request, the time a
condition adds over another, as 1e6/rps(a) - 1e6/rps(b) µs (the
throughput-equivalent cost on this machine, where wrk, the service and the
agent share the CPUs). The tracer needs at least two probe hits per request
(the entry and a RET; bpftrace 0.17 here cannot place a probe at a RET
offset), so it also prints its cost over two empty hits, 2 x (floor - off).
It also prints the agent's own CPU per request.

Usage: bench/http_tracer_bench.py BIN_DIR [--rounds 3] [--duration 10]
       [--connections 16]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--duration", type=int, default=10)
ap.add_argument("--connections", type=int, default=16)
args = ap.parse_args()

for tool in ("wrk", "bpftrace"):
    if not shutil.which(tool):
        sys.exit(f"{tool} not found (bash scripts/setup.sh --bench installs it)")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-http-bench-")
toolchains = [l.split() for l in open("/opt/ferret-go/toolchains.txt") if l.strip()]
version, go = toolchains[-1]
server_bin = f"{tmp}/httpsrv"
env = dict(os.environ, GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0",
           GOCACHE=f"{tmp}/gocache")
subprocess.run([go, "build", "-o", server_bin, "."], cwd=f"{repo}/Tests/HTTPTracingTests/Fixtures/httpsrv",
               env=env, check=True)

HANDLERS = [("noop", "/ok/bench"), ("1ms", "/slow/bench?ms=1")]
CONDITIONS = ["off", "floor", "metrics", "on"]


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(proc, pattern, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            time.sleep(0.05)
            continue
        if re.search(pattern, line):
            return line
    raise RuntimeError(f"no line matching {pattern!r} within {timeout}s")


def start_condition(cond, pid):
    if cond == "off":
        return None
    if cond == "floor":
        p = subprocess.Popen(["bpftrace", "-e", f'uprobe:{server_bin}:"net/http.serverHandler.ServeHTTP" {{}}'],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_line(p, r"Attaching 1 probe", 60)
        time.sleep(0.5)
        return p
    cfg = f"{tmp}/config.yaml"
    open(cfg, "w").write(f"""
agent: {{ interval: 1s, rescan: 2s, self_metrics_interval: 10s, log_level: info }}
plugins: {{ paths: [{repo}/plugins.d] }}
rules:
  - name: bench
    match: {{ pid: {pid} }}
    collectors: {{ http_tracer: {{ metrics_interval: 5s, spans: {"false" if cond == "metrics" else "true"} }} }}
pipeline:
  queue_size: 65536
  sinks: [ {{ type: jsonl, path: {tmp}/spans.jsonl }} ]
""")
    log = f"{tmp}/agent.log"
    p = subprocess.Popen([f"{args.bin}/ferret", "run", "--config", cfg], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    # Attached when the plugin's log line names the pid's uprobes.
    deadline = time.time() + 30
    while "uprobes on" not in open(log).read():
        if time.time() > deadline or p.poll() is not None:
            raise RuntimeError("the agent did not attach: " + open(log).read()[-2000:])
        time.sleep(0.2)
    time.sleep(1)
    return p


def stop_condition(p):
    if p is None:
        return
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_wrk(path):
    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                          f"http://{addr}{path}"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    n = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, p99, n


srv = subprocess.Popen([server_bin], stdout=subprocess.PIPE, text=True)
addr = wait_line(srv, r"^listening ", 10).split()[1]
results = {(h, c): [] for h, _ in HANDLERS for c in CONDITIONS}
agent_cpu = {(h, c): [] for h, _ in HANDLERS for c in ("metrics", "on")}
try:
    for r in range(args.rounds):
        order = CONDITIONS[r % len(CONDITIONS):] + CONDITIONS[:r % len(CONDITIONS)]
        for cond in order:
            p = start_condition(cond, srv.pid)
            try:
                for name, path in HANDLERS:
                    agent = cond in ("metrics", "on")
                    c0 = cpu_seconds(p.pid) if agent else 0
                    rps, p99, n = run_wrk(path)
                    if agent:
                        agent_cpu[(name, cond)].append((cpu_seconds(p.pid) - c0) / n * 1e6)
                    results[(name, cond)].append((rps, p99))
                    print(f"round {r + 1} {name:4} {cond:7}: {rps:9.0f} req/s  p99 {p99:7.2f} ms", flush=True)
            finally:
                stop_condition(p)
finally:
    srv.terminate()
    srv.wait()

print(f"\nGo {version}, wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
      f"{os.cpu_count()} CPUs, load average {open('/proc/loadavg').read().split()[:3]}")
for name, path in HANDLERS:
    med = {c: (statistics.median(x[0] for x in results[(name, c)]),
               statistics.median(x[1] for x in results[(name, c)])) for c in CONDITIONS}
    def loss(c):
        return 1 - med[c][0] / med["off"][0]

    def extra(c, base):
        return 1e6 / med[c][0] - 1e6 / med[base][0]

    print(f"{name:4} {path}: " + " | ".join(
        f"{c} {med[c][0]:.0f} req/s p99 {med[c][1]:.2f} ms" + ("" if c == "off" else f" ({-loss(c):+.1%})")
        for c in CONDITIONS))
    hit = extra('floor', 'off')
    print(f"      per request: floor - off {hit:.2f} µs (one empty uprobe hit); "
          f"metrics - floor {extra('metrics', 'floor'):.2f} µs; on - floor {extra('on', 'floor'):.2f} µs; "
          f"over two empty hits (entry + RET, the least without uretprobes): "
          f"metrics {extra('metrics', 'off') - 2 * hit:+.2f} µs, on {extra('on', 'off') - 2 * hit:+.2f} µs; "
          f"agent CPU {statistics.median(agent_cpu[(name, 'metrics')]):.2f} µs (metrics), "
          f"{statistics.median(agent_cpu[(name, 'on')]):.2f} µs (on)")
shutil.rmtree(tmp, ignore_errors=True)
