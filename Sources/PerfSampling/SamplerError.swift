import Foundation
import LinuxProcess

/// Why a process could not be sampled. Every case names the pid; kernel
/// refusals carry the errno, spelled out with a hint in `description`.
public enum SamplerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A setting outside what the sampler supports (frequency, ring size).
    case invalidConfiguration(pid: Int32, String)
    /// pidfd_open(pid) failed: no such process (ESRCH) or another refusal.
    case noProcess(pid: Int32, errno: Int32)
    /// perf_event_open refused the sampling event of thread `tid` on `cpu`.
    /// `events`: events already open for the process then; `fdLimit`: RLIMIT_NOFILE.
    case open(pid: Int32, tid: Int32, cpu: Int32, errno: Int32, threads: Int, cpus: Int, fdLimit: UInt64)
    /// mmap of the ring buffer for `cpu` failed.
    case map(pid: Int32, cpu: Int32, errno: Int32, bytes: UInt64)
    /// PERF_EVENT_IOC_SET_OUTPUT (sharing the CPU's ring) failed.
    case setOutput(pid: Int32, tid: Int32, cpu: Int32, errno: Int32)
    /// epoll_ctl failed registering the process's descriptors.
    case poll(pid: Int32, errno: Int32)
    /// The process exited during attach.
    case exited(pid: Int32)
    /// New threads kept appearing while the events were being opened.
    case unsettled(pid: Int32, attempts: Int)
    /// `shutdown()` was called.
    case shutDown(pid: Int32)

    public var pid: Int32 {
        switch self {
        case .invalidConfiguration(let pid, _), .noProcess(let pid, _), .open(let pid, _, _, _, _, _, _),
             .map(let pid, _, _, _), .setOutput(let pid, _, _, _), .poll(let pid, _), .exited(let pid),
             .unsettled(let pid, _), .shutDown(let pid):
            return pid
        }
    }

    public var description: String {
        switch self {
        case .invalidConfiguration(let pid, let why):
            return "cannot sample pid \(pid): \(why)"
        case .noProcess(let pid, let e):
            if e == ESRCH { return "cannot sample pid \(pid): no such process (pidfd_open: \(Self.errnoText(e)))" }
            return "cannot sample pid \(pid): pidfd_open failed: \(Self.errnoText(e))"
        case .open(let pid, let tid, let cpu, let e, let threads, let cpus, let fdLimit):
            var s = "perf_event_open(cpu-clock sampling, pid \(pid) thread \(tid) cpu \(cpu)) failed: \(Self.errnoText(e))"
            switch e {
            case EACCES, EPERM:
                s += "; kernel.perf_event_paranoid is \(Self.sysctl("perf_event_paranoid")): sampling another process needs root or CAP_PERFMON, or perf_event_paranoid <= 1 and ptrace access to it (time spent in the kernel is sampled too, which paranoid 2 forbids unprivileged)"
            case ENOENT, ENODEV, EOPNOTSUPP:
                s += "; the kernel has no cpu-clock software event on this CPU (CONFIG_PERF_EVENTS?), or the CPU went offline"
            case EMFILE, ENFILE:
                s += "; one descriptor per thread present at attach and online CPU (\(threads) threads × \(cpus) CPUs), RLIMIT_NOFILE soft limit \(fdLimit)"
            case EINVAL, E2BIG:
                s += "; the kernel refused the attributes (frequency above kernel.perf_event_max_sample_rate = \(Self.sysctl("perf_event_max_sample_rate"))? inherit_thread needs Linux 5.13)"
            case EOVERFLOW:
                s += "; callchain depth above kernel.perf_event_max_stack = \(Self.sysctl("perf_event_max_stack"))"
            default:
                break
            }
            return s
        case .map(let pid, let cpu, let e, let bytes):
            var s = "mmap of the \(bytes)-byte perf ring (pid \(pid) cpu \(cpu)) failed: \(Self.errnoText(e))"
            if e == EPERM || e == ENOMEM {
                s += "; perf rings count against kernel.perf_event_mlock_kb (\(Self.sysctl("perf_event_mlock_kb")) KiB per user) unless CAP_IPC_LOCK, and RLIMIT_MEMLOCK"
            }
            return s
        case .setOutput(let pid, let tid, let cpu, let e):
            return "PERF_EVENT_IOC_SET_OUTPUT (pid \(pid) thread \(tid) cpu \(cpu)) failed: \(Self.errnoText(e))"
        case .poll(let pid, let e):
            return "epoll_ctl for the perf events of pid \(pid) failed: \(Self.errnoText(e))"
        case .exited(let pid):
            return "pid \(pid) exited while its threads were being attached"
        case .unsettled(let pid, let attempts):
            return "pid \(pid) kept creating threads while its sampling events were being opened (\(attempts) attempts); not sampling rather than miss threads"
        case .shutDown(let pid):
            return "cannot sample pid \(pid): the sampler was shut down"
        }
    }

    static func errnoText(_ e: Int32) -> String {
        let names: [Int32: String] = [
            EACCES: "EACCES", EPERM: "EPERM", ENOENT: "ENOENT", EMFILE: "EMFILE", ENFILE: "ENFILE",
            EINVAL: "EINVAL", E2BIG: "E2BIG", ESRCH: "ESRCH", ENODEV: "ENODEV", ENOSYS: "ENOSYS",
            EBUSY: "EBUSY", ENOMEM: "ENOMEM", EOPNOTSUPP: "EOPNOTSUPP", EOVERFLOW: "EOVERFLOW", EBADF: "EBADF",
        ]
        return "\(names[e] ?? "errno \(e)") (\(String(cString: strerror(e))))"
    }

    static func sysctl(_ name: String) -> String {
        guard let s = readSmallFile(HostProc.path + "/sys/kernel/" + name) else { return "?" }
        return s.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A small /proc or /sys file's text, or nil (plain read(2) until EOF).
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 4096)
    var out: [UInt8] = []
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}
