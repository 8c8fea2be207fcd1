#!/usr/bin/env python3
"""Generates Packages/FerretGo/Sources/GoBinaryFormat/Layouts/goroutines.json: per Go
version (one row per toolchain in /opt/ferret-go/toolchains.txt, keyed by minor
version "go1.27"), the runtime's own names for goroutine states and wait reasons
and the function IDs the census needs, read from that toolchain's runtime sources:

- waitReasonStrings (runtime/runtime2.go): the wait reason's value is its place in
  the `waitReason = iota` const block, its text the array's entry;
- gStatusStrings (runtime/traceback.go) with the _G* constants (runtime2.go);
- FuncIDWrapper (internal/abi/symtab.go, runtime/symtab.go before 1.21): the
  funcID of compiler-made wrappers, which tracebacks leave out.

Usage: tools/goroutinegen/generate.py [--check]   (--check: fail if the committed
file differs from what the toolchains give.)
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "Packages/FerretGo/Sources/GoBinaryFormat/Layouts/goroutines.json")
LIST = "/opt/ferret-go/toolchains.txt"


def const_block(text, start_pattern):
    """The identifiers of the iota const block whose first spec matches start_pattern,
    in order, with their values (iota, or an explicit integer)."""
    m = re.search(start_pattern, text, re.M)
    if not m:
        raise SystemExit(f"generate.py: no match for {start_pattern!r}")
    out = []
    iota = 0
    for line in text[m.start():].splitlines():
        s = line.split("//", 1)[0].strip()
        if s == ")":
            break
        if not s:
            continue
        name = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", s).group(1)
        explicit = re.search(r"=\s*(0x[0-9a-fA-F]+|\d+)\s*$", s)
        if explicit and "iota" not in s:
            out.append((name, int(explicit.group(1), 0)))
        else:
            out.append((name, iota))
        iota += 1
    return out


def array_entries(text, var):
    """`var NAME = [...]string{ key: "value", ... }` as a dict."""
    m = re.search(r"var " + re.escape(var) + r" = \[\.\.\.\]string\{(.*?)\n\}", text, re.S)
    if not m:
        raise SystemExit(f"generate.py: no {var}")
    return {k: v for k, v in re.findall(r"(\w+):\s*\"((?:[^\"\\]|\\.)*)\"", m.group(1))}


def row(goroot):
    rt = os.path.join(goroot, "src/runtime")
    runtime2 = open(os.path.join(rt, "runtime2.go")).read()
    traceback = open(os.path.join(rt, "traceback.go")).read()
    reasons = const_block(runtime2, r"^\s*waitReasonZero\s+waitReason = iota")
    strings = array_entries(runtime2, "waitReasonStrings")
    wait = [""] * (max(v for _, v in reasons) + 1)
    for name, value in reasons:
        wait[value] = strings.get(name, "")
    statuses = dict(const_block(runtime2, r"^\s*_Gidle = iota"))
    names = array_entries(traceback, "gStatusStrings")
    status = {str(statuses[k]): v for k, v in names.items()}
    consts = {k[2:]: v for k, v in statuses.items() if k.startswith("_G")}
    abi = os.path.join(goroot, "src/internal/abi/symtab.go")
    if os.path.exists(abi):
        ids = dict(const_block(open(abi).read(), r"^\s*FuncIDNormal FuncID = iota"))
        wrapper = ids["FuncIDWrapper"]
    else:
        ids = dict(const_block(open(os.path.join(rt, "symtab.go")).read(), r"^\s*funcID_normal funcID = iota"))
        wrapper = ids["funcID_wrapper"]
    return {"waitReasons": wait, "statusNames": status, "statuses": consts, "funcIDWrapper": wrapper}


def main():
    if not os.path.exists(LIST):
        raise SystemExit(f"generate.py: {LIST} is missing: run scripts/setup.sh --go-toolchains")
    versions = {}
    for line in open(LIST):
        f = line.split()
        if len(f) < 2 or line.startswith("#"):
            continue
        version = f[0] if f[0].startswith("go") else "go" + f[0]
        minor = ".".join(version.split(".")[:2])
        goroot = os.path.dirname(os.path.dirname(os.path.realpath(f[1])))
        r = row(goroot)
        r["from"] = version
        versions[minor] = r
    doc = {"generator": "tools/goroutinegen/generate.py (runtime sources of each toolchain)", "versions": versions}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        if open(OUT).read() != text:
            raise SystemExit(f"generate.py: {OUT} differs from the toolchains' sources: regenerate it")
        print("generate.py: up to date")
        return
    open(OUT, "w").write(text)
    print(f"generate.py: wrote {OUT} ({len(versions)} versions)")


if __name__ == "__main__":
    main()
