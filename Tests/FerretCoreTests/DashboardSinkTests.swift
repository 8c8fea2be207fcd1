@testable import FerretCore
import Foundation
import Logging
import XCTest

/// The dashboard sink's JSON API over real HTTP (issue #9): groups, series and
/// their points, events newest first, traces with nested spans.
final class DashboardSinkTests: XCTestCase {
    func resource(pid: Int64, group: String, go: String?) -> Resource {
        var a = [Attribute("process.pid", .int(pid)), Attribute("ferret.group", .string(group)), Attribute("ferret.rule", .string("r-" + group)),
                 Attribute("process.executable.name", .string(group + "-exe"))]
        if let go {
            a += [Attribute("process.runtime.version", .string(go)), Attribute("process.linkage", .string("static"))]
        }
        return Resource(a)
    }

    func json(_ port: Int, _ path: String) throws -> [String: Any] {
        let r = try HTTP.get(port: port, path: path, timeout: 5)
        XCTAssertEqual(r.status, 200, "\(path): \(r.text)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: r.body) as? [String: Any], r.text)
    }

    func testJSONAPI() throws {
        let sink = try DashboardSink(name: "d", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { sink.close() }
        let port = try XCTUnwrap(sink.port)
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let a = resource(pid: 101, group: "leaky", go: "go1.27.3"), b = resource(pid: 202, group: "burner", go: "go1.19.8")
        var batch: [Signal] = []
        for i in 0..<30 {
            let t = now - UInt64(30 - i) * 1_000_000_000
            batch.append(.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: Double(10 + i),
                                             histogram: nil, timeUnixNano: t, attributes: [], resource: a)))
            batch.append(.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: 7,
                                             histogram: nil, timeUnixNano: t, attributes: [], resource: b)))
        }
        batch.append(.event(Event(name: "process.start", severity: .info, body: "started", timeUnixNano: now - 40_000_000_000, resource: a)))
        batch.append(.event(Event(name: "go.goroutine.leak", severity: .warn, body: "leaking", timeUnixNano: now, resource: a)))
        let trace: [UInt8] = Array(repeating: 0xab, count: 16)
        let server = Span(name: "GET /call/", kind: .server, traceID: trace, spanID: [1, 1, 1, 1, 1, 1, 1, 1], parentSpanID: [],
                          startUnixNano: now - 5_000_000, endUnixNano: now, status: .unset, statusMessage: "", attributes: [], resource: a)
        let client = Span(name: "GET", kind: .client, traceID: trace, spanID: [2, 2, 2, 2, 2, 2, 2, 2], parentSpanID: server.spanID,
                          startUnixNano: now - 4_000_000, endUnixNano: now - 1_000_000, status: .unset, statusMessage: "", attributes: [], resource: a)
        batch += [.span(client), .span(server)]
        try sink.write(batch)

        let overview = try json(port, "/api/overview")
        let groups = try XCTUnwrap(overview["groups"] as? [[String: Any]])
        XCTAssertEqual(groups.map { $0["name"] as? String }, ["burner", "leaky"])
        XCTAssertEqual(groups[1]["go_versions"] as? [String], ["go1.27.3"])
        XCTAssertEqual(groups[1]["instances"] as? Int, 1)
        XCTAssertEqual(groups[0]["rule"] as? String, "r-burner")

        let series = try XCTUnwrap(try json(port, "/api/series?pid=101")["series"] as? [[String: Any]])
        XCTAssertEqual(series.count, 1)
        XCTAssertEqual(series[0]["last"] as? Double, 39)
        let points = try XCTUnwrap(try json(port, "/api/series/points?name=go.goroutine.count&pid=101")["points"] as? [[Double]])
        XCTAssertEqual(points.count, 30)
        XCTAssertEqual(points.last?[4], 39, "the last point's value equals the series' last value")

        let events = try XCTUnwrap(try json(port, "/api/events")["events"] as? [[String: Any]])
        XCTAssertEqual(events.map { $0["name"] as? String }, ["go.goroutine.leak", "process.start"], "newest first")

        let traces = try XCTUnwrap(try json(port, "/api/traces")["traces"] as? [[String: Any]])
        XCTAssertEqual(traces.count, 1)
        XCTAssertEqual(traces[0]["name"] as? String, "GET /call/", "the root span names the trace")
        let id = try XCTUnwrap(traces[0]["id"] as? String)
        XCTAssertEqual(id, String(repeating: "ab", count: 16))
        let spans = try XCTUnwrap(try json(port, "/api/traces/\(id)")["spans"] as? [[String: Any]])
        XCTAssertEqual(spans.map { $0["kind"] as? String }, ["server", "client"])
        XCTAssertEqual(spans[1]["parent_span_id"] as? String, spans[0]["span_id"] as? String, "the client span nests under the server span")

        XCTAssertEqual(try HTTP.get(port: port, path: "/api/nothing").status, 404)
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/overview", method: "POST").status, 405)
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/series/points").status, 400)
    }

    func testConfigErrorsNameTheKey() throws {
        let yaml = """
        pipeline:
          sinks:
            - type: dashboard
              listen: "nowhere"
              max_events: 3
        """
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml, file: "c.yaml")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("c.yaml:4:") && text.contains("invalid 'listen' address 'nowhere'"), text)
            XCTAssertTrue(text.contains("c.yaml:5:") && text.contains("'max_events'"), text)
        }
    }
}
