import FerretTestSupport
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
    static let prometheus = PrometheusServerProcess.prometheus

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
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
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

    static func value(_ result: [String: Any]) -> Double { PrometheusServerProcess.value(result) }
}

