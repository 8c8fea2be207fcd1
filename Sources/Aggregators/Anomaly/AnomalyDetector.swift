import FerretCore
import Foundation
import Logging

/// `anomaly`: an exponentially weighted mean and variance per gauge series
/// (weight `alpha`); after `warm_up` points, a point whose z-score
/// |value - mean| / stddev reaches `z` raises an `anomaly` event (state
/// firing, severity warn). The stddev used is at least `min_change` times
/// |mean|, so a flat series that moves by a hair is not an anomaly. The event
/// resolves (state resolved, info) at the first point back under `z / 2`, or
/// when the series goes stale or its process exits; a series fires at most
/// once per `cooldown`. A point's pull on the mean and variance is capped at
/// `z` stddevs, so one spike neither drags the baseline nor blinds the
/// detector for long, while a lasting level shift becomes the new normal.
/// Counters (monotonic by nature) and histograms pass through unexamined:
/// put `rate` first to watch a counter's rate. Everything passes through.
public final class AnomalyDetector: Aggregator, @unchecked Sendable {
    public struct Options: Sendable, Equatable {
        public var alpha = 0.02
        public var z = 5.0
        public var warmUp = 60
        public var minChange = 0.05
        public var cooldown: UInt64 = 60_000_000_000
        public var stale: UInt64 = 60_000_000_000
        public init() {}
    }

    private struct State: DetectorState {
        var n = 0
        var mean = 0.0
        var variance = 0.0
        var firingSince: UInt64?
        var isFiring: Bool { firingSince != nil }
        var lastFired: UInt64?
        var value = 0.0
        var z = 0.0
        var seen: UInt64 = 0
        var resource: Resource
        var unit: String
    }

    let filter: MetricFilter
    let options: Options
    private var states = SeriesTable<SeriesKey, State>()
    private var lastStaleCheck: UInt64 = 0

    public init(selector: MetricSelector = MetricSelector(), options: Options) {
        filter = MetricFilter(selector)
        self.options = options
    }

    public var firing: Int { states.values.filter { $0.firingSince != nil }.count }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out = batch
        for s in batch {
            switch s {
            case .metric(let m) where m.kind == .gauge && m.value.isFinite && filter.selects(m):
                let key = SeriesKey(name: m.name, attributes: m.attributes, resource: states.id(m.resource))
                var st = states[key] ?? State(resource: m.resource, unit: m.unit)
                if let e = observe(key, &st, m, now) { out.append(.event(e)) }
                states[key] = st
            case .event(let e) where e.isProcessExit:
                for (key, st) in states.forgetFiring(process: e.resource) {
                    out.append(.event(resolved(key, st, at: e.timeUnixNano, reason: "process exited")))
                }
            default:
                break
            }
        }
        return out
    }

    public func tick(nowUnixNano now: UInt64) -> [Signal] {
        guard now >= lastStaleCheck + 1_000_000_000 else { return [] }
        lastStaleCheck = now
        let out: [Signal] = states.forgetStale(now: now, after: options.stale).map {
            .event(resolved($0.key, $0.state, at: now, reason: "no data"))
        }
        return out
    }

    private func observe(_ key: SeriesKey, _ st: inout State, _ m: MetricPoint, _ now: UInt64) -> Event? {
        let x = m.value
        st.seen = now
        st.resource = m.resource
        st.unit = m.unit
        st.value = x
        guard st.n >= options.warmUp else {
            // Warm-up: the plain running mean and variance (weight 1/n) until 1/n
            // drops to alpha, so the baseline starts unbiased.
            st.n += 1
            let a = max(options.alpha, 1 / Double(st.n))
            let d = x - st.mean
            st.mean += a * d
            st.variance = st.n == 1 ? 0 : (1 - a) * (st.variance + a * d * d)
            return nil
        }
        let sigma = max(st.variance.squareRoot(), options.minChange * abs(st.mean))
        let d = x - st.mean
        let z = sigma > 0 ? d / sigma : (d == 0 ? 0 : (d > 0 ? .infinity : -.infinity))
        st.z = z
        var event: Event?
        if st.firingSince == nil {
            let cooled = st.lastFired.map { m.timeUnixNano >= $0 + options.cooldown || m.timeUnixNano < $0 } ?? true
            if abs(z) >= options.z && cooled {
                st.firingSince = m.timeUnixNano
                st.lastFired = m.timeUnixNano
                event = fired(key, st, expected: st.mean, sigma: sigma, at: m.timeUnixNano)
            }
        } else if abs(z) < options.z / 2 {
            event = resolved(key, st, at: m.timeUnixNano, reason: "back to normal")
            st.firingSince = nil
        }
        // A capped pull on the baseline (see the type's comment).
        let cap = options.z * sigma
        let dc = sigma > 0 ? min(max(d, -cap), cap) : d
        st.n += 1
        st.mean += options.alpha * dc
        st.variance = (1 - options.alpha) * (st.variance + options.alpha * dc * dc)
        return event
    }

    private func fired(_ key: SeriesKey, _ st: State, expected: Double, sigma: Double, at time: UInt64) -> Event {
        let body = "\(key.name) is \(formatFigure(st.value))\(unitSuffix(st.unit)), \(formatFigure(abs(st.z))) stddev "
            + "\(st.z > 0 ? "above" : "below") its usual \(formatFigure(expected)) ± \(formatFigure(sigma)) in \(GoroutineLeakDetector.describe(st.resource))"
        var attrs = attributes(key, st, state: "firing")
        attrs.append(Attribute("expected", .double(expected)))
        attrs.append(Attribute("stddev", .double(sigma)))
        return Event(name: "anomaly", severity: .warn, body: body, timeUnixNano: time, attributes: attrs, resource: st.resource)
    }

    private func resolved(_ key: SeriesKey, _ st: State, at time: UInt64, reason: String) -> Event {
        let duration = seconds(from: st.firingSince ?? time, to: time)
        var attrs = attributes(key, st, state: "resolved")
        attrs.append(Attribute("anomaly.reason", .string(reason)))
        attrs.append(Attribute("anomaly.duration_seconds", .double(duration)))
        let body = "\(key.name): \(reason) after \(formatFigure(duration)) s (\(formatFigure(st.value))\(unitSuffix(st.unit))) in \(GoroutineLeakDetector.describe(st.resource))"
        return Event(name: "anomaly", severity: .info, body: body, timeUnixNano: time, attributes: attrs, resource: st.resource)
    }

    private func attributes(_ key: SeriesKey, _ st: State, state: String) -> [Attribute] {
        key.attributes + [
            Attribute("state", .string(state)),
            Attribute("metric", .string(key.name)),
            Attribute("value", .double(st.value)),
            Attribute("z", .double(st.z.isFinite ? st.z : (st.z > 0 ? 1e308 : -1e308))),
        ]
    }

    private func unitSuffix(_ unit: String) -> String {
        unit.isEmpty || unit == "1" || unit.hasPrefix("{") ? "" : " " + unit
    }
}

extension AnomalyDetector {
    static let keys = MetricSelector.keys + ["alpha", "z", "warm_up", "min_change", "cooldown", "stale"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var options: Options
    }

    public static let aggregatorType = AggregatorType(keys: keys, decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx)
        var o = Options()
        o.alpha = AggregatorDecoding.number(d, c, "alpha", ctx, default: o.alpha, range: 0.0001...1)
        o.z = AggregatorDecoding.number(d, c, "z", ctx, default: o.z, range: 0.5...1000)
        if let n = c.node["warm_up"] { o.warmUp = d.int(n, "'warm_up'", context: ctx, range: 2...1_000_000) ?? o.warmUp }
        o.minChange = AggregatorDecoding.number(d, c, "min_change", ctx, default: o.minChange, range: 0...1000)
        o.cooldown = AggregatorDecoding.nanos(d, c, "cooldown", ctx, default: .seconds(60), minimum: .zero)
        o.stale = AggregatorDecoding.nanos(d, c, "stale", ctx, default: .seconds(60), minimum: .seconds(1))
        return Config(selector: selector, options: o)
    }, make: { cf, _, _ in
        AnomalyDetector(selector: cf.selector, options: cf.options)
    })
}
