import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `dashboard`: keeps recent history in memory (``DashboardState``) and serves
/// it on `listen` (default 127.0.0.1:9465, loopback) as a JSON API, on the same
/// HTTP stack as the prometheus sink (``SinkHTTPServer``). Issue #9; the API is
/// documented in docs/dashboard.md. The pages come next (docs/PLAN.md).
public final class DashboardSink: Sink, @unchecked Sendable {
    public static let keys = ["listen", "raw_span", "long_span", "max_bytes", "max_events", "max_traces"]
    public static let defaultListen = "127.0.0.1:9465"

    public let name: String
    public let state: DashboardState
    private let logger: Logger
    private var server: SinkHTTPServer?
    private let boundPort = Atomic<Int>(-1)

    public var port: Int? {
        let p = boundPort.load(ordering: .relaxed)
        return p < 0 ? nil : p
    }

    public init(name: String, host: String, port: Int, options: DashboardState.Options = .init(), logger: Logger) throws {
        self.name = name
        self.logger = logger
        let state = DashboardState(options: options)
        self.state = state
        let s = SinkHTTPServer(host: host, port: port, label: "dashboard", logger: logger) { request in
            DashboardAPI.respond(request, state: state)
        }
        let bound = try s.start(timeout: 10)
        server = s
        boundPort.store(bound, ordering: .relaxed)
        logger.info("sink '\(name)' (dashboard) serving http://\(host.contains(":") ? "[\(host)]" : host):\(bound)/")
    }

    public func write(_ batch: [Signal]) throws { state.apply(batch) }

    public func close() {
        server?.stop()
        server = nil
        boundPort.store(-1, ordering: .relaxed)
    }

    static let sinkType = SinkType(keys: keys) { c, d, ctx, logger in
        var (host, port) = PrometheusSink.parseListen(defaultListen)!
        if let n = c.node["listen"], let s = d.string(n, "'listen'", context: ctx) {
            if let hp = PrometheusSink.parseListen(s) { (host, port) = hp } else {
                d.fail(n.mark, "invalid 'listen' address '\(s)' \(ctx); use HOST:PORT, [IPv6]:PORT or :PORT")
            }
        }
        var o = DashboardState.Options()
        if let n = c.node["raw_span"], let v = d.duration(n, "'raw_span'", context: ctx, minimum: .seconds(60)) { o.history.rawSpan = v }
        if let n = c.node["long_span"], let v = d.duration(n, "'long_span'", context: ctx, minimum: .seconds(60)) { o.history.longSpan = v }
        if let n = c.node["max_bytes"], let v = d.int(n, "'max_bytes'", context: ctx, range: (1 << 20)...(1 << 40)) { o.history.maxBytes = v }
        if let n = c.node["max_events"], let v = d.int(n, "'max_events'", context: ctx, range: 10...1_000_000) { o.maxEvents = v }
        if let n = c.node["max_traces"], let v = d.int(n, "'max_traces'", context: ctx, range: 10...1_000_000) { o.maxTraces = v }
        guard d.errors.isEmpty, !d.checkOnly else { return nil }
        return try DashboardSink(name: c.name, host: host, port: port, options: o, logger: logger)
    }
}

/// The dashboard's JSON API (GET only):
/// - `/api/overview`: process groups with instance count, rule, Go versions, linkage;
/// - `/api/processes?group=G`: the processes (of a group);
/// - `/api/series?pid=P`: the series of a process (name, attributes, unit, last value);
/// - `/api/series/points?name=N&pid=P&attributes=A&from=MS&to=MS&points=K`: a series' points;
/// - `/api/events?limit=K`: events, newest first;
/// - `/api/traces?limit=K`: recent traces; `/api/traces/ID`: one trace's spans.
enum DashboardAPI {
    static func respond(_ request: Request, state: DashboardState) -> Response {
        guard request.method == .get else { return Response(status: .methodNotAllowed, headers: [.allow: "GET"]) }
        let q = request.uri.queryParameters
        func param(_ k: String) -> String? { q[k[...]].map(String.init) }
        var w = JSONWriter(capacity: 4096)
        let path = request.uri.path
        switch path {
        case "/api/overview": overview(state, &w)
        case "/api/processes": processes(state.processes.filter { p in param("group").map { p.group == $0 } ?? true }, &w)
        case "/api/series":
            let pid = param("pid").flatMap { Int64($0) }
            series(state.history.series { k in pid.map { k.pid == $0 } ?? true }, &w)
        case "/api/series/points":
            guard let name = param("name") else { return error(.badRequest, "name is required") }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let key = MetricHistory.Key(name: name, pid: param("pid").flatMap { Int64($0) },
                                        group: state.processes.first { "\($0.pid)" == param("pid") }?.group ?? param("group"),
                                        attributes: param("attributes") ?? "")
            let to = param("to").flatMap { Int64($0) } ?? now
            let from = param("from").flatMap { Int64($0) } ?? to - 3_600_000
            points(state.history.query(key, from: from, to: to, maxPoints: param("points").flatMap { Int($0) } ?? 600), &w)
        case "/api/events": events(Array(state.events.prefix(param("limit").flatMap { Int($0) } ?? 200)), &w)
        case "/api/traces": traces(Array(state.traces.prefix(param("limit").flatMap { Int($0) } ?? 100)), &w)
        default:
            if path.hasPrefix("/api/traces/"), let t = state.trace(String(path.dropFirst("/api/traces/".count))) {
                trace(t, &w)
            } else {
                return error(.notFound, "no such resource: \(path)")
            }
        }
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: w.bytes)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var w = JSONWriter()
        w.raw("{\"error\":")
        w.string(message)
        w.byte(UInt8(ascii: "}"))
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: w.bytes)))
    }

    static func overview(_ state: DashboardState, _ w: inout JSONWriter) {
        let byGroup = Dictionary(grouping: state.processes, by: \.group)
        w.raw("{\"groups\":[")
        for (i, (group, ps)) in byGroup.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            let live = ps.filter { !$0.exited }
            w.raw("{\"name\":"); w.string(group)
            w.raw(",\"rule\":"); w.string(ps[0].rule)
            w.raw(",\"instances\":"); w.int(Int64(live.count))
            w.raw(",\"go_versions\":[")
            for (j, v) in Set(ps.compactMap(\.goVersion)).sorted().enumerated() { if j > 0 { w.byte(UInt8(ascii: ",")) }; w.string(v) }
            w.raw("],\"linkage\":[")
            for (j, v) in Set(ps.compactMap(\.linkage)).sorted().enumerated() { if j > 0 { w.byte(UInt8(ascii: ",")) }; w.string(v) }
            w.raw("],\"pids\":[")
            for (j, p) in live.enumerated() { if j > 0 { w.byte(UInt8(ascii: ",")) }; w.int(p.pid) }
            w.raw("]}")
        }
        w.raw("]}")
    }

    static func processes(_ ps: [DashboardState.ProcessInfo], _ w: inout JSONWriter) {
        w.raw("{\"processes\":[")
        for (i, p) in ps.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"pid\":"); w.int(p.pid)
            w.raw(",\"group\":"); w.string(p.group)
            w.raw(",\"rule\":"); w.string(p.rule)
            w.raw(",\"executable\":"); w.string(p.executable)
            w.raw(",\"go_version\":"); if let v = p.goVersion { w.string(v) } else { w.raw("null") }
            w.raw(",\"linkage\":"); if let v = p.linkage { w.string(v) } else { w.raw("null") }
            w.raw(",\"first_seen\":"); w.int(p.firstSeen)
            w.raw(",\"last_seen\":"); w.int(p.lastSeen)
            w.raw(",\"exited\":"); w.bool(p.exited)
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
    }

    static func series(_ list: [MetricHistory.SeriesInfo], _ w: inout JSONWriter) {
        w.raw("{\"series\":[")
        for (i, s) in list.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"name\":"); w.string(s.key.name)
            w.raw(",\"pid\":"); if let p = s.key.pid { w.int(p) } else { w.raw("null") }
            w.raw(",\"group\":"); if let g = s.key.group { w.string(g) } else { w.raw("null") }
            w.raw(",\"attributes\":"); w.string(s.key.attributes)
            w.raw(",\"unit\":"); w.string(s.unit)
            w.raw(",\"kind\":"); w.string(s.kind)
            w.raw(",\"last\":"); w.double(s.last)
            w.raw(",\"last_time\":"); w.int(s.lastTime)
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
    }

    static func points(_ ps: [MetricHistory.Point], _ w: inout JSONWriter) {
        w.raw("{\"points\":[")
        for (i, p) in ps.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.byte(UInt8(ascii: "[")); w.int(p.time)
            for v in [p.min, p.max, p.mean, p.last] { w.byte(UInt8(ascii: ",")); w.double(v) }
            w.byte(UInt8(ascii: ",")); w.int(Int64(p.count))
            w.byte(UInt8(ascii: "]"))
        }
        w.raw("],\"columns\":[\"time\",\"min\",\"max\",\"mean\",\"last\",\"count\"]}")
    }

    static func events(_ es: [DashboardState.EventInfo], _ w: inout JSONWriter) {
        w.raw("{\"events\":[")
        for (i, e) in es.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"time\":"); w.int(e.time)
            w.raw(",\"name\":"); w.string(e.name)
            w.raw(",\"severity\":"); w.string(e.severity)
            w.raw(",\"body\":"); w.string(e.body)
            w.raw(",\"pid\":"); if let p = e.pid { w.int(p) } else { w.raw("null") }
            w.raw(",\"group\":"); if let g = e.group { w.string(g) } else { w.raw("null") }
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
    }

    static func traces(_ ts: [DashboardState.Trace], _ w: inout JSONWriter) {
        w.raw("{\"traces\":[")
        for (i, t) in ts.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"id\":"); w.string(t.id)
            w.raw(",\"name\":"); w.string(t.root?.name ?? "")
            w.raw(",\"start\":"); w.uint(t.start)
            w.raw(",\"duration_ns\":"); w.uint(t.end &- t.start)
            w.raw(",\"spans\":"); w.int(Int64(t.spans.count))
            w.raw(",\"error\":"); w.bool(t.spans.contains { $0.status == .error })
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
    }

    static func trace(_ t: DashboardState.Trace, _ w: inout JSONWriter) {
        w.raw("{\"id\":"); w.string(t.id)
        w.raw(",\"spans\":[")
        for (i, s) in t.spans.sorted(by: { $0.startUnixNano < $1.startUnixNano }).enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"name\":"); w.string(s.name)
            w.raw(",\"kind\":"); w.string(s.kind.rawValue)
            w.raw(",\"span_id\":"); w.hex(s.spanID)
            w.raw(",\"parent_span_id\":"); w.hex(s.parentSpanID)
            w.raw(",\"start\":"); w.uint(s.startUnixNano)
            w.raw(",\"end\":"); w.uint(s.endUnixNano)
            w.raw(",\"status\":"); w.string(s.status.rawValue)
            w.raw(",\"pid\":"); if let p = s.resource.pid { w.int(p) } else { w.raw("null") }
            w.raw(",\"attributes\":"); w.attributesObject(s.attributes)
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
    }
}
