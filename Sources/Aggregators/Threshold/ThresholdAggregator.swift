import FerretCore
import Logging

/// `threshold`: static rules on any metric, per series. When a rule's
/// condition has held for its `for` duration (from the first point where it
/// held to the current point, by the points' times), an `alert` event fires
/// with `state: firing` (the rule's severity, default warn); the first point
/// where it no longer holds gives `alert` with `state: resolved` (info). A
/// firing series that stops reporting (`stale`) or whose process exits is
/// resolved too. Events carry `rule`, `state`, `value`, `threshold`, `metric`
/// and the point's attributes, with the point's resource. Everything passes through.
public final class ThresholdAggregator: Aggregator, @unchecked Sendable {
    private struct State: DetectorState {
        var pendingSince: UInt64?
        var firingSince: UInt64?
        var isFiring: Bool { firingSince != nil }
        var value = 0.0
        var seen: UInt64 = 0
        var resource: Resource
        var unit: String
    }

    private struct Key: ResourceScoped {
        var rule: Int
        var series: SeriesKey
        var resourceID: Int { series.resource }
    }

    let filter: MetricFilter
    let rules: [ThresholdRule]
    private let ruleFilters: [MetricFilter]
    let stale: UInt64
    private var states = SeriesTable<Key, State>()
    private var lastStaleCheck: UInt64 = 0

    public init(selector: MetricSelector = MetricSelector(), rules: [ThresholdRule], stale: UInt64 = 60_000_000_000) {
        filter = MetricFilter(selector)
        self.rules = rules
        ruleFilters = rules.map { MetricFilter($0.selector) }
        self.stale = stale
    }

    /// Alerts currently firing.
    public var firing: Int { states.values.filter { $0.firingSince != nil }.count }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out = batch
        for s in batch {
            switch s {
            case .metric(let m) where m.kind != .histogram && filter.selects(m):
                for (i, rf) in ruleFilters.enumerated() where rf.selects(m) {
                    let key = Key(rule: i, series: SeriesKey(name: m.name, attributes: m.attributes, resource: states.id(m.resource)))
                    if let e = evaluate(key, m, now) { out.append(.event(e)) }
                }
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
        let out: [Signal] = states.forgetStale(now: now, after: stale).map {
            .event(resolved($0.key, $0.state, at: now, reason: "no data"))
        }
        return out
    }

    private func evaluate(_ key: Key, _ m: MetricPoint, _ now: UInt64) -> Event? {
        let rule = rules[key.rule]
        var st = states[key] ?? State(resource: m.resource, unit: m.unit)
        defer { states[key] = st }
        st.value = m.value
        st.seen = now
        st.resource = m.resource
        st.unit = m.unit
        let holds = m.value.isFinite && rule.comparison.holds(m.value, rule.threshold)
        guard holds else {
            st.pendingSince = nil
            guard st.firingSince != nil else { return nil }
            let e = resolved(key, st, at: m.timeUnixNano, reason: "condition cleared")
            st.firingSince = nil
            return e
        }
        let since = st.pendingSince ?? m.timeUnixNano
        st.pendingSince = since
        guard st.firingSince == nil, m.timeUnixNano >= since + rule.holdFor else { return nil }
        st.firingSince = m.timeUnixNano
        let held = seconds(from: since, to: m.timeUnixNano)
        let body = "\(rule.name): \(m.name) is \(formatFigure(m.value))\(unitSuffix(m.unit)) (\(rule.comparison.rawValue) \(formatFigure(rule.threshold)))"
            + (rule.holdFor > 0 ? " for \(formatFigure(held)) s" : "") + " in \(GoroutineLeakDetector.describe(m.resource))"
        return Event(name: "alert", severity: rule.severity, body: body, timeUnixNano: m.timeUnixNano,
                     attributes: attributes(key, st, state: "firing"), resource: m.resource)
    }

    private func resolved(_ key: Key, _ st: State, at time: UInt64, reason: String) -> Event {
        let rule = rules[key.rule]
        let duration = seconds(from: st.firingSince ?? time, to: time)
        var attrs = attributes(key, st, state: "resolved")
        attrs.append(Attribute("alert.reason", .string(reason)))
        attrs.append(Attribute("alert.duration_seconds", .double(duration)))
        let body = "\(rule.name): resolved (\(reason)) after \(formatFigure(duration)) s; \(key.series.name) is "
            + "\(formatFigure(st.value))\(unitSuffix(st.unit)) in \(GoroutineLeakDetector.describe(st.resource))"
        return Event(name: "alert", severity: .info, body: body, timeUnixNano: time, attributes: attrs, resource: st.resource)
    }

    private func attributes(_ key: Key, _ st: State, state: String) -> [Attribute] {
        let rule = rules[key.rule]
        return key.series.attributes + [
            Attribute("rule", .string(rule.name)),
            Attribute("state", .string(state)),
            Attribute("value", .double(st.value)),
            Attribute("threshold", .double(rule.threshold)),
            Attribute("metric", .string(key.series.name)),
        ]
    }

    private func unitSuffix(_ unit: String) -> String {
        unit.isEmpty || unit == "1" || unit.hasPrefix("{") ? "" : " " + unit
    }
}

extension ThresholdAggregator {
    static let keys = MetricSelector.keys + ["rules", "stale"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var rules: [ThresholdRule]
        var stale: UInt64
    }

    public static let aggregatorType = AggregatorType(keys: keys, required: ["rules"], decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx)
        var rules: [ThresholdRule] = []
        if let n = c.node["rules"] {
            let items = d.sequence(n, "'rules'", context: ctx) ?? []
            if items.isEmpty { d.fail(n.mark, "'rules' \(ctx) is empty; write rules like 'go.gc.cpu.fraction > 0.25 for 30s'") }
            for (i, item) in items.enumerated() {
                if let r = ThresholdRule.decode(item, d, "in rule #\(i + 1) of \(ctx.hasPrefix("in ") ? String(ctx.dropFirst(3)) : ctx)") {
                    rules.append(r)
                }
            }
        }
        let stale = AggregatorDecoding.nanos(d, c, "stale", ctx, default: .seconds(60), minimum: .seconds(1))
        return Config(selector: selector, rules: rules, stale: stale)
    }, make: { cf, _, _ in
        ThresholdAggregator(selector: cf.selector, rules: cf.rules, stale: cf.stale)
    })
}
