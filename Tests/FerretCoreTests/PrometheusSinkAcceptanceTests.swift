import Foundation
import GoTestSupport
import XCTest

/// Issue #7's acceptance for the prometheus sink, against a real Prometheus
/// (Debian's 2.42 package, started here on loopback with a temporary config
/// and storage): it scrapes `ferret run` every second while the agent monitors
/// the truthsrv fixture (newest Go toolchain) with the scheduler plugin.
/// Then Prometheus' query API has the fixture's goroutine count with the
/// rule's `ferret_group`, a positive rate over its CPU counter (and the
/// agent's), the OpenMetrics unit (so the scrape used OpenMetrics); when the
/// fixture exits, its series leave /metrics and Prometheus marks them stale.
final class PrometheusSinkAcceptanceTests: XCTestCase {
    static let prometheus = "/usr/bin/prometheus"

    func testPrometheusScrapesFerretMonitoringAGoFixture() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.prometheus) else {
            return XCTFail("\(Self.prometheus) is missing: run scripts/setup.sh (it installs Debian's prometheus package)")
        }
        let newest = try XCTUnwrap(try GoToolchains.required().last)
        let binary = try GoToolchains.build(source: TruthServer.fixtureSource, version: newest.version, flavour: .plain)
        // Background garbage keeps the fixture's CPU counter moving.
        let srv = try TruthServer(binary: binary, arguments: ["-park", "25", "-churn-mib", "16"])
        defer { srv.stop() }
        let pid = srv.pid

        let dir = TestSupport.tempDir("prom-accept")
        TestSupport.manifest(in: dir + "/plugins.d", name: "scheduler", library: TestSupport.productsDir + "/libferret_scheduler.so")
        let agent = try TestSupport.AgentProcess(config: """
            agent: { interval: 1s, self_metrics_interval: 1s }
            plugins: { paths: [plugins.d] }
            rules:
              - name: fixture
                match: { pid: [\(pid)] }
                group: promfixture
                collectors: { scheduler: {} }
            pipeline:
              sinks:
                - { type: prometheus, name: prom, listen: "127.0.0.1:0", expire_after: 1m }
            """, dir: dir)
        defer { agent.stop() }
        try agent.waitForStderr("(prometheus) serving http://127.0.0.1:")
        let ferretPort = try XCTUnwrap(Self.servingPort(agent.stderr), agent.stderr)

        let prometheus = try PrometheusServerProcess(dir: dir + "/prometheus", target: "127.0.0.1:\(ferretPort)")
        defer { prometheus.stop() }

        // The fixture's goroutine count, with the rule's group.
        let goroutines = try prometheus.waitForSeries(#"go_goroutine_count{process_pid="\#(pid)"}"#, timeout: 60)
        let labels = goroutines["metric"] as? [String: String] ?? [:]
        XCTAssertEqual(labels["ferret_group"], "promfixture", "\(goroutines)")
        XCTAssertEqual(labels["ferret_rule"], "fixture")
        XCTAssertEqual(labels["job"], "ferret")
        XCTAssertEqual(labels["process_executable_name"].map { $0.hasPrefix("truthsrv") }, true, "\(labels)")
        XCTAssertGreaterThanOrEqual(Self.value(goroutines), 25, "at least the 25 parked goroutines: \(goroutines)")

        // Rates over the CPU counters are positive: the fixture's and the agent's own.
        let fixtureRate = try prometheus.waitForValue(
            #"sum(rate(process_cpu_time_seconds_total{ferret_group="promfixture",process_pid="\#(pid)"}[10s]))"#, timeout: 30) { $0 > 0 }
        XCTAssertGreaterThan(fixtureRate, 0)
        let agentRate = try prometheus.waitForValue(#"sum(rate(process_cpu_time_seconds_total{ferret_group="ferret"}[10s]))"#, timeout: 30) { $0 > 0 }
        XCTAssertGreaterThan(agentRate, 0)
        print("PrometheusSinkAcceptanceTests: go_goroutine_count \(Self.value(goroutines)) \(labels); CPU rate fixture \(fixtureRate), agent \(agentRate)")

        // The unit is only in OpenMetrics: Prometheus negotiated it.
        let metadata = try HTTP.json(port: prometheus.port, path: "/api/v1/metadata?metric=process_cpu_time_seconds")
        let entries = (metadata["data"] as? [String: Any])?["process_cpu_time_seconds"] as? [[String: Any]] ?? []
        XCTAssertEqual(entries.first?["type"] as? String, "counter", "\(metadata)")
        XCTAssertEqual(entries.first?["unit"] as? String, "seconds", "\(metadata)")

        // The fixture exits: its series leave /metrics (process.exit), and Prometheus,
        // no longer seeing them, marks them stale (an instant query finds nothing).
        srv.stop()
        var exposition = ""
        try Wait.until("the exited process' series gone from /metrics", timeout: 15, poll: 0.2) {
            exposition = try HTTP.get(port: ferretPort, path: "/metrics").text
            return !exposition.contains(#"process_pid="\#(pid)""#)
        }
        XCTAssertFalse(exposition.contains(#"process_pid="\#(pid)""#), "the exited process' series are still served")
        XCTAssertTrue(exposition.contains(#"ferret_group="ferret""#), "the agent's own series stay")
        let gone = try prometheus.waitForEmpty(#"go_goroutine_count{process_pid="\#(pid)"}"#, timeout: 15)
        XCTAssertTrue(gone, "Prometheus still returns the exited fixture's goroutine count")
        XCTAssertEqual(agent.stop(), 0, agent.stderr)
    }

    static func servingPort(_ stderr: String) -> Int? {
        guard let r = stderr.range(of: "(prometheus) serving http://127.0.0.1:") else { return nil }
        return Int(stderr[r.upperBound...].prefix { $0.isNumber })
    }

    static func value(_ result: [String: Any]) -> Double {
        guard let v = result["value"] as? [Any], v.count == 2, let s = v[1] as? String else { return .nan }
        return Double(s) ?? .nan
    }
}

/// A Prometheus server on a free loopback port, scraping one target every
/// second, with its own config and storage under `dir`. Stopped by `stop()`
/// (SIGTERM, then SIGKILL) or on deinit.
final class PrometheusServerProcess {
    let process = Process()
    let port: Int
    let dir: String
    private let log: String

    init(dir: String, target: String) throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        port = try TestSupport.freePort()
        log = dir + "/prometheus.log"
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: ferret
            static_configs:
              - targets: ["\(target)"]
        """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: PrometheusSinkAcceptanceTests.prometheus)
        process.arguments = ["--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                             "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var ready = false
        Wait.until("prometheus ready", timeout: 60, poll: 0.2) {
            ready = (try? HTTP.get(port: port, path: "/-/ready", timeout: 2))?.status == 200
            return ready || !process.isRunning
        }
        if ready { return }
        stop()
        throw TestSupport.TestError("prometheus did not become ready on port \(port):\n\(logText)")
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        Wait.until("prometheus stopped", timeout: 10, poll: 0.05) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }

    /// The result vector of an instant query.
    func query(_ promql: String) throws -> [[String: Any]] {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        let obj = try HTTP.json(port: port, path: "/api/v1/query?query=\(q)")
        guard obj["status"] as? String == "success", let data = obj["data"] as? [String: Any] else {
            throw TestSupport.TestError("query \(promql) failed: \(obj)")
        }
        return data["result"] as? [[String: Any]] ?? []
    }

    func waitForSeries(_ promql: String, timeout: Double) throws -> [String: Any] {
        var first: [String: Any]?
        try Wait.until("a result for \(promql)", timeout: timeout, poll: 0.5) {
            first = try query(promql).first
            return first != nil
        }
        if let first { return first }
        throw TestSupport.TestError("no result for \(promql) within \(Int(timeout)) s; targets: \(targets())\nprometheus log:\n\(logText)")
    }

    /// Waits for the first result's value to satisfy `predicate`; returns it.
    func waitForValue(_ promql: String, timeout: Double, _ predicate: (Double) -> Bool) throws -> Double {
        var last = Double.nan
        if try Wait.until("\(promql) qualifying", timeout: timeout, poll: 0.5, {
            guard let first = try query(promql).first else { return false }
            last = PrometheusSinkAcceptanceTests.value(first)
            return predicate(last)
        }) { return last }
        throw TestSupport.TestError("\(promql) never qualified within \(Int(timeout)) s (last \(last)); targets: \(targets())")
    }

    func waitForEmpty(_ promql: String, timeout: Double) throws -> Bool {
        try Wait.until("no result for \(promql)", timeout: timeout, poll: 0.5) { try query(promql).isEmpty }
    }

    /// The scrape targets' health, for failure messages.
    func targets() -> String {
        guard let obj = try? HTTP.json(port: port, path: "/api/v1/targets"),
              let active = (obj["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]] else { return "?" }
        return active.map { "\($0["scrapeUrl"] ?? "?") \($0["health"] ?? "?") \($0["lastError"] ?? "")" }.joined(separator: "; ")
    }
}
