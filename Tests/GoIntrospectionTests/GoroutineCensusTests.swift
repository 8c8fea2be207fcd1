import Foundation
import GoBinaryFormat
import GoIntrospection
import GoroutineProfiling
import GoTestSupport
import XCTest

/// The goroutine census against the program's own goroutine profile: the census
/// fixture (known groups: 50 in chan receive, 30 in time.Sleep, 20 in
/// sync.Mutex.Lock, 10 in select, 3 in read(2), one 50 frames deep, one busy,
/// and the finalizer goroutine blocked in a user finalizer, which Go counts),
/// built with every toolchain as plain, static and stripped-static builds (and
/// stripped PIE for three), writes runtime/pprof's goroutine profile at debug=1
/// and debug=2; the census taken right after must agree:
/// - debug=1: every group of parked goroutines, by count, PCs and frames;
/// - debug=2: every parked goroutine's header, frames (file:line +offset) and
///   "created by" lines; the busy one by its start function.
/// - debug=0 (profile.proto): the census's pprof goroutine profile, read by the
///   newest toolchain's `go tool pprof -traces`, has every parked stack with
///   the count Go's own profile has.
/// The main goroutine took the profile (it was running then), so it is left out.
final class GoroutineCensusTests: XCTestCase {
    static let source = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/census").path

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// The running fixture, driven over stdin.
    final class Fixture {
        let process = Process()
        let input = Pipe()
        let output = Pipe()
        var mainGoid = ""
        var pid: Int32 { process.processIdentifier }

        init(_ binary: String) throws {
            process.executableURL = URL(fileURLWithPath: binary)
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let ready = TestContainer.readLine(output.fileHandleForReading.fileDescriptor, timeout: 20)
            let f = ready.split(separator: " ")
            guard f.count == 3, f[0] == "ready" else { throw Failure(description: "\(binary): no ready line (got '\(ready)')") }
            mainGoid = String(f[1])
        }

        func command(_ line: String, expect: String) throws {
            input.fileHandleForWriting.write(Data((line + "\n").utf8))
            let reply = TestContainer.readLine(output.fileHandleForReading.fileDescriptor, timeout: 20)
            guard reply == expect else { throw Failure(description: "'\(line)': got '\(reply)', want '\(expect)'") }
        }

        func stop() {
            if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
        }

        deinit { stop() }
    }

    static func builds() throws -> [(version: String, flavour: GoToolchains.Flavour, path: String)] {
        var all = try GoToolchains.buildAll(source: source, flavours: GoToolchains.Flavour.standard)
        let versions = try GoToolchains.required().map(\.version)
        for v in [versions.first, versions.dropFirst(versions.count / 2).first, versions.last].compactMap({ $0 }) {
            all.append((v, .strippedPIE, try GoToolchains.build(source: source, version: v, flavour: .strippedPIE)))
        }
        return all
    }

    func testEveryBuildAgreesWithItsOwnGoroutineProfile() throws {
        var failures: [String] = []
        var summary: [String] = []
        for b in try Self.builds() {
            let tag = "\(b.version) \(b.flavour.rawValue)"
            do {
                summary.append(tag + ": " + (try check(b.path)))
            } catch {
                failures.append("\(tag): \(error)")
            }
        }
        print("GoroutineCensusTests:\n" + summary.joined(separator: "\n"))
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n\n"))
    }

    /// A goroutine table that changes under the reader: the fixture starts and
    /// ends 100,000 goroutines a second while censuses are taken back to back
    /// for 5 s. No crash, every record names a function of the program, the
    /// parked groups keep their exact counts, and the total stays within what
    /// the churn can add.
    func testChurnGivesNoWrongNames() throws {
        let versions = try GoToolchains.required().map(\.version)
        for v in [versions.first!, versions.last!] {
            let binary = try GoToolchains.build(source: Self.source, version: v, flavour: .strippedStatic)
            let fixture = try Fixture(binary)
            defer { fixture.stop() }
            try fixture.command("churn 100000", expect: "churning")
            let census = try GoroutineCensus(pid: fixture.pid, binary: try GoBinary(path: binary))
            let functions = Set(census.pcln.allFunctions().map(\.name))
            let deadline = Date().addingTimeInterval(5)
            var censuses = 0, changed = 0, maxTotal = 0, churnSeen = 0
            while Date() < deadline {
                let result = try census.take()
                censuses += 1
                changed += result.changed
                let user = result.goroutines.filter { !$0.isSystem }
                maxTotal = max(maxTotal, user.count)
                let byCreator = Dictionary(grouping: user) { census.creatorFunction($0) ?? "?" }
                for (creator, count) in [("main.spawnA", 50), ("main.spawnB", 30), ("main.spawnC", 20), ("main.spawnD", 10),
                                         ("main.spawnE", 3)] {
                    XCTAssertEqual(byCreator[creator]?.count, count, "\(v): created by \(creator)")
                }
                churnSeen += byCreator["main.churn"]?.count ?? 0
                for r in user {
                    XCTAssertTrue(functions.contains(census.startFunction(r)), "\(v): start \(census.startFunction(r))")
                    for f in census.frames(of: r.stack) { XCTAssertTrue(functions.contains(f.function) || f.inlined, "\(v): frame \(f.function)") }
                }
            }
            // 117 steady goroutines (the finalizer's among them), the churner, and at
            // most three ticks of the churn (1,000 each) alive at once.
            XCTAssertLessThanOrEqual(maxTotal, 117 + 1 + 3_000, v)
            XCTAssertGreaterThan(censuses, 10, v)
            try fixture.command("stop", expect: "stopped")
            print("GoroutineCensusTests churn \(v): \(censuses) censuses in 5 s, at most \(maxTotal) goroutines, \(churnSeen) churn goroutines seen, \(changed) changed under the reader")
        }
    }

    /// One build: returns a one-line summary, throws the disagreements.
    func check(_ binary: String) throws -> String {
        let fixture = try Fixture(binary)
        defer { fixture.stop() }
        let dir = NSTemporaryDirectory() + "census-\(getpid())-\(fixture.pid)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try fixture.command("dump \(dir)", expect: "dumped")

        let census = try GoroutineCensus(pid: fixture.pid, binary: try GoBinary(path: binary))
        let result = try census.take()
        let dump = GoroutineDump(census: census, result: result)
        var problems: [String] = []

        // debug=1: the groups of parked goroutines, by count, PCs and frames.
        let theirs1 = Self.groups(try String(contentsOfFile: dir + "/debug1.txt", encoding: .utf8))
        let ours1 = Self.groups(dump.debug1())
        let skip = { (g: Group) in g.frames.contains { $0.hasPrefix("main.main ") || $0.hasPrefix("main.busy ") } || g.pcs.count == 1 }
        let want1 = theirs1.groups.filter { !skip($0) }, got1 = ours1.groups.filter { !skip($0) }
        // Up to Go 1.22 the goroutine profile keeps 32 PCs of a stack; the census keeps them all.
        let matches = { (want: Group, got: Group) -> Bool in
            if want == got { return true }
            guard want.pcs.count == 32, want.count == got.count, Array(got.pcs.prefix(32)) == want.pcs else { return false }
            return Array(got.frames.prefix(want.frames.count)) == want.frames
        }
        for g in want1 where !got1.contains(where: { matches(g, $0) }) {
            problems.append("debug=1 group missing or different:\n\(g)\nours:\n\(got1.first { $0.frames.last == g.frames.last } .map { "\($0)" } ?? "none")")
        }
        for g in got1 where !want1.contains(where: { matches($0, g) }) { problems.append("debug=1 group not in Go's profile:\n\(g)") }
        if ours1.total != theirs1.total { problems.append("total: ours \(ours1.total), Go's \(theirs1.total)") }

        // debug=2: every parked goroutine's header, frames and creator.
        let theirs2 = Self.goroutines(try String(contentsOfFile: dir + "/debug2.txt", encoding: .utf8))
        let ours2 = Self.goroutines(dump.debug2())
        var compared = 0
        for (id, want) in theirs2 where id != fixture.mainGoid {
            guard let got = ours2[id] else { problems.append("goroutine \(id) missing"); continue }
            if want.frames.contains(where: { $0.hasPrefix("main.busy") }) {
                let r = result.goroutines.first { "\($0.goid)" == id }
                if r.map(census.startFunction) != "main.busy" { problems.append("busy goroutine \(id): start \(r.map(census.startFunction) ?? "?")") }
                if got.createdBy != want.createdBy { problems.append("goroutine \(id) created by: ours \(got.createdBy), Go's \(want.createdBy)") }
                continue
            }
            compared += 1
            if got != want { problems.append("goroutine \(id):\nGo's:\n\(want)\nours:\n\(got)") }
        }
        for id in ours2.keys where theirs2[id] == nil && id != fixture.mainGoid { problems.append("goroutine \(id) is not in Go's profile") }

        // debug=0: our profile and Go's, both read by `go tool pprof`.
        let ours0 = try GoroutineProfile.build(census: census, result: result, timeNanos: Int64(Date().timeIntervalSince1970 * 1e9),
                                               mainMapping: GoroutineProfile.executableMapping(pid: fixture.pid))
        try Data(ours0.data).write(to: URL(fileURLWithPath: dir + "/ours0.pb.gz"))
        let skip0 = { (s: [String]) in s.contains("main.main") || s.contains("main.busy") }
        let want0 = try Self.traces(dir + "/debug0.pb.gz").filter { !skip0($0.key) }
        let got0 = try Self.traces(dir + "/ours0.pb.gz").filter { !skip0($0.key) }
        for (stack, n) in want0 where got0[stack] != n {
            // Up to Go 1.22 the profile keeps 32 PCs; the deep goroutine's stack is cut there.
            if stack.contains("main.deep"), got0.contains(where: { $0.value == n && $0.key.starts(with: stack) }) { continue }
            problems.append("pprof: Go's profile has \(n) of\n  \(stack.joined(separator: "\n  "))\nours \(got0[stack] ?? 0)")
        }
        for (stack, n) in got0 where want0[stack] == nil && !stack.contains("main.deep") {
            problems.append("pprof: ours has \(n) of a stack not in Go's profile:\n  \(stack.joined(separator: "\n  "))")
        }

        // The known groups, by creator (a `go f(x)` starts at a wrapper the
        // compiler names after the creator: main.spawnA.gowrap1).
        let byCreator = Dictionary(grouping: result.goroutines.filter { !$0.isSystem }) { census.creatorFunction($0) ?? "" }
        for (creator, count) in [("main.spawnA", 50), ("main.spawnB", 30), ("main.spawnC", 20), ("main.spawnD", 10), ("main.spawnE", 3),
                                 ("main.main", 2)] where byCreator[creator]?.count != count {
            problems.append("created by \(creator): \(byCreator[creator]?.count ?? 0) goroutines, want \(count)")
        }
        // ... and by the function they were started to run: `go waitA(i)` starts the
        // compiler's closure (main.spawnA.func1 before Go 1.22, main.spawnA.gowrap1
        // after), which the stack shows calling main.waitA.
        let byEntry = Dictionary(grouping: result.goroutines.filter { !$0.isSystem && !$0.stack.isEmpty }) { census.entryFunction($0) }
        for (entry, count) in [("main.waitA", 50), ("main.sleepB", 30), ("main.lockC", 20), ("main.selectD", 10), ("main.readE", 3),
                               ("main.deep", 1)] where byEntry[entry]?.count != count {
            problems.append("entry \(entry): \(byEntry[entry]?.count ?? 0) goroutines, want \(count) (entries: \(byEntry.mapValues(\.count)))")
        }
        let deep = byCreator["main.main"]?.map { dump.tracebackFrames($0).count }.max() ?? 0
        guard problems.isEmpty else { throw Failure(description: problems.prefix(6).joined(separator: "\n")) }
        return "\(ours1.total) goroutines, \(want1.count) groups, \(want0.count) pprof stacks and \(compared) goroutines agree; deep stack \(deep) frames; "
            + "\(result.readGs) Gs read, \(result.bytesRead) bytes"
    }

    // MARK: - Parsing Go's text formats (and ours, the same way)

    /// `go tool pprof -traces` of a goroutine profile: count by stack (frame
    /// names, "(inline)" marks kept; samples split by labels are added up).
    static func traces(_ path: String) throws -> [[String]: Int] {
        let go = try GoToolchains.required().last!.go
        var env = ProcessInfo.processInfo.environment
        env["GOTOOLCHAIN"] = "local"
        env["PPROF_TMPDIR"] = NSTemporaryDirectory()
        let (status, text) = try GoToolchains.run(go, ["tool", "pprof", "-traces", "-symbolize=none", path], env: env)
        guard status == 0 else { throw Failure(description: "go tool pprof -traces \(path): \(text)") }
        var out: [[String]: Int] = [:]
        for block in text.components(separatedBy: "-----------+") {
            var count = 0
            var stack: [String] = []
            for line in block.split(separator: "\n") where !line.contains(":  ") && !line.hasPrefix("---") {
                let f = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
                if stack.isEmpty, f.count == 2, let n = Int(f[0]) {
                    count = n
                    stack.append(f[1].trimmingCharacters(in: .whitespaces))
                } else if !stack.isEmpty {
                    stack.append(line.trimmingCharacters(in: .whitespaces))
                }
            }
            if !stack.isEmpty { out[stack, default: 0] += count }
        }
        return out
    }

    struct Group: Equatable, CustomStringConvertible {
        var count: Int
        var pcs: [String]
        var frames: [String]  // "function file:line"
        var description: String { "\(count) @ \(pcs.joined(separator: " "))\n  " + frames.joined(separator: "\n  ") }
    }

    static func groups(_ text: String) -> (total: Int, groups: [Group]) {
        var total = -1
        var out: [Group] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("goroutine profile: total ") {
                total = Int(line.split(separator: " ").last ?? "") ?? -1
            } else if let at = line.range(of: " @ ") {
                out.append(Group(count: Int(line[..<at.lowerBound]) ?? -1, pcs: line[at.upperBound...].split(separator: " ").map(String.init),
                                 frames: []))
            } else if line.hasPrefix("#\t0x"), !out.isEmpty {
                let f = line.split(separator: "\t", omittingEmptySubsequences: true)
                guard f.count >= 4 else { continue }
                let name = f[2].range(of: "+0x", options: .backwards).map { String(f[2][..<$0.lowerBound]) } ?? String(f[2])
                out[out.count - 1].frames.append("\(name) \(f[3])")
            }
        }
        return (total, out)
    }

    struct Traceback: Equatable, CustomStringConvertible {
        var header: String
        var frames: [String]  // "function file:line +0x.."
        var createdBy: String
        var description: String { "  [\(header)]\n  " + frames.joined(separator: "\n  ") + "\n  created by \(createdBy)" }
    }

    static func goroutines(_ text: String) -> [String: Traceback] {
        var out: [String: Traceback] = [:]
        for block in text.components(separatedBy: "\n\n") {
            let lines = block.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            guard let first = lines.first, first.hasPrefix("goroutine "),
                  let open = first.firstIndex(of: "["), let close = first.lastIndex(of: "]") else { continue }
            let id = String(first.dropFirst("goroutine ".count).prefix { $0.isNumber })
            var t = Traceback(header: String(first[first.index(after: open)..<close]), frames: [], createdBy: "")
            var i = 1
            while i + 1 < lines.count {
                let call = lines[i], at = lines[i + 1].trimmingCharacters(in: .whitespaces)
                if call.hasPrefix("created by ") {
                    t.createdBy = String(call.dropFirst("created by ".count)) + " " + at
                } else if call.hasPrefix("\t") {
                    i += 1
                    continue
                } else {
                    let name = call.range(of: "(", options: .backwards).map { String(call[..<$0.lowerBound]) } ?? call
                    t.frames.append(name + " " + at)
                }
                i += 2
            }
            out[id] = t
        }
        return out
    }
}
