#!/usr/bin/env bash
# Runs every benchmark on a release build and prints the figures recorded in
# bench/RESULTS.md. Takes about fifteen minutes. Installs what it needs first
# (scripts/setup.sh --go-toolchains --bench: the Go toolchains, collectd-core, wrk,
# linux-perf).
# Arguments are passed to bench/agent_bench.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --go-toolchains --bench
bin="$(bash scripts/build.sh release)"
swift build -c release --product PipelineBench >&2
swift build -c release --product AggregatorBench >&2
swift build -c release --product IntrospectionBench >&2
swift build -c release --product GoReaderBench >&2
swift build -c release --product GlobalsLocateBench >&2
swift build -c release --product HistoryBench >&2
swift build -c release --product PrometheusBench >&2
swift build -c release --product IsolationBench >&2
swift build -c release --product CensusBench >&2
gobin="$(bash bench/build-go.sh)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
load() { echo "($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"; }
if [ -e "$bin/libferret_heap.so" ] && [ -e plugins.d/heap.yaml ]; then
  echo "heap plugin: present, the agent benchmarks include it"
else
  echo "heap plugin: not built here, the agent benchmarks use the scheduler collector only"
fi
echo "== pipeline throughput (3 runs) $(load)"
for i in 1 2 3; do "$bin/PipelineBench" 5000000; done
echo "== plugin isolation: in the agent and in a helper process, side by side (3 runs) $(load)"
cc -O2 -shared -fPIC -pthread -I Sources/FerretPluginABI/include -o "$bin/libferret_bench_emitter.so" bench/plugins/emitter.c
for i in 1 2 3; do "$bin/IsolationBench" "$bin/libferret_bench_emitter.so" "$bin/libferret_fdcount.so" 5000000; done
echo "== window aggregation with p99 (20,000,000 points, 3 runs) $(load)"
for i in 1 2 3; do "$bin/AggregatorBench" 20000000; done
echo "== introspection (Go 1.22.10's 'compile', a ~19 MB Go binary; a live demo process) $(load)"
go=/opt/ferret-go/go1.22.10/bin/go
demo="$(bash scripts/build-demo.sh)"
"$demo" -listen 127.0.0.1:0 >/dev/null 2>&1 &
pids+=($!)
sleep 1
"$bin/IntrospectionBench" /opt/ferret-go/go1.22.10/pkg/tool/linux_amd64/compile "$go" "${pids[-1]}"
echo "== one Go reading from outside (truthsrv, Go 1.22.10) $(load)"
"$gobin/truthsrv" -quiet -park 100 >/dev/null &
quiet=$!
pids+=($quiet)
"$gobin/truthsrv" -park 100 -churn-mib 64 >/dev/null &
busy=$!
pids+=($busy)
sleep 1
"$bin/GoReaderBench" --reads 10000 quiet=$quiet busy-gc=$busy
kill "$quiet" "$busy"
echo "== goroutine census from outside: 1,000 / 10,000 / 100,000 goroutines, with and without stacks (issue #19) $(load)"
censusfix="$gobin/census-static"
(cd Tests/GoIntrospectionTests/Fixtures/census && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=0 /opt/ferret-go/go1.27.3/bin/go build -o "$censusfix" .)
"$bin/CensusBench" "$censusfix" 20
echo "== locating the runtime globals of stripped binaries from code, and validating them (issue #8) $(load)"
# Debian's prometheus (50 MB) and influxd, stripped Go 1.19; Go 1.27.3's compile
# (28 MB, stripped); a stripped truthsrv. The side-by-side reference is the
# objdump-based research script doing the same job.
strippedsrv="$gobin/truthsrv-stripped"
(cd Tests/GoIntrospectionTests/Fixtures/truthsrv && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 /opt/ferret-go/go1.27.3/bin/go build -ldflags="-s -w" -o "$strippedsrv" .)
promdir="$(mktemp -d)"
/usr/bin/prometheus --config.file=/dev/null --storage.tsdb.path="$promdir" --web.listen-address=127.0.0.1:0 >/dev/null 2>&1 &
prom=$!; pids+=($prom)
/usr/bin/influxd >/dev/null 2>&1 &
influx=$!; pids+=($influx)
"$strippedsrv" -quiet >/dev/null 2>&1 &
ts=$!; pids+=($ts)
sleep 3
"$bin/GlobalsLocateBench" /usr/bin/prometheus:$prom /usr/bin/influxd:$influx "$strippedsrv:$ts" /opt/ferret-go/go1.27.3/pkg/tool/linux_amd64/compile
for b in /usr/bin/prometheus:go1.19.8 /opt/ferret-go/go1.27.3/pkg/tool/linux_amd64/compile:go1.27.3; do
  /usr/bin/time -f "objdump-based globals_extract.py resolve ${b%%:*}: %e s, %M KB" \
    python3 tools/globalsgen/globals_extract.py resolve "${b%%:*}" "tools/globalsgen/tables/${b##*:}.json" >/dev/null
done
kill $prom $influx $ts 2>/dev/null || true
rm -rf "$promdir"
echo "== dashboard history: 1,000 series over an hour at 1 s (issue #9) $(load)"
"$bin/HistoryBench" 1000 3600
echo "== agent $(load)"
python3 bench/agent_bench.py "$bin" "$@"
echo "== exec storm: agent CPU per exec of /bin/true, and the storm without the agent (issue #16) $(load)"
python3 bench/exec_storm_bench.py "$bin" --execs 3000 --rounds 3
echo "== agent and collectd side by side, 50 Go processes at 1 s $(load)"
python3 bench/collectd_bench.py "$bin" "$gobin/truthsrv"
echo "== target latency under wrk: no agent / agent without the Go readers / with them, at 100 ms $(load)"
python3 bench/latency_bench.py "$bin" "$gobin/okserver"
echo "== target latency under wrk, 10,000 parked goroutines: no agent / readers / readers + a census with stacks every 1 s (issue #19) $(load)"
python3 bench/latency_bench.py "$bin" "$gobin/okserver" --conditions none,readers,census --idle 10000
echo "== CPU profiler (stack_copy 4096) vs perf record -g at 99 Hz, CPU-bound Go fixture (about 3 minutes) $(load)"
python3 bench/profiler_bench.py "$bin" "$gobin/burner"
echo "== the same at 997 Hz against perf record --call-graph dwarf,4096 (both copy 4 KiB of stack a sample) $(load)"
python3 bench/profiler_bench.py "$bin" "$gobin/burner" --frequency 997 --perf-call-graph dwarf,4096
echo "== prometheus sink: scrapes of 100,000 series; the peer is Prometheus' Go client with the same series $(load)"
peerargs=()
if [ -x "$gobin/promexporter" ]; then
  peerout="$(mktemp)"
  "$gobin/promexporter" -series 100000 >"$peerout" 2>&1 &
  peer=$!
  pids+=($peer)
  for _ in $(seq 300); do grep -q '^listening on' "$peerout" && break; sleep 0.2; done
  grep '^peer ingest' "$peerout" || true
  peerargs=(--peer "$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$peerout")" "$peer")
fi
"$bin/PrometheusBench" 100000 50 "${peerargs[@]}"
if [ "${#peerargs[@]}" -gt 0 ]; then kill "$peer"; rm -f "$peerout"; fi
echo "== http_tracer: the traced service under wrk, off / bpftrace empty uprobe / metrics / spans (about 5 minutes) $(load)"
python3 bench/http_tracer_bench.py "$bin"
echo "== done $(load)"
