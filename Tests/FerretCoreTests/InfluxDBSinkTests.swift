import FerretCore
@testable import FerretDelivery
import Foundation
import GoTestSupport
import Logging
@testable import SinkInfluxDB
import XCTest

/// A real InfluxDB 1.6 (Debian's `influxdb`) on loopback, in a temporary
/// directory, started and stopped by the test.
final class InfluxServer {
    let dir: String
    let port: Int
    private(set) var process: Process?
    var url: String { "http://127.0.0.1:\(port)" }

    init() throws {
        dir = TestSupport.tempDir("influxd")
        port = try TestSupport.freePort()
        let rpc = try TestSupport.freePort()
        let config = """
            reporting-disabled = true
            bind-address = "127.0.0.1:\(rpc)"
            [meta]
              dir = "\(dir)/meta"
            [data]
              dir = "\(dir)/data"
              wal-dir = "\(dir)/wal"
              query-log-enabled = false
            [monitor]
              store-enabled = false
            [http]
              enabled = true
              bind-address = "127.0.0.1:\(port)"
              log-enabled = false
            [continuous_queries]
              enabled = false
            [ifql]
              enabled = false
            [logging]
              level = "warn"
            """
        try config.write(toFile: dir + "/influxdb.conf", atomically: true, encoding: .utf8)
        try start()
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/influxd")
        p.arguments = ["-config", dir + "/influxdb.conf"]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = dir + "/influxd.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        try p.run()
        process = p
        if Wait.until("influxd answering /ping", timeout: 30, poll: 0.1, {
            if case .success(let a) = get("/ping"), a.status == 204 { return true }
            return false
        }) { return }
        throw TestSupport.TestError("influxd did not answer /ping on \(url) within 30 s: \(String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self).suffix(2000))")
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    deinit { stop() }

    func get(_ pathAndQuery: String) -> Result<HTTPPoster.Answer, any Error> {
        guard let poster = try? HTTPPoster(url: url + pathAndQuery, method: .GET, headers: [], timeout: .seconds(10)) else {
            return .failure(TestSupport.TestError("bad url"))
        }
        return poster.exchange([], maxBody: 64 << 20)
    }

    /// Runs InfluxQL; returns the decoded JSON answer.
    func query(_ q: String, db: String) throws -> [String: Any] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let path = "/query?epoch=ns&db=\(db.addingPercentEncoding(withAllowedCharacters: allowed)!)&q=\(q.addingPercentEncoding(withAllowedCharacters: allowed)!)"
        let a = try get(path).get()
        guard a.status == 200, let obj = try JSONSerialization.jsonObject(with: Data(a.body.utf8)) as? [String: Any] else {
            throw TestSupport.TestError("query \(q): HTTP \(a.status) \(a.body.prefix(500))")
        }
        return obj
    }

    /// The series of a query's first result: name, tags, columns, rows.
    func series(_ q: String, db: String) throws -> [(name: String, tags: [String: String], columns: [String], values: [[Any]])] {
        let obj = try query(q, db: db)
        let results = obj["results"] as? [[String: Any]] ?? []
        if let e = results.first?["error"] as? String { throw TestSupport.TestError("query \(q): \(e)") }
        return (results.first?["series"] as? [[String: Any]] ?? []).map {
            ($0["name"] as? String ?? "", $0["tags"] as? [String: String] ?? [:], $0["columns"] as? [String] ?? [],
             $0["values"] as? [[Any]] ?? [])
        }
    }

    /// How many metric points a database holds: one `value` per gauge or
    /// counter point, one `count` per histogram point.
    func pointCount(db: String) throws -> Int {
        var n = 0
        for field in ["value", "count"] {
            for s in try series("SELECT COUNT(\"\(field)\") FROM /.*/", db: db) {
                for row in s.values { n += (row.last as? NSNumber)?.intValue ?? 0 }
            }
        }
        return n
    }
}

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

extension TestSupport {
    /// A TCP port on loopback that nothing listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw TestError("bind: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
