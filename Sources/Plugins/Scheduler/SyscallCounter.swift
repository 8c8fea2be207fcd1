// process.syscalls: system calls made by one process, counted by the kernel
// on the perf tracepoint raw_syscalls:sys_enter (counting mode, no sampling).
//
// Coverage. One event per thread present at attach (pid = tid, cpu = -1),
// each with inherit + inherit_thread: a thread created later by a counted
// thread gets an inherited child event, and read() on the parent's fd returns
// the parent's count plus those of its live and exited inherited children
// (transitively, also when the creating thread has exited since). So threads
// started after attach are never opened again; that would count them twice.
//
// The one way a thread escapes is a thread created during attach by a thread
// whose event was not open yet. After opening, the thread list is read again:
// if a thread is there that has no event of its own, its creator may not have
// been covered, and there is no way to ask the kernel. Then all events are
// closed and the attach starts over (counts begin at attach, so nothing is
// lost but the attach window); it gives up after `maxAttempts` rather than
// report a number that may miss threads.
import CLinuxSupport
import Foundation
import LinuxProcess

/// Why `process.syscalls` is not available for a process.
enum SyscallCountError: Error, CustomStringConvertible {
    /// No tracefs, or no readable raw_syscalls:sys_enter id in it.
    case tracefs(String)
    /// perf_event_open refused a thread's event (`fdLimit`: RLIMIT_NOFILE then).
    case open(pid: Int32, tid: Int32, errno: Int32, threads: Int, fdLimit: UInt64)
    /// New threads kept appearing while the events were being opened.
    case unsettled(pid: Int32, attempts: Int)
    /// read() of an event failed.
    case read(pid: Int32, errno: Int32)
    /// The process is gone (not worth a report).
    case exited(pid: Int32)

    var description: String {
        switch self {
        case .tracefs(let why):
            return why
        case .open(let pid, let tid, let e, let threads, let fdLimit):
            var s = "perf_event_open(raw_syscalls:sys_enter, pid \(pid) thread \(tid)) failed: \(Self.errnoText(e))"
            switch e {
            case EACCES, EPERM:
                let paranoid = (try? String(contentsOfFile: HostProc.path + "/sys/kernel/perf_event_paranoid", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                s += "; kernel.perf_event_paranoid is \(paranoid): counting a tracepoint needs root or CAP_PERFMON, or perf_event_paranoid <= 1 and ptrace access to the process"
            case ENOENT, ENODEV, EOPNOTSUPP:
                s += "; the kernel has no perf tracepoint events (CONFIG_EVENT_TRACING)"
            case EMFILE, ENFILE:
                s += "; one descriptor per thread present at attach (\(threads) threads), RLIMIT_NOFILE soft limit \(fdLimit)"
            case EINVAL, E2BIG:
                s += "; the kernel knows no tracepoint with this id, or refused the attributes (inherit_thread needs Linux 5.13 or newer)"
            default:
                break
            }
            return s
        case .unsettled(let pid, let attempts):
            return "pid \(pid) kept creating threads while its per-thread events were being opened (\(attempts) attempts); not counting rather than miss threads"
        case .read(let pid, let e):
            return "reading the perf events of pid \(pid) failed: \(Self.errnoText(e))"
        case .exited(let pid):
            return "pid \(pid) exited"
        }
    }

    static func errnoText(_ e: Int32) -> String {
        let names: [Int32: String] = [EACCES: "EACCES", EPERM: "EPERM", ENOENT: "ENOENT", EMFILE: "EMFILE", ENFILE: "ENFILE",
                                      EINVAL: "EINVAL", E2BIG: "E2BIG", ESRCH: "ESRCH", ENODEV: "ENODEV", ENOSYS: "ENOSYS",
                                      EBUSY: "EBUSY", ENOMEM: "ENOMEM", EOPNOTSUPP: "EOPNOTSUPP"]
        return "\(names[e] ?? "errno \(e)") (\(String(cString: strerror(e))))"
    }
}

/// The perf events counting one process's system calls; closed on `close()` or deinit.
final class SyscallCounter {
    let pid: Int32
    /// Attach attempts it took (1 unless threads appeared during attach).
    private(set) var attempts = 0
    /// Event fds: one per thread present at attach.
    private(set) var fds: [Int32] = []

    /// Opens one inherited counting event per thread of `pid`. `afterListing`
    /// runs after each reading of the thread list, before the events are
    /// opened (a test hook for the attach race).
    init(pid: Int32, tracepointID: UInt64, maxAttempts: Int = 5,
         afterListing: ((_ attempt: Int) -> Void)? = nil) throws(SyscallCountError) {
        self.pid = pid
        while attempts < maxAttempts {
            attempts += 1
            guard let tids = Self.threads(of: pid) else { throw .exited(pid: pid) }
            afterListing?(attempts)
            var opened = Set<Int32>(), dead = Set<Int32>()
            for tid in tids {
                let fd = ferret_perf_tracepoint_open(tid, tracepointID)
                if fd >= 0 {
                    fds.append(fd)
                    opened.insert(tid)
                } else if -fd == ESRCH {
                    // Exited (or an exited leader still listed): it makes no more
                    // calls; a thread it created shows up in the next listing.
                    dead.insert(tid)
                } else {
                    close()
                    var lim = rlimit()
                    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
                    throw .open(pid: pid, tid: tid, errno: -fd, threads: tids.count, fdLimit: UInt64(lim.rlim_cur))
                }
            }
            guard let now = Self.threads(of: pid), !opened.isEmpty else {
                close()
                throw .exited(pid: pid)
            }
            // Every live thread has its own event: whatever they create from now on inherits one.
            if now.allSatisfy({ opened.contains($0) || dead.contains($0) }) { return }
            close()
        }
        throw .unsettled(pid: pid, attempts: attempts)
    }

    deinit { close() }

    /// System calls since attach, summed over the events (each includes its
    /// inherited threads).
    func read() -> Result<UInt64, SyscallCountError> {
        var total: UInt64 = 0
        for fd in fds {
            var v: UInt64 = 0
            let r = ferret_perf_read_count(fd, &v)
            if r < 0 { return .failure(.read(pid: pid, errno: -r)) }
            total &+= v
        }
        return .success(total)
    }

    /// Closes every event (idempotent).
    func close() {
        for fd in fds { ferret_perf_close(fd) }
        fds.removeAll()
    }

    /// Thread ids from /proc/PID/task; nil when the process is gone.
    static func threads(of pid: Int32) -> [Int32]? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "\(HostProc.path)/\(pid)/task") else { return nil }
        return names.compactMap { Int32($0) }.sorted()
    }
}

/// Finding the raw_syscalls:sys_enter tracepoint id in tracefs.
enum Tracefs {
    static let mountPoint = "/sys/kernel/tracing"
    static let candidates = [mountPoint, "/sys/kernel/debug/tracing"]
    static let tracepoint = "events/raw_syscalls/sys_enter/id"

    /// The tracepoint id. When neither candidate has `events` and we are root,
    /// mounts tracefs at /sys/kernel/tracing first (as perf does) and sets `mounted`.
    static func sysEnterID(mounted: inout Bool) throws(SyscallCountError) -> UInt64 {
        var dir: String?
        var denied: [String] = []
        for candidate in candidates {
            let e = eventsDirectory(candidate)
            if e == 0 { dir = candidate; break }
            if e == EACCES { denied.append(candidate) }
        }
        if dir == nil {
            if let d = denied.first {
                throw .tracefs("cannot look up the tracepoint id: \(d)/events: \(SyscallCountError.errnoText(EACCES)) (tracefs is root-only unless its mode is changed)")
            }
            guard geteuid() == 0 else {
                throw .tracefs("no tracefs with events at \(candidates.joined(separator: " or ")), and not root to mount one")
            }
            if mount("nodev", mountPoint, "tracefs", 0, nil) != 0 {
                let e = errno
                throw .tracefs("no tracefs with events at \(candidates.joined(separator: " or ")); mounting tracefs at \(mountPoint) failed: \(SyscallCountError.errnoText(e))")
            }
            mounted = true
            guard eventsDirectory(mountPoint) == 0 else { throw .tracefs("tracefs mounted at \(mountPoint) has no events directory") }
            dir = mountPoint
        }
        let path = dir! + "/" + tracepoint
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT { throw .tracefs("no tracepoint raw_syscalls:sys_enter (\(path) is missing; kernel built without CONFIG_FTRACE_SYSCALLS?)") }
            throw .tracefs("cannot read the tracepoint id \(path): \(SyscallCountError.errnoText(e))")
        }
        defer { Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = Glibc.read(fd, &buf, buf.count)
        guard n > 0, let id = UInt64(String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw .tracefs("cannot parse the tracepoint id in \(path)")
        }
        return id
    }

    /// 0 when `dir`/events is a directory, else the errno of stat (ENOTDIR if not a directory).
    static func eventsDirectory(_ dir: String) -> Int32 {
        var st = stat()
        guard stat(dir + "/events", &st) == 0 else { return errno }
        return (st.st_mode & S_IFMT) == S_IFDIR ? 0 : ENOTDIR
    }
}
