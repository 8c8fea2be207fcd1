import FerretCore
/// Trend figures over a run of (time in seconds, value) samples, oldest first.
/// Used by the goroutine-leak detector; robust to noise by design: a least-squares
/// slope for the size of the growth, Kendall's tau for its monotonicity (it only
/// counts which of two samples is higher, so spikes weigh no more than any other
/// sample), and quarter medians for growth that outlasts noise.
struct Trend {
    /// Least-squares slope (value units per second); 0 for fewer than 2 samples
    /// or no time spread.
    var slope: Double
    /// Kendall's tau-a in [-1, 1]: +1 when every later sample is higher than every
    /// earlier one, about 0 for noise around a level. Ties count as neither.
    var tau: Double
    /// The median of each quarter of the samples (by index), oldest first.
    var quarterMedians: [Double]

    /// Median of the last quarter minus median of the first.
    var growth: Double { quarterMedians.count == 4 ? quarterMedians[3] - quarterMedians[0] : 0 }

    /// Each quarter's median at least `step` above the one before (and above it
    /// at all when `step` is 0).
    func risesEveryQuarter(by step: Double) -> Bool {
        quarterMedians.count == 4 && zip(quarterMedians, quarterMedians.dropFirst()).allSatisfy { $1 - $0 >= step && $1 > $0 }
    }

    /// Kendall's tau looks at this many samples at most (evenly spaced), so a long
    /// window at a short interval costs O(kendallLimit²), not O(n²).
    static let kendallLimit = 160

    init(times: ArraySlice<Double>, values: ArraySlice<Double>) {
        let n = times.count
        precondition(values.count == n)
        slope = Self.leastSquaresSlope(times, values)
        tau = Self.kendallTau(values)
        quarterMedians = []
        if n >= 4 {
            let base = values.startIndex
            for q in 0..<4 {
                let lo = base + q * n / 4, hi = base + (q + 1) * n / 4
                quarterMedians.append(Self.median(values[lo..<hi]))
            }
        }
    }

    static func leastSquaresSlope(_ t: ArraySlice<Double>, _ v: ArraySlice<Double>) -> Double {
        let n = Double(t.count)
        guard t.count >= 2 else { return 0 }
        let mt = t.reduce(0, +) / n, mv = v.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0
        for (x, y) in zip(t, v) {
            sxy += (x - mt) * (y - mv)
            sxx += (x - mt) * (x - mt)
        }
        return sxx > 0 ? sxy / sxx : 0
    }

    static func kendallTau(_ all: ArraySlice<Double>) -> Double {
        var v = Array(all)
        if v.count > kendallLimit {
            let step = Double(v.count - 1) / Double(kendallLimit - 1)
            v = (0..<kendallLimit).map { v[Int((Double($0) * step).rounded())] }
        }
        let n = v.count
        guard n >= 2 else { return 0 }
        var s = 0
        for i in 0..<(n - 1) {
            let a = v[i]
            for j in (i + 1)..<n {
                if v[j] > a { s += 1 } else if v[j] < a { s -= 1 }
            }
        }
        return Double(s) / Double(n * (n - 1) / 2)
    }

    static func median(_ xs: ArraySlice<Double>) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
