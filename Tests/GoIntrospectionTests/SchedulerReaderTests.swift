import Foundation
import Glibc
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

/// SchedulerReader against the truth: the truthsrv fixture, built with every Go
/// toolchain here (plain and static, with symbols), reports its own
/// runtime.NumGoroutine, NumCgoCall, GOMAXPROCS and /proc thread count; what we read
/// from outside must agree exactly at quiescence. Also: GODEBUG=schedtrace, stripped
/// and non-Go refusals, and a process exiting under the reader.
final class SchedulerReaderTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let fixture = TruthServer.fixtureSource

    struct Failure: Error, CustomStringConvertible { var description: String }

    // MARK: - Agreement with the program's own figures, every toolchain

    func testEveryToolchainAgreesWithTruth() throws {
        let builds = try Self.truthBuilds()
        XCTAssertGreaterThanOrEqual(builds.count, 2)
        var summary: [String] = []
        for b in builds {
            let tag = "\(b.version) \(b.flavour.rawValue)"
            do {
                summary.append(try checkAgainstTruth(binary: b.path, version: b.version, flavour: b.flavour, tag: tag))
            } catch {
                XCTFail("\(tag): \(error)")
            }
        }
        print("SchedulerReaderTests per build:\n" + summary.joined(separator: "\n"))
    }

    /// Every toolchain plain, static and stripped-static; stripped PIE builds of
    /// the oldest, a middle and the newest toolchain (issue #8: the same truth
    /// comparisons, the same tolerances, with or without a symbol table).
    static func truthBuilds() throws -> [(version: String, flavour: GoToolchains.Flavour, path: String)] {
        let all = try GoToolchains.required().map(\.version)
        let pie = Set([all.first!, all[all.count / 2], all.last!])
        return try GoToolchains.buildAll(source: fixture, flavours: GoToolchains.Flavour.standard)
            + pie.sorted().map { ($0, .strippedPIE, try GoToolchains.build(source: fixture, version: $0, flavour: .strippedPIE)) }
    }

    /// Returns one summary line.
    private func checkAgainstTruth(binary path: String, version: String, flavour: GoToolchains.Flavour, tag: String)
        throws -> String
    {
        let srv = try TruthServer(binary: path, arguments: ["-park", "100", "-quiet"])
        defer { srv.stop() }
        let binary = try GoBinary(path: "/proc/\(srv.pid)/exe")
        let reader = try SchedulerReader(pid: srv.pid, binary: binary)
        XCTAssertEqual(reader.goVersion, version, tag)
        XCTAssertEqual(reader.layoutSource.hasPrefix("table") ? "table" : reader.layoutSource, binary.hasDWARF ? "dwarf" : "table",
                       "\(tag): builds with DWARF use it, stripped ones the table")
        let located = RuntimeGlobalsLocator.located(in: binary)
        XCTAssertEqual(Set(located.compactMap { $0.address == nil ? nil : $0.source }), [flavour.isStripped ? "code" : "symtab"], tag)
        let validation = RuntimeGlobalsValidator.validate(pid: srv.pid, binary: binary, globals: located, bias: reader.loadBias)
        XCTAssertTrue(validation.passed, "\(tag): \(validation.failure ?? "")")
        if binary.isPIE { XCTAssertNotEqual(reader.loadBias, 0, "\(tag): a PIE is loaded away from its link address") }
        let tableReader = try SchedulerReader(pid: srv.pid, binary: binary, layouts: .tableOnly)
        XCTAssertTrue(tableReader.layoutSource.hasPrefix("table"), tag)

        // Goroutines: truth, ours, truth; ours must equal the truth when both agree.
        let (g0, snap) = try agreeing(tag: "\(tag) goroutines", truth: { try srv.truth().goroutines },
                                      ours: { try reader.read() }, pick: { $0.goroutines })
        XCTAssertEqual(g0, 101, "\(tag): 100 parked + main (the fixture serves on main)")

        // The table's layouts give the same reading as the binary's DWARF.
        let tsnap = try agreeingSnapshots(tag: "\(tag) table layouts", reference: { try reader.read() },
                                          candidate: { try tableReader.read() })
        XCTAssertEqual(tsnap.goroutines, g0, "\(tag): table layouts")

        // GOMAXPROCS and cgo calls.
        let t = try srv.truth()
        XCTAssertEqual(snap.procs, t.gomaxprocs, "\(tag): gomaxprocs")
        let (cgo, _) = try agreeing(tag: "\(tag) cgo calls", truth: { try srv.truth().cgoCalls },
                                    ours: { try reader.read() }, pick: { $0.cgoCalls })
        if !binary.isStatic {
            XCTAssertGreaterThan(cgo, 0, "\(tag): a cgo build made cgo calls at startup")
        } else {
            XCTAssertEqual(cgo, 0, "\(tag): a CGO_ENABLED=0 build makes no cgo calls")
        }
        // More cgo calls (made on whatever M serves the request: the allm walk counts).
        _ = try srv.truth("/cgo?n=7")
        let (cgo2, _) = try agreeing(tag: "\(tag) cgo calls after /cgo", truth: { try srv.truth().cgoCalls },
                                     ours: { try reader.read() }, pick: { $0.cgoCalls })
        if !binary.isStatic { XCTAssertGreaterThanOrEqual(cgo2, cgo + 7, tag) }

        // Threads: /proc, ours, /proc. OS threads = Ms minus idle extra Ms (cgo).
        let pid = srv.pid
        let (threads, tsn) = try agreeing(tag: "\(tag) threads", truth: { try ProcessTasks.threadCount(pid: pid) },
                                          ours: { try reader.read() }, pick: { $0.osThreads ?? -1 })
        XCTAssertNotNil(tsn.idleExtraThreads, "\(tag): extra-M count global found")
        if binary.isStatic { XCTAssertEqual(tsn.idleExtraThreads, 0, "\(tag): no extra Ms without cgo") }
        XCTAssertEqual(try srv.truth().threads, threads, "\(tag): the fixture's own /proc/self/status agrees")

        // Ranges.
        let s = try reader.read()
        XCTAssertTrue((0...s.procs).contains(s.idleProcs), "\(tag): idleProcs \(s.idleProcs) of \(s.procs)")
        XCTAssertTrue((0...s.threads).contains(s.idleThreads), "\(tag): idleThreads \(s.idleThreads)")
        XCTAssertGreaterThanOrEqual(s.spinningThreads, 0, tag)
        XCTAssertLessThanOrEqual(s.spinningThreads, s.procs, tag)
        XCTAssertGreaterThanOrEqual(s.globalRunQueue, 0, tag)
        XCTAssertGreaterThanOrEqual(s.threads, 2, tag)

        // 50 more parked goroutines: exactly 50 more.
        _ = try srv.truth("/spawn?n=50")
        let (g1, _) = try agreeing(tag: "\(tag) goroutines after /spawn", truth: { try srv.truth().goroutines },
                                   ours: { try reader.read() }, pick: { $0.goroutines })
        XCTAssertEqual(g1, g0 + 50, "\(tag): /spawn?n=50")

        // After a forced GC (system goroutines started, Gs freed to the lists).
        _ = try srv.truth("/gc")
        let (g2, _) = try agreeing(tag: "\(tag) goroutines after /gc", truth: { try srv.truth().goroutines },
                                   ours: { try reader.read() }, pick: { $0.goroutines })
        XCTAssertEqual(g2, g1, "\(tag): a GC's workers are system goroutines")

        return "\(tag): \(validation.checks.count) checks passed; goroutines \(g0)→\(g1) threads \(threads) (Ms \(tsn.threads), idle extra \(tsn.idleExtraThreads ?? -1)) "
            + "procs \(snap.procs) idle \(s.idleProcs) cgo \(cgo)→\(cgo2) layouts \(reader.layoutSource)"
    }

    /// Truth, ours, truth, until both truths agree (for up to 0.8 s, every 100 ms);
    /// then ours must equal them. Returns the agreed value and our snapshot.
    private func agreeing<T: Equatable>(
        tag: String, truth: () throws -> T, ours: () throws -> SchedulerSnapshot, pick: (SchedulerSnapshot) -> T,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> (T, SchedulerSnapshot) {
        var seen: [String] = []
        var agreed: (T, SchedulerSnapshot)?
        try Wait.until("\(tag): the truth holding still", timeout: 3, poll: 0.1) {
            let a = try truth()
            let s = try ours()
            let b = try truth()
            if a == b { agreed = (a, s); return true }
            seen.append("\(a)/\(pick(s))/\(b)")
            return false
        }
        guard let agreed else { throw Failure(description: "\(tag): the truth never held still: \(seen)") }
        let (a, s) = agreed
        XCTAssertEqual(pick(s), a, "\(tag): ours vs the program's own", file: file, line: line)
        return (a, s)
    }

    /// Reference, candidate, reference, until both references agree (for up to
    /// 0.8 s, every 100 ms); then the candidate must equal them.
    private func agreeingSnapshots(
        tag: String, reference: () throws -> SchedulerSnapshot, candidate: () throws -> SchedulerSnapshot,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> SchedulerSnapshot {
        var seen: [String] = []
        var agreed: (SchedulerSnapshot, SchedulerSnapshot)?
        try Wait.until("\(tag): readings holding still", timeout: 3, poll: 0.1) {
            let a = try reference()
            let s = try candidate()
            let b = try reference()
            if a == b { agreed = (a, s); return true }
            seen.append("\(a) / \(s) / \(b)")
            return false
        }
        guard let agreed else { throw Failure(description: "\(tag): readings never held still: \(seen)") }
        let (a, s) = agreed
        XCTAssertEqual(s, a, "\(tag)", file: file, line: line)
        return s
    }

    // MARK: - GODEBUG=schedtrace

    func testAgreesWithSchedtrace() throws {
        let path = try GoToolchains.build(source: Self.fixture, version: "go1.22.10", flavour: .plain)
        let srv = try TruthServer(binary: path, arguments: ["-park", "100", "-quiet"],
                                  environment: ["GODEBUG": "schedtrace=1000"])
        defer { srv.stop() }
        let reader = try SchedulerReader(pid: srv.pid, binary: try GoBinary(path: "/proc/\(srv.pid)/exe"))

        func lines() -> [[String: Int]] {
            srv.stderr.split(separator: "\n").filter { $0.hasPrefix("SCHED ") }.map(Self.parseSchedtrace)
        }
        func waitForLine(after n: Int) throws -> [[String: Int]] {
            let l = try? Wait.value("schedtrace line \(n + 1)", timeout: 5, poll: 0.005) { () -> [[String: Int]]? in
                let l = lines()
                return l.count > n ? l : nil
            }
            guard let l else { throw Failure(description: "no schedtrace line \(n + 1) within 5 s; stderr: \(srv.stderr)") }
            return l
        }
        let keys: [(String, KeyPath<SchedulerSnapshot, Int>)] = [
            ("threads", \.threads), ("idlethreads", \.idleThreads), ("spinningthreads", \.spinningThreads),
            ("idleprocs", \.idleProcs), ("runqueue", \.globalRunQueue), ("gomaxprocs", \.procs),
        ]
        var misses: [String] = []
        var matched = false
        // Skip the line printed at startup (0ms), then: wait for a new line, read at
        // once, wait for the next line; ours must match one of the two on every field.
        _ = try waitForLine(after: 1)
        for _ in 0..<3 where !matched {
            let n = lines().count
            _ = try waitForLine(after: n)        // line n (0-based) just appeared
            let ours = try reader.read()
            let l = try waitForLine(after: n + 1)
            let (before, after) = (l[n], l[n + 1])
            let okBefore = keys.allSatisfy { before[$0.0] == ours[keyPath: $0.1] }
            let okAfter = keys.allSatisfy { after[$0.0] == ours[keyPath: $0.1] }
            if okBefore || okAfter {
                matched = true
            } else {
                misses.append("ours \(ours) vs \(before) / \(after)")
            }
        }
        XCTAssertTrue(matched, "schedtrace disagrees: \(misses)")
        XCTAssertFalse(lines().isEmpty)
        // Each field is checked; none is absent from schedtrace's line in Go 1.22.
        for (k, _) in keys { XCTAssertNotNil(lines().last?[k], "schedtrace has \(k)=") }
    }

    /// "SCHED 2004ms: gomaxprocs=2 idleprocs=2 threads=6 ... runqueue=0 [0 0]" → key → value.
    static func parseSchedtrace<S: StringProtocol>(_ line: S) -> [String: Int] {
        var out: [String: Int] = [:]
        for word in line.split(separator: " ") {
            let kv = word.split(separator: "=", maxSplits: 1)
            if kv.count == 2, let v = Int(kv[1]) { out[String(kv[0])] = v }
        }
        return out
    }

    func testParseSchedtrace() {
        let d = Self.parseSchedtrace(
            "SCHED 2004ms: gomaxprocs=2 idleprocs=2 threads=6 spinningthreads=0 needspinning=0 idlethreads=2 runqueue=0 [0 0]")
        XCTAssertEqual(d["gomaxprocs"], 2)
        XCTAssertEqual(d["threads"], 6)
        XCTAssertEqual(d["idlethreads"], 2)
        XCTAssertEqual(d["runqueue"], 0)
    }

    // MARK: - Refusals and exits

    func testNonGoProcessIsRefused() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = ["30"]
        try p.run()
        defer {
            p.terminate()
            p.waitUntilExit()
        }
        let binary = try GoBinary(path: "/proc/\(p.processIdentifier)/exe")
        XCTAssertThrowsError(try SchedulerReader(pid: p.processIdentifier, binary: binary)) { e in
            XCTAssertTrue("\(e)".contains("not a Go program"), "\(e)")
        }
    }

    func testProcessExitingBetweenInitAndReadThrowsExited() throws {
        let path = try GoToolchains.build(source: Self.fixture, version: GoToolchains.required()[0].version,
                                          flavour: .plain)
        let srv = try TruthServer(binary: path, arguments: ["-quiet"])
        let reader = try SchedulerReader(pid: srv.pid, binary: try GoBinary(path: "/proc/\(srv.pid)/exe"))
        XCTAssertGreaterThanOrEqual(try reader.read().goroutines, 1)
        srv.stop()  // SIGKILL and reap
        XCTAssertThrowsError(try reader.read()) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: srv.pid), "\(e)")
        }
    }

    /// A busy program (garbage churn, goroutines being spawned): readings stay
    /// plausible and coherent reads take few attempts.
    func testReadsUnderLoadArePlausible() throws {
        let v = try GoToolchains.required().last!.version
        let path = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let srv = try TruthServer(binary: path, arguments: ["-park", "10", "-churn-mib", "200"])
        defer { srv.stop() }
        let reader = try SchedulerReader(pid: srv.pid, binary: try GoBinary(path: "/proc/\(srv.pid)/exe"))
        let spawner = Thread {
            for _ in 0..<20 { _ = try? srv.truth("/spawn?n=5") }
        }
        spawner.start()
        var coherent = 0
        let before = ProcessMemory.syscallCount
        for _ in 0..<200 {
            let r = try reader.readWithDiagnostics()
            if r.coherent { coherent += 1 }
            XCTAssertTrue((12...200).contains(r.snapshot.goroutines), "\(r.snapshot)")
            XCTAssertTrue((0...r.snapshot.procs).contains(r.snapshot.idleProcs), "\(r.snapshot)")
            XCTAssertGreaterThanOrEqual(r.snapshot.threads, 2)
            XCTAssertGreaterThanOrEqual(r.snapshot.cgoCalls, 0)
        }
        let perRead = Double(ProcessMemory.syscallCount - before) / 200
        XCTAssertGreaterThan(coherent, 150, "most readings are confirmed by the re-read")
        print("SchedulerReaderTests under load: \(coherent)/200 coherent, \(perRead) syscalls per read")
    }

    /// In steady state a reading is two process_vm_readv calls (one batch with the
    /// speculated allp/allm data, one counter re-read).
    func testSteadyStateReadIsTwoSystemCalls() throws {
        let v = try GoToolchains.required()[0].version
        let path = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let srv = try TruthServer(binary: path, arguments: ["-park", "5", "-quiet"])
        defer { srv.stop() }
        let reader = try SchedulerReader(pid: srv.pid, binary: try GoBinary(path: "/proc/\(srv.pid)/exe"))
        var best = Int.max
        for _ in 0..<10 {
            let first = try reader.read()
            let before = ProcessMemory.syscallCount
            let again = try reader.read()
            let n = ProcessMemory.syscallCount - before
            if first == again { best = min(best, n) }
        }
        XCTAssertEqual(best, 2)
        let clock = ContinuousClock()
        let elapsed = try clock.measure { for _ in 0..<1000 { _ = try reader.read() } }
        let us = Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12
        print("SchedulerReaderTests: one scheduler reading costs \(us / 1000) µs (debug build)")
    }

    // MARK: - Field resolution (no process)

    /// Every table row resolves every field the reader needs; Go 1.19 matches the
    /// offsets in the research notes.
    func testEveryTableRowResolvesTheSchedulerFields() throws {
        for v in GoLayoutTable.builtIn.versions {
            let r = RuntimeFieldResolver(goVersion: v, dwarf: nil)
            let s = "runtime.schedt"
            for f in ["mnext", "nmfreed", "nmidle", "nmspinning", "npidle", "ngsys"] {
                XCTAssertNoThrow(try r.field(f, in: s), "\(v) \(f)")
            }
            XCTAssertTrue(r.has("runqsize", in: s) || r.has("runq.size", in: s), v)
            XCTAssertTrue(r.has("gFree.n", in: s) || r.has("gFree.stack.size", in: s), v)
            XCTAssertTrue(r.has("gFree.n", in: "runtime.p") || r.has("gFree.size", in: "runtime.p"), v)
            XCTAssertNoThrow(try r.field("alllink", in: "runtime.m"), v)
            XCTAssertNoThrow(try r.field("ncgocall", in: "runtime.m"), v)
        }
        let r = RuntimeFieldResolver(goVersion: "go1.19.8", dwarf: nil)
        let expect = ["nmidle": 40, "mnext": 48, "nmfreed": 64, "ngsys": 72, "npidle": 88, "nmspinning": 92,
                      "runqsize": 112, "gFree.n": 176]
        for (f, o) in expect { XCTAssertEqual(try r.field(f, in: "runtime.schedt").offset, o, f) }
        XCTAssertEqual(try r.field("mnext", in: "runtime.schedt").size, 8)
        XCTAssertTrue(try r.field("nmidle", in: "runtime.schedt").signed)
        // Go 1.25: runq.size through runtime.gQueue; atomic.Int32 read as its value.
        let r25 = RuntimeFieldResolver(goVersion: "go1.25.5", dwarf: nil)
        let runq = try XCTUnwrap(r25.layout(of: "runtime.schedt")?.member("runq")).offset
        XCTAssertEqual(try r25.field("runq.size", in: "runtime.schedt").offset, runq + 16)
        XCTAssertEqual(try r25.field("npidle", in: "runtime.schedt").size, 4)
        XCTAssertThrowsError(try r25.field("runqsize", in: "runtime.schedt")) { e in
            XCTAssertTrue("\(e)".contains("runtime.schedt.runqsize"), "names the field: \(e)")
        }
        XCTAssertThrowsError(try RuntimeFieldResolver(goVersion: "go1.20.3", dwarf: nil).field("mnext", in: "runtime.schedt")) { e in
            XCTAssertTrue("\(e)".contains("unknown layout for go1.20"), "\(e)")
        }
    }
}
