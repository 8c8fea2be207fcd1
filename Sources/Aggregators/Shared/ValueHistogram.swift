import FerretCore
import Histogram

/// Percentiles of floating-point values through HdrHistogram, which counts
/// non-negative integers. Magnitudes are scaled by a power of two chosen from
/// the first non-zero value so that it lands in [2^20, 2^21): values from
/// about 1/500 of that first value (1/4000 at 2 significant digits) up to 2^41
/// times it keep HdrHistogram's relative precision (0.1% at 3 digits, 1% at
/// 2); smaller ones lose digits gracefully (they are integers of the scaled
/// unit). Negative values go to a second histogram of their magnitudes. NaN
/// and infinities are not recorded.
struct ValueHistogram {
    private var positive: Histogram<UInt32>
    private var negative: Histogram<UInt32>?
    private var scale: Double = 0
    private let digits: SignificantDigits
    private(set) var count: UInt64 = 0

    /// Largest scaled magnitude recorded (larger ones are clamped to it).
    private static let ceiling = Double(UInt64(1) << 62)

    init(significantDigits: SignificantDigits = .two) {
        digits = significantDigits
        positive = Self.histogram(significantDigits)
    }

    /// Sized for values up to 4× the first one (growing past that is slow the
    /// first time: HdrHistogram's resize is not specialized for us).
    private static func histogram(_ digits: SignificantDigits) -> Histogram<UInt32> {
        var h = Histogram<UInt32>(lowestDiscernibleValue: 1, highestTrackableValue: 1 << 22, numberOfSignificantValueDigits: digits)
        h.autoResize = true
        return h
    }

    /// Counts one value.
    @inline(__always)
    mutating func record(_ v: Double) {
        guard v.isFinite else { return }
        if scale == 0 {
            if v == 0 {
                positive.record(0)
                count += 1
                return
            }
            scale = Self.scale(for: v)
        }
        let m = min(abs(v) * scale, Self.ceiling)
        if v < 0 {
            if negative == nil { negative = Self.histogram(digits) }
            negative!.record(UInt64(m))
        } else {
            positive.record(UInt64(m))
        }
        count += 1
    }

    static func scale(for v: Double) -> Double {
        let e = max(-1000, min(1000, Int(abs(v).exponent)))
        return Double(sign: .plus, exponent: 20 - e, significand: 1)
    }

    /// Empties it for the next window, keeping the counts arrays; the scale is
    /// chosen again from the next window's first value.
    mutating func reset() {
        if count == 0 { return }
        positive.reset()
        negative?.reset()
        scale = 0
        count = 0
    }

    /// The nearest-rank percentiles (`ps` in 0...100, any order): the value with
    /// rank ceil(p/100 * count) in ascending order, as HdrHistogram reports it
    /// (the highest value equivalent to the recorded one), clamped to [lo, hi],
    /// the exact extremes the caller kept.
    func percentiles(_ ps: [Double], lo: Double, hi: Double) -> [Double] {
        guard count > 0 else { return ps.map { _ in .nan } }
        let negatives = negative?.totalCount ?? 0
        // Ranks wanted, ascending, with where each answer goes.
        let ranks = ps.enumerated().map { (i, p) in
            (rank: max(1, min(count, UInt64((p / 100 * Double(count)).rounded(.up)))), slot: i)
        }.sorted { $0.rank < $1.rank }
        var out = [Double](repeating: .nan, count: ps.count)
        // Negative values: ascending value is descending magnitude, so rank r
        // among all is rank (negatives - r + 1) among magnitudes.
        if let negative, negatives > 0 {
            let wanted = ranks.filter { $0.rank <= negatives }
            let byMagnitude = wanted.map { (rank: negatives - $0.rank + 1, slot: $0.slot) }.sorted { $0.rank < $1.rank }
            for (slot, value) in Self.lookup(negative, byMagnitude) { out[slot] = -value / scale }
        }
        let positives = ranks.filter { $0.rank > negatives }.map { (rank: $0.rank - negatives, slot: $0.slot) }
        for (slot, value) in Self.lookup(positive, positives) { out[slot] = value / scale }
        return out.map { Swift.max(lo, Swift.min(hi, $0)) }
    }

    /// One pass over the recorded values: the value at each rank (ranks ascending).
    private static func lookup(_ h: Histogram<UInt32>, _ ranks: [(rank: UInt64, slot: Int)]) -> [(Int, Double)] {
        var out: [(Int, Double)] = []
        out.reserveCapacity(ranks.count)
        var next = 0
        var seen: UInt64 = 0
        for v in h.recordedValues() where next < ranks.count {
            seen += UInt64(v.count)
            while next < ranks.count, ranks[next].rank <= seen {
                out.append((ranks[next].slot, Double(v.value)))
                next += 1
            }
        }
        return out
    }

    /// Bytes held by the counts arrays (for the docs' memory figures and tests).
    var footprint: Int { positive.estimatedFootprintInBytes + (negative?.estimatedFootprintInBytes ?? 0) }
}
