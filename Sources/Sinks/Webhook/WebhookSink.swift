import FerretCore
import FerretDelivery
import Foundation
import Logging

/// Posts events (leaks, alerts, anomalies, process exits…) as JSON, one event
/// per request, in the same object schema as the jsonl sink's event lines
/// (`{"signal":"event","name":…,"severity":…,"body":…,"time_unix_nano":…,
/// "attributes":{…},"resource":{…}}`). Delivery goes through the shared core:
/// bounded buffer, backoff with jitter, drop-oldest counted.
public final class WebhookSink: DeliveringSink, @unchecked Sendable {
    public static let keys = ["url", "headers", "events", "min_severity"] + DeliveryOptions.keys

    public let delivery: Delivery
    public var deliveries: [Delivery] { [delivery] }
    private let patterns: [String]
    private let minSeverity: Severity

    public init(url: String, headers: [(String, String)] = [], events: [String] = ["*"], minSeverity: Severity = .info,
                options: DeliveryOptions = DeliveryOptions(), name: String = "webhook", logger: Logger, start: Bool = true) throws {
        patterns = events
        self.minSeverity = minSeverity
        var o = options
        o.concatenate = false
        let poster = try HTTPPoster(url: url, headers: [("Content-Type", "application/json")] + headers, timeout: o.timeout)
        delivery = Delivery(name: name, options: o, logger: logger, start: start) { _, body in poster.post(body) }
    }

    /// Whether an event is one this webhook posts.
    public func selects(_ e: Event) -> Bool {
        e.severity >= minSeverity && patterns.contains { fnmatch($0, e.name, 0) == 0 }
    }

    public func write(_ batch: [Signal]) throws {
        for s in batch {
            guard case .event(let e) = s, selects(e) else { continue }
            var w = JSONWriter(capacity: 512)
            w.signalLine(s)
            var body = w.bytes
            if body.last == UInt8(ascii: "\n") { body.removeLast() }
            delivery.enqueue(route: "post", body, points: 1)
        }
    }

    public func close() { delivery.close() }
}

extension WebhookSink {
    public struct Config: Equatable, Sendable {
        var url: String
        /// Header names and values, in the entry's order.
        var headers: [[String]]
        var events: [String]
        var minSeverity: Severity
        var options: DeliveryOptions
    }

    public static let sinkType = SinkType(keys: keys, required: ["url"], decode: { c, d, ctx -> Config? in
        let n = c.node
        guard let urlNode = n["url"], let url = d.string(urlNode, "'url'", context: ctx) else { return nil }
        var headers: [[String]] = []
        if let h = n["headers"] {
            for (k, _, v) in d.mapping(h, "'headers'", context: ctx) ?? [] {
                if let s = d.string(v, "header '\(k)'", context: ctx) { headers.append([k, s]) }
            }
        }
        let events = n["events"].flatMap { d.stringList($0, "'events'", context: ctx) } ?? ["*"]
        var minSeverity = Severity.info
        if let s = n["min_severity"], let v = d.string(s, "'min_severity'", context: ctx) {
            if let sev = Severity(rawValue: v) { minSeverity = sev } else {
                d.fail(s.mark, "'min_severity' \(ctx) must be debug, info, warn or error, got '\(v)'")
            }
        }
        var defaults = DeliveryOptions()
        defaults.bufferBytes = 4 << 20
        let options = DeliveryOptions.decode(c, d, context: ctx, defaults: defaults)
        if let problem = HTTPPoster.problem(url: url) { d.fail(urlNode.mark, "\(problem) \(ctx)") }
        return Config(url: url, headers: headers, events: events, minSeverity: minSeverity, options: options)
    }, make: { cf, c, logger in
        do {
            return try WebhookSink(url: cf.url, headers: cf.headers.map { ($0[0], $0[1]) }, events: cf.events,
                                   minSeverity: cf.minSeverity, options: cf.options, name: c.name, logger: logger, start: false)
        } catch {
            throw ConfigError(mark: c.node["url"]?.mark ?? c.mark, "sink '\(c.name)': \(error)")
        }
    })
}
