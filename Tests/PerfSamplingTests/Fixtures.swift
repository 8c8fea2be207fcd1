import Foundation
import GoTestSupport
import PerfSampling
import XCTest

/// Small C (and Go) programs compiled at test time into one temporary folder,
/// spawned with posix_spawn and reaped with waitpid.
enum Fixtures {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static let dir: String = {
        let d = NSTemporaryDirectory() + "/ferret-perfsampling-\(getpid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    /// Compiles `source` (C) to dir/name with frame pointers, in leaf functions
    /// too (a frameless leaf hides its caller from a frame-pointer walk; GCC 12
    /// at -O1 leaves a leaf that needs no stack frameless even with
    /// -mno-omit-leaf-frame-pointer, hence -O0), and no inlining.
    static func cc(_ name: String, _ source: String, flags: [String] = []) throws -> String {
        let src = dir + "/" + name + ".c", out = dir + "/" + name
        if FileManager.default.isExecutableFile(atPath: out) { return out }
        try source.write(toFile: src, atomically: true, encoding: .utf8)
        let args = ["-O0", "-g", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer", "-fno-inline", "-pthread", "-o", out + ".tmp", src] + flags
        let (status, output) = try run("/usr/bin/cc", args)
        guard status == 0 else { throw Failure(description: "cc \(name) failed (\(status)):\n\(output)") }
        guard rename(out + ".tmp", out) == 0 else { throw Failure(description: "rename \(out): errno \(errno)") }
        return out
    }

    /// Runs a program to completion; its status and combined output.
    static func run(_ exe: String, _ args: [String], cwd: String? = nil, env: [String: String]? = nil) throws -> (Int32, String) {
        try GoToolchains.run(exe, args, cwd: cwd, env: env)
    }

    /// posix_spawn `exe args`, stdin from `stdinFD` if given (else /dev/null), output to /dev/null.
    static func spawn(_ exe: String, _ args: [String] = [], stdinFD: Int32? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdinFD {
            posix_spawn_file_actions_adddup2(&actions, stdinFD, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let r = posix_spawn(&pid, exe, &actions, nil, argv, environ)
        guard r == 0 else { throw Failure(description: "posix_spawn \(exe): \(String(cString: strerror(r)))") }
        return pid
    }

    /// Waits until /proc/PID/exe is `exe` (the exec happened), up to 20 s.
    static func waitForExec(_ pid: pid_t, _ exe: String) throws {
        let want = URL(fileURLWithPath: exe).resolvingSymlinksInPath().path
        // generous: a loaded machine execs slowly
        guard Wait.until("the exec", timeout: 20, poll: 0.001, {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) == want
        }) else { throw Failure(description: "pid \(pid) did not exec \(exe)") }
    }

    /// waitpid; the raw status.
    @discardableResult
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    static func kill(_ pid: pid_t) {
        _ = Glibc.kill(pid, SIGKILL)
        reap(pid)
    }

    /// (start, end) of a symbol from `nm -S`, as a file address.
    static func symbol(_ name: String, in exe: String) throws -> Range<UInt64> {
        let (status, out) = try run("/usr/bin/nm", ["-S", "--defined-only", exe])
        guard status == 0 else { throw Failure(description: "nm \(exe) failed:\n\(out)") }
        for line in out.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 4, f[3] == name, let a = UInt64(f[0], radix: 16), let n = UInt64(f[1], radix: 16) else { continue }
            return a..<(a + n)
        }
        throw Failure(description: "no symbol \(name) with a size in \(exe)")
    }

    /// The load bias of `exe` in `pid`: the start of its mapping at file
    /// offset 0 for a PIE (symbol values are offsets from it), 0 otherwise.
    /// Waits up to 2 s for the mapping: /proc/PID/exe changes before execve maps the segments.
    static func loadBias(_ pid: pid_t, _ exe: String, pie: Bool) throws -> UInt64 {
        guard pie else { return 0 }
        let want = URL(fileURLWithPath: exe).resolvingSymlinksInPath().path
        var bias: UInt64?
        try Wait.until("the mapping of \(exe)", timeout: 2, poll: 0.001) {
            guard let maps = ProcRead.text("/proc/\(pid)/maps") else { throw CocoaError(.fileReadUnknown) }
            for line in maps.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 6, f[5] == want, f[2] == "00000000" else { continue }
                bias = UInt64(f[0].split(separator: "-")[0], radix: 16) ?? 0
                return true
            }
            return false
        }
        guard let bias else { throw Failure(description: "no mapping of \(exe) at offset 0 in pid \(pid)") }
        return bias
    }

    /// utime + stime of a process, seconds.
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return nil }
        let f = s[s.index(after: close)...].split(separator: " ")
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        guard f.count > 13, let u = Double(f[11]), let st = Double(f[12]) else { return nil }
        return (u + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CLOCK_MONOTONIC, ns.
    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func countEntries(_ dir: String) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: dir).count) ?? -1
    }

    static func mapsLines(_ filter: ((Substring) -> Bool)? = nil) -> Int {
        guard let s = ProcRead.text("/proc/self/maps") else { return -1 }
        return s.split(separator: "\n").filter { filter?($0) ?? true }.count
    }

    /// Link targets of /proc/self/fd entries.
    static func fdTargets() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0) }
    }
}

/// Collects delivered samples, lost counts and detaches, thread-safely.
final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private var _samples: [CPUSample] = []
    private var _lost: [Int32: UInt64] = [:]
    private var _detached: [Int32: SamplerStats] = [:]
    private var _batches = 0
    /// Seconds to sleep in each onSamples call (a slow consumer).
    let delay: TimeInterval

    init(delay: TimeInterval = 0) { self.delay = delay }

    func add(_ batch: [CPUSample]) {
        lock.withLock {
            _samples += batch
            _batches += 1
        }
        if delay > 0 { Thread.sleep(forTimeInterval: delay) }
    }
    func lost(_ pid: Int32, _ n: UInt64) { lock.withLock { _lost[pid, default: 0] += n } }
    func detached(_ pid: Int32, _ s: SamplerStats) { lock.withLock { _detached[pid] = s } }

    func samples(pid: Int32) -> [CPUSample] { lock.withLock { _samples.filter { $0.pid == pid } } }
    var all: [CPUSample] { lock.withLock { _samples } }
    var batches: Int { lock.withLock { _batches } }
    func lostTotal(pid: Int32) -> UInt64 { lock.withLock { _lost[pid] ?? 0 } }
    func detachStats(pid: Int32) -> SamplerStats? { lock.withLock { _detached[pid] } }
    var detachedCount: Int { lock.withLock { _detached.count } }

    func sampler(frequencyHz: Int = 99, includeKernel: Bool = false, ringPages: Int = 16) -> CPUSampler {
        CPUSampler(frequencyHz: frequencyHz, includeKernel: includeKernel, ringPages: ringPages,
                   onSamples: { [self] in add($0) }, onLost: { [self] in lost($0, $1) },
                   onDetach: { [self] in detached($0, $1) })
    }
}
