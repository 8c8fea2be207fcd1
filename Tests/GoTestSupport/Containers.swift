import Foundation
import Glibc

/// Test containers made the way container runtimes make them, without needing a
/// runtime installed: a "pod sandbox" process (`sleep infinity`, like Kubernetes'
/// pause container) in new PID and mount namespaces (`unshare --pid --mount
/// --fork --mount-proc`), a tmpfs mounted only inside at `appDir`, and a cgroup
/// named in a runtime's layout, created in every cgroup hierarchy the machine
/// has (v1, v2 or both). Programs are copied into the tmpfs and started inside
/// with `nsenter`, after moving themselves into the cgroup: the binary exists
/// only in the container's filesystem, and the program sees its own pids.
///
/// A container can hold a nested one (a container in a container: two PID
/// namespaces below the host's). Stopping kills the sandbox, which ends its
/// namespace and everything in it, and removes the cgroups.
public final class TestContainer: @unchecked Sendable {
    public enum Layout: String, CaseIterable, Sendable {
        /// /system.slice/docker-<id>.scope (Docker, systemd cgroup driver).
        case dockerSystemd
        /// /docker/<id> (Docker, cgroupfs driver).
        case dockerCgroupfs
        /// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope.
        case containerdKubepods
        /// /kubepods/besteffort/pod<uid>/<id> (kubelet with the cgroupfs driver).
        case kubepodsCgroupfs

        /// The runtime an agent should name, if the layout says.
        public var runtime: String? {
            switch self {
            case .dockerSystemd, .dockerCgroupfs: "docker"
            case .containerdKubepods: "containerd"
            case .kubepodsCgroupfs: nil
            }
        }
        public var hasPod: Bool { self == .containerdKubepods || self == .kubepodsCgroupfs }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    public let layout: Layout
    /// 64 hex digits, as runtimes name containers.
    public let containerID: String
    /// A Kubernetes pod UID (for the kubepods layouts).
    public let podUID: String?
    /// The cgroup path, as /proc/PID/cgroup shows it.
    public let cgroupPath: String
    /// Where the container's tmpfs is mounted, inside it (the same path on the
    /// host is an empty folder).
    public let appDir: String
    /// Programs run chrooted into the tmpfs, which is owned by nobody (65534)
    /// with mode 0700, as a container's root file system is its own: a reader
    /// without CAP_DAC_OVERRIDE cannot list /proc/PID/root/.
    public let privateRoot: Bool
    /// The host pid of the sandbox (pid 1 of the innermost namespace).
    public private(set) var sandboxPID: Int32 = 0
    /// How many PID namespaces below the host's the programs run (1, or 2 nested).
    public let depth: Int
    private let unshare = Process()
    private var cgroupDirs: [String] = []

    /// Starts a sandbox in `layout`'s cgroup with its tmpfs at `appDir` (created
    /// on the host if missing; the default is unique per container).
    public init(layout: Layout, nested: Bool = false, appDir: String? = nil, privateRoot: Bool = false) throws {
        guard geteuid() == 0 else { throw Failure("test containers need root (unshare, mount, cgroups)") }
        self.layout = layout
        self.privateRoot = privateRoot
        depth = nested ? 2 : 1
        containerID = Self.randomHex(32)
        podUID = layout.hasPod ? Self.randomUUID() : nil
        switch layout {
        case .dockerSystemd: cgroupPath = "/system.slice/docker-\(containerID).scope"
        case .dockerCgroupfs: cgroupPath = "/docker/\(containerID)"
        case .containerdKubepods:
            let u = podUID!.replacingOccurrences(of: "-", with: "_")
            cgroupPath = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod\(u).slice/cri-containerd-\(containerID).scope"
        case .kubepodsCgroupfs: cgroupPath = "/kubepods/besteffort/pod\(podUID!)/\(containerID)"
        }
        self.appDir = appDir ?? NSTemporaryDirectory() + "ferret-ct-\(containerID.prefix(12))"
        try FileManager.default.createDirectory(atPath: self.appDir, withIntermediateDirectories: true)
        cgroupDirs = try Self.makeCgroups(cgroupPath)

        // Outer sandbox: join the cgroup, mount the tmpfs, then sleep as pid 1.
        // Nested: the outer sandbox starts the inner one (new PID namespace again,
        // its own /proc) and the tmpfs is mounted in the outer mount namespace,
        // which the inner one shares.
        let join = cgroupDirs.map { "echo $$ > '\($0)/cgroup.procs'" }.joined(separator: "; ")
        let mode = privateRoot ? "mode=700,uid=65534,gid=65534" : "mode=755"
        var mountTmpfs = "mount -t tmpfs -o size=512m,\(mode) ferret-ct '\(self.appDir)'"
        if privateRoot {  // the chrooted programs' own /proc (this PID namespace's)
            mountTmpfs += " && mkdir '\(self.appDir)/proc' && mount -t proc proc '\(self.appDir)/proc'"
        }
        let inner = nested
            ? "exec unshare --pid --fork --mount-proc --kill-child sh -c 'echo ready; exec sleep infinity'"
            : "echo ready; exec sleep infinity"
        unshare.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        unshare.arguments = ["--pid", "--mount", "--fork", "--mount-proc", "--kill-child", "--propagation", "private",
                             "/bin/sh", "-c", "set -e; \(join); \(mountTmpfs); \(inner)"]
        let out = Pipe()
        unshare.standardOutput = out
        unshare.standardError = FileHandle.nullDevice
        unshare.standardInput = FileHandle.nullDevice
        try unshare.run()
        let line = Self.readLine(out.fileHandleForReading.fileDescriptor, timeout: 10)
        guard line == "ready" else {
            stop()
            throw Failure("container \(layout) did not start (got '\(line)')")
        }
        // The sandbox: the deepest descendant of unshare running sleep.
        Wait.until("the sandbox process", timeout: 5, poll: 0.01) {
            if let s = Self.descendants(of: unshare.processIdentifier).last(where: { Self.comm($0) == "sleep" }),
               Self.nsDepth(s) == depth {
                sandboxPID = s
                return true
            }
            return false
        }
        guard sandboxPID > 0 else {
            stop()
            throw Failure("container \(layout): no sandbox process at depth \(depth)")
        }
    }

    /// Copies `binary` into the container's tmpfs as `name` (replacing what was
    /// there: removed first, as an image update would, so the file is new).
    @discardableResult
    public func install(_ binary: String, as name: String) throws -> String {
        let dest = appDir + "/" + name
        let r = try Self.run("/usr/bin/nsenter", ["-t", String(sandboxPID), "-m", "--", "/bin/sh", "-c",
                                                   "rm -f '\(dest)' && cp '\(binary)' '\(dest)' && chmod 755 '\(dest)'"])
        guard r.status == 0 else { throw Failure("install \(name) in container: \(r.output)") }
        return dest
    }

    /// The command that runs `path` (inside the container) with `arguments` in
    /// the container's namespaces and cgroup. Run it with Process; the program is
    /// nsenter's child: find its host pid with `programPID(launcher:)`.
    /// With `privateRoot`, the program runs chrooted into the tmpfs (`path`
    /// under `appDir` becomes `/name` there): a static build only.
    public func command(_ path: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        let join = cgroupDirs.map { "echo $$ > '\($0)/cgroup.procs'" }.joined(separator: "; ")
        if privateRoot && path.hasPrefix(appDir + "/") {
            return ("/usr/bin/nsenter", ["-t", String(sandboxPID), "-p", "-m", "--", "/bin/sh", "-c",
                                         "\(join); exec chroot '\(appDir)' \"$0\" \"$@\"", String(path.dropFirst(appDir.count))] + arguments)
        }
        return ("/usr/bin/nsenter", ["-t", String(sandboxPID), "-p", "-m", "--", "/bin/sh", "-c",
                                     "\(join); exec \"$0\" \"$@\"", path] + arguments)
    }

    /// The host pid of the program a `command` launcher (nsenter, host pid
    /// `launcher`) started: its descendant in the container's namespace.
    public func programPID(launcher: Int32, timeout: Double = 5) throws -> Int32 {
        let found = try? Wait.value("the program under nsenter", timeout: timeout, poll: 0.005) { () -> Int32? in
            Self.descendants(of: launcher).first(where: { Self.nsDepth($0) == depth })
        }
        guard let found else { throw Failure("no program under nsenter \(launcher) at namespace depth \(depth)") }
        return found
    }

    /// A program started in the container with `spawn`.
    public struct Program {
        /// nsenter's host pid, and the program's (its child in the namespace).
        public let launcher: pid_t
        public let pid: pid_t
        /// The read end of the program's stdout.
        public let stdout: Int32
    }

    /// Starts `path` (inside the container) with `arguments`, waits for a stdout
    /// line containing `ready` when given, and returns its pids. posix_spawn and
    /// waitpid, not Foundation's Process: nsenter outlives nothing here, and
    /// Foundation's Process did not always see an nsenter killed before its child
    /// exit (waitUntilExit hung on the zombie).
    public func spawn(_ path: String, _ arguments: [String], ready: String? = nil, timeout: Double = 10) throws -> Program {
        let c = command(path, arguments)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure("pipe: \(String(cString: strerror(errno)))") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([c.executable] + c.arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var launcher: pid_t = 0
        let rc = posix_spawn(&launcher, c.executable, &actions, nil, argv, environ)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); throw Failure("posix_spawn nsenter: \(String(cString: strerror(rc)))") }
        if let ready {
            let line = Self.readLine(fds[0], timeout: timeout)
            guard line.contains(ready) else {
                Self.reap(launcher)
                close(fds[0])
                throw Failure("\(path) in container: no '\(ready)' line (got '\(line)')")
            }
        }
        do {
            return Program(launcher: launcher, pid: try programPID(launcher: launcher), stdout: fds[0])
        } catch {
            Self.reap(launcher)
            close(fds[0])
            throw error
        }
    }

    /// Kills a spawned program and its nsenter, and reaps nsenter.
    public func kill(_ p: Program) {
        _ = Glibc.kill(p.pid, SIGKILL)
        Self.reap(p.launcher)
        close(p.stdout)
    }

    static func reap(_ pid: pid_t) {
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Kills the sandbox (its PID namespace ends, and everything in it) and
    /// removes the cgroups.
    public func stop() {
        if unshare.isRunning {
            _ = Glibc.kill(unshare.processIdentifier, SIGKILL)
            unshare.waitUntilExit()
        }
        for dir in cgroupDirs.reversed() {
            // The namespace's processes take a moment to be reaped.
            Wait.until("cgroup \(dir) removed", timeout: 2) { rmdir(dir) == 0 || errno != EBUSY }
        }
        // Parents created for the layout, if empty now (deepest first).
        for root in Self.hierarchies() {
            var path = cgroupPath
            while let slash = path.lastIndex(of: "/"), slash != path.startIndex {
                path = String(path[..<slash])
                _ = rmdir(root + path)
            }
        }
        cgroupDirs = []
        try? FileManager.default.removeItem(atPath: appDir)
    }

    deinit { stop() }

    // MARK: - helpers

    /// The mount points of every cgroup hierarchy: v2 (cgroup2) and, for v1, the
    /// named systemd hierarchy and the pids and cpu controllers.
    static func hierarchies() -> [String] {
        guard let text = ProcRead.text("/proc/self/mountinfo") else { return [] }
        var out: [String] = []
        for line in text.split(separator: "\n") {
            let parts = line.components(separatedBy: " - ")
            guard parts.count == 2 else { continue }
            let left = parts[0].split(separator: " "), right = parts[1].split(separator: " ")
            guard left.count > 4, right.count >= 3 else { continue }
            let mountPoint = String(left[4])
            if right[0] == "cgroup2" { out.append(mountPoint) }
            if right[0] == "cgroup" {
                let opts = right[2].split(separator: ",")
                if opts.contains("name=systemd") || opts.contains("pids") || opts.contains("cpu") { out.append(mountPoint) }
            }
        }
        return out
    }

    static func makeCgroups(_ path: String) throws -> [String] {
        var made: [String] = []
        var problems: [String] = []
        for root in hierarchies() {
            let dir = root + path
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                made.append(dir)
            } catch {
                problems.append("\(dir): \(error)")
            }
        }
        guard !made.isEmpty else { throw Failure("no cgroup hierarchy took \(path): \(problems)") }
        return made
    }

    static func randomHex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    static func randomUUID() -> String { UUID().uuidString.lowercased() }

    /// Every descendant of `pid`, breadth first.
    public static func descendants(of pid: Int32) -> [Int32] {
        var out: [Int32] = []
        var queue = [pid]
        while !queue.isEmpty {
            let p = queue.removeFirst()
            var kids: [Int32] = []
            for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/task")) ?? [] {
                let text = (try? String(contentsOfFile: "/proc/\(p)/task/\(tid)/children", encoding: .utf8)) ?? ""
                kids += text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            out += kids
            queue += kids
        }
        return out
    }

    static func comm(_ pid: Int32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
    }

    /// The number of `NSpid` ids minus one: 0 on the host.
    public static func nsDepth(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("NSpid:") }) else { return -1 }
        return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).count - 2
    }

    /// The first line `fd` gives within `timeout` seconds (what came, if no
    /// newline did). Each check blocks in poll(2) for up to 100 ms, so the wait
    /// needs no poll interval of its own.
    public static func readLine(_ fd: Int32, timeout: Double) -> String {
        var line = Data()
        var byte: UInt8 = 0
        Wait.until("a line on fd \(fd)", timeout: timeout, poll: 0) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) >= 0 else { return true }
            if p.revents == 0 { return false }
            guard read(fd, &byte, 1) == 1 else { return true }
            if byte == UInt8(ascii: "\n") { return true }
            line.append(byte)
            return false
        }
        return String(decoding: line, as: UTF8.self)
    }

    static func run(_ exe: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
