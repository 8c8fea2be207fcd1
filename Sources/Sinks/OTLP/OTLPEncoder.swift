import FerretCore
import FerretDelivery
import Foundation
import OTLP

/// Turns pipeline signals into OTLP export requests: metrics into an
/// `ExportMetricsServiceRequest`, spans into an `ExportTraceServiceRequest`,
/// events into an `ExportLogsServiceRequest` of log records. Profiles have no
/// stable OTLP signal and are not encoded.
///
/// Signals are grouped by resource (the host shares one `Resource` object per
/// process, so grouping is by identity) under one scope, `ferret` at the
/// agent's version; metric points of one name, kind and unit within a
/// resource become the data points of one `Metric`.
///
/// Requests of one kind may be concatenated on the wire: protobuf merges
/// repeated fields by appending, so two encoded requests joined are the
/// request holding both.
public struct OTLPEncoder: Sendable {
    /// The start of every cumulative series (counters, histograms): points
    /// carry no start time of their own, so the sink's creation stands in,
    /// or the point's own time when that is earlier.
    public var startUnixNano: UInt64

    public init(startUnixNano: UInt64) {
        self.startUnixNano = startUnixNano
    }

    static let scope: Opentelemetry_Proto_Common_V1_InstrumentationScope = {
        var s = Opentelemetry_Proto_Common_V1_InstrumentationScope()
        s.name = "ferret"
        s.version = ferretVersion
        return s
    }()

    // MARK: - metrics

    public func metricsRequest(_ points: [MetricPoint]) -> Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest {
        // Per resource, in order of first appearance: metrics in order of first appearance.
        struct Series {
            var metric: Opentelemetry_Proto_Metrics_V1_Metric
            var kind: MetricKind
            var numbers: [Opentelemetry_Proto_Metrics_V1_NumberDataPoint] = []
            var histograms: [Opentelemetry_Proto_Metrics_V1_HistogramDataPoint] = []
        }
        var groups = ResourceGroups<(index: [String: Int], series: [Series])>(empty: ([:], []))
        for p in points {
            groups.update(p.resource) { g in
                let key = "\(p.kind.rawValue)\u{0}\(p.unit)\u{0}\(p.name)"
                let i: Int
                if let known = g.index[key] {
                    i = known
                } else {
                    var m = Opentelemetry_Proto_Metrics_V1_Metric()
                    m.name = p.name
                    m.unit = p.unit
                    i = g.series.count
                    g.index[key] = i
                    g.series.append(Series(metric: m, kind: p.kind))
                }
                switch p.kind {
                case .gauge, .counter:
                    var dp = Opentelemetry_Proto_Metrics_V1_NumberDataPoint()
                    dp.attributes = Self.keyValues(p.attributes)
                    dp.timeUnixNano = p.timeUnixNano
                    if p.kind == .counter { dp.startTimeUnixNano = min(startUnixNano, p.timeUnixNano) }
                    dp.asDouble = p.value
                    g.series[i].numbers.append(dp)
                case .histogram:
                    var dp = Opentelemetry_Proto_Metrics_V1_HistogramDataPoint()
                    dp.attributes = Self.keyValues(p.attributes)
                    dp.startTimeUnixNano = min(startUnixNano, p.timeUnixNano)
                    dp.timeUnixNano = p.timeUnixNano
                    if let h = p.histogram {
                        dp.count = h.count
                        dp.sum = h.sum
                        dp.explicitBounds = h.bounds
                        dp.bucketCounts = h.bucketCounts
                    }
                    g.series[i].histograms.append(dp)
                }
            }
        }
        var request = Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest()
        request.resourceMetrics = groups.entries.map { resource, g in
            var scope = Opentelemetry_Proto_Metrics_V1_ScopeMetrics()
            scope.scope = Self.scope
            scope.metrics = g.series.map { s in
                var m = s.metric
                switch s.kind {
                case .gauge:
                    var gauge = Opentelemetry_Proto_Metrics_V1_Gauge()
                    gauge.dataPoints = s.numbers
                    m.gauge = gauge
                case .counter:
                    var sum = Opentelemetry_Proto_Metrics_V1_Sum()
                    sum.dataPoints = s.numbers
                    sum.aggregationTemporality = .cumulative
                    sum.isMonotonic = true
                    m.sum = sum
                case .histogram:
                    var h = Opentelemetry_Proto_Metrics_V1_Histogram()
                    h.dataPoints = s.histograms
                    h.aggregationTemporality = .cumulative
                    m.histogram = h
                }
                return m
            }
            var rm = Opentelemetry_Proto_Metrics_V1_ResourceMetrics()
            rm.resource = Self.resource(resource)
            rm.scopeMetrics = [scope]
            return rm
        }
        return request
    }

    // MARK: - traces

    public func tracesRequest(_ spans: [Span]) -> Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest {
        var groups = ResourceGroups<[Opentelemetry_Proto_Trace_V1_Span]>(empty: [])
        for s in spans {
            var o = Opentelemetry_Proto_Trace_V1_Span()
            o.traceID = Data(s.traceID)
            o.spanID = Data(s.spanID)
            o.parentSpanID = Data(s.parentSpanID)
            o.name = s.name
            o.kind = switch s.kind {
            case .internal: .internal
            case .server: .server
            case .client: .client
            case .producer: .producer
            case .consumer: .consumer
            }
            o.startTimeUnixNano = s.startUnixNano
            o.endTimeUnixNano = s.endUnixNano
            o.attributes = Self.keyValues(s.attributes)
            var status = Opentelemetry_Proto_Trace_V1_Status()
            status.code = switch s.status {
            case .unset: .unset
            case .ok: .ok
            case .error: .error
            }
            status.message = s.statusMessage
            o.status = status
            groups.update(s.resource) { $0.append(o) }
        }
        var request = Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest()
        request.resourceSpans = groups.entries.map { resource, spans in
            var scope = Opentelemetry_Proto_Trace_V1_ScopeSpans()
            scope.scope = Self.scope
            scope.spans = spans
            var rs = Opentelemetry_Proto_Trace_V1_ResourceSpans()
            rs.resource = Self.resource(resource)
            rs.scopeSpans = [scope]
            return rs
        }
        return request
    }

    // MARK: - logs

    /// Events become log records: the name in `event_name` and in the
    /// `event.name` attribute (for receivers older than that field), the body
    /// as a string body, the severity as number and text.
    public func logsRequest(_ events: [Event], observedUnixNano: UInt64) -> Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest {
        var groups = ResourceGroups<[Opentelemetry_Proto_Logs_V1_LogRecord]>(empty: [])
        for e in events {
            var r = Opentelemetry_Proto_Logs_V1_LogRecord()
            r.timeUnixNano = e.timeUnixNano
            r.observedTimeUnixNano = observedUnixNano
            r.eventName = e.name
            (r.severityNumber, r.severityText) = switch e.severity {
            case .debug: (.debug, "DEBUG")
            case .info: (.info, "INFO")
            case .warn: (.warn, "WARN")
            case .error: (.error, "ERROR")
            }
            var body = Opentelemetry_Proto_Common_V1_AnyValue()
            body.stringValue = e.body
            r.body = body
            var attributes = Self.keyValues(e.attributes)
            if !e.attributes.contains(where: { $0.key == "event.name" }) {
                attributes.append(Self.keyValue(Attribute("event.name", .string(e.name))))
            }
            r.attributes = attributes
            groups.update(e.resource) { $0.append(r) }
        }
        var request = Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest()
        request.resourceLogs = groups.entries.map { resource, records in
            var scope = Opentelemetry_Proto_Logs_V1_ScopeLogs()
            scope.scope = Self.scope
            scope.logRecords = records
            var rl = Opentelemetry_Proto_Logs_V1_ResourceLogs()
            rl.resource = Self.resource(resource)
            rl.scopeLogs = [scope]
            return rl
        }
        return request
    }

    // MARK: - attributes

    static func resource(_ r: Resource) -> Opentelemetry_Proto_Resource_V1_Resource {
        var o = Opentelemetry_Proto_Resource_V1_Resource()
        o.attributes = keyValues(r.attributes)
        return o
    }

    static func keyValues(_ attributes: [Attribute]) -> [Opentelemetry_Proto_Common_V1_KeyValue] {
        attributes.map(keyValue)
    }

    static func keyValue(_ a: Attribute) -> Opentelemetry_Proto_Common_V1_KeyValue {
        var v = Opentelemetry_Proto_Common_V1_AnyValue()
        switch a.value {
        case .string(let s): v.stringValue = s
        case .int(let i): v.intValue = i
        case .double(let d): v.doubleValue = d
        case .bool(let b): v.boolValue = b
        }
        var kv = Opentelemetry_Proto_Common_V1_KeyValue()
        kv.key = a.key
        kv.value = v
        return kv
    }
}

/// Values grouped by resource identity, in order of first appearance.
struct ResourceGroups<Value> {
    private(set) var entries: [(resource: Resource, value: Value)] = []
    private var index: [ObjectIdentifier: Int] = [:]
    private let empty: Value

    init(empty: Value) { self.empty = empty }

    mutating func update(_ resource: Resource, _ body: (inout Value) -> Void) {
        let id = ObjectIdentifier(resource)
        let i: Int
        if let known = index[id] {
            i = known
        } else {
            i = entries.count
            index[id] = i
            entries.append((resource, empty))
        }
        body(&entries[i].value)
    }
}
