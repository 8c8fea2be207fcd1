#!/usr/bin/env bash
# Preliminary http_tracer overhead check (not yet the issue's full benchmark):
# wrk against the fixture service with the tracer off, then on (the agent
# running the http_tracer on it). Needs root, wrk and `scripts/build.sh debug`.
#
# Usage: bench/http_tracer_quick.sh SERVER_BINARY [PATH] [SECONDS]
#   PATH defaults to /ok/bench (a no-op handler); /slow/x?ms=1 sleeps 1 ms.
#   SPANS=false keeps only the RED metrics (no span export).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
server="$1"; path="${2:-/ok/bench}"; secs="${3:-10}"
bin="$(swift build -c debug --show-bin-path)"
work="$(mktemp -d)"
trap 'kill "$srv" "$agent" 2>/dev/null || true; [ -s "$work/agent.log" ] && tail -3 "$work/agent.log" >&2; rm -rf "$work"' EXIT
agent=""
"$server" > "$work/srv.out" &
srv=$!
sleep 0.5
addr="$(awk '/^listening/ {print $2}' "$work/srv.out")"
cat > "$work/config.yaml" <<YAML
agent: { interval: 1s, rescan: 2s, self_metrics_interval: 10s, log_level: warning }
plugins: { paths: [$PWD/plugins.d] }
rules:
  - name: bench
    match: { pid: $srv }
    collectors: { http_tracer: { metrics_interval: 5s, spans: ${SPANS:-true} } }
pipeline:
  queue_size: 65536
  aggregators: []
  sinks: [ { type: jsonl, path: $work/out.jsonl } ]
YAML
run_wrk() { wrk -t1 -c16 -d"${secs}s" --latency "http://$addr$path" | grep -E "Requests/sec|99%|requests in"; }
echo "== tracer off"; run_wrk
"$bin/ferret" run --config "$work/config.yaml" > "$work/agent.log" 2>&1 &
agent=$!
sleep 3
echo "== tracer on"; run_wrk
sleep 6
kill -TERM "$srv"; sleep 0.3
echo "== server: $(grep served "$work/srv.out")"
echo "== spans: $(grep -c '"signal":"span"' "$work/out.jsonl" || true)"
