import CLinuxSupport
import Foundation
import GoTestSupport
@testable import PerfSampling
import XCTest

extension CPUSamplerTests {
    /// A one-page ring at 1000 Hz with four burning threads and a consumer
    /// that sleeps 300 ms per batch: the kernel drops samples, and says so.
    func testLostSamplesAreCounted() throws {
        let exe = try Fixtures.cc("multi", Self.multiSource)
        let c = Collector(delay: 0.3)
        let sampler = c.sampler(frequencyHz: 1000, ringPages: 1)
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, ["4", "30"])
        defer { Fixtures.kill(pid) }
        try Fixtures.waitForExec(pid, exe)
        Wait.until("the four burning threads", timeout: 2) { (Attachment.threads(of: pid)?.count ?? 0) >= 5 }
        try sampler.start(pid: pid)
        Thread.sleep(forTimeInterval: 2.0)  // a measurement window, not a wait
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        sampler.stop(pid: pid)
        XCTAssertGreaterThan(stats.lost, 0, "\(stats)")
        XCTAssertGreaterThan(stats.samples, 0)
        XCTAssertEqual(stats.fds, 5 * stats.rings + 1)
        // onLost reports every increase, the final drain's included.
        XCTAssertGreaterThanOrEqual(c.lostTotal(pid: pid), stats.lost, "onLost calls")
        print("lost test: \(stats), delivered \(c.samples(pid: pid).count) in \(c.batches) batches")
    }

    /// 100 short-lived processes attached while sampling, half stopped
    /// explicitly and half left to exit: descriptors and mappings back to baseline.
    func testNoDescriptorOrMappingLeaks() throws {
        let exe = try Fixtures.cc("busy", Self.busySource)
        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        // Warm up (drain thread, allocator arenas, Foundation).
        let w = try Fixtures.spawn(exe, ["0.05"])
        try Fixtures.waitForExec(w, exe)
        try sampler.start(pid: w)
        Thread.sleep(forTimeInterval: 0.2)  // a measurement (warm-up) window, not a wait
        Fixtures.reap(w)
        XCTAssert(Wait.until("the warm-up's detach", timeout: 2) { sampler.pids.isEmpty })

        let fds0 = Fixtures.countEntries("/proc/self/fd")
        let maps0 = Fixtures.mapsLines()
        var stopped = 0, leftToExit = 0, exitedDuringAttach = 0
        var reapLater: [pid_t] = []
        for i in 0..<100 {
            let pid = try Fixtures.spawn(exe, ["0.06"])
            try Fixtures.waitForExec(pid, exe)
            do {
                try sampler.start(pid: pid)
                XCTAssertNotNil(sampler.stats(pid: pid))
                if i % 2 == 0 {
                    usleep(20_000)  // a measurement window, not a wait
                    sampler.stop(pid: pid)
                    XCTAssertNil(sampler.stats(pid: pid))
                    stopped += 1
                } else {
                    leftToExit += 1
                }
            } catch {
                // (`catch SamplerError.exited` crashes the Swift 6.3 compiler here.)
                guard case .exited = error else { throw error }
                exitedDuringAttach += 1
            }
            if i % 3 == 0 { Fixtures.reap(pid) }  // the others stay zombies until after the check below
            else { reapLater.append(pid) }
        }
        XCTAssert(Wait.until("every detach", timeout: 5) { sampler.pids.isEmpty }, "still attached: \(sampler.pids)")
        XCTAssertEqual(c.detachedCount, leftToExit + 1, "exits detected (+ warm-up)")
        let fds1 = Fixtures.countEntries("/proc/self/fd")
        let maps1 = Fixtures.mapsLines()
        let perfFDs = Fixtures.fdTargets().filter { $0.contains("perf_event") || $0.contains("pidfd") }
        let perfMaps = Fixtures.mapsLines { $0.contains("perf_event") }
        for pid in reapLater { Fixtures.reap(pid) }
        XCTAssertEqual(fds1, fds0, "descriptors before/after")
        // Other mappings can come and go (malloc arenas, Foundation); allow a little
        // drift there, and none at all for perf rings (below).
        XCTAssertLessThanOrEqual(abs(maps1 - maps0), 2, "mappings before/after")
        XCTAssertEqual(perfFDs, [])
        XCTAssertEqual(perfMaps, 0)
        XCTAssertGreaterThan(c.all.count, 20, "samples were taken")
        print("leak test: \(stopped) stopped, \(leftToExit) exited on their own, \(exitedDuringAttach) exited during attach; fds \(fds0)→\(fds1), maps \(maps0)→\(maps1)")
    }

    /// Refusals name the pid and the errno.
    func testErrorsNameThePid() throws {
        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        // A pid that is free: a reaped child's.
        let exe = try Fixtures.cc("busy", Self.busySource)
        let gone = try Fixtures.spawn(exe, ["0.001"])
        Fixtures.reap(gone)
        XCTAssertThrowsError(try sampler.start(pid: gone)) { e in
            let text = "\(e)"
            XCTAssert(text.contains("pid \(gone)") && text.contains("ESRCH") && text.contains("No such process"), text)
            XCTAssertEqual(e as? SamplerError, .noProcess(pid: gone, errno: ESRCH))
        }
        // A zombie: exited, not reaped.
        let zombie = try Fixtures.spawn(exe, ["0.001"])
        XCTAssert(Wait.until("a zombie", timeout: 2) { (try? String(contentsOfFile: "/proc/\(zombie)/stat", encoding: .utf8))?.contains(") Z ") ?? false })
        XCTAssertThrowsError(try sampler.start(pid: zombie)) { e in
            XCTAssertEqual(e as? SamplerError, .exited(pid: zombie))
            XCTAssert("\(e)".contains("pid \(zombie)"))
        }
        Fixtures.reap(zombie)
        // Settings outside the supported range.
        let bad = CPUSampler(frequencyHz: 5000, onSamples: { _ in })
        XCTAssertThrowsError(try bad.start(pid: getpid())) { e in
            XCTAssert("\(e)".contains("pid \(getpid())") && "\(e)".contains("5000"), "\(e)")
        }
        let badRing = CPUSampler(ringPages: 3, onSamples: { _ in })
        XCTAssertThrowsError(try badRing.start(pid: getpid()))
        for (stack, ring, words) in [(12, 16, "stackBytes 12"), (65536, 16, "stackBytes 65536"), (32768, 4, "fewer than 2 samples")] {
            let badStack = CPUSampler(ringPages: ring, stackBytes: stack, onSamples: { _ in })
            XCTAssertThrowsError(try badStack.start(pid: getpid())) { e in
                XCTAssert("\(e)".contains(words) && "\(e)".contains("pid \(getpid())"), "\(e)")
            }
        }
        XCTAssertEqual(sampler.pids, [])
        // The kernel's refusal, formatted: EMFILE with the thread and CPU counts.
        let open = SamplerError.open(pid: 42, tid: 43, cpu: 1, errno: EMFILE, threads: 7, cpus: 2, fdLimit: 1024)
        XCTAssert("\(open)".contains("pid 42 thread 43 cpu 1") && "\(open)".contains("EMFILE") && "\(open)".contains("7 threads × 2 CPUs"), "\(open)")
        XCTAssert("\(SamplerError.open(pid: 42, tid: 42, cpu: 0, errno: EACCES, threads: 1, cpus: 1, fdLimit: 1))".contains("perf_event_paranoid"))
    }

    /// Sampling does not stop with the drain thread blocked; `shutdown` releases everything.
    func testShutdownReleasesEverything() throws {
        let exe = try Fixtures.cc("multi", Self.multiSource)
        let fds0 = Fixtures.countEntries("/proc/self/fd")
        let c = Collector()
        var sampler: CPUSampler? = c.sampler()
        let pids = try (0..<3).map { _ in try Fixtures.spawn(exe, ["2", "5"]) }
        defer { for pid in pids { Fixtures.kill(pid) } }
        for pid in pids {
            try Fixtures.waitForExec(pid, exe)
            try sampler!.start(pid: pid)
        }
        Thread.sleep(forTimeInterval: 1.0)  // a measurement window, not a wait
        XCTAssertEqual(sampler!.pids, pids.sorted())
        let before = pids.map { sampler!.stats(pid: $0)?.samples ?? 0 }
        sampler!.shutdown()
        XCTAssertEqual(sampler!.pids, [])
        XCTAssertThrowsError(try sampler!.start(pid: pids[0])) { e in
            XCTAssertEqual(e as? SamplerError, .shutDown(pid: pids[0]))
        }
        // 6 burning threads on the machine's CPUs for 1 s: ~99 × CPUs / 3 each;
        // shutdown delivered at least what had been counted before it.
        XCTAssertGreaterThan(c.all.count, 10, "samples were taken")
        for (pid, n) in zip(pids, before) {
            XCTAssertGreaterThanOrEqual(UInt64(c.samples(pid: pid).count), n)
        }
        sampler = nil
        XCTAssertEqual(Fixtures.countEntries("/proc/self/fd"), fds0)
        XCTAssertEqual(Fixtures.mapsLines { $0.contains("perf_event") }, 0)
    }
}
