import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The aggregators inside the real agent (`ferret run`, the scheduler plugin
/// reading the truthsrv fixture from outside, the jsonl sink): goroutine-leak
/// detection on the seed article's leak against the same load on an endpoint
/// that does not leak, and threshold and anomaly events that fire and resolve.
/// One Go toolchain: the newest installed.
final class AgentAggregatorTests: XCTestCase {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }
    static func time(_ l: [String: Any]) -> UInt64 { (l["time_unix_nano"] as? NSNumber)?.uint64Value ?? 0 }
    static func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? .nan }
    static func number(_ l: [String: Any], _ key: String) -> Double { (l.attributes[key] as? NSNumber)?.doubleValue ?? .nan }
    static func text(_ l: [String: Any], _ key: String) -> String { l.attributes[key] as? String ?? "" }

    /// Calls `path` on a server `rate` times a second on average, on its own
    /// thread. The gaps are drawn from [0.5, 1.5] / rate: a fixed schedule would
    /// lock its phase to the agent's 1 s interval, and the collector would see
    /// the same moment of every cycle.
    final class Load: @unchecked Sendable {
        private let lock = NSLock()
        private var stopped = false
        private(set) var requests = 0
        private(set) var failures: [String] = []
        private let done = DispatchSemaphore(value: 0)

        init(_ srv: TruthServer, _ path: String, rate: Double) {
            let t = Thread { [self] in
                var next = Date()
                while !lock.withLock({ stopped }) {
                    do {
                        _ = try srv.truth(path)
                        lock.withLock { requests += 1 }
                    } catch {
                        lock.withLock { failures.append("\(error)") }
                    }
                    next = next.addingTimeInterval(Double.random(in: 0.5...1.5) / rate)
                    let wait = next.timeIntervalSinceNow
                    if wait > 0 { Thread.sleep(forTimeInterval: wait) }  // pacing the load: not a wait
                }
                done.signal()
            }
            t.name = "load \(path)"
            t.start()
        }

        /// Stops and waits for the thread; later calls return at once.
        func stop() {
            let first = lock.withLock { () -> Bool in
                defer { stopped = true }
                return !stopped
            }
            if first { done.wait() }
        }

        var count: Int { lock.withLock { requests } }
        var errors: [String] { lock.withLock { failures } }
    }

    static func newestTruthServer() throws -> String {
        guard let newest = try GoToolchains.required().last else { throw Failure(description: "no Go toolchain") }
        return try GoToolchains.build(source: TruthServer.fixtureSource, version: newest.version, flavour: .plain)
    }

    static func agentConfig(dir: String, pids: [Int32], interval: String, aggregators: String) -> String {
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
        return """
        agent: { interval: \(interval), self_metrics_interval: 60s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: fixtures
            match: { pid: [\(pids.map(String.init).joined(separator: ", "))] }
            group: "truthsrv-{pid}"
            collectors: { scheduler: {} }
        pipeline:
          aggregators:
        \(aggregators)
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
    }

    /// The leak of the seed article (`GET /leak?n=1`: a new http.Client and
    /// Transport per request, each keeping its connection and goroutines) at 10
    /// requests/s on one truthsrv; at the same time the same load on a second
    /// truthsrv's `GET /fanout?n=20&ms=150` (20 goroutines per request that live
    /// 150 ms: a count that moves up and down by tens and never grows). The leak must
    /// be raised within 60 s of the load's start and resolved once the leaking
    /// load stops; the second process must raise nothing over 5 minutes.
    func testGoroutineLeakIsRaisedForTheLeakAndNotForTheSameLoadOnAnEndpointThatDoesNotLeak() throws {
        let binary = try Self.newestTruthServer()
        let leaky = try TruthServer(binary: binary, arguments: ["-churn-mib", "8"])
        let steady = try TruthServer(binary: binary, arguments: ["-churn-mib", "8"])
        defer {
            leaky.stop()
            steady.stop()
        }
        let dir = TestSupport.tempDir("leak")
        let config = Self.agentConfig(dir: dir, pids: [leaky.pid, steady.pid], interval: "1s", aggregators: """
              - type: goroutine_leak
                window: 30s
        """)
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        for srv in [leaky, steady] {
            _ = try agent.waitFor("go.goroutine.count of pid \(srv.pid)", timeout: 30) {
                $0.name == "go.goroutine.count" && Self.pid($0) == srv.pid
            }
        }
        let g0 = try leaky.truth().goroutines
        let start = Date()
        let leakLoad = Load(leaky, "/leak?n=1", rate: 10)
        let steadyLoad = Load(steady, "/fanout?n=20&ms=150", rate: 10)
        defer {
            leakLoad.stop()
            steadyLoad.stop()
        }

        // Raised within 60 s.
        let leak = try agent.waitFor("go.goroutine.leak for the leaking pid", timeout: 60) {
            $0.signal == "event" && $0.name == "go.goroutine.leak" && Self.pid($0) == leaky.pid
        }
        let detectedAfter = Date().timeIntervalSince(start)
        leakLoad.stop()
        let g1 = try leaky.truth().goroutines
        XCTAssertLessThanOrEqual(detectedAfter, 60)
        XCTAssertEqual(leak["severity"] as? String, "warn")
        XCTAssertGreaterThan(Self.number(leak, "go.goroutine.growth_rate"), 5, "about 3 goroutines per request at 10/s")
        XCTAssertGreaterThan(Self.number(leak, "go.goroutine.count"), Double(g0 + 100))
        XCTAssertLessThanOrEqual(Self.number(leak, "go.goroutine.count"), Double(g1))
        XCTAssertEqual(leak.resource["ferret.group"] as? String, "truthsrv-\(leaky.pid)")
        print("AgentAggregatorTests: leak raised \(String(format: "%.1f", detectedAfter)) s after the load started "
              + "(\(leakLoad.count) requests, goroutines \(g0) → \(g1)): \(leak["body"] as? String ?? "")")

        // The leaking load stopped: the count holds still and the leak resolves.
        let resolved = try agent.waitFor("go.goroutine.leak.resolved for the leaking pid", timeout: 90) {
            $0.signal == "event" && $0.name == "go.goroutine.leak.resolved" && Self.pid($0) == leaky.pid
        }
        XCTAssertEqual(Self.text(resolved, "leak.reason"), "stopped growing")
        print("AgentAggregatorTests: resolved \(String(format: "%.1f", Date().timeIntervalSince(start))) s after the start: \(resolved["body"] as? String ?? "")")

        // The other process under the same load for 5 minutes: nothing.
        let remaining = 300 - Date().timeIntervalSince(start)
        if remaining > 0 { Thread.sleep(forTimeInterval: remaining) }  // a measurement window, not a wait
        steadyLoad.stop()
        // The last interval reaches the sink: a point of the steady pid taken after the load stopped.
        let stopped = UInt64(Date().timeIntervalSince1970 * 1e9)
        Wait.until("a point taken after the load stopped", timeout: 10, poll: 0.1) {
            agent.lines().contains { $0.name == "go.goroutine.count" && Self.pid($0) == steady.pid && Self.time($0) >= stopped }
        }
        let lines = agent.lines()
        let steadyEvents = lines.filter { $0.signal == "event" && $0.name.hasPrefix("go.goroutine.leak") && Self.pid($0) == steady.pid }
        XCTAssertEqual(steadyEvents.count, 0, "\(steadyEvents.map { $0["body"] ?? "" })")
        let leakEvents = lines.filter { $0.signal == "event" && $0.name.hasPrefix("go.goroutine.leak") && Self.pid($0) == leaky.pid }
        XCTAssertEqual(leakEvents.map(\.name), ["go.goroutine.leak", "go.goroutine.leak.resolved"], "one leak, one resolve")

        // Not vacuous: the second process was watched all along, under load, and
        // its count moved.
        let t0 = UInt64(start.timeIntervalSince1970 * 1e9)
        let counts = lines.filter { $0.name == "go.goroutine.count" && Self.pid($0) == steady.pid && Self.time($0) >= t0 }
        let values = counts.map(Self.value)
        let span = Double(Self.time(counts.last ?? [:]) - Self.time(counts.first ?? [:])) / 1e9
        XCTAssertGreaterThanOrEqual(counts.count, 280, "a point a second for 5 minutes")
        XCTAssertGreaterThanOrEqual(span, 290)
        XCTAssertGreaterThan(steadyLoad.count, 2800, "10 requests/s for 5 minutes")
        XCTAssertEqual(steadyLoad.errors, [])
        XCTAssertEqual(leakLoad.errors, [])
        XCTAssertGreaterThanOrEqual((values.max() ?? 0) - (values.min() ?? 0), 20, "the count moved up and down")
        print("AgentAggregatorTests: non-leaking pid over \(Int(span)) s: \(counts.count) points, \(steadyLoad.count) requests, "
              + "goroutines \(Int(values.min() ?? 0))…\(Int(values.max() ?? 0)) (\(Set(values).count) distinct values), no event")
        XCTAssertEqual(agent.stop(), 0)
    }

    /// A threshold rule and the anomaly detector on go.goroutine.count of a quiet
    /// truthsrv: `GET /churn?ms=4000` runs GOMAXPROCS extra goroutines for 4 s.
    /// The alert fires after its 1 s and resolves when they end; the anomaly
    /// fires on the jump and resolves.
    func testThresholdAlertAndAnomalyFireAndResolve() throws {
        let srv = try TruthServer(binary: try Self.newestTruthServer(), arguments: ["-quiet"])
        defer { srv.stop() }
        // The GC's background workers start with the first GC: have it now, so
        // the count at rest stays put.
        _ = try srv.truth("/gc")
        let base = try srv.truth().goroutines
        let procs = try srv.truth().gomaxprocs
        XCTAssertGreaterThanOrEqual(procs, 2, "the churn must add at least 2 goroutines")
        let dir = TestSupport.tempDir("alert")
        let rule = "go.goroutine.count{process.pid=\(srv.pid)} > \(base + 1) for 1s"
        let config = Self.agentConfig(dir: dir, pids: [srv.pid], interval: "250ms", aggregators: """
              - type: threshold
                rules: ["\(rule)"]
              - type: anomaly
                metrics: [go.goroutine.count]
                warm_up: 12
                z: 4
        """)
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        // Past the anomaly warm-up, at rest.
        guard Wait.until("16 points at rest", timeout: 30, poll: 0.1, {
            agent.lines().filter({ $0.name == "go.goroutine.count" && Self.pid($0) == srv.pid }).count >= 16
        }) else { throw Failure(description: "too few points; agent stderr:\n\(agent.stderr)") }
        let rest = agent.lines().filter { $0.name == "go.goroutine.count" && Self.pid($0) == srv.pid }.map(Self.value)
        XCTAssertEqual(Set(rest), [Double(base)], "at rest the count is the program's own")
        XCTAssertFalse(agent.lines().contains { $0.signal == "event" && ["alert", "anomaly"].contains($0.name) })

        let during = try srv.truth("/churn?ms=4000")  // returns when the churn is over
        _ = during
        let firing = try agent.waitFor("alert firing", timeout: 10) { $0.signal == "event" && $0.name == "alert" && Self.text($0, "state") == "firing" }
        XCTAssertEqual(Self.text(firing, "state"), "firing")
        XCTAssertEqual(Self.text(firing, "rule"), rule)
        XCTAssertEqual(Self.text(firing, "metric"), "go.goroutine.count")
        XCTAssertGreaterThanOrEqual(Self.number(firing, "value"), Double(base + 2))
        XCTAssertEqual(Self.number(firing, "threshold"), Double(base + 1))
        XCTAssertEqual(Self.pid(firing), srv.pid)
        XCTAssertEqual(firing["severity"] as? String, "warn")
        let resolved = try agent.waitFor("alert resolved", timeout: 10) { $0.signal == "event" && $0.name == "alert" && Self.text($0, "state") == "resolved" }
        XCTAssertEqual(Self.text(resolved, "state"), "resolved")
        XCTAssertEqual(Self.number(resolved, "value"), Double(base))
        XCTAssertGreaterThanOrEqual(Self.time(resolved) - Self.time(firing), 2_000_000_000, "the churn lasted 4 s, the rule waited 1 s")

        _ = try agent.waitFor("anomaly resolved", timeout: 10) { $0.signal == "event" && $0.name == "anomaly" && Self.text($0, "state") == "resolved" }
        let alerts = agent.lines().filter { $0.signal == "event" && $0.name == "alert" }
        XCTAssertEqual(alerts.map { Self.text($0, "state") }, ["firing", "resolved"], "one alert")
        let events = agent.lines().filter { $0.signal == "event" && $0.name == "anomaly" }
        XCTAssertEqual(events.map { Self.text($0, "state") }, ["firing", "resolved"], "\(events.map { $0["body"] ?? "" })")
        if let a = events.first {
            XCTAssertGreaterThanOrEqual(Self.number(a, "z"), 4)
            XCTAssertEqual(Self.number(a, "expected"), Double(base), accuracy: 0.01)
            XCTAssertEqual(Self.pid(a), srv.pid)
        }
        print("AgentAggregatorTests: \(firing["body"] as? String ?? "")\n  \(resolved["body"] as? String ?? "")\n  "
              + events.map { $0["body"] as? String ?? "" }.joined(separator: "\n  "))
        XCTAssertEqual(agent.stop(), 0)
    }
}
