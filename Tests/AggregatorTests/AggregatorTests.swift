@testable import FerretAggregators
@testable import FerretComponents
@testable import FerretCore
import Foundation
import XCTest

/// The aggregators on synthetic points, against exact computations. The
/// agent-level tests are in AgentAggregatorTests.swift.
final class AggregatorTests: XCTestCase {
    static let t0: UInt64 = 1_700_000_000_000_000_000
    static func at(_ seconds: Double) -> UInt64 { t0 + UInt64(seconds * 1e9) }

    static func process(_ pid: Int64, group: String = "web", rule: String = "go-services") -> Resource {
        Resource([Attribute("process.pid", .int(pid)), Attribute("process.executable.name", .string("srv\(pid)")),
                  Attribute("ferret.group", .string(group)), Attribute("ferret.rule", .string(rule)),
                  Attribute("host.name", .string("box"))])
    }

    static func point(_ name: String, _ value: Double, _ t: Double, _ r: Resource, kind: MetricKind = .gauge,
                      unit: String = "1", attributes: [Attribute] = []) -> Signal {
        .metric(MetricPoint(name: name, kind: kind, unit: unit, value: value, timeUnixNano: at(t), attributes: attributes, resource: r))
    }

    static func metrics(_ s: [Signal]) -> [MetricPoint] {
        s.compactMap { if case .metric(let m) = $0 { m } else { nil } }
    }

    static func events(_ s: [Signal]) -> [Event] {
        s.compactMap { if case .event(let e) = $0 { e } else { nil } }
    }

    static func attr(_ e: Event, _ key: String) -> AttributeValue? { e.attributes.first { $0.key == key }?.value }

    /// Feeds one point at a time with `now` = the point's time, as the dispatcher would.
    static func feed(_ a: any Aggregator, _ signals: [Signal]) -> [Signal] {
        var out: [Signal] = []
        for s in signals {
            let now: UInt64
            switch s {
            case .metric(let m): now = m.timeUnixNano
            case .event(let e): now = e.timeUnixNano
            default: now = t0
            }
            out += a.process([s], nowUnixNano: now)
            out += a.tick(nowUnixNano: now)
        }
        return out
    }

    /// A seeded generator (SplitMix64): the noise is the same on every run.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func gaussian() -> Double {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self), u2 = Double.random(in: 0..<1, using: &self)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }

    // MARK: - selector

    func testGlob() {
        XCTAssertTrue(Glob("go.*").matches("go.goroutine.count"))
        XCTAssertFalse(Glob("go.*").matches("golang.count"))
        XCTAssertTrue(Glob("*.duration").matches("http.server.request.duration"))
        XCTAssertFalse(Glob("*.duration").matches("http.server.request.duration.p99"))
        XCTAssertTrue(Glob("process.cpu.time").matches("process.cpu.time"))
        XCTAssertFalse(Glob("process.cpu.time").matches("process.cpu.times"))
        XCTAssertTrue(Glob("go.?c.*").matches("go.gc.count"))
        XCTAssertFalse(Glob("go.?c.*").matches("go.c.count"))
        XCTAssertTrue(Glob("a*b*c").matches("aXXbYYbc"))
        XCTAssertFalse(Glob("a*b*c").matches("aXXbYYb"))
        XCTAssertTrue(Glob("*").matches(""))
        XCTAssertTrue(Glob("go.memory.*.used").matches("go.memory.heap.used"))
    }

    func testSelectorByNameAndAttributesPassesTheRestThroughUntouched() {
        let selector = MetricSelector(names: ["go.*", "process.cpu.time"], where: [("ferret.group", ["web"]), ("cpu.mode", ["user", "sys*"])])
        let w = WindowAggregator(selector: selector, options: .init())
        let web = Self.process(1), db = Self.process(2, group: "db")
        let user = [Attribute("cpu.mode", .string("user"))], idle = [Attribute("cpu.mode", .string("idle"))]
        let input: [Signal] = [
            Self.point("go.sched.gomaxprocs", 4, 0, web, attributes: user),         // selected
            Self.point("go.sched.gomaxprocs", 4, 0, db, attributes: user),          // other group
            Self.point("go.sched.gomaxprocs", 4, 0, web, attributes: idle),         // other mode
            Self.point("process.cpu.time", 1, 0, web, kind: .counter, attributes: [Attribute("cpu.mode", .string("system"))]),  // selected (glob value)
            Self.point("process.memory.usage", 1, 0, web, attributes: user),        // other name
            Self.point("go.goroutine.count", 5, 0, web),                           // no cpu.mode at all
            .event(Event(name: "process.attach", severity: .info, body: "", timeUnixNano: Self.at(0), resource: web)),
        ]
        let out = w.process(input, nowUnixNano: Self.at(0))
        XCTAssertEqual(out.count, 5)
        let passed = Self.metrics(out)
        XCTAssertEqual(passed.map(\.name), ["go.sched.gomaxprocs", "go.sched.gomaxprocs", "process.memory.usage", "go.goroutine.count"])
        XCTAssertEqual(passed[0].resource.group, "db")
        XCTAssertEqual(passed[1].attributes, idle)
        XCTAssertEqual(Self.events(out).count, 1)
        XCTAssertEqual(w.seriesCount, 2, "the two selected points make two series")

        // Numbers match numerically; a resource attribute can be selected on.
        let byPid = MetricSelector(names: ["*"], where: [("process.pid", ["2"])])
        XCTAssertTrue(byPid.matches(MetricPoint(name: "x", kind: .gauge, timeUnixNano: 0, resource: db)))
        XCTAssertFalse(byPid.matches(MetricPoint(name: "x", kind: .gauge, timeUnixNano: 0, resource: web)))
        XCTAssertTrue(MetricSelector(where: [("ratio", ["0.5"])]).matches(
            MetricPoint(name: "x", kind: .gauge, timeUnixNano: 0, attributes: [Attribute("ratio", .double(0.5))], resource: web)))
    }

    // MARK: - window

    func testWindowStatisticsAndPercentilesAgainstExactComputation() {
        var o = WindowAggregator.Options()
        o.every = 10_000_000_000
        o.percentiles = [("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)]
        o.significantDigits = .three
        let w = WindowAggregator(selector: MetricSelector(names: ["latency", "temperature"]), options: o)
        var rng = Seeded(state: 42)
        let r = Self.process(1)
        var latency: [Double] = [], temperature: [Double] = []
        var input: [Signal] = []
        // 20,000 lognormal latencies (0.1 ms … 1 s) and 5,000 temperatures of
        // either sign, all in the window [t0 + 0 s, t0 + 10 s).
        for i in 0..<20_000 {
            let v = exp(-7 + 1.5 * rng.gaussian())
            latency.append(v)
            input.append(Self.point("latency", v, Double(i) * 0.0004, r, unit: "s"))
        }
        for i in 0..<5_000 {
            let v = 20 * rng.gaussian() + 3
            temperature.append(v)
            input.append(Self.point("temperature", v, Double(i) * 0.0015, r, unit: "Cel"))
        }
        input.append(Self.point("other", 1, 1, r))
        let passed = w.process(input, nowUnixNano: Self.at(5))
        XCTAssertEqual(Self.metrics(passed).map(\.name), ["other"], "selected points are consumed (keep_raw: false)")
        XCTAssertTrue(w.tick(nowUnixNano: Self.at(9.9)).isEmpty, "the window is still open")
        let out = Self.metrics(w.tick(nowUnixNano: Self.at(10.2)))
        XCTAssertEqual(out.count, 2 * 10)
        for (name, values) in [("latency", latency), ("temperature", temperature)] {
            let got = Dictionary(uniqueKeysWithValues: out.filter { $0.name.hasPrefix(name + ".") }.map { ($0.name.dropFirst(name.count + 1), $0) })
            XCTAssertEqual(got.count, 10)
            for p in got.values {
                XCTAssertEqual(p.timeUnixNano, Self.at(10), "stamped with the window's end")
                XCTAssertEqual(p.kind, .gauge)
                XCTAssertEqual(p.resource.pid, 1)
            }
            let sorted = values.sorted()
            XCTAssertEqual(got["min"]?.value, sorted.first)
            XCTAssertEqual(got["max"]?.value, sorted.last)
            XCTAssertEqual(got["count"]?.value, Double(values.count))
            XCTAssertEqual(got["last"]?.value, values.last)
            let sum = values.reduce(0, +)
            XCTAssertEqual(got["sum"]!.value, sum, accuracy: abs(sum) * 1e-12 + 1e-12)
            XCTAssertEqual(got["mean"]!.value, sum / Double(values.count), accuracy: abs(sum / Double(values.count)) * 1e-12 + 1e-12)
            XCTAssertEqual(got["count"]?.unit, "1")
            XCTAssertEqual(got["p99"]?.unit, name == "latency" ? "s" : "Cel")
            // Nearest rank: the value with rank ceil(p/100 * n).
            for (suffix, p) in o.percentiles {
                let exact = sorted[Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1]
                let v = got[Substring(suffix)]!.value
                // 3 significant digits: within 0.1% (2^-10), or one unit of the
                // scale (2^-20 of the first value) for values far below it.
                let tolerance = max(abs(exact) * 0.001, abs(values[0]) * 0x1p-19)
                XCTAssertEqual(v, exact, accuracy: tolerance, "\(name) \(suffix)")
            }
        }
        // The next window starts empty: no points, no output; keep_raw passes raw points on.
        XCTAssertTrue(w.tick(nowUnixNano: Self.at(20.5)).isEmpty)
        o.keepRaw = true
        let raw = WindowAggregator(selector: MetricSelector(names: ["latency"]), options: o)
        XCTAssertEqual(raw.process([Self.point("latency", 1, 0, r)], nowUnixNano: Self.at(0)).count, 1)
    }

    /// The default precision (2 significant digits): within 1%, at about 8 KiB a series.
    func testWindowDefaultPercentilesAreWithinOnePercent() {
        var o = WindowAggregator.Options()
        o.percentiles = [("p50", 50), ("p99", 99), ("p999", 99.9)]
        o.stats = []
        let w = WindowAggregator(selector: MetricSelector(), options: o)
        var rng = Seeded(state: 9)
        let values = (0..<50_000).map { _ in exp(3 + 2 * rng.gaussian()) }
        let r = Self.process(1)
        _ = w.process(values.enumerated().map { Self.point("x", $0.element, Double($0.offset) / 10_000, r) }, nowUnixNano: Self.at(1))
        let got = Self.metrics(w.tick(nowUnixNano: Self.at(10)))
        let sorted = values.sorted()
        XCTAssertEqual(got.map(\.name), ["x.p50", "x.p99", "x.p999"])
        for (p, point) in zip([50.0, 99, 99.9], got) {
            let exact = sorted[Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1]
            XCTAssertEqual(point.value, exact, accuracy: exact * 0.01, "p\(p)")
        }
        var h = ValueHistogram()
        for v in values { h.record(v) }
        XCTAssertLessThan(h.footprint, 24 * 1024, "values over 7 orders of magnitude")
    }

    func testWindowSeriesAreNameAttributesAndResource() {
        var o = WindowAggregator.Options()
        o.every = 1_000_000_000
        o.percentiles = []
        o.stats = [.count]
        let w = WindowAggregator(selector: MetricSelector(), options: o)
        let a = Self.process(1), b = Self.process(2)
        let same = Resource(a.attributes)  // another object, same process
        _ = w.process([
            Self.point("x", 1, 0.1, a), Self.point("x", 1, 0.2, same), Self.point("x", 1, 0.3, b),
            Self.point("x", 1, 0.4, a, attributes: [Attribute("k", .string("v"))]),
        ], nowUnixNano: Self.at(0.5))
        let out = Self.metrics(w.tick(nowUnixNano: Self.at(1)))
        XCTAssertEqual(out.map(\.value).sorted(), [1, 1, 2])
        XCTAssertEqual(w.seriesCount, 3)
        // Series without points are forgotten after three empty windows.
        for s in 2...4 { _ = w.tick(nowUnixNano: Self.at(Double(s))) }
        XCTAssertEqual(w.seriesCount, 0)
    }

    // MARK: - rate

    /// The rate aggregator forgets an exited process's series at its exit
    /// event (the shared series table), not only after ten idle minutes; a
    /// plugin's event merely named process.exit forgets nothing.
    func testRateForgetsAnExitedProcess() {
        let rate = RateAggregator(selector: MetricSelector())
        let a = Self.process(1), b = Self.process(2)
        _ = Self.feed(rate, [Self.point("c", 1, 0, a, kind: .counter), Self.point("c", 1, 0, b, kind: .counter)])
        XCTAssertEqual(rate.seriesCount, 2)
        _ = Self.feed(rate, [.event(Event(name: "process.exit", severity: .info, body: "", timeUnixNano: Self.at(1),
                                          resource: Resource(a.attributes)))])
        XCTAssertEqual(rate.seriesCount, 2, "no lifecycle: not the agent's exit event")
        _ = Self.feed(rate, [.event(Event(name: "process.exit", severity: .info, body: "", timeUnixNano: Self.at(1),
                                          resource: Resource(a.attributes), lifecycle: .exited))])
        XCTAssertEqual(rate.seriesCount, 1, "a's series is gone, b's stays")
        let out = Self.feed(rate, [Self.point("c", 3, 2, b, kind: .counter)])
        XCTAssertEqual(Self.metrics(out).filter { $0.name == "c.rate" }.map(\.value), [1], "b keeps its baseline")
    }

    func testRateOverACounterResetHasNoNegativeSpike() {
        let rate = RateAggregator(selector: MetricSelector(names: ["process.cpu.time", "requests"]))
        let r = Self.process(1)
        let values: [(Double, Double)] = [(0, 100), (1, 110), (2, 130), (3, 5), (4, 15), (6, 35)]
        var input = values.map { Self.point("requests", $0.1, $0.0, r, kind: .counter, unit: "{request}") }
        input.append(Self.point("requests", 50, 7, r))  // a gauge of the same name passes untouched
        let out = Self.feed(rate, input)
        let rates = Self.metrics(out).filter { $0.name == "requests.rate" }
        XCTAssertEqual(rates.map(\.value), [10, 20, 10, 10], "100→110→130, reset to 5 (no point), 5→15, 15→35 over 2 s")
        XCTAssertTrue(rates.allSatisfy { $0.value >= 0 && $0.kind == .gauge && $0.unit == "{request}/s" })
        XCTAssertEqual(rates.map(\.timeUnixNano), [1, 2, 4, 6].map { Self.at($0) })
        XCTAssertEqual(Self.metrics(out).filter { $0.name == "requests" }.map(\.value), [50], "counters consumed, the gauge passed")
        // Two processes are two series; a restarted process (new pid) starts a new one.
        let a = Self.process(1), b = Self.process(2)
        let r2 = RateAggregator(selector: MetricSelector(), keepRaw: true)
        let out2 = Self.feed(r2, [
            Self.point("c", 1000, 0, a, kind: .counter, unit: "s"), Self.point("c", 3, 0, b, kind: .counter, unit: "s"),
            Self.point("c", 1002, 1, a, kind: .counter, unit: "s"), Self.point("c", 4, 1, b, kind: .counter, unit: "s"),
        ])
        XCTAssertEqual(Self.metrics(out2).filter { $0.name == "c.rate" }.map(\.value), [2, 1])
        XCTAssertEqual(Self.metrics(out2).filter { $0.name == "c.rate" }.map(\.unit), ["s/s", "s/s"])
        XCTAssertEqual(Self.metrics(out2).filter { $0.name == "c" }.count, 4, "keep_raw")
    }

    // MARK: - group

    func testGroupSumAvgMaxAcrossProcessesAndADepartedProcess() {
        var o = GroupAggregator.Options()
        o.every = 10_000_000_000
        o.functions = [.sum, .avg, .max, .count]
        let g = GroupAggregator(selector: MetricSelector(names: ["go.goroutine.count"]), options: o)
        let p1 = Self.process(1), p2 = Self.process(2), p3 = Self.process(3), db = Self.process(9, group: "db")
        func second(_ t: Double, _ values: [(Resource, Double)]) -> [Signal] {
            values.map { Self.point("go.goroutine.count", $0.1, t, $0.0, unit: "{goroutine}") }
        }
        var input: [Signal] = []
        for t in stride(from: 0.5, to: 10, by: 1) { input += second(t, [(p1, 10), (p2, 20), (p3, 30), (db, 5)]) }
        var out = Self.feed(g, input)
        XCTAssertEqual(Self.metrics(out).filter { $0.name == "go.goroutine.count" }.count, input.count, "raw points pass (keep_raw)")
        out = g.tick(nowUnixNano: Self.at(10))
        func figures(_ out: [Signal], _ group: String) -> [String: Double] {
            Dictionary(uniqueKeysWithValues: Self.metrics(out).filter { $0.resource.group == group }.map { ($0.name, $0.value) })
        }
        XCTAssertEqual(figures(out, "web"), ["go.goroutine.count.sum": 60, "go.goroutine.count.avg": 20,
                                             "go.goroutine.count.max": 30, "go.goroutine.count.count": 3])
        XCTAssertEqual(figures(out, "db")["go.goroutine.count.sum"], 5)
        let web = Self.metrics(out).first { $0.resource.group == "web" }!
        XCTAssertNil(web.resource.pid, "a group is not a process")
        XCTAssertEqual(web.resource["ferret.rule"], .string("go-services"))
        XCTAssertEqual(web.resource["host.name"], .string("box"))
        XCTAssertNil(web.resource["process.executable.name"])
        XCTAssertEqual(web.timeUnixNano, Self.at(10))
        XCTAssertEqual(web.unit, "{goroutine}")

        // pid 3 exits (the agent's event); pid 2 just stops reporting: gone after
        // three of its 1 s intervals.
        input = [.event(Event(name: "process.exit", severity: .info, body: "", timeUnixNano: Self.at(10.1), resource: p3, lifecycle: .exited))]
        for t in stride(from: 10.5, to: 20, by: 1) { input += second(t, t < 13 ? [(p1, 10), (p2, 20)] : [(p1, 10)]) }
        _ = Self.feed(g, input)
        out = g.tick(nowUnixNano: Self.at(20))
        XCTAssertEqual(figures(out, "web"), ["go.goroutine.count.sum": 10, "go.goroutine.count.avg": 10,
                                             "go.goroutine.count.max": 10, "go.goroutine.count.count": 1])
        // The whole group gone: no output, no state.
        out = g.tick(nowUnixNano: Self.at(30))
        XCTAssertTrue(Self.metrics(out).isEmpty)
        XCTAssertEqual(g.groupCount, 0)
    }

    func testGroupKeepsPointAttributesApart() {
        var o = GroupAggregator.Options()
        o.every = 1_000_000_000
        o.functions = [.sum]
        o.keepRaw = false
        let g = GroupAggregator(selector: MetricSelector(names: ["process.cpu.time"]), options: o)
        let user = [Attribute("cpu.mode", .string("user"))], sys = [Attribute("cpu.mode", .string("system"))]
        let out = g.process([
            Self.point("process.cpu.time", 1.5, 0.1, Self.process(1), kind: .counter, unit: "s", attributes: user),
            Self.point("process.cpu.time", 2.5, 0.1, Self.process(2), kind: .counter, unit: "s", attributes: user),
            Self.point("process.cpu.time", 0.5, 0.1, Self.process(1), kind: .counter, unit: "s", attributes: sys),
            Self.point("process.cpu.time", 1, 0.1, Resource([Attribute("process.pid", .int(5))]), kind: .counter),  // no group: passes
        ], nowUnixNano: Self.at(0.2))
        XCTAssertEqual(Self.metrics(out).count, 1)
        let sums = Self.metrics(g.tick(nowUnixNano: Self.at(1)))
        XCTAssertEqual(Set(sums.map { "\($0.attributes[0].value.text)=\($0.value)" }), ["user=4.0", "system=0.5"])
        XCTAssertTrue(sums.allSatisfy { $0.kind == .counter }, "a sum of counters is a counter")
    }
}
