#!/usr/bin/env python3
"""Find RIP-relative references to Go runtime globals in runtime functions.

Research helper for Ferret issue #8 (globals in stripped binaries). Needs an
UNSTRIPPED binary (objdump resolves `# addr <sym+off>` from .symtab); the
output is the "signature" the agent would apply to a stripped binary:

    (function, operand index, mnemonic, direction, symbol+offset)

operand index = position of the operand among ALL rip-relative memory operands
of that function, in instruction order (LEA included; call/jmp rel32 are NOT
memory operands and are not counted).

Usage:
  globals_extract.py dump BIN FUNC            # every rip-relative operand of FUNC
  globals_extract.py sigs BIN [FUNC...]       # wanted-global operands in FUNCs
  globals_extract.py refs BIN                 # which functions reference each wanted global
  globals_extract.py compare BIN_A BIN_B ...  # are signatures identical across binaries?
  globals_extract.py table BIN > vX.json      # RECOMMENDED sources -> absolute indices
  globals_extract.py resolve STRIPPED vX.json [UNSTRIPPED_TWIN]
                                              # pclntab + decode, like the agent would

One objdump pass per binary (~1 s for a 10 MB binary); results cached in-process.
"""
import json
import re
import subprocess
import sys
from collections import defaultdict

WANTED = [
    "runtime.sched", "runtime.allgs", "runtime.allglen", "runtime.allp",
    "runtime.allm", "runtime.memstats", "runtime.gcController",
    "runtime.mheap_", "runtime.ncgocall", "runtime.gomaxprocs", "runtime.work",
    # idle extra Ms (cgo callbacks): extraMCount up to Go 1.20, extraMLength after
    "runtime.extraMCount", "runtime.extraMLength",
]

CANDIDATES = [
    "runtime.schedtrace", "runtime.allgadd", "runtime.mexit",
    "runtime.printScavTrace", "runtime.gcMarkTermination", "runtime.gcStart",
    "runtime.procresize", "runtime.forEachG", "runtime.checkdead",
    "runtime.startTheWorldWithSema", "runtime.stopTheWorldWithSema",
    "runtime.gcinit", "runtime.mcommoninit", "runtime.gcBgMarkWorker",
    "runtime.readmemstats_m",
    # added after a full reference scan (all always linked in a fmt-only program)
    "runtime.forEachGRace", "runtime.gcenable", "runtime.mallocinit",
    "runtime.gcSweep", "runtime.gcResetMarkState", "runtime.schedinit",
    "runtime.sysmon", "runtime.stackalloc", "runtime.recordspan",
    # extra-M counters (linked in static non-cgo programs too)
    "runtime.needm", "runtime.oneNewExtraM", "runtime.newextram", "runtime.getExtraM",
]

PREFIXES = {"lock", "rep", "repz", "repnz", "repe", "repne", "data16",
            "cs", "ds", "notrack", "bnd", "rex", "rex.W", "addr32"}

FUNC_RE = re.compile(r"^([0-9a-f]+) <(.+)>:$")
INSN_RE = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
CMT_RE = re.compile(r"#\s*(?:0x)?([0-9a-f]+)(?:\s*<([^>]+)>)?\s*$")
SYM_RE = re.compile(r"^(.*?)(?:\+0x([0-9a-f]+))?$")

_cache = {}


def disassemble(binary):
    """Return {func: [insn dicts]} for the whole binary (one objdump run)."""
    if binary in _cache:
        return _cache[binary]
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w", binary],
                         check=True, capture_output=True, text=True).stdout
    funcs = defaultdict(list)
    cur = None
    for line in out.splitlines():
        m = FUNC_RE.match(line)
        if m:
            cur = m.group(2)
            funcs[cur]  # create
            continue
        if cur is None:
            continue
        m = INSN_RE.match(line)
        if not m:
            continue
        addr, text = int(m.group(1), 16), m.group(2).strip()
        funcs[cur].append((addr, text))
    _cache[binary] = funcs
    return funcs


def rip_operands(binary, func):
    """All rip-relative memory operands of func, in instruction order."""
    insns = disassemble(binary).get(func)
    if insns is None:
        return None
    res = []
    start = insns[0][0] if insns else 0
    for addr, text in insns:
        if "(%rip)" not in text:
            continue
        c = CMT_RE.search(text)
        body = text[:c.start()].strip() if c else text
        toks = body.split()
        i = 0
        while i < len(toks) - 1 and toks[i] in PREFIXES:
            i += 1
        mnem = " ".join(toks[:i + 1])
        ops = " ".join(toks[i + 1:])
        # AT&T: destination is the last operand.
        direction = "dst" if ops.endswith("(%rip)") else "src"
        sym, off, target = None, 0, None
        if c:
            target = int(c.group(1), 16)
            if c.group(2):
                sm = SYM_RE.match(c.group(2))
                sym = sm.group(1)
                off = int(sm.group(2), 16) if sm.group(2) else 0
        res.append(dict(idx=len(res), pc=addr, foff=addr - start, mnem=mnem,
                        dir=direction, ops=ops, target=target, sym=sym, off=off))
    return res


def sigs(binary, funcs=CANDIDATES, wanted=WANTED):
    """{global: [(func, idx, mnem, dir, off)]}; missing funcs -> '__missing__'."""
    out = defaultdict(list)
    for f in funcs:
        ops = rip_operands(binary, f)
        if ops is None:
            out["__missing__"].append(f)
            continue
        for o in ops:
            if o["sym"] in wanted:
                out[o["sym"]].append((f, o["idx"], o["mnem"], o["dir"], o["off"]))
    return out


def refs(binary, wanted=WANTED):
    """For each wanted global: {func: count} over all runtime.* functions."""
    res = {w: defaultdict(int) for w in wanted}
    for f in disassemble(binary):
        for o in rip_operands(binary, f):
            if o["sym"] in res:
                res[o["sym"]][f] += 1
    return res


def compare(binaries, funcs=CANDIDATES):
    """Per function: is the full wanted-signature list identical across binaries?"""
    rows = []
    for f in funcs:
        seen = []
        for b in binaries:
            ops = rip_operands(b, f)
            if ops is None:
                seen.append(None)
                continue
            seen.append(tuple((o["idx"], o["mnem"], o["dir"], o["sym"], o["off"])
                              for o in ops if o["sym"] in WANTED))
        total = [None if rip_operands(b, f) is None else len(rip_operands(b, f))
                 for b in binaries]
        rows.append((f, all(s == seen[0] for s in seen), total))
    return rows


# ---------------------------------------------------------------------------
# Recommended sources: (global, function, k) = the k-th operand of `function`
# that targets `global` (k counted among that global's operands only). The
# `table` command turns these into absolute operand indices for one version.
RECOMMENDED = [
    ("runtime.sched", "runtime.mcommoninit", 0),     # lea sched.lock
    ("runtime.sched", "runtime.mexit", 0),           # lea sched.lock
    ("runtime.sched", "runtime.schedtrace", 0),      # lea sched.lock
    ("runtime.allgs", "runtime.forEachG", 0),        # mov allgs.array
    ("runtime.allgs", "runtime.allgadd", 0),         # mov allgs.{len|cap}
    ("runtime.allglen", "runtime.allgadd", 0),       # lea (atomic store)
    ("runtime.allglen", "runtime.forEachGRace", 0),  # mov (atomic load)
    ("runtime.allp", "runtime.procresize", 3),       # mov allp.array
    ("runtime.allp", "runtime.checkdead", 0),        # mov allp.array
    ("runtime.allp", "runtime.stopTheWorldWithSema", 0),
    ("runtime.allm", "runtime.mexit", 0),            # lea &allm
    ("runtime.allm", "runtime.mcommoninit", 0),      # mov allm
    ("runtime.allm", "runtime.schedtrace", 0),       # mov allm
    ("runtime.memstats", "runtime.gcenable", 0),     # movb $1, memstats.enablegc
    ("runtime.memstats", "runtime.recordspan", 0),   # lea &memstats.other_sys
    ("runtime.memstats", "runtime.stackalloc", 0),   # lea &memstats.stacks_sys
    ("runtime.gcController", "runtime.gcinit", 0),   # lea &gcController
    ("runtime.gcController", "runtime.printScavTrace", 0),
    ("runtime.gcController", "runtime.gcResetMarkState", 0),
    ("runtime.mheap_", "runtime.gcResetMarkState", 0),  # lea &mheap_.lock (+0)
    ("runtime.mheap_", "runtime.gcSweep", 0),           # lea &mheap_.lock (+0)
    ("runtime.mheap_", "runtime.mallocinit", 0),        # lea &mheap_ (+0)
    ("runtime.ncgocall", "runtime.mexit", 0),        # lea &ncgocall (only source)
    ("runtime.gomaxprocs", "runtime.procresize", 0), # mov gomaxprocs (32-bit)
    ("runtime.gomaxprocs", "runtime.sysmon", 0),
    ("runtime.gomaxprocs", "runtime.stopTheWorldWithSema", 0),
    ("runtime.gomaxprocs", "runtime.startTheWorldWithSema", 0),
    ("runtime.work", "runtime.gcinit", 0),           # mov %rax, work.startSema?
    ("runtime.work", "runtime.gcResetMarkState", 0),
    ("runtime.work", "runtime.gcStart", 0),
    # A version has one of the two extra-M globals; rows for the other are dropped.
    ("runtime.extraMCount", "runtime.checkdead", 0),     # cmpl $0 (Go 1.19)
    ("runtime.extraMCount", "runtime.oneNewExtraM", 0),  # incl
    ("runtime.extraMCount", "runtime.needm", 0),         # decl
    ("runtime.extraMLength", "runtime.checkdead", 0),    # mov (Go 1.21+)
    ("runtime.extraMLength", "runtime.newextram", 0),    # mov
    ("runtime.extraMLength", "runtime.getExtraM", 0),    # lea (atomic)
]


# Anchors: (global, anchor global). runtime.ncgocall has one always-linked code
# reference (mexit), so it gets a second, independent source: its distance from
# runtime.allglen, which is the same in every program of one Go version (the
# linker lays the runtime's 8-byte .noptrbss variables out in one order; checked
# on 10-12 programs per version, cgo and static). A row says: global = anchor's
# base + off (signed); function "@anchor", mnemonic "at".
# The idle extra-M count (4 bytes) likewise sits at a fixed distance from
# runtime.gomaxprocs (-32 in 1.19, -20 in 1.21-1.22, -16 from 1.23); its value
# (0 or 1 in most programs) cannot tell it from its neighbours, its place can.
ANCHORS = [("runtime.ncgocall", "runtime.allglen"),
           ("runtime.extraMCount", "runtime.gomaxprocs"),
           ("runtime.extraMLength", "runtime.gomaxprocs")]

# Neighbours: (global, neighbour) whose value the validator can check against a
# fact of the process. The runtime's 4-byte .noptrbss variables are laid out by
# name, so runtime.argc sits at a fixed distance from runtime.gomaxprocs in one
# Go version (-40 in 1.19, -4 from 1.21); argc is the length of
# /proc/PID/cmdline. gomaxprocs itself equals len(allp), a small number other
# words may hold too; its neighbour pins the address. A row says: the int32 at
# global + off (signed) is the neighbour; function "=neighbour", mnemonic "fact".
NEIGHBOURS = [("runtime.gomaxprocs", "runtime.argc")]


def symbol_sizes(binary):
    """{name: (addr, size)} for data symbols, from nm -S (unstripped only)."""
    out = subprocess.run(["nm", "-S", binary], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        p = line.split(None, 3)
        if len(p) == 4 and p[2] in "bBdDrR":
            res[p[3]] = (int(p[0], 16), int(p[1], 16))
    return res


def table(binary, recommended=RECOMMENDED):
    """Absolute signatures for this binary's Go version, with sanity checks."""
    sizes = symbol_sizes(binary)
    rows = []
    for g, f, k in recommended:
        ops = rip_operands(binary, f) or []
        hits = [o for o in ops if o["sym"] == g]
        if k >= len(hits):
            if g not in sizes:  # the global does not exist in this version
                continue
            rows.append(dict(glob=g, func=f, k=k, idx=None))
            continue
        o = hits[k]
        size = sizes.get(g, (0, 0))[1]
        rows.append(dict(glob=g, func=f, k=k, idx=o["idx"], mnem=o["mnem"],
                         dir=o["dir"], off=o["off"], nops=len(ops),
                         in_bounds=o["off"] < size or size == 0, gsize=size))
    addrs = symbol_addresses(binary)
    for g, neighbour in NEIGHBOURS:
        if g in addrs and neighbour in addrs:
            rows.append(dict(glob=g, func="=" + neighbour, k=0, idx=0, mnem="fact", dir="src",
                             off=addrs[neighbour] - addrs[g], nops=1, in_bounds=True,
                             gsize=sizes.get(g, (0, 0))[1]))
    for g, anchor in ANCHORS:
        if g in addrs and anchor in addrs:
            rows.append(dict(glob=g, func="@" + anchor, k=0, idx=0, mnem="at", dir="src",
                             off=addrs[g] - addrs[anchor], nops=1, in_bounds=True,
                             gsize=sizes.get(g, (0, 0))[1]))
    return rows


def symbol_addresses(binary):
    """{name: address} from nm (unstripped only)."""
    out = subprocess.run(["nm", binary], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3:
            res[p[2]] = int(p[0], 16)
    return res


# --- minimal ELF + pclntab reader (what the agent does on stripped binaries) --
import struct


def elf_sections(data):
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
            for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    secs = {}
    for h in hdrs:
        name = data[stroff + h[0]:data.index(b"\0", stroff + h[0])].decode()
        secs[name] = dict(addr=h[3], off=h[4], size=h[5])
    return secs


def pclntab_funcs(binary):
    """{name: (start, end)} from .gopclntab (Go 1.18+ layout, magic fff0/fff1)."""
    data = open(binary, "rb").read()
    secs = elf_sections(data)
    sec = secs.get(".gopclntab") or secs.get(".data.rel.ro.gopclntab")
    if sec:
        base = sec["off"]
    else:  # PIE <= 1.25 may lack a named section: scan for the header
        base = -1
        for magic in (b"\xf1\xff\xff\xff\x00\x00\x01\x08",
                      b"\xf0\xff\xff\xff\x00\x00\x01\x08"):
            base = data.find(magic)
            if base >= 0:
                break
    magic, = struct.unpack_from("<I", data, base)
    assert magic in (0xfffffff0, 0xfffffff1), hex(magic)
    nfunc, _nfiles, text_start, funcname_off, _cu, _file, _pc, pcln_off = \
        struct.unpack_from("<8Q", data, base + 8)
    if text_start == 0:  # Go 1.26+ leaves pcHeader.textStart 0 in the file
        text_start = secs[".text"]["addr"]
    ftab = base + pcln_off
    res = {}
    entries = [struct.unpack_from("<II", data, ftab + 8 * i) for i in range(nfunc + 1)]
    for i in range(nfunc):
        entryoff, funcoff = entries[i]
        name_off, = struct.unpack_from("<i", data, base + pcln_off + funcoff + 4)
        p = base + funcname_off + name_off
        name = data[p:data.index(b"\0", p)].decode(errors="replace")
        res[name] = (text_start + entryoff, text_start + entries[i + 1][0])
    return res


def rip_operands_range(binary, start, end):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w",
                          f"--start-address={start:#x}", f"--stop-address={end:#x}",
                          binary], check=True, capture_output=True, text=True).stdout
    key = (binary, start)
    funcs = defaultdict(list)
    for line in out.splitlines():
        m = INSN_RE.match(line)
        if m and not FUNC_RE.match(line):
            funcs[key].append((int(m.group(1), 16), m.group(2).strip()))
    _cache.setdefault(binary + "#range", {}).update(funcs)
    saved = _cache.get(binary)
    _cache[binary] = {key: funcs[key]}
    try:
        return rip_operands(binary, key)
    finally:
        if saved is None:
            del _cache[binary]
        else:
            _cache[binary] = saved


def resolve(binary, rows):
    """Apply a `table` (list of rows) to a (stripped) binary: {global: [base...]}."""
    funcs = pclntab_funcs(binary)
    bases = defaultdict(list)
    for r in rows:
        if r.get("idx") is None:
            continue
        if r["func"] not in funcs:
            bases[r["glob"]].append((r["func"], "missing-func"))
            continue
        ops = rip_operands_range(binary, *funcs[r["func"]])
        if r["idx"] >= len(ops) or len(ops) != r["nops"]:
            bases[r["glob"]].append((r["func"], f"op-count {len(ops)}!={r['nops']}"))
            continue
        o = ops[r["idx"]]
        if o["mnem"] != r["mnem"]:
            bases[r["glob"]].append((r["func"], f"mnem {o['mnem']}!={r['mnem']}"))
            continue
        bases[r["glob"]].append((r["func"], o["target"] - r["off"]))
    return bases


def fmt_sym(sym, off):
    return f"{sym}+{off:#x}" if off else sym


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    cmd, binary = argv[1], argv[2]
    if cmd == "dump":
        for o in rip_operands(binary, argv[3]) or []:
            print(f"{o['idx']:3d} +{o['foff']:#06x} {o['mnem']:8s} {o['dir']} "
                  f"{o['ops']:40s} {fmt_sym(o['sym'], o['off']) if o['sym'] else ''}")
    elif cmd == "sigs":
        funcs = argv[3:] or CANDIDATES
        s = sigs(binary, funcs)
        for g in WANTED + ["__missing__"]:
            if g in s:
                print(g)
                for t in s[g]:
                    print("   ", t if g == "__missing__" else
                          f"{t[0]}#{t[1]} {t[2]} {t[3]} +{t[4]:#x}")
    elif cmd == "refs":
        for g, fs in refs(binary).items():
            top = sorted(fs.items(), key=lambda kv: -kv[1])
            print(f"{g}: {len(top)} funcs: " +
                  ", ".join(f"{f}({n})" for f, n in top[:40]))
    elif cmd == "compare":
        for f, same, totals in compare(argv[2:]):
            print(f"{'SAME' if same else 'DIFF'} {f} total-rip-ops={totals}")
    elif cmd == "table":
        print(json.dumps(table(binary), indent=1))
    elif cmd == "resolve":  # resolve STRIPPED_BIN TABLE.json
        rows = json.load(open(argv[3]))
        syms = {}
        if len(argv) > 4:  # optional unstripped twin for ground truth
            syms = symbol_sizes(argv[4])
        for g, lst in resolve(binary, rows).items():
            vals = {v for _, v in lst if isinstance(v, int)}
            verdict = "AGREE" if len(vals) == 1 else "CONFLICT"
            truth = ""
            if g in syms:
                truth = " truth=%#x %s" % (syms[g][0], "OK" if vals == {syms[g][0]} else "MISMATCH")
            print(f"{verdict:8s} {g:22s} " + ", ".join(
                f"{f.split('.',1)[1]}={v:#x}" if isinstance(v, int) else f"{f}:{v}"
                for f, v in lst) + truth)
    elif cmd == "json":
        print(json.dumps(sigs(binary, argv[3:] or CANDIDATES)))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
