@testable import FerretComponents
@testable import FerretCore
@testable import FerretDelivery
import FerretTestSupport
import Foundation
import GoTestSupport
import Logging
@testable import SinkOTLP
import XCTest

/// The otlp sink against a real receiver: every request is decoded on the
/// Python side by PyPI's opentelemetry-proto (Fixtures/otlp_receiver.py) and
/// what it decoded is compared here.
final class OTLPSinkTests: XCTestCase {
    let logger = Logger(label: "test")

    func sink(_ receiver: OTLPReceiver, headers: [(String, String)] = [], signals: Set<String> = Set(OTLPSink.signalKinds),
              retryInitial: Duration = .milliseconds(250)) throws -> OTLPSink {
        var o = DeliveryOptions()
        o.flushInterval = .milliseconds(20)
        o.retryInitial = retryInitial
        o.retryMax = .seconds(1)
        return try OTLPSink(endpoint: receiver.endpoint, headers: headers, signals: signals, options: o, logger: logger)
    }

    let processA = Resource([Attribute("process.pid", .int(4242)), Attribute("ferret.group", .string("orders")),
                             Attribute("process.runtime.version", .string("go1.22.10")), Attribute("ferret.cgo", .bool(false))])
    let processB = Resource([Attribute("process.pid", .int(4343)), Attribute("ferret.group", .string("billing"))])

    /// Gauges, counters and histograms of two processes arrive as Gauge,
    /// monotonic cumulative Sum and explicit-bounds Histogram, under their
    /// resources and the ferret scope, with every attribute typed as sent.
    func testMetricsArriveWithKindsAndTypedAttributes() throws {
        let receiver = try OTLPReceiver()
        let sink = try sink(receiver, headers: [("X-Scope-OrgID", "tenant-7")])
        defer { sink.close() }
        let t: UInt64 = 1_700_000_000_123_456_789
        let attrs = [Attribute("s", .string("text")), Attribute("i", .int(-7_000_000_000)), Attribute("d", .double(0.25)),
                     Attribute("b", .bool(true))]
        try sink.write([
            .metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: 53, timeUnixNano: t,
                                attributes: attrs, resource: processA)),
            .metric(MetricPoint(name: "process.cpu.time", kind: .counter, unit: "s", value: 12.5, timeUnixNano: t,
                                attributes: [Attribute("cpu.mode", .string("user"))], resource: processA)),
            .metric(MetricPoint(name: "process.cpu.time", kind: .counter, unit: "s", value: 3.5, timeUnixNano: t,
                                attributes: [Attribute("cpu.mode", .string("system"))], resource: processA)),
            .metric(MetricPoint(name: "http.server.request.duration", kind: .histogram, unit: "s",
                                histogram: HistogramData(count: 10, sum: 0.125, bounds: [0.005, 0.01], bucketCounts: [3, 5, 2]),
                                timeUnixNano: t, resource: processB)),
            .metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: 7, timeUnixNano: t + 1, resource: processB)),
        ])
        let all = try receiver.waitUntil("5 metric points") {
            OTLPReceiver.items(OTLPReceiver.bodies($0, path: "/v1/metrics"), "resource_metrics", "scope_metrics", "metrics")
                .reduce(0) { n, m in n + Self.points(m.item).count } == 5
        }
        XCTAssertTrue(all.allSatisfy { $0["content_type"] as? String == "application/x-protobuf" })
        XCTAssertEqual((all.first?["headers"] as? [String: Any])?["x-scope-orgid"] as? String, "tenant-7")
        let bodies = OTLPReceiver.bodies(all, path: "/v1/metrics")
        let metrics = OTLPReceiver.items(bodies, "resource_metrics", "scope_metrics", "metrics")
        XCTAssertEqual(metrics.count, 4, "one Metric per name and resource: \(metrics.map(\.item))")
        for m in metrics {
            XCTAssertEqual(m.scope["name"] as? String, "ferret")
            XCTAssertEqual(m.scope["version"] as? String, ferretVersion)
        }
        let resourceA = ["process.pid": "i:4242", "ferret.group": "s:orders", "process.runtime.version": "s:go1.22.10", "ferret.cgo": "b:false"]
        let resourceB = ["process.pid": "i:4343", "ferret.group": "s:billing"]

        // Gauge.
        let gA = try XCTUnwrap(metrics.first { $0.item["name"] as? String == "go.goroutine.count" && $0.resource == resourceA })
        XCTAssertEqual(gA.item["unit"] as? String, "{goroutine}")
        let gp = try XCTUnwrap(((gA.item["gauge"] as? [String: Any])?["data_points"] as? [[String: Any]])?.first)
        XCTAssertEqual(gp["as_double"] as? Double, 53)
        XCTAssertEqual(OTLPReceiver.uint64(gp["time_unix_nano"]), t)
        XCTAssertEqual(OTLPReceiver.attributes(gp["attributes"]), ["s": "s:text", "i": "i:-7000000000", "d": "d:0.25", "b": "b:true"])
        let gB = try XCTUnwrap(metrics.first { $0.item["name"] as? String == "go.goroutine.count" && $0.resource == resourceB })
        XCTAssertEqual(Self.points(gB.item).first?["as_double"] as? Double, 7)

        // Counter: a monotonic cumulative Sum with both series under one Metric.
        let c = try XCTUnwrap(metrics.first { $0.item["name"] as? String == "process.cpu.time" })
        XCTAssertEqual(c.resource, resourceA)
        let sum = try XCTUnwrap(c.item["sum"] as? [String: Any])
        XCTAssertEqual(sum["is_monotonic"] as? Bool, true)
        XCTAssertEqual(sum["aggregation_temporality"] as? String, "AGGREGATION_TEMPORALITY_CUMULATIVE")
        let cps = Self.points(c.item)
        XCTAssertEqual(cps.count, 2)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: cps.map { (OTLPReceiver.attributes($0["attributes"])["cpu.mode"] ?? "", $0["as_double"] as? Double ?? -1) }),
                       ["s:user": 12.5, "s:system": 3.5])
        for p in cps {
            let start = try XCTUnwrap(OTLPReceiver.uint64(p["start_time_unix_nano"]), "a cumulative point has a start")
            XCTAssertLessThanOrEqual(start, t)
        }

        // Histogram.
        let h = try XCTUnwrap(metrics.first { $0.item["name"] as? String == "http.server.request.duration" })
        XCTAssertEqual(h.resource, resourceB)
        XCTAssertEqual((h.item["histogram"] as? [String: Any])?["aggregation_temporality"] as? String, "AGGREGATION_TEMPORALITY_CUMULATIVE")
        let hp = try XCTUnwrap(Self.points(h.item).first)
        XCTAssertEqual(OTLPReceiver.uint64(hp["count"]), 10)
        XCTAssertEqual(hp["sum"] as? Double, 0.125)
        XCTAssertEqual(hp["explicit_bounds"] as? [Double], [0.005, 0.01])
        XCTAssertEqual((hp["bucket_counts"] as? [String])?.compactMap { UInt64($0) }, [3, 5, 2])
    }

    /// Spans keep their ids, parent, kind, status, times and attributes.
    func testSpansArriveWithIdsParentKindStatusAndAttributes() throws {
        let receiver = try OTLPReceiver()
        let sink = try sink(receiver)
        defer { sink.close() }
        let trace = (0..<16).map { UInt8(0xa0 + $0) }
        let root = Span(name: "GET /orders", kind: .server, traceID: trace, spanID: [1, 2, 3, 4, 5, 6, 7, 8], parentSpanID: [],
                        startUnixNano: 1_000, endUnixNano: 5_000, status: .ok, statusMessage: "",
                        attributes: [Attribute("http.request.method", .string("GET")), Attribute("http.response.status_code", .int(200))],
                        resource: processA)
        let child = Span(name: "SELECT orders", kind: .client, traceID: trace, spanID: [9, 9, 9, 9, 9, 9, 9, 9], parentSpanID: [1, 2, 3, 4, 5, 6, 7, 8],
                         startUnixNano: 2_000, endUnixNano: 3_000, status: .error, statusMessage: "deadline exceeded",
                         attributes: [Attribute("db.system", .string("postgresql")), Attribute("retry", .bool(true))], resource: processA)
        try sink.write([.span(root), .span(child)])
        let all = try receiver.waitUntil("2 spans") {
            OTLPReceiver.items(OTLPReceiver.bodies($0, path: "/v1/traces"), "resource_spans", "scope_spans", "spans").count == 2
        }
        let spans = OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/traces"), "resource_spans", "scope_spans", "spans")
        let r = try XCTUnwrap(spans.first { $0.item["name"] as? String == "GET /orders" })
        let c = try XCTUnwrap(spans.first { $0.item["name"] as? String == "SELECT orders" })
        XCTAssertEqual(r.resource["process.pid"], "i:4242")
        XCTAssertEqual(r.scope["name"] as? String, "ferret")
        XCTAssertEqual(OTLPReceiver.bytes(r.item["trace_id"]), trace)
        XCTAssertEqual(OTLPReceiver.bytes(r.item["span_id"]), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertNil(r.item["parent_span_id"], "a root span has no parent")
        XCTAssertEqual(r.item["kind"] as? String, "SPAN_KIND_SERVER")
        XCTAssertEqual((r.item["status"] as? [String: Any])?["code"] as? String, "STATUS_CODE_OK")
        XCTAssertEqual(OTLPReceiver.uint64(r.item["start_time_unix_nano"]), 1_000)
        XCTAssertEqual(OTLPReceiver.uint64(r.item["end_time_unix_nano"]), 5_000)
        XCTAssertEqual(OTLPReceiver.attributes(r.item["attributes"]), ["http.request.method": "s:GET", "http.response.status_code": "i:200"])

        XCTAssertEqual(OTLPReceiver.bytes(c.item["trace_id"]), trace)
        XCTAssertEqual(OTLPReceiver.bytes(c.item["parent_span_id"]), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(OTLPReceiver.bytes(c.item["span_id"]), [9, 9, 9, 9, 9, 9, 9, 9])
        XCTAssertEqual(c.item["kind"] as? String, "SPAN_KIND_CLIENT")
        XCTAssertEqual(c.item["status"] as? [String: String], ["code": "STATUS_CODE_ERROR", "message": "deadline exceeded"])
        XCTAssertEqual(OTLPReceiver.attributes(c.item["attributes"]), ["db.system": "s:postgresql", "retry": "b:true"])
    }

    /// Events become log records: event name, body, severity number and
    /// text, attributes; a sink limited to events sends nothing else.
    func testEventsArriveAsLogRecords() throws {
        let receiver = try OTLPReceiver()
        let sink = try sink(receiver, signals: ["event"])
        defer { sink.close() }
        try sink.write([
            .event(Event(name: "go.goroutine.leak", severity: .warn, body: "goroutines grew 12/s to 4000", timeUnixNano: 77,
                         attributes: [Attribute("go.goroutine.count", .int(4000)), Attribute("growth.rate", .double(12.5))], resource: processB)),
            .event(Event(name: "process.exit", severity: .info, body: "pid 4242 exited", timeUnixNano: 78, resource: processA)),
            .metric(MetricPoint(name: "not.sent", kind: .gauge, value: 1, timeUnixNano: 1, resource: processA)),
        ])
        let all = try receiver.waitUntil("2 log records") {
            OTLPReceiver.items(OTLPReceiver.bodies($0, path: "/v1/logs"), "resource_logs", "scope_logs", "log_records").count == 2
        }
        let records = OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/logs"), "resource_logs", "scope_logs", "log_records")
        let leak = try XCTUnwrap(records.first { $0.item["event_name"] as? String == "go.goroutine.leak" })
        XCTAssertEqual(leak.resource, ["process.pid": "i:4343", "ferret.group": "s:billing"])
        XCTAssertEqual(leak.item["severity_number"] as? String, "SEVERITY_NUMBER_WARN")
        XCTAssertEqual(leak.item["severity_text"] as? String, "WARN")
        XCTAssertEqual(OTLPReceiver.anyValue(leak.item["body"]), "s:goroutines grew 12/s to 4000")
        XCTAssertEqual(OTLPReceiver.uint64(leak.item["time_unix_nano"]), 77)
        XCTAssertNotNil(OTLPReceiver.uint64(leak.item["observed_time_unix_nano"]))
        XCTAssertEqual(OTLPReceiver.attributes(leak.item["attributes"]),
                       ["go.goroutine.count": "i:4000", "growth.rate": "d:12.5", "event.name": "s:go.goroutine.leak"])
        let exit = try XCTUnwrap(records.first { $0.item["event_name"] as? String == "process.exit" })
        XCTAssertEqual(exit.item["severity_number"] as? String, "SEVERITY_NUMBER_INFO")
        XCTAssertEqual(exit.resource["process.pid"], "i:4242")
        usleep(200_000)  // room for a wrong request to show: a measurement window, not a wait
        XCTAssertTrue(receiver.requests().allSatisfy { $0["path"] as? String == "/v1/logs" }, "only events were asked for")
    }

    /// The receiver answers 503 to the first requests; the sink backs off and
    /// retries until every point has arrived (at least once), and counts it.
    func testRetriesAfter503UntilEverythingArrives() throws {
        let receiver = try OTLPReceiver(failFirst: 3)
        let sink = try sink(receiver, retryInitial: .milliseconds(20))
        defer { sink.close() }
        let resource = Resource([Attribute("process.pid", .int(1))])
        for batch in 0..<5 {
            try sink.write((0..<200).map { i in
                .metric(MetricPoint(name: "test.seq", kind: .gauge, value: Double(batch * 200 + i), timeUnixNano: 1, resource: resource))
            })
            try sink.write([.event(Event(name: "test.batch", severity: .info, body: "\(batch)", timeUnixNano: 1, resource: resource))])
            usleep(30_000)  // pacing the batches: not a wait
        }
        func values(_ all: [[String: Any]]) -> [Int] {
            OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/metrics"), "resource_metrics", "scope_metrics", "metrics")
                .flatMap { Self.points($0.item) }.compactMap { ($0["as_double"] as? NSNumber)?.intValue }
        }
        func bodies(_ all: [[String: Any]]) -> Set<String> {
            Set(OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/logs"), "resource_logs", "scope_logs", "log_records")
                .map { OTLPReceiver.anyValue($0.item["body"]) })
        }
        let all = try receiver.waitUntil("1000 points and 5 events after the 503s", timeout: 30) {
            Set(values($0)).count == 1000 && bodies($0).count == 5
        }
        XCTAssertEqual(all.prefix(3).map { $0["status"] as? Int }, [503, 503, 503], "the first three were refused")
        XCTAssertEqual(Set(values(all)), Set(0..<1000), "every point arrived")
        XCTAssertEqual(bodies(all), Set((0..<5).map { "s:\($0)" }))
        // The receiver logs before it answers: give the last answer time to land.
        Wait.until("1005 points delivered", timeout: 5) { sink.delivery.health.delivered >= 1005 }
        let h = sink.delivery.health
        XCTAssertEqual(h.failures, 3)
        XCTAssertEqual(h.delivered, 1005)
        XCTAssertEqual(h.dropped, 0)
        XCTAssertEqual(h.state, .healthy)
        XCTAssertLessThan(all.count, 3 + 1005, "requests of one route were batched")
    }

    /// One large write is split into requests that fit `batch_bytes`, and
    /// small requests of one route are joined up to it: the receiver decodes
    /// each joined body as one request holding them all.
    func testRequestsAreSplitAndJoinedWithinBatchBytes() throws {
        let receiver = try OTLPReceiver()
        var o = DeliveryOptions()
        o.batchBytes = 16_384
        o.flushInterval = .milliseconds(300)
        let sink = try OTLPSink(endpoint: receiver.endpoint, options: o, logger: logger)
        defer { sink.close() }
        let resource = Resource([Attribute("process.pid", .int(1))])
        try sink.write((0..<3000).map { i in
            .metric(MetricPoint(name: "test.seq", kind: .gauge, value: Double(i), timeUnixNano: 1, resource: resource))
        })
        for i in 0..<20 {   // 20 small writes within one flush interval
            try sink.write([.metric(MetricPoint(name: "test.small", kind: .gauge, value: Double(i), timeUnixNano: 1, resource: resource))])
        }
        func values(_ all: [[String: Any]], _ name: String) -> [Int] {
            OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/metrics"), "resource_metrics", "scope_metrics", "metrics")
                .filter { $0.item["name"] as? String == name }.flatMap { Self.points($0.item) }
                .compactMap { ($0["as_double"] as? NSNumber)?.intValue }
        }
        let all = try receiver.waitUntil("3020 points") { values($0, "test.seq").count == 3000 && values($0, "test.small").count == 20 }
        XCTAssertEqual(values(all, "test.seq").sorted(), Array(0..<3000))
        XCTAssertEqual(values(all, "test.small").sorted(), Array(0..<20))
        XCTAssertTrue(all.allSatisfy { ($0["bytes"] as? Int ?? .max) <= 16_384 }, "\(all.map { $0["bytes"] ?? "?" })")
        XCTAssertGreaterThan(all.count, 3, "3000 points do not fit one 16 KiB request")
        // The 20 small requests were joined into few bodies (each a concatenation of requests).
        let small = all.filter { body in values([body], "test.small").count > 0 }
        XCTAssertLessThan(small.count, 5, "small writes joined")
        XCTAssertTrue(small.contains { (OTLPReceiver.bodies([$0], path: "/v1/metrics").first?["resource_metrics"] as? [Any])?.count ?? 0 > 1 })
    }

    /// Config: defaults, keys and errors that name the line.
    func testConfigKeysAndErrors() throws {
        func build(_ entry: String) throws -> ([SinkRunner], [String]) {
            // Loading checks the sinks' values without starting them (what `ferret validate` runs).
            let config: AgentConfig
            do {
                config = try AgentConfig.parse(text: "pipeline:\n  sinks:\n" + entry, file: "config.yaml", knownPlugins: { _ in [] }, components: FerretComponents.all, environment: [:])
            } catch let e as ConfigErrors {
                return ([], e.errors.map(\.description))
            }
            var errors: [ConfigError] = []
            let runners = FerretComponents.all.makeSinkRunners(config.pipeline.sinks, logger: logger, errors: &errors)
            XCTAssertEqual(errors.map(\.description), [], "what loads builds")
            return (runners, errors.map(\.description))
        }
        let (ok, none) = try build("""
            - type: otlp
              endpoint: http://127.0.0.1:4318/
              headers: {Authorization: Bearer x}
              signals: [metric, event]
              timeout: 2s
              flush_interval: 200ms
              batch_bytes: 65536
              buffer_bytes: 1048576
        """)
        XCTAssertEqual(none, [])
        let sink = try XCTUnwrap(ok.first?.sink as? OTLPSink)
        XCTAssertEqual(sink.delivery.options.batchBytes, 65536)
        XCTAssertEqual(sink.delivery.options.flushInterval, .milliseconds(200))
        XCTAssertEqual(sink.delivery.options.timeout, .seconds(2))
        sink.close()

        let (bad, errors) = try build("""
            - type: otlp
              endpoint: localhost:4318
            - type: otlp
              name: second
              signals: [metric, profile]
              headers: {Content-Type: text/plain}
        """)
        XCTAssertTrue(bad.isEmpty)
        XCTAssertTrue(errors.contains { $0.hasPrefix("config.yaml:4:17: 'localhost:4318' is not an http:// or https:// URL in sink 'otlp'") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("config.yaml:7:16: profiles are not sent over OTLP") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("config.yaml:8:17: header 'Content-Type'") }, "\(errors)")
    }

    /// The real agent with an otlp sink: its own metrics, a plugin's metrics
    /// and the host's process events arrive, stamped with their resources.
    func testAgentSendsItsMetricsAndProcessEvents() throws {
        let receiver = try OTLPReceiver()
        let dir = TestSupport.tempDir("otlp-agent")
        TestSupport.manifest(in: dir + "/plugins.d", name: "counter", library: try TestSupport.fixture("counter"))
        let (sleeper, token) = try TestSupport.spawnSleeper()
        defer { if sleeper.isRunning { sleeper.terminate() } }
        let config = """
        agent:
          interval: 100ms
          self_metrics_interval: 200ms
          rescan: 2s
        plugins:
          paths: [plugins.d]
        rules:
          - name: nap
            match:
              comm: sleep
              cmdline: "^/bin/sleep \(token.replacingOccurrences(of: ".", with: "\\\\."))$"
            group: naps
            collectors:
              counter: {}
        pipeline:
          sinks:
            - type: otlp
              endpoint: \(receiver.endpoint)
              flush_interval: 100ms
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        let pid = "i:\(sleeper.processIdentifier)"
        func metrics(_ all: [[String: Any]]) -> [(resource: [String: String], scope: [String: Any], item: [String: Any])] {
            OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/metrics"), "resource_metrics", "scope_metrics", "metrics")
        }
        func records(_ all: [[String: Any]]) -> [(resource: [String: String], scope: [String: Any], item: [String: Any])] {
            OTLPReceiver.items(OTLPReceiver.bodies(all, path: "/v1/logs"), "resource_logs", "scope_logs", "log_records")
        }
        let all = try receiver.waitUntil("self metrics, the counter fixture's histogram and process.attach", timeout: 30) { all in
            let m = metrics(all)
            return m.contains { $0.item["name"] as? String == "ferret.pipeline.points.accepted" }
                && m.contains { $0.item["name"] as? String == "test.latency" && $0.resource["process.pid"] == pid }
                && records(all).contains { $0.item["event_name"] as? String == "process.attach" && $0.resource["process.pid"] == pid }
        }
        XCTAssertTrue(all.allSatisfy { $0["status"] as? Int == 200 }, "every request decoded: \(all.filter { $0["status"] as? Int != 200 })")
        let accepted = try XCTUnwrap(metrics(all).first { $0.item["name"] as? String == "ferret.pipeline.points.accepted" })
        XCTAssertEqual((accepted.item["sum"] as? [String: Any])?["is_monotonic"] as? Bool, true, "a counter: \(accepted.item)")
        XCTAssertGreaterThan(Self.points(accepted.item).first?["as_double"] as? Double ?? 0, 0)
        XCTAssertEqual(accepted.scope["name"] as? String, "ferret")
        let latency = try XCTUnwrap(metrics(all).first { $0.item["name"] as? String == "test.latency" && $0.resource["process.pid"] == pid })
        XCTAssertEqual(latency.resource["ferret.group"], "s:naps")
        XCTAssertEqual(latency.resource["ferret.rule"], "s:nap")
        XCTAssertEqual((Self.points(latency.item).first?["bucket_counts"] as? [String])?.compactMap { Int($0) }, [1, 2, 3])
        let attach = try XCTUnwrap(records(all).first { $0.item["event_name"] as? String == "process.attach" && $0.resource["process.pid"] == pid })
        XCTAssertEqual(attach.item["severity_text"] as? String, "INFO")
        XCTAssertEqual(OTLPReceiver.attributes(attach.item["attributes"])["ferret.collectors"], "s:counter")
        XCTAssertTrue(OTLPReceiver.anyValue(attach.item["body"]).contains("joined group 'naps'"))

        // The exit event too, and the sink's health in the agent's own metrics.
        sleeper.terminate()
        try receiver.waitUntil("process.exit and ferret.sink.healthy", timeout: 15) { all in
            records(all).contains { $0.item["event_name"] as? String == "process.exit" && $0.resource["process.pid"] == pid }
                && metrics(all).contains { $0.item["name"] as? String == "ferret.sink.healthy" }
        }
        XCTAssertEqual(agent.stop(), 0, "SIGTERM exits 0: \(agent.stderr)")
    }

    static func points(_ metric: [String: Any]) -> [[String: Any]] {
        for kind in ["gauge", "sum", "histogram"] {
            if let d = metric[kind] as? [String: Any] { return d["data_points"] as? [[String: Any]] ?? [] }
        }
        return []
    }
}
