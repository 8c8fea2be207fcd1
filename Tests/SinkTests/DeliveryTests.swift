import FerretTestSupport
import FerretCore
@testable import FerretDelivery
import Foundation
import GoTestSupport
import Logging
import Synchronization
import XCTest

/// The delivery core's own rules, driven through its send function.
final class DeliveryTests: XCTestCase {
    let logger = Logger(label: "test")

    final class Recorder: @unchecked Sendable {
        let lock = NSLock()
        var bodies: [(String, [UInt8])] = []
        var outcomes: [DeliveryOutcome] = []   // consumed first; then .delivered
        func send(_ route: String, _ body: [UInt8]) -> DeliveryOutcome {
            lock.lock()
            defer { lock.unlock() }
            if !outcomes.isEmpty { return outcomes.removeFirst() }
            bodies.append((route, body))
            return .delivered
        }
    }

    func options(buffer: Int = 1 << 20, batch: Int = 4096, flush: Duration = .milliseconds(20)) -> DeliveryOptions {
        var o = DeliveryOptions()
        o.bufferBytes = buffer
        o.batchBytes = batch
        o.flushInterval = flush
        o.retryInitial = .milliseconds(5)
        o.retryMax = .milliseconds(20)
        o.closeTimeout = .seconds(5)
        return o
    }

    /// Payloads of one route are joined in order up to the batch size; routes never mix.
    func testBatchesJoinPayloadsOfOneRouteInOrder() {
        let rec = Recorder()
        let d = Delivery(name: "t", options: options(batch: 100, flush: .milliseconds(200)), logger: logger) { rec.send($0, $1) }
        for i in 0..<30 {
            d.enqueue(route: i % 3 == 0 ? "b" : "a", Array(String(format: "%02d;", i).utf8), points: 1)
        }
        d.close()
        let h = d.health
        XCTAssertEqual(h.accepted, 30)
        XCTAssertEqual(h.delivered, 30)
        let a = rec.bodies.filter { $0.0 == "a" }.map { String(decoding: $0.1, as: UTF8.self) }.joined()
        let b = rec.bodies.filter { $0.0 == "b" }.map { String(decoding: $0.1, as: UTF8.self) }.joined()
        XCTAssertEqual(a, (0..<30).filter { $0 % 3 != 0 }.map { String(format: "%02d;", $0) }.joined())
        XCTAssertEqual(b, (0..<30).filter { $0 % 3 == 0 }.map { String(format: "%02d;", $0) }.joined())
        XCTAssertTrue(rec.bodies.allSatisfy { $0.1.count <= 100 }, "batches stay within batch_bytes")
        XCTAssertLessThan(rec.bodies.count, 30, "payloads were joined")
    }

    /// Passing failures are retried until delivered; nothing is lost or doubled.
    func testRetriesUntilDelivered() {
        let rec = Recorder()
        rec.outcomes = [.retry("down"), .retry("down"), .retry("503")]
        let d = Delivery(name: "t", options: options(), logger: logger) { rec.send($0, $1) }
        d.enqueue(route: "r", Array("x".utf8), points: 7)
        Wait.until("7 points delivered", timeout: 10, poll: 0.005) { d.health.delivered >= 7 }
        d.close()
        let h = d.health
        XCTAssertEqual(h.delivered, 7)
        XCTAssertEqual(h.failures, 3)
        XCTAssertEqual(h.requests, 4)
        XCTAssertEqual(h.state, .healthy)
        XCTAssertEqual(rec.bodies.count, 1)
    }

    /// A refusal is final: counted as rejected, not retried.
    func testRefusalIsNotRetried() {
        let rec = Recorder()
        rec.outcomes = [.reject("400 bad")]
        let d = Delivery(name: "t", options: options(), logger: logger) { rec.send($0, $1) }
        d.enqueue(route: "r", Array("x".utf8), points: 3)
        d.close()
        XCTAssertEqual(d.health.rejected, 3)
        XCTAssertEqual(d.health.delivered, 0)
        XCTAssertEqual(d.health.requests, 1)
    }

    /// While the receiver hangs, enqueue keeps returning and drops the oldest
    /// payloads past the budget; every point is accounted for.
    func testOverBudgetDropsOldestWithoutBlocking() {
        let release = DispatchSemaphore(value: 0)
        let rec = Recorder()
        let first = Atomic<Bool>(true)
        let d = Delivery(name: "t", options: options(buffer: 10_000, batch: 1000), logger: logger) { route, body in
            if first.exchange(false, ordering: .relaxed) { release.wait() }   // the receiver hangs on the first request
            return rec.send(route, body)
        }
        d.enqueue(route: "r", [UInt8](repeating: 0, count: 1000), points: 1)
        Wait.until("the first batch in flight", timeout: 5, poll: 0.005) { !first.load(ordering: .relaxed) }
        for i in 0..<100 {
            var payload = [UInt8](repeating: UInt8(i), count: 500)
            payload[0] = UInt8(i)
            d.enqueue(route: "r", payload, points: 2)
        }
        let during = d.health
        XCTAssertEqual(during.accepted, 201)
        XCTAssertLessThanOrEqual(during.bufferedBytes, 10_000, "queued plus in flight stay within the budget")
        XCTAssertEqual(during.dropped, 2 * (100 - 18), "18 payloads of 500 bytes fit next to the 1000 in flight")
        release.signal()
        d.close()
        let h = d.health
        XCTAssertEqual(h.delivered + h.dropped, h.accepted)
        // The newest survive: payloads 82…99.
        let kept = rec.bodies.dropFirst().flatMap { b in stride(from: 0, to: b.1.count, by: 500).map { b.1[$0] } }
        XCTAssertEqual(kept, (82..<100).map { UInt8($0) })
    }

    /// `close` gives up after its timeout when the receiver stays down, and
    /// counts what was left as dropped.
    func testCloseGivesUpAfterItsTimeout() {
        var o = options()
        o.closeTimeout = .milliseconds(300)
        let d = Delivery(name: "t", options: o, logger: logger) { _, _ in .retry("connection refused") }
        d.enqueue(route: "r", Array("abc".utf8), points: 5)
        d.close()  // a close that never gave up would not return
        XCTAssertEqual(d.health.dropped, 5)
        XCTAssertEqual(d.health.delivered, 0)
        XCTAssertGreaterThan(d.health.failures, 1)
        XCTAssertNotEqual(d.health.state, .healthy)
    }
}
