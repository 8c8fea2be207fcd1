#!/usr/bin/env bash
# Build the bundled Go demo service (examples/demo) with the system Go.
#
# Usage: scripts/build-demo.sh [OUT_DIR]
#   OUT_DIR defaults to <repo>/.build/demo; the binary is OUT_DIR/ferret-demo.
#   Prints the binary's absolute path on stdout. Skips the build when the
#   binary is newer than examples/demo/main.go and go.mod.
#
# Uses Debian's golang-go (/usr/bin/go, Go 1.19) or else `go` on PATH, offline:
# GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off, default (cgo-enabled) build.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/examples/demo"

out_dir="${1:-$REPO/.build/demo}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
out="$out_dir/ferret-demo"

if [ -x "$out" ] && [ "$out" -nt "$SRC/main.go" ] && [ "$out" -nt "$SRC/go.mod" ]; then
  echo "build-demo: $out is up to date" >&2
  echo "$out"
  exit 0
fi

if [ -x /usr/bin/go ]; then
  GO=/usr/bin/go
elif command -v go >/dev/null 2>&1; then
  GO="$(command -v go)"
else
  echo "build-demo: no Go toolchain found (run scripts/setup.sh)" >&2
  exit 1
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off
# Go needs a build cache; without HOME (bare CI environments) keep it in .build.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="$REPO/.build/go-cache"
fi

echo "build-demo: building $out with $("$GO" version)" >&2
(cd "$SRC" && "$GO" build -o "$out.tmp" .)
mv -f "$out.tmp" "$out"
echo "$out"
