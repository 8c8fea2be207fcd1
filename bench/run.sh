#!/usr/bin/env bash
# Runs every benchmark on a release build and prints the figures recorded in
# bench/RESULTS.md. Takes about three minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --go-toolchains
bin="$(bash scripts/build.sh release)"
swift build -c release --product PipelineBench >&2
swift build -c release --product IntrospectionBench >&2
echo "== pipeline throughput (3 runs)"
for i in 1 2 3; do "$bin/PipelineBench" 5000000; done
echo "== introspection (Go 1.22.10's 'compile', a ~19 MB Go binary; a live demo process)"
go=/opt/ferret-go/go1.22.10/bin/go
demo="$(bash scripts/build-demo.sh)"
"$demo" -listen 127.0.0.1:0 >/dev/null 2>&1 &
demo_pid=$!
trap 'kill $demo_pid 2>/dev/null || true' EXIT
sleep 1
"$bin/IntrospectionBench" /opt/ferret-go/go1.22.10/pkg/tool/linux_amd64/compile "$go" "$demo_pid"
echo "== agent"
python3 bench/agent_bench.py "$bin" "$@"
