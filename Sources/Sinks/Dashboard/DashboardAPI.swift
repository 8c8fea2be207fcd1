import FerretCore
import FerretHTTPServer
import Foundation
import Hummingbird
import NIOCore

/// The dashboard's pages and JSON API (GET only; README.md in this folder):
/// - `/`, `/app.js`, `/app.css`: the pages, embedded in the agent (no CDN);
/// - `/api/overview`: process groups with instances, rule, Go versions,
///   linkage, health and the alerts firing; `/api/alerts`;
/// - `/api/processes?group=G`, `/api/process?pid=P`;
/// - `/api/series?pid=P`, `/api/series/points?…`, `/api/series/batch?pid=P|group=G&names=…`;
/// - `/api/events?limit=K&group=G&pid=P`;
/// - `/api/traces?limit=K&group=G&sort=recent|slowest`, `/api/traces/ID`;
/// - `/api/http?group=G&from=MS&to=MS`, `/api/http/series?group=G&route=R&…`;
/// - `/api/goroutines?pid=P&from=MS&to=MS`: the goroutine groups of the latest
///   census, with trends, stacks and the leak alert naming them;
/// - `/api/profiles`, `/api/profile?pid=P&type=cpu|goroutine&limit=K`,
///   `/api/profile.pb.gz?pid=P&type=cpu|goroutine`.
enum DashboardAPI {
    static func respond(_ request: Request, state: DashboardState) -> Response {
        guard request.method == .get || request.method == .head else {
            return Response(status: .methodNotAllowed, headers: [.allow: "GET, HEAD"])
        }
        let q = request.uri.queryParameters
        func param(_ k: String) -> String? { q[k[...]].map(String.init) }
        func intParam(_ k: String) -> Int64? { param(k).flatMap { Int64($0) } }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let to = intParam("to") ?? now
        let from = intParam("from") ?? to - 3_600_000
        let points = max(1, min(5000, Int(intParam("points") ?? 600)))
        let path = request.uri.path
        var w = JSONWriter(capacity: 4096)

        switch path {
        case "/", "/index.html": return asset(PackageResources.index_html, "text/html; charset=utf-8")
        case "/app.js": return asset(PackageResources.app_js, "text/javascript; charset=utf-8")
        case "/app.css": return asset(PackageResources.app_css, "text/css; charset=utf-8")
        case "/favicon.ico": return Response(status: .noContent)
        case "/api/overview": overview(state, now: now, &w)
        case "/api/alerts":
            w.raw("{\"alerts\":"); events(state.activeAlerts, &w); w.byte(UInt8(ascii: "}"))
        case "/api/processes":
            let alerts = state.activeAlerts
            let ps = state.processes.filter { p in param("group").map { p.group == $0 } ?? true }
            w.raw("{\"processes\":")
            w.array(ps) { w, p in process(p, state: state, alerts: alerts, now: now, &w) }
            w.byte(UInt8(ascii: "}"))
        case "/api/process":
            guard let pid = intParam("pid"), let p = state.process(pid) else { return error(.notFound, "no such process: \(param("pid") ?? "")") }
            process(p, state: state, alerts: state.activeAlerts, now: now, &w)
        case "/api/series":
            let pid = intParam("pid")
            let group = param("group")
            series(state.history.series { k in (pid.map { k.pid == $0 } ?? true) && (group.map { k.group == $0 } ?? true) }, &w)
        case "/api/series/points":
            guard let name = param("name") else { return error(.badRequest, "name is required") }
            let pid = intParam("pid")
            let key = MetricHistory.Key(name: name, pid: pid, group: pid.flatMap { state.process($0)?.group } ?? param("group"),
                                        attributes: param("attributes") ?? "")
            w.raw("{\"points\":")
            pointList(state.history.query(key, from: from, to: to, maxPoints: points), &w)
            w.raw(",\"columns\":[\"time\",\"min\",\"max\",\"mean\",\"last\",\"count\"]}")
        case "/api/series/batch":
            let pid = intParam("pid"), group = param("group")
            guard pid != nil || group != nil else { return error(.badRequest, "pid or group is required") }
            let names = Set((param("names") ?? "").split(separator: ",").map(String.init))
            let list = state.history.series { k in
                (pid.map { k.pid == $0 } ?? (k.pid != nil && k.group == group)) && (names.isEmpty || names.contains(k.name))
            }
            w.raw("{\"series\":")
            w.array(list) { w, s in
                w.raw("{\"name\":"); w.string(s.key.name)
                w.key("pid"); w.int(s.key.pid)
                w.key("attributes"); w.string(s.key.attributes)
                w.key("unit"); w.string(s.unit)
                w.key("kind"); w.string(s.kind)
                w.key("points"); pointList(state.history.query(s.key, from: from, to: to, maxPoints: points), &w)
                w.byte(UInt8(ascii: "}"))
            }
            w.raw(",\"columns\":[\"time\",\"min\",\"max\",\"mean\",\"last\",\"count\"]}")
        case "/api/events":
            let pid = intParam("pid"), group = param("group")
            let list = state.events.filter { e in (pid.map { e.pid == $0 } ?? true) && (group.map { e.group == $0 } ?? true) }
            w.raw("{\"events\":"); events(Array(list.prefix(Int(intParam("limit") ?? 200))), &w); w.byte(UInt8(ascii: "}"))
        case "/api/traces":
            var list = state.traces
            if let g = param("group") { list = list.filter { $0.groups.contains(g) } }
            if param("sort") == "slowest" {
                // A trace's duration scans its spans: once per trace, not per comparison.
                list = list.map { ($0, $0.end &- $0.start) }.sorted { $0.1 > $1.1 }.map(\.0)
            }
            traces(Array(list.prefix(Int(intParam("limit") ?? 100))), &w)
        case "/api/http":
            w.raw("{\"routes\":")
            w.array(state.routeSummaries(group: param("group"), from: from, to: to)) { w, r in
                w.raw("{\"group\":"); w.string(r.key.group)
                w.key("route"); w.string(r.key.route)
                w.key("requests"); w.int(Int64(r.requests))
                w.key("errors"); w.int(Int64(r.errors))
                w.key("rate"); w.double(r.rate)
                w.key("error_rate"); w.double(r.errorRate)
                w.key("p50"); w.double(r.p50 ?? .nan)
                w.key("p95"); w.double(r.p95 ?? .nan)
                w.key("p99"); w.double(r.p99 ?? .nan)
                w.byte(UInt8(ascii: "}"))
            }
            w.byte(UInt8(ascii: "}"))
        case "/api/http/series":
            guard let group = param("group"), let route = param("route") else { return error(.badRequest, "group and route are required") }
            w.raw("{\"bucket_ms\":"); w.int(HTTPRouteStats.bucketMillis)
            w.key("points")
            w.array(state.routeBuckets(group: group, route: route, from: from, to: to)) { w, b in
                let p = HTTPRouteStats.percentiles(b.latency, [0.5, 0.95, 0.99])
                w.byte(UInt8(ascii: "[")); w.int(b.start)
                w.byte(UInt8(ascii: ",")); w.int(Int64(b.count))
                w.byte(UInt8(ascii: ",")); w.int(Int64(b.errors))
                for v in p { w.byte(UInt8(ascii: ",")); w.double(v ?? .nan) }
                w.byte(UInt8(ascii: "]"))
            }
            w.raw(",\"columns\":[\"time\",\"requests\",\"errors\",\"p50\",\"p95\",\"p99\"]}")
        case "/api/goroutines":
            guard let pid = intParam("pid") else { return error(.badRequest, "pid is required") }
            GoroutineGroups(state: state, pid: pid, from: from, to: to, points: points).write(&w)
        case "/api/profiles":
            w.raw("{\"profiles\":")
            w.array(state.profiles) { w, p in profileMeta(p, &w); w.byte(UInt8(ascii: "}")) }
            w.byte(UInt8(ascii: "}"))
        case "/api/profile":
            guard let pid = intParam("pid"), let p = state.profile(pid: pid, type: param("type") ?? "cpu") else {
                return error(.notFound, "no \(param("type") ?? "cpu") profile for pid \(param("pid") ?? "")")
            }
            do {
                let view = try ProfileView(gzipped: p.data)
                profileMeta(p, &w)
                w.key("view")
                view.write(&w, limit: Int(intParam("limit") ?? 50))
                w.byte(UInt8(ascii: "}"))
            } catch {
                return self.error(.internalServerError, "profile of pid \(pid): \(error)")
            }
        case "/api/profile.pb.gz":
            guard let pid = intParam("pid"), let p = state.profile(pid: pid, type: param("type") ?? "cpu") else {
                return error(.notFound, "no \(param("type") ?? "cpu") profile for pid \(param("pid") ?? "")")
            }
            let kind = p.profileType == "cpu" ? "" : "-" + p.profileType
            return Response(status: .ok, headers: [
                .contentType: "application/octet-stream", .cacheControl: "no-store",
                .contentDisposition: "attachment; filename=\"\(p.group ?? "process")-\(pid)\(kind)-\(p.start).pb.gz\"",
            ], body: ResponseBody(byteBuffer: ByteBuffer(bytes: p.data)))
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

    static func asset(_ bytes: [UInt8], _ type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var w = JSONWriter()
        w.raw("{\"error\":")
        w.string(message)
        w.byte(UInt8(ascii: "}"))
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: w.bytes)))
    }

    static let healthRank = ["ok": 0, "exited": 1, "stale": 2, "degraded": 3, "alert": 4]

    static func overview(_ state: DashboardState, now: Int64, _ w: inout JSONWriter) {
        let alerts = state.activeAlerts
        let byGroup = Dictionary(grouping: state.processes, by: \.group)
        w.raw("{\"time\":"); w.int(now)
        w.key("groups")
        w.array(byGroup.sorted(by: { $0.key < $1.key })) { w, entry in
            let (group, ps) = entry
            let live = ps.filter { !$0.exited }
            let healths = (live.isEmpty ? ps : live).map { state.health($0, alerts: alerts, now: now) }
            let groupAlerts = alerts.filter { a in a.group == group || ps.contains { a.pid == $0.pid } }
            w.raw("{\"name\":"); w.string(group)
            w.key("rule"); w.string(ps[0].rule)
            w.key("instances"); w.int(Int64(live.count))
            w.key("go_versions"); w.array(Set(ps.compactMap(\.goVersion)).sorted()) { $0.string($1) }
            w.key("linkage"); w.array(Set(ps.compactMap(\.linkage)).sorted()) { $0.string($1) }
            w.key("health"); w.string(healths.max { healthRank[$0, default: 0] < healthRank[$1, default: 0] } ?? "ok")
            w.key("alerts"); events(groupAlerts, &w)
            w.key("pids"); w.array(live) { $0.int($1.pid) }
            w.byte(UInt8(ascii: "}"))
        }
        w.key("history")
        w.raw("{\"series\":"); w.int(Int64(state.history.seriesCount))
        w.key("bytes"); w.int(Int64(state.history.bytes))
        w.key("refused_series"); w.int(Int64(state.history.refusedSeries))
        w.raw("}}")
    }

    static func process(_ p: DashboardState.ProcessInfo, state: DashboardState, alerts: [DashboardState.EventInfo], now: Int64,
                        _ w: inout JSONWriter) {
        w.raw("{\"pid\":"); w.int(p.pid)
        w.key("group"); w.string(p.group)
        w.key("rule"); w.string(p.rule)
        w.key("executable"); w.string(p.executable)
        w.key("executable_path"); w.string(p.executablePath)
        w.key("command_line"); w.string(p.commandLine)
        w.key("go_version"); w.string(p.goVersion)
        w.key("linkage"); w.string(p.linkage)
        w.key("stripped"); if let s = p.stripped { w.bool(s) } else { w.raw("null") }
        w.key("module"); w.string(p.module)
        w.key("container"); w.raw("{")
        for (i, a) in p.container.enumerated() {
            if i > 0 { w.raw(",") }
            w.string(a.key); w.raw(":"); w.string(a.value)
        }
        w.raw("}")
        w.key("build_settings"); w.array(p.buildSettings) { $0.string($1) }
        w.key("first_seen"); w.int(p.firstSeen)
        w.key("last_seen"); w.int(p.lastSeen)
        w.key("exited"); w.bool(p.exited)
        w.key("health"); w.string(state.health(p, alerts: alerts, now: now))
        w.key("runtime_problem"); w.string(p.runtimeProblem)
        let profile = state.profile(pid: p.pid)
        w.key("has_profile"); w.bool(profile != nil)
        w.key("profile_start"); w.int(profile?.start)
        w.key("has_goroutines"); w.bool(state.hasCensus(pid: p.pid))
        w.byte(UInt8(ascii: "}"))
    }

    static func series(_ list: [MetricHistory.SeriesInfo], _ w: inout JSONWriter) {
        w.raw("{\"series\":")
        w.array(list) { w, s in
            w.raw("{\"name\":"); w.string(s.key.name)
            w.key("pid"); w.int(s.key.pid)
            w.key("group"); w.string(s.key.group)
            w.key("attributes"); w.string(s.key.attributes)
            w.key("unit"); w.string(s.unit)
            w.key("kind"); w.string(s.kind)
            w.key("last"); w.double(s.last)
            w.key("last_time"); w.int(s.lastTime)
            w.byte(UInt8(ascii: "}"))
        }
        w.byte(UInt8(ascii: "}"))
    }

    static func pointList(_ ps: [MetricHistory.Point], _ w: inout JSONWriter) {
        w.array(ps) { w, p in
            w.byte(UInt8(ascii: "[")); w.int(p.time)
            for v in [p.min, p.max, p.mean, p.last] { w.byte(UInt8(ascii: ",")); w.double(v) }
            w.byte(UInt8(ascii: ",")); w.int(Int64(p.count))
            w.byte(UInt8(ascii: "]"))
        }
    }

    static func events(_ es: [DashboardState.EventInfo], _ w: inout JSONWriter) {
        w.array(es) { w, e in
            w.raw("{\"time\":"); w.int(e.time)
            w.key("name"); w.string(e.name)
            w.key("severity"); w.string(e.severity)
            w.key("body"); w.string(e.body)
            w.key("pid"); w.int(e.pid)
            w.key("group"); w.string(e.group)
            w.key("attributes"); w.attributesObject(e.attributes)
            w.byte(UInt8(ascii: "}"))
        }
    }

    static func traces(_ ts: [DashboardState.Trace], _ w: inout JSONWriter) {
        w.raw("{\"traces\":")
        w.array(ts) { w, t in
            let root = t.root
            w.raw("{\"id\":"); w.string(t.id)
            w.key("name"); w.string(root?.name ?? "")
            w.key("group"); w.string(root?.resource.group)
            w.key("pid"); w.int(root?.resource.pid)
            w.key("start"); w.uint(t.start)
            w.key("duration_ns"); w.uint(t.end &- t.start)
            w.key("spans"); w.int(Int64(t.spans.count))
            w.key("error"); w.bool(t.spans.contains { $0.status == .error })
            w.byte(UInt8(ascii: "}"))
        }
        w.byte(UInt8(ascii: "}"))
    }

    static func trace(_ t: DashboardState.Trace, _ w: inout JSONWriter) {
        w.raw("{\"id\":"); w.string(t.id)
        w.key("dropped_spans"); w.int(Int64(t.droppedSpans))
        w.key("spans")
        w.array(t.spans.sorted(by: { $0.startUnixNano < $1.startUnixNano })) { w, s in
            w.raw("{\"name\":"); w.string(s.name)
            w.key("kind"); w.string(s.kind.rawValue)
            w.key("span_id"); w.hex(s.spanID)
            w.key("parent_span_id"); w.hex(s.parentSpanID)
            w.key("start"); w.uint(s.startUnixNano)
            w.key("end"); w.uint(s.endUnixNano)
            w.key("status"); w.string(s.status.rawValue)
            w.key("pid"); w.int(s.resource.pid)
            w.key("group"); w.string(s.resource.group)
            w.key("attributes"); w.attributesObject(s.attributes)
            w.byte(UInt8(ascii: "}"))
        }
        w.byte(UInt8(ascii: "}"))
    }

    static func profileMeta(_ p: DashboardState.ProfileInfo, _ w: inout JSONWriter) {
        w.raw("{\"pid\":"); w.int(p.pid)
        w.key("group"); w.string(p.group)
        w.key("type"); w.string(p.profileType)
        w.key("start"); w.int(p.start)
        w.key("duration_ns"); w.uint(p.durationNanos)
        w.key("samples"); w.int(p.samples)
        w.key("bytes"); w.int(Int64(p.data.count))
    }
}
