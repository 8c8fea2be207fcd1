#!/usr/bin/env bash
# Build the Go programs the benchmarks watch, with Go 1.22.10 from
# /opt/ferret-go (scripts/setup.sh --go-toolchains), offline:
#   truthsrv  Tests/GoIntrospectionTests/Fixtures/truthsrv (the readers' truth fixture)
#   okserver  bench/go/okserver (a tiny HTTP target for the latency benchmark)
#   burner    Tests/FerretCoreTests/Fixtures/burner (the CPU profiler's fixture;
#             -mode work for the profiler benchmark)
#   promexporter  bench/go/promexporter (PrometheusBench's peer: Prometheus' Go
#             client library, built in GOPATH mode against Debian's
#             golang-github-prometheus-client-golang-dev; skipped when missing)
# Usage: bench/build-go.sh [OUT_DIR]   (default <repo>/.build/bench-go)
# Prints OUT_DIR. Go's build cache makes a rebuild with unchanged sources cheap.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$REPO/.build/bench-go}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
GO=/opt/ferret-go/go1.22.10/bin/go
[ -x "$GO" ] || { echo "build-go: $GO missing (run scripts/setup.sh --go-toolchains)" >&2; exit 1; }
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOWORK=off
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="$REPO/.build/go-cache"
fi
(cd "$REPO/Tests/GoIntrospectionTests/Fixtures/truthsrv" && "$GO" build -buildvcs=false -o "$out/truthsrv" .)
(cd "$REPO/bench/go/okserver" && "$GO" build -buildvcs=false -o "$out/okserver" .)
(cd "$REPO/Tests/FerretCoreTests/Fixtures/burner" && "$GO" build -buildvcs=false -o "$out/burner" .)
if [ -d /usr/share/gocode/src/github.com/prometheus/client_golang ]; then
  (cd "$REPO/bench/go/promexporter" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= "$GO" build -o "$out/promexporter" .)
fi
echo "$out"
