import CLinuxSupport
import Foundation
import Logging

/// Process exec/exit notifications from the kernel's netlink process
/// connector. Needs CAP_NET_ADMIN; when unavailable, the agent relies on
/// its periodic /proc rescan alone.
public final class ProcessEventWatcher: @unchecked Sendable {
    public enum Change: Sendable {
        /// A new process image (exec) or a new process (fork); `kernelNanos` is CLOCK_MONOTONIC.
        case started(pid: Int32, kernelNanos: UInt64)
        /// A new process by fork: the parent's image, until it execs.
        case forked(pid: Int32, parent: Int32, kernelNanos: UInt64)
        case exited(pid: Int32, exitCode: Int32, kernelNanos: UInt64)
        /// The kernel dropped events: the caller should rescan /proc.
        case overrun
    }

    private let fd: Int32
    private let stopLock = NSLock()
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    /// Opens the connector. Throws a readable reason when the kernel refuses.
    public init() throws {
        let r = ferret_cn_proc_open()
        guard r >= 0 else {
            throw AgentStartError("netlink process connector unavailable: \(String(cString: strerror(-r)))")
        }
        fd = r
    }

    /// Starts a thread that calls `handler` with batches of changes.
    public func start(_ handler: @escaping @Sendable ([Change]) -> Void) {
        let t = Thread { [self] in
            var events = [ferret_proc_event](repeating: ferret_proc_event(), count: 256)
            while !isStopped {
                let n = events.withUnsafeMutableBufferPointer { ferret_cn_proc_read(fd, $0.baseAddress, 256, 200) }
                if n == -ENOBUFS { handler([.overrun]); continue }
                if n < 0 { Thread.sleep(forTimeInterval: 0.1); continue }
                if n == 0 { continue }
                var changes: [Change] = []
                for e in events[0..<Int(n)] {
                    switch e.kind {
                    case Int32(FERRET_PROC_EVENT_EXEC.rawValue):
                        changes.append(.started(pid: e.tgid, kernelNanos: e.timestamp_ns))
                    case Int32(FERRET_PROC_EVENT_FORK.rawValue) where e.pid == e.tgid:
                        changes.append(.forked(pid: e.tgid, parent: e.parent_tgid, kernelNanos: e.timestamp_ns))
                    case Int32(FERRET_PROC_EVENT_EXIT.rawValue) where e.pid == e.tgid:
                        changes.append(.exited(pid: e.tgid, exitCode: e.exit_code, kernelNanos: e.timestamp_ns))
                    default: break
                    }
                }
                if !changes.isEmpty { handler(changes) }
                // Let a burst gather: one wakeup per millisecond at most, not one
                // per event (an exec storm costs a poll, a recv and a wakeup per
                // event otherwise). Adds at most 1 ms to exec-to-attach.
                usleep(1000)
            }
            ferret_cn_proc_close(fd)
            done.signal()
        }
        t.name = "ferret-netlink"
        t.start()
    }

    private var isStopped: Bool {
        stopLock.lock()
        defer { stopLock.unlock() }
        return stopped
    }

    public func stop() {
        stopLock.lock()
        stopped = true
        stopLock.unlock()
        _ = done.wait(timeout: .now() + 2)
    }
}
