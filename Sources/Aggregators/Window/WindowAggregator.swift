import FerretCore
import Histogram
import Logging

/// `window`: statistics per series over fixed windows of `every`, aligned to
/// multiples of `every` since the epoch. At each window's end it emits, for
/// every series that had points, `<name>.min`, `.max`, `.mean`, `.sum`,
/// `.count`, `.last` and the chosen percentiles (`<name>.p50`, `.p90`, `.p99`,
/// `.p999`, ...) as gauges stamped with the window's end, with the series'
/// attributes and resource. Percentiles come from HdrHistogram
/// (`ValueHistogram`). Selected points are consumed unless `keep_raw` is set;
/// histogram-kind points always pass through.
public final class WindowAggregator: Aggregator, @unchecked Sendable {
    public struct Options: Sendable, Equatable {
        public var every: UInt64 = 10_000_000_000
        /// Percentiles in 0...100 with their name suffixes ("p99" for 99).
        public var percentiles: [(suffix: String, value: Double)] = [("p50", 50), ("p90", 90), ("p99", 99)]
        public var stats: [Stat] = Stat.allCases
        public var keepRaw = false
        /// 2: percentiles within 1%, about 8 KiB per series; 3: 0.1%, about 52 KiB.
        public var significantDigits: SignificantDigits = .two
        public init() {}

        public static func == (a: Options, b: Options) -> Bool {
            a.every == b.every && a.percentiles.map(\.suffix) == b.percentiles.map(\.suffix)
                && a.percentiles.map(\.value) == b.percentiles.map(\.value) && a.stats == b.stats
                && a.keepRaw == b.keepRaw && a.significantDigits == b.significantDigits
        }
    }

    public enum Stat: String, CaseIterable, Sendable { case min, max, mean, sum, count, last }

    /// One series' window so far. Kept in an array (`slots`) so that a point
    /// costs one dictionary lookup and one in-place update.
    private struct Slot {
        var min = Double.infinity, max = -Double.infinity, sum = 0.0, count = 0, last = 0.0
        var unit: String
        var resource: Resource
        var hist: ValueHistogram?
        var idleWindows = 0

        @inline(__always)
        mutating func add(_ v: Double, _ r: Resource) {
            if resource !== r { resource = r }
            guard v.isFinite else { return }
            if v < min { min = v }
            if v > max { max = v }
            sum += v
            count += 1
            last = v
            hist?.record(v)
        }

        mutating func reset() {
            min = .infinity
            max = -.infinity
            sum = 0
            count = 0
            idleWindows = 0
            hist?.reset()
        }
    }

    let filter: MetricFilter
    let options: Options
    private let resources = ResourceTable()
    private var index: [SeriesKey: Int] = [:]
    private var slots: [Slot] = []
    private var freeSlots: [Int] = []
    private var windowEnd: UInt64 = 0
    private let wantsPercentiles: Bool
    private let percentileValues: [Double]

    /// Series dropped after this many windows without a point.
    static let idleWindowsBeforeForgetting = 3

    public init(selector: MetricSelector, options: Options) {
        filter = MetricFilter(selector)
        self.options = options
        wantsPercentiles = !options.percentiles.isEmpty
        percentileValues = options.percentiles.map(\.value)
    }

    public var seriesCount: Int { index.count }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out: [Signal] = []
        out.reserveCapacity(options.keepRaw ? batch.count : 16)
        if windowEnd == 0 { windowEnd = nextBoundary(after: now) }
        if now >= windowEnd { close(now: now, into: &out) }
        for s in batch {
            guard case .metric(let m) = s, m.kind != .histogram, filter.selects(m) else {
                out.append(s)
                continue
            }
            add(m)
            if options.keepRaw { out.append(s) }
        }
        return out
    }

    public func tick(nowUnixNano now: UInt64) -> [Signal] {
        if windowEnd == 0 { windowEnd = nextBoundary(after: now) }
        guard now >= windowEnd else { return [] }
        var out: [Signal] = []
        close(now: now, into: &out)
        return out
    }

    @inline(__always)
    private func add(_ m: MetricPoint) {
        let key = SeriesKey(name: m.name, attributes: m.attributes, resource: resources.id(m.resource))
        if let i = index[key] {
            slots[i].add(m.value, m.resource)
            return
        }
        let slot = Slot(unit: m.unit, resource: m.resource,
                        hist: wantsPercentiles ? ValueHistogram(significantDigits: options.significantDigits) : nil)
        let i: Int
        if let free = freeSlots.popLast() {
            i = free
            slots[i] = slot
        } else {
            i = slots.count
            slots.append(slot)
        }
        index[key] = i
        slots[i].add(m.value, m.resource)
    }

    private func nextBoundary(after now: UInt64) -> UInt64 {
        (now / options.every + 1) * options.every
    }

    /// Emits the window that ended at `windowEnd` and starts the one holding `now`.
    private func close(now: UInt64, into out: inout [Signal]) {
        let end = windowEnd
        windowEnd = nextBoundary(after: now)
        var stale: [SeriesKey] = []
        var used = Set<Int>()
        for (key, i) in index {
            guard slots[i].count > 0 else {
                slots[i].idleWindows += 1
                if slots[i].idleWindows >= Self.idleWindowsBeforeForgetting { stale.append(key) } else { used.insert(key.resource) }
                continue
            }
            used.insert(key.resource)
            emit(key, slots[i], end, &out)
            slots[i].reset()
        }
        for k in stale {
            guard let i = index.removeValue(forKey: k) else { continue }
            slots[i].hist = nil
            freeSlots.append(i)
        }
        if !stale.isEmpty { resources.retain(only: used) }
    }

    private func emit(_ key: SeriesKey, _ s: Slot, _ end: UInt64, _ out: inout [Signal]) {
        func point(_ suffix: String, _ value: Double, unit: String) {
            out.append(.metric(MetricPoint(name: key.name + "." + suffix, kind: .gauge, unit: unit, value: value,
                                           timeUnixNano: end, attributes: key.attributes, resource: s.resource)))
        }
        for stat in options.stats {
            switch stat {
            case .min: point("min", s.min, unit: s.unit)
            case .max: point("max", s.max, unit: s.unit)
            case .mean: point("mean", s.sum / Double(s.count), unit: s.unit)
            case .sum: point("sum", s.sum, unit: s.unit)
            case .count: point("count", Double(s.count), unit: "1")
            case .last: point("last", s.last, unit: s.unit)
            }
        }
        if let h = s.hist {
            let values = h.percentiles(percentileValues, lo: s.min, hi: s.max)
            for (i, p) in options.percentiles.enumerated() { point(p.suffix, values[i], unit: s.unit) }
        }
    }
}

extension WindowAggregator {
    /// "p50" → 50, "p99" → 99, "p999" → 99.9, "p9999" → 99.99, "p100" → 100.
    static func percentile(_ name: String) -> Double? {
        guard name.hasPrefix("p") else { return nil }
        let digits = name.dropFirst()
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        if digits == "100" { return 100 }
        if digits.count <= 2 { return Double(digits) }
        guard digits.count <= 6 else { return nil }
        return Double(digits.prefix(2) + "." + digits.dropFirst(2))
    }

    static let keys = MetricSelector.keys + ["every", "percentiles", "stats", "keep_raw", "significant_digits"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var options: Options
    }

    public static let aggregatorType = AggregatorType(keys: keys, decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx)
        var o = Options()
        o.every = AggregatorDecoding.nanos(d, c, "every", ctx, default: .seconds(10), minimum: .milliseconds(100))
        if o.every > 3_600_000_000_000 {
            d.fail(c.node["every"]!.mark, "'every' \(ctx) must be at most 1h")
        }
        if let n = c.node["percentiles"] {
            o.percentiles = []
            for p in d.stringList(n, "'percentiles'", context: ctx) ?? [] {
                guard let v = percentile(p), v > 0, v <= 100 else {
                    d.fail(n.mark, "unknown percentile '\(p)' \(ctx); write p50, p90, p99, p999 (99.9), p9999 (99.99)")
                    continue
                }
                if !o.percentiles.contains(where: { $0.suffix == p }) { o.percentiles.append((p, v)) }
            }
        }
        o.stats = AggregatorDecoding.words(d, c, "stats", ctx, allowed: Stat.allCases.map(\.rawValue),
                                           default: Stat.allCases.map(\.rawValue)).compactMap(Stat.init(rawValue:))
        o.keepRaw = AggregatorDecoding.bool(d, c, "keep_raw", ctx, default: false)
        if let n = c.node["significant_digits"], let digits = d.int(n, "'significant_digits'", context: ctx, range: 1...5) {
            o.significantDigits = SignificantDigits(rawValue: Int8(digits)) ?? .two
        }
        return Config(selector: selector, options: o)
    }, make: { cf, _, _ in
        WindowAggregator(selector: cf.selector, options: cf.options)
    })
}
