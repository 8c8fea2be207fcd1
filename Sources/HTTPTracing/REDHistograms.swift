import Foundation

/// Cumulative request-duration histograms (the RED metrics), one series per
/// process, span kind, method, status code and route.
///
/// Bounds are OpenTelemetry's advice for `http.server.request.duration` and
/// `http.client.request.duration` (seconds). Not thread-safe: the owner locks.
public struct REDHistograms: Sendable {
    public static let bounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

    public struct Key: Hashable, Sendable {
        public var pid: Int32
        public var kind: HTTPEvent.Kind
        public var method: String
        public var status: Int64
        /// The low-cardinality route, or "" when unknown (the attribute is then omitted).
        public var route: String

        public init(pid: Int32, kind: HTTPEvent.Kind, method: String, status: Int64, route: String) {
            self.pid = pid
            self.kind = kind
            self.method = method
            self.status = status
            self.route = route
        }
    }

    public struct Series: Sendable, Equatable {
        /// bounds.count + 1 buckets; the last is (10 s, +inf).
        public var counts = [UInt64](repeating: 0, count: REDHistograms.bounds.count + 1)
        public var sum: Double = 0
        public var count: UInt64 { counts.reduce(0, +) }
    }

    public private(set) var series: [Key: Series] = [:]

    public init() {}

    public mutating func record(_ key: Key, seconds: Double) {
        let i = Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count
        series[key, default: Series()].counts[i] += 1
        series[key, default: Series()].sum += seconds
    }

    /// Forgets a process's series (after its last flush).
    public mutating func remove(pid: Int32) {
        series = series.filter { $0.key.pid != pid }
    }

    /// The metric name for a kind.
    public static func name(_ kind: HTTPEvent.Kind) -> String {
        kind == .server ? "http.server.request.duration" : "http.client.request.duration"
    }
}
