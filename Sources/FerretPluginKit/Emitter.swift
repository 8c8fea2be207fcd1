import Foundation

/// A typed attribute value.
public enum AttrValue: Sendable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
}

/// One metric point to emit.
public struct Metric: Sendable {
    public enum Kind: Sendable { case gauge, counter, histogram }
    public var name: String
    public var kind: Kind
    public var unit: String
    public var value: Double
    /// The attached process this was measured on (0 = the instance itself).
    public var pid: Int32
    /// 0 lets the host stamp the time.
    public var timeUnixNano: UInt64
    public var attributes: [(String, AttrValue)]
    /// Histogram only: upper bounds and bounds.count + 1 bucket counts.
    public var bounds: [Double]
    public var bucketCounts: [UInt64]
    public var sum: Double

    public static func gauge(_ name: String, _ value: Double, unit: String = "", pid: Int32,
                             attributes: [(String, AttrValue)] = [], time: UInt64 = 0) -> Metric {
        Metric(name: name, kind: .gauge, unit: unit, value: value, pid: pid, timeUnixNano: time, attributes: attributes, bounds: [], bucketCounts: [], sum: 0)
    }

    public static func counter(_ name: String, _ value: Double, unit: String = "", pid: Int32,
                               attributes: [(String, AttrValue)] = [], time: UInt64 = 0) -> Metric {
        Metric(name: name, kind: .counter, unit: unit, value: value, pid: pid, timeUnixNano: time, attributes: attributes, bounds: [], bucketCounts: [], sum: 0)
    }

    public static func histogram(_ name: String, bounds: [Double], bucketCounts: [UInt64], sum: Double, unit: String = "",
                                 pid: Int32, attributes: [(String, AttrValue)] = [], time: UInt64 = 0) -> Metric {
        Metric(name: name, kind: .histogram, unit: unit, value: 0, pid: pid, timeUnixNano: time, attributes: attributes,
               bounds: bounds, bucketCounts: bucketCounts, sum: sum)
    }
}

/// One event to emit.
public struct PluginEvent: Sendable {
    public enum Severity: UInt32, Sendable { case debug = 0, info, warn, error }
    public var name: String
    public var severity: Severity
    public var body: String
    public var pid: Int32
    public var attributes: [(String, AttrValue)]

    public init(name: String, severity: Severity, body: String, pid: Int32, attributes: [(String, AttrValue)] = []) {
        self.name = name
        self.severity = severity
        self.body = body
        self.pid = pid
        self.attributes = attributes
    }
}

public enum EmitResult: Sendable, Equatable {
    case ok
    /// The host's queue was full: the batch was dropped and counted.
    case dropped
    /// The host refused a malformed record (its log says why).
    case invalid
}

/// Sends signals to the host. Thread-safe and non-blocking.
public struct Emitter: @unchecked Sendable {
    let api: UnsafePointer<ferret_host_api>
    let ctx: OpaquePointer?

    public enum LogLevel: Int32 { case debug = 0, info, warn, error }

    public func log(_ level: LogLevel, _ message: String) {
        var m = message
        m.withUTF8 { u in
            u.withMemoryRebound(to: CChar.self) { c in
                api.pointee.log?(ctx, level.rawValue, ferret_str(ptr: c.baseAddress, len: c.count))
            }
        }
    }

    @discardableResult
    public func metrics(_ points: [Metric]) -> EmitResult {
        guard !points.isEmpty, let fn = api.pointee.emit_metrics else { return .ok }
        let arena = Arena()
        var recs = [ferret_metric_point](repeating: ferret_metric_point(), count: points.count)
        for (i, m) in points.enumerated() {
            var r = ferret_metric_point()
            r.hdr = header(ferret_metric_point.self)
            r.name = arena.str(m.name)
            r.unit = arena.str(m.unit)
            switch m.kind {
            case .gauge: r.kind = UInt32(FERRET_METRIC_GAUGE.rawValue)
            case .counter: r.kind = UInt32(FERRET_METRIC_COUNTER.rawValue)
            case .histogram: r.kind = UInt32(FERRET_METRIC_HISTOGRAM.rawValue)
            }
            r.pid = m.pid
            r.time_unix_nano = m.timeUnixNano
            r.value = m.value
            (r.attrs, r.attr_count) = arena.attrs(m.attributes)
            if m.kind == .histogram {
                r.count = m.bucketCounts.reduce(0, +)
                r.sum = m.sum
                r.bounds = arena.copy(m.bounds)
                r.bound_count = m.bounds.count
                r.bucket_counts = arena.copy(m.bucketCounts)
            }
            recs[i] = r
        }
        return result(recs.withUnsafeBufferPointer { fn(ctx, $0.baseAddress, $0.count) })
    }

    @discardableResult
    public func events(_ events: [PluginEvent]) -> EmitResult {
        guard !events.isEmpty, let fn = api.pointee.emit_events else { return .ok }
        let arena = Arena()
        let recs = events.map { e -> ferret_event in
            var r = ferret_event()
            r.hdr = header(ferret_event.self)
            r.pid = e.pid
            r.severity = e.severity.rawValue
            r.name = arena.str(e.name)
            r.body = arena.str(e.body)
            (r.attrs, r.attr_count) = arena.attrs(e.attributes)
            return r
        }
        return result(recs.withUnsafeBufferPointer { fn(ctx, $0.baseAddress, $0.count) })
    }

    /// Emits already-built C records (spans, profiles) for plugins that need full control.
    @discardableResult
    public func spans(_ records: UnsafeBufferPointer<ferret_span>) -> EmitResult {
        guard let fn = api.pointee.emit_spans else { return .ok }
        return result(fn(ctx, records.baseAddress, records.count))
    }

    @discardableResult
    public func profiles(_ records: UnsafeBufferPointer<ferret_profile>) -> EmitResult {
        guard let fn = api.pointee.emit_profiles else { return .ok }
        return result(fn(ctx, records.baseAddress, records.count))
    }

    /// Emits one profile: `data` is a gzipped profile.proto.
    @discardableResult
    public func profile(pid: Int32, type: String, data: [UInt8], startUnixNano: UInt64, durationNano: UInt64,
                        samples: Int64, attributes: [(String, AttrValue)] = []) -> EmitResult {
        let arena = Arena()
        var r = ferret_profile()
        r.hdr = header(ferret_profile.self)
        r.pid = pid
        r.start_time_unix_nano = startUnixNano
        r.duration_nano = durationNano
        r.sample_count = samples
        r.profile_type = arena.str(type)
        (r.attrs, r.attr_count) = arena.attrs(attributes)
        return data.withUnsafeBufferPointer { d in
            r.data = d.baseAddress
            r.data_len = d.count
            return withUnsafePointer(to: &r) { profiles(UnsafeBufferPointer(start: $0, count: 1)) }
        }
    }

    private func result(_ st: Int32) -> EmitResult {
        switch st {
        case Int32(FERRET_OK.rawValue): .ok
        case Int32(FERRET_E_DROPPED.rawValue): .dropped
        default: .invalid
        }
    }
}

func header<T>(_: T.Type) -> ferret_header {
    ferret_header(abi_major: UInt16(FERRET_ABI_MAJOR), abi_minor: UInt16(FERRET_ABI_MINOR), struct_size: UInt32(MemoryLayout<T>.size))
}

/// C memory for one emit call, freed when the call returns.
final class Arena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func str(_ s: String) -> ferret_str {
        var s = s
        return s.withUTF8 { u in
            guard u.count > 0 else { return ferret_str(ptr: nil, len: 0) }
            let p = UnsafeMutableRawPointer.allocate(byteCount: u.count, alignment: 1)
            p.copyMemory(from: u.baseAddress!, byteCount: u.count)
            blocks.append(p)
            return ferret_str(ptr: p.assumingMemoryBound(to: CChar.self), len: u.count)
        }
    }

    func copy<T>(_ a: [T]) -> UnsafePointer<T>? {
        guard !a.isEmpty else { return nil }
        let p = UnsafeMutablePointer<T>.allocate(capacity: a.count)
        p.initialize(from: a, count: a.count)
        blocks.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func attrs(_ list: [(String, AttrValue)]) -> (UnsafePointer<ferret_attr>?, Int) {
        guard !list.isEmpty else { return (nil, 0) }
        let out = list.map { (k, v) -> ferret_attr in
            var a = ferret_attr()
            a.key = str(k)
            switch v {
            case .string(let s): a.type = UInt32(FERRET_ATTR_STRING.rawValue); a.value.s = str(s)
            case .int(let i): a.type = UInt32(FERRET_ATTR_INT.rawValue); a.value.i = i
            case .double(let d): a.type = UInt32(FERRET_ATTR_DOUBLE.rawValue); a.value.d = d
            case .bool(let b): a.type = UInt32(FERRET_ATTR_BOOL.rawValue); a.value.b = b ? 1 : 0
            }
            return a
        }
        return (copy(out), out.count)
    }

    deinit { for b in blocks { b.deallocate() } }
}
