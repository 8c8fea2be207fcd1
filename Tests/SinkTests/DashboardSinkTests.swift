@testable import FerretComponents
@testable import FerretCore
import FerretTestSupport
import Foundation
import Logging
import Pprof
@testable import SinkDashboard
import XCTest

/// The dashboard sink's JSON API over real HTTP (issue #9): groups, series and
/// their points, events newest first, traces with nested spans, alerts firing
/// and resolved, per-route HTTP figures, the latest profile, and the pages.
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

        let byGroup = try XCTUnwrap(try json(port, "/api/series/batch?group=leaky&names=go.goroutine.count")["series"] as? [[String: Any]])
        XCTAssertEqual(byGroup.map { $0["pid"] as? Int }, [101], "a group's series: those of its processes")
        XCTAssertEqual((byGroup.first?["points"] as? [[Double]])?.count, 30)
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/series/batch?names=x").status, 400)

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

        // One trace id for ever (a client that always sends the same traceparent): bounded.
        var flood: [Signal] = []
        for i in 0..<1500 {
            flood.append(.span(Span(name: "GET /same", kind: .server, traceID: Array(repeating: 0xcd, count: 16),
                                    spanID: withUnsafeBytes(of: UInt64(i + 1).bigEndian, Array.init), parentSpanID: [],
                                    startUnixNano: now, endUnixNano: now + 1000, status: .unset, statusMessage: "", attributes: [], resource: b)))
        }
        try sink.write(flood)
        let same = try json(port, "/api/traces/" + String(repeating: "cd", count: 16))
        XCTAssertEqual((same["spans"] as? [Any])?.count, 1000)
        XCTAssertEqual(same["dropped_spans"] as? Int, 500)

        // The pages are served by the agent itself, with no reference to another host.
        for (path, type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
            let r = try HTTP.get(port: port, path: path, timeout: 5)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertTrue(r.text.count > 500, path)
            XCTAssertTrue((r.headers["content-type"] ?? "").hasPrefix(type), "\(path): \(r.headers)")
            // The SVG namespace is a name, not an address.
            let text = r.text.replacingOccurrences(of: "\"http://www.w3.org/2000/svg\"", with: "")
            XCTAssertFalse(text.contains("http://") || text.contains("https://") || text.contains("//cdn"), "\(path) fetches nothing from elsewhere")
        }

        XCTAssertEqual(try HTTP.get(port: port, path: "/api/nothing").status, 404)
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/overview", method: "POST").status, 405)
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/series/points").status, 400)
    }

    func testProcessPropertiesAlertsRoutesAndProfiles() throws {
        let sink = try DashboardSink(name: "d", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { sink.close() }
        let port = try XCTUnwrap(sink.port)
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let r = Resource(resource(pid: 7, group: "web", go: "go1.24.11").attributes + [
            Attribute("process.executable.stripped", .bool(true)), Attribute("go.module.path", .string("example.com/web")),
            Attribute("go.build.settings", .string("CGO_ENABLED=0\n-ldflags=-s -w")),
        ])
        // Process properties.
        try sink.write([.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 3, timeUnixNano: now, resource: r))])
        let p = try json(port, "/api/process?pid=7")
        XCTAssertEqual(p["stripped"] as? Bool, true)
        XCTAssertEqual(p["module"] as? String, "example.com/web")
        XCTAssertEqual(p["build_settings"] as? [String], ["CGO_ENABLED=0", "-ldflags=-s -w"])
        XCTAssertEqual(p["health"] as? String, "ok")
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/process?pid=8").status, 404)

        // An alert fires: the group's health and its alerts say so; resolved, they clear.
        func alert(_ state: String, at t: UInt64) -> Signal {
            .event(Event(name: "alert", severity: state == "firing" ? .warn : .info, body: "too many goroutines (\(state))", timeUnixNano: t,
                         attributes: [Attribute("rule", .string("goroutines")), Attribute("state", .string(state)),
                                      Attribute("metric", .string("go.goroutine.count"))], resource: r))
        }
        try sink.write([alert("firing", at: now)])
        var group = try XCTUnwrap((try json(port, "/api/overview")["groups"] as? [[String: Any]])?.first)
        XCTAssertEqual(group["health"] as? String, "alert")
        XCTAssertEqual((group["alerts"] as? [[String: Any]])?.map { $0["body"] as? String }, ["too many goroutines (firing)"])
        XCTAssertEqual((try json(port, "/api/alerts")["alerts"] as? [Any])?.count, 1)
        try sink.write([alert("resolved", at: now + 1)])
        group = try XCTUnwrap((try json(port, "/api/overview")["groups"] as? [[String: Any]])?.first)
        XCTAssertEqual(group["health"] as? String, "ok")
        XCTAssertEqual((try json(port, "/api/alerts")["alerts"] as? [Any])?.count, 0)

        // Server spans give per-route rate, errors and percentiles (log buckets: within 7 %).
        var spans: [Signal] = []
        for i in 0..<100 {
            let d = UInt64(i + 1) * 1_000_000 // 1..100 ms
            let id = (0..<8).map { _ in UInt8.random(in: 0...255) }
            spans.append(.span(Span(name: "GET /items/{id}", kind: .server, traceID: (0..<16).map { _ in UInt8.random(in: 0...255) },
                                    spanID: id, parentSpanID: [], startUnixNano: now - d, endUnixNano: now,
                                    status: i % 10 == 0 ? .error : .unset, statusMessage: "", attributes: [], resource: r)))
        }
        try sink.write(spans)
        let routes = try XCTUnwrap(try json(port, "/api/http?group=web&from=\(now / 1_000_000 - 60_000)")["routes"] as? [[String: Any]])
        XCTAssertEqual(routes.count, 1)
        XCTAssertEqual(routes[0]["route"] as? String, "GET /items/{id}")
        XCTAssertEqual(routes[0]["requests"] as? Int, 100)
        XCTAssertEqual(routes[0]["errors"] as? Int, 10)
        XCTAssertEqual(routes[0]["error_rate"] as? Double ?? 0, 0.1, accuracy: 1e-9)
        for (k, exact) in [("p50", 0.050), ("p95", 0.095), ("p99", 0.099)] {
            let v = routes[0][k] as? Double ?? 0
            XCTAssertLessThanOrEqual(abs(v - exact) / exact, 0.075, "\(k) \(v) vs \(exact)")
        }
        let buckets = try XCTUnwrap(try json(port, "/api/http/series?group=web&route=GET%20/items/%7Bid%7D")["points"] as? [[Double]])
        XCTAssertEqual(buckets.count, 1)
        XCTAssertEqual(buckets[0][1], 100)
        let slowest = try XCTUnwrap(try json(port, "/api/traces?sort=slowest&limit=3")["traces"] as? [[String: Any]])
        XCTAssertEqual(slowest.compactMap { $0["duration_ns"] as? Int }, [100_000_000, 99_000_000, 98_000_000])

        // The latest profile: top functions, the flame graph's tree, the .pb.gz.
        let b = PprofBuilder.cpu(frequencyHz: 99, timeNanos: Int64(now), durationNanos: 10_000_000_000)
        let main = PprofFrame(function: "main.main"), hot = PprofFrame(function: "main.hot"), cold = PprofFrame(function: "main.cold")
        b.addSample(stack: [(0x30, nil, [hot]), (0x10, nil, [main])], values: [3, 30_000_000])
        b.addSample(stack: [(0x40, nil, [cold]), (0x10, nil, [main])], values: [1, 10_000_000])
        let data = try b.gzippedData()
        try sink.write([.profile(Profile(data: data, profileType: "cpu", startUnixNano: now, durationNano: 10_000_000_000, samples: 4,
                                         path: nil, attributes: [], resource: r))])
        let withProfile = try json(port, "/api/process?pid=7")
        XCTAssertEqual(withProfile["has_profile"] as? Bool, true)
        XCTAssertEqual(withProfile["profile_start"] as? Int, Int(now / 1_000_000), "what the hotspots page compares to skip an unchanged profile")
        let prof = try json(port, "/api/profile?pid=7")
        let view = try XCTUnwrap(prof["view"] as? [String: Any])
        XCTAssertEqual(view["total"] as? Int, 4)
        let fns = try XCTUnwrap(view["functions"] as? [[String: Any]])
        XCTAssertEqual(fns.first?["name"] as? String, "main.hot")
        XCTAssertEqual(fns.first?["flat"] as? Int, 3)
        XCTAssertEqual(fns.first { $0["name"] as? String == "main.main" }?["cumulative"] as? Int, 4)
        let flame = try XCTUnwrap(view["flame"] as? [String: Any])
        let top = try XCTUnwrap((flame["c"] as? [[String: Any]])?.first)
        XCTAssertEqual(top["n"] as? String, "main.main")
        XCTAssertEqual((top["c"] as? [[String: Any]])?.map { $0["n"] as? String }, ["main.cold", "main.hot"])
        let file = try HTTP.get(port: port, path: "/api/profile.pb.gz?pid=7", timeout: 5)
        XCTAssertEqual(file.status, 200)
        XCTAssertEqual(Array(file.body), data, "the download is the profile as received")
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/profile?pid=8").status, 404)
    }

    /// The goroutines page's API: the latest census's groups (a generic creator
    /// whose name holds commas stays whole), each with its trend, growth and
    /// oldest wait, the stacks of the goroutine profile samples labelled with
    /// the group, the leak alert marking the groups it names; a goroutine
    /// profile sits beside the CPU profile instead of replacing it.
    func testGoroutineGroupsWithStacksAndTheLeakAlert() throws {
        let sink = try DashboardSink(name: "d", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { sink.close() }
        let port = try XCTUnwrap(sink.port)
        let r = resource(pid: 9, group: "proxy", go: "go1.27.3")
        let t0 = UInt64(Date().timeIntervalSince1970) * 1_000_000_000 - 30_000_000_000
        struct G { var start, creator, location, state: String; var counts: [Double] }
        let groups = [
            G(start: "net/http.(*persistConn).readLoop", creator: "net/http.(*Transport).dialConn", location: "/go/src/net/http/transport.go:2123",
              state: "IO wait", counts: [10, 20, 30]),
            G(start: "main.work[go.shape.int,go.shape.string]", creator: "main.spawn[go.shape.int,go.shape.string]", location: "/src/main.go:9",
              state: "chan receive", counts: [5, 5, 5]),
            G(start: "main.gone", creator: "main.main", location: "/src/main.go:3", state: "sleep", counts: [1, 1]),  // not in the last census
        ]
        func attrs(_ g: G) -> [Attribute] {
            [Attribute("go.goroutine.start", .string(g.start)), Attribute("go.goroutine.creator", .string(g.creator)),
             Attribute("go.goroutine.creator.location", .string(g.location)), Attribute("go.goroutine.state", .string(g.state))]
        }
        for k in 0..<3 {
            let t = t0 + UInt64(k) * 10_000_000_000
            var batch: [Signal] = []
            for g in groups where k < g.counts.count {
                batch.append(.metric(MetricPoint(name: "go.goroutine.group.count", kind: .gauge, value: g.counts[k], timeUnixNano: t,
                                                 attributes: attrs(g), resource: r)))
                batch.append(.metric(MetricPoint(name: "go.goroutine.group.growth_rate", kind: .gauge, value: k == 0 ? 0 : g.counts[k] - g.counts[k - 1],
                                                 timeUnixNano: t, attributes: attrs(g), resource: r)))
                batch.append(.metric(MetricPoint(name: "go.goroutine.group.oldest_wait", kind: .gauge, value: Double(k) * 10, timeUnixNano: t,
                                                 attributes: attrs(g), resource: r)))
            }
            try sink.write(batch)
        }
        // The goroutine profile: two stacks for readLoop's group, labelled as the goroutines plugin labels them.
        let b = PprofBuilder(sampleTypes: [("goroutine", "count")], periodType: ("goroutine", "count"), period: 1,
                             timeNanos: Int64(t0 + 20_000_000_000), durationNanos: 0)
        let park = PprofFrame(function: "runtime.gopark", file: "/go/src/runtime/proc.go", line: 435)
        let read = PprofFrame(function: "net/http.(*persistConn).readLoop", file: "/go/src/net/http/transport.go", line: 2300)
        let labels = ["goroutine.start": groups[0].start, "goroutine.creator": groups[0].creator,
                      "goroutine.creator.location": groups[0].location, "goroutine.state": groups[0].state]
        b.addSample(stack: [(0x10, nil, [park]), (0x20, nil, [read])], values: [28], labels: labels)
        b.addSample(stack: [(0x10, nil, [park]), (0x30, nil, [PprofFrame(function: "net/http.(*persistConn).readLoop", line: 2301)])],
                    values: [2], labels: labels)
        try sink.write([.profile(Profile(data: try b.gzippedData(), profileType: "goroutine", startUnixNano: t0 + 20_000_000_000, durationNano: 0,
                                         samples: 30, path: nil, attributes: [], resource: r))])
        let cpu = PprofBuilder.cpu(frequencyHz: 99, timeNanos: Int64(t0), durationNanos: 10_000_000_000)
        cpu.addSample(stack: [(0x10, nil, [PprofFrame(function: "main.hot")])], values: [1, 10_000_000])
        try sink.write([.profile(Profile(data: try cpu.gzippedData(), profileType: "cpu", startUnixNano: t0, durationNano: 10_000_000_000,
                                         samples: 1, path: nil, attributes: [], resource: r))])
        // The leak alert names readLoop's group the way goroutine_leak writes it.
        try sink.write([.event(Event(name: "go.goroutine.leak", severity: .warn, body: "goroutines grew", timeUnixNano: t0 + 20_000_000_000,
                                     attributes: [Attribute("go.goroutine.leak.groups", .string(
                                         "net/http.(*persistConn).readLoop created by net/http.(*Transport).dialConn at "
                                             + "/go/src/net/http/transport.go:2123 [IO wait]: 10 -> 30 (1/s)"))], resource: r))])

        let from = t0 / 1_000_000 - 1000
        let v = try json(port, "/api/goroutines?pid=9&from=\(from)")
        let list = try XCTUnwrap(v["groups"] as? [[String: Any]])
        XCTAssertEqual(list.map { $0["start"] as? String }, [groups[0].start, groups[1].start], "the latest census's groups, largest first")
        let rl = list[0], generic = list[1]
        XCTAssertEqual(rl["creator"] as? String, groups[0].creator)
        XCTAssertEqual(rl["location"] as? String, groups[0].location)
        XCTAssertEqual(rl["state"] as? String, "IO wait")
        XCTAssertEqual(rl["count"] as? Double, 30)
        XCTAssertEqual(rl["growth_rate"] as? Double, 10)
        XCTAssertEqual(rl["oldest_wait"] as? Double, 20)
        XCTAssertEqual((rl["trend"] as? [[Double]])?.map { $0[1] }, [10, 20, 30])
        XCTAssertEqual(rl["leaking"] as? Bool, true)
        let stacks = try XCTUnwrap(rl["stacks"] as? [[String: Any]])
        XCTAssertEqual(stacks.map { $0["count"] as? Int }, [28, 2])
        XCTAssertEqual((stacks[0]["frames"] as? [[String: Any]])?.map { $0["function"] as? String },
                       ["runtime.gopark", "net/http.(*persistConn).readLoop"])
        XCTAssertEqual((stacks[0]["frames"] as? [[String: Any]])?.last?["line"] as? Int, 2300)
        XCTAssertEqual(generic["creator"] as? String, groups[1].creator, "a value with commas stays whole")
        XCTAssertEqual(generic["leaking"] as? Bool, false)
        XCTAssertEqual((generic["stacks"] as? [Any])?.count, 0)
        XCTAssertEqual((v["leak"] as? [String: Any])?["body"] as? String, "goroutines grew")
        XCTAssertEqual(try json(port, "/api/process?pid=9")["has_goroutines"] as? Bool, true)
        // Both profiles are kept, by type.
        XCTAssertEqual((try json(port, "/api/profile?pid=9")["view"] as? [String: Any])?["total"] as? Int, 1)
        XCTAssertEqual((try json(port, "/api/profile?pid=9&type=goroutine")["view"] as? [String: Any])?["total"] as? Int, 30)
        XCTAssertEqual((try json(port, "/api/profiles")["profiles"] as? [[String: Any]])?.map { $0["type"] as? String }, ["cpu", "goroutine"])
        XCTAssertEqual(try HTTP.get(port: port, path: "/api/goroutines").status, 400)
        XCTAssertEqual((try json(port, "/api/goroutines?pid=10")["groups"] as? [Any])?.count, 0)
    }

    /// `ferret status` reads the overview from a running dashboard, and says
    /// clearly when there is none.
    func testFerretStatusReadsTheAPI() throws {
        let sink = try DashboardSink(name: "d", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let port = try XCTUnwrap(sink.port)
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let r = resource(pid: 4242, group: "checkout", go: "go1.26.6")
        try sink.write([
            .metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 3, timeUnixNano: now, resource: r)),
            .event(Event(name: "go.goroutine.leak", severity: .warn, body: "goroutines of pid 4242 keep growing", timeUnixNano: now, resource: r)),
        ])
        let ok = try TestSupport.run(TestSupport.ferret, ["status", "--url", "http://127.0.0.1:\(port)"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let row = ok.stdout.split(separator: "\n").first { $0.hasPrefix("checkout") }.map(String.init) ?? ""
        for field in ["r-checkout", "1", "go1.26.6", "static", "alert"] {
            XCTAssertTrue(row.contains(field), "\(field) in '\(row)':\n\(ok.stdout)")
        }
        XCTAssertTrue(ok.stdout.contains("firing: goroutines of pid 4242 keep growing"), ok.stdout)
        let json = try TestSupport.run(TestSupport.ferret, ["status", "--url", "http://127.0.0.1:\(port)/", "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        sink.close()
        let gone = try TestSupport.run(TestSupport.ferret, ["status", "--url", "http://127.0.0.1:\(port)"])
        XCTAssertEqual(gone.status, 1)
        XCTAssertTrue(gone.stderr.contains("cannot reach the dashboard at http://127.0.0.1:\(port)"), gone.stderr)
    }

    /// An exited process stays on the pages for `raw_span`, then its series,
    /// profile and entry are forgotten (the history bound is for the living).
    func testExitedProcessesAreForgottenAfterTheRawSpan() throws {
        let state = DashboardState()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let r = resource(pid: 9, group: "batch", go: "go1.23.9"), keep = resource(pid: 10, group: "batch", go: "go1.23.9")
        let t = UInt64(now - 7_200_000) * 1_000_000
        state.apply([.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 1, timeUnixNano: t, resource: r)),
                     .metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 1, timeUnixNano: t, resource: keep)),
                     .event(Event(name: "process.exit", severity: .info, body: "exited", timeUnixNano: t + 1_000_000, resource: r, lifecycle: .exited))])
        XCTAssertEqual(state.processes.map(\.pid), [10], "exited two hours ago (raw_span 1 h): forgotten")
        XCTAssertEqual(state.history.series().compactMap(\.key.pid), [10])
        let u = UInt64(now) * 1_000_000
        state.apply([.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 1, timeUnixNano: u, resource: keep)),
                     .event(Event(name: "process.exit", severity: .info, body: "exited", timeUnixNano: u, resource: keep, lifecycle: .exited))])
        state.sweep(now: now + 60_000)
        XCTAssertEqual(state.processes.map(\.exited), [true], "exited a minute ago: still shown, as exited")
        // The pid comes back, a new process.
        let again = Resource(resource(pid: 10, group: "batch", go: "go1.27.3").attributes)
        state.apply([.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, value: 1, timeUnixNano: u + 5_000_000_000, resource: again))])
        XCTAssertEqual(state.processes.map(\.exited), [false], "a reused pid is a new process")
        XCTAssertEqual(state.processes.map(\.goVersion), ["go1.27.3"])
    }

    func testConfigErrorsNameTheKey() throws {
        let yaml = """
        pipeline:
          sinks:
            - type: dashboard
              listen: "nowhere"
              max_events: 3
        """
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("c.yaml:4:") && text.contains("invalid 'listen' address 'nowhere'"), text)
            XCTAssertTrue(text.contains("c.yaml:5:") && text.contains("'max_events'"), text)
        }
    }
}
