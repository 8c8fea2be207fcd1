import Foundation

/// A memory cgroup for one plugin helper, made under the agent's own cgroup
/// where the kernel lets the agent make one: cgroup v1's memory hierarchy, or
/// v2 when the agent's cgroup delegates the memory controller. Past the limit
/// the kernel's OOM killer ends the helper, and the cgroup's counters say so.
final class MemoryCgroup: Sendable {
    let path: String
    let version: Int
    let limit: UInt64

    private init(path: String, version: Int, limit: UInt64) {
        self.path = path
        self.version = version
        self.limit = limit
    }

    /// nil (with the reason) when no cgroup can be made here; the helper then
    /// gets RLIMIT_DATA instead.
    static func make(name: String, limit: UInt64, selfCgroup: String = "/proc/self/cgroup") -> (MemoryCgroup?, String?) {
        let text = fileText(selfCgroup) ?? ""
        let leaf = "ferret-plugin-\(name.map { $0.isLetter || $0.isNumber ? $0 : "-" }.map(String.init).joined())-\(UInt32.random(in: 0...UInt32.max))"
        // v1: a line "N:memory:/path" and the memory hierarchy mounted.
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1].split(separator: ",").contains("memory") else { continue }
            let dir = "/sys/fs/cgroup/memory\(parts[2] == "/" ? "" : String(parts[2]))/\(leaf)"
            guard mkdir(dir, 0o755) == 0 else { return (nil, "cannot make \(dir): \(String(cString: strerror(errno)))") }
            let cg = MemoryCgroup(path: dir, version: 1, limit: limit)
            guard cg.write("memory.limit_in_bytes", "\(limit)") else {
                cg.remove()
                return (nil, "cannot set \(dir)/memory.limit_in_bytes")
            }
            _ = cg.write("memory.memsw.limit_in_bytes", "\(limit)") // no swapping past the limit, where swap accounting is on
            return (cg, nil)
        }
        // v2: "0::/path" and the memory controller delegated to our subtree.
        if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) {
            let own = "/sys/fs/cgroup\(line.dropFirst(3) == "/" ? "" : String(line.dropFirst(3)))"
            let controllers = fileText("\(own)/cgroup.subtree_control") ?? ""
            guard controllers.split(whereSeparator: \.isWhitespace).contains("memory") else {
                return (nil, "the memory controller is not enabled under \(own) (cgroup.subtree_control)")
            }
            let dir = "\(own)/\(leaf)"
            guard mkdir(dir, 0o755) == 0 else { return (nil, "cannot make \(dir): \(String(cString: strerror(errno)))") }
            let cg = MemoryCgroup(path: dir, version: 2, limit: limit)
            guard cg.write("memory.max", "\(limit)") else {
                cg.remove()
                return (nil, "cannot set \(dir)/memory.max")
            }
            _ = cg.write("memory.swap.max", "0")
            return (cg, nil)
        }
        return (nil, "no memory cgroup found in \(selfCgroup)")
    }

    private func write(_ file: String, _ value: String) -> Bool {
        let fd = open("\(path)/\(file)", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Array(value.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == value.utf8.count
    }

    func add(pid: pid_t) -> Bool { write("cgroup.procs", "\(pid)") }

    /// Whether the OOM killer ended a process of this cgroup.
    var oomKilled: Bool {
        let file = version == 1 ? "memory.oom_control" : "memory.events"
        for line in (fileText("\(path)/\(file)") ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, f[0] == "oom_kill", let n = Int(f[1]) { return n > 0 }
        }
        // Kernels before 4.13 have no oom_kill line: the failure counter says the limit was hit.
        if version == 1, let n = Int((fileText("\(path)/memory.failcnt") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) {
            return n > 0
        }
        return false
    }

    /// Removes the (empty) cgroup. A v1 cgroup whose last task just died may
    /// still be busy for a moment: retried briefly.
    func remove() {
        for _ in 0..<50 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }
}

/// A small file's text (cgroup and proc files report no size).
func fileText(_ path: String) -> String? {
    (try? ProcFile.read(path, pid: 0)).map { String(decoding: $0, as: UTF8.self) }
}
