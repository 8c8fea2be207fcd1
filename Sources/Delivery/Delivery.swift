import FerretCore
import Foundation
import Logging
import Synchronization

/// What a send attempt came to.
public enum DeliveryOutcome: Sendable, Equatable {
    /// The receiver took the batch.
    case delivered
    /// A passing failure (connection refused, timeout, 5xx, 429): keep the batch and retry.
    case retry(String)
    /// The receiver refused the batch for good (4xx): retrying would not help; the points are counted as rejected.
    case reject(String)
}

/// How a network sink buffers and sends. Shared by every network sink
/// (influxdb, otlp, webhook) and decoded from the same keys in each.
public struct DeliveryOptions: Sendable, Equatable {
    /// Bound on encoded bytes held (queued plus in flight). Past it the oldest payloads are dropped and counted.
    public var bufferBytes = 64 << 20
    /// Largest request body made by joining payloads of one route.
    public var batchBytes = 1 << 20
    /// How long a payload may wait for others to join it.
    public var flushInterval: Duration = .seconds(1)
    /// Per request.
    public var timeout: Duration = .seconds(10)
    /// First retry delay; doubles per failure up to `retryMax`, with full jitter.
    public var retryInitial: Duration = .milliseconds(250)
    public var retryMax: Duration = .seconds(30)
    /// How long `close` keeps trying to send what is buffered.
    public var closeTimeout: Duration = .seconds(5)
    /// Whether payloads of one route may be joined into one request body.
    public var concatenate = true

    public init() {}

    /// The keys every network sink accepts for its delivery.
    public static let keys = ["buffer_bytes", "batch_bytes", "flush_interval", "timeout", "retry_initial", "retry_max", "close_timeout"]

    /// Reads the delivery keys of a sink entry; bad values are reported through `d`.
    public static func decode(_ entry: ComponentConfig, _ d: ConfigDecoder, context ctx: String,
                              defaults: DeliveryOptions = DeliveryOptions()) -> DeliveryOptions {
        var o = defaults
        let n = entry.node
        if let v = n["buffer_bytes"] { o.bufferBytes = d.int(v, "'buffer_bytes'", context: ctx, range: 1024...(16 << 30)) ?? o.bufferBytes }
        if let v = n["batch_bytes"] { o.batchBytes = d.int(v, "'batch_bytes'", context: ctx, range: 256...(256 << 20)) ?? o.batchBytes }
        if let v = n["flush_interval"] { o.flushInterval = d.duration(v, "'flush_interval'", context: ctx, minimum: .milliseconds(1)) ?? o.flushInterval }
        if let v = n["timeout"] { o.timeout = d.duration(v, "'timeout'", context: ctx, minimum: .milliseconds(10)) ?? o.timeout }
        if let v = n["retry_initial"] { o.retryInitial = d.duration(v, "'retry_initial'", context: ctx, minimum: .milliseconds(1)) ?? o.retryInitial }
        if let v = n["retry_max"] { o.retryMax = d.duration(v, "'retry_max'", context: ctx, minimum: .milliseconds(1)) ?? o.retryMax }
        if let v = n["close_timeout"] { o.closeTimeout = d.duration(v, "'close_timeout'", context: ctx, minimum: .zero) ?? o.closeTimeout }
        if o.retryMax < o.retryInitial, let v = n["retry_max"] {
            d.fail(v.mark, "'retry_max' \(ctx) is shorter than 'retry_initial' (\(DurationParser.format(o.retryInitial)))")
        }
        if o.batchBytes > o.bufferBytes, let v = n["batch_bytes"] ?? n["buffer_bytes"] {
            d.fail(v.mark, "'batch_bytes' \(ctx) (\(o.batchBytes)) is larger than 'buffer_bytes' (\(o.bufferBytes))")
        }
        return o
    }
}

/// A sink whose output goes through a `Delivery`: the agent reports its health.
public protocol DeliveringSink: DeliveryReporting {
    var deliveries: [Delivery] { get }
}

extension DeliveringSink {
    public var deliveryHealth: [DeliveryHealth] { deliveries.map(\.health) }
    /// Starts the sender threads (a sink made by its factory starts nothing in init).
    public func start() throws { for d in deliveries { d.start() } }
}

/// The delivery core of the network sinks: encoded payloads wait in a
/// bounded byte buffer; one sender thread joins payloads of a route into
/// batches and sends them, retrying passing failures with exponential backoff
/// and full jitter. `enqueue` never blocks: when the buffer is over budget
/// the oldest payloads are dropped, and their points counted.
///
/// Delivery is at-least-once: a batch whose answer was lost (a timeout after
/// the receiver took it) is sent again.
public final class Delivery: @unchecked Sendable {
    public typealias Send = @Sendable (_ route: String, _ body: [UInt8]) -> DeliveryOutcome

    private struct Payload {
        var route: String
        var bytes: [UInt8]
        var points: Int
        var enqueuedNanos: UInt64
    }

    private struct State {
        var queue: [Payload] = []        // a ring would do; payloads are few and large
        var head = 0
        var queuedBytes = 0
        var inFlightBytes = 0
        var queuedPoints = 0
        var inFlightPoints = 0
        var accepted = 0, delivered = 0, dropped = 0, rejected = 0
        var requests = 0, failures = 0
        var state = DeliveryState.healthy
        var failingSince: UInt64?
        var lastError: String?
        var closing = false
        var closeDeadline: UInt64 = 0
        var finished = false

        var count: Int { queue.count - head }

        /// Drops the oldest queued payloads while `over` holds, counting their points.
        mutating func dropOldest(while over: (State) -> Bool) {
            while count > 0 && over(self) {
                let old = popFirst()
                queuedBytes -= old.bytes.count
                queuedPoints -= old.points
                dropped += old.points
            }
        }

        mutating func popFirst() -> Payload {
            let p = queue[head]
            head += 1
            if head > 64 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            return p
        }
    }

    public let name: String
    public let options: DeliveryOptions
    private let send: Send
    private let logger: Logger
    private let cond = NSCondition()
    private var st = State()   // guarded by cond
    private var thread: Thread?

    /// - Parameter name: the sink's name, for logs and health.
    /// - Parameter send: sends one request body to a route; called on the delivery's own thread only.
    /// - Parameter start: start the sender thread now (standalone use); else `start()` does.
    public init(name: String, options: DeliveryOptions, logger: Logger, start: Bool = true, send: @escaping Send) {
        self.name = name
        self.options = options
        self.logger = logger
        self.send = send
        if start { self.start() }
    }

    /// Starts the sender thread (once). Payloads queued before wait for it.
    public func start() {
        cond.lock()
        defer { cond.unlock() }
        guard thread == nil, !st.closing else { return }
        let t = Thread { [self] in self.loop() }
        t.name = "ferret-delivery-\(name)"
        thread = t
        t.start()
    }

    /// Queues an encoded payload of `points` signals for `route`. Never blocks.
    public func enqueue(route: String, _ bytes: [UInt8], points: Int) {
        guard !bytes.isEmpty else { return }
        cond.lock()
        st.accepted += points
        if st.closing {
            st.dropped += points
            cond.unlock()
            return
        }
        st.queue.append(Payload(route: route, bytes: bytes, points: points, enqueuedNanos: Clock.monotonicNanos()))
        st.queuedBytes += bytes.count
        st.queuedPoints += points
        // Drop oldest until within budget (in-flight bytes count but are not dropped).
        let budget = options.bufferBytes
        st.dropOldest { $0.queuedBytes + $0.inFlightBytes > budget }
        cond.signal()
        cond.unlock()
    }

    public var health: DeliveryHealth {
        cond.lock()
        defer { cond.unlock() }
        return DeliveryHealth(route: name, state: st.state, accepted: st.accepted, delivered: st.delivered, dropped: st.dropped,
                              rejected: st.rejected, bufferedPoints: st.queuedPoints + st.inFlightPoints,
                              bufferedBytes: st.queuedBytes + st.inFlightBytes, requests: st.requests, failures: st.failures,
                              lastError: st.lastError)
    }

    /// Stops accepting and keeps sending what is buffered for up to
    /// `options.closeTimeout`; what is left then is counted as dropped.
    public func close() {
        cond.lock()
        if !st.closing {
            st.closing = true
            st.closeDeadline = Clock.monotonicNanos() + UInt64(options.closeTimeout.nanoseconds)
        }
        cond.broadcast()
        // Never started: nothing was sent; what is queued is counted as dropped.
        if thread == nil && !st.finished {
            st.dropped += st.queue.reduce(0) { $0 + $1.points }
            st.queue.removeAll()
            st.queuedBytes = 0
            st.finished = true
        }
        while !st.finished { cond.wait() }
        cond.unlock()
    }

    // MARK: - sender thread

    private func loop() {
        var attempt = 0
        while true {
            cond.lock()
            var batch: [Payload] = []
            while batch.isEmpty {
                let now = Clock.monotonicNanos()
                if st.closing && (st.count == 0 || now >= st.closeDeadline) { break }
                if st.count > 0 {
                    let oldest = st.queue[st.head]
                    let due = oldest.enqueuedNanos + UInt64(options.flushInterval.nanoseconds)
                    if st.closing || now >= due || routeBytes(oldest.route) >= options.batchBytes || !options.concatenate {
                        batch = takeBatch()
                        break
                    }
                    _ = cond.wait(until: Date(timeIntervalSinceNow: Double(due - now) / 1e9))
                } else {
                    cond.wait()
                }
            }
            if batch.isEmpty {
                // Closing: whatever is left could not be sent in time.
                st.dropOldest { _ in true }
                st.finished = true
                cond.broadcast()
                cond.unlock()
                return
            }
            let bytes = batch.reduce(0) { $0 + $1.bytes.count }
            let points = batch.reduce(0) { $0 + $1.points }
            st.inFlightBytes = bytes
            st.inFlightPoints = points
            st.requests += 1
            cond.unlock()

            var body: [UInt8]
            if batch.count == 1 {
                body = batch[0].bytes
            } else {
                body = []
                body.reserveCapacity(bytes)
                for p in batch { body.append(contentsOf: p.bytes) }
            }
            let outcome = send(batch[0].route, body)
            body = []

            cond.lock()
            st.inFlightBytes = 0
            st.inFlightPoints = 0
            var backoff: UInt64 = 0
            switch outcome {
            case .delivered:
                st.delivered += points
                st.state = .healthy
                st.failingSince = nil
                attempt = 0
            case .reject(let why):
                st.rejected += points
                st.lastError = why
                attempt = 0
                logger.error("sink '\(name)': \(points) point(s) refused for good by the receiver: \(why)")
            case .retry(let why):
                st.failures += 1
                st.lastError = why
                let now = Clock.monotonicNanos()
                if st.failingSince == nil {
                    st.failingSince = now
                    logger.warning("sink '\(name)': delivery failing, retrying with backoff: \(why)")
                }
                st.state = now - (st.failingSince ?? now) > 60_000_000_000 ? .down : .retrying
                // Back to the front, in order: it is the oldest and drops first if the budget overflows.
                st.queue.replaceSubrange(st.head..<st.head, with: batch)
                st.queuedBytes += bytes
                st.queuedPoints += points
                let budget = options.bufferBytes
                st.dropOldest { $0.queuedBytes > budget }
                attempt += 1
                let base = min(UInt64(options.retryInitial.nanoseconds) << UInt64(min(attempt - 1, 30)),
                               UInt64(options.retryMax.nanoseconds))
                backoff = UInt64.random(in: base / 2...max(base / 2, base))   // jitter in [base/2, base]
            }
            if backoff > 0 {
                let until = Clock.monotonicNanos() + backoff
                while true {
                    let limit = st.closing ? min(until, st.closeDeadline) : until
                    let now = Clock.monotonicNanos()
                    if now >= limit { break }
                    _ = cond.wait(until: Date(timeIntervalSinceNow: Double(limit - now) / 1e9))
                }
            }
            cond.unlock()
        }
    }

    /// Bytes queued for `route` from the head on (how much a batch could hold now).
    private func routeBytes(_ route: String) -> Int {
        var n = 0
        for i in st.head..<st.queue.count where st.queue[i].route == route {
            n += st.queue[i].bytes.count
            if n >= options.batchBytes { break }
        }
        return n
    }

    /// Takes the oldest payload and, when joining is allowed, later payloads of
    /// its route up to `batchBytes`. Called with the lock held.
    private func takeBatch() -> [Payload] {
        let first = st.popFirst()
        st.queuedBytes -= first.bytes.count
        st.queuedPoints -= first.points
        var batch = [first]
        guard options.concatenate else { return batch }
        var size = first.bytes.count
        var i = st.head
        while i < st.queue.count {
            let p = st.queue[i]
            if p.route == first.route {
                if size + p.bytes.count > options.batchBytes { break }
                batch.append(p)
                size += p.bytes.count
                st.queuedBytes -= p.bytes.count
                st.queuedPoints -= p.points
                st.queue.remove(at: i)
            } else {
                i += 1
            }
        }
        return batch
    }
}
