#!/usr/bin/env python3
"""The CPU profiler against `perf record`, side by side on one CPU-bound Go program (issue #5).

The fixture is the burner (Tests/FerretCoreTests/Fixtures/burner) in `-mode work`:
W workers (default 1) each repeat a fixed-size work unit and count it; the count
lives in a shared 8-byte file (-report), so the harness reads it at any instant.
Three conditions run in alternating rounds (the order rotates every round):

  none    nothing attached
  ferret  `ferret run` with one rule matching the fixture's pid, collectors
          cpu_profiler { frequency: F, window: 10s, stack_copy: S }, sinks pprof_dir (temp dir)
          and jsonl (temp file); only the cpu_profiler manifest on the plugin path
  perf    `perf record -F F --call-graph G -p PID -o TMP/perf-N.data` (Debian's
          linux-perf; G is fp, the same as -g, or dwarf,4096: perf's own stack copy)

By default the fixture runs on CPU 1 and the profilers on CPU 0 (taskset; --no-pin
turns it off), so what a profiler's own process does is not taken from the
fixture's CPU (the harness itself also stays on CPU 0): what remains is the cost of taking the samples in the fixture's
context (timer interrupt, callchain walk, ring write) and the shared caches.

1. Throughput: units/s of the fixture over a measured span per round (none, perf:
   D seconds after a 1 s settle; ferret: exactly its second profile window, from
   the first profile file appearing to the second, ~10 s), mean, standard deviation
   and range per condition, the loss vs none, and the paired per-round loss with
   a 95 % t interval (a loss whose interval includes 0 is not told apart from noise).
   Also units per CPU-second of the fixture, its CPU share and the steal time of
   its CPU (the machine is a VM), which show where round-to-round noise came from.
2. The profiler process's CPU (user+system of all its threads, read from its process
   CPU clock, ns resolution) per 1,000 samples:
   ferret steady state = its CPU over that second window / the samples in the
   second window's profile (decoded from the pprof file, cross-checked with the
   jsonl profile record); this includes the drain thread, symbolization (every
   200 ms), pprof encoding and gzip, the sinks, and the agent's own housekeeping
   (rescan every 10 s, self-metrics every 10 s, and reading the facts of every
   process exec'd on the machine, which on a shared machine is most of it). So a
   baseline agent runs alongside in the ferret rounds: the same configuration with
   the rule matching a sleeping process (attached, never sampled), measured over
   the same span; ferret minus baseline is what the samples themselves cost
   (sampling, symbolization, pprof). Whole life = CPU from exec to
   exit (os.wait4) / all samples it wrote (startup: config, plugin load, parsing
   the Go binary; the last partial window on shutdown).
   perf record steady state = its CPU over the span / samples in the span (the
   recording's sample rate, samples over first-to-last sample time from the
   perf.data header, times the span); whole life likewise, which includes the
   build-id pass over perf.data on exit. perf record does no symbolization: after
   the rounds, `perf report --stdio` is run on each perf.data and its CPU per
   1,000 samples reported as perf's symbolization cost.

Usage: bench/profiler_bench.py BIN_DIR BURNER [--rounds 4] [--duration 10]
       [--workers 1] [--frequency 99] [--stack-copy 4096] [--perf-call-graph fp] [--no-pin] [--keep]
"""
import argparse, glob, gzip, json, math, os, random, re, shutil, signal, statistics, struct, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("burner")
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--duration", type=float, default=10, help="measured span of the none and perf rounds (s)")
ap.add_argument("--workers", type=int, default=1)
ap.add_argument("--frequency", type=int, default=99)
ap.add_argument("--no-pin", action="store_true")
ap.add_argument("--stack-copy", type=int, default=4096,
                help="cpu_profiler stack_copy (bytes of user stack per sample; 0: frame pointers only)")
ap.add_argument("--perf-call-graph", default="fp",
                help="perf record --call-graph (fp, or dwarf,4096 for perf's own stack copy)")
ap.add_argument("--keep", action="store_true", help="keep the temp dir (profiles, perf.data, logs)")
args = ap.parse_args()

perf = shutil.which("perf")
if not perf:
    sys.exit("perf not found (bash scripts/setup.sh --bench installs linux-perf)")
pin = not args.no_pin and os.cpu_count() >= 2
tmp = tempfile.mkdtemp(prefix="ferret-profiler-bench-")
WINDOW = 10  # the cpu_profiler window (s); the ferret rounds measure its second window

def taskset(cpu, argv):
    return (["taskset", "-c", str(cpu)] + argv) if pin else argv

def cpu_seconds(pid):
    """The process's CPU clock (CLOCK_PROCESS_CPUTIME_ID of another process, as
    clock_getcpuclockid(3) makes it): user+system time of all its threads, exited
    ones included, in ns (utime+stime in /proc/PID/stat have 10 ms ticks)."""
    return time.clock_gettime((~pid << 3) | 2)

def cpu_line(cpu):
    """(busy, steal, total) jiffies of one CPU from /proc/stat (whole machine without a CPU)."""
    key = f"cpu{cpu}" if cpu is not None else "cpu"
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] == key:
            v = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
            return v[0] + v[1] + v[2] + v[5] + v[6], v[7], sum(v)
    raise RuntimeError(key)

units_file = f"{tmp}/units"
live = []  # profiler processes running now (killed on the way out)
if pin:
    os.sched_setaffinity(0, {0})  # the harness's own polling stays off the fixture's CPU

def units():
    with open(units_file, "rb") as f:
        return struct.unpack("=Q", f.read(8))[0]

class Reading:
    def __init__(self, fixture, profiler=None, baseline=None):
        self.t = time.monotonic()
        self.units = units()
        self.fixture_cpu = cpu_seconds(fixture)
        self.profiler_cpu = cpu_seconds(profiler) if profiler else None
        self.baseline_cpu = cpu_seconds(baseline) if baseline else None
        self.cpu1 = cpu_line(1 if pin else None)

# --- pprof: sum of the first sample value (samples/count), no dependencies ---
def varint(b, i):
    x = s = 0
    while True:
        c = b[i]; i += 1
        x |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return x, i

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v

def pprof_samples(path):
    total = 0
    for num, wt, v in fields(gzip.decompress(open(path, "rb").read())):
        if num != 2:  # Profile.sample
            continue
        for n2, wt2, v2 in fields(v):
            if n2 == 2:  # Sample.value: packed, or one varint per value
                if wt2 == 2:
                    total += varint(v2, 0)[0]
                else:
                    total += v2
                break
    return total

def profile_files(d):
    return sorted(glob.glob(f"{d}/**/*.pb.gz", recursive=True))

# --- conditions ---
def run_none(r, fixture):
    time.sleep(1)
    a = Reading(fixture)
    time.sleep(args.duration)
    return a, Reading(fixture), {}

def run_perf(r, fixture):
    data = f"{tmp}/perf-{r}.data"
    p = subprocess.Popen(taskset(0, [perf, "record", "-F", str(args.frequency), "--call-graph", args.perf_call_graph,
                                       "-p", str(fixture), "-o", data]),
                         stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/perf-{r}.log", "w"))
    live.append(p)
    start = time.monotonic()
    time.sleep(1)
    if p.poll() is not None:
        sys.exit(f"perf record exited at startup; see {tmp}/perf-{r}.log")
    a = Reading(fixture, p.pid)
    time.sleep(args.duration)
    b = Reading(fixture, p.pid)
    p.send_signal(signal.SIGINT)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    live.remove(p)
    life = time.monotonic() - start
    hdr = subprocess.run([perf, "report", "-i", data, "--header-only"], capture_output=True, text=True).stdout
    m = re.search(r"time of first sample : ([\d.]+)\s*\n# time of last sample : ([\d.]+)", hdr)
    log = open(f"{tmp}/perf-{r}.log").read()
    n = int(re.search(r"\((\d+) samples\)", log).group(1))
    rate = n / (float(m.group(2)) - float(m.group(1)))
    return a, b, {"samples": n, "span_samples": rate * (b.t - a.t), "life_cpu": ru.ru_utime + ru.ru_stime,
                  "life": life, "data": data}

def ferret_config(name, pid):
    open(f"{tmp}/{name}.yaml", "w").write(f"""
plugins: {{ paths: [{tmp}/plugins.d] }}
rules:
  - name: bench
    match: {{ pid: {pid} }}
    collectors:
      cpu_profiler: {{ frequency: {args.frequency}, window: {WINDOW}s, stack_copy: {args.stack_copy} }}
pipeline:
  sinks:
    - {{ type: pprof_dir, path: {tmp}/profiles-{name} }}
    - {{ type: jsonl, path: {tmp}/{name}.jsonl }}
""")
    return f"{tmp}/{name}.yaml"

def run_ferret(r, fixture):
    prof = f"{tmp}/profiles-ferret-{r}"
    jsonl = f"{tmp}/ferret-{r}.jsonl"
    # The baseline agent: the same configuration, its rule matching a sleeping
    # process (attached, never sampled), started at the same time. Both see the
    # same process churn on the machine (each exec makes an agent read the new
    # process's facts), so the difference is what the samples cost.
    base = subprocess.Popen(taskset(0, [f"{args.bin}/ferret", "run", "--config", ferret_config(f"baseline-{r}", sleeper.pid)]),
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/baseline-{r}.log", "w"))
    live.append(base)
    p = subprocess.Popen(taskset(0, [f"{args.bin}/ferret", "run", "--config", ferret_config(f"ferret-{r}", fixture)]),
                         stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/ferret-{r}.log", "w"))
    live.append(p)
    start = time.monotonic()

    def wait_files(n):
        deadline = time.monotonic() + WINDOW + 20
        while len(profile_files(prof)) < n:
            if p.poll() is not None:
                sys.exit(f"ferret exited (status {p.returncode}); see {tmp}/ferret-{r}.log")
            if time.monotonic() > deadline:
                sys.exit(f"no profile #{n} from ferret in time; see {tmp}/ferret-{r}.log")
            time.sleep(0.01)

    wait_files(1)
    a = Reading(fixture, p.pid, base.pid)
    wait_files(2)
    b = Reading(fixture, p.pid, base.pid)
    if base.poll() is not None:
        sys.exit(f"the baseline agent exited; see {tmp}/baseline-{r}.log")
    p.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    live.remove(p)
    base.terminate()
    base.wait()
    live.remove(base)
    life = time.monotonic() - start
    files = profile_files(prof)  # names end in the window's start time: sorted = in order
    counts = [pprof_samples(f) for f in files]
    window2 = counts[1]
    # Cross-check with the jsonl sink's profile records.
    recorded = {o["path"]: o["samples"] for o in map(json.loads, open(jsonl)) if o.get("signal") == "profile"}
    if recorded.get(files[1]) != window2:
        print(f"  warning: {files[1]} holds {window2} samples, the jsonl record says {recorded.get(files[1])}")
    return a, b, {"samples": sum(counts), "span_samples": window2, "life_cpu": ru.ru_utime + ru.ru_stime,
                  "life": life, "windows": len(files), "base_cpu": b.baseline_cpu - a.baseline_cpu}

# A plugin path holding only the cpu_profiler manifest (the library is found next to ferret).
os.makedirs(f"{tmp}/plugins.d")
open(f"{tmp}/plugins.d/cpu_profiler.yaml", "w").write(
    "name: cpu_profiler\nlibrary: libferret_cpu_profiler.so\nkind: collector\n")

sleeper = subprocess.Popen(["sleep", "100000"])
live.append(sleeper)
conditions = {"none": run_none, "ferret": run_ferret, "perf": run_perf}
fixture = subprocess.Popen(taskset(1, [args.burner, "-mode", "work", "-workers", str(args.workers), "-report", units_file]),
                           stdout=subprocess.PIPE, text=True)
rows = {c: [] for c in conditions}
try:
    if fixture.stdout.readline().strip() != "ready":
        sys.exit("the burner did not start")
    time.sleep(2)  # warm up
    names = list(conditions)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in order:
            a, b, extra = conditions[c](r, fixture.pid)
            span = b.t - a.t
            busy1, steal1, total1 = (y - x for x, y in zip(a.cpu1, b.cpu1))
            row = {"span": span, "rate": (b.units - a.units) / span,
                   "per_cpu": (b.units - a.units) / max(b.fixture_cpu - a.fixture_cpu, 1e-9),
                   "share": (b.fixture_cpu - a.fixture_cpu) / span,
                   "steal": steal1 / max(total1, 1), **extra}
            if a.profiler_cpu is not None:
                row["prof_cpu"] = b.profiler_cpu - a.profiler_cpu
            rows[c].append(row)
            line = (f"  round {r + 1} {c:6s} {row['rate']:8.1f} units/s over {span:5.2f} s; {row['per_cpu']:7.1f} units per "
                    f"fixture CPU-s, fixture CPU {100 * row['share']:5.1f}%, steal on its CPU {100 * row['steal']:4.1f}%")
            if "prof_cpu" in row:
                line += (f"; {c} CPU {1000 * row['prof_cpu']:6.1f} ms for {row['span_samples']:6.0f} samples "
                         f"({1000 * row['prof_cpu'] / row['span_samples'] * 1000:6.1f} ms per 1,000)")
            if "base_cpu" in row:
                line += f", baseline agent {1000 * row['base_cpu']:6.1f} ms"
            print(line, flush=True)

    # perf's symbolization: perf report on each recording.
    report_cpu = report_samples = 0.0
    report_wall = 0.0
    for row in rows["perf"]:
        t = time.monotonic()
        p = subprocess.Popen(taskset(0, [perf, "report", "-i", row["data"], "--stdio"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        report_wall += time.monotonic() - t
        report_cpu += ru.ru_utime + ru.ru_stime
        report_samples += row["samples"]

    # --- summary ---
    T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}
    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0
    mean = {c: statistics.mean(x["rate"] for x in rs) for c, rs in rows.items()}
    print(f"summary ({args.rounds} rounds, fixture: burner -mode work -workers {args.workers}"
          f"{', on CPU 1, profilers on CPU 0' if pin else ', unpinned'}; {args.frequency} Hz; "
          f"load average now {' '.join(open('/proc/loadavg').read().split()[:3])}):")
    for c, rs in rows.items():
        rates = [x["rate"] for x in rs]
        print(f"  {c:6s} {mean[c]:8.1f} units/s, sd {sd(rates):6.1f} ({100 * sd(rates) / mean[c]:.2f}%), "
              f"range {min(rates):.1f}-{max(rates):.1f}; {statistics.mean(x['per_cpu'] for x in rs):.1f} units per "
              f"fixture CPU-s; fixture CPU {100 * statistics.mean(x['share'] for x in rs):.1f}%, "
              f"steal {100 * statistics.mean(x['steal'] for x in rs):.1f}%")
    def paired(key, base, other):
        """Per-round loss of `other` vs `base` in % (positive = slower), its mean and 95% t half-width."""
        xs = [100 * (b[key] - o[key]) / b[key] for b, o in zip(rows[base], rows[other])]
        half = T975.get(len(xs) - 1, 2.0) * sd(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("inf")
        m = statistics.mean(xs)
        return (f"per round {', '.join(f'{x:+.2f}' for x in xs)} %, mean {m:+.2f}% ± {half:.2f} (95% t) -> "
                + ("within noise" if abs(m) <= half else "outside noise"))
    for c in ("ferret", "perf"):
        loss = 100 * (mean["none"] - mean[c]) / mean["none"]
        print(f"  {c:6s} loss vs none in units/s: {loss:+.2f}% (means); {paired('rate', 'none', c)}")
        per_cpu = {k: statistics.mean(x["per_cpu"] for x in rows[k]) for k in ("none", c)}
        print(f"         in units per fixture CPU-s: {100 * (1 - per_cpu[c] / per_cpu['none']):+.2f}% (means); "
              f"{paired('per_cpu', 'none', c)}")
    print(f"  ferret vs perf (positive = the fixture slower under ferret): units/s {paired('rate', 'perf', 'ferret')}; "
          f"per fixture CPU-s {paired('per_cpu', 'perf', 'ferret')}")
    for c in ("ferret", "perf"):
        rs = rows[c]
        steady = [1e6 * x["prof_cpu"] / x["span_samples"] for x in rs]
        life = [1e6 * x["life_cpu"] / x["samples"] for x in rs]
        what = "second window" if c == "ferret" else "span"
        print(f"  {c:6s} CPU per 1,000 samples: steady ({what}) {statistics.mean(steady):.1f} ms "
              f"(range {min(steady):.1f}-{max(steady):.1f}; {statistics.mean(x['span_samples'] for x in rs):.0f} samples, "
              f"{100 * statistics.mean(x['prof_cpu'] / x['span'] for x in rs):.2f}% of a core); whole life "
              f"{statistics.mean(life):.1f} ms ({statistics.mean(x['life_cpu'] for x in rs) * 1000:.0f} ms CPU for "
              f"{statistics.mean(x['samples'] for x in rs):.0f} samples over {statistics.mean(x['life'] for x in rs):.1f} s)")
        if c == "ferret":
            net = [1e6 * (x["prof_cpu"] - x["base_cpu"]) / x["span_samples"] for x in rs]
            print(f"         minus the baseline agent (same config, attached to a sleeping process, same window): "
                  f"{statistics.mean(net):.1f} ms per 1,000 samples (range {min(net):.1f}-{max(net):.1f}); "
                  f"the baseline itself used {100 * statistics.mean(x['base_cpu'] / x['span'] for x in rs):.2f}% of a core")
    print(f"  perf report --stdio (symbolization, after the rounds): {1e6 * report_cpu / report_samples:.1f} ms CPU per "
          f"1,000 samples ({report_cpu:.2f} s CPU, {report_wall:.2f} s wall for {report_samples:.0f} samples "
          f"in {len(rows['perf'])} files)")
    if args.keep:
        print(f"  (files: {tmp})")
finally:
    for p in live + [fixture]:
        if p.poll() is None:
            p.kill()
            p.wait()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
