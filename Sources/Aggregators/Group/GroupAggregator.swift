import FerretCore
import Logging

/// `group`: one series per process group (Dynatrace's process-group view).
/// Each process's latest value of a selected metric is kept; every `every`
/// (aligned to multiples of it) the values of the group's live members are
/// combined into `<name>.sum`, `.avg`, `.min`, `.max` and `.count` (members
/// reporting), with the point attributes kept apart (`cpu.mode=user` and
/// `system` stay two series). The group is named by the `by` attributes
/// (default `ferret.group`), looked up on the point, then on its resource.
/// The output resource carries the `by` attributes plus those of
/// `keep_resource` (default `ferret.rule`, `host.name`) on which every member
/// agrees, never `process.pid`. A member stops contributing when its process
/// exits (the agent's `process.exit` event) or when it has not reported for
/// `stale` (default: three of its own reporting intervals, at least 2 s).
/// Points without the `by` attributes pass through untouched; grouped points
/// pass through too unless `keep_raw: false`.
public final class GroupAggregator: Aggregator, @unchecked Sendable {
    public enum Function: String, CaseIterable, Sendable { case sum, avg, min, max, count }

    public struct Options: Sendable, Equatable {
        public var by = ["ferret.group"]
        public var functions: [Function] = [.sum, .avg, .max]
        public var every: UInt64 = 10_000_000_000
        /// nil: three of the member's own reporting intervals (at least `minimumStale`).
        public var stale: UInt64?
        public var keepRaw = true
        public var keepResource = ["ferret.rule", "host.name"]
        public init() {}
    }

    static let minimumStale: UInt64 = 2_000_000_000

    private struct GroupKey: Hashable {
        var name: String
        var attributes: [Attribute]
        var by: [AttributeValue]
    }

    private struct Member {
        var value: Double
        var time: UInt64
        var seen: UInt64
        /// Nanoseconds between the member's points (smoothed); 0 until known.
        var interval: Double
        var resource: Resource
    }

    private final class Group {
        var kind: MetricKind
        var unit: String
        var members: [Int: Member] = [:]
        var resource: Resource?
        init(kind: MetricKind, unit: String) {
            self.kind = kind
            self.unit = unit
        }
    }

    let filter: MetricFilter
    let options: Options
    private let resources = ResourceTable()
    private var groups: [GroupKey: Group] = [:]
    /// The `by` values of each resource (nil: not grouped).
    private var byValues: [Int: [AttributeValue]?] = [:]
    private var windowEnd: UInt64 = 0

    public init(selector: MetricSelector, options: Options) {
        filter = MetricFilter(selector)
        self.options = options
    }

    public var groupCount: Int { groups.count }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out: [Signal] = []
        out.reserveCapacity(batch.count)
        if windowEnd == 0 { windowEnd = nextBoundary(after: now) }
        if now >= windowEnd { close(now: now, into: &out) }
        for s in batch {
            switch s {
            case .metric(let m) where m.kind != .histogram && filter.selects(m):
                let rid = resources.id(m.resource)
                guard let by = values(for: m, rid) else {
                    out.append(s)
                    continue
                }
                add(m, rid, by, now)
                if options.keepRaw { out.append(s) }
            case .event(let e) where e.isProcessExit:
                depart(resources.id(e.resource))
                out.append(s)
            default:
                out.append(s)
            }
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

    private func values(for m: MetricPoint, _ rid: Int) -> [AttributeValue]? {
        // Point attributes can name the group too, so only resource-only lookups are cached.
        if !m.attributes.isEmpty, options.by.contains(where: { k in m.attributes.contains { $0.key == k } }) {
            return lookup(m.attributes, m.resource)
        }
        if let known = byValues[rid] { return known }
        let v = lookup([], m.resource)
        byValues[rid] = .some(v)
        return v
    }

    private func lookup(_ attributes: [Attribute], _ resource: Resource) -> [AttributeValue]? {
        var out: [AttributeValue] = []
        for k in options.by {
            guard let v = attributes.first(where: { $0.key == k })?.value ?? resource[k] else { return nil }
            out.append(v)
        }
        return out
    }

    private func add(_ m: MetricPoint, _ rid: Int, _ by: [AttributeValue], _ now: UInt64) {
        let attrs = m.attributes.filter { a in !options.by.contains(a.key) }
        let key = GroupKey(name: m.name, attributes: attrs, by: by)
        let g: Group
        if let known = groups[key] { g = known } else {
            g = Group(kind: m.kind, unit: m.unit)
            groups[key] = g
        }
        g.kind = m.kind
        g.unit = m.unit
        var interval = 0.0
        if let prev = g.members[rid] {
            interval = prev.interval
            if m.timeUnixNano > prev.time {
                let dt = Double(m.timeUnixNano - prev.time)
                interval = interval == 0 ? dt : 0.7 * interval + 0.3 * dt
            }
        }
        g.members[rid] = Member(value: m.value, time: m.timeUnixNano, seen: now, interval: interval, resource: m.resource)
    }

    private func depart(_ rid: Int) {
        for g in groups.values { g.members[rid] = nil }
    }

    private func isStale(_ m: Member, _ now: UInt64) -> Bool {
        let limit = options.stale ?? max(Self.minimumStale, UInt64(3 * m.interval))
        return now > m.seen && now - m.seen > limit
    }

    private func nextBoundary(after now: UInt64) -> UInt64 {
        (now / options.every + 1) * options.every
    }

    private func close(now: UInt64, into out: inout [Signal]) {
        let end = windowEnd
        windowEnd = nextBoundary(after: now)
        var empty: [GroupKey] = []
        for (key, g) in groups {
            g.members = g.members.filter { !isStale($0.value, now) }
            guard !g.members.isEmpty else {
                empty.append(key)
                continue
            }
            let values = g.members.values.map(\.value).filter(\.isFinite)
            guard !values.isEmpty else { continue }
            let resource = groupResource(key, g)
            for f in options.functions {
                let v: Double
                var kind = MetricKind.gauge
                var unit = g.unit
                switch f {
                case .sum:
                    v = values.reduce(0, +)
                    kind = g.kind
                case .avg: v = values.reduce(0, +) / Double(values.count)
                case .min: v = values.min()!
                case .max: v = values.max()!
                case .count:
                    v = Double(values.count)
                    unit = "{process}"
                }
                out.append(.metric(MetricPoint(name: key.name + "." + f.rawValue, kind: kind, unit: unit, value: v,
                                               timeUnixNano: end, attributes: key.attributes, resource: resource)))
            }
        }
        for k in empty { groups[k] = nil }
        // Forget departed processes' resources.
        var used = Set<Int>()
        for g in groups.values { used.formUnion(g.members.keys) }
        if used.count < resources.count {
            resources.retain(only: used)
            byValues = byValues.filter { used.contains($0.key) }
        }
    }

    /// The `by` attributes plus the `keep_resource` ones every member agrees on;
    /// the same object while they stay the same.
    private func groupResource(_ key: GroupKey, _ g: Group) -> Resource {
        var attrs = zip(options.by, key.by).map { Attribute($0.0, $0.1) }
        let members = Array(g.members.values)
        for k in options.keepResource where !options.by.contains(k) {
            guard let v = members[0].resource[k], members.allSatisfy({ $0.resource[k] == v }) else { continue }
            attrs.append(Attribute(k, v))
        }
        if let r = g.resource, r.attributes == attrs { return r }
        let r = Resource(attrs)
        g.resource = r
        return r
    }
}

extension GroupAggregator {
    static let keys = MetricSelector.keys + ["by", "functions", "every", "stale", "keep_raw", "keep_resource"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var options: Options
    }

    public static let aggregatorType = AggregatorType(keys: keys, decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx)
        var o = Options()
        if let n = c.node["by"] {
            o.by = d.stringList(n, "'by'", context: ctx) ?? o.by
            if o.by.isEmpty || o.by.contains(where: \.isEmpty) { d.fail(n.mark, "'by' \(ctx) needs at least one attribute name") }
            if o.by.contains("process.pid") { d.fail(n.mark, "grouping by 'process.pid' \(ctx) gives one group per process; leave it out") }
        }
        o.functions = AggregatorDecoding.words(d, c, "functions", ctx, allowed: Function.allCases.map(\.rawValue),
                                               default: o.functions.map(\.rawValue)).compactMap(Function.init(rawValue:))
        if o.functions.isEmpty, let n = c.node["functions"] { d.fail(n.mark, "'functions' \(ctx) is empty; use some of sum, avg, min, max, count") }
        o.every = AggregatorDecoding.nanos(d, c, "every", ctx, default: .seconds(10), minimum: .milliseconds(100))
        if c.node["stale"] != nil {
            o.stale = AggregatorDecoding.nanos(d, c, "stale", ctx, default: .seconds(30), minimum: .milliseconds(100))
        }
        o.keepRaw = AggregatorDecoding.bool(d, c, "keep_raw", ctx, default: true)
        if let n = c.node["keep_resource"] {
            o.keepResource = d.stringList(n, "'keep_resource'", context: ctx) ?? o.keepResource
            if o.keepResource.contains("process.pid") { d.fail(n.mark, "'keep_resource' \(ctx) cannot keep 'process.pid': a group spans processes") }
        }
        return Config(selector: selector, options: o)
    }, make: { cf, _, _ in
        GroupAggregator(selector: cf.selector, options: cf.options)
    })
}
