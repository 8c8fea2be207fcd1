import FerretCore
import FerretHTTPServer
import Synchronization

/// The recent history of metric series, in memory, for the dashboard's charts
/// (issue #9).
///
/// Per series:
/// - **raw points** for `rawSpan` (1 hour by default) at whatever interval they
///   arrive: a ring of (time, value), 12 bytes a point (a 32-bit millisecond
///   offset from the series' base time and a Double);
/// - **one-minute buckets** (min, max, sum, count, last) for `longSpan` (24 hours)
///   for longer ranges, 32 bytes a bucket.
///
/// Memory is bounded by `maxBytes`: the store accounts each series at its full
/// size (raw ring at the interval it has seen, plus the bucket ring), and refuses
/// a new series that would not fit (counted in `refusedSeries`), so the series it
/// holds keep their history. Series of exited processes are dropped with
/// `forget(pid:)`.
///
/// Queries return at most `maxPoints` points: the raw points when they are fewer,
/// else the range cut into `maxPoints` equal buckets (min, max, mean, last each).
public final class MetricHistory: Sendable {
    public struct Options: Sendable, Equatable {
        public var rawSpan: Duration = .seconds(3600)
        public var bucket: Duration = .seconds(60)
        public var longSpan: Duration = .seconds(86_400)
        public var maxBytes: Int = 256 << 20
        /// The shortest interval a ring is sized for (raw points closer than this
        /// are kept, but the ring does not grow past rawSpan / minInterval).
        public var minInterval: Duration = .milliseconds(100)
        public init() {}
    }

    /// A series: a metric name, the process (or none), its group, its attributes.
    public struct Key: Hashable, Sendable, Comparable {
        public var name: String
        public var pid: Int64?
        public var group: String?
        /// Sorted "k=v" pairs joined by ",".
        public var attributes: String

        public init(name: String, pid: Int64?, group: String?, attributes: String) {
            self.name = name
            self.pid = pid
            self.group = group
            self.attributes = attributes
        }

        public static func < (a: Key, b: Key) -> Bool {
            (a.name, a.pid ?? -1, a.group ?? "", a.attributes) < (b.name, b.pid ?? -1, b.group ?? "", b.attributes)
        }
    }

    /// A point of a query: one raw point (min = max = mean = last), or a bucket.
    public struct Point: Sendable, Equatable {
        /// Start of the bucket (or the point's time), Unix milliseconds.
        public var time: Int64
        public var min: Double
        public var max: Double
        public var mean: Double
        public var last: Double
        public var count: Int
    }

    public struct SeriesInfo: Sendable {
        public var key: Key
        public var unit: String
        public var kind: String
        public var last: Double
        public var lastTime: Int64
        public var points: Int
    }

    /// 32 bytes: the extremes and the last value as Float32 (charts), the sum as
    /// a Double (exact means).
    fileprivate struct Bucket {
        var start: Int64
        var sum: Double
        var minF: Float
        var maxF: Float
        var lastF: Float
        var count: Int32
        var min: Double { Double(minF) }
        var max: Double { Double(maxF) }
        var last: Double { Double(lastF) }
    }

    fileprivate struct Series {
        var unit: String
        var kind: String
        var base: Int64
        var times: [UInt32]
        var values: [Double]
        /// Ring: the oldest point's index when full; count of points otherwise.
        var head = 0
        var count = 0
        var buckets: [Bucket] = []
        var bucketHead = 0
        var lastTime: Int64 = .min
        var last: Double = .nan

        var capacity: Int { times.count }
    }

    public let options: Options
    private let state = Mutex(State())

    private struct State {
        var series: [Key: Series] = [:]
        var bytes = 0
        var refused = 0
    }

    public init(options: Options = .init()) { self.options = options }

    private var rawMillis: Int64 { options.rawSpan.milliseconds }
    private var bucketMillis: Int64 { max(options.bucket.milliseconds, 1) }
    private var bucketCapacity: Int { Int(max(options.longSpan.milliseconds / bucketMillis, 1)) }
    private var maxRaw: Int { Int(max(rawMillis / max(options.minInterval.milliseconds, 1), 2)) }
    static let pointBytes = 12
    static let bucketBytes = MemoryLayout<Bucket>.stride
    static let seriesOverhead = 160

    private func bytes(rawCapacity: Int) -> Int {
        Self.seriesOverhead + rawCapacity * Self.pointBytes + bucketCapacity * Self.bucketBytes
    }

    /// Bytes the store holds for its series (as accounted against `maxBytes`).
    public var bytes: Int { state.withLock { $0.bytes } }
    public var seriesCount: Int { state.withLock { $0.series.count } }
    /// New series refused because the store was full.
    public var refusedSeries: Int { state.withLock { $0.refused } }

    /// Adds a point at `time` (Unix milliseconds). Points older than the series'
    /// newest are ignored (one source per series delivers in order).
    public func add(_ key: Key, time: Int64, value: Double, unit: String = "", kind: String = "gauge") {
        guard value.isFinite else { return }
        state.withLock { s in
            if s.series[key] == nil {
                // Start small (16 points); rings grow to the interval they see.
                let initial = 16
                let need = bytes(rawCapacity: initial)
                guard s.bytes + need <= options.maxBytes else {
                    s.refused += 1
                    return
                }
                s.bytes += need
                s.series[key] = Series(unit: unit, kind: kind, base: time,
                                       times: [UInt32](repeating: 0, count: initial),
                                       values: [Double](repeating: 0, count: initial))
            }
            var added = 0
            s.series[key]!.append(time: time, value: value, rawMillis: rawMillis, maxRaw: maxRaw,
                                  bucketMillis: bucketMillis, bucketCapacity: bucketCapacity,
                                  budget: options.maxBytes - s.bytes, grew: &added)
            s.bytes += added
        }
    }

    /// Drops every series of `pid`.
    public func forget(pid: Int64) {
        state.withLock { s in
            for k in s.series.keys where k.pid == pid {
                s.bytes -= bytes(rawCapacity: s.series[k]!.capacity)
                s.series[k] = nil
            }
        }
    }

    /// The series whose key satisfies `filter`, sorted by key.
    public func series(where filter: (Key) -> Bool = { _ in true }) -> [SeriesInfo] {
        state.withLock { s in
            s.series.filter { filter($0.key) }.map { k, v in
                SeriesInfo(key: k, unit: v.unit, kind: v.kind, last: v.last, lastTime: v.lastTime, points: v.count)
            }
        }.sorted { $0.key < $1.key }
    }

    /// The points of `key` in [from, to] (Unix milliseconds), at most `maxPoints`.
    /// Ranges within the raw span come from the raw points; longer ones from the
    /// one-minute buckets.
    public func query(_ key: Key, from: Int64, to: Int64, maxPoints: Int = 600) -> [Point] {
        let maxPoints = max(maxPoints, 1)
        return state.withLock { s -> [Point] in
            guard let series = s.series[key], to >= from else { return [] }
            let rawStart = series.lastTime - rawMillis
            var points: [Point] = []
            if from >= rawStart || series.buckets.isEmpty {
                series.forEachRaw { t, v in
                    if t >= from && t <= to { points.append(Point(time: t, min: v, max: v, mean: v, last: v, count: 1)) }
                }
            } else {
                series.forEachBucket { b in
                    if b.start + bucketMillis > from && b.start <= to {
                        points.append(Point(time: b.start, min: b.min, max: b.max, mean: b.sum / Double(b.count), last: b.last,
                                            count: Int(b.count)))
                    }
                }
            }
            return Self.downsample(points, from: from, to: to, maxPoints: maxPoints)
        }
    }

    /// Cuts [from, to] into `maxPoints` equal buckets when there are more points.
    static func downsample(_ points: [Point], from: Int64, to: Int64, maxPoints: Int) -> [Point] {
        guard points.count > maxPoints else { return points }
        let width = max((to - from + Int64(maxPoints)) / Int64(maxPoints), 1)
        var out: [Point] = []
        out.reserveCapacity(maxPoints)
        var cur: Point?
        var sum = 0.0
        for p in points {
            let start = from + (p.time - from) / width * width
            if var c = cur, c.time == start {
                c.min = Swift.min(c.min, p.min)
                c.max = Swift.max(c.max, p.max)
                c.last = p.last
                c.count += p.count
                sum += p.mean * Double(p.count)
                c.mean = sum / Double(c.count)
                cur = c
            } else {
                if let c = cur { out.append(c) }
                cur = Point(time: start, min: p.min, max: p.max, mean: p.mean, last: p.last, count: p.count)
                sum = p.mean * Double(p.count)
            }
        }
        if let c = cur { out.append(c) }
        return out
    }
}

extension MetricHistory.Series {
    /// Appends a point; grows the raw ring (doubling, up to what rawSpan needs at
    /// the interval seen, within `budget` bytes) and reports the bytes added.
    fileprivate mutating func append(time: Int64, value: Double, rawMillis: Int64, maxRaw: Int,
                                     bucketMillis: Int64, bucketCapacity: Int, budget: Int, grew: inout Int) {
        guard time >= lastTime else { return }
        if time - base >= Int64(UInt32.max) / 2 { rebase(to: time - rawMillis) }
        // Full ring whose oldest point is still inside the raw span: grow.
        if count == capacity, capacity < maxRaw, let oldest = oldestTime, time - oldest < rawMillis {
            let newCapacity = Swift.min(capacity * 2, maxRaw)
            let extra = (newCapacity - capacity) * MetricHistory.pointBytes
            if extra <= budget {
                var t = [UInt32](), v = [Double]()
                t.reserveCapacity(newCapacity)
                v.reserveCapacity(newCapacity)
                forEachRawOffset { ot, ov in t.append(ot); v.append(ov) }
                t += [UInt32](repeating: 0, count: newCapacity - t.count)
                v += [Double](repeating: 0, count: newCapacity - v.count)
                times = t
                values = v
                head = 0
                grew += extra
            }
        }
        let offset = UInt32(clamping: time - base)
        if count < capacity {
            let i = (head + count) % capacity
            times[i] = offset
            values[i] = value
            count += 1
        } else {
            times[head] = offset
            values[head] = value
            head = (head + 1) % capacity
        }
        lastTime = time
        last = value
        // One-minute buckets.
        let start = time / bucketMillis * bucketMillis
        let newest = buckets.isEmpty ? nil : (buckets.count < bucketCapacity ? buckets.count - 1 : (bucketHead + bucketCapacity - 1) % bucketCapacity)
        if let n = newest, buckets[n].start == start {
            buckets[n].minF = Swift.min(buckets[n].minF, Float(value))
            buckets[n].maxF = Swift.max(buckets[n].maxF, Float(value))
            buckets[n].sum += value
            buckets[n].count += 1
            buckets[n].lastF = Float(value)
        } else {
            let b = MetricHistory.Bucket(start: start, sum: value, minF: Float(value), maxF: Float(value), lastF: Float(value), count: 1)
            if buckets.count < bucketCapacity {
                if buckets.isEmpty { buckets.reserveCapacity(bucketCapacity) }  // what the store accounts
                buckets.append(b)
            } else {
                buckets[bucketHead] = b
                bucketHead = (bucketHead + 1) % bucketCapacity
            }
        }
    }

    var oldestTime: Int64? { count == 0 ? nil : base + Int64(times[count < capacity ? 0 : head]) }

    private mutating func rebase(to newBase: Int64) {
        let shift = newBase - base
        guard shift > 0 else { return }
        for i in 0..<capacity { times[i] = UInt32(clamping: Int64(times[i]) - shift) }
        base = newBase
    }

    private func forEachRawOffset(_ body: (UInt32, Double) -> Void) {
        let start = count < capacity ? 0 : head
        for j in 0..<count {
            let i = (start + j) % capacity
            body(times[i], values[i])
        }
    }

    func forEachRaw(_ body: (Int64, Double) -> Void) {
        forEachRawOffset { t, v in body(base + Int64(t), v) }
    }

    func forEachBucket(_ body: (MetricHistory.Bucket) -> Void) {
        let start = bucketHead  // 0 until the ring is full, then the oldest
        for j in 0..<buckets.count { body(buckets[(start + j) % buckets.count]) }
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 {
        let (s, a) = components
        return s * 1000 + a / 1_000_000_000_000_000
    }
}
