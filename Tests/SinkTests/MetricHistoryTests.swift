@testable import FerretCore
@testable import SinkDashboard
import FerretTestSupport
import XCTest

/// The dashboard's in-memory history: raw points for an hour, one-minute
/// buckets for a day, downsampling, and the memory bound.
final class MetricHistoryTests: XCTestCase {
    let t0: Int64 = 1_789_999_980_000  // on a minute: buckets follow wall-clock minutes
    func key(_ name: String = "go.goroutine.count", pid: Int64? = 42) -> MetricHistory.Key {
        MetricHistory.Key(name: name, pid: pid, group: "g", attributes: "")
    }

    func testAnHourOfRawPointsAtOneSecond() {
        let h = MetricHistory()
        let k = key()
        for i in 0..<(3600 + 900) { h.add(k, time: t0 + Int64(i) * 1000, value: Double(i)) }
        let end = t0 + Int64(3600 + 899) * 1000
        let all = h.query(k, from: end - 3_599_000, to: end, maxPoints: 10_000)
        XCTAssertEqual(all.count, 3600, "one point a second for the last hour")
        XCTAssertEqual(all.first?.time, end - 3_599_000)
        XCTAssertEqual(all.first?.last, 900)
        XCTAssertEqual(all.last?.last, 4499)
        XCTAssertEqual(h.series().first?.last, 4499)
        XCTAssertLessThanOrEqual(h.series().first?.points ?? 0, 4096, "the ring holds about an hour")
    }

    func testDownsamplingKeepsMinMaxMeanLast() {
        let h = MetricHistory()
        let k = key()
        for i in 0..<600 { h.add(k, time: t0 + Int64(i) * 1000, value: Double(i % 60)) }
        let p = h.query(k, from: t0, to: t0 + 599_999, maxPoints: 10)
        XCTAssertEqual(p.count, 10)
        for b in p {
            XCTAssertEqual(b.min, 0)
            XCTAssertEqual(b.max, 59)
            XCTAssertEqual(b.mean, 29.5, accuracy: 1e-9)
            XCTAssertEqual(b.last, 59)
            XCTAssertEqual(b.count, 60)
        }
    }

    func testLongRangesUseMinuteBuckets() {
        let h = MetricHistory()
        let k = key()
        for i in 0..<(3 * 3600) { h.add(k, time: t0 + Int64(i) * 1000, value: Double(i / 60)) }
        let end = t0 + Int64(3 * 3600 - 1) * 1000
        let p = h.query(k, from: t0, to: end, maxPoints: 1000)
        XCTAssertEqual(p.count, 180, "3 hours of one-minute buckets")
        for (i, b) in p.enumerated() {
            XCTAssertEqual(b.mean, Double(i), accuracy: 1e-9)
            XCTAssertEqual(b.count, 60)
        }
    }

    func testMemoryIsBoundedAndNewSeriesAreRefused() {
        var o = MetricHistory.Options()
        o.maxBytes = 2 << 20
        let h = MetricHistory(options: o)
        for s in 0..<200 {
            for i in 0..<600 { h.add(key(pid: Int64(s)), time: t0 + Int64(i) * 1000, value: 1) }
        }
        XCTAssertLessThanOrEqual(h.bytes, o.maxBytes)
        XCTAssertGreaterThan(h.refusedSeries, 0)
        XCTAssertGreaterThan(h.seriesCount, 10)
        let kept = h.series()
        for s in kept { XCTAssertEqual(s.last, 1) }
        h.forget(pid: kept[0].key.pid!)
        XCTAssertEqual(h.seriesCount, kept.count - 1)
    }

    func testOutOfOrderAndNonFinitePointsAreIgnored() {
        let h = MetricHistory()
        let k = key()
        h.add(k, time: t0 + 2000, value: 2)
        h.add(k, time: t0 + 1000, value: 1)
        h.add(k, time: t0 + 3000, value: .nan)
        XCTAssertEqual(h.query(k, from: t0, to: t0 + 10_000).map(\.last), [2])
    }
}
