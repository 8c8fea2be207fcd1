import Foundation
import Synchronization

/// Keeps signals in memory, for tests and the conformance checker.
public final class MemorySink: Sink, Sendable {
    private let store = Mutex<[Signal]>([])
    private let batches = Atomic<Int>(0)
    /// Artificial delay per batch, to model a slow sink in tests.
    public let delay: Duration

    public init(delay: Duration = .zero) { self.delay = delay }

    public func write(_ batch: [Signal]) throws {
        if delay > .zero { Thread.sleep(forTimeInterval: Double(delay.nanoseconds) / 1e9) }
        store.withLock { $0.append(contentsOf: batch) }
        batches.add(1, ordering: .relaxed)
    }

    /// Batches written so far.
    public var writes: Int { batches.load(ordering: .relaxed) }

    public var signals: [Signal] { store.withLock { $0 } }
    public func removeAll() { store.withLock { $0.removeAll() } }
}
