#!/usr/bin/env bash
# Build everything: the agent, the Swift plugins (next to `ferret`), and the
# C example plugin (plain cc against the header, also next to `ferret`), and
# the BPF objects of the http_tracer (clang -target bpf, next to its .so; never
# committed).
# Usage: scripts/build.sh [debug|release]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config="${1:-debug}"
swift build -c "$config" >&2
bin="$(swift build -c "$config" --show-bin-path)"
make -s -C examples/c-plugin OUT="$bin/libferret_fdcount.so" >&2
# The plugin helper (isolation: process), C with libc and libcap only.
make -s -C Sources/PluginHost OUT="$bin/ferret-plugin-host" >&2
# SwiftPM cannot compile for a second target triple, so the BPF C is built here
# with the toolchain's clang (the one next to `swift`, which has the bpf target).
clang_bin="$(dirname "$(command -v swift)")/clang"
[ -x "$clang_bin" ] || clang_bin=clang
for src in Sources/Plugins/HTTPTracer/bpf/*.bpf.c; do
  obj="$bin/$(basename "${src%.c}").o"
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ]; then
    "$clang_bin" -target bpf -O2 -g -D__TARGET_ARCH_x86 \
      -I/usr/include/x86_64-linux-gnu -c "$src" -o "$obj.tmp" >&2
    mv "$obj.tmp" "$obj"
  fi
done
echo "$bin"
