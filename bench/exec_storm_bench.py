#!/usr/bin/env python3
"""Exec-storm benchmark: the agent's CPU cost of discovery per exec.

A compiled helper (C, written to a temp dir and built with `cc -O2`) forks and
execs /bin/true N times as fast as it can (posix_spawn + waitpid), split over
--workers parallel helpers. /bin/true matches no rule, so what the agent spends
is the price of noticing and ruling out a process: the netlink exec and exit
events, /proc reads, rule matching. Before the storm 200 execs of /bin/true warm
the agent up, so every exec in the storm is of an executable already seen.

Agent CPU is read before the storm and after it plus a drain (1 s, then 1 s
steps until a step costs the agent no more than about its idle rate, so at least
2 s), and the agent's idle CPU rate, measured
over an equally long quiet window just before, is subtracted:

    µs/exec = (cpu(storm + drain) - idle_rate * (storm + drain wall)) / N

Three readings of the agent's CPU are taken. The headline one is the process's
CPU clock (clock_gettime on clock_getcpuclockid(pid)): nanoseconds, all threads,
including threads that exited during the window. It is the figure
/proc/PID/schedstat would give if it covered the whole process, but
/proc/PID/schedstat covers the main thread only. The sum of
/proc/PID/task/*/schedstat covers only the threads alive when it is read, so
libdispatch workers that come and go make it drop. utime+stime from
/proc/PID/stat covers the whole process but counts clock ticks (10 ms). The
JSON line holds all three. The table shows the CPU clock and the ticks.

"No missed attach": a marker rule (`exe: "*/sleep"` plus a cmdline regex with a
random token, collector procio) matches only K=20 marker processes
(`/bin/sleep TOKEN.RRRJJJ`) that the first helper spawns at even intervals
during the storm. After the drain, every marker pid must have a `process.attach`
event in the agent's jsonl output with rule `markers`. The periodic /proc rescan
is set to 1h, so a marker found there was found from the kernel's exec event,
or from the rescan that follows a netlink overrun (the agent logs those, and
they are counted). The script exits 1 if a marker is missed.

Variants:
  marker      the marker rule alone
  shipped-go  the shipped config.yaml's first rule (`runtime: go`, group
              "{exe.name}"; collectors cut to procio and fdcount: the storm
              measures discovery of processes no rule matches, not
              collectors), then the marker rule

The peer is the same storm with the agent stopped: storm wall time and execs/s
with and without the agent, so the slowdown of the storm itself shows. For each
variant, its no-agent storms run just before its agent starts.

Prints a markdown table for bench/RESULTS.md and a JSON line with the raw
numbers. Run as root (the netlink process connector needs CAP_NET_ADMIN).

Usage: bench/exec_storm_bench.py BIN_DIR [--execs 3000] [--rounds 3] [--workers 2]
"""
import argparse, json, os, random, shutil, signal, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin", help="folder with the ferret executable and the plugin .so files, e.g. .build/release")
ap.add_argument("--execs", type=int, default=3000, help="execs of /bin/true per storm")
ap.add_argument("--rounds", type=int, default=3, help="storms per variant")
ap.add_argument("--workers", type=int, default=2, help="parallel exec loops")
ap.add_argument("--markers", type=int, default=20, help="matching processes started during each storm")
ap.add_argument("--warmup", type=int, default=200, help="execs of /bin/true before the storms")
ap.add_argument("--variants", default="marker,shipped-go", help="comma-separated: marker, shipped-go")
args = ap.parse_args()

if os.geteuid() != 0:
    sys.exit("run as root: the agent needs CAP_NET_ADMIN for the netlink process connector")
bin_dir = os.path.abspath(args.bin)
ferret = os.path.join(bin_dir, "ferret")
if not os.access(ferret, os.X_OK):
    sys.exit(f"no ferret executable in {bin_dir}")

tick = os.sysconf("SC_CLK_TCK")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="ferret-storm-")
token = str(random.randint(100000, 999999))
DRAIN = 1.0          # seconds after the storm before the agent's CPU is read again
DRAIN_MAX = 30.0     # ... extended while the agent is still busier than idle, up to this
ATTACH_WAIT = 5.0    # seconds to wait past the drain for missing process.attach events

STORM_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long long real_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* storm N K PREFIX: posix_spawn + waitpid /bin/true N times; spawn K markers
   "/bin/sleep PREFIXjjj" at even intervals, not waited for until the report is
   written and stdout closed; then reap them (the caller kills them). */
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: storm N K PREFIX\n"); return 2; }
    long n = atol(argv[1]);
    int k = atoi(argv[2]);
    const char *prefix = argv[3];
    char *true_argv[] = {"/bin/true", NULL};
    posix_spawn_file_actions_t quiet;
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
    pid_t *mpid = calloc(k > 0 ? k : 1, sizeof(pid_t));
    long long *mns = calloc(k > 0 ? k : 1, sizeof(long long));
    int next = 0;
    long failed = 0;
    char arg[256];
    double t0 = mono();
    for (long i = 0; i <= n; i++) {
        while (next < k && (i == n || i >= (long)((next + 0.5) * n / k))) {
            snprintf(arg, sizeof arg, "%s%03d", prefix, next);
            char *sleep_argv[] = {"/bin/sleep", arg, NULL};
            mns[next] = real_ns();
            if (posix_spawn(&mpid[next], "/bin/sleep", &quiet, NULL, sleep_argv, environ) != 0) mpid[next] = -1;
            next++;
        }
        if (i == n) break;
        pid_t pid;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, environ) != 0) { failed++; continue; }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    }
    double t1 = mono();
    printf("elapsed %.6f\nfailed %ld\n", t1 - t0, failed);
    for (int j = 0; j < k; j++) printf("marker %d %d %lld\n", j, (int)mpid[j], mns[j]);
    fflush(stdout);
    close(1);
    for (int j = 0; j < k; j++) {
        int st;
        if (mpid[j] > 0) while (waitpid(mpid[j], &st, 0) < 0 && errno == EINTR) {}
    }
    return 0;
}
"""

agent = None
helpers = []
marker_pids = set()


def cpu_clock(pid):
    """The process's CPU clock (all threads, living and exited), seconds."""
    return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9  # clock_getcpuclockid(pid): CPUCLOCK_SCHED


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick


def cpu_schedstat(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread exited
    return total / 1e9


def sample(pid):
    return {"t": time.monotonic(), "clock": cpu_clock(pid), "ticks": cpu_ticks(pid), "schedstat": cpu_schedstat(pid)}


def diff(a, b):
    return {k: b[k] - a[k] for k in a}


def run_storm(n, workers, k, prefix):
    """Runs one storm; returns (wall s, failed spawns, markers {pid: (j, spawn unix ns)}, helper procs)."""
    per = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    t0 = time.monotonic()
    procs = [subprocess.Popen([f"{tmp}/storm", str(per[w]), str(k if w == 0 else 0), prefix],
                              stdout=subprocess.PIPE, text=True) for w in range(workers)]
    helpers.extend(procs)
    outs = [p.stdout.read() for p in procs]  # EOF when a helper has finished its execs
    wall = time.monotonic() - t0
    failed, markers = 0, {}
    for out in outs:
        for line in out.splitlines():
            f = line.split()
            if f[0] == "failed":
                failed += int(f[1])
            elif f[0] == "marker" and int(f[2]) > 0:
                markers[int(f[2])] = (int(f[1]), int(f[3]))
    marker_pids.update(markers)
    return wall, failed, markers, procs


def end_storm(procs, markers):
    for pid in markers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(10)
        helpers.remove(p)
    marker_pids.difference_update(markers)


def warm_up():
    wall, failed, markers, procs = run_storm(args.warmup, 1, 0, "x")
    end_storm(procs, markers)


def config_text(variant):
    markers_rule = f"""
  - name: markers
    match:
      exe: "*/sleep"
      cmdline: "^/bin/sleep {token}\\\\."
    collectors:
      procio: {{}}"""
    go_rule = """
  - name: go-services
    match:
      runtime: go
    group: "{exe.name}"
    collectors:
      fdcount: { warn_above: 10000 }
      procio: {}"""
    rules = {"marker": markers_rule, "shipped-go": go_rule + markers_rule}[variant]
    return f"""
agent:
  interval: 1s
  rescan: 1h
  self_metrics_interval: 1s
plugins:
  paths: [{repo}/plugins.d]
rules:{rules}
pipeline:
  sinks:
    - type: jsonl
      path: {tmp}/{variant}.jsonl
"""


def attach_events(path, pids):
    """{pid: time_unix_nano} of process.attach events by rule 'markers' for the given pids."""
    seen = {}
    try:
        lines = open(path).readlines()
    except OSError:
        return seen
    for line in lines:
        if '"process.attach"' not in line:
            continue
        try:
            o = json.loads(line)
        except ValueError:
            continue  # a line being written
        r = o.get("resource", {})
        if o.get("name") == "process.attach" and r.get("ferret.rule") == "markers" and r.get("process.pid") in pids:
            seen.setdefault(r["process.pid"], o["time_unix_nano"])
    return seen


def overruns(log):
    try:
        return open(log).read().count("dropped process events")
    except OSError:
        return 0


def stop_agent():
    global agent
    if agent is None:
        return None
    if agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    rc, agent = agent.returncode, None
    return rc


def fmt_range(xs, digits=1):
    return f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def bench_variant(variant):
    global agent
    n, w, k = args.execs, args.workers, args.markers
    # Peer: the same storms with the agent stopped.
    warm_up()
    base = []
    for r in range(args.rounds):
        wall, failed, markers, procs = run_storm(n, w, k, f"{token}.9{r:02d}")
        end_storm(procs, markers)
        base.append({"wall_s": wall, "execs_per_s": n / wall, "failed_spawns": failed})
        time.sleep(0.5)

    cfg = f"{tmp}/{variant}.yaml"
    open(cfg, "w").write(config_text(variant))
    log = f"{tmp}/{variant}.log"
    out = f"{tmp}/{variant}.jsonl"
    env = dict(os.environ, FERRET_PLUGIN_PATH=bin_dir)
    agent = subprocess.Popen([ferret, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"), env=env)
    # Ready: the jsonl sink has the agent's self-metrics (every 1 s), twice.
    deadline = time.monotonic() + 120
    while True:
        if agent.poll() is not None:
            sys.exit(f"{variant}: the agent exited with status {agent.returncode}:\n{open(log).read()[-3000:]}")
        if os.path.exists(out) and open(out).read().count('"ferret.processes.seen"') >= 2:
            break
        if time.monotonic() > deadline:
            sys.exit(f"{variant}: the agent wrote no self-metrics to {out} in 120 s:\n{open(log).read()[-3000:]}")
        time.sleep(0.25)
    pid = agent.pid
    warm_up()
    time.sleep(1)

    rounds = []
    window_guess = max(2.0, 1.5 * statistics.median(b["wall_s"] for b in base) + DRAIN)
    for r in range(args.rounds):
        # Idle: an equally long quiet window just before the storm.
        i0 = sample(pid)
        time.sleep(window_guess)
        i1 = sample(pid)
        idle = diff(i0, i1)
        rate = {m: idle[m] / idle["t"] for m in ("clock", "ticks", "schedstat")}
        ov0 = overruns(log)

        s0 = sample(pid)
        wall, failed, markers, procs = run_storm(n, w, k, f"{token}.{r:03d}")
        time.sleep(DRAIN)
        # Keep draining while the last second cost clearly more than idle.
        prev = sample(pid)
        while prev["t"] - s0["t"] - wall < DRAIN_MAX:
            time.sleep(1)
            cur = sample(pid)
            busy = (cur["clock"] - prev["clock"]) / (cur["t"] - prev["t"])
            prev = cur
            if busy <= max(2 * rate["clock"], rate["clock"] + 0.01):
                break
        s1 = prev
        storm = diff(s0, s1)
        window = storm["t"]
        per_exec = {m: 1e6 * (storm[m] - rate[m] * window) / n for m in ("clock", "ticks", "schedstat")}

        # No missed attach.
        want = set(markers)
        deadline = time.monotonic() + ATTACH_WAIT
        while True:
            seen = attach_events(out, want)
            if len(seen) == len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        delays = [(seen[p] - markers[p][1]) / 1e6 for p in seen]
        missed = sorted(markers[p][0] for p in want - set(seen))
        end_storm(procs, markers)
        rounds.append({
            "wall_s": wall, "execs_per_s": n / wall, "failed_spawns": failed,
            "window_s": window, "drain_s": window - wall, "idle_window_s": idle["t"],
            "idle_cpu_pct": {m: 100 * rate[m] for m in rate},
            "agent_cpu_s": {m: storm[m] for m in ("clock", "ticks", "schedstat")},
            "us_per_exec": per_exec,
            "markers": k, "markers_spawned": len(markers),
            "markers_attached": len(seen), "missed_marker_indexes": missed,
            "attach_delay_ms_max": max(delays) if delays else None,
            "attach_delay_ms_median": statistics.median(delays) if delays else None,
            "netlink_overruns": overruns(log) - ov0,
        })
        window_guess = max(2.0, window)
        time.sleep(0.5)  # the markers' exits

    rc = stop_agent()
    return {"variant": variant, "execs": n, "workers": w, "rounds": rounds, "no_agent": base,
            "agent_exit_status": rc}


results = []
try:
    src = f"{tmp}/storm.c"
    open(src, "w").write(STORM_C)
    subprocess.run(["cc", "-O2", "-o", f"{tmp}/storm", src], check=True)
    for v in args.variants.split(","):
        print(f"running {v}: {args.rounds} round(s) of {args.execs} execs over {args.workers} worker(s)...", file=sys.stderr)
        results.append(bench_variant(v.strip()))
finally:
    stop_agent()
    for pid in list(marker_pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in helpers:
        p.kill()
        p.wait()
    keep = os.environ.get("FERRET_BENCH_KEEP")
    if keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)

load = open("/proc/loadavg").read().split()[:3]
print()
print("| variant | execs | storm wall with agent | without agent | agent CPU µs/exec, median (min–max) | same by utime+stime ticks | missed attaches |")
print("|---|---|---|---|---|---|---|")
missed_total = 0
for res in results:
    rs, bs = res["rounds"], res["no_agent"]
    wa = statistics.median(r["wall_s"] for r in rs)
    wb = statistics.median(b["wall_s"] for b in bs)
    missed = sum(len(r["missed_marker_indexes"]) for r in rs)
    markers = sum(r["markers_spawned"] for r in rs)
    missed_total += missed
    print(f"| {res['variant']} | {res['execs']:,} × {len(rs)} | {wa:.2f} s ({res['execs'] / wa:,.0f}/s) | "
          f"{wb:.2f} s ({res['execs'] / wb:,.0f}/s) | {fmt_range([r['us_per_exec']['clock'] for r in rs])} | "
          f"{fmt_range([r['us_per_exec']['ticks'] for r in rs], 0)} | {missed} of {markers} |")
print()
for res in results:
    rs = res["rounds"]
    d = [r["attach_delay_ms_max"] for r in rs if r["attach_delay_ms_max"] is not None]
    print(f"{res['variant']}: idle agent CPU {statistics.median(r['idle_cpu_pct']['clock'] for r in rs):.2f}% of a core; "
          f"drain after the storm {statistics.median(r['drain_s'] for r in rs):.1f} s; "
          f"marker spawn→attach max {max(d) if d else float('nan'):.1f} ms; "
          f"netlink overruns {sum(r['netlink_overruns'] for r in rs)}; agent exit status {res['agent_exit_status']}")
print(f"({args.workers} workers; load average after the run {' '.join(load)})")
print(json.dumps({"bench": "exec_storm", "bin": bin_dir, "token": token, "loadavg": load, "results": results}))
sys.exit(1 if missed_total else 0)
