import CLinuxSupport
import Foundation
import GoTestSupport
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
    static double cpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec / 1e9; }
    /* B burns 1.4 s of its own CPU time, however busy the machine is. */
    __attribute__((noinline)) static void burn_cpu(double seconds) {
        while (cpu() < seconds) for (volatile int i = 0; i < 100000; i++) {}
    }
    static void *thread_b(void *a) {
        (void)a;
        FILE *f = fopen(path, "w"); fprintf(f, "%ld\n", (long)syscall(SYS_gettid)); fclose(f);
        burn_cpu(end_at - start - 0.6);
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
        Thread.sleep(forTimeInterval: 2.0)  // a measurement window, not a wait
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
        XCTAssert(Wait.until("the exit detected", timeout: 2) { sampler.stats(pid: pid) == nil }, "exit detected")

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
        XCTAssert(Wait.until("main and thread A", timeout: 1) { Attachment.threads(of: pid)?.count == 2 })
        try sampler.start(pid: pid)
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        XCTAssertEqual(stats.fds, 2 * stats.rings + 1, "leader and A")
        let wakeups0 = sampler.drainWakeups
        let t0 = Date()
        XCTAssert(Wait.until("the last thread's exit", timeout: 15) { sampler.stats(pid: pid) == nil }, "exit of the last thread detected")
        let wakeups = sampler.drainWakeups - wakeups0
        let seconds = max(Date().timeIntervalSince(t0), 1)
        let b = try XCTUnwrap(Int32(try String(contentsOfFile: tidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let fromB = c.samples(pid: pid).filter { $0.tid == b }
        // B burns 1.4 s of CPU time, alone after A's exit: ~138 samples at 99 Hz
        // (CPU-clock sampling counts on-CPU time, so a busy machine changes nothing).
        XCTAssertGreaterThan(fromB.count, 100, "samples of B")
        // ~10 periodic wakeups a second plus watermarks; a spin would be thousands.
        XCTAssertLessThan(Double(wakeups), 30 * seconds, "drain thread wakeups in \(seconds) s")
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
            Wait.until("the new thread", timeout: 2) { (Attachment.threads(of: pid)?.count ?? 0) >= 2 }
        }
        try sampler.start(pid: pid)
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        XCTAssertEqual(stats.attachAttempts, 2)
        XCTAssertEqual(stats.fds, 2 * stats.rings + 1)
        Thread.sleep(forTimeInterval: 0.5)  // a measurement window, not a wait
        sampler.stop(pid: pid)
        let burner = try XCTUnwrap(Attachment.threads(of: pid)?.first { $0 != pid })
        XCTAssertGreaterThan(c.samples(pid: pid).filter { $0.tid == burner }.count, 25)
    }
}
