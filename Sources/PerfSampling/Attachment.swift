// Attaching the sampling events of one process.
//
// Coverage. One CPU-clock event per (thread present at attach, online CPU),
// pid = tid, cpu = N, with inherit + inherit_thread. A thread created later
// by a covered thread gets inherited child events (one per CPU), whose
// samples the kernel writes to the parent event's ring; so threads started
// after attach are never opened again (that would sample them twice).
//
// Verified on Linux 6.18 (2 CPUs), see also PerfSamplingTests:
//  - pid = tid, cpu = -1, inherit = 1 opens, but mmap() of it fails with
//    EINVAL (perf_mmap refuses inherited per-task events), so a per-thread
//    ring on any CPU is not possible with inherit;
//  - pid = tid, cpu = N, inherit = 1 maps, and samples of threads created
//    after the event was opened (and of threads those create) land in the
//    ring with their own tids (testThreadsStartedAfterAttachAreSampled);
//  - PERF_EVENT_IOC_SET_OUTPUT from another thread's event on the same CPU
//    into that ring works; across CPUs it fails with EINVAL. So a process
//    has one ring per online CPU and threads × CPUs event descriptors.
//  - SET_OUTPUT of an inherited cpu = -1 event into a non-inherited cpu = -1
//    ring of the same thread is accepted by the kernel, but then children on
//    several CPUs write one ring at once, which it is not built for (what
//    mmap refuses to allow directly); in four runs it recorded between 1% and
//    96% of the expected samples. Not used.
//
// Exited threads. The events of a thread that exits stay open until the
// process is detached: closing a parent event also frees its inherited
// children, which would stop sampling the threads it created. (Checked: a
// thread T3 created by T2 after attach, T2 exited; with T2's events kept, T3
// had 99 samples in the next second, with them closed 0.
// testThreadsOfExitedThreadsStaySampled covers the kept case.)
//
// The attach race. A thread created during attach by a thread whose events
// were not (all) open yet has no events, or only some CPUs' (a child inherits
// what its creator had at clone time). After opening, the thread list is read
// again: if a thread is there that has no events of its own, its creator may
// not have been covered, and the kernel cannot be asked; then everything is
// closed and the attach starts over, giving up after `maxAttempts` rather
// than miss threads (as the scheduler plugin's SyscallCounter does).
import CLinuxSupport
import Foundation
import LinuxProcess

/// One process's ring on one CPU.
struct Ring {
    var cpu: Int32
    var fd: Int32
    var base: UnsafeMutableRawPointer
    var token: UInt64 = 0
}

/// Everything held for one attached process.
final class Attachment {
    let pid: Int32
    let pidfd: Int32
    var pidfdToken: UInt64 = 0
    /// Every event descriptor (threads at attach × CPUs), ring owners included.
    var eventFDs: [Int32] = []
    var rings: [Ring] = []
    let dataPages: UInt32
    var attempts = 0
    var stats = SamplerStats()

    /// Bytes of user stack each sample carries (0: none); the drain needs it to parse records.
    let stackBytes: UInt32

    init(pid: Int32, pidfd: Int32, dataPages: UInt32, stackBytes: UInt32 = 0) {
        self.pid = pid
        self.pidfd = pidfd
        self.dataPages = dataPages
        self.stackBytes = stackBytes
    }

    /// Unmaps the rings and closes every descriptor (idempotent). Closing
    /// also takes the descriptors out of any epoll set.
    func release() {
        for r in rings { ferret_perf_ring_unmap(r.base, dataPages) }
        rings.removeAll()
        for fd in eventFDs { ferret_perf_close(fd) }
        eventFDs.removeAll()
        if pidfd >= 0 { close(pidfd) }
    }

    /// Closes the events and rings but keeps the pidfd (for a retry).
    func releaseEvents() {
        for r in rings { ferret_perf_ring_unmap(r.base, dataPages) }
        rings.removeAll()
        for fd in eventFDs { ferret_perf_close(fd) }
        eventFDs.removeAll()
    }

    /// Whether the whole process has exited (pidfd readable).
    var exited: Bool {
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0 && (p.revents & Int16(POLLIN | POLLHUP)) != 0
    }

    struct Settings {
        var frequencyHz: UInt32
        var includeKernel: Bool
        var maxStack: UInt16
        var dataPages: UInt32
        var wakeupBytes: UInt32
        var maxAttempts: Int
        /// Bytes of user stack copied with each sample (0: none).
        var stackBytes: UInt32 = 0
    }

    /// Opens and maps the events of every thread of `pid` on every CPU in `cpus`.
    /// `afterListing` runs after each first reading of the thread list (a test
    /// hook for the attach race).
    static func attach(pid: Int32, cpus: [Int32], settings s: Settings,
                       afterListing: ((Int) -> Void)? = nil) throws(SamplerError) -> Attachment {
        let pidfd = ferret_pidfd_open(pid)
        guard pidfd >= 0 else { throw .noProcess(pid: pid, errno: -pidfd) }
        let a = Attachment(pid: pid, pidfd: pidfd, dataPages: s.dataPages, stackBytes: s.stackBytes)
        do throws(SamplerError) {
            while a.attempts < s.maxAttempts {
                a.attempts += 1
                guard let tids = threads(of: pid), !a.exited else { throw .exited(pid: pid) }
                afterListing?(a.attempts)
                var opened = Set<Int32>(), dead = Set<Int32>()
                var ringFD = [Int32?](repeating: nil, count: cpus.count)
                threadLoop: for tid in tids {
                    for (i, cpu) in cpus.enumerated() {
                        let fd = ferret_perf_cpu_clock_open(tid, cpu, s.frequencyHz, s.includeKernel ? 1 : 0,
                                                            s.maxStack, s.wakeupBytes, s.stackBytes)
                        if fd < 0 {
                            if -fd == ESRCH {
                                // Exited (or an exited leader still listed): it runs no more;
                                // a thread it created shows up in the next listing.
                                dead.insert(tid)
                                continue threadLoop
                            }
                            var lim = rlimit()
                            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
                            throw .open(pid: pid, tid: tid, cpu: cpu, errno: -fd, threads: tids.count,
                                        cpus: cpus.count, fdLimit: UInt64(lim.rlim_cur))
                        }
                        a.eventFDs.append(fd)
                        if let owner = ringFD[i] {
                            let r = ferret_perf_set_output(fd, owner)
                            if r < 0 { throw .setOutput(pid: pid, tid: tid, cpu: cpu, errno: -r) }
                        } else {
                            var err: Int32 = 0
                            guard let base = ferret_perf_ring_map(fd, s.dataPages, &err) else {
                                throw .map(pid: pid, cpu: cpu, errno: err, bytes: ferret_perf_ring_length(s.dataPages))
                            }
                            a.rings.append(Ring(cpu: cpu, fd: fd, base: base))
                            ringFD[i] = fd
                        }
                    }
                    opened.insert(tid)
                }
                guard !opened.isEmpty, let now = threads(of: pid), !a.exited else { throw .exited(pid: pid) }
                // Every live thread has its own events: whatever they create from now on inherits them.
                if now.allSatisfy({ opened.contains($0) || dead.contains($0) }) {
                    a.stats.rings = a.rings.count
                    a.stats.fds = a.eventFDs.count + 1
                    a.stats.attachAttempts = a.attempts
                    return a
                }
                a.releaseEvents()
            }
            throw .unsettled(pid: pid, attempts: a.attempts)
        } catch {
            a.release()
            throw error
        }
    }

    /// Thread ids from /proc/PID/task; nil when the process is gone.
    static func threads(of pid: Int32) -> [Int32]? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "\(HostProc.path)/\(pid)/task") else { return nil }
        return names.compactMap { Int32($0) }.sorted()
    }

    /// Online CPUs from /sys/devices/system/cpu/online ("0-3,5"), or 0..<nprocs.
    static func onlineCPUs() -> [Int32] {
        if let text = readSmallFile("/sys/devices/system/cpu/online") {
            var out: [Int32] = []
            for part in text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",") {
                let ends = part.split(separator: "-").compactMap { Int32($0) }
                if ends.count == 1 { out.append(ends[0]) }
                else if ends.count == 2, ends[0] <= ends[1] { out.append(contentsOf: ends[0]...ends[1]) }
            }
            if !out.isEmpty { return out }
        }
        return (0..<Int32(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))).map { $0 }
    }
}
