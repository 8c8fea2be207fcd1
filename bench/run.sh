#!/usr/bin/env bash
# Runs every benchmark on a release build and prints the figures recorded in
# bench/RESULTS.md. Takes about a minute and a half.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bin="$(bash scripts/build.sh release)"
swift build -c release --product PipelineBench >&2
echo "== pipeline throughput (3 runs)"
for i in 1 2 3; do "$bin/PipelineBench" 5000000; done
echo "== agent"
python3 bench/agent_bench.py "$bin" "$@"
