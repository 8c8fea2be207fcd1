import Foundation

/// A bounded multi-producer, single-consumer queue. Producers do not block
/// (unless they ask to wait for room, with a deadline): what does not fit is
/// refused and the caller counts it. The consumer takes everything queued at
/// once, so the lock is held per batch, not per item.
public final class BoundedQueue<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element] = []
    private var closed = false
    /// Producers waiting for room: the one condition serves them and the
    /// consumer, so with any of them waiting every wakeup is a broadcast.
    private var roomWaiters = 0
    public let capacity: Int
    /// What an empty queue reserves; appends grow it as needed.
    static var reserve: Int { 256 }

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        items.reserveCapacity(min(capacity, Self.reserve))
    }

    /// Appends all of `batch` if it fits; returns false (and appends nothing) if not.
    @discardableResult
    public func offer(_ batch: [Element]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if closed || items.count + batch.count > capacity { return false }
        let wasEmpty = items.isEmpty
        items.append(contentsOf: batch)
        if wasEmpty { wake() }
        return true
    }

    /// Like `offer`, but waits until `deadline` for the consumer to make room.
    /// A batch larger than the capacity is refused at once.
    @discardableResult
    public func offer(_ batch: [Element], waitingUntil deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard batch.count <= capacity else { return false }
        while !closed && items.count + batch.count > capacity {
            roomWaiters += 1
            let woke = condition.wait(until: deadline)
            roomWaiters -= 1
            if !woke { break }
        }
        if closed || items.count + batch.count > capacity { return false }
        let wasEmpty = items.isEmpty
        items.append(contentsOf: batch)
        if wasEmpty { wake() }
        return true
    }

    /// Wakes the consumer (and, if any wait for room, them too: they recheck).
    private func wake() {
        if roomWaiters > 0 { condition.broadcast() } else { condition.signal() }
    }

    @discardableResult
    public func offer(_ element: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if closed || items.count >= capacity { return false }
        items.append(element)
        if items.count == 1 { wake() }
        return true
    }

    /// Waits up to `timeout` for items and returns all that are queued
    /// (possibly none). Returns nil once closed and drained.
    public func drain(timeout: TimeInterval) -> [Element]? {
        condition.lock()
        defer { condition.unlock() }
        if items.isEmpty && !closed {
            _ = condition.wait(until: Date(timeIntervalSinceNow: timeout))
        }
        if items.isEmpty { return closed ? nil : [] }
        // The batch is handed over and a small buffer takes its place: the
        // queue's memory follows what is queued, not its capacity (a queue of
        // 65,536 signals reserved up front is megabytes).
        let out = items
        items = []
        items.reserveCapacity(min(capacity, Self.reserve))
        if roomWaiters > 0 { condition.broadcast() }
        return out
    }

    public var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return items.count
    }

    /// Refuses new items; the consumer drains what is left, then gets nil.
    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
