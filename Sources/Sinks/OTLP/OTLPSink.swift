import FerretCore
import FerretDelivery
import Foundation
import Logging
import OTLP

/// Sends metrics, spans and events to an OpenTelemetry collector (or any
/// OTLP receiver) over OTLP/HTTP with protobuf bodies: metrics to
/// `<endpoint>/v1/metrics`, spans to `/v1/traces`, events as log records to
/// `/v1/logs`. Profiles are not sent (OTLP has no stable profiles signal).
///
/// Each write is encoded into export requests (`OTLPEncoder`) that wait in
/// the delivery core's bounded buffer; requests of one signal are joined into
/// one body (protobuf concatenation appends the repeated fields), sent, and
/// retried with backoff when the receiver answers 429, 502, 503, 504 or is
/// unreachable, as the OTLP/HTTP specification asks.
public final class OTLPSink: DeliveringSink, @unchecked Sendable {
    public static let keys = ["endpoint", "headers", "signals"] + DeliveryOptions.keys
    public static let defaultEndpoint = "http://127.0.0.1:4318"
    /// The signal kinds OTLP carries (config names, as the other sinks use them).
    public static let signalKinds: [String] = ["metric", "span", "event"]

    public let delivery: Delivery
    public var deliveries: [Delivery] { [delivery] }
    private let signals: Set<String>
    private let encoder: OTLPEncoder
    private let batchBytes: Int

    /// Requests encoded per write hold at most this many signals (and are
    /// split further when one would exceed the batch size).
    static let chunkSignals = 2048

    /// - Parameters:
    ///   - endpoint: the receiver's base URL; the signal paths are appended.
    ///   - headers: sent with every request (e.g. authorization); Content-Type is the sink's.
    ///   - signals: the kinds to send (`metric`, `span`, `event`).
    public init(endpoint: String = OTLPSink.defaultEndpoint, headers: [(String, String)] = [],
                signals: Set<String> = Set(OTLPSink.signalKinds), options: DeliveryOptions = DeliveryOptions(),
                name: String = "otlp", logger: Logger, start: Bool = true) throws {
        self.signals = signals
        self.encoder = OTLPEncoder(startUnixNano: Clock.unixNanos())
        self.batchBytes = options.batchBytes
        if let problem = HTTPPoster.problem(url: endpoint) { throw SinkError(problem) }
        let base = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        let posters = try Dictionary(uniqueKeysWithValues: Route.allCases.map {
            ($0.rawValue, try HTTPPoster(url: base + $0.path, headers: headers, timeout: options.timeout))
        })
        delivery = Delivery(name: name, options: options, logger: logger, start: start) { route, body in
            guard let poster = posters[route] else { return .reject("no OTLP route '\(route)'") }
            return Self.outcome(poster.exchange(body, extraHeaders: [("Content-Type", "application/x-protobuf")]), url: poster.url)
        }
    }

    /// The three OTLP/HTTP signal paths, which are also the delivery routes.
    enum Route: String, CaseIterable {
        case metrics, traces, logs
        var path: String { "/v1/\(rawValue)" }
    }

    public func write(_ batch: [Signal]) throws {
        var metrics: [MetricPoint] = [], spans: [Span] = [], events: [Event] = []
        for s in batch {
            switch s {
            case .metric(let m) where signals.contains("metric"): metrics.append(m)
            case .span(let sp) where signals.contains("span"): spans.append(sp)
            case .event(let e) where signals.contains("event"): events.append(e)
            default: continue
            }
        }
        try hand(metrics, .metrics) { try encoder.metricsRequest($0).serializedBytes() }
        try hand(spans, .traces) { try encoder.tracesRequest($0).serializedBytes() }
        let now = Clock.unixNanos()
        try hand(events, .logs) { try encoder.logsRequest($0, observedUnixNano: now).serializedBytes() }
    }

    public func close() { delivery.close() }

    /// Encodes `items` in chunks and queues them on `route`; a chunk whose
    /// request would exceed the batch size is halved until it fits (or is one signal).
    private func hand<T>(_ items: [T], _ route: Route, _ encode: ([T]) throws -> [UInt8]) throws {
        var start = 0
        while start < items.count {
            let end = min(items.count, start + Self.chunkSignals)
            try handChunk(items[start..<end], route, encode)
            start = end
        }
    }

    private func handChunk<T>(_ items: ArraySlice<T>, _ route: Route, _ encode: ([T]) throws -> [UInt8]) throws {
        let bytes = try encode(Array(items))
        if bytes.count > batchBytes && items.count > 1 {
            let mid = items.startIndex + items.count / 2
            try handChunk(items[..<mid], route, encode)
            try handChunk(items[mid...], route, encode)
            return
        }
        delivery.enqueue(route: route.rawValue, bytes, points: items.count)
    }

    /// OTLP/HTTP's rules: 2xx is success; 429, 502, 503 and 504 (and transport
    /// failures) are retryable; every other status is a refusal.
    static func outcome(_ result: Result<HTTPPoster.Answer, any Error>, url: String) -> DeliveryOutcome {
        switch result {
        case .success(let a):
            switch a.status {
            case 200..<300: return .delivered
            case 429, 502, 503, 504: return .retry("\(url): HTTP \(a.status)")
            default: return .reject("\(url): HTTP \(a.status) \(printable(a.body))")
            }
        case .failure(let e):
            return .retry("\(url): \(e)")
        }
    }

    /// A receiver's error body is a protobuf `Status` or text; keep what reads as text.
    private static func printable(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0xFFFD }.prefix(200).map(Character.init))
    }
}

extension OTLPSink {
    public struct Config: Equatable, Sendable {
        var endpoint: String
        /// Header names and values, in the entry's order.
        var headers: [[String]]
        var signals: Set<String>
        var options: DeliveryOptions
    }

    public static let sinkType = SinkType(keys: keys, decode: { c, d, ctx -> Config? in
        let n = c.node
        let endpoint = n["endpoint"].flatMap { d.string($0, "'endpoint'", context: ctx) } ?? defaultEndpoint
        var headers: [[String]] = []
        if let h = n["headers"], let pairs = d.mapping(h, "'headers'", context: ctx) {
            for p in pairs {
                guard let v = d.string(p.value, "header '\(p.key)'", context: ctx) else { continue }
                if p.key.lowercased() == "content-type" {
                    d.fail(p.keyMark, "header 'Content-Type' \(ctx) is the sink's own (application/x-protobuf)")
                    continue
                }
                headers.append([p.key, v])
            }
        }
        var kinds = Set(signalKinds)
        if let s = n["signals"], let list = d.stringList(s, "'signals'", context: ctx) {
            kinds = []
            for k in list {
                if signalKinds.contains(k) { kinds.insert(k) } else if k == "profile" {
                    d.fail(s.mark, "profiles are not sent over OTLP \(ctx); use metric, span or event (and pprof_dir for profiles)")
                } else {
                    d.fail(s.mark, "unknown signal kind '\(k)' \(ctx); use metric, span or event")
                }
            }
        }
        let options = DeliveryOptions.decode(c, d, context: ctx)
        if let problem = HTTPPoster.problem(url: endpoint) { d.fail(n["endpoint"]?.mark ?? c.mark, "\(problem) \(ctx)") }
        return Config(endpoint: endpoint, headers: headers, signals: kinds, options: options)
    }, make: { cf, c, logger in
        do {
            return try OTLPSink(endpoint: cf.endpoint, headers: cf.headers.map { ($0[0], $0[1]) }, signals: cf.signals,
                                options: cf.options, name: c.name, logger: logger, start: false)
        } catch {
            throw ConfigError(mark: c.node["endpoint"]?.mark ?? c.mark, "sink '\(c.name)': \(error)")
        }
    })
}
