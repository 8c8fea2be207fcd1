/// A typed attribute value (OpenTelemetry's AnyValue, scalar subset).
public enum AttributeValue: Sendable, Hashable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
}

/// Lower-case hex of trace and span ids.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for x in bytes { out.append(digits[Int(x >> 4)]); out.append(digits[Int(x & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

public struct Attribute: Sendable, Hashable {
    public var key: String
    public var value: AttributeValue
    public init(_ key: String, _ value: AttributeValue) {
        self.key = key
        self.value = value
    }
}

/// The identity of the process (or the agent) a signal came from. Stamped by
/// the host, shared by reference, serialised once.
public final class Resource: Sendable {
    public let attributes: [Attribute]
    /// `{"k":v,...}` as UTF-8, computed once.
    public let json: [UInt8]

    public init(_ attributes: [Attribute]) {
        self.attributes = attributes
        var w = JSONWriter()
        w.attributesObject(attributes)
        self.json = w.bytes
    }

    public subscript(key: String) -> AttributeValue? {
        attributes.first(where: { $0.key == key })?.value
    }

    public var pid: Int64? {
        if case .int(let p)? = self["process.pid"] { return p }
        return nil
    }

    public var group: String? {
        if case .string(let g)? = self["ferret.group"] { return g }
        return nil
    }

    public static let empty = Resource([])
}

public enum MetricKind: String, Sendable { case gauge, counter, histogram }

/// Explicit-bucket histogram data: `bucketCounts.count == bounds.count + 1`.
public struct HistogramData: Sendable, Hashable {
    public var count: UInt64
    public var sum: Double
    public var bounds: [Double]
    public var bucketCounts: [UInt64]
    public init(count: UInt64, sum: Double, bounds: [Double], bucketCounts: [UInt64]) {
        self.count = count
        self.sum = sum
        self.bounds = bounds
        self.bucketCounts = bucketCounts
    }
}

public struct MetricPoint: Sendable {
    public var name: String
    public var kind: MetricKind
    public var unit: String
    public var value: Double
    public var histogram: HistogramData?
    public var timeUnixNano: UInt64
    public var attributes: [Attribute]
    public var resource: Resource

    public init(name: String, kind: MetricKind, unit: String = "", value: Double = 0, histogram: HistogramData? = nil,
                timeUnixNano: UInt64, attributes: [Attribute] = [], resource: Resource) {
        self.name = name
        self.kind = kind
        self.unit = unit
        self.value = value
        self.histogram = histogram
        self.timeUnixNano = timeUnixNano
        self.attributes = attributes
        self.resource = resource
    }
}

public enum SpanKind: String, Sendable { case `internal`, server, client, producer, consumer }
public enum SpanStatus: String, Sendable { case unset, ok, error }

public struct Span: Sendable {
    public var name: String
    public var kind: SpanKind
    public var traceID: [UInt8]        // 16 bytes
    public var spanID: [UInt8]         // 8 bytes
    public var parentSpanID: [UInt8]   // 8 bytes, or empty for a root span
    public var startUnixNano: UInt64
    public var endUnixNano: UInt64
    public var status: SpanStatus
    public var statusMessage: String
    public var attributes: [Attribute]
    public var resource: Resource
}

public struct Profile: Sendable {
    public var data: [UInt8]           // gzipped pprof
    public var profileType: String
    public var startUnixNano: UInt64
    public var durationNano: UInt64
    public var samples: Int64
    /// Set by a sink that stored the bytes (e.g. pprof_dir).
    public var path: String?
    public var attributes: [Attribute]
    public var resource: Resource
}

public enum Severity: String, Sendable, Comparable {
    case debug, info, warn, error
    var rank: Int { switch self { case .debug: 0; case .info: 1; case .warn: 2; case .error: 3 } }
    public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
}

/// A step in a monitored process's life, as the agent saw it. Carried by the
/// agent's own `process.attach` and `process.exit` events, so that aggregators
/// and sinks forget an exited process's series by this typed value, never by
/// an event name (a plugin's event of the same name carries none).
public enum ProcessLifecycle: Sendable, Equatable {
    /// The process joined a group and its collectors were attached.
    case attached
    /// The process exited: nothing more will come for its resource.
    case exited
}

public struct Event: Sendable {
    public var name: String
    public var severity: Severity
    public var body: String
    public var timeUnixNano: UInt64
    public var attributes: [Attribute]
    public var resource: Resource
    /// Set by the agent on its lifecycle events only (`resource` is the process's).
    public var lifecycle: ProcessLifecycle?

    public init(name: String, severity: Severity, body: String, timeUnixNano: UInt64,
                attributes: [Attribute] = [], resource: Resource, lifecycle: ProcessLifecycle? = nil) {
        self.name = name
        self.severity = severity
        self.body = body
        self.timeUnixNano = timeUnixNano
        self.attributes = attributes
        self.resource = resource
        self.lifecycle = lifecycle
    }

    /// The agent's event for an exited process (name `process.exit`).
    public var isProcessExit: Bool { lifecycle == .exited }
}

/// Anything that flows through the pipeline.
public enum Signal: Sendable {
    case metric(MetricPoint)
    case span(Span)
    case profile(Profile)
    case event(Event)

    public var resource: Resource {
        switch self {
        case .metric(let m): m.resource
        case .span(let s): s.resource
        case .profile(let p): p.resource
        case .event(let e): e.resource
        }
    }

    public var kindName: String {
        switch self {
        case .metric: "metric"
        case .span: "span"
        case .profile: "profile"
        case .event: "event"
        }
    }
}
