import CPluginIsolation
import FerretPluginABI
import Foundation
import Logging

/// How to start a helper for one plugin instance.
public struct HelperLaunch: Sendable {
    public var library: String
    public var instanceName: String
    public var user: String?
    public var capabilities: [String]
    public var memoryLimit: UInt64?
    /// Keep the agent's capabilities (`ferret conformance`, which checks the
    /// ABI, not privileges); otherwise only `capabilities` are kept.
    public var keepCapabilities = false
    /// The shared ring's data size (a power of two).
    public var ringSize: Int = 1 << 20

    public init(library: String, instanceName: String, user: String?, capabilities: [String], memoryLimit: UInt64?,
                keepCapabilities: Bool = false) {
        self.library = library
        self.instanceName = instanceName
        self.user = user
        self.capabilities = capabilities
        self.memoryLimit = memoryLimit
        self.keepCapabilities = keepCapabilities
    }

    /// The helper executable: next to `ferret` (the build folder or the install's
    /// libexec), or FERRET_PLUGIN_HOST.
    static var executable: String {
        if let env = ProcessInfo.processInfo.environment["FERRET_PLUGIN_HOST"], !env.isEmpty { return env }
        for dir in [PluginRegistry.executableDirectory, PluginRegistry.executableDirectory + "/../libexec/ferret"] {
            let p = dir + "/ferret-plugin-host"
            if access(p, X_OK) == 0 { return p }
        }
        return PluginRegistry.executableDirectory + "/ferret-plugin-host"
    }
}

/// How a helper ended.
struct HelperDeath: Sendable {
    var pid: pid_t
    /// The signal that ended it (0 when it exited).
    var signal: Int32
    var exitStatus: Int32
    /// The agent killed it (a call past its timeout, or shutdown).
    var killedByAgent: Bool
    /// The OOM killer ended it inside its memory cgroup.
    var memoryLimitHit: Bool
    /// What the helper's handler wrote to the crash pipe (may be empty).
    var report: String
    /// Records delivered from the ring after the death was seen.
    var drainedAfterDeath: Int
    /// Records still uncommitted at the death (skipped).
    var lostInFlight: Int
}

/// The answer to a control call.
enum HelperReply {
    case reply(status: Int32, message: String, jsonPointer: String?, rest: ArraySlice<UInt8>)
    case timedOut
    case died
}

/// One running `ferret-plugin-host`: its control socket, its ring (drained by
/// a reader thread into the pipeline through the instance's HostContext), its
/// crash pipe, and its pidfd. Calls are made by one thread at a time (the
/// instance's); the reader thread owns the ring.
final class HelperProcess: @unchecked Sendable {
    let pid: pid_t
    let launch: HelperLaunch
    let startedAt = Clock.monotonicNanos()
    private let control: Int32
    private let pidfd: Int32
    private let eventfd: Int32
    private let crashRead: Int32
    private let bulk: Int32
    private var ring = fi_ring()
    private let context: HostContext
    private let logger: Logger
    let cgroup: MemoryCgroup?
    private let lock = NSCondition()
    private var death: HelperDeath?
    private var killedByAgent = false
    private var crashText: [UInt8] = []
    private var reportedDrops: UInt64 = 0
    /// Called once, on the reader thread, after the helper died and its ring was drained.
    private let onDeath: @Sendable (HelperDeath) -> Void

    struct SpawnError: Error, CustomStringConvertible { var description: String }

    static func spawn(_ launch: HelperLaunch, context: HostContext, logger: Logger,
                      onDeath: @escaping @Sendable (HelperDeath) -> Void) throws -> HelperProcess {
        func fail(_ what: String) -> SpawnError { SpawnError(description: "\(what): \(String(cString: strerror(errno)))") }
        var sp: [Int32] = [0, 0], bp: [Int32] = [0, 0], cp: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sp) == 0 else { throw fail("socketpair") }
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &bp) == 0 else {
            close(sp[0]); close(sp[1]); throw fail("socketpair")
        }
        guard fi_sys_pipe(&cp) == 0 else { [sp, bp].flatMap { $0 }.forEach { close($0) }; throw fail("pipe2") }
        let memfd = fi_sys_memfd("ferret-ring")
        let efd = fi_sys_eventfd()
        var ownedHere = [sp[1], bp[1], cp[1], memfd, efd]
        var agentSide = [sp[0], bp[0], cp[0]]
        func closeAll() { (ownedHere + agentSide).filter { $0 >= 0 }.forEach { close($0) } }
        guard memfd >= 0, efd >= 0, fi_ring_init_file(memfd, UInt64(launch.ringSize)) == 0 else {
            closeAll(); throw SpawnError(description: "cannot make the ring (memfd, eventfd)")
        }
        // The child's ends at fixed numbers 3...7 (dup2 clears close-on-exec).
        // Copies above 15 first, so that no dup2 overwrites another source; the
        // child-only ends are closed here, the ring and its eventfd we keep.
        for i in ownedHere.indices {
            let copy = fcntl(ownedHere[i], F_DUPFD_CLOEXEC, 16)
            if i < 3 { close(ownedHere[i]) }
            ownedHere[i] = copy
        }
        let childFDs: [(Int32, Int32)] = [(ownedHere[0], Int32(FI_FD_CONTROL)), (ownedHere[3], Int32(FI_FD_RING)),
                                          (ownedHere[4], Int32(FI_FD_EVENT)), (ownedHere[2], Int32(FI_FD_CRASH)),
                                          (ownedHere[1], Int32(FI_FD_BULK))]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (from, to) in childFDs { posix_spawn_file_actions_adddup2(&actions, from, to) }
        var args = [HelperLaunch.executable, "--library", launch.library, "--parent", "\(getpid())"]
        args += launch.keepCapabilities ? ["--keep-capabilities", "1"] : ["--capabilities", launch.capabilities.joined(separator: ",")]
        if let u = launch.user { args += ["--user", u] }
        var cgroup: MemoryCgroup?
        if let limit = launch.memoryLimit {
            let (cg, why) = MemoryCgroup.make(name: launch.instanceName, limit: limit)
            cgroup = cg
            if cg == nil {
                args += ["--rlimit-data", "\(limit)"]
                logger.debug("plugin instance '\(launch.instanceName)': no memory cgroup (\(why ?? "?")); RLIMIT_DATA \(limit) instead")
            }
        }
        let cargs = args.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, HelperLaunch.executable, &actions, nil, cargs, environ)
        for fd in ownedHere { close(fd) }
        ownedHere = []
        guard rc == 0 else {
            cgroup?.remove()
            agentSide.forEach { close($0) }
            agentSide = []
            close(memfd)
            close(efd)
            throw SpawnError(description: "cannot start the plugin helper \(HelperLaunch.executable): \(String(cString: strerror(rc))) (scripts/build.sh builds it next to ferret)")
        }
        let pfd = fi_sys_pidfd_open(child)
        if let cgroup, !cgroup.add(pid: child) {
            logger.warning("plugin instance '\(launch.instanceName)': cannot move helper \(child) into \(cgroup.path)")
        }
        let helper = HelperProcess(pid: child, launch: launch, control: sp[0], pidfd: pfd, eventfd: efd, crashRead: cp[0], bulk: bp[0],
                                   cgroup: cgroup, context: context, logger: logger, onDeath: onDeath)
        // Our own mapping of the ring the helper shares.
        let mapped = fi_ring_map(memfd, efd, &helper.ring)
        close(memfd)
        guard mapped == 0 else {
            helper.kill()
            throw SpawnError(description: "cannot map the ring: \(String(cString: strerror(-mapped)))")
        }
        helper.startReader()
        return helper
    }

    private init(pid: pid_t, launch: HelperLaunch, control: Int32, pidfd: Int32, eventfd: Int32, crashRead: Int32, bulk: Int32,
                 cgroup: MemoryCgroup?, context: HostContext, logger: Logger, onDeath: @escaping @Sendable (HelperDeath) -> Void) {
        self.pid = pid
        self.launch = launch
        self.control = control
        self.pidfd = pidfd
        self.eventfd = eventfd
        self.crashRead = crashRead
        self.bulk = bulk
        self.cgroup = cgroup
        self.context = context
        self.logger = logger
        self.onDeath = onDeath
        context.waitsForRoom.store(true, ordering: .relaxed)
    }

    deinit {
        for fd in [control, pidfd, eventfd, crashRead, bulk] where fd >= 0 { close(fd) }
        fi_ring_unmap(&ring)
    }

    var isDead: Bool { lock.lock(); defer { lock.unlock() }; return death != nil }

    /// SIGKILL (a hang, a memory limit seen from outside, or shutdown).
    func kill() {
        lock.lock()
        killedByAgent = true
        lock.unlock()
        if pidfd >= 0 {
            _ = fi_sys_pidfd_kill(pidfd)
        } else {
            Glibc.kill(pid, SIGKILL)
        }
    }

    /// Waits until the reader has seen the death and drained the ring.
    func waitForDeath(timeout: Double) -> HelperDeath? {
        lock.lock()
        defer { lock.unlock() }
        let until = Date(timeIntervalSinceNow: timeout)
        while death == nil { if !lock.wait(until: until) { break } }
        return death
    }

    // MARK: - control calls

    /// Sends one request and waits for its reply, up to `timeout`.
    func call(_ request: [UInt8], timeout: Duration) -> HelperReply {
        let sent = request.withUnsafeBytes { send(control, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { return .died }
        let deadline = Clock.monotonicNanos() + UInt64(max(0, timeout.nanoseconds))
        var buf = [UInt8](repeating: 0, count: Int(FI_CONTROL_MAX))
        while true {
            let now = Clock.monotonicNanos()
            if now >= deadline { return .timedOut }
            var p = pollfd(fd: control, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(1000, max(1, (deadline - now) / 1_000_000))))
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(control, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return .died }
            var r2 = WireReader(buf[..<n])
            let status = Int32(bitPattern: r2.u32())
            let message = r2.string()
            let pointer = r2.string()
            guard !r2.failed else { return .died }
            return .reply(status: status, message: message, jsonPointer: pointer.isEmpty ? nil : pointer, rest: r2.rest)
        }
    }

    /// Waits (up to `timeout` seconds) until every record reserved so far has
    /// been delivered: what a call emitted is stamped with the call's targets
    /// before the agent changes them (a detach's last points keep their pid).
    func waitDelivered(timeout: Double = 2) {
        let target = fi_ring_producer_pos(&ring)
        let until = Clock.monotonicNanos() + UInt64(timeout * 1e9)
        while fi_ring_consumer_pos(&ring) < target && !isDead && Clock.monotonicNanos() < until {
            usleep(200)
        }
    }

    // MARK: - the reader thread

    private func startReader() {
        let t = Thread { [self] in self.readLoop() }
        t.name = "ferret-ring-\(pid)"
        t.start()
    }

    private func readLoop() {
        var decoder = RingDecoder(context: context, logger: logger, bulk: bulk)
        while true {
            _ = drain(&decoder)
            if fi_ring_prepare_wait(&ring) == 1 { continue }
            var fds = [pollfd(fd: eventfd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: crashRead, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            let r = poll(&fds, pidfd >= 0 ? 3 : 2, 1000)
            fi_ring_cancel_wait(&ring)
            if r < 0 && errno != EINTR { break }
            if fds[0].revents != 0 {
                var v: UInt64 = 0
                _ = read(eventfd, &v, 8)
            }
            if fds[1].revents != 0 { readCrashPipe() }
            if fds[2].revents != 0 || (pidfd < 0 && Glibc.kill(pid, 0) != 0) { break }
        }
        // Dead: everything committed is delivered; BUSY records (a producer cut
        // off mid-record) are skipped and counted.
        var drained = drain(&decoder)
        var lost = 0
        while fi_ring_skip_busy(&ring) == 1 {
            lost += 1
            drained += drain(&decoder)
        }
        readCrashPipe()
        decoder.release()
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signaled = (status & 0x7f) != 0 && (status & 0x7f) != 0x7f
        lock.lock()
        let d = HelperDeath(pid: pid, signal: signaled ? status & 0x7f : 0, exitStatus: signaled ? 0 : (status >> 8) & 0xff,
                            killedByAgent: killedByAgent, memoryLimitHit: cgroup?.oomKilled ?? false,
                            report: String(decoding: crashText, as: UTF8.self), drainedAfterDeath: drained, lostInFlight: lost)
        death = d
        lock.broadcast()
        lock.unlock()
        cgroup?.remove()
        onDeath(d)
    }

    /// How long the helper's producers refuse after the pipeline dropped one of
    /// its records: long enough for the queue to drain a little, short enough
    /// that a plugin which retries is not held off for long.
    static let congestion: UInt64 = 10_000_000

    /// Delivers every committed record. Returns how many.
    @discardableResult
    private func drain(_ decoder: inout RingDecoder) -> Int {
        var n = 0
        var rec = fi_record()
        while true {
            let st = fi_ring_peek(&ring, &rec)
            if st == -1 {
                logger.error("plugin instance '\(launch.instanceName)': helper \(pid) corrupted its ring; killing it")
                kill()
                break
            }
            guard st == 1 else { break }
            decoder.deliver(type: rec.type, payload: UnsafeRawBufferPointer(start: rec.payload, count: Int(rec.len)))
            fi_ring_release(&ring, &rec)
            if decoder.pipelineDropped { fi_ring_set_congested(&ring, Self.congestion) }
            n += 1
        }
        let dropped = fi_ring_dropped(&ring)
        if dropped > reportedDrops {
            context.dropped.increment(by: Int(dropped - reportedDrops))
            reportedDrops = dropped
        }
        return n
    }

    private func readCrashPipe() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            var p = pollfd(fd: crashRead, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return }
            let n = chunk.withUnsafeMutableBytes { read(crashRead, $0.baseAddress, $0.count) }
            guard n > 0 else { return }
            if crashText.count < 4 << 20 { crashText.append(contentsOf: chunk[..<n]) }
        }
    }
}

/// Little-endian control message encoding (ferret_isolation.h).
struct WireWriter {
    var bytes: [UInt8] = []
    init(op: Int32) { u32(UInt32(op)) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) { let u = Array(s.utf8); u32(UInt32(u.count)); bytes += u }
}

struct WireReader {
    var rest: ArraySlice<UInt8>
    var failed = false
    init(_ b: ArraySlice<UInt8>) { rest = b }
    mutating func u32() -> UInt32 {
        guard rest.count >= 4 else { failed = true; return 0 }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(rest[rest.startIndex + i]) << (8 * i) }
        rest = rest.dropFirst(4)
        return v
    }
    mutating func string() -> String {
        let n = Int(u32())
        guard !failed, rest.count >= n else { failed = true; return "" }
        let s = String(decoding: rest.prefix(n), as: UTF8.self)
        rest = rest.dropFirst(n)
        return s
    }
}
