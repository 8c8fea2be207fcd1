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
# The tests' output goes to the terminal and to a log; a failed run ends with
# its failures gathered, so the last lines of a long log say what failed.
log="$(mktemp /tmp/ferret-test-XXXXXX.log)"
status=0
swift test --skip-build "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== failed ($status): the failures of this run (full log: $log)"
  grep -E ": error: |Fatal error|exited with unexpected signal" "$log" | cut -c1-600 | tail -40 || true
fi
exit "$status"
