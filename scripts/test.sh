#!/usr/bin/env bash
# One command from a fresh machine to the whole test suite: install what is
# missing, build every product (the tests drive the real `ferret` binary and
# the plugin libraries), then run the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/build.sh debug >/dev/null
swift build --build-tests
swift test --skip-build "$@"
