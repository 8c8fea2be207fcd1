import Synchronization

/// What the dashboard shows, built from the signals its sink receives (issue #9):
/// the metric history, the processes and groups they came from, recent events,
/// and recent HTTP traces. Thread-safe; written by the sink's runner thread,
/// read by the HTTP server.
public final class DashboardState: Sendable {
    public struct Options: Sendable {
        public var history = MetricHistory.Options()
        public var maxEvents = 1000
        public var maxTraces = 500
        public init() {}
    }

    /// One process as the host stamped it.
    public struct ProcessInfo: Sendable {
        public var pid: Int64
        public var group: String
        public var rule: String
        public var executable: String
        public var goVersion: String?
        public var linkage: String?
        public var firstSeen: Int64
        public var lastSeen: Int64
        public var exited: Bool
    }

    public struct EventInfo: Sendable {
        public var time: Int64
        public var name: String
        public var severity: String
        public var body: String
        public var pid: Int64?
        public var group: String?
    }

    /// A trace: its spans, as received.
    public struct Trace: Sendable {
        public var id: String
        public var spans: [Span]
        public var start: UInt64 { spans.map(\.startUnixNano).min() ?? 0 }
        public var end: UInt64 { spans.map(\.endUnixNano).max() ?? 0 }
        /// The root span: the one whose parent is not in the trace.
        public var root: Span? {
            let ids = Set(spans.map(\.spanID))
            return spans.first { $0.parentSpanID.isEmpty || !ids.contains($0.parentSpanID) }
        }
    }

    public let options: Options
    public let history: MetricHistory
    private let state = Mutex(State())

    private struct State {
        var processes: [Int64: ProcessInfo] = [:]
        var events: [EventInfo] = []
        var traces: [String: Trace] = [:]
        var traceOrder: [String] = []
    }

    public init(options: Options = .init()) {
        self.options = options
        history = MetricHistory(options: options.history)
    }

    public func apply(_ batch: [Signal]) {
        for signal in batch {
            switch signal {
            case .metric(let m):
                guard m.kind != .histogram else { continue }
                let time = Int64(m.timeUnixNano / 1_000_000)
                note(m.resource, time: time)
                let attrs = m.attributes.map { "\($0.key)=\($0.value.text)" }.sorted().joined(separator: ",")
                history.add(MetricHistory.Key(name: m.name, pid: m.resource.pid, group: m.resource.group, attributes: attrs),
                            time: time, value: m.value, unit: m.unit, kind: m.kind.rawValue)
            case .event(let e):
                let time = Int64(e.timeUnixNano / 1_000_000)
                note(e.resource, time: time)
                let info = EventInfo(time: time, name: e.name, severity: "\(e.severity)", body: e.body,
                                     pid: e.resource.pid, group: e.resource.group)
                state.withLock { s in
                    s.events.append(info)
                    if s.events.count > options.maxEvents { s.events.removeFirst(s.events.count - options.maxEvents) }
                    if e.name == "process.exit", let pid = e.resource.pid { s.processes[pid]?.exited = true }
                }
            case .span(let span):
                note(span.resource, time: Int64(span.endUnixNano / 1_000_000))
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
                    s.traces[id]!.spans.append(span)
                }
            case .profile(let p):
                note(p.resource, time: Int64(p.startUnixNano / 1_000_000))
            }
        }
    }

    private func note(_ r: Resource, time: Int64) {
        guard let pid = r.pid, let group = r.group else { return }
        func s(_ k: String) -> String? { if case .string(let v)? = r[k] { return v }; return nil }
        state.withLock { st in
            if st.processes[pid] == nil {
                st.processes[pid] = ProcessInfo(pid: pid, group: group, rule: s("ferret.rule") ?? "", executable: s("process.executable.name") ?? "",
                                                goVersion: s("process.runtime.version"), linkage: s("process.linkage"),
                                                firstSeen: time, lastSeen: time, exited: false)
            } else if time > st.processes[pid]!.lastSeen {
                st.processes[pid]!.lastSeen = time
            }
        }
    }

    public var processes: [ProcessInfo] { state.withLock { Array($0.processes.values) }.sorted { $0.pid < $1.pid } }
    /// Newest first.
    public var events: [EventInfo] { state.withLock { $0.events.reversed() } }
    /// Newest first.
    public var traces: [Trace] { state.withLock { s in s.traceOrder.reversed().compactMap { s.traces[$0] } } }
    public func trace(_ id: String) -> Trace? { state.withLock { $0.traces[id] } }
}
