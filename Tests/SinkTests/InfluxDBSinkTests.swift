import FerretTestSupport
import FerretCore
@testable import FerretDelivery
import Foundation
import GoTestSupport
import Logging
@testable import SinkInfluxDB
import XCTest


final class InfluxDBSinkTests: XCTestCase {
    let logger = Logger(label: "test")

    func resource(pid: Int64, group: String) -> Resource {
        Resource([Attribute("process.pid", .int(pid)), Attribute("ferret.group", .string(group)),
                  Attribute("host.name", .string("h1")), Attribute("process.command_line", .string("not a tag"))])
    }

    /// Points written through the sink come back from InfluxQL with their
    /// tags (escaped characters included) and values intact; the missing
    /// database is created on the way.
    func testPointsRoundTripThroughInfluxQL() throws {
        let server = try InfluxServer()
        let sink = try InfluxDBSink(url: server.url, database: "roundtrip", signals: ["metric", "event", "span"], logger: logger)
        let r = resource(pid: 4242, group: "web, tier=1")
        let t0: UInt64 = 1_700_000_000_000_000_000
        var batch: [Signal] = []
        for i in 0..<100 {
            batch.append(.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: Double(10 + i),
                                             timeUnixNano: t0 + UInt64(i) * 1_000_000_000, resource: r)))
        }
        batch.append(.metric(MetricPoint(name: "process.cpu.time", kind: .counter, unit: "s", value: 12.625, timeUnixNano: t0,
                                         attributes: [Attribute("cpu.mode", .string("user"))], resource: r)))
        batch.append(.metric(MetricPoint(name: "not.finite", kind: .gauge, value: .nan, timeUnixNano: t0, resource: r)))
        batch.append(.metric(MetricPoint(name: "http.server.request.duration", kind: .histogram, unit: "s",
                                         histogram: HistogramData(count: 6, sum: 2.5, bounds: [0.1, 1], bucketCounts: [1, 2, 3]),
                                         timeUnixNano: t0, resource: r)))
        batch.append(.event(Event(name: "go.goroutine.leak", severity: .warn, body: "goroutines grow: \"12/s\"\nsince 60 s",
                                  timeUnixNano: t0, attributes: [Attribute("go.goroutine.count", .int(812)),
                                                                 Attribute("rule", .string("a=b"))], resource: r)))
        try sink.write(batch)
        sink.close()
        let h = sink.delivery.health
        XCTAssertEqual(h.accepted, 103, "NaN is left out; 100 + counter + histogram + event")
        XCTAssertEqual(h.delivered, 103, "\(h)")
        XCTAssertEqual(h.dropped + h.rejected, 0)

        let g = try server.series("SELECT * FROM \"go.goroutine.count\" GROUP BY *", db: "roundtrip")
        XCTAssertEqual(g.count, 1)
        XCTAssertEqual(g.first?.tags["ferret.group"], "web, tier=1")
        XCTAssertEqual(g.first?.tags["process.pid"], "4242")
        XCTAssertEqual(g.first?.tags["host.name"], "h1")
        XCTAssertNil(g.first?.tags["process.command_line"], "only the chosen resource attributes become tags")
        let values = g.first?.values.map { ($0[1] as? NSNumber)?.doubleValue ?? -1 } ?? []
        XCTAssertEqual(values, (0..<100).map { Double(10 + $0) })
        XCTAssertEqual((g.first?.values.first?[0] as? NSNumber)?.uint64Value, t0, "nanosecond timestamps")

        let cpu = try server.series("SELECT \"value\" FROM \"process.cpu.time\" GROUP BY \"cpu.mode\"", db: "roundtrip")
        XCTAssertEqual(cpu.first?.tags["cpu.mode"], "user")
        XCTAssertEqual((cpu.first?.values.first?[1] as? NSNumber)?.doubleValue, 12.625)

        let hist = try server.series("SELECT \"count\", \"sum\", \"le_0.1\", \"le_1.0\", \"le_inf\" FROM \"http.server.request.duration\"", db: "roundtrip")
        let row = hist.first?.values.first?.dropFirst().map { ($0 as? NSNumber)?.doubleValue ?? -1 } ?? []
        XCTAssertEqual(row, [6, 2.5, 1, 3, 6], "count, sum and cumulative buckets")

        let ev = try server.series("SELECT * FROM \"go.goroutine.leak\"", db: "roundtrip")
        let cols = ev.first?.columns ?? []
        let evRow = ev.first?.values.first ?? []
        func col(_ name: String) -> Any? { cols.firstIndex(of: name).map { evRow[$0] } }
        XCTAssertEqual(col("body") as? String, "goroutines grow: \"12/s\"\\nsince 60 s")
        XCTAssertEqual((col("go.goroutine.count") as? NSNumber)?.intValue, 812)
        XCTAssertEqual(col("rule") as? String, "a=b")
        XCTAssertEqual(col("severity") as? String, "warn")
        XCTAssertTrue(try server.series("SHOW MEASUREMENTS", db: "roundtrip").first?.values.contains { ($0.first as? String) == "not.finite" } == false)
    }

    /// `ferret validate` checks a network sink's values (without starting it)
    /// and names the line and column of each bad one.
    func testValidateNamesBadSinkValues() throws {
        let dir = TestSupport.tempDir("validate-sinks")
        let config = """
            rules: []
            pipeline:
              sinks:
                - type: influxdb
                  url: "ftp://nowhere"
                  buffer_bytes: lots
                - type: webhook
                  url: http://127.0.0.1:1/hook
                  min_severity: loud
                  retry_initial: 10s
                  retry_max: 1s
            """
        try config.write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let r = try TestSupport.run(TestSupport.ferret, ["validate", "--config", dir + "/config.yaml"])
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        XCTAssertTrue(r.stderr.contains("config.yaml:6:21"), r.stderr)      // buffer_bytes
        XCTAssertTrue(r.stderr.contains("config.yaml:9:21"), r.stderr)      // min_severity
        XCTAssertTrue(r.stderr.contains("'retry_max'"), r.stderr)
        XCTAssertTrue(r.stderr.contains("config.yaml:5:12") && r.stderr.contains("ftp://nowhere"), r.stderr)
        // Fixed values: the URL is the last problem left.
        let fixed = config.replacingOccurrences(of: "lots", with: "1048576").replacingOccurrences(of: "loud", with: "warn")
            .replacingOccurrences(of: "retry_max: 1s", with: "retry_max: 30s")
        try fixed.write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let r2 = try TestSupport.run(TestSupport.ferret, ["validate", "--config", dir + "/config.yaml"])
        XCTAssertEqual(r2.status, 1)
        XCTAssertTrue(r2.stderr.contains("config.yaml:5:12") && r2.stderr.contains("ftp://nowhere"), r2.stderr)
    }

    /// A receiver that refuses a batch for good (a field type conflict) gets
    /// it counted as rejected, not retried forever; later batches still go.
    func testRefusedBatchIsCountedAsRejected() throws {
        let server = try InfluxServer()
        let sink = try InfluxDBSink(url: server.url, database: "conflict", logger: logger)
        let r = resource(pid: 1, group: "g")
        try sink.write([.metric(MetricPoint(name: "m", kind: .gauge, value: 1, timeUnixNano: 1_700_000_000_000_000_000, resource: r))])
        let deadline = Date().addingTimeInterval(10)  // for both waits
        Wait.until("the first point delivered", timeout: 10, poll: 0.05) { sink.delivery.health.delivered >= 1 }
        // An event named like the metric, carrying a boolean `value`: InfluxDB answers 400 (field type conflict).
        try sink.write([.event(Event(name: "m", severity: .info, body: "x", timeUnixNano: 1_700_000_000_000_000_001,
                                     attributes: [Attribute("value", .bool(true))], resource: r))])
        Wait.until("the refused request", timeout: deadline.timeIntervalSinceNow, poll: 0.05) { sink.delivery.health.requests >= 2 }
        try sink.write([.metric(MetricPoint(name: "m2", kind: .gauge, value: 2, timeUnixNano: 1_700_000_000_000_000_002, resource: r))])
        sink.close()
        let h = sink.delivery.health
        XCTAssertEqual(h.delivered, 2, "\(h)")
        XCTAssertEqual(h.rejected, 1, "\(h)")
        XCTAssertEqual(h.failures, 0, "a refusal is not retried: \(h)")
        XCTAssertTrue(h.lastError?.contains("conflict") == true, "\(h)")
        XCTAssertEqual(try server.pointCount(db: "conflict"), 2)
    }
}

