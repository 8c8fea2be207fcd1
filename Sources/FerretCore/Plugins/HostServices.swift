import FerretPluginABI
import Foundation
import Logging
import Synchronization

/// The host side of one plugin instance: where its emits go and which
/// process resources they are stamped with.
public final class HostContext: Sendable {
    public let id: Int
    public let instanceName: String
    public let pipeline: Pipeline
    public let logger: Logger
    /// pid -> resource of attached processes.
    let targets = Mutex<[Int32: Resource]>([:])
    let fallback: Resource
    public let emitted: MetricCounter
    public let dropped: MetricCounter
    public let invalid: MetricCounter
    /// Set for an instance in a helper: its emits come from the ring's reader,
    /// which may wait for room in the queue; the ring fills meanwhile and the
    /// plugin's own emits get FERRET_E_DROPPED, as they would in process.
    let waitsForRoom = Atomic<Bool>(false)
    /// How long the ring's reader waits for room before it drops.
    static let roomWait: TimeInterval = 0.25

    init(id: Int, instanceName: String, pipeline: Pipeline, fallback: Resource, dimensions: [(String, String)], logger: Logger) {
        self.id = id
        self.instanceName = instanceName
        self.pipeline = pipeline
        self.fallback = fallback
        self.logger = logger
        emitted = pipeline.telemetry.counter("ferret.plugin.emitted", dimensions)
        dropped = pipeline.telemetry.counter("ferret.plugin.emit.dropped", dimensions)
        invalid = pipeline.telemetry.counter("ferret.plugin.emit.invalid", dimensions)
    }

    func resource(for pid: Int32) -> Resource {
        if pid == 0 { return fallback }
        return targets.withLock { $0[pid] } ?? fallback
    }

    func setTarget(_ pid: Int32, _ resource: Resource?) {
        targets.withLock { $0[pid] = resource }
    }

    /// Submits converted signals, counting drops.
    func submit(_ signals: [Signal]) -> Int32 {
        let queued = waitsForRoom.load(ordering: .relaxed)
            ? pipeline.submit(signals, waitingUpTo: Self.roomWait) : pipeline.submit(signals)
        if queued {
            emitted.increment(by: signals.count)
            return Int32(FERRET_OK.rawValue)
        }
        dropped.increment(by: signals.count)
        return Int32(FERRET_E_DROPPED.rawValue)
    }

    /// Refuses a batch: counts its records, and logs the reason (which names
    /// the plugin and the field) at most once per `logEvery`, with the number
    /// refused since the last line.
    func reject(_ reason: String, records: Int = 1) -> Int32 {
        invalid.increment(by: max(records, 1))
        let now = Clock.monotonicNanos()
        let (log, quiet) = rejectLog.withLock { s -> (Bool, Int) in
            if s.last == 0 || now &- s.last >= Self.logEvery {
                defer { s = (now, 0) }
                return (true, s.quiet)
            }
            s.quiet += max(records, 1)
            return (false, 0)
        }
        if log {
            logger.error("plugin instance '\(instanceName)': refused \(max(records, 1)) emitted record(s): \(reason)\(quiet > 0 ? " (\(quiet) more refused since the last report)" : ""); further refusals are logged at most every \(Self.logEvery / 1_000_000_000) s and counted in ferret.plugin.emit.invalid")
        }
        return Int32(FERRET_E_INVALID_ARGUMENT.rawValue)
    }
    private let rejectLog = Mutex<(last: UInt64, quiet: Int)>((0, 0))
    static let logEvery: UInt64 = 10_000_000_000
}

/// The ferret_host_api table handed to every plugin, and the registry that
/// turns the opaque ferret_host_ctx pointer back into a HostContext. Context
/// ids are never reused, so a late emit from a destroyed instance is refused
/// instead of touching freed memory.
public enum HostServices {
    private static let contexts = Mutex<[Int: HostContext]>([:])
    private static let nextID = Atomic<Int>(1)
    nonisolated(unsafe) static var agentLogger = Logger(label: "ferret.plugin")

    static func register(instanceName: String, pipeline: Pipeline, fallback: Resource, dimensions: [(String, String)],
                         logger: Logger) -> HostContext {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let ctx = HostContext(id: id, instanceName: instanceName, pipeline: pipeline, fallback: fallback, dimensions: dimensions,
                              logger: logger)
        contexts.withLock { $0[id] = ctx }
        return ctx
    }

    static func unregister(_ ctx: HostContext) {
        _ = contexts.withLock { $0.removeValue(forKey: ctx.id) }
    }

    static func pointer(_ ctx: HostContext) -> OpaquePointer { OpaquePointer(bitPattern: ctx.id)! }

    /// A host context outside any plugin instance, for embedding and benchmarks:
    /// returns the opaque handle to pass to the table's emit functions.
    public static func standaloneContext(name: String, pipeline: Pipeline, resource: Resource, logger: Logger) -> (OpaquePointer, HostContext) {
        let ctx = register(instanceName: name, pipeline: pipeline, fallback: resource, dimensions: [("ferret.plugin", name)],
                           logger: logger)
        return (pointer(ctx), ctx)
    }

    static func lookup(_ p: OpaquePointer?) -> HostContext? {
        guard let p else { return nil }
        let id = Int(bitPattern: UnsafeRawPointer(p))
        return contexts.withLock { $0[id] }
    }

    /// The table (allocated once, never freed: plugins keep the pointer).
    nonisolated(unsafe) public static let table: UnsafePointer<ferret_host_api> = {
        let t = UnsafeMutablePointer<ferret_host_api>.allocate(capacity: 1)
        t.initialize(to: ferret_host_api())
        t.pointee.hdr = .current(ferret_host_api.self)
        t.pointee.emit_metrics = { ctx, points, count in HostServices.emitMetrics(ctx, points, count) }
        t.pointee.emit_spans = { ctx, spans, count in HostServices.emitSpans(ctx, spans, count) }
        t.pointee.emit_profiles = { ctx, profiles, count in HostServices.emitProfiles(ctx, profiles, count) }
        t.pointee.emit_events = { ctx, events, count in HostServices.emitEvents(ctx, events, count) }
        t.pointee.log = { ctx, level, message in HostServices.log(HostServices.lookup(ctx), level: level, message.string) }
        t.pointee.now_unix_nano = { _ in Clock.unixNanos() }
        t.pointee.monotonic_nano = { _ in Clock.monotonicNanos() }
        return UnsafePointer(t)
    }()

    /// A plugin's log line, tagged with its instance (or "[plugin]" from an entry function).
    static func log(_ ctx: HostContext?, level: Int32, _ text: String) {
        let logger = ctx?.logger ?? HostServices.agentLogger
        let who = ctx.map { "[\($0.instanceName)] " } ?? "[plugin] "
        switch level {
        case Int32(FERRET_LOG_DEBUG.rawValue): logger.debug("\(who)\(text)")
        case Int32(FERRET_LOG_INFO.rawValue): logger.info("\(who)\(text)")
        case Int32(FERRET_LOG_WARN.rawValue): logger.warning("\(who)\(text)")
        default: logger.error("\(who)\(text)")
        }
    }

    // MARK: - conversion from C records

    /// Longest string a record may carry (names, bodies, attribute values).
    static let maxString = 16 << 20

    /// A record's string, checked: NULL with a length, too long, or not UTF-8
    /// refuses the batch, naming the field.
    @inline(__always)
    static func text(_ s: ferret_str, _ field: @autoclosure () -> String) throws(RecordError) -> String {
        if s.len == 0 { return "" }
        guard let p = s.ptr else { throw RecordError("\(field()) is NULL but its length is \(s.len)") }
        guard s.len <= maxString else { throw RecordError("\(field()) is \(s.len) bytes long (the limit is \(maxString))") }
        guard let v = String(validating: UnsafeRawBufferPointer(start: p, count: s.len), as: UTF8.self) else {
            throw RecordError("\(field()) is not valid UTF-8")
        }
        return v
    }

    /// Walks an array of records whose stride is the first element's struct_size.
    @inline(__always)
    static func records<T>(_ base: UnsafePointer<T>, _ count: Int, minimum: Int,
                           _ body: (UnsafePointer<T>) throws(RecordError) -> Void) throws(RecordError) {
        let raw = UnsafeRawPointer(base)
        let stride = Int(raw.load(as: ferret_header.self).struct_size)
        guard stride >= minimum else {
            throw RecordError("struct_size \(stride) is smaller than the ABI 1.0 size \(minimum)")
        }
        // A record smaller than this host's struct (an older minor) is read
        // through a zeroed copy: the fields it does not have read as zero.
        let short = stride < MemoryLayout<T>.size
        let scratch = UnsafeMutablePointer<T>.allocate(capacity: short ? 1 : 0)
        defer { scratch.deallocate() }
        for i in 0..<count {
            let src = raw + i * stride
            let h = src.load(as: ferret_header.self)
            guard h.abi_major == UInt16(FERRET_ABI_MAJOR) else { throw RecordError("record \(i) has abi_major \(h.abi_major)") }
            guard Int(h.struct_size) == stride else {
                throw RecordError("record \(i) has struct_size \(h.struct_size), the first has \(stride)")
            }
            if short {
                ferret_copy(scratch, MemoryLayout<T>.size, src)
                try body(UnsafePointer(scratch))
            } else {
                try body(src.assumingMemoryBound(to: T.self))
            }
        }
    }

    struct RecordError: Error { var reason: String; init(_ r: String) { reason = r } }

    static func attributes(_ p: UnsafePointer<ferret_attr>?, _ n: Int) throws(RecordError) -> [Attribute] {
        if n == 0 { return [] }
        guard let p, n <= 1024 else { throw RecordError(p == nil ? "attrs is NULL but attr_count is \(n)" : "too many attributes (\(n))") }
        var out: [Attribute] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            let a = p[i]
            let key = try text(a.key, "attribute \(i)'s key")
            guard !key.isEmpty else { throw RecordError("attribute \(i) has an empty key") }
            switch a.type {
            case UInt32(FERRET_ATTR_STRING.rawValue): out.append(Attribute(key, .string(try text(a.value.s, "attribute '\(key)'s value"))))
            case UInt32(FERRET_ATTR_INT.rawValue): out.append(Attribute(key, .int(a.value.i)))
            case UInt32(FERRET_ATTR_DOUBLE.rawValue):
                guard a.value.d.isFinite else { throw RecordError("attribute '\(key)' is \(a.value.d)") }
                out.append(Attribute(key, .double(a.value.d)))
            case UInt32(FERRET_ATTR_BOOL.rawValue): out.append(Attribute(key, .bool(a.value.b != 0)))
            default: throw RecordError("attribute '\(key)' has unknown type \(a.type)")
            }
        }
        return out
    }

    /// The frame every emit shares: find the instance, check the array,
    /// convert each record (stride from its header), then submit the batch,
    /// or refuse all of it with the first problem.
    private static func submitRecords<T>(_ ctxp: OpaquePointer?, _ base: UnsafePointer<T>?, _ count: Int, what: String, minimum: Int32,
                                         _ convert: (UnsafePointer<T>, HostContext) throws(RecordError) -> Signal) -> Int32 {
        guard let ctx = lookup(ctxp) else { return Int32(FERRET_E_INVALID_ARGUMENT.rawValue) }
        guard count > 0 else { return Int32(FERRET_OK.rawValue) }
        guard let base else { return ctx.reject("\(what) is NULL") }
        var out: [Signal] = []
        out.reserveCapacity(count)
        do throws(RecordError) {
            try records(base, count, minimum: Int(minimum)) { (p) throws(RecordError) in out.append(try convert(p, ctx)) }
        } catch {
            return ctx.reject(error.reason)
        }
        return ctx.submit(out)
    }

    static func emitMetrics(_ ctxp: OpaquePointer?, _ points: UnsafePointer<ferret_metric_point>?, _ count: Int) -> Int32 {
        let now = Clock.unixNanos()
        // Consecutive points usually share a pid: look its resource up once.
        var lastPid: Int32 = -1
        var lastResource: Resource?
        return submitRecords(ctxp, points, count, what: "points", minimum: FERRET_SIZE_1_0_ferret_metric_point) { (p, ctx) throws(RecordError) -> Signal in
            let m = p.pointee
            let name = try text(m.name, "a metric point's name")
            guard !name.isEmpty else { throw RecordError("a metric point has an empty name (name.ptr is \(m.name.ptr == nil ? "NULL" : "set"))") }
            let unit = try text(m.unit, "the unit of metric '\(name)'")
            let kind: MetricKind
            switch m.kind {
            case UInt32(FERRET_METRIC_GAUGE.rawValue): kind = .gauge
            case UInt32(FERRET_METRIC_COUNTER.rawValue): kind = .counter
            case UInt32(FERRET_METRIC_HISTOGRAM.rawValue): kind = .histogram
            default: throw RecordError("metric '\(name)' has unknown kind \(m.kind)")
            }
            guard kind == .histogram || m.value.isFinite else { throw RecordError("metric '\(name)' has the value \(m.value)") }
            var histogram: HistogramData?
            if kind == .histogram {
                guard m.sum.isFinite else { throw RecordError("histogram '\(name)' has the sum \(m.sum)") }
                let nb = m.bound_count
                guard nb <= 4096, nb == 0 || m.bounds != nil, m.bucket_counts != nil else {
                    throw RecordError("histogram '\(name)' has NULL bounds or bucket_counts")
                }
                let bounds = nb == 0 ? [] : Array(UnsafeBufferPointer(start: m.bounds, count: nb))
                for i in bounds.indices.dropFirst() where !(bounds[i - 1] < bounds[i]) {
                    throw RecordError("histogram '\(name)' bounds are not strictly ascending")
                }
                histogram = HistogramData(count: m.count, sum: m.sum, bounds: bounds,
                                          bucketCounts: Array(UnsafeBufferPointer(start: m.bucket_counts, count: nb + 1)))
            }
            if m.pid != lastPid || lastResource == nil {
                lastPid = m.pid
                lastResource = ctx.resource(for: m.pid)
            }
            return .metric(MetricPoint(name: name, kind: kind, unit: unit, value: m.value, histogram: histogram,
                                       timeUnixNano: m.time_unix_nano == 0 ? now : m.time_unix_nano,
                                       attributes: try attributes(m.attrs, m.attr_count), resource: lastResource!))
        }
    }

    static func emitSpans(_ ctxp: OpaquePointer?, _ spans: UnsafePointer<ferret_span>?, _ count: Int) -> Int32 {
        submitRecords(ctxp, spans, count, what: "spans", minimum: FERRET_SIZE_1_0_ferret_span) { (p, ctx) throws(RecordError) -> Signal in
            var s = p.pointee
            let spanName = try text(s.name, "a span's name")
            let statusMessage = try text(s.status_message, "the status message of span '\(spanName)'")
            let trace = withUnsafeBytes(of: &s.trace_id) { Array($0) }
            let span = withUnsafeBytes(of: &s.span_id) { Array($0) }
            let parent = withUnsafeBytes(of: &s.parent_span_id) { Array($0) }
            guard trace.contains(where: { $0 != 0 }), span.contains(where: { $0 != 0 }) else {
                throw RecordError("span '\(s.name.string)' has an all-zero trace_id or span_id")
            }
            let kinds: [SpanKind] = [.internal, .server, .client, .producer, .consumer]
            let statuses: [SpanStatus] = [.unset, .ok, .error]
            guard Int(s.kind) < kinds.count, Int(s.status) < statuses.count else {
                throw RecordError("span '\(s.name.string)' has an unknown kind or status")
            }
            return .span(Span(name: spanName, kind: kinds[Int(s.kind)], traceID: trace, spanID: span,
                              parentSpanID: parent.contains(where: { $0 != 0 }) ? parent : [],
                              startUnixNano: s.start_time_unix_nano, endUnixNano: s.end_time_unix_nano,
                              status: statuses[Int(s.status)], statusMessage: statusMessage,
                              attributes: try attributes(s.attrs, s.attr_count), resource: ctx.resource(for: s.pid)))
        }
    }

    static func emitProfiles(_ ctxp: OpaquePointer?, _ profiles: UnsafePointer<ferret_profile>?, _ count: Int) -> Int32 {
        submitRecords(ctxp, profiles, count, what: "profiles", minimum: FERRET_SIZE_1_0_ferret_profile) { (p, ctx) throws(RecordError) -> Signal in
            let r = p.pointee
            guard r.data_len == 0 || r.data != nil else { throw RecordError("profile data is NULL") }
            guard r.data_len <= 256 << 20 else { throw RecordError("profile of \(r.data_len) bytes is over 256 MiB") }
            let bytes = r.data_len == 0 ? [] : Array(UnsafeBufferPointer(start: r.data, count: r.data_len))
            return .profile(Profile(data: bytes, profileType: try text(r.profile_type, "a profile's type"), startUnixNano: r.start_time_unix_nano,
                                    durationNano: r.duration_nano, samples: r.sample_count, path: nil,
                                    attributes: try attributes(r.attrs, r.attr_count), resource: ctx.resource(for: r.pid)))
        }
    }

    static func emitEvents(_ ctxp: OpaquePointer?, _ events: UnsafePointer<ferret_event>?, _ count: Int) -> Int32 {
        let now = Clock.unixNanos()
        return submitRecords(ctxp, events, count, what: "events", minimum: FERRET_SIZE_1_0_ferret_event) { (p, ctx) throws(RecordError) -> Signal in
            let e = p.pointee
            let name = try text(e.name, "an event's name")
            guard !name.isEmpty else { throw RecordError("an event has an empty name (name.ptr is \(e.name.ptr == nil ? "NULL" : "set"))") }
            let body = try text(e.body, "the body of event '\(name)'")
            let sev: [Severity] = [.debug, .info, .warn, .error]
            guard Int(e.severity) < sev.count else { throw RecordError("event '\(name)' has unknown severity \(e.severity)") }
            return .event(Event(name: name, severity: sev[Int(e.severity)], body: body,
                                timeUnixNano: e.time_unix_nano == 0 ? now : e.time_unix_nano,
                                attributes: try attributes(e.attrs, e.attr_count), resource: ctx.resource(for: e.pid)))
        }
    }
}
