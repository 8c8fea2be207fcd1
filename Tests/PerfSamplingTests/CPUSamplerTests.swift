import CLinuxSupport
import Foundation
@testable import PerfSampling
import XCTest

/// The sampling engine against real processes (needs root or CAP_PERFMON,
/// and perf events in the kernel). Fixtures are compiled with `cc` at test time.
final class CPUSamplerTests: XCTestCase {
    // MARK: Fixtures

    /// Burns in busy_loop (called from main) for argv[1] seconds (default 3).
    static let busySource = #"""
    #include <signal.h>
    #include <stdlib.h>
    #include <sys/time.h>
    static volatile sig_atomic_t done;
    static void on_alarm(int s) { (void)s; done = 1; }
    __attribute__((noinline)) unsigned long busy_loop(void) {
        unsigned long x = 1;
        while (!done) x = x * 6364136223846793005UL + 1442695040888963407UL;
        return x;
    }
    int main(int argc, char **argv) {
        double secs = argc > 1 ? atof(argv[1]) : 3;
        struct itimerval it = {{0, 0}, {(long)secs, (long)((secs - (long)secs) * 1e6)}};
        signal(SIGALRM, on_alarm);
        setitimer(ITIMER_REAL, &it, 0);
        return (int)(busy_loop() & 0);
    }
    """#

    /// Sleeps 500 ms, then starts thread A; A burns 400 ms and starts thread B;
    /// both burn until 2 s after start. Writes "A tid" and "B tid" to argv[1].
    static let lateThreadsSource = #"""
    #define _GNU_SOURCE
    #include <pthread.h>
    #include <stdio.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    static double end_at;
    static FILE *out;
    static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
    __attribute__((noinline)) static void burn_until(double t) {
        while (now() < t) for (volatile int i = 0; i < 100000; i++) {}
    }
    static long cpu_ms(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1000 + t.tv_nsec / 1000000; }
    static void *thread_b(void *a) {
        (void)a;
        fprintf(out, "B %ld\n", (long)syscall(SYS_gettid)); fflush(out);
        burn_until(end_at);
        fprintf(out, "Bcpu %ld\n", cpu_ms()); fflush(out);
        return NULL;
    }
    static void *thread_a(void *a) {
        (void)a;
        fprintf(out, "A %ld\n", (long)syscall(SYS_gettid)); fflush(out);
        burn_until(now() + 0.4);
        pthread_t b; pthread_create(&b, NULL, thread_b, NULL);
        burn_until(end_at);
        fprintf(out, "Acpu %ld\n", cpu_ms()); fflush(out);
        pthread_join(b, NULL);
        return NULL;
    }
    int main(int argc, char **argv) {
        out = fopen(argv[1], "w");
        end_at = now() + 2.0;
        usleep(500000);
        pthread_t a; pthread_create(&a, NULL, thread_a, NULL);
        pthread_join(a, NULL);
        fclose(out);
        return 0;
    }
    """#

    /// main starts A and leaves (pthread_exit) after 300 ms; A starts B at
    /// 600 ms and returns; B burns until 2 s and writes its tid to argv[1].
    static let exitingThreadsSource = #"""
    #define _GNU_SOURCE
    #include <pthread.h>
    #include <stdio.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    static double start, end_at;
    static const char *path;
    static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
    __attribute__((noinline)) static void burn_until(double t) {
        while (now() < t) for (volatile int i = 0; i < 100000; i++) {}
    }
    static void *thread_b(void *a) {
        (void)a;
        FILE *f = fopen(path, "w"); fprintf(f, "%ld\n", (long)syscall(SYS_gettid)); fclose(f);
        burn_until(end_at);
        return NULL;
    }
    static void *thread_a(void *a) {
        (void)a;
        burn_until(start + 0.6);
        pthread_t b; pthread_create(&b, NULL, thread_b, NULL); pthread_detach(b);
        return NULL;
    }
    int main(int argc, char **argv) {
        (void)argc;
        path = argv[1];
        start = now(); end_at = start + 2.0;
        pthread_t a; pthread_create(&a, NULL, thread_a, NULL); pthread_detach(a);
        usleep(300000);
        pthread_exit(NULL);
    }
    """#

    /// argv[1] threads burning for argv[2] seconds.
    static let multiSource = #"""
    #include <pthread.h>
    #include <stdlib.h>
    #include <time.h>
    static double end_at;
    static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
    __attribute__((noinline)) static void *burn(void *a) {
        (void)a;
        while (now() < end_at) for (volatile int i = 0; i < 100000; i++) {}
        return NULL;
    }
    int main(int argc, char **argv) {
        int n = argc > 1 ? atoi(argv[1]) : 4;
        end_at = now() + (argc > 2 ? atof(argv[2]) : 2);
        pthread_t t[64];
        for (int i = 0; i < n && i < 64; i++) pthread_create(&t[i], NULL, burn, NULL);
        for (int i = 0; i < n && i < 64; i++) pthread_join(t[i], NULL);
        return 0;
    }
    """#

    /// Reads /dev/zero in 64 KiB blocks for argv[1] seconds: mostly kernel time.
    static let syscallsSource = #"""
    #include <fcntl.h>
    #include <stdlib.h>
    #include <time.h>
    #include <unistd.h>
    static char buf[1 << 16];
    static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
    __attribute__((noinline)) static void reader(int fd, double end_at) {
        while (now() < end_at) for (int i = 0; i < 100; i++) if (read(fd, buf, sizeof buf) < 0) return;
    }
    int main(int argc, char **argv) {
        int fd = open("/dev/zero", O_RDONLY);
        reader(fd, now() + (argc > 1 ? atof(argv[1]) : 2));
        return 0;
    }
    """#

    /// Starts a burning thread for each byte read from stdin; exits at EOF.
    static let onDemandSource = #"""
    #include <pthread.h>
    #include <unistd.h>
    static void *burn(void *a) { (void)a; for (;;) for (volatile int i = 0; i < 100000; i++) {} return NULL; }
    int main(void) {
        char c;
        while (read(0, &c, 1) == 1) { pthread_t t; pthread_create(&t, NULL, burn, NULL); }
        return 0;
    }
    """#

    // MARK: Helpers

    /// How many samples `cpu` seconds at `hz` should give, and whether `n` is within 20% (+5) of it.
    func assertRate(_ n: Int, cpu: Double, hz: Int, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let expected = cpu * Double(hz)
        XCTAssert(abs(Double(n) - expected) <= 0.2 * expected + 5,
                  "\(what): \(n) samples for \(String(format: "%.2f", cpu)) s of CPU at \(hz) Hz (expected ~\(Int(expected)))",
                  file: file, line: line)
    }

    func waitUntil(_ seconds: TimeInterval, _ cond: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if cond() { return true }
            usleep(10_000)
        }
        return cond()
    }

    // MARK: Tests

    /// 99 Hz on a busy loop for 2 s: ~198 samples, leaf IPs in busy_loop, the
    /// next frame in main, timestamps on CLOCK_MONOTONIC, one ring per CPU.
    func testBusyLoopSamplesAtFrequencyWithCallchains() throws {
        let exe = try Fixtures.cc("busy", Self.busySource)
        let busy = try Fixtures.symbol("busy_loop", in: exe)
        let main = try Fixtures.symbol("main", in: exe)
        let c = Collector()
        let sampler = c.sampler(frequencyHz: 99)
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, ["4"])
        defer { Fixtures.kill(pid) }
        try Fixtures.waitForExec(pid, exe)
        let bias = try Fixtures.loadBias(pid, exe, pie: true)

        let t0 = Fixtures.monotonicNanos()
        let cpu0 = Fixtures.cpuSeconds(pid) ?? 0
        try sampler.start(pid: pid)
        Thread.sleep(forTimeInterval: 2.0)
        let cpu1 = Fixtures.cpuSeconds(pid) ?? 0
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        sampler.stop(pid: pid)
        let t1 = Fixtures.monotonicNanos()
        XCTAssertNil(sampler.stats(pid: pid))

        let samples = c.samples(pid: pid)
        assertRate(samples.count, cpu: cpu1 - cpu0, hz: 99, "busy loop")
        // The rate follows the CPU the loop got (checked above); on a quiet machine
        // that is the whole 2 s (~198 samples), on a busy one less.
        XCTAssertGreaterThan(samples.count, 20, "\(samples.count) samples in 2 s at 99 Hz")
        let cpus = Attachment.onlineCPUs().count
        XCTAssertEqual(stats.rings, cpus)
        XCTAssertEqual(stats.fds, cpus + 1)  // one thread × CPUs + pidfd
        XCTAssertEqual(stats.lost, 0)

        let inBusy = samples.filter { $0.userStack.first.map { busy.contains($0 &- bias) } ?? false }
        XCTAssertGreaterThanOrEqual(Double(inBusy.count), 0.95 * Double(samples.count),
                                    "leaf IPs in busy_loop [\(busy)] + \(String(bias, radix: 16))")
        let fromMain = samples.filter { $0.userStack.count >= 2 && main.contains($0.userStack[1] &- bias) }
        XCTAssertGreaterThanOrEqual(Double(fromMain.count), 0.9 * Double(samples.count), "busy_loop → main callchains")
        for s in samples {
            XCTAssertEqual(s.tid, pid)
            XCTAssert(s.kernelStack.isEmpty)
            XCTAssert((t0...t1).contains(s.timeNanos), "time \(s.timeNanos) outside [\(t0), \(t1)]")
            XCTAssertEqual(s.periodNanos, 1_000_000_000 / 99)
        }
    }

    /// A thread started 500 ms after attach, and a thread that one starts, are sampled.
    func testThreadsStartedAfterAttachAreSampled() throws {
        let exe = try Fixtures.cc("late_threads", Self.lateThreadsSource)
        let tidFile = Fixtures.dir + "/late-tids-\(UInt32.random(in: 0...UInt32.max))"
        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, [tidFile])
        try Fixtures.waitForExec(pid, exe)
        try sampler.start(pid: pid)
        XCTAssertEqual(Attachment.threads(of: pid)?.count, 1, "attached before the threads started")
        Fixtures.reap(pid)
        XCTAssert(waitUntil(2) { sampler.stats(pid: pid) == nil }, "exit detected")

        var tids: [String: Int32] = [:]
        for line in try String(contentsOfFile: tidFile, encoding: .utf8).split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2 { tids[String(f[0])] = Int32(f[1]) }
        }
        let a = try XCTUnwrap(tids["A"]), b = try XCTUnwrap(tids["B"])
        let samples = c.samples(pid: pid)
        let perTid = Dictionary(grouping: samples, by: \.tid).mapValues(\.count)
        // A burns ~1.5 s, B ~1.1 s of wall time; on a busy machine they get less CPU.
        // Samples follow CPU time (99 per CPU-second), which each thread reports.
        let cpuA = Double(tids["Acpu"] ?? 0) / 1000, cpuB = Double(tids["Bcpu"] ?? 0) / 1000
        XCTAssertGreaterThan(cpuA, 0.2, "thread A ran")
        XCTAssertGreaterThan(cpuB, 0.2, "thread B ran")
        XCTAssertEqual(Double(perTid[a] ?? 0), cpuA * 99, accuracy: max(10, cpuA * 99 * 0.25),
                       "thread A (created after attach), \(cpuA) s CPU: \(perTid)")
        XCTAssertEqual(Double(perTid[b] ?? 0), cpuB * 99, accuracy: max(10, cpuB * 99 * 0.25),
                       "thread B (created by A), \(cpuB) s CPU: \(perTid)")
        let detach = try XCTUnwrap(c.detachStats(pid: pid))
        XCTAssertEqual(detach.samples, UInt64(samples.count))
    }

    /// Threads exiting under the sampler: the leader (whose events own the
    /// rings, now POLLHUP) leaves first, then thread A, which has started B.
    /// B is sampled through A's inherited events after A is gone (so A's
    /// events must stay open), and the drain thread does not spin on the
    /// hung-up ring fds.
    func testThreadsOfExitedThreadsStaySampled() throws {
        let exe = try Fixtures.cc("exiting_threads", Self.exitingThreadsSource)
        let tidFile = Fixtures.dir + "/exiting-tid-\(UInt32.random(in: 0...UInt32.max))"
        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, [tidFile])
        defer { Fixtures.kill(pid) }
        try Fixtures.waitForExec(pid, exe)
        XCTAssert(waitUntil(1) { Attachment.threads(of: pid)?.count == 2 })
        try sampler.start(pid: pid)
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        XCTAssertEqual(stats.fds, 2 * stats.rings + 1, "leader and A")
        let wakeups0 = sampler.drainWakeups
        XCTAssert(waitUntil(4) { sampler.stats(pid: pid) == nil }, "exit of the last thread detected")
        let wakeups = sampler.drainWakeups - wakeups0
        let b = try XCTUnwrap(Int32(try String(contentsOfFile: tidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let fromB = c.samples(pid: pid).filter { $0.tid == b }
        // B burns ~1.4 s, alone after A's exit: ~138 samples at 99 Hz.
        XCTAssertGreaterThan(fromB.count, 100, "samples of B")
        // ~10 periodic wakeups a second plus watermarks; a spin would be thousands.
        XCTAssertLessThan(wakeups, 60, "drain thread wakeups in ~2 s")
        print("exiting threads: \(fromB.count) samples of B, \(wakeups) drain wakeups")
    }

    /// A thread created between the thread listing and the opening of the
    /// events makes the attach start over; that thread is then sampled.
    func testThreadCreatedDuringAttachIsCovered() throws {
        let exe = try Fixtures.cc("on_demand", Self.onDemandSource)
        var p: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&p), 0)
        let writeFD = p[1]
        let pid = try Fixtures.spawn(exe, stdinFD: p[0])
        close(p[0])
        defer {
            close(writeFD)  // EOF: the fixture exits
            Fixtures.kill(pid)
        }
        try Fixtures.waitForExec(pid, exe)
        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        sampler.attachHook = { attempt in
            guard attempt == 1 else { return }
            var byte: UInt8 = 1
            _ = write(writeFD, &byte, 1)
            _ = self.waitUntil(2) { (Attachment.threads(of: pid)?.count ?? 0) >= 2 }
        }
        try sampler.start(pid: pid)
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        XCTAssertEqual(stats.attachAttempts, 2)
        XCTAssertEqual(stats.fds, 2 * stats.rings + 1)
        Thread.sleep(forTimeInterval: 0.5)
        sampler.stop(pid: pid)
        let burner = try XCTUnwrap(Attachment.threads(of: pid)?.first { $0 != pid })
        XCTAssertGreaterThan(c.samples(pid: pid).filter { $0.tid == burner }.count, 25)
    }

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
        _ = waitUntil(2) { (Attachment.threads(of: pid)?.count ?? 0) >= 5 }
        try sampler.start(pid: pid)
        Thread.sleep(forTimeInterval: 2.0)
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
        Thread.sleep(forTimeInterval: 0.2)
        Fixtures.reap(w)
        XCTAssert(waitUntil(2) { sampler.pids.isEmpty })

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
                    usleep(20_000)
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
        XCTAssert(waitUntil(5) { sampler.pids.isEmpty }, "still attached: \(sampler.pids)")
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
        XCTAssert(waitUntil(2) { (try? String(contentsOfFile: "/proc/\(zombie)/stat", encoding: .utf8))?.contains(") Z ") ?? false })
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
        Thread.sleep(forTimeInterval: 1.0)
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

    /// Time in system calls is sampled even without kernel frames (samples ≈
    /// utime + stime); with includeKernel the samples carry kernel frames too.
    func testKernelTimeAndKernelFrames() throws {
        let exe = try Fixtures.cc("syscalls", Self.syscallsSource)
        let main = try Fixtures.symbol("main", in: exe)
        for includeKernel in [false, true] {
            let c = Collector()
            let sampler = c.sampler(includeKernel: includeKernel)
            defer { sampler.shutdown() }
            let pid = try Fixtures.spawn(exe, ["4"])
            defer { Fixtures.kill(pid) }
            try Fixtures.waitForExec(pid, exe)
            let bias = try Fixtures.loadBias(pid, exe, pie: true)
            let cpu0 = Fixtures.cpuSeconds(pid) ?? 0
            try sampler.start(pid: pid)
            Thread.sleep(forTimeInterval: 1.5)
            let cpu1 = Fixtures.cpuSeconds(pid) ?? 0
            sampler.stop(pid: pid)
            let samples = c.samples(pid: pid)
            assertRate(samples.count, cpu: cpu1 - cpu0, hz: 99, "syscall loop, includeKernel \(includeKernel)")
            // The user stack of a sample in read(2) leads back to main. (Not through
            // reader(): libc's read() wrapper keeps no frame pointer, so the walk
            // goes from its IP straight to reader's caller.)
            let viaMain = samples.filter { $0.userStack.count >= 2 && $0.userStack.contains { main.contains($0 &- bias) } }
            XCTAssertGreaterThanOrEqual(Double(viaMain.count), 0.8 * Double(samples.count), "user stacks through main()")
            let withKernel = samples.filter { !$0.kernelStack.isEmpty }
            if includeKernel {
                XCTAssertGreaterThanOrEqual(Double(withKernel.count), 0.5 * Double(samples.count), "samples in the kernel")
                for s in withKernel {
                    XCTAssert(s.kernelStack.allSatisfy { $0 >= 0xffff_8000_0000_0000 }, "kernel addresses \(s.kernelStack)")
                    XCTAssert(s.userStack.allSatisfy { $0 < 0x0000_8000_0000_0000 }, "user addresses \(s.userStack)")
                }
            } else {
                XCTAssertEqual(withKernel.count, 0)
            }
        }
    }

    /// A Go program: the kernel's frame-pointer walk gets through Go stacks
    /// (Go >= 1.12 keeps frame pointers): burn ← main.main ← runtime.main.
    func testGoCallchainsWalkFramePointers() throws {
        let go = "/usr/lib/go-1.19/bin/go"
        guard FileManager.default.isExecutableFile(atPath: go) else { throw XCTSkip("no \(go)") }
        let dir = Fixtures.dir + "/goburn"
        try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
        try Self.goSource.write(toFile: dir + "/main.go", atomically: true, encoding: .utf8)
        try "module burn\n\ngo 1.19\n".write(toFile: dir + "/go.mod", atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = dir + "/home"
        env["GOCACHE"] = dir + "/home/cache"
        env["GOPATH"] = dir + "/home/gopath"
        env["GOTOOLCHAIN"] = "local"
        env["GOFLAGS"] = "-mod=mod"
        env["GOPROXY"] = "off"
        let exe = dir + "/burn"
        let (status, out) = try Fixtures.run(go, ["build", "-o", exe, "."], cwd: dir, env: env)
        XCTAssertEqual(status, 0, out)
        guard status == 0 else { return }
        let burn = try Fixtures.symbol("main.burn", in: exe)
        let main = try Fixtures.symbol("main.main", in: exe)
        let runtimeMain = try Fixtures.symbol("runtime.main", in: exe)

        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, ["4s"])
        defer { Fixtures.kill(pid) }
        try Fixtures.waitForExec(pid, exe)
        let cpu0 = Fixtures.cpuSeconds(pid) ?? 0
        try sampler.start(pid: pid)
        Thread.sleep(forTimeInterval: 2.0)
        let cpu1 = Fixtures.cpuSeconds(pid) ?? 0
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        sampler.stop(pid: pid)
        let samples = c.samples(pid: pid)
        assertRate(samples.count, cpu: cpu1 - cpu0, hz: 99, "Go busy loop")
        XCTAssertEqual(stats.lost, 0)
        // Not PIE: symbol values are addresses.
        let inBurn = samples.filter { $0.userStack.first.map(burn.contains) ?? false }
        XCTAssertGreaterThanOrEqual(Double(inBurn.count), 0.9 * Double(samples.count), "leaf in main.burn")
        let deep = inBurn.filter { s in
            s.userStack.count >= 3 && s.userStack.contains(where: main.contains) && s.userStack.contains(where: runtimeMain.contains)
        }
        XCTAssertGreaterThanOrEqual(Double(deep.count), 0.9 * Double(inBurn.count),
                                    "main.burn … main.main … runtime.main; e.g. \(inBurn.first.map { $0.userStack.map { String($0, radix: 16) } } ?? [])")
        print("Go: \(samples.count) samples, stack of one: \(inBurn.first?.userStack.map { String($0, radix: 16) } ?? [])")
    }

    static let goSource = """
    package main

    import (
    \t"os"
    \t"time"
    )

    var sink int

    //go:noinline
    func burn(n int) int {
    \tx := 0
    \tfor i := 0; i < n; i++ {
    \t\tx += i ^ (x >> 3)
    \t}
    \treturn x
    }

    //go:noinline
    func work(rounds int) int {
    \ts := 0
    \tfor r := 0; r < rounds; r++ {
    \t\ts += burn(1 << 16)
    \t}
    \treturn s
    }

    func main() {
    \td := 3 * time.Second
    \tif len(os.Args) > 1 {
    \t\tif v, err := time.ParseDuration(os.Args[1]); err == nil {
    \t\t\td = v
    \t\t}
    \t}
    \tend := time.Now().Add(d)
    \tfor time.Now().Before(end) {
    \t\tsink += work(100)
    \t}
    \tif sink == 42 {
    \t\tos.Exit(3)
    \t}
    }
    """

    /// The ring parser on a hand-made ring: a sample that wraps around the
    /// end, callchain markers split into kernel and user frames, LOST and
    /// THROTTLE records counted, data_tail advanced.
    func testRingParserHandlesWrapAndMarkers() throws {
        let ring = HandMadeRing()
        defer { withExtendedLifetime(ring) {} }  // `mem` is used after the last use of `ring`
        let mem = ring.mem, data = ring.data, dataSize = ring.dataSize
        var words: [UInt64] = []
        func header(_ type: UInt32, misc: UInt16, words n: Int) -> UInt64 {
            UInt64(type) | UInt64(misc) << 32 | UInt64(n * 8) << 48
        }
        let kernelMarker = UInt64(bitPattern: -128), userMarker = UInt64(bitPattern: -512)
        let chain: [UInt64] = [kernelMarker, 0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, userMarker, 0x401000, 0x401100, 0x401200]
        // PERF_RECORD_SAMPLE (9): ip, pid|tid, time, period, nr, ips
        words += [header(9, misc: 1, words: 6 + chain.count), 0xffff_ffff_8100_0010, UInt64(77) | UInt64(78) << 32, 123_456, 10_101_010, UInt64(chain.count)] + chain
        // PERF_RECORD_LOST (2): id, lost
        words += [header(2, misc: 0, words: 3), 5, 17]
        // PERF_RECORD_THROTTLE (5): time, id, stream_id
        words += [header(5, misc: 0, words: 4), 1, 2, 3]
        // A user-mode sample with no callchain
        words += [header(9, misc: 2, words: 6), 0x402000, UInt64(77) | UInt64(79) << 32, 123_999, 10_101_010, 0]
        // Start 3 words before the end of the data area, two laps in.
        let tail = UInt64(2 * dataSize - 24)
        let head = ring.write(words, tail: tail)

        let samples = UnsafeMutablePointer<ferret_perf_sample>.allocate(capacity: 8)
        let frames = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        defer { samples.deallocate(); frames.deallocate() }
        var d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 0)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head, "data_tail advanced to data_head")
        XCTAssertEqual(d.sample_count, 2)
        XCTAssertEqual(d.lost, 17)
        XCTAssertEqual(d.throttled, 1)
        XCTAssertEqual(d.malformed, 0)
        let s = samples[0]
        XCTAssertEqual(s.pid, 77); XCTAssertEqual(s.tid, 78)
        XCTAssertEqual(s.time_ns, 123_456); XCTAssertEqual(s.period, 10_101_010)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(s.kernel_start), count: Int(s.kernel_count))),
                       [0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(s.user_start), count: Int(s.user_count))),
                       [0x401000, 0x401100, 0x401200])
        XCTAssertEqual(samples[1].tid, 79)
        XCTAssertEqual(samples[1].user_count, 0)

        // Out of room: the second sample stays in the ring for the next call.
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 1; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 1)
        XCTAssertEqual(d.sample_count, 1)
        d.sample_count = 0; d.frame_count = 0
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 0)
        XCTAssertEqual(d.sample_count, 1)
        XCTAssertEqual(samples[0].tid, 79)
        XCTAssertEqual(d.lost, 17)

        // A corrupt header (size 0) drops the rest rather than loop.
        data.storeBytes(of: UInt64(9), toByteOffset: Int(tail) & (dataSize - 1), as: UInt64.self)
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), -EPROTO)
        XCTAssertEqual(d.malformed, 1)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head)
    }

    /// Records with user registers and a stack copy (PERF_SAMPLE_REGS_USER,
    /// PERF_SAMPLE_STACK_USER) on a hand-made ring, the copy wrapping around the
    /// end: registers in bit order (BP, SP, IP), only `dyn_size` bytes kept, a
    /// sample taken with no user registers (abi 0) keeps its callchain alone, and
    /// a full stack buffer leaves the record for the next call.
    func testRingParserReadsRegistersAndStackCopy() throws {
        let ring = HandMadeRing()
        defer { withExtendedLifetime(ring) {} }  // `mem` is used after the last use of `ring`
        let mem = ring.mem
        func header(_ n: Int, misc: UInt16 = 2) -> UInt64 { 9 | UInt64(misc) << 32 | UInt64(n * 8) << 48 }
        let userMarker = UInt64(bitPattern: -512)
        let stackBytes = 64  // the size asked for; the second record's copy is 40 bytes deep (dyn_size)
        let stackWords: [UInt64] = (0..<8).map { 0x1111_0000 + UInt64($0) }
        var words: [UInt64] = []
        // ip, pid|tid, time, period, nr, ips; abi, bp, sp, ip; size, data[64], dyn_size
        let chain: [UInt64] = [userMarker, 0x401000, 0x401100]
        var body: [UInt64] = [0x401000, UInt64(7) | UInt64(8) << 32, 1, 2, UInt64(chain.count)] + chain
        body += [2 /* PERF_SAMPLE_REGS_ABI_64 */, 0x7ff0_0040, 0x7ff0_0000, 0x401000]
        body += [UInt64(stackBytes)] + stackWords + [UInt64(stackBytes)]
        words += [header(1 + body.count)] + body
        var second = body
        second[1] = UInt64(7) | UInt64(9) << 32
        second[second.count - 1] = 40
        words += [header(1 + second.count)] + second
        // abi 0 (a kernel thread, no user registers): no registers, and size 0 (no data, no dyn_size).
        let third: [UInt64] = [0xffff_ffff_8100_0000, UInt64(7) | UInt64(10) << 32, 3, 4, 0, 0, 0]
        words += [header(1 + third.count, misc: 1)] + third
        let tail = UInt64(2 * ring.dataSize - 8 * 20)  // the first record's copy wraps around the end
        let head = ring.write(words, tail: tail)

        let samples = UnsafeMutablePointer<ferret_perf_sample>.allocate(capacity: 8)
        let frames = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        let stack = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        defer { samples.deallocate(); frames.deallocate(); stack.deallocate() }
        func drain(stackCapacity: UInt32) -> (Int32, ferret_perf_drain) {
            var d = ferret_perf_drain()
            d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
            d.stack_bytes = UInt32(stackBytes); d.stack = stack; d.stack_capacity = stackCapacity
            return (ferret_perf_ring_drain(mem, &d), d)
        }
        var (r, d) = drain(stackCapacity: 256)
        XCTAssertEqual(r, 0)
        XCTAssertEqual(d.sample_count, 3)
        XCTAssertEqual(d.malformed, 0)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head)
        let a = samples[0], b = samples[1], c = samples[2]
        XCTAssertEqual(a.has_regs, 1)
        XCTAssertEqual([a.user_bp, a.user_sp, a.user_ip], [0x7ff0_0040, 0x7ff0_0000, 0x401000])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(a.user_start), count: Int(a.user_count))), [0x401000, 0x401100])
        func copied(_ s: ferret_perf_sample) -> [UInt64] {
            (0..<Int(s.stack_len) / 8).map { UnsafeRawPointer(stack + Int(s.stack_start)).loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self) }
        }
        XCTAssertEqual(copied(a), stackWords)
        XCTAssertEqual(b.tid, 9)
        XCTAssertEqual(copied(b), Array(stackWords.prefix(5)), "only dyn_size bytes")
        XCTAssertEqual(c.tid, 10)
        XCTAssertEqual(c.has_regs, 0)
        XCTAssertEqual(c.stack_len, 0)

        // Room for one copy: the second record waits for the next call.
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        (r, d) = drain(stackCapacity: 100)
        XCTAssertEqual(r, 1)
        XCTAssertEqual(d.sample_count, 1)
        (r, d) = drain(stackCapacity: 100)
        XCTAssertEqual(r, 1)
        XCTAssertEqual(samples[0].tid, 9)
        XCTAssertEqual(copied(samples[0]), Array(stackWords.prefix(5)))
    }

    /// Why events are per CPU: the kernel refuses to mmap an inherited event
    /// that follows a thread on any CPU, and maps one bound to a CPU.
    func testKernelRefusesRingOfInheritedPerThreadEvent() throws {
        let anyCPU = ferret_perf_cpu_clock_open(getpid(), -1, 99, 0, 127, 0, 0)
        XCTAssertGreaterThanOrEqual(anyCPU, 0, "open: \(SamplerError.errnoText(-anyCPU))")
        defer { ferret_perf_close(anyCPU) }
        var err: Int32 = 0
        let refused = ferret_perf_ring_map(anyCPU, 1, &err)
        XCTAssertNil(refused)
        XCTAssertEqual(err, EINVAL, SamplerError.errnoText(err))
        if let refused { ferret_perf_ring_unmap(refused, 1) }

        let cpu0 = ferret_perf_cpu_clock_open(getpid(), 0, 99, 0, 127, 0, 0)
        XCTAssertGreaterThanOrEqual(cpu0, 0)
        defer { ferret_perf_close(cpu0) }
        let ring = ferret_perf_ring_map(cpu0, 1, &err)
        XCTAssertNotNil(ring, SamplerError.errnoText(err))
        defer { if let ring { ferret_perf_ring_unmap(ring, 1) } }
        // Another event on the same CPU can write into that ring; one on another CPU cannot.
        let cpu0b = ferret_perf_cpu_clock_open(getpid(), 0, 99, 0, 127, 0, 0)
        defer { ferret_perf_close(cpu0b) }
        XCTAssertEqual(ferret_perf_set_output(cpu0b, cpu0), 0)
        if Attachment.onlineCPUs().count > 1 {
            let cpu1 = ferret_perf_cpu_clock_open(getpid(), 1, 99, 0, 127, 0, 0)
            defer { ferret_perf_close(cpu1) }
            XCTAssertEqual(ferret_perf_set_output(cpu1, cpu0), -EINVAL)
        }
    }
}

/// A perf ring made by hand for the parser tests: a control page and one data
/// page, zeroed, with data_offset and data_size set.
final class HandMadeRing {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    var dataSize: Int { page }
    let mem: UnsafeMutableRawPointer
    var data: UnsafeMutableRawPointer { mem + page }

    init() {
        mem = UnsafeMutableRawPointer.allocate(byteCount: 2 * page, alignment: page)
        mem.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * page)
        // struct perf_event_mmap_page: data_head @1024, data_tail @1032, data_offset @1040, data_size @1048.
        mem.storeBytes(of: UInt64(page), toByteOffset: 1040, as: UInt64.self)
        mem.storeBytes(of: UInt64(dataSize), toByteOffset: 1048, as: UInt64.self)
    }

    deinit { mem.deallocate() }

    /// Writes `words` from ring position `tail` on (wrapping around the data
    /// area's end), sets data_tail to `tail` and data_head past them; returns the head.
    func write(_ words: [UInt64], tail: UInt64) -> UInt64 {
        for (i, w) in words.enumerated() {
            data.storeBytes(of: w, toByteOffset: (Int(tail) + 8 * i) & (dataSize - 1), as: UInt64.self)
        }
        let head = tail + UInt64(8 * words.count)
        mem.storeBytes(of: head, toByteOffset: 1024, as: UInt64.self)
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        return head
    }
}
