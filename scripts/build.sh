#!/usr/bin/env bash
# Build everything: the agent, the Swift plugins (next to `ferret`), and the
# C example plugin (plain cc against the header, also next to `ferret`).
# Usage: scripts/build.sh [debug|release]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config="${1:-debug}"
swift build -c "$config" >&2
bin="$(swift build -c "$config" --show-bin-path)"
make -s -C examples/c-plugin OUT="$bin/libferret_fdcount.so" >&2
echo "$bin"
