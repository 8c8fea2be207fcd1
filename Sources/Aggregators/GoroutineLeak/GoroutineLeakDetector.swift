import FerretCore
import Logging

/// `goroutine_leak`: watches `go.goroutine.count` of each process and raises
/// `go.goroutine.leak` (severity warn) when the count has grown for a whole
/// `window`, steadily. Over the samples of the last `window`, all of:
/// - the least-squares slope is at least `min_slope` goroutines/s;
/// - Kendall's tau is at least `min_trend` (most later samples are higher than
///   earlier ones: growth, not a level that wanders);
/// - the median of the window's last quarter exceeds the first quarter's by at
///   least `min_growth` goroutines, and each quarter's median is above the one
///   before by at least a sixth of it (new highs all through the window, not
///   one step up).
/// A count that moves up and down around a level fails the trend and quarter
/// tests however wide its swings; a single jump fails the quarter test.
/// While a leak is open, the series is re-examined over the last
/// `resolve_after` (default: `window`): once its slope falls below half of
/// `min_slope` or its quarter growth below half of `min_growth`,
/// `go.goroutine.leak.resolved` (severity info) follows. It also follows when
/// the process exits or stops reporting for `stale`. Everything passes through.
public final class GoroutineLeakDetector: Aggregator, @unchecked Sendable {
    public struct Options: Sendable, Equatable {
        public var window: UInt64 = 120_000_000_000
        public var minSlope = 0.1
        public var minGrowth = 10.0
        public var minTrend = 0.6
        public var resolveAfter: UInt64?
        public var stale: UInt64 = 60_000_000_000
        /// Fewer samples than this in a window decide nothing.
        public var minSamples = 8
        public init() {}
    }

    private final class Series: DetectorState {
        var times: [UInt64] = []
        var values: [Double] = []
        var resource: Resource
        var seen: UInt64
        var lastEvaluation: UInt64 = 0
        var leakSince: UInt64?
        var isFiring: Bool { leakSince != nil }
        var peak = 0.0
        init(resource: Resource, seen: UInt64) {
            self.resource = resource
            self.seen = seen
        }
    }

    let filter: MetricFilter
    let options: Options
    private var series = SeriesTable<SeriesKey, Series>()
    private var lastStaleCheck: UInt64 = 0

    public init(selector: MetricSelector = MetricSelector(names: ["go.goroutine.count"]), options: Options) {
        filter = MetricFilter(selector)
        self.options = options
    }

    /// Processes with an open leak.
    public var openLeaks: Int { series.values.filter { $0.leakSince != nil }.count }

    private var keep: UInt64 { max(options.window, options.resolveAfter ?? options.window) }

    public func process(_ batch: [Signal], nowUnixNano now: UInt64) -> [Signal] {
        var out = batch
        for s in batch {
            switch s {
            case .metric(let m) where m.value.isFinite && (filter.selects(m) || m.name == Self.groupMetric):
                let key = SeriesKey(name: m.name, attributes: m.attributes, resource: series.id(m.resource))
                let st: Series
                if let known = series[key] { st = known } else {
                    st = Series(resource: m.resource, seen: now)
                    series[key] = st
                }
                if let t = st.times.last, m.timeUnixNano <= t { continue }  // repeats and reordering
                st.times.append(m.timeUnixNano)
                st.values.append(m.value)
                st.seen = now
                st.resource = m.resource
                trim(st)
                if m.name == Self.groupMetric && !filter.selects(m) { continue }  // kept to name the groups that grew
                // At most one evaluation per second per series.
                if m.timeUnixNano >= st.lastEvaluation + 1_000_000_000 || m.timeUnixNano < st.lastEvaluation {
                    st.lastEvaluation = m.timeUnixNano
                    if let e = evaluate(key, st) { out.append(.event(e)) }
                }
            case .event(let e) where e.isProcessExit:
                for (key, st) in series.forgetFiring(process: e.resource) {
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
        let out: [Signal] = series.forgetStale(now: now, after: options.stale).map {
            .event(resolved($0.key, $0.state, at: now, reason: "no data"))
        }
        return out
    }

    private func trim(_ st: Series) {
        guard let last = st.times.last, last > keep else { return }
        let cutoff = last - keep
        // Keep one sample at or before the cutoff, so the kept span covers `keep`.
        var drop = 0
        while drop + 1 < st.times.count && st.times[drop + 1] <= cutoff { drop += 1 }
        if drop > 0 {
            st.times.removeFirst(drop)
            st.values.removeFirst(drop)
        }
    }

    /// The samples of the last `span`, as seconds since the first and values;
    /// nil unless the history covers the span (allowing 5% for collection
    /// jitter) and has enough samples.
    private func samples(_ st: Series, span: UInt64) -> (t: [Double], v: [Double])? {
        guard let last = st.times.last, let first = st.times.first, last - first >= span - span / 20 else { return nil }
        let start = last - min(last, span)
        var i = st.times.count - 1
        while i > 0 && st.times[i - 1] >= start { i -= 1 }
        guard st.times.count - i >= options.minSamples else { return nil }
        let t0 = st.times[i]
        return (st.times[i...].map { Double($0 - t0) / 1e9 }, Array(st.values[i...]))
    }

    private func evaluate(_ key: SeriesKey, _ st: Series) -> Event? {
        let now = st.times.last!
        let count = st.values.last!
        if st.leakSince != nil {
            st.peak = max(st.peak, count)
            guard let s = samples(st, span: options.resolveAfter ?? options.window) else { return nil }
            let tr = Trend(times: s.t[...], values: s.v[...])
            guard tr.slope < options.minSlope / 2 || tr.growth < options.minGrowth / 2 else { return nil }
            return resolved(key, st, at: now, reason: "stopped growing")
        }
        guard let s = samples(st, span: options.window) else { return nil }
        let tr = Trend(times: s.t[...], values: s.v[...])
        guard tr.slope >= options.minSlope, tr.tau >= options.minTrend, tr.growth >= options.minGrowth,
              tr.risesEveryQuarter(by: options.minGrowth / 6) else { return nil }
        st.leakSince = now
        st.peak = count
        let seconds = s.t.last!
        let from = s.v.first!
        // The rate now: the window may have started before the leak did, so its
        // own slope understates it; the last half's slope does not.
        let half = s.t.count / 2
        let rate = max(tr.slope, Trend.leastSquaresSlope(s.t[half...], s.v[half...]))
        var attrs = key.attributes
        attrs += [
            Attribute("go.goroutine.count", .int(Int64(count))),
            Attribute("go.goroutine.growth_rate", .double(rate)),
            Attribute("go.goroutine.growth", .double(count - from)),
            Attribute("leak.window_seconds", .double(seconds)),
            Attribute("leak.trend", .double(tr.tau)),
        ]
        var body = "goroutines of \(Self.describe(st.resource)) grew from \(formatFigure(from)) to \(formatFigure(count)) "
            + "in \(formatFigure(seconds)) s (now \(formatFigure(rate))/s, trend \(formatFigure(tr.tau))) and keep growing: a goroutine leak?"
        let since = now - min(now, options.window)
        let grew = grownGroups(resource: key.resource, since: since)
        if grew.isEmpty && censusTooSparse(resource: key.resource, since: since) {
            body += " (The goroutines collector's census ran less than twice in this window, so the groups that grew are not"
                + " named: set its census_interval to at most half the goroutine_leak window.)"
        }
        if !grew.isEmpty {
            let lines = grew.map(\.text)
            attrs.append(Attribute("go.goroutine.leak.groups", .string(lines.joined(separator: "\n"))))
            let top = grew[0]
            for name in ["go.goroutine.start", "go.goroutine.creator", "go.goroutine.creator.location", "go.goroutine.state"] {
                if let a = top.attributes.first(where: { $0.key == name }) { attrs.append(a) }
            }
            attrs += [Attribute("go.goroutine.group.count", .int(Int64(top.now))),
                      Attribute("go.goroutine.group.count.before", .int(Int64(top.before))),
                      Attribute("go.goroutine.group.growth_rate", .double(top.rate))]
            body += " Growing: " + lines.joined(separator: "; ")
        }
        return Event(name: "go.goroutine.leak", severity: .warn, body: body, timeUnixNano: now, attributes: attrs, resource: st.resource)
    }

    /// The census collector's group series (goroutines), by which the leak names the code.
    static let groupMetric = "go.goroutine.group.count"

    struct GrownGroup {
        var attributes: [Attribute]
        var before: Double, now: Double, rate: Double
        var text: String
    }

    /// The process's goroutine groups (from the census collector) that grew
    /// since `since`, most growth first (at most five): start function,
    /// creator and site, count then and now, rate.
    func grownGroups(resource: Int, since: UInt64) -> [GrownGroup] {
        var out: [GrownGroup] = []
        for (key, st) in series.states where key.name == Self.groupMetric && key.resource == resource {
            guard let now = st.values.last, let last = st.times.last,
                  let i = st.times.firstIndex(where: { $0 >= since }), st.times[i] < last else { continue }
            let before = st.values[i], seconds = Double(last - st.times[i]) / 1e9
            guard now > before, seconds > 0 else { continue }
            let attr = { (n: String) -> String in
                if case .string(let v)? = key.attributes.first(where: { $0.key == n })?.value { return v }
                return ""
            }
            guard attr("go.goroutine.start") != "other" else { continue }
            let rate = (now - before) / seconds
            let site = attr("go.goroutine.creator.location")
            let text = "\(attr("go.goroutine.start")) created by \(attr("go.goroutine.creator"))"
                + (site.isEmpty ? "" : " at \(site)") + " [\(attr("go.goroutine.state"))]: \(formatFigure(before)) -> \(formatFigure(now))"
                + " (\(formatFigure(rate))/s)"
            out.append(GrownGroup(attributes: key.attributes, before: before, now: now, rate: rate, text: text))
        }
        return Array(out.sorted { $0.now - $0.before > $1.now - $1.before }.prefix(5))
    }

    /// Whether the process has census group series but none with two points in
    /// the window: the census runs too seldom for the window to name groups.
    func censusTooSparse(resource: Int, since: UInt64) -> Bool {
        var seen = false
        for (key, st) in series.states where key.name == Self.groupMetric && key.resource == resource {
            seen = true
            if st.times.filter({ $0 >= since }).count >= 2 { return false }
        }
        return seen
    }

    private func resolved(_ key: SeriesKey, _ st: Series, at time: UInt64, reason: String) -> Event {
        let since = st.leakSince ?? time
        st.leakSince = nil
        let count = st.values.last ?? 0
        let duration = seconds(from: since, to: time)
        var attrs = key.attributes
        attrs += [
            Attribute("go.goroutine.count", .int(Int64(count))),
            Attribute("go.goroutine.peak", .int(Int64(st.peak))),
            Attribute("leak.duration_seconds", .double(duration)),
            Attribute("leak.reason", .string(reason)),
        ]
        let body = "goroutines of \(Self.describe(st.resource)): \(reason) after \(formatFigure(duration)) s of leak "
            + "(now \(formatFigure(count)), peak \(formatFigure(st.peak)))"
        return Event(name: "go.goroutine.leak.resolved", severity: .info, body: body, timeUnixNano: time,
                     attributes: attrs, resource: st.resource)
    }

    static func describe(_ r: Resource) -> String {
        var s = r.pid.map { "pid \($0)" } ?? "the process"
        var extra: [String] = []
        if case .string(let exe)? = r["process.executable.name"] { extra.append(exe) }
        if let g = r.group { extra.append("group \(g)") }
        if !extra.isEmpty { s += " (\(extra.joined(separator: ", ")))" }
        return s
    }
}

extension GoroutineLeakDetector {
    static let keys = MetricSelector.keys + ["window", "min_slope", "min_growth", "min_trend", "resolve_after", "stale"]

    public struct Config: Equatable, Sendable {
        var selector: MetricSelector
        var options: Options
    }

    public static let aggregatorType = AggregatorType(keys: keys, decode: { c, d, ctx -> Config? in
        let selector = MetricSelector.decode(c, d, ctx, defaultMetrics: ["go.goroutine.count"])
        var o = Options()
        o.window = AggregatorDecoding.nanos(d, c, "window", ctx, default: .seconds(120), minimum: .seconds(5))
        o.minSlope = AggregatorDecoding.number(d, c, "min_slope", ctx, default: o.minSlope, range: 0...1e9)
        o.minGrowth = AggregatorDecoding.number(d, c, "min_growth", ctx, default: o.minGrowth, range: 0...1e12)
        o.minTrend = AggregatorDecoding.number(d, c, "min_trend", ctx, default: o.minTrend, range: 0...1)
        if c.node["resolve_after"] != nil {
            o.resolveAfter = AggregatorDecoding.nanos(d, c, "resolve_after", ctx, default: .seconds(60), minimum: .seconds(5))
        }
        o.stale = AggregatorDecoding.nanos(d, c, "stale", ctx, default: .seconds(60), minimum: .seconds(1))
        return Config(selector: selector, options: o)
    }, make: { cf, _, _ in
        GoroutineLeakDetector(selector: cf.selector, options: cf.options)
    })
}
