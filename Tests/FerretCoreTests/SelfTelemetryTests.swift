import FerretTestSupport
import CoreMetrics
@testable import FerretCore
import Foundation
import XCTest

/// The agent's own metrics through swift-metrics: what components create on
/// the factory comes out of a snapshot as `ferret.*` points.
final class SelfTelemetryTests: XCTestCase {
    func testSeriesComeOutAsPoints() throws {
        let t = SelfTelemetry()
        // Through swift-metrics' own types, on this factory.
        let c = Counter(label: "ferret.sink.written", dimensions: [("ferret.sink", "a")], factory: t)
        c.increment(by: 3)
        let again = t.counter("ferret.sink.written", [("ferret.sink", "a")])
        again.increment(by: 2)
        XCTAssertEqual(again.value, 5, "one series per (label, dimensions), shared by its owners")
        let g = t.gauge("ferret.plugin.collect.duration", [("ferret.plugin", "p")])
        g.set(0.25)
        let timer = t.timer("ferret.discovery.attach.latency")
        timer.record(nanoseconds: 2_000_000)
        timer.record(nanoseconds: 700_000_000)
        let token = t.observe("ferret.sink.healthy", [("ferret.sink", "a")], unit: "1") { (0, [("ferret.sink.state", "retrying")]) }

        let points = t.points(now: 42, resource: .empty).compactMap { s -> MetricPoint? in
            if case .metric(let m) = s { return m } else { return nil }
        }
        func find(_ name: String) throws -> MetricPoint { try XCTUnwrap(points.first { $0.name == name }, name) }
        let written = try find("ferret.sink.written")
        XCTAssertEqual(written.kind, .counter)
        XCTAssertEqual(written.value, 5)
        XCTAssertEqual(written.unit, "{signal}")
        XCTAssertEqual(written.attributes, [Attribute("ferret.sink", .string("a"))])
        XCTAssertEqual(try find("ferret.plugin.collect.duration").value, 0.25)
        XCTAssertEqual(try find("ferret.plugin.collect.duration").kind, .gauge)
        let latency = try find("ferret.discovery.attach.latency")
        XCTAssertEqual(latency.kind, .histogram)
        XCTAssertEqual(latency.histogram?.count, 2)
        XCTAssertEqual(latency.histogram?.bounds, SelfTelemetry.timerBounds)
        XCTAssertEqual(latency.histogram?.bucketCounts.reduce(0, +), 2)
        XCTAssertEqual(try find("ferret.discovery.attach.latency.max").value, 0.7, accuracy: 1e-9)
        let health = try find("ferret.sink.healthy")
        XCTAssertEqual(health.attributes, [Attribute("ferret.sink", .string("a")), Attribute("ferret.sink.state", .string("retrying"))])
        XCTAssertTrue(points.allSatisfy { $0.timeUnixNano == 42 })

        // A series leaves with its last owner; an observed gauge when removed.
        c.destroy()
        XCTAssertNotNil(t.points(now: 1, resource: .empty).first { if case .metric(let m) = $0 { m.name == "ferret.sink.written" } else { false } })
        again.destroy()
        t.removeObserved([token])
        let names = t.points(now: 1, resource: .empty).compactMap { s -> String? in if case .metric(let m) = s { m.name } else { nil } }
        XCTAssertFalse(names.contains("ferret.sink.written"))
        XCTAssertFalse(names.contains("ferret.sink.healthy"))
        XCTAssertTrue(names.contains("ferret.plugin.collect.duration"))
    }

    /// A pipeline's counters are its own telemetry's: two pipelines in one
    /// process do not add up.
    func testEachPipelineCountsOnItsOwnTelemetry() {
        let a = Pipeline(queueSize: 16, sinks: [], logger: .init(label: "t"))
        let b = Pipeline(queueSize: 16, sinks: [], logger: .init(label: "t"))
        for _ in 0..<3 { a.submit(.event(Event(name: "e", severity: .info, body: "", timeUnixNano: 1, resource: .empty))) }
        XCTAssertEqual(a.stats.accepted.value, 3)
        XCTAssertEqual(b.stats.accepted.value, 0)
    }
}
