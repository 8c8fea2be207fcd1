import FerretCore
import Logging

/// `rate`: turns counters into per-second rates. For each selected counter
/// series, every point after the first gives `<name>.rate` (a gauge, unit
/// `<unit>/s`) = increase / seconds between the two points' times. A value
/// lower than the previous one is a counter reset (the process restarted, the
/// collector re-attached, a wrap): the series starts again from that value and
/// that step gives no point, so a reset never shows as a negative (or made-up)
/// rate. A process that restarts has a new pid and so is a new series anyway.
/// Selected counters are consumed unless `keep_raw` is set; gauges and
/// histograms pass through untouched.
public final class RateAggregator: Aggregator, @unchecked Sendable {
    private struct State {
        var value: Double
        var time: UInt64
        var seen: UInt64
    }

    let filter: MetricFilter
    let keepRaw: Bool
    let suffix: String
    private var series = SeriesTable<SeriesKey, State>()
    private var units: [String: String] = [:]
    private var lastPurge: UInt64 = 0

    /// Series unseen for this long are forgotten.
    static let forgetAfter: UInt64 = 600_000_000_000

    public init(selector: MetricSelector, keepRaw: Bool = false, suffix: String = "rate") {
        filter = MetricFilter(selector)
        self.keepRaw = keepRaw
        self.suffix = suffix
    }

    public var seriesCount: Int { series.count }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out: [Signal] = []
        out.reserveCapacity(batch.count)
        for s in batch {
            guard case .metric(let m) = s, m.kind == .counter, filter.selects(m) else {
                // An exited process's counters will not report again.
                if case .event(let e) = s, e.isProcessExit { _ = series.forget(process: e.resource) }
                out.append(s)
                continue
            }
            if keepRaw { out.append(s) }
            guard m.value.isFinite else { continue }
            let key = SeriesKey(name: m.name, attributes: m.attributes, resource: series.id(m.resource))
            guard let prev = series[key] else {
                series[key] = State(value: m.value, time: m.timeUnixNano, seen: now)
                continue
            }
            guard m.timeUnixNano > prev.time else { continue }  // a repeat or out of order: nothing to learn
            series[key] = State(value: m.value, time: m.timeUnixNano, seen: now)
            guard m.value >= prev.value else { continue }        // a reset: new baseline, no point
            let rate = (m.value - prev.value) / seconds(from: prev.time, to: m.timeUnixNano)
            out.append(.metric(MetricPoint(name: m.name + "." + suffix, kind: .gauge, unit: rateUnit(m.unit), value: rate,
                                           timeUnixNano: m.timeUnixNano, attributes: m.attributes, resource: m.resource)))
        }
        return out
    }

    public func tick(nowUnixNano now: UInt64) -> [Signal] {
        if now - min(now, lastPurge) >= 60_000_000_000 {
            lastPurge = now
            _ = series.forget { _, st in now - min(now, st.seen) >= Self.forgetAfter }
        }
        return []
    }

    /// "s" → "s/s", "By" → "By/s", "{call}" → "{call}/s", "" or "1" → "1/s".
    private func rateUnit(_ unit: String) -> String {
        if let u = units[unit] { return u }
        let u = (unit.isEmpty ? "1" : unit) + "/s"
        units[unit] = u
        return u
    }
}

extension RateAggregator {
    static let keys = MetricSelector.keys + ["keep_raw", "suffix"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var keepRaw: Bool
        var suffix: String
    }

    public static let aggregatorType = AggregatorType(keys: keys, decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx)
        let keepRaw = AggregatorDecoding.bool(d, c, "keep_raw", ctx, default: false)
        var suffix = "rate"
        if let n = c.node["suffix"], let s = d.string(n, "'suffix'", context: ctx) {
            if s.isEmpty || s.hasPrefix(".") || s.contains(" ") {
                d.fail(n.mark, "'suffix' \(ctx) must be a word like 'rate' (the output is <name>.<suffix>)")
            } else {
                suffix = s
            }
        }
        return Config(selector: selector, keepRaw: keepRaw, suffix: suffix)
    }, make: { cf, _, _ in
        RateAggregator(selector: cf.selector, keepRaw: cf.keepRaw, suffix: cf.suffix)
    })
}
