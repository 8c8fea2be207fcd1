#!/usr/bin/env bash
# One command from a fresh machine to the whole test suite: install what is
# missing (Debian packages and the Go toolchains 1.19, 1.21-1.27 the
# introspection tests build fixtures with), build every product (the tests
# drive the real `ferret` binary and
# the plugin libraries), then run the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --go-toolchains
bash scripts/build.sh debug >/dev/null
swift build --build-tests
swift test --skip-build "$@"
