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
#   3. dumps the OTLP definitions from PyPI's opentelemetry-proto when the venv
#      of scripts/setup.sh has it (see PROTO_SETS);
#   4. runs protoc for each entry of PROTO_SETS below.
#
# Usage: scripts/gen-protos.sh [--scratch-path DIR]   (default: .build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One entry per set of protos: "<proto source>|<output folder>|<swift options>|<files...>"
# with files relative to the source (space-separated) and swift options as
# comma-separated protoc-gen-swift options (Visibility=Public, FileNaming=...).
# The source is a folder of .proto files (protoc -I) or a FileDescriptorSet
# file ending in .pb (protoc --descriptor_set_in).
#
# OTLP: the definitions are those of PyPI's opentelemetry-proto package (the
# version pinned in scripts/setup.sh), dumped from its _pb2 modules into
# Sources/OTLP/proto/opentelemetry-proto.pb by dump-descriptors.py beside it
# (a step below; the committed .pb is used when that venv is missing). Only the
# messages are generated; the collector services need no gRPC code.
OTLP_PB=Sources/OTLP/proto/opentelemetry-proto.pb
OTLP_FILES="opentelemetry/proto/common/v1/common.proto opentelemetry/proto/resource/v1/resource.proto"
OTLP_FILES+=" opentelemetry/proto/metrics/v1/metrics.proto opentelemetry/proto/trace/v1/trace.proto"
OTLP_FILES+=" opentelemetry/proto/logs/v1/logs.proto"
OTLP_FILES+=" opentelemetry/proto/collector/metrics/v1/metrics_service.proto"
OTLP_FILES+=" opentelemetry/proto/collector/trace/v1/trace_service.proto"
OTLP_FILES+=" opentelemetry/proto/collector/logs/v1/logs_service.proto"
PROTO_SETS=(
  "Sources/Pprof/proto|Sources/Pprof/Generated|Visibility=Public|profile.proto"
  "$OTLP_PB|Sources/OTLP/Generated|Visibility=Public,FileNaming=PathToUnderscores|$OTLP_FILES"
)

scratch=.build
while [ $# -gt 0 ]; do
  case "$1" in
    --scratch-path) scratch="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
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

# --- OTLP descriptors from opentelemetry-proto ------------------------------
py="${FERRET_PY_VENV:-/opt/ferret-py}/bin/python"
otlp_version="$(sed -n 's/^OTLP_PROTO_VERSION=//p' scripts/setup.sh)"
if "$py" -c 'import opentelemetry.proto' >/dev/null 2>&1; then
  log "dumping opentelemetry-proto $otlp_version descriptors to $OTLP_PB"
  "$py" Sources/OTLP/proto/dump-descriptors.py "$otlp_version" "$OTLP_PB" >/dev/null
else
  log "no opentelemetry-proto in $py (scripts/setup.sh installs it): using the committed $OTLP_PB"
fi

# --- generate -----------------------------------------------------------------
for set in "${PROTO_SETS[@]}"; do
  IFS='|' read -r root out opts files <<<"$set"
  mkdir -p "$out"
  swift_opts=()
  IFS=',' read -r -a opt_list <<<"$opts"
  for o in "${opt_list[@]}"; do swift_opts+=("--swift_opt=$o"); done
  read -r -a file_list <<<"$files"
  if [[ "$root" == *.pb ]]; then source_opt=(--descriptor_set_in="$root"); else source_opt=(-I "$root"); fi
  log "protoc ${source_opt[*]} → $out: ${file_list[*]}"
  protoc --plugin=protoc-gen-swift="$plugin" "${source_opt[@]}" \
    "${swift_opts[@]}" --swift_out="$out" "${file_list[@]}"
done
log "done"
