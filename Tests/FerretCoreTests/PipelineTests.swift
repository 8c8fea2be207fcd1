@testable import FerretCore
import FerretTestSupport
import Foundation
import GoTestSupport
import Logging
import Synchronization
@testable import SinkJSONL
import XCTest

final class PipelineTests: XCTestCase {
    let logger = Logger(label: "test")

    func metric(_ i: Int) -> Signal {
        .metric(MetricPoint(name: "test.value", kind: .gauge, unit: "1", value: Double(i), timeUnixNano: 1,
                            attributes: [Attribute("k", .string("v"))], resource: Resource([Attribute("process.pid", .int(7))])))
    }

    /// A slow sink only fills (and overflows) its own buffer; the jsonl sink
    /// beside it keeps up.
    func testSlowSinkDoesNotDelayJSONL() throws {
        let path = TestSupport.tempDir("slow") + "/out.jsonl"
        let slow = MemorySink(delay: .milliseconds(500))
        let slowRunner = SinkRunner(name: "slow", type: "memory", identity: "", sink: slow, buffer: 100, logger: logger)
        let jsonl = SinkRunner(name: "jsonl", type: "jsonl", identity: "", sink: try JSONLSink(path: path), buffer: 100_000, logger: logger)
        let p = Pipeline(queueSize: 100_000, sinks: [slowRunner, jsonl], logger: logger)
        p.start()
        for batch in 0..<50 { p.submit((0..<100).map { metric(batch * 100 + $0) }) }
        // All 5000 lines reach the file while the slow sink has taken a few
        // batches at most (each takes it 500 ms): counted, not timed.
        var lines = 0
        var slowWrites = 0
        Wait.until("5000 lines in the file", timeout: 5, poll: 0.01) {
            slowWrites = slow.writes
            lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count
            return lines == 5000
        }
        XCTAssertEqual(lines, 5000)
        XCTAssertLessThanOrEqual(slowWrites, 3, "jsonl waited for the slow sink")
        XCTAssertLessThan(slow.signals.count, 5000, "the slow sink is still behind")
        XCTAssertGreaterThan(slowRunner.dropped.value, 0, "the slow sink's overflow is counted")
        XCTAssertEqual(jsonl.dropped.value, 0)
        p.shutdown(timeout: 5)
    }

    func testQueueOverflowIsCountedNotBlocking() {
        let sink = MemorySink(delay: .milliseconds(200))
        let p = Pipeline(queueSize: 1000, sinks: [SinkRunner(name: "m", type: "memory", identity: "", sink: sink, buffer: 1000, logger: logger)], logger: logger)
        // Not started: nothing drains, so the queue fills. A submit that
        // blocked on the full queue would never return here.
        var accepted = 0
        for i in 0..<30 where p.submit((0..<100).map { metric(i * 100 + $0) }) { accepted += 1 }
        XCTAssertEqual(accepted, 10)
        XCTAssertEqual(p.stats.accepted.value, 1000)
        XCTAssertEqual(p.stats.dropped.value, 2000)
        XCTAssertEqual(p.queueLength, 1000)
    }

    /// The waiting offer (a helper ring's reader): it gets in once the consumer
    /// drains, gives up at its deadline, refuses at once a batch larger than the
    /// queue, and is woken by close.
    func testOfferWaitingForRoom() {
        let q = BoundedQueue<Int>(capacity: 4)
        XCTAssertTrue(q.offer([1, 2, 3, 4]))
        let t0 = Date()
        XCTAssertFalse(q.offer([5], waitingUntil: Date(timeIntervalSinceNow: 0.1)))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 0.09)
        XCTAssertFalse(q.offer([1, 2, 3, 4, 5], waitingUntil: Date(timeIntervalSinceNow: 10)))

        let drained = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.05)
            XCTAssertEqual(q.drain(timeout: 1), [1, 2, 3, 4])
            drained.signal()
        }
        XCTAssertTrue(q.offer([5, 6], waitingUntil: Date(timeIntervalSinceNow: 10)))
        drained.wait()
        XCTAssertEqual(q.drain(timeout: 1), [5, 6])

        XCTAssertTrue(q.offer([1, 2, 3, 4]))
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.05)
            q.close()
        }
        let t1 = Date()
        XCTAssertFalse(q.offer([5], waitingUntil: Date(timeIntervalSinceNow: 10)))
        XCTAssertLessThan(Date().timeIntervalSince(t1), 5, "close wakes a producer waiting for room")
    }

    func testJSONLinesFollowTheSchema() throws {
        var w = JSONWriter()
        let r = Resource([Attribute("process.pid", .int(123)), Attribute("ferret.group", .string("truthsrv"))])
        w.signalLine(.metric(MetricPoint(name: "go.goroutine.count", kind: .gauge, unit: "{goroutine}", value: 53, timeUnixNano: 1_700_000_000_000_000_000, resource: r)))
        w.signalLine(.metric(MetricPoint(name: "http.server.request.duration", kind: .histogram, unit: "s",
                                         histogram: HistogramData(count: 10, sum: 0.12, bounds: [0.005, 0.01], bucketCounts: [3, 5, 2]),
                                         timeUnixNano: 1, resource: .empty)))
        w.signalLine(.span(Span(name: "GET /orders", kind: .server, traceID: Array(repeating: 0xab, count: 16), spanID: Array(repeating: 1, count: 8),
                                parentSpanID: [], startUnixNano: 1, endUnixNano: 2, status: .unset, statusMessage: "",
                                attributes: [Attribute("http.response.status_code", .int(200))], resource: .empty)))
        w.signalLine(.event(Event(name: "process.exit", severity: .info, body: "quote \" newline \n tab \t ctrl \u{1}", timeUnixNano: 1, resource: .empty)))
        let lines = String(decoding: w.bytes, as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(lines.count, 4)
        XCTAssertEqual(String(lines[0]), #"{"signal":"metric","name":"go.goroutine.count","kind":"gauge","unit":"{goroutine}","value":53,"time_unix_nano":1700000000000000000,"attributes":{},"resource":{"process.pid":123,"ferret.group":"truthsrv"}}"#)
        XCTAssertEqual(String(lines[1]), #"{"signal":"metric","name":"http.server.request.duration","kind":"histogram","unit":"s","count":10,"sum":0.12,"bounds":[0.005,0.01],"bucket_counts":[3,5,2],"time_unix_nano":1,"attributes":{},"resource":{}}"#)
        let span = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[2].utf8)) as? [String: Any])
        XCTAssertEqual(span["trace_id"] as? String, String(repeating: "ab", count: 16))
        XCTAssertEqual(span["parent_span_id"] as? String, "")
        XCTAssertEqual(span["kind"] as? String, "server")
        let event = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[3].utf8)) as? [String: Any])
        XCTAssertEqual(event["body"] as? String, "quote \" newline \n tab \t ctrl \u{1}")
    }

    func testNumbersRoundTrip() throws {
        for v in [0.0, -1.5, 1e-9, 123456789.125, 1e300, -0.0, Double(Int64.max)] {
            var w = JSONWriter()
            w.double(v)
            let parsed = try JSONSerialization.jsonObject(with: Data(w.bytes), options: .fragmentsAllowed) as? NSNumber
            XCTAssertEqual(parsed?.doubleValue ?? .nan, v, accuracy: abs(v) * 1e-15)
        }
        var w = JSONWriter()
        w.int(Int64.min)
        XCTAssertEqual(String(decoding: w.bytes, as: UTF8.self), "-9223372036854775808")
    }

    /// A sink that stands ahead (pprof_dir) runs on the processor stage, not on
    /// the dispatcher: while it is stuck (a slow disk) the aggregators go on
    /// with the next batches, and the other sinks get every batch, in order,
    /// annotated, once it returns.
    func testAheadSinkRunsOnItsOwnStageAndKeepsOrder() throws {
        final class Gate: AheadSink, @unchecked Sendable {
            let open = DispatchSemaphore(value: 0)
            let threads = Mutex<[pthread_t]>([])
            func write(_ batch: [Signal]) throws {}
            func annotate(_ batch: inout [Signal]) throws {
                threads.withLock { $0.append(pthread_self()) }
                open.wait()
                for i in batch.indices {
                    if case .event(var e) = batch[i] {
                        e.attributes.append(Attribute("annotated", .bool(true)))
                        batch[i] = .event(e)
                    }
                }
            }
        }
        final class Counter: Aggregator, @unchecked Sendable {
            let seen = Mutex<[String]>([])
            let thread = Mutex<pthread_t?>(nil)
            func process(_ batch: [Signal], nowUnixNano: UInt64) -> [Signal] {
                thread.withLock { $0 = pthread_self() }
                seen.withLock { s in for case .event(let e) in batch { s.append(e.name) } }
                return batch
            }
        }
        let gate = Gate(), counter = Counter(), memory = MemorySink()
        let logger = Logger(label: "t")
        let pipeline = Pipeline(queueSize: 1024, aggregators: [counter],
                                sinks: [SinkRunner(name: "ahead", type: "pprof_dir", identity: "", sink: gate, buffer: 1024, logger: logger),
                                        SinkRunner(name: "mem", type: "memory", identity: "", sink: memory, buffer: 1024, logger: logger)],
                                logger: logger)
        pipeline.start()
        func event(_ n: Int) -> Signal { .event(Event(name: "e\(n)", severity: .info, body: "", timeUnixNano: 1, resource: .empty)) }
        pipeline.submit(event(1))
        // The stage is stuck in annotate with e1; the dispatcher still takes e2..e5.
        let deadline = Date().addingTimeInterval(5)  // for both waits
        Wait.until("the stage in annotate", timeout: 5, poll: 0.005) { !gate.threads.withLock({ $0.isEmpty }) }
        for n in 2...5 { pipeline.submit(event(n)); usleep(20_000) }  // pacing: one batch each, not a wait
        Wait.until("e1…e5 through the aggregators", timeout: deadline.timeIntervalSinceNow, poll: 0.005) {
            counter.seen.withLock({ $0.count }) >= 5
        }
        XCTAssertEqual(counter.seen.withLock { $0 }, ["e1", "e2", "e3", "e4", "e5"], "the aggregators are not held up by the ahead sink")
        XCTAssertTrue(memory.signals.isEmpty, "the other sinks wait for the annotation")
        for _ in 0..<10 { gate.open.signal() }
        pipeline.shutdown(timeout: 5)
        let names = memory.signals.compactMap { s -> String? in if case .event(let e) = s { return e.name } else { return nil } }
        XCTAssertEqual(names, ["e1", "e2", "e3", "e4", "e5"], "in order")
        XCTAssertTrue(memory.signals.allSatisfy { if case .event(let e) = $0 { return e.attributes.contains { $0.key == "annotated" } } else { return false } })
        let stage = gate.threads.withLock { $0 }, dispatcher = counter.thread.withLock { $0 }
        XCTAssertTrue(stage.allSatisfy { pthread_equal($0, stage[0]) != 0 }, "one stage thread")
        XCTAssertEqual(pthread_equal(stage[0], dispatcher!), 0, "not the dispatcher's thread")
    }
}
