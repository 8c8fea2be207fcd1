#!/usr/bin/env bash
# Regenerates Packages/FerretGo/Sources/GoBinaryFormat/Layouts/layouts.json, the per-Go-version
# struct layout table, from the DWARF of tools/layoutgen/refprog built with every
# toolchain in /opt/ferret-go/toolchains.txt. See tools/layoutgen/README.md.
#
#   tools/layoutgen/generate.sh            # uses .build as the scratch path
#   SCRATCH=.build-dwarf tools/layoutgen/generate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ ! -r /opt/ferret-go/toolchains.txt ]]; then
    echo "generate.sh: /opt/ferret-go/toolchains.txt is missing: run scripts/setup.sh --go-toolchains" >&2
    exit 1
fi

FERRET_REGENERATE_LAYOUTS=1 swift test --scratch-path "${SCRATCH:-.build}" \
    --filter 'GoIntrospectionTests.LayoutTableTests/testRegenerateLayoutTable'

echo "generate.sh: now run the GoIntrospection tests and review 'git diff Packages/FerretGo/Sources/GoBinaryFormat/Layouts/layouts.json'"
