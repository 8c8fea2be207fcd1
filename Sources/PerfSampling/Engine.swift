// The engine behind CPUSampler (see CPUSampler.swift): its attachments and drain thread.
//
// The drain thread waits in epoll on every ring (edge-triggered: a ring whose
// owning thread exited reports POLLHUP on each wakeup rather than POLLIN) and
// on each process's pidfd, which polls readable once the whole process has
// exited (zombie or reaped); rings wake it when half full (watermark), and it
// drains every ring each `drainInterval` anyway. A process found exited is
// drained one last time and released.
import CLinuxSupport
import Foundation
import LinuxProcess

/// The state shared with the drain thread (which keeps it alive, not the sampler).
final class Engine: @unchecked Sendable {
    static let drainInterval: Int32 = 100  // ms
    static let kernelMaxStack: Int = {
        Int(readSmallFile(HostProc.path + "/sys/kernel/perf_event_max_stack")?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? CPUSampler.maxStack
    }()

    private let onSamples: @Sendable ([CPUSample]) -> Void
    private let onLost: (@Sendable (Int32, UInt64) -> Void)?
    private let onDetach: (@Sendable (Int32, SamplerStats) -> Void)?

    /// Serializes deliveries (and the drains feeding them): taken before `lock`.
    private let deliverLock = NSLock()
    /// Guards everything below.
    private let lock = NSLock()
    private var attachments: [Int32: Attachment] = [:]
    private var attaching = Set<Int32>()
    /// epoll data → (pid, ring index, or -1 for the pidfd).
    private var tokens: [UInt64: (pid: Int32, ring: Int)] = [:]
    private var nextToken: UInt64 = 1
    private var stopping = false
    private var threadStarted = false
    private var drainThread: pthread_t?
    private var pendingSamples: [CPUSample] = []
    private var pendingLost: [(Int32, UInt64)] = []
    private var pendingDetach: [(Int32, SamplerStats)] = []
    private var _wakeups = 0
    var wakeups: Int { lock.withLock { _wakeups } }

    private let epfd: Int32
    private let wakeFD: Int32
    private let exitedThread = DispatchSemaphore(value: 0)

    // Drain buffers (used under `lock`).
    private static let sampleCapacity = 1024
    private static let frameCapacity = 64 * 1024
    private let sampleBuffer = UnsafeMutablePointer<ferret_perf_sample>.allocate(capacity: sampleCapacity)
    private let frameBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: frameCapacity)
    private static let stackCapacity = 1 << 20
    /// Stack copies; allocated at the first drain of a ring that has them.
    private var stackBuffer: UnsafeMutablePointer<UInt8>?

    init(onSamples: @escaping @Sendable ([CPUSample]) -> Void,
         onLost: (@Sendable (Int32, UInt64) -> Void)?,
         onDetach: (@Sendable (Int32, SamplerStats) -> Void)?) {
        self.onSamples = onSamples
        self.onLost = onLost
        self.onDetach = onDetach
        epfd = ferret_epoll_create()
        wakeFD = ferret_eventfd_open()
        if epfd >= 0 && wakeFD >= 0 { _ = ferret_epoll_add(epfd, wakeFD, 0, 0) }
    }

    deinit {
        sampleBuffer.deallocate()
        frameBuffer.deallocate()
        stackBuffer?.deallocate()
    }

    // MARK: - API

    func start(pid: Int32, settings: Attachment.Settings, afterListing: ((Int) -> Void)?) throws(SamplerError) {
        guard epfd >= 0, wakeFD >= 0 else { throw .poll(pid: pid, errno: EMFILE) }
        // Claim the pid; a process already sampled that has exited (and its
        // pid been reused) is released first.
        var stale = false
        let proceed: Bool = try lock.sync { () throws(SamplerError) -> Bool in
            if stopping { throw .shutDown(pid: pid) }
            if attaching.contains(pid) { return false }
            if let a = attachments[pid] {
                if !a.exited { return false }
                stale = true
            }
            attaching.insert(pid)
            return true
        }
        guard proceed else { return }
        defer { lock.withLock { _ = attaching.remove(pid) } }
        if stale { detachExited(pid: pid) }
        startThreadIfNeeded()

        let a = try Attachment.attach(pid: pid, cpus: Attachment.onlineCPUs(), settings: settings,
                                      afterListing: afterListing)
        try lock.sync { () throws(SamplerError) in
            if stopping {
                a.release()
                throw .shutDown(pid: pid)
            }
            for i in a.rings.indices {
                let t = nextToken
                nextToken += 1
                let r = ferret_epoll_add(epfd, a.rings[i].fd, t, 1)
                if r < 0 {
                    unregister(a)
                    a.release()
                    throw .poll(pid: pid, errno: -r)
                }
                a.rings[i].token = t
                tokens[t] = (pid, i)
            }
            let t = nextToken
            nextToken += 1
            let r = ferret_epoll_add(epfd, a.pidfd, t, 0)
            if r < 0 {
                unregister(a)
                a.release()
                throw .poll(pid: pid, errno: -r)
            }
            a.pidfdToken = t
            tokens[t] = (pid, -1)
            attachments[pid] = a
        }
    }

    func stop(pid: Int32) {
        if onDrainThread {
            // Inside a callback: the drain thread already holds deliverLock and
            // delivers what this leaves pending once the callback returns.
            lock.withLock { finalDrainAndRelease(pid: pid, exited: false) }
            return
        }
        deliverLock.withLock {
            lock.withLock { finalDrainAndRelease(pid: pid, exited: false) }
            while deliverPending() {}
        }
    }

    func stats(pid: Int32) -> SamplerStats? {
        lock.withLock { attachments[pid]?.stats }
    }

    var pids: [Int32] { lock.withLock { attachments.keys.sorted() } }

    func shutdown() {
        let (wasStopping, started) = lock.withLock { () -> (Bool, Bool) in
            let was = stopping
            stopping = true
            return (was, threadStarted)
        }
        if wasStopping { return }
        if onDrainThread {
            // From a callback: release now; the thread delivers and exits after it returns.
            lock.withLock { for pid in Array(attachments.keys) { finalDrainAndRelease(pid: pid, exited: false) } }
            wake()
            return
        }
        deliverLock.withLock {
            lock.withLock { for pid in Array(attachments.keys) { finalDrainAndRelease(pid: pid, exited: false) } }
            while deliverPending() {}
        }
        if started {
            wake()
            exitedThread.wait()  // the thread closes epfd and wakeFD on its way out
        } else {
            closePollFDs()
        }
    }

    // MARK: - Drain thread

    private var onDrainThread: Bool {
        lock.withLock { drainThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    private func startThreadIfNeeded() {
        let start = lock.withLock { () -> Bool in
            if threadStarted { return false }
            threadStarted = true
            return true
        }
        guard start else { return }
        let t = Thread { [self] in run() }
        t.name = "ferret-sampler"
        t.start()
    }

    private func wake() { ferret_eventfd_signal(wakeFD) }

    private func run() {
        lock.withLock { drainThread = pthread_self() }
        // The kernel's thread name (Thread.name does not reach it here); at most 15 characters.
        ferret_set_thread_name("ferret-sampler")
        var events = [UInt64](repeating: 0, count: 64)
        var lastFull = ferret_monotonic_ns()
        while true {
            let n = ferret_epoll_wait(epfd, &events, Int32(events.count), Self.drainInterval)
            let ready: [UInt64] = n > 0 ? Array(events[0..<Int(n)]) : []
            if ready.contains(0) { ferret_eventfd_clear(wakeFD) }
            let now = ferret_monotonic_ns()
            let full = n <= 0 || now &- lastFull >= UInt64(Self.drainInterval) * 1_000_000
            if full { lastFull = now }
            let quit = deliverLock.withLock { () -> Bool in
                let quit = lock.withLock { () -> Bool in
                    _wakeups += 1
                    if stopping { return true }
                    var exitedPids: [Int32] = []
                    for t in ready where t != 0 {
                        guard let (pid, ring) = tokens[t], let a = attachments[pid] else { continue }
                        if ring < 0 { exitedPids.append(pid) } else if !full { drain(a, ring: ring) }
                    }
                    if full {
                        for a in attachments.values {
                            for i in a.rings.indices { drain(a, ring: i) }
                        }
                    }
                    for pid in exitedPids { finalDrainAndRelease(pid: pid, exited: true) }
                    return false
                }
                // Again while callbacks' stop()/shutdown() left more.
                while deliverPending() {}
                return quit || lock.withLock { stopping }
            }
            if quit { break }
        }
        closePollFDs()
        exitedThread.signal()
    }

    private func closePollFDs() {
        if epfd >= 0 { close(epfd) }
        if wakeFD >= 0 { close(wakeFD) }
    }

    // MARK: - Draining (under `lock`)

    /// Drains ring `ring` of `a` into the pending batch and counters.
    private func drain(_ a: Attachment, ring: Int) {
        let base = a.rings[ring].base
        let lostBefore = a.stats.lost
        while true {
            var d = ferret_perf_drain()
            d.samples = sampleBuffer
            d.sample_capacity = UInt32(Self.sampleCapacity)
            d.frames = frameBuffer
            d.frame_capacity = UInt32(Self.frameCapacity)
            if a.stackBytes > 0 {
                if stackBuffer == nil { stackBuffer = .allocate(capacity: Self.stackCapacity) }
                d.stack_bytes = a.stackBytes
                d.stack = stackBuffer
                d.stack_capacity = UInt32(Self.stackCapacity)
            }
            let r = ferret_perf_ring_drain(base, &d)
            for i in 0..<Int(d.sample_count) {
                let s = sampleBuffer[i]
                var user = Array(UnsafeBufferPointer(start: frameBuffer + Int(s.user_start), count: Int(s.user_count)))
                let kernel = Array(UnsafeBufferPointer(start: frameBuffer + Int(s.kernel_start), count: Int(s.kernel_count)))
                // PERF_RECORD_MISC_CPUMODE_MASK (7), PERF_RECORD_MISC_USER (2)
                if user.isEmpty && s.misc & 7 == 2 {
                    user = [s.ip]
                }
                var sample = CPUSample(pid: s.pid, tid: s.tid, timeNanos: s.time_ns, periodNanos: s.period,
                                       userStack: user, kernelStack: kernel)
                if s.has_regs != 0, let stack = d.stack {
                    sample.userRegisters = UserRegisters(ip: s.user_ip, sp: s.user_sp, bp: s.user_bp)
                    sample.userStackCopy = Array(UnsafeBufferPointer(start: stack + Int(s.stack_start), count: Int(s.stack_len)))
                }
                pendingSamples.append(sample)
            }
            a.stats.samples &+= UInt64(d.sample_count)
            a.stats.lost &+= d.lost
            a.stats.throttled &+= d.throttled
            a.stats.unthrottled &+= d.unthrottled
            a.stats.otherRecords &+= d.other_records &+ d.malformed
            if r != 1 { break }
        }
        if a.stats.lost > lostBefore {
            pendingLost.append((a.pid, a.stats.lost - lostBefore))
        }
    }

    /// Drains every ring of `pid` one last time and releases it.
    private func finalDrainAndRelease(pid: Int32, exited: Bool) {
        guard let a = attachments.removeValue(forKey: pid) else { return }
        for i in a.rings.indices { drain(a, ring: i) }
        unregister(a)
        a.release()
        if exited { pendingDetach.append((pid, a.stats)) }
    }

    /// Drops `a`'s epoll tokens (closing its fds takes them out of the epoll set).
    private func unregister(_ a: Attachment) {
        for r in a.rings where r.token != 0 {
            _ = ferret_epoll_del(epfd, r.fd)
            tokens[r.token] = nil
        }
        if a.pidfdToken != 0 {
            _ = ferret_epoll_del(epfd, a.pidfd)
            tokens[a.pidfdToken] = nil
        }
    }

    /// Releases a process found exited (by `start`).
    private func detachExited(pid: Int32) {
        if onDrainThread {
            lock.withLock { finalDrainAndRelease(pid: pid, exited: true) }
            return
        }
        deliverLock.withLock {
            lock.withLock { finalDrainAndRelease(pid: pid, exited: true) }
            while deliverPending() {}
        }
    }

    /// Delivers what is pending (holding `deliverLock`, not `lock`); false if nothing was.
    @discardableResult
    private func deliverPending() -> Bool {
        let (samples, lost, detached) = lock.withLock { () -> ([CPUSample], [(Int32, UInt64)], [(Int32, SamplerStats)]) in
            defer {
                pendingSamples.removeAll(keepingCapacity: true)
                pendingLost.removeAll()
                pendingDetach.removeAll()
            }
            return (pendingSamples, pendingLost, pendingDetach)
        }
        if !samples.isEmpty { onSamples(samples) }
        if let onLost { for (pid, n) in lost { onLost(pid, n) } }
        if let onDetach { for (pid, s) in detached { onDetach(pid, s) } }
        return !(samples.isEmpty && lost.isEmpty && detached.isEmpty)
    }
}

extension NSLock {
    /// `withLock` for typed throws.
    func sync<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
