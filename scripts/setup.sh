#!/usr/bin/env bash
# Install what a fresh machine lacks to build and test Ferret.
#
# A fresh machine has the Swift toolchain (/opt/swift), gcc, python3 and pip.
# This script adds the Debian packages below (only those missing), a Python
# venv with the OTLP test receiver's opentelemetry-proto and, with
# --go-toolchains, the pinned Go toolchains used by the multi-version tests
# (scripts/install-go-toolchains.sh), and with --bench the peers and load
# generator the benchmarks use (bench/run.sh): collectd-core, linux-perf,
# golang-github-prometheus-client-golang-dev and bpftrace.
# Idempotent; fast when all is present.
#
# Usage: scripts/setup.sh [--go-toolchains] [--bench]
set -euo pipefail

# Debian packages the project needs. Add new ones here.
APT_PACKAGES=(
  libyaml-dev
  libelf-dev
  libdw-dev
  zlib1g-dev
  golang-go
  pkg-config
  procps
  # Real servers the sink tests deliver to (started by the tests on loopback,
  # never as system services): Prometheus 2.42 scrapes the prometheus sink,
  # InfluxDB 1.6 takes the influxdb sink's line protocol.
  prometheus
  influxdb
  # The http_tracer plugin (issue #6): libbpf loads its BPF objects (compiled
  # from source by the toolchain's clang at build time), capstone decodes Go
  # function bodies to find every RET, bpftool inspects what is attached, and
  # binutils' objdump is the RET finder's test oracle.
  libbpf-dev
  libcapstone-dev
  bpftool
  binutils
  # wrk drives the http_tracer's acceptance load (20,000 requests per build).
  wrk
  # The dashboard's browser test (issue #9): a real headless chromium, driven
  # through chromedriver by selenium (PyPI, in the venv below); its fonts are
  # only recommended, and this script installs without recommends.
  chromium
  chromium-driver
  fonts-liberation
  # capsh runs the agent without some capabilities (the unreadable-root test of
  # issue #16: no CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH).
  libcap2-bin
  # The plugin helper (ferret-plugin-host, issue #18) keeps only the capabilities
  # a plugin's manifest names, through libcap.
  libcap-dev
)

# Only for the benchmarks (--bench): collectd, the peer the agent's footprint is
# measured against; linux-perf (`perf record`), the
# peer the CPU profiler is measured against; Prometheus' Go client library, the
# peer the prometheus sink's scrapes are measured against (bench/go/promexporter).
BENCH_APT_PACKAGES=(
  collectd-core
  linux-perf
  golang-github-prometheus-client-golang-dev
  # The floor of the http_tracer benchmark: an empty uprobe on the same function.
  bpftrace
)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'setup: %s\n' "$*" >&2; }

usage() {
  echo "usage: $0 [--go-toolchains] [--bench]" >&2
}

want_go_toolchains=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --go-toolchains) want_go_toolchains=1 ;;
    --bench) want_bench=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done

# --- Debian packages -------------------------------------------------------
wanted=("${APT_PACKAGES[@]}")
if [ "$want_bench" -eq 1 ]; then
  wanted+=("${BENCH_APT_PACKAGES[@]}")
fi
missing=()
for pkg in "${wanted[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  if [ "$status" != "installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  log "apt packages present: ${wanted[*]}"
else
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
  fi
  log "apt-get update (missing: ${missing[*]})"
  "${SUDO[@]}" apt-get update -qq >&2
  log "apt-get install ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- Python venv for the tests' Python helpers ------------------------------
# The otlp sink's acceptance test decodes what the agent sends with PyPI's
# opentelemetry-proto (the reference Python bindings; protobuf comes with it)
# (Tests/FerretCoreTests/Fixtures/otlp_receiver.py); the dashboard's browser
# test drives chromium with selenium (Fixtures/browser/dashboard_check.py).
# Both run in a venv of their own, found at ${FERRET_PY_VENV:-/opt/ferret-py}.
OTLP_PROTO_VERSION=1.45.2
SELENIUM_VERSION=4.51.0
PY_VENV="${FERRET_PY_VENV:-/opt/ferret-py}"
if "$PY_VENV/bin/python" - "$OTLP_PROTO_VERSION" "$SELENIUM_VERSION" >/dev/null 2>&1 <<'PY'
import sys, importlib.metadata as m
import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2
import selenium.webdriver
sys.exit(m.version("opentelemetry-proto") != sys.argv[1] or m.version("selenium") != sys.argv[2])
PY
then
  log "python venv present: $PY_VENV (opentelemetry-proto $OTLP_PROTO_VERSION, selenium $SELENIUM_VERSION)"
else
  if ! "$PY_VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
    log "creating python venv at $PY_VENV"
    python3 -m venv "$PY_VENV"
  fi
  log "pip install opentelemetry-proto==$OTLP_PROTO_VERSION selenium==$SELENIUM_VERSION into $PY_VENV"
  "$PY_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    "opentelemetry-proto==$OTLP_PROTO_VERSION" "selenium==$SELENIUM_VERSION" >&2
fi

# --- Optional: pinned Go toolchains ----------------------------------------
if [ "$want_go_toolchains" -eq 1 ]; then
  log "go toolchains: running scripts/install-go-toolchains.sh"
  "$SCRIPT_DIR/install-go-toolchains.sh"
else
  log "go toolchains: skipped (pass --go-toolchains to install them)"
fi

log "done"
