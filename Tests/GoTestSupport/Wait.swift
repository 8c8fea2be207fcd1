import Foundation

/// The one way a test waits for something to happen: a deadline and a
/// condition, polled. Tests wait on the thing itself (the attach event, the
/// file, the line) instead of sleeping a fixed time and hoping it happened.
///
/// The deadline is measured on a monotonic clock, the condition is checked
/// first (no wait when it already holds) and once more at the deadline (a
/// condition that becomes true during the last poll interval still counts).
/// The condition may have side effects, e.g. read what a pipe has so far.
/// Nothing here asserts on how long the wait took.
///
///     Wait.until("the sampler detached", timeout: 2) { sampler.pids.isEmpty }
///     try Wait.for("the ready line", timeout: 10) { output.contains("ready") }
///     let port = try Wait.value("the listener's port", timeout: 5) { server.port }
public enum Wait {
    /// A wait whose condition did not hold by its deadline.
    public struct Timeout: Error, CustomStringConvertible {
        public let description: String
    }

    /// Polls `condition` every `poll` seconds until it holds or `timeout`
    /// seconds have passed. Returns whether it held; `what` only documents the
    /// call. An error the condition throws ends the wait and is rethrown.
    /// `poll: 0` is for a condition that blocks by itself (a poll(2) with a
    /// timeout): it is called again at once.
    @discardableResult
    public static func until(
        _ what: String = "", timeout: Double, poll: Double = 0.02, _ condition: () throws -> Bool
    ) rethrows -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(max(timeout, 0)))
        while true {
            if try condition() { return true }
            let left = clock.now.duration(to: deadline)
            if left <= .zero { return false }
            guard poll > 0 else { continue }
            let seconds = Double(left.components.seconds) + Double(left.components.attoseconds) * 1e-18
            usleep(useconds_t(max(min(poll, seconds), 0.000_1) * 1_000_000))
        }
    }

    /// Like `until`, but a timeout throws `Wait.Timeout` naming `what`.
    public static func `for`(
        _ what: String, timeout: Double, poll: Double = 0.02, _ condition: () throws -> Bool
    ) throws {
        guard try until(what, timeout: timeout, poll: poll, condition) else {
            throw Timeout(description: "timed out after \(timeout) s waiting for \(what)")
        }
    }

    /// Polls `produce` until it returns a value and returns that value; a
    /// timeout throws `Wait.Timeout` naming `what`. Give the closure its return
    /// type (`{ () -> Int? in ... }`) where nothing else fixes `T`: else `T` can
    /// be inferred as an optional itself, and the first `nil` counts as a value.
    public static func value<T>(
        _ what: String, timeout: Double, poll: Double = 0.02, _ produce: () throws -> T?
    ) throws -> T {
        var result: T?
        try `for`(what, timeout: timeout, poll: poll) {
            result = try produce()
            return result != nil
        }
        return result!
    }
}
