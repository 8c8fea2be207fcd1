import Glibc

/// Process and thread ids across PID namespaces.
///
/// A process in a container has one id in each PID namespace from the one the
/// procfs was mounted in down to its own. The kernel lists them in the `NSpid:`
/// line of /proc/PID/status and /proc/PID/task/TID/status, outermost first:
/// `NSpid: 48213 7 1` is pid 48213 on the host, 7 in the container's parent and 1
/// in its own namespace. A program only ever sees its innermost ids, so what it
/// records (Go's `m.procid`, from gettid) must be mapped before it is compared
/// with the host's /proc.
public enum PIDNamespace {
    /// The ids of a `NSpid:` line of a status text, outermost first; nil when the
    /// text has no such line (kernels before 4.1).
    public static func nsPIDs(status: String) -> [Int32]? {
        nsPIDs(status: Array(status.utf8))
    }

    /// The same, from the raw bytes of a status file.
    public static func nsPIDs(status bytes: [UInt8]) -> [Int32]? {
        let key = Array("NSpid:".utf8)
        var i = 0
        while i < bytes.count {
            // At the start of a line.
            if bytes.count - i >= key.count && bytes[i] == key[0] && Array(bytes[i..<(i + key.count)]) == key {
                var out: [Int32] = []
                var j = i + key.count
                var value: Int64 = -1
                while j < bytes.count && bytes[j] != UInt8(ascii: "\n") {
                    let c = bytes[j]
                    if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                        value = (value < 0 ? 0 : value) * 10 + Int64(c - UInt8(ascii: "0"))
                        if value > Int64(Int32.max) { return nil }
                    } else if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") {
                        if value >= 0 { out.append(Int32(value)); value = -1 }
                    } else {
                        return nil
                    }
                    j += 1
                }
                if value >= 0 { out.append(Int32(value)) }
                return out.isEmpty ? nil : out
            }
            while i < bytes.count && bytes[i] != UInt8(ascii: "\n") { i += 1 }
            i += 1
        }
        return nil
    }

    /// The NSpid ids of process `pid`, outermost first (`[pid]` when it shares the
    /// namespace of the procfs mount). Throws `.exited` when it is gone.
    public static func ids(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> [Int32] {
        let bytes = try ProcFile.read("\(procRoot)/\(pid)/status", pid: pid)
        return nsPIDs(status: bytes) ?? [pid]
    }

    /// The namespace depth of `pid` below the procfs mount's: 0 for a process of
    /// the host's namespace, 1 for a container, 2 for a container in a container.
    public static func depth(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> Int {
        try ids(pid: pid, procRoot: procRoot).count - 1
    }

    /// The identity of the PID namespace of `pid` (the inode of /proc/PID/ns/pid),
    /// or nil when it cannot be read.
    public static func namespaceInode(pid: Int32, procRoot: String = HostProc.path) -> UInt64? {
        var st = stat()
        guard stat("\(procRoot)/\(pid)/ns/pid", &st) == 0 else { return nil }
        return UInt64(st.st_ino)
    }
}

/// How the thread ids a process sees map to the host's: built from the `NSpid:`
/// lines of /proc/PID/task/TID/status. For a process in the host's namespace the
/// map is the identity and costs one status read.
public struct ThreadIDMap: Sendable, Equatable {
    /// The process's namespace depth below the procfs mount's (0 = host).
    public let depth: Int
    /// In-namespace thread id → host thread id (empty when depth is 0).
    public let toHost: [Int32: Int32]
    /// Every host thread id of the process, ascending.
    public let hostTIDs: [Int32]

    public init(depth: Int, toHost: [Int32: Int32], hostTIDs: [Int32]) {
        self.depth = depth
        self.toHost = toHost
        self.hostTIDs = hostTIDs
    }

    /// Reads the map of process `pid`. Threads that exit while it runs are left
    /// out; throws `.exited` if the process itself is gone.
    public static func read(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> ThreadIDMap {
        let depth = try PIDNamespace.depth(pid: pid, procRoot: procRoot)
        let tids = try ProcDirectory.numericEntries("\(procRoot)/\(pid)/task", pid: pid)
        guard depth > 0 else { return ThreadIDMap(depth: 0, toHost: [:], hostTIDs: tids) }
        var map: [Int32: Int32] = [:]
        var live: [Int32] = []
        for tid in tids {
            // A thread gone since the listing is not an error.
            guard let bytes = try? ProcFile.read("\(procRoot)/\(pid)/task/\(tid)/status", pid: pid),
                  let ids = PIDNamespace.nsPIDs(status: bytes), let inner = ids.last else { continue }
            map[inner] = tid
            live.append(tid)
        }
        return ThreadIDMap(depth: depth, toHost: map, hostTIDs: live)
    }

    /// The host thread id of a thread id the process itself sees (Go's m.procid),
    /// or nil when no live thread has it.
    public func hostTID(ofNamespaced id: Int64) -> Int32? {
        guard id > 0, id <= Int64(Int32.max) else { return nil }
        if depth == 0 { return hostTIDs.contains(Int32(id)) ? Int32(id) : nil }
        return toHost[Int32(id)]
    }
}
