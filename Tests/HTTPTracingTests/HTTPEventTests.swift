import Foundation
@testable import HTTPTracing
import XCTest

final class HTTPEventTests: XCTestCase {
    /// Builds a record the way bpf/http_tracer.bpf.c lays out struct http_event.
    static func record(method: String, path: String, host: String, status: Int64, flags: UInt16 = 0,
                       route: String = "", kind: UInt32 = 1) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: HTTPEvent.size)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } } }
        func str(_ s: String, _ o: Int, lenAt: Int, max: Int) {
            let u = Array(s.utf8.prefix(max))
            for (i, x) in u.enumerated() { b[o + i] = x }
            put(UInt16(u.count), lenAt)
        }
        put(kind, 0); put(Int32(4242), 4); put(UInt64(0xc000_0010_00), 8)
        put(UInt64(1_000), 16); put(UInt64(251_000), 24); put(status, 32)
        str(route, 48, lenAt: 40, max: 64)
        let r = 112  // struct inflight
        for i in 0..<16 { b[r + 24 + i] = UInt8(i + 1) }
        for i in 0..<8 { b[r + 40 + i] = UInt8(0xA0 + i) }
        put(flags, r + 62)
        str(method, r + 64, lenAt: r + 56, max: 16)
        str(path, r + 80, lenAt: r + 58, max: 128)
        str(host, r + 208, lenAt: r + 60, max: 64)
        return b
    }

    func testDecodesTheBPFLayout() throws {
        let raw = Self.record(method: "POST", path: "/api/items", host: "127.0.0.1:8080", status: 0)
        let e = try XCTUnwrap(raw.withUnsafeBytes { HTTPEvent($0) })
        XCTAssertEqual(e.kind, .server)
        XCTAssertEqual(e.pid, 4242)
        XCTAssertEqual(e.endMonotonicNanos - e.startMonotonicNanos, 250_000)
        XCTAssertEqual(e.method, "POST")
        XCTAssertEqual(e.path, "/api/items")
        XCTAssertEqual(e.host, "127.0.0.1:8080")
        XCTAssertEqual(e.effectiveStatus, 200, "unset status is net/http's implicit 200")
        XCTAssertEqual(e.traceID, (1...16).map(UInt8.init))
        XCTAssertEqual(e.spanID, (0..<8).map { UInt8(0xA0 + $0) })
        XCTAssertEqual(e.parentSpanID, [UInt8](repeating: 0, count: 8))
        XCTAssertEqual(e.route, "")
        XCTAssertEqual(e.flags, [])
    }

    func testRouteFlagsAndClientStatus() throws {
        let raw = Self.record(method: "GET", path: "/items/7", host: "h", status: 404, flags: 1 | 16,
                              route: "GET /items/{id}")
        let e = try XCTUnwrap(raw.withUnsafeBytes { HTTPEvent($0) })
        XCTAssertEqual(e.route, "GET /items/{id}")
        XCTAssertEqual(e.flags, [.traceparentFound, .localParent])
        XCTAssertEqual(e.effectiveStatus, 404)
        let failed = Self.record(method: "GET", path: "/", host: "h", status: 0, flags: 32, kind: 2)
        let c = try XCTUnwrap(failed.withUnsafeBytes { HTTPEvent($0) })
        XCTAssertEqual(c.kind, .client)
        XCTAssertNil(c.effectiveStatus, "a client error has no status")
        let unknown = Self.record(method: "GET", path: "/", host: "h", status: 0, flags: 8)
        XCTAssertNil(try XCTUnwrap(unknown.withUnsafeBytes { HTTPEvent($0) }).effectiveStatus)
    }

    func testRejectsShortOrUnknownRecords() {
        var raw = Self.record(method: "GET", path: "/", host: "", status: 404)
        XCTAssertNil(raw.dropLast().withUnsafeBytes { HTTPEvent($0) })
        raw[0] = 9
        XCTAssertNil(raw.withUnsafeBytes { HTTPEvent($0) })
    }

    func testLengthsBeyondTheBufferAreClamped() throws {
        var raw = Self.record(method: "GET", path: "/x", host: "h", status: 500)
        raw[112 + 58] = 0xFF; raw[112 + 59] = 0xFF  // path_len 65535
        let e = try XCTUnwrap(raw.withUnsafeBytes { HTTPEvent($0) })
        XCTAssertEqual(e.path.utf8.count, 128)
        XCTAssertEqual(e.status, 500)
    }

    func testHistogramBuckets() {
        var h = REDHistograms()
        let k = REDHistograms.Key(pid: 1, kind: .server, method: "GET", status: 200, route: "")
        h.record(k, seconds: 0.001)   // ≤ 5 ms
        h.record(k, seconds: 0.005)   // bounds are inclusive upper limits
        h.record(k, seconds: 0.2)     // ≤ 250 ms
        h.record(k, seconds: 60)      // +inf
        let s = h.series[k]!
        XCTAssertEqual(s.counts.count, REDHistograms.bounds.count + 1)
        XCTAssertEqual(s.counts[0], 2)
        XCTAssertEqual(s.counts[REDHistograms.bounds.firstIndex(of: 0.25)!], 1)
        XCTAssertEqual(s.counts.last, 1)
        XCTAssertEqual(s.count, 4)
        XCTAssertEqual(s.sum, 60.206, accuracy: 1e-9)
        h.remove(pid: 1)
        XCTAssertTrue(h.series.isEmpty)
    }

    func testClockConversionMatchesRealtime() {
        let c = ClockConverter()
        // The two clock reads can be split by a preemption on a busy machine: the
        // best of 5 pairs must agree within 1 ms.
        var best = Int64.max
        for _ in 0..<5 {
            let mono = ClockConverter.now(CLOCK_MONOTONIC)
            let wall = ClockConverter.now(CLOCK_REALTIME)
            best = min(best, abs(Int64(c.unixNanos(monotonic: UInt64(mono))) - wall))
        }
        XCTAssertLessThan(best, 1_000_000)
    }
}
