import FerretTestSupport
import Foundation
import GoTestSupport
@testable import SchedulerPlugin
import XCTest

/// process.syscalls' counter (SchedulerPlugin/SyscallCounter) on the
/// syscaller fixture: the counter is attached first, then the fixture makes a
/// known number of getppid() calls. Needs root (or CAP_PERFMON) and tracefs,
/// as CI has.
final class SyscallCounterTests: XCTestCase {
    /// Per command, the fixture's main thread reads the command and writes the
    /// reply; starting a thread adds clone3, mmap, mprotect, futex, exit, ...
    let margin: UInt64 = 100
    let n: UInt64 = 20_000

    func tracepointID() throws -> UInt64 {
        var mounted = false
        let id = try Tracefs.sysEnterID(mounted: &mounted)
        XCTAssertFalse(mounted, "tracefs is mounted on this machine")
        return id
    }

    func count(_ c: SyscallCounter) throws -> UInt64 {
        switch c.read() {
        case .success(let v): return v
        case .failure(let e): throw e
        }
    }

    /// Delta of the counter over `body`.
    func delta(_ c: SyscallCounter, _ body: () throws -> Void) throws -> UInt64 {
        let before = try count(c)
        try body()
        return try count(c) - before
    }

    func testCountsTheMainThreadsCallsAndNothingElse() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("calls 1") // up and running
        let counter = try SyscallCounter(pid: fixture.pid, tracepointID: try tracepointID())
        XCTAssertEqual(counter.attempts, 1)
        XCTAssertEqual(counter.fds.count, 1, "one event per thread present at attach")
        // The fixture is back in read(0, ...) after its reply (/proc/PID/syscall: "<nr> 0x0 ...").
        #if arch(x86_64)
        let read = "0"  // __NR_read
        #else
        let read = "63"  // __NR_read of the generic table (arm64)
        #endif
        Wait.until("the fixture blocked in read()", timeout: 2, poll: 0.005) {
            let f = ((try? String(contentsOfFile: "/proc/\(fixture.pid)/syscall", encoding: .utf8)) ?? "").split(separator: " ")
            return f.count > 1 && f[0] == read && f[1] == "0x0"
        }

        let idle = try delta(counter) { usleep(200_000) }  // a measurement window, not a wait
        XCTAssertEqual(idle, 0, "blocked in read(): this process only, not the host's other calls")
        let d = try delta(counter) { try fixture.send("calls \(n)") }
        XCTAssertGreaterThanOrEqual(d, n)
        XCTAssertLessThanOrEqual(d, n + margin)
        let d2 = try delta(counter) { try fixture.send("calls \(2 * n)") }
        XCTAssertGreaterThanOrEqual(d2, 2 * n)
        XCTAssertLessThanOrEqual(d2, 2 * n + margin)
    }

    func testCountsThreadsStartedAfterAttach() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("calls 1")
        let counter = try SyscallCounter(pid: fixture.pid, tracepointID: try tracepointID())
        // A new thread makes the calls while the main thread waits in pthread_join.
        let d = try delta(counter) { try fixture.send("thread \(n)") }
        XCTAssertGreaterThanOrEqual(d, n, "a thread started after attach counts through the inherited event")
        XCTAssertLessThanOrEqual(d, n + margin, "and only once")
        // A thread whose creator (itself started after attach) has exited.
        let d2 = try delta(counter) { try fixture.send("nested \(n)") }
        XCTAssertGreaterThanOrEqual(d2, n, "inheritance is transitive and survives the creator")
        XCTAssertLessThanOrEqual(d2, n + margin)
        // A live thread started after attach, parked while we read, then busy.
        let d3 = try delta(counter) {
            try fixture.send("park")
            try fixture.send("wake \(n)")
        }
        XCTAssertGreaterThanOrEqual(d3, n, "a live inherited thread's count is in read() of the parent event")
        XCTAssertLessThanOrEqual(d3, n + margin)
        XCTAssertEqual(counter.fds.count, 1, "threads started later cost no descriptor")
    }

    /// A thread created during attach by a thread whose event is not open yet
    /// inherits nothing: the counter must see it in the second thread listing
    /// and start over, instead of missing its calls.
    func testThreadCreatedDuringAttachIsNotMissed() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("calls 1")
        var parked: Int32 = 0
        let counter = try SyscallCounter(pid: fixture.pid, tracepointID: try tracepointID()) { attempt in
            // After the thread list is read, before any event is open: the
            // uncovered main thread starts a thread.
            if attempt == 1 { parked = Int32((try? fixture.send("park"))?.split(separator: " ").last ?? "") ?? 0 }
        }
        XCTAssertGreaterThan(parked, 0)
        XCTAssertEqual(counter.attempts, 2, "the new thread was seen and the attach redone")
        XCTAssertEqual(counter.fds.count, 2, "both threads have their own event now")
        let d = try delta(counter) { try fixture.send("wake \(n)") }
        XCTAssertGreaterThanOrEqual(d, n)
        XCTAssertLessThanOrEqual(d, n + margin)
    }

    func testGivesUpWhenThreadsKeepAppearing() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("calls 1")
        let before = TestSupport.perfEventFDs(of: getpid())
        XCTAssertThrowsError(try SyscallCounter(pid: fixture.pid, tracepointID: try tracepointID(), maxAttempts: 3) { _ in
            _ = try? fixture.send("park")
        }) { error in
            guard case SyscallCountError.unsettled(let pid, let attempts) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(pid, fixture.pid)
            XCTAssertEqual(attempts, 3)
            XCTAssertTrue("\(error)".contains("pid \(fixture.pid)"), "\(error)")
        }
        XCTAssertEqual(TestSupport.perfEventFDs(of: getpid()), before, "every event of the failed attach is closed")
    }

    func testRefusalsSayWhyAndCloseEverything() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("park") // two threads
        let id = try tracepointID()
        let before = TestSupport.perfEventFDs(of: getpid())

        // Out of descriptors at the second thread: the first event must be closed again.
        let probe = open("/dev/null", O_RDONLY)
        XCTAssertGreaterThanOrEqual(probe, 0)
        close(probe)
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        var low = saved
        low.rlim_cur = rlim_t(probe + 1) // room for exactly one more descriptor
        XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &low), 0)
        let result = Result { try SyscallCounter(pid: fixture.pid, tracepointID: id) }
        XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved), 0)
        XCTAssertThrowsError(try result.get()) { error in
            guard case SyscallCountError.open(let pid, let tid, let e, let threads, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(pid, fixture.pid)
            XCTAssertNotEqual(tid, fixture.pid, "the main thread's event was opened")
            XCTAssertEqual(e, EMFILE)
            XCTAssertEqual(threads, 2)
            XCTAssertTrue("\(error)".contains("pid \(fixture.pid)") && "\(error)".contains("EMFILE (Too many open files)")
                          && "\(error)".contains("RLIMIT_NOFILE soft limit \(probe + 1)"), "\(error)")
        }
        XCTAssertEqual(TestSupport.perfEventFDs(of: getpid()), before, "the events already opened are closed")

        // No tracepoint with this id.
        XCTAssertThrowsError(try SyscallCounter(pid: fixture.pid, tracepointID: 0xFFFF_FFF0)) { error in
            guard case SyscallCountError.open(_, _, let e, _, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EINVAL)
            XCTAssertTrue("\(error)".contains("EINVAL (Invalid argument)"), "\(error)")
        }
        XCTAssertEqual(TestSupport.perfEventFDs(of: getpid()), before)

        // A process that is gone: not a refusal to report.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        XCTAssertThrowsError(try SyscallCounter(pid: gone.processIdentifier, tracepointID: id)) { error in
            guard case SyscallCountError.exited = error else { return XCTFail("\(error)") }
        }
    }

    func testCloseReleasesTheEvents() throws {
        let fixture = try TestSupport.Syscaller()
        try fixture.send("park")
        let before = TestSupport.perfEventFDs(of: getpid())
        let counter = try SyscallCounter(pid: fixture.pid, tracepointID: try tracepointID())
        XCTAssertEqual(TestSupport.perfEventFDs(of: getpid()), before + 2)
        counter.close()
        XCTAssertEqual(TestSupport.perfEventFDs(of: getpid()), before)
        XCTAssertEqual(try count(counter), 0)
        counter.close() // idempotent
    }
}
