import Foundation
import Synchronization

/// What the agent knows about one process: the attributes rules match on.
public struct ProcessFacts: Sendable {
    public var pid: Int32
    public var ppid: Int32
    /// /proc/PID/stat field 22 (clock ticks since boot): (pid, startTicks) identifies a process.
    public var startTicks: UInt64
    public var exePath: String
    public var comm: String
    public var cmdline: [String]
    public var uid: UInt32
    public var user: String
    public var cgroup: String
    public var executable: ExecutableFacts?
    /// The container and pod the cgroup names; nil outside any known runtime.
    public var container: ContainerIdentity?
    /// False when only stat and the executable were read (`ProcFS.executableFacts(pid:)`):
    /// comm, cmdline, user and cgroup are then empty until `ProcFS.complete(_:)`.
    public var complete: Bool = true

    public var exeName: String { (exePath as NSString).lastPathComponent }
    public var isGo: Bool { executable?.isGo ?? false }
    public var goVersion: String? { executable?.goBuildInfo?.goVersion }
    public var commandLine: String { cmdline.joined(separator: " ") }
}

/// Reads processes from a procfs mount: /proc/PID/{stat, exe, comm, cmdline,
/// status, cgroup}; maps, task and memory are in ProcessMaps, ProcessTasks and
/// ProcessMemory. The binary is reached through /proc/PID/exe, so processes in
/// other mount namespaces and binaries deleted after start work. The root is
/// injectable so tests can use recorded fixtures as well as the live /proc.
public final class ProcFS: Sendable {
    public let root: String
    private let executables = Mutex<[ExecutableKey: ExecutableFacts]>([:])
    private let users = Mutex<[UInt32: String]>([:])

    struct ExecutableKey: Hashable { var dev: UInt64; var ino: UInt64; var size: Int64; var mtime: Int64 }

    public init(root: String = HostProc.path) { self.root = root }

    /// Every process id (thread-group leaders only).
    public func pids() -> [Int32] {
        guard let d = opendir(root) else { return [] }
        defer { closedir(d) }
        var out: [Int32] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let p = Int32(name), p > 0 { out.append(p) }
        }
        return out
    }

    /// Reads a process's facts, or nil if it is gone or is a kernel thread.
    public func facts(pid: Int32) -> ProcessFacts? {
        guard var f = executableFacts(pid: pid) else { return nil }
        return complete(&f) ? f : nil
    }

    /// The first, cheap part of a process's facts: /proc/PID/stat (parent, start
    /// time), the executable's path and its facts (cached per file identity, so a
    /// binary already seen costs a readlink and a stat). Enough to rule a process
    /// out by runtime, executable or pid without reading anything else: under an
    /// exec storm of programs no rule wants, that is all discovery reads.
    ///
    /// With `stat: false`, /proc/PID/stat is not read and ppid and startTicks
    /// stay 0: an exec keeps both, so a caller that saw the process's fork
    /// fills them from what it knows (``readStat(_:)`` reads them).
    public func executableFacts(pid: Int32, stat withStat: Bool = true) -> ProcessFacts? {
        let base = "\(root)/\(pid)"
        var ppid: Int32 = 0, start: UInt64 = 0
        if withStat {
            guard let (p, s) = Self.readStat(base + "/stat") else { return nil }
            (ppid, start) = (p, s)
        }
        let exePath = base + "/exe"
        guard let exe = readLink(exePath) else { return nil } // kernel threads have no exe
        return ProcessFacts(pid: pid, ppid: ppid, startTicks: start, exePath: exe, comm: "", cmdline: [],
                            uid: 0, user: "", cgroup: "", executable: executableFacts(exePath), complete: false)
    }

    /// Fills ppid and startTicks from /proc/PID/stat; false when the process is gone.
    @discardableResult
    public func readStat(_ f: inout ProcessFacts) -> Bool {
        guard let (p, s) = Self.readStat("\(root)/\(f.pid)/stat") else { return false }
        f.ppid = p
        f.startTicks = s
        return true
    }

    /// Reads the rest of a process's facts (comm, cmdline, owner, cgroup and the
    /// container identity behind it); false when the process is gone.
    @discardableResult
    public func complete(_ f: inout ProcessFacts) -> Bool {
        if f.complete { return true }
        let base = "\(root)/\(f.pid)"
        guard let status = readSmall("\(base)/status") else { return false }
        f.comm = readSmall("\(base)/comm").map { $0.trimmingCharacters(in: .newlines) } ?? ""
        f.cmdline = readSmall("\(base)/cmdline", limit: 1 << 16).map {
            $0.split(separator: "\0", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        } ?? []
        if let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) {
            f.uid = UInt32(line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first ?? "0") ?? 0
        }
        f.user = userName(f.uid)
        if let text = readSmall("\(base)/cgroup") {
            f.cgroup = Self.parseCgroup(text)
            f.container = ContainerIdentity.parse(cgroupFile: text)
        }
        f.complete = true
        return true
    }

    /// Go build info and linkage of the executable behind `path`, cached per file identity.
    public func executableFacts(_ path: String) -> ExecutableFacts? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let key = ExecutableKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino), size: Int64(st.st_size), mtime: Int64(st.st_mtim.tv_sec))
        if let hit = executables.withLock({ $0[key] }) { return hit }
        let facts = (try? ExecutableFacts.read(path: path)) ?? ExecutableFacts(goBuildInfo: nil, isStatic: false)
        executables.withLock { cache in
            if cache.count > 4096 { cache.removeAll() }
            cache[key] = facts
        }
        return facts
    }

    /// The start time (field 22) of a process, to tell a reused pid apart.
    public func startTicks(pid: Int32) -> UInt64? {
        Self.readStat("\(root)/\(pid)/stat")?.1
    }

    /// Parent pid and start time from a stat file, read into a stack buffer and
    /// parsed as bytes (discovery reads one per exec).
    static func readStat(_ path: String) -> (Int32, UInt64)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1024) { buf -> (Int32, UInt64)? in
            var n = 0
            while n < buf.count {
                let r = read(fd, buf.baseAddress! + n, buf.count - n)
                if r < 0 { if errno == EINTR { continue }; return nil }
                if r == 0 { break }
                n += r
            }
            return parseStat(UnsafeBufferPointer(rebasing: buf[0..<n]))
        }
    }

    /// Fields 4 (ppid) and 22 (starttime) of a stat line: the space-separated
    /// tokens after the last ')' are fields 3, 4, …
    static func parseStat(_ bytes: UnsafeBufferPointer<UInt8>) -> (Int32, UInt64)? {
        guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        var field = 2
        var value: UInt64 = 0
        var inToken = false
        var ppid: Int32?
        for i in (close + 1)..<bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\n") {
                if inToken {
                    if field == 4 { ppid = Int32(truncatingIfNeeded: value) }
                    if field == 22 { return ppid.map { ($0, value) } }
                }
                inToken = false
                continue
            }
            if !inToken { inToken = true; field += 1; value = 0 }
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { value = value &* 10 &+ UInt64(c - UInt8(ascii: "0")) }
        }
        if inToken && field == 22 { return ppid.map { ($0, value) } }
        return nil
    }

    /// The fields of a /proc/PID/stat line after the command name: element 0
    /// is field 3 (state), so field N is at index N - 3. The name may contain
    /// spaces and parentheses, so the fields resume after the last ')'.
    public static func statFields(_ s: String) -> [Substring]? {
        guard let close = s.lastIndex(of: ")") else { return nil }
        return s[s.index(after: close)...].split(separator: " ")
    }

    static func parseCgroup(_ s: String) -> String {
        let lines = s.split(separator: "\n")
        if let v2 = lines.first(where: { $0.hasPrefix("0::") }) { return String(v2.dropFirst(3)) }
        // cgroup v1: prefer the name=systemd or cpu hierarchy.
        for l in lines {
            let parts = l.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            if parts.count == 3, parts[1].contains("cpu") || parts[1].contains("systemd") { return String(parts[2]) }
        }
        return lines.first.map { String($0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).last ?? "") } ?? ""
    }

    func userName(_ uid: UInt32) -> String {
        if let n = users.withLock({ $0[uid] }) { return n }
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        let name: String
        if getpwuid_r(uid, &pwd, &buf, buf.count, &result) == 0, result != nil {
            name = String(cString: pwd.pw_name)
        } else {
            name = String(uid)
        }
        users.withLock { $0[uid] = name }
        return name
    }

    func readSmall(_ path: String, limit: Int = 16384) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: limit)
        var total = 0
        while total < limit {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, limit - total) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            total += n
        }
        return String(decoding: buf[0..<total], as: UTF8.self)
    }

    func readLink(_ path: String) -> String? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PATH_MAX) + 1) { buf -> String? in
            let n = readlink(path, buf.baseAddress!, buf.count - 1)
            guard n > 0 else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: buf.baseAddress!, count: n), as: UTF8.self)
        }
    }
}
