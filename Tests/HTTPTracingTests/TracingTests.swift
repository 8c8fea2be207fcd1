import Foundation
import GoIntrospection
import GoTestSupport
@testable import HTTPTracing
import Synchronization
import XCTest

/// End to end: the fixture service (Fixtures/httpsrv) traced through the real
/// BPF object while the client fixture (Fixtures/httpclient) drives it. Needs
/// root (CAP_BPF, CAP_PERFMON) and `scripts/build.sh debug` (the BPF object).
final class TracingTests: XCTestCase {
    static let fixtures = RetFinderTests.fixtures

    /// Requests wrk drives per build (the acceptance asks for at least 20,000);
    /// FERRET_HTTP_REQUESTS overrides.
    static var wrkRequests: Int { Int(ProcessInfo.processInfo.environment["FERRET_HTTP_REQUESTS"] ?? "") ?? 20_000 }
    /// Requests of the Go client per build, each checked against its own wall time.
    static let timedRequests = 2_000

    /// The BPF object next to the test bundle (the build's bin folder).
    static func objectPath() throws -> String {
        if let p = ProcessInfo.processInfo.environment["FERRET_HTTP_TRACER_BPF"] { return p }
        let candidates = [
            Bundle(for: TracingTests.self).bundleURL.deletingLastPathComponent().appendingPathComponent("http_tracer.bpf.o").path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/http_tracer.bpf.o").path,
        ]
        guard let p = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw RetFinder.Failure("http_tracer.bpf.o not built (scripts/build.sh compiles it); looked in \(candidates)")
        }
        return p
    }

    /// Toolchains to test: all, or FERRET_HTTP_VERSIONS (comma-separated).
    static func versions() throws -> [String] {
        let all = try GoToolchains.required().map(\.version)
        return ProcessInfo.processInfo.environment["FERRET_HTTP_VERSIONS"].map { $0.split(separator: ",").map(String.init) } ?? all
    }

    func testTracesEveryRequestOfEveryToolchain() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF") }
        let latest = try GoToolchains.required().last!.version
        let client = try GoToolchains.build(source: Self.fixtures + "/httpclient", version: latest, flavour: .staticBuild)
        let events = EventLog()
        let tracer = try TracerBPF(objectPath: try Self.objectPath()) { e in events.append(e) }
        defer { tracer.close() }
        var summary: [String] = []
        for version in try Self.versions() {
            for flavour in GoToolchains.Flavour.standard {
                let server = try GoToolchains.build(source: Self.fixtures + "/httpsrv", version: version, flavour: flavour)
                events.removeAll()
                let r = try runOnce(server: server, client: client, tracer: tracer, events: events, label: "\(version) \(flavour)")
                summary.append(r)
            }
        }
        XCTAssertEqual(tracer.linkCount, 0, "every probe detached")
        let c = tracer.counters()
        XCTAssertEqual(c.inflightFull, 0)
        XCTAssertEqual(c.ringbufFull, 0)
        XCTAssertEqual(c.unmatchedReturn, 0)
        XCTAssertEqual(c.readErrors, 0)
        XCTAssertEqual(c.statusUnknown, 0)
        XCTAssertEqual(c.entries, c.events, "every entry (morestack re-runs apart) gave one event")
        print("TracingTests:\n" + summary.joined(separator: "\n") + "\ncounters: \(c)")
    }

    /// Traces one server build under wrk (count and statuses) and the Go client
    /// (each request's wall time); returns a summary line.
    func runOnce(server: String, client: String, tracer: TracerBPF, events: EventLog, label: String) throws -> String {
        let srv = try FixtureProcess(server, [])
        defer { srv.terminate() }
        let listening = try srv.waitForLine(prefix: "listening ", timeout: 10)
        let addr = String(listening.dropFirst("listening ".count))
        let binary = try GoBinary(path: "/proc/\(srv.pid)/exe")
        let plan = try ProbePlan.make(for: binary)
        let hasPattern = plan.offsets.requestPattern != 0
        try tracer.attach(pid: srv.pid, plan: plan)

        // wrk: keep-alive load until it has counted the acceptance's requests.
        let t0 = Date()
        let wrkCount = try Self.wrk(url: "http://" + addr, atLeast: Self.wrkRequests)
        let wrkElapsed = Date().timeIntervalSince(t0)

        // The Go client: per-request wall times to hold each span against.
        let report = NSTemporaryDirectory() + "/ferret-httpclient-\(getpid())-\(srv.pid).tsv"
        defer { try? FileManager.default.removeItem(atPath: report) }
        let n = Self.timedRequests
        let (st, out) = try GoToolchains.run(client, ["-url", "http://" + addr, "-n", String(n), "-c", "8", "-out", report])
        XCTAssertEqual(st, 0, "\(label): client: \(out)")
        XCTAssertTrue(out.contains("errors=0"), "\(label): client: \(out)")

        srv.signal(SIGTERM)
        let served = try srv.waitForLine(prefix: "served ", timeout: 10)
        let counts = Self.servedCounts(served)
        let total = counts["served"] ?? -1
        // The ring buffer hands events over within ~50 ms; wait for the last.
        Wait.until("\(label): \(total) events", timeout: 5) { events.count >= total }
        usleep(100_000)  // room for an extra (wrong) event to show: a measurement window, not a wait
        tracer.detach(pid: srv.pid)
        XCTAssertEqual(tracer.inflightCount(pid: srv.pid), 0, "\(label): in-flight entries left")

        let got = events.all.filter { $0.pid == srv.pid }
        XCTAssertEqual(got.count, total, "\(label): spans vs the server's own counter (\(served))")
        XCTAssertGreaterThanOrEqual(total - n, Self.wrkRequests, "\(label): wrk drove \(wrkCount)")
        var statuses: [Int64: Int] = [:]
        for e in got { statuses[e.effectiveStatus ?? -1, default: 0] += 1 }
        XCTAssertEqual(statuses, [200: counts["200"] ?? -1, 404: counts["404"] ?? -1, 500: counts["500"] ?? -1],
                       "\(label): statuses of the spans vs the server's counts (\(served))")

        // Routes (Go 1.23+: Request.Pattern): the mux pattern each path matched.
        var wrongRoute = 0
        for e in got {
            let expected = !hasPattern ? "" : e.path.hasPrefix("/ok/") ? "/ok/" : e.path.hasPrefix("/fail/") ? "/fail/" : "/"
            if e.route != expected { wrongRoute += 1 }
        }
        XCTAssertEqual(wrongRoute, 0, "\(label): routes (pattern field \(hasPattern ? "present" : "absent"))")

        // Match each Go-client event to its request by the unique path.
        var requests: [String: (status: Int64, start: UInt64, end: UInt64)] = [:]
        let text = try String(contentsOfFile: report, encoding: .utf8)
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "\t")
            guard f.count == 4 else { continue }
            requests[String(f[0])] = (Int64(f[1]) ?? 0, UInt64(f[2]) ?? 0, UInt64(f[3]) ?? 0)
        }
        let clock = ClockConverter()
        var wrongStatus = 0, outside = 0, wrongMeta = 0, matched = 0
        var worst: Int64 = .min
        var tightest: Int64 = .max
        var seen = Set<String>()
        for e in got {
            if e.method != "GET" || e.host != addr || e.kind != .server || e.flags != [] { wrongMeta += 1 }
            guard let r = requests[e.path] else { continue }
            guard seen.insert(e.path).inserted else { wrongMeta += 1; continue }
            matched += 1
            if e.effectiveStatus != r.status { wrongStatus += 1 }
            let s = clock.unixNanos(monotonic: e.startMonotonicNanos), en = clock.unixNanos(monotonic: e.endMonotonicNanos)
            let early = Int64(r.start) - Int64(s), late = Int64(en) - Int64(r.end)
            worst = max(worst, early, late)
            tightest = min(tightest, -early, -late)
            // 50 µs covers the clock conversion; a real miss is far larger.
            if early > 50_000 || late > 50_000 || en < s { outside += 1 }
        }
        XCTAssertEqual(matched, n, "\(label): Go-client requests with a span")
        XCTAssertEqual(wrongStatus, 0, "\(label): wrong status codes")
        XCTAssertEqual(wrongMeta, 0, "\(label): wrong method/host/kind/flags, or a path twice")
        XCTAssertEqual(outside, 0, "\(label): spans outside the client's wall time (worst \(worst) ns)")
        return "\(label): \(got.count) spans = served \(total) (wrk \(wrkCount) at \(String(format: "%.0f", Double(wrkCount) / wrkElapsed)) req/s); "
            + "\(plan.server?.returnFileOffsets.count ?? 0) RETs; layouts \(plan.layoutSource); statuses \(statuses.sorted { $0.key < $1.key }); "
            + "tightest margin inside the client's wall time \(tightest) ns"
    }

    /// "served 3 200=2 404=1 500=0 other=0" → ["served": 3, "200": 2, …].
    static func servedCounts(_ line: String) -> [String: Int] {
        var out: [String: Int] = [:]
        let f = line.split(separator: " ")
        if f.count > 1 { out["served"] = Int(f[1]) }
        for kv in f.dropFirst(2) {
            let p = kv.split(separator: "=")
            if p.count == 2 { out[String(p[0])] = Int(p[1]) }
        }
        return out
    }

    /// Runs wrk (2 threads, 16 keep-alive connections, Fixtures/wrk/statuses.lua)
    /// in 2-second rounds until it has counted `atLeast` requests; returns its count.
    static func wrk(url: String, atLeast: Int) throws -> Int {
        var total = 0
        var rounds = 0
        while total < atLeast {
            rounds += 1
            guard rounds <= 60 else { throw RetFinder.Failure("wrk: only \(total) requests in 60 rounds") }
            let (st, out) = try GoToolchains.run("/usr/bin/wrk", ["-t2", "-c16", "-d2s", "-s", fixtures + "/wrk/statuses.lua", url])
            guard st == 0, let line = out.split(separator: "\n").first(where: { $0.contains("requests in") }),
                  let n = Int(line.trimmingCharacters(in: .whitespaces).split(separator: " ")[0]) else {
                throw RetFinder.Failure("wrk failed (\(st)): \(out)")
            }
            if out.contains("Socket errors") { throw RetFinder.Failure("wrk saw socket errors: \(out)") }
            total += n
        }
        return total
    }
}

/// Events the ring thread delivered.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [HTTPEvent] = []
    func append(_ e: HTTPEvent) { lock.withLock { items.append(e) } }
    func removeAll() { lock.withLock { items.removeAll() } }
    var count: Int { lock.withLock { items.count } }
    var all: [HTTPEvent] { lock.withLock { items } }
}

/// A child process whose stdout is read line by line.
final class FixtureProcess {
    let process = Process()
    private let pipe = Pipe()
    private var buffer = ""
    var pid: Int32 { process.processIdentifier }

    init(_ exe: String, _ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = args
        process.standardOutput = pipe
        process.standardError = FileHandle.standardError
        try process.run()
    }

    func waitForLine(prefix: String, timeout: TimeInterval) throws -> String {
        func line() -> String? { buffer.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }).map(String.init) }
        let found = try? Wait.value("a line starting with '\(prefix)'", timeout: timeout, poll: 0.01) { () -> String? in
            if let l = line() { return l }
            buffer += String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
            return line()
        }
        guard let found else { throw RetFinder.Failure("no line starting with '\(prefix)' within \(timeout)s; got: \(buffer)") }
        return found
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    func terminate() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
