import Foundation
import Logging
import Synchronization

/// Where signals end up. A sink is driven by exactly one thread (its
/// `SinkRunner`), so implementations need no locking of their own.
public protocol Sink: AnyObject, Sendable {
    /// Starts what the sink serves or sends from (binds its socket, opens its
    /// connection): called once, after it is made and before its runner starts.
    /// Throwing reports the sink's entry as failed; the others go on.
    func start() throws
    /// Writes a batch. Throwing counts an error for this sink; the batch is lost.
    func write(_ batch: [Signal]) throws
    /// Pushes buffered output out (called when the runner's queue runs dry).
    func flush() throws
    /// Called once at shutdown, after a final flush.
    func close()
}

extension Sink {
    public func start() throws {}
    public func flush() throws {}
    public func close() {}
}

/// Transforms the stream between the queue and the sinks. Called from the
/// pipeline's dispatcher thread only.
public protocol Aggregator: AnyObject, Sendable {
    /// Consumes a batch and returns what goes on (pass through what you don't select).
    func process(_ batch: [Signal], nowUnixNano: UInt64) -> [Signal]
    /// Called about once a second, for time-driven output (windows, resolves).
    func tick(nowUnixNano: UInt64) -> [Signal]
}

extension Aggregator {
    public func tick(nowUnixNano: UInt64) -> [Signal] { [] }
}

/// Counters the pipeline keeps about itself (swift-metrics counters on the
/// pipeline's telemetry).
public final class PipelineStats: Sendable {
    public let accepted: MetricCounter
    public let dropped: MetricCounter

    init(_ telemetry: SelfTelemetry) {
        accepted = telemetry.counter("ferret.pipeline.points.accepted")
        dropped = telemetry.counter("ferret.pipeline.points.dropped")
    }
}

/// One sink with its own bounded buffer and thread: a slow sink only fills
/// its own buffer and drops (counted), never holding up the others.
public final class SinkRunner: @unchecked Sendable {
    public let name: String
    public let type: String
    public let identity: String
    public let sink: any Sink
    private let queue: BoundedQueue<Signal>
    private let done = DispatchSemaphore(value: 0)
    private let logger: Logger
    public let written: MetricCounter
    public let dropped: MetricCounter
    public let errors: MetricCounter
    private let observed: [Int]
    private let telemetry: SelfTelemetry
    public let buffer: Int
    /// The sink's decoded Config, when it was made from one: what a reload compares.
    public let config: (any Sendable)?

    /// `telemetry`: where its counters go (the agent's is `SelfTelemetry.shared`).
    public init(name: String, type: String, identity: String, sink: any Sink, buffer: Int, logger: Logger,
                telemetry: SelfTelemetry = SelfTelemetry(), config: (any Sendable)? = nil) {
        self.name = name
        self.buffer = buffer
        self.config = config
        self.type = type
        self.identity = identity
        self.sink = sink
        let queue = BoundedQueue<Signal>(capacity: buffer)
        self.queue = queue
        self.logger = logger
        self.telemetry = telemetry
        let d = [("ferret.sink", name), ("ferret.sink.type", type)]
        written = telemetry.counter("ferret.sink.written", d)
        dropped = telemetry.counter("ferret.sink.dropped", d)
        errors = telemetry.counter("ferret.sink.errors", d)
        var tokens = [telemetry.observe("ferret.sink.queue.length", d, unit: "{signal}") { Double(queue.count) }]
        // Network sinks: their delivery core's buffer, counters and health.
        if let reporting = sink as? any DeliveryReporting {
            // One set per delivery; a sink with several (otlp: one per signal
            // kind) tells them apart by `ferret.sink.route`.
            let routes = reporting.deliveryHealth.map(\.route)
            for (i, route) in routes.enumerated() {
                tokens += Self.observeDelivery(telemetry, routes.count > 1 ? d + [("ferret.sink.route", route)] : d) {
                    let all = reporting.deliveryHealth
                    return i < all.count ? all[i] : nil
                }
            }
        }
        observed = tokens
    }

    private static func observeDelivery(_ telemetry: SelfTelemetry, _ d: [(String, String)],
                                        _ health: @escaping @Sendable () -> DeliveryHealth?) -> [Int] {
        var tokens: [Int] = []
        // (label, unit, cumulative, reading)
        let figures: [(String, String, Bool, @Sendable (DeliveryHealth) -> Double)] = [
            ("ferret.sink.delivery.accepted", "{signal}", true, { Double($0.accepted) }),
            ("ferret.sink.delivery.delivered", "{signal}", true, { Double($0.delivered) }),
            ("ferret.sink.delivery.dropped", "{signal}", true, { Double($0.dropped) }),
            ("ferret.sink.delivery.rejected", "{signal}", true, { Double($0.rejected) }),
            ("ferret.sink.delivery.buffered", "{signal}", false, { Double($0.bufferedPoints) }),
            ("ferret.sink.delivery.buffered.bytes", "By", false, { Double($0.bufferedBytes) }),
            ("ferret.sink.delivery.requests", "{request}", true, { Double($0.requests) }),
            ("ferret.sink.delivery.failures", "{request}", true, { Double($0.failures) }),
        ]
        for (label, unit, cumulative, read) in figures {
            tokens.append(telemetry.observe(label, d, unit: unit, cumulative: cumulative) { health().map(read) })
        }
        tokens.append(telemetry.observe("ferret.sink.healthy", d, unit: "1") {
            health().map { ($0.state == .healthy ? 1 : 0, [("ferret.sink.state", $0.state.rawValue)]) }
        })
        return tokens
    }

    public func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "ferret-sink-\(name)"
        t.start()
    }

    public var queued: Int { queue.count }

    func offer(_ batch: [Signal]) {
        if !queue.offer(batch) { dropped.increment(by: batch.count) }
    }

    private func loop() {
        var lastErrorLog: UInt64 = 0
        while let batch = queue.drain(timeout: 0.5) {
            do {
                if !batch.isEmpty {
                    try sink.write(batch)
                    written.increment(by: batch.count)
                }
                if queue.count == 0 { try sink.flush() }
            } catch {
                errors.increment()
                let now = Clock.monotonicNanos()
                if now - lastErrorLog > 10_000_000_000 {
                    lastErrorLog = now
                    logger.error("sink '\(name)' (\(type)): \(error)")
                }
            }
        }
        try? sink.flush()
        sink.close()
        if let d = sink as? any DeliveryReporting {
            for h in d.deliveryHealth {
                logger.info("sink '\(name)' (\(type)) closed: accepted \(h.accepted), delivered \(h.delivered), dropped \(h.dropped), rejected \(h.rejected) signal(s) in \(h.requests) request(s), \(h.failures) failed")
            }
        }
        done.signal()
    }

    /// Stops accepting, writes what is queued, flushes and closes. Waits up to `timeout`.
    public func shutdown(timeout: TimeInterval) {
        queue.close()
        if done.wait(timeout: .now() + timeout) == .timedOut {
            logger.warning("sink '\(name)' did not finish flushing within \(timeout)s")
        }
        telemetry.removeObserved(observed)
        for c in [written, dropped, errors] { c.destroy() }
    }
}

/// The signal pipeline: a bounded ingress queue, the aggregator chain on the
/// dispatcher thread, then, when a sink stands ahead (pprof_dir), the
/// processor stage on a thread of its own, and the fan-out to the sink
/// runners. `submit` never blocks, and no file or network I/O happens on the
/// dispatcher thread.
///
/// The processor stage: an ahead sink sees each batch first and may annotate
/// it (pprof_dir writes each profile's file and records its path) before the
/// other sinks get it. It runs on `ferret-processors`, fed through a bounded
/// queue of its own (full: the batch is dropped and counted as the pipeline's),
/// so a slow disk delays the sinks' input but never the aggregators. Batches
/// keep their order through it.
public final class Pipeline: @unchecked Sendable {
    public let stats: PipelineStats
    public let telemetry: SelfTelemetry
    private let ingress: BoundedQueue<Signal>
    private let processing: BoundedQueue<Signal>
    private let state: Mutex<(aggregators: [any Aggregator], sinks: [SinkRunner])>
    private let done = DispatchSemaphore(value: 0)
    private let processorsDone = DispatchSemaphore(value: 0)
    private let logger: Logger

    /// `telemetry`: where its counters go (the agent's is `SelfTelemetry.shared`).
    public init(queueSize: Int, aggregators: [any Aggregator] = [], sinks: [SinkRunner], logger: Logger,
                telemetry: SelfTelemetry = SelfTelemetry()) {
        self.telemetry = telemetry
        stats = PipelineStats(telemetry)
        let ingress = BoundedQueue<Signal>(capacity: queueSize)
        telemetry.observe("ferret.pipeline.queue.length", unit: "{signal}") { Double(ingress.count) }
        telemetry.observe("ferret.pipeline.queue.capacity", unit: "{signal}") { Double(queueSize) }
        self.ingress = ingress
        processing = BoundedQueue(capacity: queueSize)
        state = Mutex((aggregators, sinks))
        self.logger = logger
    }

    public func start() {
        for s in state.withLock({ $0.sinks }) { s.start() }
        let t = Thread { [self] in self.dispatch() }
        t.name = "ferret-pipeline"
        t.start()
        let p = Thread { [self] in self.runProcessors() }
        p.name = "ferret-processors"
        p.start()
    }

    /// Queues signals; refused signals are counted as dropped. Never blocks.
    @discardableResult
    public func submit(_ batch: [Signal]) -> Bool {
        if ingress.offer(batch) {
            stats.accepted.increment(by: batch.count)
            return true
        }
        stats.dropped.increment(by: batch.count)
        return false
    }

    @discardableResult
    public func submit(_ signal: Signal) -> Bool { submit([signal]) }

    /// Queues signals, waiting up to `wait` seconds for room; what still does
    /// not fit is dropped and counted. For a producer whose own buffer stands
    /// before the queue (a helper's ring), never for a plugin's thread.
    @discardableResult
    public func submit(_ batch: [Signal], waitingUpTo wait: TimeInterval) -> Bool {
        if ingress.offer(batch) || ingress.offer(batch, waitingUntil: Date(timeIntervalSinceNow: wait)) {
            stats.accepted.increment(by: batch.count)
            return true
        }
        stats.dropped.increment(by: batch.count)
        return false
    }

    public var queueLength: Int { ingress.count }
    public var capacity: Int { ingress.capacity }
    public var sinks: [SinkRunner] { state.withLock { $0.sinks } }

    /// Swaps the sink set (config reload). Runners no longer present are
    /// flushed and closed; new ones are started.
    public func replaceSinks(_ runners: [SinkRunner]) {
        let old = state.withLock { st -> [SinkRunner] in
            let old = st.sinks
            st.sinks = runners
            return old
        }
        let kept = Set(runners.map { ObjectIdentifier($0) })
        for r in runners where !old.contains(where: { $0 === r }) { r.start() }
        for r in old where !kept.contains(ObjectIdentifier(r)) { r.shutdown(timeout: 5) }
    }

    public func replaceAggregators(_ aggregators: [any Aggregator]) {
        state.withLock { $0.aggregators = aggregators }
    }

    private func dispatch() {
        var lastTick = Clock.monotonicNanos()
        while let batch = ingress.drain(timeout: 0.25) {
            let (aggregators, sinks) = state.withLock { ($0.aggregators, $0.sinks) }
            var out = batch
            let now = Clock.unixNanos()
            for a in aggregators where !out.isEmpty { out = a.process(out, nowUnixNano: now) }
            let mono = Clock.monotonicNanos()
            if mono - lastTick >= 1_000_000_000 {
                lastTick = mono
                for (i, a) in aggregators.enumerated() {
                    var extra = a.tick(nowUnixNano: now)
                    for b in aggregators[(i + 1)...] where !extra.isEmpty { extra = b.process(extra, nowUnixNano: now) }
                    out.append(contentsOf: extra)
                }
            }
            if out.isEmpty { continue }
            if sinks.contains(where: { $0.sink is any AheadSink }) {
                if !processing.offer(out) { stats.dropped.increment(by: out.count) }
            } else {
                for s in sinks { s.offer(out) }
            }
        }
        processing.close()
        done.signal()
    }

    /// The processor stage: the ahead sinks annotate each batch, in order, then
    /// the others get it.
    private func runProcessors() {
        while let batch = processing.drain(timeout: 0.25) {
            if batch.isEmpty { continue }
            let sinks = state.withLock { $0.sinks }
            var out = batch
            for s in sinks {
                guard let ahead = s.sink as? any AheadSink else { continue }
                do {
                    try ahead.annotate(&out)
                    s.written.increment(by: out.count)
                } catch {
                    s.errors.increment()
                    logger.error("sink '\(s.name)' (\(s.type)): \(error)")
                }
            }
            for s in sinks where !(s.sink is any AheadSink) { s.offer(out) }
        }
        processorsDone.signal()
    }

    /// Stops accepting, forwards what is queued (through the processor stage),
    /// then flushes and closes every sink.
    public func shutdown(timeout: TimeInterval = 10) {
        ingress.close()
        _ = done.wait(timeout: .now() + timeout)
        processing.close()
        _ = processorsDone.wait(timeout: .now() + timeout)
        for s in sinks { s.shutdown(timeout: timeout) }
    }
}

/// Clocks in nanoseconds.
public enum Clock {
    public static func unixNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
