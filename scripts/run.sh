#!/usr/bin/env bash
# One command from a fresh machine to a running agent: install what is
# missing, build, start the bundled Go demo service, and run `ferret` on the
# default config.yaml. Extra arguments go to `ferret run` (e.g. --duration 30s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bin="$(bash scripts/build.sh debug)"
demo="$(bash scripts/build-demo.sh)"
"$demo" -listen 127.0.0.1:0 >/dev/null 2>&1 &
demo_pid=$!
trap 'kill "$demo_pid" 2>/dev/null || true' EXIT
echo "run: demo Go service (pid $demo_pid) started for the default rules to find; signals also go to ferret.jsonl" >&2
"$bin/ferret" run --config config.yaml "$@"
