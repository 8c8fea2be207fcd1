@testable import FerretAggregators
@testable import FerretCore
import Foundation
import XCTest

/// The detectors (threshold, anomaly, goroutine leak) on synthetic points.
extension AggregatorTests {
    // MARK: - threshold

    func testThresholdFiresAfterItsDurationAndResolves() throws {
        let rule = try ThresholdRule.parse("go.gc.cpu.fraction > 0.25 for 30s").get()
        XCTAssertEqual(rule.text, "go.gc.cpu.fraction > 0.25 for 30s")
        var named = rule
        named.name = rule.text
        let a = ThresholdAggregator(rules: [named])
        let r = Self.process(1)
        // A 20 s excursion does not fire.
        var input = (0..<20).map { Self.point("go.gc.cpu.fraction", 0.3, Double($0), r) }
        input.append(Self.point("go.gc.cpu.fraction", 0.1, 20, r))
        XCTAssertTrue(Self.events(Self.feed(a, input)).isEmpty)
        // 40 s above: fires once, 30 s after the first point above; then resolves.
        input = (21...61).map { Self.point("go.gc.cpu.fraction", 0.3 + Double($0 % 3) / 100, Double($0), r) }
        input.append(Self.point("go.gc.cpu.fraction", 0.2, 62, r))
        input.append(Self.point("go.gc.cpu.fraction", 0.21, 63, r))
        let out = Self.feed(a, input)
        XCTAssertEqual(out.count, input.count + 2, "every point passes through, plus two events")
        let ev = Self.events(out)
        XCTAssertEqual(ev.map(\.name), ["alert", "alert"])
        XCTAssertEqual(ev.map { Self.attr($0, "state") }, [.string("firing"), .string("resolved")])
        XCTAssertEqual(ev[0].timeUnixNano, Self.at(51))
        XCTAssertEqual(ev[0].severity, .warn)
        XCTAssertEqual(Self.attr(ev[0], "rule"), .string("go.gc.cpu.fraction > 0.25 for 30s"))
        XCTAssertEqual(Self.attr(ev[0], "value"), .double(0.3))
        XCTAssertEqual(Self.attr(ev[0], "threshold"), .double(0.25))
        XCTAssertEqual(ev[0].resource.pid, 1)
        XCTAssertEqual(ev[1].timeUnixNano, Self.at(62))
        XCTAssertEqual(Self.attr(ev[1], "value"), .double(0.2))
        XCTAssertEqual(ev[1].severity, .info)
        XCTAssertEqual(a.firing, 0)
    }

    func testThresholdPerSeriesAndStaleResolve() throws {
        let a = ThresholdAggregator(rules: [try ThresholdRule.parse("q{ferret.group=web} >= 10").get()], stale: 5_000_000_000)
        let web = Self.process(1), web2 = Self.process(2), db = Self.process(3, group: "db")
        let out = Self.feed(a, [Self.point("q", 10, 0, web), Self.point("q", 9, 0, web2), Self.point("q", 50, 0, db)])
        let ev = Self.events(out)
        XCTAssertEqual(ev.count, 1)
        XCTAssertEqual(ev.first?.resource.pid, 1)
        XCTAssertEqual(a.firing, 1)
        let later = Self.events(a.tick(nowUnixNano: Self.at(6)))
        XCTAssertEqual(later.map { Self.attr($0, "state") }, [.string("resolved")])
        XCTAssertEqual(later.first.flatMap { Self.attr($0, "alert.reason") }, .string("no data"))
    }

    func testThresholdRuleSyntax() throws {
        let r = try ThresholdRule.parse("http.server.request.duration.p99{ferret.group=\"web\",http.route=/api|/v2}<=0.5").get()
        XCTAssertEqual(r.comparison, .lessOrEqual)
        XCTAssertEqual(r.threshold, 0.5)
        XCTAssertEqual(r.holdFor, 0)
        XCTAssertEqual(r.selector.conditions.map(\.key), ["ferret.group", "http.route"])
        XCTAssertEqual(r.selector.conditions[1].patterns.map(\.description), ["/api", "/v2"])
        for bad in ["> 3", "x", "x >", "x > y", "x > 1 for", "x > 1 for ever", "x => 1", "x{a} > 1", "x > 1 during 3s"] {
            if case .success = ThresholdRule.parse(bad) { XCTFail("'\(bad)' parsed") }
        }
    }

    // MARK: - anomaly

    func testAnomalyFiresOnASpikeAfterWarmUpThenResolves() {
        var o = AnomalyDetector.Options()
        o.warmUp = 30
        let a = AnomalyDetector(options: o)
        var rng = Seeded(state: 7)
        let r = Self.process(1)
        var t = 0.0
        func next(_ v: Double) -> Signal {
            t += 1
            return Self.point("go.gc.pause", v, t, r, unit: "s")
        }
        // A spike during warm-up decides nothing.
        var input = (0..<10).map { _ in next(100 + 5 * rng.gaussian()) }
        input.append(next(400))
        input += (0..<400).map { _ in next(100 + 5 * rng.gaussian()) }
        XCTAssertTrue(Self.events(Self.feed(a, input)).isEmpty)
        // After it: a spike fires once (two high points, one event), and the next normal point resolves.
        let spike = Self.feed(a, [next(180), next(175), next(100)])
        let ev = Self.events(spike)
        XCTAssertEqual(ev.map { Self.attr($0, "state") }, [.string("firing"), .string("resolved")])
        XCTAssertEqual(ev[0].name, "anomaly")
        XCTAssertEqual(ev[0].severity, .warn)
        if case .double(let z)? = Self.attr(ev[0], "z") { XCTAssertGreaterThan(z, 5) } else { XCTFail("no z") }
        if case .double(let e)? = Self.attr(ev[0], "expected") { XCTAssertEqual(e, 100, accuracy: 5) } else { XCTFail("no expected") }
        // Cooldown: another spike within a minute of the first does not fire.
        XCTAssertTrue(Self.events(Self.feed(a, [next(100), next(190), next(100)])).isEmpty)
        t += 60
        XCTAssertEqual(Self.events(Self.feed(a, [next(190)])).count, 1, "after the cooldown it fires again")
    }

    func testAnomalyDoesNotFireOnNoiseOrAFlatSeries() {
        let a = AnomalyDetector(options: .init())
        var rng = Seeded(state: 11)
        let r = Self.process(1)
        // 10,000 points of gaussian noise (stddev 20% of the level, above the
        // min_change floor), 5,000 of uniform noise, and a flat count that moves
        // by one now and then.
        var input: [Signal] = (0..<10_000).map { Self.point("latency", 100 + 20 * rng.gaussian(), Double($0), r) }
        input += (0..<5_000).map { Self.point("queue", Double.random(in: 0...50, using: &rng), Double($0), r) }
        input += (0..<5_000).map { Self.point("threads", $0 % 97 == 0 ? 13 : 12, Double($0), r) }
        let ev = Self.events(Self.feed(a, input))
        XCTAssertTrue(ev.isEmpty, "\(ev.map(\.body))")
        // Counters are not examined.
        let c = (0..<100).map { Self.point("total", Double($0 * $0), Double($0), r, kind: .counter) }
        XCTAssertTrue(Self.events(Self.feed(a, c)).isEmpty)
    }

    // MARK: - goroutine leak

    func leakDetector(window: Double = 30) -> GoroutineLeakDetector {
        var o = GoroutineLeakDetector.Options()
        o.window = UInt64(window * 1e9)
        return GoroutineLeakDetector(options: o)
    }

    func testLeakDetectorFiresOnARampAndResolvesWhenItStops() {
        let d = leakDetector()
        var rng = Seeded(state: 3)
        let r = Self.process(1)
        // Steady for 60 s, then +2/s with noise (requests come and go) for 60 s, then flat.
        var input: [Signal] = []
        for s in 0..<240 {
            let t = Double(s)
            let base = t < 60 ? 40 : t < 120 ? 40 + 2 * (t - 60) : 160
            input.append(Self.point("go.goroutine.count", (base + 4 * rng.gaussian()).rounded(), t, r, unit: "{goroutine}"))
        }
        let out = Self.feed(d, input)
        XCTAssertEqual(out.count, input.count + 2)
        let ev = Self.events(out)
        XCTAssertEqual(ev.map(\.name), ["go.goroutine.leak", "go.goroutine.leak.resolved"])
        guard ev.count == 2 else { return }
        let fired = Double(ev[0].timeUnixNano - Self.t0) / 1e9
        XCTAssertGreaterThan(fired, 60 + 10, "not before the growth lasted a good part of the window")
        XCTAssertLessThanOrEqual(fired, 60 + 35, "within the window (30 s) and a few samples")
        XCTAssertEqual(ev[0].severity, .warn)
        XCTAssertEqual(ev[0].resource.pid, 1)
        if case .double(let slope)? = Self.attr(ev[0], "go.goroutine.growth_rate") { XCTAssertEqual(slope, 2, accuracy: 0.5) } else { XCTFail("no growth rate") }
        if case .int(let n)? = Self.attr(ev[0], "go.goroutine.count") { XCTAssertGreaterThan(n, 60) } else { XCTFail("no count") }
        let resolvedAt = Double(ev[1].timeUnixNano - Self.t0) / 1e9
        print("leak ramp from 60 s to 120 s: raised at \(fired) s, resolved at \(resolvedAt) s: \(ev[0].body) / \(ev[1].body)")
        XCTAssertGreaterThan(resolvedAt, 120)
        XCTAssertLessThanOrEqual(resolvedAt, 120 + 30)
        XCTAssertEqual(ev[1].severity, .info)
        XCTAssertEqual(d.openLeaks, 0)
    }

    func testLeakDetectorIgnoresACountThatMovesUpAndDown() {
        let d = leakDetector()
        var rng = Seeded(state: 5)
        let a = Self.process(1), b = Self.process(2), c = Self.process(3), e = Self.process(4)
        var input: [Signal] = []
        for s in 0..<3600 {
            let t = Double(s)
            // Heavy noise around a level; a slow wave (a daily-like load cycle, 20 min
            // period) with bursts; a single jump that stays; a sawtooth (a pool that fills and drains every 25 s).
            input.append(Self.point("go.goroutine.count", (200 + 40 * rng.gaussian()).rounded(), t, a))
            let wave = 300 + 100 * sin(2 * .pi * t / 1200) + (s % 37 == 0 ? 150 : 0) + 10 * rng.gaussian()
            input.append(Self.point("go.goroutine.count", wave.rounded(), t, b))
            input.append(Self.point("go.goroutine.count", (t < 1800 ? 50 : 250) + (3 * rng.gaussian()).rounded(), t, c))
            input.append(Self.point("go.goroutine.count", 20 + Double(s % 25) * 4, t, e))
        }
        let ev = Self.events(Self.feed(d, input))
        XCTAssertTrue(ev.isEmpty, ev.map(\.body).joined(separator: "\n"))
    }

    /// The leak names the census groups that grew (start function, creator, site,
    /// state, before -> now, rate), not the ones that stayed; with a census too
    /// seldom for the window it says why no group is named.
    func testLeakNamesTheGroupsThatGrewOrSaysWhyNot() {
        let d = leakDetector(window: 10)
        let dense = Self.process(1), sparse = Self.process(2)
        func group(_ start: String, _ state: String) -> [Attribute] {
            [Attribute("go.goroutine.start", .string(start)), Attribute("go.goroutine.creator", .string("main.spawn")),
             Attribute("go.goroutine.creator.location", .string("/src/main.go:7")), Attribute("go.goroutine.state", .string(state))]
        }
        var input: [Signal] = []
        for s in 0..<20 {
            let t = Double(s)
            for r in [dense, sparse] { input.append(Self.point("go.goroutine.count", 10 + 5 * t, t, r)) }
            // Process 1: a census every second; process 2: one census in all.
            input.append(Self.point("go.goroutine.group.count", 5 * t, t, dense, attributes: group("main.leaky", "chan receive")))
            input.append(Self.point("go.goroutine.group.count", 10, t, dense, attributes: group("main.steady", "select")))
            if s == 0 { input.append(Self.point("go.goroutine.group.count", 0, t, sparse, attributes: group("main.leaky", "chan receive"))) }
        }
        let ev = Self.events(Self.feed(d, input)).filter { $0.name == "go.goroutine.leak" }
        let named = ev.first { $0.resource.pid == 1 }, unnamed = ev.first { $0.resource.pid == 2 }
        guard let named, let unnamed else { return XCTFail("a leak for each process: \(ev.map(\.body))") }
        guard case .string(let groups)? = Self.attr(named, "go.goroutine.leak.groups") else { return XCTFail("no groups: \(named.body)") }
        XCTAssertTrue(groups.hasPrefix("main.leaky created by main.spawn at /src/main.go:7 [chan receive]: "), groups)
        XCTAssertFalse(groups.contains("main.steady"), groups)
        XCTAssertEqual(Self.attr(named, "go.goroutine.start"), .string("main.leaky"))
        XCTAssertTrue(named.body.contains("Growing: main.leaky"), named.body)
        XCTAssertNil(Self.attr(unnamed, "go.goroutine.leak.groups"))
        XCTAssertTrue(unnamed.body.contains("census ran less than twice in this window"), unnamed.body)
        XCTAssertFalse(named.body.contains("census ran less than twice"), named.body)
    }

    func testLeakDetectorResolvesWhenTheProcessExits() {
        let d = leakDetector(window: 10)
        let r = Self.process(1)
        var input = (0..<20).map { Self.point("go.goroutine.count", 10 + 5 * Double($0), Double($0), r) }
        input.append(.event(Event(name: "process.exit", severity: .info, body: "", timeUnixNano: Self.at(20), resource: Resource(r.attributes), lifecycle: .exited)))
        let ev = Self.events(Self.feed(d, input)).filter { $0.name.hasPrefix("go.goroutine.leak") }
        XCTAssertEqual(ev.map(\.name), ["go.goroutine.leak", "go.goroutine.leak.resolved"])
        XCTAssertEqual(ev.last.flatMap { Self.attr($0, "leak.reason") }, .string("process exited"))
    }

    /// Only the agent's own lifecycle event ends a process's series: a plugin's
    /// event that happens to be named process.exit carries no lifecycle.
    func testAnEventNamedProcessExitWithoutTheLifecycleIsNotAnExit() {
        let d = leakDetector(window: 10)
        let r = Self.process(1)
        var input = (0..<20).map { Self.point("go.goroutine.count", 10 + 5 * Double($0), Double($0), r) }
        input.append(.event(Event(name: "process.exit", severity: .info, body: "", timeUnixNano: Self.at(20), resource: Resource(r.attributes))))
        let ev = Self.events(Self.feed(d, input)).filter { $0.name.hasPrefix("go.goroutine.leak") }
        XCTAssertEqual(ev.map(\.name), ["go.goroutine.leak"], "no resolve: the process has not exited")
    }
}
