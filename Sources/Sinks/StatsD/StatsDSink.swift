import FerretCore
import Foundation
import Glibc

/// `statsd`: metric points as StatsD lines over UDP, in the DogStatsD dialect
/// (`name:value|type|#tag:value,…`), which the Datadog agent, Telegraf's
/// statsd input and Prometheus' statsd_exporter read.
///
/// - gauges go as gauges (`|g`);
/// - Ferret's counters are cumulative and StatsD counters are increments, so
///   each counter series sends the difference from its previous point (`|c`);
///   its first point only sets the baseline, and a counter that went down (a
///   restarted process) starts over;
/// - histograms send the increments of their count and sum as two counters,
///   `<name>.count` and `<name>.sum` (StatsD has no bucketed histogram);
/// - spans, profiles and events are not StatsD's business and are skipped.
///
/// Lines are joined into datagrams of at most `max_packet` bytes. UDP never
/// blocks on a missing receiver: a datagram the kernel refuses is counted as
/// a sink error.
public final class StatsDSink: Sink, @unchecked Sendable {
    public static let keys = ["address", "prefix", "tags", "max_packet"]
    public static let defaultTags = ["ferret.group", "process.executable.name", "process.pid"]

    private let fd: Int32
    private let destination: [UInt8]
    private let prefix: String
    private let tagKeys: [String]
    private let maxPacket: Int
    /// Counter baselines: the last cumulative value sent per series.
    private var last: [String: (value: Double, seen: UInt64)] = [:]
    private var packet: [UInt8] = []
    private var lastPrune: UInt64 = 0

    public init(address: String, prefix: String = "", tags: [String] = StatsDSink.defaultTags, maxPacket: Int = 1432) throws {
        let (host, port) = try Self.split(address)
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let ai = res else {
            throw SinkError("statsd: cannot resolve '\(address)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(res) }
        fd = socket(ai.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SinkError("statsd: socket: \(String(cString: strerror(errno)))") }
        destination = Array(UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
        self.prefix = prefix
        tagKeys = tags
        self.maxPacket = maxPacket
    }

    deinit { Glibc.close(fd) }

    public func close() { try? send() }

    /// "host:port" or "[v6]:port".
    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65535).contains(port) else {
            throw SinkError("statsd: address '\(address)' must be HOST:PORT or [IPv6]:PORT")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(":") || address.hasPrefix("[") else {
            throw SinkError("statsd: address '\(address)' must be HOST:PORT or [IPv6]:PORT")
        }
        return (host, port)
    }

    public func write(_ batch: [Signal]) throws {
        var failure: (any Error)?
        for s in batch {
            guard case .metric(let m) = s else { continue }
            let tags = tagText(m)
            let name = Self.clean(prefix + m.name)
            switch m.kind {
            case .gauge:
                guard m.value.isFinite else { continue }
                failure = add("\(name):\(Self.number(m.value))|g\(tags)") ?? failure
            case .counter:
                if let d = delta(name + tags, m.value, m.timeUnixNano) { failure = add("\(name):\(Self.number(d))|c\(tags)") ?? failure }
            case .histogram:
                guard let h = m.histogram else { continue }
                if let d = delta(name + ".count" + tags, Double(h.count), m.timeUnixNano) {
                    failure = add("\(name).count:\(Self.number(d))|c\(tags)") ?? failure
                }
                if let d = delta(name + ".sum" + tags, h.sum, m.timeUnixNano) {
                    failure = add("\(name).sum:\(Self.number(d))|c\(tags)") ?? failure
                }
            }
        }
        if let failure { throw failure }
    }

    public func flush() throws {
        try send()
        // Forget counter baselines of series silent for ten minutes (exited processes).
        let now = Clock.unixNanos()
        if now > lastPrune + 60_000_000_000 {
            lastPrune = now
            last = last.filter { now < $0.value.seen + 600_000_000_000 }
        }
    }

    /// The increment of a cumulative series since its previous point; nil for
    /// its first point (the baseline) and after a reset.
    private func delta(_ key: String, _ value: Double, _ time: UInt64) -> Double? {
        guard value.isFinite else { return nil }
        let previous = last[key]
        last[key] = (value, max(time, Clock.unixNanos()))
        guard let p = previous, value >= p.value else { return nil }
        return value - p.value
    }

    private func tagText(_ m: MetricPoint) -> String {
        var parts: [String] = []
        for k in tagKeys {
            if let v = m.resource[k] { parts.append("\(Self.clean(k)):\(Self.clean(v.text))") }
        }
        for a in m.attributes { parts.append("\(Self.clean(a.key)):\(Self.clean(a.value.text))") }
        return parts.isEmpty ? "" : "|#" + parts.joined(separator: ",")
    }

    /// Appends a line, sending the packet first when it would not fit.
    private func add(_ line: String) -> (any Error)? {
        let bytes = Array(line.utf8)
        var failure: (any Error)?
        if !packet.isEmpty && packet.count + 1 + bytes.count > maxPacket {
            do { try send() } catch { failure = error }
        }
        if !packet.isEmpty { packet.append(UInt8(ascii: "\n")) }
        packet.append(contentsOf: bytes)
        return failure
    }

    private func send() throws {
        guard !packet.isEmpty else { return }
        defer { packet.removeAll(keepingCapacity: true) }
        let n = packet.withUnsafeBytes { p in
            destination.withUnsafeBytes { d in
                sendto(fd, p.baseAddress, p.count, Int32(MSG_DONTWAIT), d.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                       socklen_t(d.count))
            }
        }
        if n < 0 { throw SinkError("statsd: sendto: \(String(cString: strerror(errno)))") }
    }

    /// StatsD's separators (`:`, `|`, `@`, `#`, `,`), spaces and newlines become `_`.
    static func clean(_ s: String) -> String {
        String(s.map { ":|@#,\n\r\t ".contains($0) ? "_" : $0 })
    }

    static func number(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }
}

extension StatsDSink {
    public struct Config: Equatable, Sendable {
        var address: String
        var prefix: String
        var tags: [String]
        var maxPacket: Int
    }

    public static let sinkType = SinkType(keys: keys, required: ["address"], decode: { c, d, ctx -> Config? in
        let n = c.node
        guard let a = n["address"], let address = d.string(a, "'address'", context: ctx) else { return nil }
        do { _ = try split(address) } catch { d.fail(a.mark, "\(error) \(ctx)") }
        let prefix = n["prefix"].flatMap { d.string($0, "'prefix'", context: ctx) } ?? ""
        let tags = n["tags"].flatMap { d.stringList($0, "'tags'", context: ctx) } ?? defaultTags
        let maxPacket = n["max_packet"].flatMap { d.int($0, "'max_packet'", context: ctx, range: 512...65_000) } ?? 1432
        return Config(address: address, prefix: prefix, tags: tags, maxPacket: maxPacket)
    }, make: { cf, c, _ in
        do {
            return try StatsDSink(address: cf.address, prefix: cf.prefix, tags: cf.tags, maxPacket: cf.maxPacket)
        } catch {
            throw ConfigError(mark: c.node["address"]?.mark ?? c.mark, "\(error) in sink '\(c.name)'")
        }
    })
}
