#!/usr/bin/env bash
# Regenerate the Swift code of the project's .proto files. The output is
# committed: builds and CI never run this (protoc-gen-swift takes minutes to
# build). Run it after changing a .proto or the swift-protobuf version, and
# commit the generated files on their own.
#
# What it does:
#   1. installs Debian's protobuf-compiler (protoc) if missing;
#   2. resolves the package and builds protoc-gen-swift in release mode from the
#      resolved swift-protobuf checkout, so the generator matches the runtime
#      library the targets link (cached under the scratch path);
#   3. runs protoc for each entry of PROTO_SETS below.
#
# Usage: scripts/gen-protos.sh [--scratch-path DIR]   (default: .build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One entry per set of protos: "<proto root>|<output folder>|<swift options>|<files...>"
# with files relative to the root (space-separated) and swift options as
# comma-separated protoc-gen-swift options (Visibility=Public, FileNaming=...).
# OTLP: add e.g.
#   "Sources/OTLP/proto|Sources/OTLP/Generated|Visibility=Public,FileNaming=PathToUnderscores|opentelemetry/proto/common/v1/common.proto ..."
PROTO_SETS=(
  "Sources/Pprof/proto|Sources/Pprof/Generated|Visibility=Public|profile.proto"
)

scratch=.build
while [ $# -gt 0 ]; do
  case "$1" in
    --scratch-path) scratch="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--scratch-path DIR]" >&2; exit 2 ;;
  esac
done
scratch="$(mkdir -p "$scratch" && cd "$scratch" && pwd)"

log() { printf 'gen-protos: %s\n' "$*" >&2; }

# --- protoc -------------------------------------------------------------------
if ! command -v protoc >/dev/null 2>&1; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
  log "installing protobuf-compiler"
  "${SUDO[@]}" apt-get update -qq >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends protobuf-compiler >&2
fi
log "$(protoc --version)"

# --- protoc-gen-swift -----------------------------------------------------------
swift package resolve --scratch-path "$scratch" >&2
checkout="$scratch/checkouts/swift-protobuf"
[ -f "$checkout/Package.swift" ] || { log "no swift-protobuf checkout at $checkout"; exit 1; }
version="$(git -C "$checkout" describe --tags --exact-match 2>/dev/null || git -C "$checkout" rev-parse HEAD)"
plugin_build="$scratch/protoc-gen-swift"
log "building protoc-gen-swift ($version) in $plugin_build (slow the first time)"
swift build -c release --product protoc-gen-swift \
  --package-path "$checkout" --scratch-path "$plugin_build" >&2
plugin="$(swift build -c release --package-path "$checkout" --scratch-path "$plugin_build" --show-bin-path)/protoc-gen-swift"
[ -x "$plugin" ] || { log "missing $plugin"; exit 1; }
log "$("$plugin" --version)"

# --- generate -----------------------------------------------------------------
for set in "${PROTO_SETS[@]}"; do
  IFS='|' read -r root out opts files <<<"$set"
  mkdir -p "$out"
  swift_opts=()
  IFS=',' read -r -a opt_list <<<"$opts"
  for o in "${opt_list[@]}"; do swift_opts+=("--swift_opt=$o"); done
  read -r -a file_list <<<"$files"
  log "protoc -I $root → $out: ${file_list[*]}"
  protoc --plugin=protoc-gen-swift="$plugin" -I "$root" \
    "${swift_opts[@]}" --swift_out="$out" "${file_list[@]}"
done
log "done"
