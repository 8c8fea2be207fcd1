import FerretCore
import FerretDelivery
import Foundation
import Logging

/// Writes metrics (and optionally events and spans) to InfluxDB as line
/// protocol through the v1 `/write` API, which InfluxDB 1.x serves and 2.x
/// keeps for compatibility (database = bucket, `token` for 2.x auth).
///
/// Mapping: a metric point is a line whose measurement is the metric name,
/// whose tags are the chosen resource attributes and the point's attributes,
/// and whose field is `value` (gauges and counters) or `count`, `sum` and
/// cumulative `le_<bound>` buckets (histograms). An event is a line in the
/// measurement named after it, tagged with `severity`, with a `body` field and
/// its numeric attributes as fields. A span is a line in `spans` with
/// `duration_ns`, the ids and its attributes as fields.
public final class InfluxDBSink: DeliveringSink, @unchecked Sendable {
    public static let keys = ["url", "database", "retention_policy", "username", "password", "token",
                              "create_database", "resource_tags", "signals"] + DeliveryOptions.keys
    public static let defaultResourceTags = ["host.name", "service.name", "ferret.group", "ferret.rule",
                                             "process.pid", "process.executable.name"]

    public let delivery: Delivery
    public var deliveries: [Delivery] { [delivery] }
    private let resourceTags: Set<String>
    private let signals: Set<String>
    private var writer = LineProtocolWriter()
    private var tagCache: [ObjectIdentifier: (Resource, [(String, String)])] = [:]
    private let chunkBytes: Int

    public init(url: String, database: String, retentionPolicy: String? = nil, username: String? = nil, password: String? = nil,
                token: String? = nil, createDatabase: Bool = true, resourceTags: [String] = InfluxDBSink.defaultResourceTags,
                signals: Set<String> = ["metric", "event"], options: DeliveryOptions = DeliveryOptions(),
                name: String = "influxdb", logger: Logger, start: Bool = true) throws {
        self.resourceTags = Set(resourceTags)
        self.signals = signals
        self.chunkBytes = max(4096, options.batchBytes / 4)
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        var query = "db=\(Self.percentEncoded(database))&precision=ns"
        if let rp = retentionPolicy { query += "&rp=\(Self.percentEncoded(rp))" }
        var headers = [("Content-Type", "text/plain; charset=utf-8")]
        if let token { headers.append(("Authorization", "Token \(token)")) } else if let username {
            let cred = Data("\(username):\(password ?? "")".utf8).base64EncodedString()
            headers.append(("Authorization", "Basic \(cred)"))
        }
        let write = try HTTPPoster(url: "\(base)/write?\(query)", headers: headers, timeout: options.timeout)
        let create = try HTTPPoster(url: "\(base)/query?q=\(Self.percentEncoded("CREATE DATABASE \"\(database)\""))",
                                    headers: headers.filter { $0.0 != "Content-Type" }, timeout: options.timeout)
        let db = database
        delivery = Delivery(name: name, options: options, logger: logger, start: start) { _, body in
            let outcome = write.post(body)
            // A missing database is made when asked to (1.x); the batch then goes again.
            if createDatabase, case .reject(let why) = outcome, why.contains("database not found") {
                switch create.post([]) {
                case .delivered:
                    logger.info("sink '\(name)': created database '\(db)'")
                    return write.post(body)
                case .retry(let w), .reject(let w):
                    return .retry("database '\(db)' is missing and could not be created: \(w)")
                }
            }
            return outcome
        }
    }

    public func write(_ batch: [Signal]) throws {
        for s in batch {
            switch s {
            case .metric(let m) where signals.contains("metric"): encode(m)
            case .event(let e) where signals.contains("event"): encode(e)
            case .span(let sp) where signals.contains("span"): encode(sp)
            default: continue
            }
            if writer.bytes.count >= chunkBytes { hand() }
        }
        hand()
    }

    public func close() { delivery.close() }

    private func hand() {
        let (bytes, lines) = writer.take()
        if lines > 0 { delivery.enqueue(route: "write", bytes, points: lines) }
    }

    // MARK: - encoding

    private func tags(_ r: Resource) -> [(String, String)] {
        if let hit = tagCache[ObjectIdentifier(r)], hit.0 === r { return hit.1 }
        if tagCache.count > 16_384 { tagCache.removeAll(keepingCapacity: true) }
        let t = r.attributes.filter { resourceTags.contains($0.key) }.map { ($0.key, $0.value.text) }
        tagCache[ObjectIdentifier(r)] = (r, t)
        return t
    }

    private func encode(_ m: MetricPoint) {
        let t = tags(m.resource) + m.attributes.map { ($0.key, $0.value.text) }
        if let h = m.histogram {
            var fields: [(String, LineProtocolWriter.Field)] = [("count", .int(Int64(h.count))), ("sum", .float(h.sum))]
            var cumulative: UInt64 = 0
            for (i, c) in h.bucketCounts.enumerated() {
                cumulative += c
                fields.append((i < h.bounds.count ? "le_\(h.bounds[i])" : "le_inf", .int(Int64(cumulative))))
            }
            writer.line(measurement: m.name, tags: t, fields: fields, timeUnixNano: m.timeUnixNano)
        } else {
            writer.line(measurement: m.name, tags: t, fields: [("value", .float(m.value))], timeUnixNano: m.timeUnixNano)
        }
    }

    private func encode(_ e: Event) {
        var t = tags(e.resource) + [("severity", e.severity.rawValue)]
        var fields: [(String, LineProtocolWriter.Field)] = [("body", .string(e.body))]
        for a in e.attributes {
            switch a.value {
            case .int(let n): fields.append((a.key, .int(n)))
            case .double(let d): fields.append((a.key, .float(d)))
            case .bool(let b): fields.append((a.key, .bool(b)))
            case .string(let s): t.append((a.key, s))
            }
        }
        writer.line(measurement: e.name, tags: t, fields: fields, timeUnixNano: e.timeUnixNano)
    }

    private func encode(_ s: Span) {
        let t = tags(s.resource) + [("name", s.name), ("kind", s.kind.rawValue), ("status", s.status.rawValue)]
        var fields: [(String, LineProtocolWriter.Field)] = [
            ("duration_ns", .int(Int64(s.endUnixNano &- s.startUnixNano))),
            ("trace_id", .string(hexString(s.traceID))), ("span_id", .string(hexString(s.spanID))),
        ]
        if !s.parentSpanID.isEmpty { fields.append(("parent_span_id", .string(hexString(s.parentSpanID)))) }
        for a in s.attributes {
            switch a.value {
            case .int(let n): fields.append((a.key, .int(n)))
            case .double(let d): fields.append((a.key, .float(d)))
            case .bool(let b): fields.append((a.key, .bool(b)))
            case .string(let v): fields.append((a.key, .string(v)))
            }
        }
        writer.line(measurement: "spans", tags: t, fields: fields, timeUnixNano: s.startUnixNano)
    }

    static func percentEncoded(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

extension InfluxDBSink {
    public struct Config: Equatable, Sendable {
        var url: String
        var database: String
        var retentionPolicy: String?
        var username: String?
        var password: String?
        var token: String?
        var createDatabase: Bool
        var resourceTags: [String]
        var signals: Set<String>
        var options: DeliveryOptions
    }

    public static let sinkType = SinkType(keys: keys, decode: { c, d, ctx -> Config? in
        let n = c.node
        let url = n["url"].flatMap { d.string($0, "'url'", context: ctx) } ?? "http://127.0.0.1:8086"
        let database = n["database"].flatMap { d.string($0, "'database'", context: ctx) } ?? "ferret"
        let rp = n["retention_policy"].flatMap { d.string($0, "'retention_policy'", context: ctx) }
        let user = n["username"].flatMap { d.string($0, "'username'", context: ctx) }
        let password = n["password"].flatMap { d.string($0, "'password'", context: ctx) }
        let token = n["token"].flatMap { d.string($0, "'token'", context: ctx) }
        if token != nil, user != nil, let m = n["token"]?.mark { d.fail(m, "give either 'token' or 'username' \(ctx), not both") }
        let create = n["create_database"].flatMap { d.bool($0, "'create_database'", context: ctx) } ?? true
        let tags = n["resource_tags"].flatMap { d.stringList($0, "'resource_tags'", context: ctx) } ?? defaultResourceTags
        var kinds: Set<String> = ["metric", "event"]
        if let s = n["signals"], let list = d.stringList(s, "'signals'", context: ctx) {
            kinds = []
            for k in list {
                if ["metric", "event", "span"].contains(k) { kinds.insert(k) } else {
                    d.fail(s.mark, "signal kind '\(k)' cannot go to InfluxDB \(ctx); use metric, event or span")
                }
            }
        }
        let options = DeliveryOptions.decode(c, d, context: ctx)
        if let problem = HTTPPoster.problem(url: url) { d.fail(n["url"]?.mark ?? c.mark, "\(problem) \(ctx)") }
        return Config(url: url, database: database, retentionPolicy: rp, username: user, password: password, token: token,
                      createDatabase: create, resourceTags: tags, signals: kinds, options: options)
    }, make: { cf, c, logger in
        do {
            return try InfluxDBSink(url: cf.url, database: cf.database, retentionPolicy: cf.retentionPolicy, username: cf.username,
                                    password: cf.password, token: cf.token, createDatabase: cf.createDatabase,
                                    resourceTags: cf.resourceTags, signals: cf.signals, options: cf.options, name: c.name,
                                    logger: logger, start: false)
        } catch {
            throw ConfigError(mark: c.node["url"]?.mark ?? c.mark, "sink '\(c.name)': \(error)")
        }
    })
}
