import Foundation

/// One check of the runtime globals against what a live process shows.
public struct GlobalsCheck: Sendable, Equatable, CustomStringConvertible {
    /// "gomaxprocs = len(allp)"
    public var name: String
    /// The globals whose addresses the check vouches for.
    public var globals: [String]
    public var passed: Bool
    /// The figures compared ("gomaxprocs 2, len(allp) 2").
    public var detail: String

    public var description: String { "\(passed ? "ok" : "FAILED") \(name): \(detail)" }
}

/// The outcome of ``RuntimeGlobalsValidator/validate(pid:binary:globals:bias:attempts:)``.
public struct GlobalsValidation: Sendable {
    public var checks: [GlobalsCheck]
    /// Attempts taken (the figures race with the running program; a check that
    /// fails is retried, and a failure stands only if every attempt fails).
    public var attempts: Int

    public var passed: Bool { checks.allSatisfy(\.passed) }
    /// The first failed check as one line, or nil.
    public var failure: String? { checks.first { !$0.passed }.map { "\($0.name): \($0.detail)" } }

    /// The checks that vouch for `global`.
    public func checks(for global: String) -> [GlobalsCheck] { checks.filter { $0.globals.contains(global) } }
}

/// Checks the addresses of runtime globals against facts the running process
/// shows before any figure is read from them (issue #8): a global found in the
/// code of a stripped binary is trusted only when these hold.
///
/// - every global lies in a writable mapping of the process, aligned;
/// - `gomaxprocs` equals `len(allp)`, its neighbour `runtime.argc` (the
///   table's fact row) is the length of /proc/PID/cmdline, and every `allp[i]`
///   is a P whose `id` is `i`;
/// - the `allm` list has `sched.mnext − sched.nmfreed` Ms, each in a writable
///   mapping;
/// - the thread count read through `sched` (minus idle extra Ms) equals the
///   Ms running on a thread of /proc/PID/task (their ids mapped from the
///   program's PID namespace to the host's through NSpid), and equals the task count when
///   the program was built without cgo (with cgo, C code may start threads of
///   its own, so it may only be smaller);
/// - `ncgocall` is 0 while no M has exited (mexit is its only writer);
/// - `runtime.gcount` (what NumGoroutine returns) is between 1 and `allglen`,
///   idle and spinning counts within the P and M counts;
/// - `len(allgs)` is `allglen` (or one more, mid-append), `allgs[0]` is
///   goroutine 1, sampled Gs have valid statuses, and `allglen` ≥ the
///   goroutine count (≥ 1);
/// - `memstats.enablegc` is set, `work.startSema` is 1 when no GC is starting,
///   `work.cycles` and `mheap_.sweepgen` agree with `memstats.numgc`,
///   `mheap_.pagesInUse` is non-zero and fits the address space, and
///   `gcController.heapMinimum` is 4 MiB × GOGC / 100.
///
/// Every global has at least one check that needs a non-zero value, so an
/// address that slid onto zeroed memory fails. Reads only (process_vm_readv).
public enum RuntimeGlobalsValidator {
    static let maxProcs = 1 << 16
    static let maxMs = 100_000
    /// Gs sampled from each end of allgs.
    static let sampledGs = 32

    /// Validates `globals` (link-time addresses, as the locator returns them)
    /// in process `pid` with load bias `bias`. Checks whose globals were not
    /// found are left out.
    public static func validate(pid: Int32, binary: GoBinary, globals: [RuntimeGlobal], bias: UInt64,
                                attempts: Int = 5) -> GlobalsValidation {
        var last: [GlobalsCheck] = []
        for attempt in 1...max(attempts, 1) {
            last = checkOnce(pid: pid, binary: binary, globals: globals, bias: bias)
            if last.allSatisfy(\.passed) { return GlobalsValidation(checks: last, attempts: attempt) }
            if attempt < attempts { usleep(20_000) }
        }
        return GlobalsValidation(checks: last, attempts: max(attempts, 1))
    }

    private struct Failed: Error { var detail: String }

    static func checkOnce(pid: Int32, binary: GoBinary, globals: [RuntimeGlobal], bias: UInt64) -> [GlobalsCheck] {
        guard let version = binary.goVersion else { return [] }
        var at: [String: UInt64] = [:]
        var size: [String: UInt64] = [:]
        for g in globals { if let a = g.address { at[g.name] = a &+ bias; size[g.name] = g.size ?? 0 } }
        let fields = RuntimeFieldResolver(goVersion: version, dwarf: binary.dwarf)
        defer { binary.releaseDWARF() }
        let memory = ProcessMemory(pid: pid)
        let maps = (try? ProcessMaps.read(pid: pid)) ?? []
        var checks: [GlobalsCheck] = []
        var environment: [String: String] {
            var out: [String: String] = [:]
            let raw = (try? ProcFile.read(HostProc.file(pid, "environ"), pid: pid)) ?? []
            for entry in raw.split(separator: 0) {
                let s = String(decoding: entry, as: UTF8.self)
                if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            }
            return out
        }

        func writable(_ a: UInt64) -> Bool { a != 0 && maps.mapping(containing: a)?.writable == true }
        func field(_ name: String, _ type: String) throws -> RuntimeField {
            do { return try fields.field(name, in: type) } catch { throw Failed(detail: "\(error)") }
        }
        func read(_ f: RuntimeField, base: UInt64) throws -> Int64 {
            do {
                let b = try memory.read(base &+ UInt64(f.offset), count: f.size)
                return f.value(in: b, base: -f.offset) ?? 0
            } catch { throw Failed(detail: "reading \(f.name) at 0x\(String(base &+ UInt64(f.offset), radix: 16)): \(error)") }
        }
        func word(_ a: UInt64) throws -> UInt64 {
            do { return try memory.read(UInt64.self, at: a) } catch {
                throw Failed(detail: "reading 0x\(String(a, radix: 16)): \(error)")
            }
        }
        func check(_ name: String, _ names: [String], _ body: () throws -> (Bool, String)) {
            guard names.allSatisfy({ at[$0] != nil }) else { return }
            do {
                let (ok, detail) = try body()
                checks.append(GlobalsCheck(name: name, globals: names, passed: ok, detail: detail))
            } catch let f as Failed {
                checks.append(GlobalsCheck(name: name, globals: names, passed: false, detail: f.detail))
            } catch {
                checks.append(GlobalsCheck(name: name, globals: names, passed: false, detail: "\(error)"))
            }
        }

        // Placement.
        for (name, a) in at.sorted(by: { $0.key < $1.key }) {
            let s = size[name] ?? 0
            let align: UInt64 = s >= 8 ? 8 : (s >= 4 ? 4 : 1)
            let ok = writable(a) && writable(a &+ max(s, 1) &- 1) && a % align == 0
            checks.append(GlobalsCheck(name: "\(name.dropFirst(8)) is mapped writable and aligned", globals: [name],
                                       passed: ok, detail: "0x\(String(a, radix: 16)) (+\(s))"))
        }

        // gomaxprocs and allp.
        var ps: [UInt64] = []
        check("gomaxprocs = len(allp)", ["runtime.gomaxprocs", "runtime.allp"]) {
            let g = Int64(Int32(truncatingIfNeeded: try word(at["runtime.gomaxprocs"]!)))
            let base = at["runtime.allp"]!
            let (ptr, len, cap) = (try word(base), Int64(bitPattern: try word(base &+ 8)), Int64(bitPattern: try word(base &+ 16)))
            let detail = "gomaxprocs \(g), len(allp) \(len), cap \(cap)"
            guard g >= 1, g <= maxProcs, len == g, cap >= len, writable(ptr) else { return (false, detail) }
            let array = try memory.read(ptr, count: Int(len) * 8)
            ps = (0..<Int(len)).map { array.u64(at: $0 * 8) ?? 0 }
            return (true, detail)
        }
        // gomaxprocs equals len(allp), a small number that other words may hold
        // too: its neighbour in the runtime's layout (the table's fact row) pins it.
        let facts = GlobalReferenceTable.builtIn.sources(goVersion: version)?.sources.filter { $0.neighbour != nil } ?? []
        for fact in facts where fact.neighbour == "runtime.argc" {
            check("the int32 at \(fact.global.dropFirst(8))\(fact.offset < 0 ? "−" : "+")\(fact.offset.magnitude) is argc", [fact.global]) {
                let a = at[fact.global]! &+ UInt64(bitPattern: fact.offset)
                let v = Int64(Int32(truncatingIfNeeded: try word(a & ~7) >> ((a & 7) * 8)))
                let cmdline = (try? ProcFile.read(HostProc.file(pid, "cmdline"), pid: pid)) ?? []
                let argc = cmdline.split(separator: 0, omittingEmptySubsequences: false).count - (cmdline.last == 0 ? 1 : 0)
                return (argc >= 1 && v == Int64(argc), "\(v), /proc/PID/cmdline has \(argc) arguments")
            }
        }
        check("allp[i].id = i", ["runtime.allp"]) {
            guard !ps.isEmpty else { throw Failed(detail: "allp unread") }
            let id = try field("id", "runtime.p"), status = try field("status", "runtime.p")
            for (i, p) in ps.enumerated() {
                guard writable(p) else { return (false, "allp[\(i)] = 0x\(String(p, radix: 16)) is not mapped writable") }
                let (pid_, st) = (try read(id, base: p), try read(status, base: p))
                guard pid_ == i, (0...4).contains(st) else { return (false, "allp[\(i)].id \(pid_), status \(st)") }
            }
            return (true, "\(ps.count) Ps")
        }

        // sched and allm.
        var mcount: Int64 = -1
        var ms: [UInt64] = []
        check("len(allm) = sched.mnext − sched.nmfreed", ["runtime.sched", "runtime.allm"]) {
            let s = at["runtime.sched"]!
            let (mnext, nmfreed) = (try read(try field("mnext", "runtime.schedt"), base: s),
                                    try read(try field("nmfreed", "runtime.schedt"), base: s))
            mcount = mnext &- nmfreed
            let link = try field("alllink", "runtime.m")
            var cur = try word(at["runtime.allm"]!)
            var seen = Set<UInt64>()
            while cur != 0 {
                guard ms.count < maxMs, seen.insert(cur).inserted, writable(cur) else {
                    return (false, "the allm list is not a list of mapped Ms (at 0x\(String(cur, radix: 16)))")
                }
                ms.append(cur)
                cur = UInt64(bitPattern: try read(link, base: cur))
            }
            return (mcount >= 1 && Int64(ms.count) == mcount, "mnext − nmfreed \(mcount), allm \(ms.count) Ms")
        }
        let noCgo = binary.buildInfo?.setting("CGO_ENABLED") == "0"
        // Without cgo there are no extra Ms and the readers do not read the count.
        let extraName = noCgo ? nil : ["runtime.extraMLength", "runtime.extraMCount"].first { at[$0] != nil }
        check("Ms on threads = /proc/PID/task", ["runtime.sched", "runtime.allm"] + (extraName.map { [$0] } ?? [])) {
            guard mcount >= 1, !ms.isEmpty else { throw Failed(detail: "allm unread") }
            // m.procid is the thread id as the program sees it: in a container, an id
            // of its own PID namespace, mapped to the host's through NSpid.
            let threads: ThreadIDMap
            do { threads = try ThreadIDMap.read(pid: pid) } catch { throw Failed(detail: "\(error)") }
            let tids = threads.hostTIDs
            let procid = try field("procid", "runtime.m")
            var live = 0
            for m in ms where threads.hostTID(ofNamespaced: try read(procid, base: m)) != nil { live += 1 }
            let extra = try extraName.map { Int64(Int32(truncatingIfNeeded: try word(at[$0]!) & 0xffff_ffff)) }
            var detail = "Ms \(mcount), on live threads \(live), tasks \(tids.count)"
            if threads.depth > 0 { detail += ", PID namespace depth \(threads.depth)" }
            if let extra { detail += ", idle extra Ms \(extra)" }
            if let extra {
                let os = mcount &- extra
                guard extra >= 0, extra <= mcount, Int64(live) == os else { return (false, detail) }
                return (noCgo ? Int64(tids.count) == os : Int64(tids.count) >= os, detail)
            }
            return (noCgo ? live == tids.count && Int64(live) == mcount : live <= tids.count, detail)
        }

        // ncgocall's value cannot tell it apart from other zero words: its place
        // can. The table's anchor row puts it at a fixed distance from allglen
        // (vouched for by the allgs check) in this Go version's layout.
        let anchors = GlobalReferenceTable.builtIn.sources(goVersion: version)?.sources.filter { $0.anchor != nil } ?? []
        for row in anchors {
            guard let anchor = row.anchor else { continue }
            check("\(row.global.dropFirst(8)) is at \(anchor.dropFirst(8))\(row.offset < 0 ? "−" : "+")\(row.offset.magnitude)", [row.global, anchor]) {
                let want = at[anchor]! &+ UInt64(bitPattern: row.offset)
                return (at[row.global]! == want, "0x\(String(at[row.global]!, radix: 16)), expected 0x\(String(want, radix: 16))")
            }
        }
        check("ncgocall is 0 while no M has exited", ["runtime.ncgocall", "runtime.sched"]) {
            // runtime.mexit is the only writer (it adds the exiting M's count), so
            // the global stays 0 until an M exits. Its address has a second,
            // independent source in the locator (its distance from allglen).
            let v = Int64(bitPattern: try word(at["runtime.ncgocall"]!))
            let nmfreed = try read(try field("nmfreed", "runtime.schedt"), base: at["runtime.sched"]!)
            return (v >= 0 && (nmfreed > 0 || v == 0), "ncgocall \(v), Ms exited \(nmfreed)")
        }

        // allgs and allglen.
        check("len(allgs) = allglen, allgs[0] is goroutine 1", ["runtime.allgs", "runtime.allglen"]) {
            let n = Int64(bitPattern: try word(at["runtime.allglen"]!))
            let base = at["runtime.allgs"]!
            let (ptr, len, cap) = (try word(base), Int64(bitPattern: try word(base &+ 8)), Int64(bitPattern: try word(base &+ 16)))
            let detail = "allglen \(n), len(allgs) \(len), cap \(cap)"
            guard n >= 1, n <= 1 << 28, len == n || len == n + 1, cap >= len, writable(ptr) else { return (false, detail) }
            let goid = try field("goid", "runtime.g"), status = try field("atomicstatus", "runtime.g")
            let picks = Array(Set(Array(0..<min(Int(n), sampledGs)) + Array(max(0, Int(n) - sampledGs)..<Int(n)))).sorted()
            for i in picks {
                let g = try word(ptr &+ UInt64(i) &* 8)
                guard writable(g) else { return (false, detail + "; allgs[\(i)] = 0x\(String(g, radix: 16)) is not mapped") }
                let st = try read(status, base: g) & ~0x1000
                guard (0...11).contains(st) else { return (false, detail + "; allgs[\(i)] has status \(st)") }  // _Gdeadextra (11) from Go 1.26
                if i == 0 {
                    let id = try read(goid, base: g)
                    guard id == 1 else { return (false, detail + "; allgs[0] is goroutine \(id)") }
                }
            }
            return (true, detail)
        }

        check("goroutines ≤ allglen, Ps agree", ["runtime.sched", "runtime.allglen", "runtime.allp", "runtime.gomaxprocs"]) {
            // runtime.gcount as the scheduler reader computes it.
            let snapshot = try SchedulerReader(pid: pid, binary: binary, layouts: .automatic, given: (globals, bias)).read()
            let n = Int64(bitPattern: try word(at["runtime.allglen"]!))
            let ok = snapshot.goroutines >= 1 && Int64(snapshot.goroutines) <= n && snapshot.idleProcs <= snapshot.procs
                && snapshot.spinningThreads <= snapshot.procs && snapshot.idleThreads >= 0 && snapshot.idleThreads <= snapshot.threads
            return (ok, "goroutines \(snapshot.goroutines), allglen \(n), idle Ps \(snapshot.idleProcs) of \(snapshot.procs), "
                + "idle Ms \(snapshot.idleThreads) of \(snapshot.threads)")
        }

        // The heap side: memstats, work, mheap_, gcController.
        check("memstats.enablegc is set", ["runtime.memstats"]) {
            let v = try read(try field("enablegc", "runtime.mstats"), base: at["runtime.memstats"]!)
            return (v == 1, "enablegc \(v)")
        }
        check("work.startSema = 1", ["runtime.work"]) {
            let v = try read(try field("startSema", "runtime.workType"), base: at["runtime.work"]!)
            return (v == 1, "startSema \(v)")
        }
        check("work.cycles and mheap_.sweepgen follow memstats.numgc", ["runtime.memstats", "runtime.work", "runtime.mheap_"]) {
            let numgc = try read(try field("numgc", "runtime.mstats"), base: at["runtime.memstats"]!)
            let cycles = try read(try field("cycles", "runtime.workType"), base: at["runtime.work"]!)
            let sweepgen = try read(try field("sweepgen", "runtime.mheap"), base: at["runtime.mheap_"]!)
            // gcStart counts work.cycles; gcMarkTermination then counts numgc and
            // adds 2 to sweepgen.
            // (Between the two, inside the stop-the-world of mark termination, the
            // check fails and is retried.)
            let ok = (cycles == numgc || cycles == numgc + 1) && sweepgen == 2 * numgc
            return (ok, "numgc \(numgc), cycles \(cycles), sweepgen \(sweepgen)")
        }
        check("mheap_.pagesInUse fits the address space", ["runtime.mheap_"]) {
            let pages = try read(try field("pagesInUse", "runtime.mheap"), base: at["runtime.mheap_"]!)
            let mapped = maps.reduce(UInt64(0)) { $0 &+ $1.size }
            return (pages > 0 && UInt64(pages) <= mapped / 8192, "pagesInUse \(pages), mapped \(mapped >> 20) MiB")
        }
        check("gcController.heapMinimum = 4 MiB × GOGC / 100", ["runtime.gcController"]) {
            let c = at["runtime.gcController"]!
            let percent = try read(try field("gcPercent", "runtime.gcControllerState"), base: c)
            let minimum = try read(try field("heapMinimum", "runtime.gcControllerState"), base: c)
            let limit = try read(try field("memoryLimit", "runtime.gcControllerState"), base: c)
            let env = environment
            let detail = "gcPercent \(percent), heapMinimum \(minimum), memoryLimit \(limit)"
                + (env["GOGC"].map { ", GOGC=\($0)" } ?? "") + (env["GOMEMLIMIT"].map { ", GOMEMLIMIT=\($0)" } ?? "")
            // The limit: math.MaxInt64 unless GOMEMLIMIT or debug.SetMemoryLimit set one.
            guard limit == Int64.max || (limit >= 1 << 20 && limit < Int64.max) else { return (false, detail) }
            if percent > 0 { return (percent <= 1 << 24 && minimum == (4 << 20) * percent / 100, detail) }
            // GOGC=off (-1) or 0 leaves heapMinimum without a relation: the
            // program's environment must say so.
            let gogc = env["GOGC"]?.lowercased()
            return ((percent == -1 && gogc == "off") || (percent == 0 && gogc == "0"), detail)
        }
        return checks
    }
}
