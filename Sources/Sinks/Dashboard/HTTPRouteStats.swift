import FerretCore
import FerretHTTPServer
import Foundation

/// Request rate, errors and latency per HTTP server route (the dashboard's HTTP
/// page, issue #9), from the server spans the http_tracer emits.
///
/// Per route (group, span name: `METHOD route` or `METHOD path`), 10-second
/// buckets for the last `span` (1 hour): request and error counts, and the
/// latencies in log buckets growing by 15 % from 1 µs to 100 s (132 counters,
/// allocated only for a bucket that saw a request). A percentile is the
/// geometric middle of the log bucket it falls in: within ±7 % of the exact
/// figure. Routes are bounded (`maxRoutes`); the spans of routes past it count
/// under the route "(other)" of their group. Not thread-safe: the owner locks.
struct HTTPRouteStats {
    static let bucketMillis: Int64 = 10_000
    static let growth = 1.15
    static let smallestNanos = 1_000.0
    static let latencyBuckets = 132  // 1 µs × 1.15^132 ≈ 100 s

    struct Key: Hashable, Comparable {
        var group: String
        var route: String
        static func < (a: Key, b: Key) -> Bool { (a.group, a.route) < (b.group, b.route) }
    }

    struct Bucket {
        var start: Int64 = -1
        var count: UInt32 = 0
        var errors: UInt32 = 0
        var latency: [UInt32] = []
    }

    /// A range's figures for one route (latencies in seconds; nil without requests).
    struct Summary {
        var key: Key
        var requests: Int
        var errors: Int
        var seconds: Double
        var p50: Double?
        var p95: Double?
        var p99: Double?
        var rate: Double { seconds > 0 ? Double(requests) / seconds : 0 }
        var errorRate: Double { requests > 0 ? Double(errors) / Double(requests) : 0 }
    }

    let slots: Int
    let maxRoutes: Int
    private(set) var routes: [Key: [Bucket]] = [:]

    init(span: Duration = .seconds(3600), maxRoutes: Int = 500) {
        slots = max(1, Int(span.components.seconds * 1000 / Self.bucketMillis))
        self.maxRoutes = maxRoutes
    }

    static func latencyIndex(nanos: UInt64) -> Int {
        let n = max(Double(nanos), smallestNanos)
        return min(latencyBuckets - 1, Int(log(n / smallestNanos) / log(growth)))
    }

    /// The geometric middle of a latency bucket, in seconds.
    static func latencySeconds(index: Int) -> Double {
        smallestNanos * pow(growth, Double(index) + 0.5) / 1e9
    }

    mutating func add(group: String, route: String, endMillis: Int64, durationNanos: UInt64, error: Bool) {
        var key = Key(group: group, route: route)
        if routes[key] == nil && routes.count >= maxRoutes { key.route = "(other)" }
        let start = endMillis - endMillis % Self.bucketMillis
        let slot = Int((start / Self.bucketMillis) % Int64(slots))
        var buckets = routes.removeValue(forKey: key) ?? Array(repeating: Bucket(), count: slots)
        if buckets[slot].start != start {
            // An older span than the slot holds belongs to an expired bucket.
            if buckets[slot].start > start { routes[key] = buckets; return }
            buckets[slot] = Bucket(start: start)
        }
        buckets[slot].count += 1
        if error { buckets[slot].errors += 1 }
        if buckets[slot].latency.isEmpty { buckets[slot].latency = Array(repeating: 0, count: Self.latencyBuckets) }
        buckets[slot].latency[Self.latencyIndex(nanos: durationNanos)] += 1
        routes[key] = buckets
    }

    /// The buckets of a route that start in [from, to), oldest first.
    func buckets(_ key: Key, from: Int64, to: Int64) -> [Bucket] {
        (routes[key] ?? []).filter { $0.start >= 0 && $0.start + Self.bucketMillis > from && $0.start < to }.sorted { $0.start < $1.start }
    }

    static func percentiles(_ latency: [UInt32], _ qs: [Double]) -> [Double?] {
        let total = latency.reduce(0) { $0 + Int($1) }
        guard total > 0 else { return qs.map { _ in nil } }
        return qs.map { q in
            let rank = max(1, Int((q * Double(total)).rounded(.up)))
            var seen = 0
            for (i, c) in latency.enumerated() {
                seen += Int(c)
                if seen >= rank { return latencySeconds(index: i) }
            }
            return latencySeconds(index: latencyBuckets - 1)
        }
    }

    static func merged(_ bs: [Bucket]) -> [UInt32] {
        var sum = [UInt32](repeating: 0, count: latencyBuckets)
        for b in bs where !b.latency.isEmpty {
            for i in 0..<latencyBuckets { sum[i] &+= b.latency[i] }
        }
        return sum
    }

    /// Every route's figures over [from, to) (of a group, when given), busiest first.
    func summaries(group: String?, from: Int64, to: Int64) -> [Summary] {
        routes.keys.filter { group == nil || $0.group == group }.compactMap { key in
            let bs = buckets(key, from: from, to: to)
            guard !bs.isEmpty else { return nil }
            let p = Self.percentiles(Self.merged(bs), [0.5, 0.95, 0.99])
            return Summary(key: key, requests: bs.reduce(0) { $0 + Int($1.count) }, errors: bs.reduce(0) { $0 + Int($1.errors) },
                           seconds: Double(to - max(from, bs[0].start)) / 1000, p50: p[0], p95: p[1], p99: p[2])
        }.sorted { $0.requests != $1.requests ? $0.requests > $1.requests : $0.key < $1.key }
    }
}
