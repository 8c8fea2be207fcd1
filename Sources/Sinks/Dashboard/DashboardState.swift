import FerretCore
import FerretHTTPServer
import Foundation
import Synchronization

/// What the dashboard shows, built from the signals its sink receives (issue #9):
/// the metric history, the processes and groups they came from, recent events
/// and the alerts still firing, the latest CPU profile of each process, recent
/// HTTP traces and per-route request figures. Thread-safe; written by the
/// sink's runner thread, read by the HTTP server.
public final class DashboardState: Sendable {
    public struct Options: Sendable, Equatable {
        public var history = MetricHistory.Options()
        public var maxEvents = 1000
        public var maxTraces = 500
        public var maxRoutes = 500
        /// Spans kept per trace (a client that always sends one traceparent
        /// would otherwise grow a single trace without end); more are counted.
        public var maxSpansPerTrace = 1000
        /// A process not heard from for this long shows as "stale".
        public var staleAfterMillis: Int64 = 30_000
        public init() {}
    }

    /// One process as the host stamped it.
    public struct ProcessInfo: Sendable {
        public var pid: Int64
        public var group: String
        public var rule: String
        public var executable: String
        public var executablePath: String
        public var commandLine: String
        public var goVersion: String?
        public var linkage: String?
        public var stripped: Bool?
        public var module: String?
        /// The container and pod attributes of the resource (container.id,
        /// container.runtime, k8s.pod.uid and the names), in the resource's order.
        public var container: [(key: String, value: String)] = []
        /// "key=value" per entry, as `go version -m` prints them.
        public var buildSettings: [String]
        public var firstSeen: Int64
        public var lastSeen: Int64
        public var exited: Bool
        /// When the process exited (Unix ms): it is forgotten `rawSpan` later.
        public var exitedAt: Int64?
        /// The last event saying the Go runtime figures cannot be read
        /// (go.runtime.unknown_layout / unverified / unavailable), if any.
        public var runtimeProblem: String?
    }

    public struct EventInfo: Sendable {
        public var time: Int64
        public var name: String
        public var severity: String
        public var body: String
        public var pid: Int64?
        public var group: String?
        public var attributes: [Attribute]
    }

    /// The latest profile of a process of one type (the gzipped pprof as received).
    public struct ProfileInfo: Sendable {
        public var pid: Int64
        public var group: String?
        public var profileType: String
        public var start: Int64
        public var durationNanos: UInt64
        public var samples: Int64
        public var data: [UInt8]
    }

    /// A trace: its spans, as received.
    public struct Trace: Sendable {
        public var id: String
        public var spans: [Span]
        /// Spans of this trace not kept (past `maxSpansPerTrace`).
        public var droppedSpans = 0
        public var start: UInt64 { spans.map(\.startUnixNano).min() ?? 0 }
        public var end: UInt64 { spans.map(\.endUnixNano).max() ?? 0 }
        /// The root span: the one whose parent is not in the trace.
        public var root: Span? {
            let ids = Set(spans.map(\.spanID))
            return spans.first { $0.parentSpanID.isEmpty || !ids.contains($0.parentSpanID) }
        }
        public var groups: Set<String> { Set(spans.compactMap(\.resource.group)) }
    }

    public let options: Options
    public let history: MetricHistory
    private let state: Mutex<State>

    private struct State {
        var processes: [Int64: ProcessInfo] = [:]
        var events: [EventInfo] = []
        /// Alerts firing now, by pid/group, kind and what they watch.
        var active: [String: EventInfo] = [:]
        var traces: [String: Trace] = [:]
        var traceOrder: [String] = []
        /// The latest profile of each process, by type ("cpu", "goroutine").
        var profiles: [Int64: [String: ProfileInfo]] = [:]
        /// Processes with a goroutine census (the goroutines plugin's group series).
        var censusPids: Set<Int64> = []
        var routes: HTTPRouteStats
        var lastSweep: Int64 = 0
    }

    public init(options: Options = .init()) {
        self.options = options
        history = MetricHistory(options: options.history)
        state = Mutex(State(routes: HTTPRouteStats(span: options.history.rawSpan, maxRoutes: options.maxRoutes)))
    }

    public func apply(_ batch: [Signal]) {
        defer { sweep(now: Int64(Date().timeIntervalSince1970 * 1000)) }
        for signal in batch {
            switch signal {
            case .metric(let m):
                guard m.kind != .histogram else { continue }
                let time = Int64(m.timeUnixNano / 1_000_000)
                note(m.resource, time: time)
                let attrs = m.attributes.map { "\($0.key)=\($0.value.text)" }.sorted().joined(separator: ",")
                history.add(MetricHistory.Key(name: m.name, pid: m.resource.pid, group: m.resource.group, attributes: attrs),
                            time: time, value: m.value, unit: m.unit, kind: m.kind.rawValue)
                if m.name == GoroutineGroups.countMetric, let pid = m.resource.pid {
                    state.withLock { _ = $0.censusPids.insert(pid) }
                }
            case .event(let e):
                let time = Int64(e.timeUnixNano / 1_000_000)
                note(e.resource, time: time)
                let info = EventInfo(time: time, name: e.name, severity: e.severity.rawValue, body: e.body,
                                     pid: e.resource.pid, group: e.resource.group, attributes: e.attributes)
                state.withLock { s in
                    s.events.append(info)
                    if s.events.count > options.maxEvents { s.events.removeFirst(s.events.count - options.maxEvents) }
                    if let (key, firing) = Self.alertTransition(info) {
                        if firing { s.active[key] = info } else { s.active[key] = nil }
                    }
                    guard let pid = e.resource.pid else { return }
                    if e.isProcessExit {
                        s.processes[pid]?.exited = true
                        s.processes[pid]?.exitedAt = time
                        for k in s.active.keys where s.active[k]?.pid == pid { s.active[k] = nil }
                    }
                    if e.name.hasPrefix("go.runtime.") { s.processes[pid]?.runtimeProblem = e.body }
                }
            case .span(let span):
                let end = Int64(span.endUnixNano / 1_000_000)
                note(span.resource, time: end)
                let id = hexString(span.traceID)
                state.withLock { s in
                    if s.traces[id] == nil {
                        s.traces[id] = Trace(id: id, spans: [])
                        s.traceOrder.append(id)
                        if s.traceOrder.count > options.maxTraces {
                            let drop = s.traceOrder.removeFirst()
                            s.traces[drop] = nil
                        }
                    }
                    if s.traces[id]!.spans.count < options.maxSpansPerTrace {
                        s.traces[id]!.spans.append(span)
                    } else {
                        s.traces[id]!.droppedSpans += 1
                    }
                    if span.kind == .server {
                        s.routes.add(group: span.resource.group ?? "", route: span.name, endMillis: end,
                                     durationNanos: span.endUnixNano &- span.startUnixNano, error: span.status == .error)
                    }
                }
            case .profile(let p):
                note(p.resource, time: Int64(p.startUnixNano / 1_000_000))
                guard let pid = p.resource.pid else { continue }
                let info = ProfileInfo(pid: pid, group: p.resource.group, profileType: p.profileType,
                                       start: Int64(p.startUnixNano / 1_000_000), durationNanos: p.durationNano,
                                       samples: p.samples, data: p.data)
                state.withLock { s in
                    if let old = s.profiles[pid]?[info.profileType], old.start > info.start { return }
                    s.profiles[pid, default: [:]][info.profileType] = info
                }
            }
        }
    }

    /// Whether an event starts (true) or ends (false) an alert, and the alert's
    /// key: threshold alerts and anomalies carry `state` firing/resolved (and
    /// the rule and metric), a goroutine leak ends with `go.goroutine.leak.resolved`.
    static func alertTransition(_ e: EventInfo) -> (String, Bool)? {
        func attr(_ k: String) -> String { e.attributes.first { $0.key == k }?.value.text ?? "" }
        let who = e.pid.map(String.init) ?? (e.group ?? "")
        switch e.name {
        case "alert", "anomaly":
            let key = "\(who)|\(e.name)|\(attr("rule"))|\(attr("metric"))"
            switch attr("state") {
            case "firing": return (key, true)
            case "resolved": return (key, false)
            default: return nil
            }
        case "go.goroutine.leak": return ("\(who)|leak", true)
        case "go.goroutine.leak.resolved": return ("\(who)|leak", false)
        default: return nil
        }
    }

    /// Forgets the processes that exited more than `rawSpan` ago (their series,
    /// profile and entry), at most every 30 s: on a host where processes come
    /// and go, the history bound stays for the living.
    func sweep(now: Int64) {
        let span = Int64(options.history.rawSpan.components.seconds * 1000)
        let gone: [Int64] = state.withLock { s in
            guard now - s.lastSweep >= 30_000 else { return [] }
            s.lastSweep = now
            let old = s.processes.values.filter { ($0.exitedAt ?? .max) < now - span }.map(\.pid)
            for pid in old {
                s.processes[pid] = nil
                s.profiles[pid] = nil
                s.censusPids.remove(pid)
            }
            return old
        }
        for pid in gone { history.forget(pid: pid) }
    }

    private func note(_ r: Resource, time: Int64) {
        guard let pid = r.pid, let group = r.group else { return }
        func s(_ k: String) -> String? { if case .string(let v)? = r[k] { return v }; return nil }
        state.withLock { st in
            // A pid seen again well after its process exited belongs to a new process.
            if st.processes[pid] == nil || (st.processes[pid]!.exitedAt.map { time > $0 + 1000 } ?? false) {
                var stripped: Bool?
                if case .bool(let b)? = r["process.executable.stripped"] { stripped = b }
                st.processes[pid] = ProcessInfo(
                    pid: pid, group: group, rule: s("ferret.rule") ?? (s("service.name") == "ferret" ? "(the agent itself)" : ""), executable: s("process.executable.name") ?? "",
                    executablePath: s("process.executable.path") ?? "", commandLine: s("process.command_line") ?? "",
                    goVersion: s("process.runtime.version"), linkage: s("process.linkage"), stripped: stripped,
                    module: s("go.module.path"),
                    container: r.attributes.compactMap { a in
                        guard a.key.hasPrefix("container.") || a.key.hasPrefix("k8s."), case .string(let v) = a.value else { return nil }
                        return (a.key, v)
                    },
                    buildSettings: s("go.build.settings")?.split(separator: "\n").map(String.init) ?? [],
                    firstSeen: time, lastSeen: time, exited: false, exitedAt: nil)
            } else if time > st.processes[pid]!.lastSeen {
                st.processes[pid]!.lastSeen = time
            }
        }
    }

    public var processes: [ProcessInfo] { state.withLock { Array($0.processes.values) }.sorted { $0.pid < $1.pid } }
    public func process(_ pid: Int64) -> ProcessInfo? { state.withLock { $0.processes[pid] } }
    /// Newest first.
    public var events: [EventInfo] { state.withLock { $0.events.reversed() } }
    /// The alerts firing now (the event that started each), newest first.
    public var activeAlerts: [EventInfo] { state.withLock { Array($0.active.values) }.sorted { $0.time > $1.time } }
    /// Newest first.
    public var traces: [Trace] { state.withLock { s in s.traceOrder.reversed().compactMap { s.traces[$0] } } }
    public func trace(_ id: String) -> Trace? { state.withLock { $0.traces[id] } }
    /// The latest profile of a process of one type ("cpu" from the cpu_profiler, "goroutine" from goroutines).
    public func profile(pid: Int64, type: String = "cpu") -> ProfileInfo? { state.withLock { $0.profiles[pid]?[type] } }
    /// Whether the process has a goroutine census (groups to show).
    public func hasCensus(pid: Int64) -> Bool { state.withLock { $0.censusPids.contains(pid) } }
    public var profiles: [ProfileInfo] {
        state.withLock { $0.profiles.values.flatMap(\.values) }.sorted { ($0.pid, $0.profileType) < ($1.pid, $1.profileType) }
    }

    func routeSummaries(group: String?, from: Int64, to: Int64) -> [HTTPRouteStats.Summary] {
        state.withLock { $0.routes.summaries(group: group, from: from, to: to) }
    }

    func routeBuckets(group: String, route: String, from: Int64, to: Int64) -> [HTTPRouteStats.Bucket] {
        state.withLock { $0.routes.buckets(.init(group: group, route: route), from: from, to: to) }
    }

    /// A process's health: "exited", "stale" (not heard from for
    /// `staleAfterMillis`), "alert" (an alert is firing), "degraded" (its Go
    /// runtime figures cannot be read) or "ok".
    public func health(_ p: ProcessInfo, alerts: [EventInfo], now: Int64) -> String {
        if p.exited { return "exited" }
        if alerts.contains(where: { $0.pid == p.pid }) { return "alert" }
        if now - p.lastSeen > options.staleAfterMillis { return "stale" }
        if p.runtimeProblem != nil { return "degraded" }
        return "ok"
    }
}
