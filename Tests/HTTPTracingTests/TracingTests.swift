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

    /// Requests per build in the quick matrix; FERRET_HTTP_REQUESTS overrides.
    static var requests: Int { Int(ProcessInfo.processInfo.environment["FERRET_HTTP_REQUESTS"] ?? "") ?? 3000 }

    /// The BPF object next to the test bundle (the build's bin folder).
    static func objectPath() throws -> String {
        if let p = ProcessInfo.processInfo.environment["FERRET_HTTP_TRACER_BPF"] { return p }
        let candidates = [
            Bundle(for: TracingTests.self).bundleURL.deletingLastPathComponent().appendingPathComponent("http_tracer.bpf.o").path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/http_tracer.bpf.o").path,
        ]
        guard let p = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw XCTSkip("http_tracer.bpf.o not built (run scripts/build.sh debug); looked in \(candidates)")
        }
        return p
    }

    func testTracesEveryRequestOfEveryToolchain() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF") }
        let all = try GoToolchains.required().map(\.version)
        let versions = ProcessInfo.processInfo.environment["FERRET_HTTP_VERSIONS"].map { $0.split(separator: ",").map(String.init) } ?? all
        let latest = try GoToolchains.required().last!.version
        let client = try GoToolchains.build(source: Self.fixtures + "/httpclient", version: latest, flavour: .staticBuild)
        let events = EventLog()
        let tracer = try TracerBPF(objectPath: try Self.objectPath()) { e in events.append(e) }
        defer { tracer.close() }
        var summary: [String] = []
        for version in versions {
            for flavour in GoToolchains.Flavour.allCases {
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
        print("TracingTests:\n" + summary.joined(separator: "\n") + "\ncounters: \(c)")
    }

    /// Traces one run of `server` under `client`; returns a summary line.
    func runOnce(server: String, client: String, tracer: TracerBPF, events: EventLog, label: String) throws -> String {
        let srv = try FixtureProcess(server, [])
        defer { srv.terminate() }
        let listening = try srv.waitForLine(prefix: "listening ", timeout: 10)
        let addr = String(listening.dropFirst("listening ".count))

        let plan = try ProbePlan.make(for: GoBinary(path: "/proc/\(srv.pid)/exe"))
        try tracer.attach(pid: srv.pid, plan: plan)
        let report = NSTemporaryDirectory() + "/ferret-httpclient-\(getpid())-\(srv.pid).tsv"
        defer { try? FileManager.default.removeItem(atPath: report) }
        let n = Self.requests
        let t0 = Date()
        let (st, out) = try GoToolchains.run(client, ["-url", "http://" + addr, "-n", String(n), "-c", "8", "-out", report])
        let elapsed = Date().timeIntervalSince(t0)
        XCTAssertEqual(st, 0, "\(label): client: \(out)")
        XCTAssertTrue(out.contains("errors=0"), "\(label): client: \(out)")

        // Wait for the ring buffer to deliver the last events.
        let deadline = Date().addingTimeInterval(5)
        while events.count < n && Date() < deadline { usleep(20_000) }
        usleep(100_000)
        srv.signal(SIGTERM)
        let served = try srv.waitForLine(prefix: "served ", timeout: 10)
        let total = Int(served.split(separator: " ")[1]) ?? -1
        tracer.detach(pid: srv.pid)
        XCTAssertEqual(tracer.inflightCount(pid: srv.pid), 0, "\(label): in-flight entries left")

        let got = events.all
        XCTAssertEqual(got.count, total, "\(label): spans vs the server's own counter (\(served))")
        XCTAssertEqual(total, n, "\(label): \(served)")

        // Match each event to its request by the unique path.
        var requests: [String: (status: Int64, start: UInt64, end: UInt64)] = [:]
        let text = try String(contentsOfFile: report, encoding: .utf8)
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "\t")
            guard f.count == 4 else { continue }
            requests[String(f[0])] = (Int64(f[1]) ?? 0, UInt64(f[2]) ?? 0, UInt64(f[3]) ?? 0)
        }
        let clock = ClockConverter()
        var wrongStatus = 0, outside = 0, unmatched = 0, wrongMeta = 0
        var worst: Int64 = .min
        var tightest: Int64 = .max
        var seen = Set<String>()
        for e in got {
            guard let r = requests[e.path], seen.insert(e.path).inserted else { unmatched += 1; continue }
            if e.effectiveStatus != r.status { wrongStatus += 1 }
            if e.method != "GET" || e.host != addr || e.kind != HTTPEvent.Kind.server || e.pid != srv.pid { wrongMeta += 1 }
            let s = clock.unixNanos(monotonic: e.startMonotonicNanos), en = clock.unixNanos(monotonic: e.endMonotonicNanos)
            let early = Int64(r.start) - Int64(s), late = Int64(en) - Int64(r.end)
            worst = max(worst, early, late)
            tightest = min(tightest, -early, -late)
            // 50 µs covers the clock conversion; a real miss is far larger.
            if early > 50_000 || late > 50_000 || en < s { outside += 1 }
        }
        XCTAssertEqual(unmatched, 0, "\(label): events matching no request (or twice)")
        XCTAssertEqual(wrongStatus, 0, "\(label): wrong status codes")
        XCTAssertEqual(wrongMeta, 0, "\(label): wrong method/host/kind/pid")
        XCTAssertEqual(outside, 0, "\(label): spans outside the client's wall time (worst \(worst) ns)")
        let statuses = Dictionary(grouping: got, by: { (e: HTTPEvent) in e.effectiveStatus }).mapValues { $0.count }
        return "\(label): \(got.count) spans = served \(total); \(plan.server.returnFileOffsets.count) RETs; layouts \(plan.layoutSource); "
            + "statuses \(statuses.sorted { $0.key < $1.key }); tightest margin inside the client's wall time \(tightest) ns; \(String(format: "%.0f", Double(n) / elapsed)) req/s"
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
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = buffer.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) { return String(line) }
            let d = pipe.fileHandleForReading.availableData
            if d.isEmpty { usleep(10_000) } else { buffer += String(decoding: d, as: UTF8.self) }
        }
        throw RetFinder.Failure("no line starting with '\(prefix)' within \(timeout)s; got: \(buffer)")
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    func terminate() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
