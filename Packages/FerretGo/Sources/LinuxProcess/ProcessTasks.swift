import Glibc

/// The threads of a process, from procfs.
public enum ProcessTasks {
    /// The thread ids (TIDs) of process `pid`, ascending, from the entries of /proc/PID/task.
    /// The main thread's id equals `pid`. Threads may come and go while this runs; the
    /// result is a snapshot. Throws `.exited` if the process is gone.
    public static func threadIDs(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> [Int32] {
        try ProcDirectory.numericEntries("\(procRoot)/\(pid)/task", pid: pid).sorted()
    }

    /// The number of threads of process `pid`: the `Threads:` line of /proc/PID/status
    /// (one read, cheaper than listing /proc/PID/task).
    public static func threadCount(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> Int {
        let bytes = try ProcFile.read("\(procRoot)/\(pid)/status", pid: pid)
        guard let n = parseThreadCount(String(decoding: bytes, as: UTF8.self)) else {
            throw .other(pid: pid, errno: EINVAL)
        }
        return n
    }

    /// The value of the `Threads:` line of a /proc/PID/status text.
    public static func parseThreadCount(_ status: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix("Threads:") {
            return Int(line.dropFirst("Threads:".count).trimmingCharacters(in: " \t"))
        }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var s = self[...]
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return s
    }
}
