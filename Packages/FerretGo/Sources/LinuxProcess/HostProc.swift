import Glibc

/// Where the host's procfs is mounted. An agent deployed the way node agents
/// are (a DaemonSet with hostPID, the host's /proc mounted at /host/proc) reads
/// every process through that mount: the `host_proc` setting, or the
/// `FERRET_HOST_PROC` environment variable. The host sets the variable before it
/// loads any plugin, so the plugins in the same process read the same root.
public enum HostProc {
    /// The environment variable that names the procfs root.
    public static let environmentVariable = "FERRET_HOST_PROC"

    /// The procfs root: `FERRET_HOST_PROC` when set and not empty, else "/proc".
    /// Read once, at first use.
    public static let path: String = {
        if let v = getenv(environmentVariable), v.pointee != 0 {
            var s = String(cString: v)
            while s.count > 1 && s.hasSuffix("/") { s.removeLast() }
            return s
        }
        return "/proc"
    }()

    /// `<root>/<pid>`.
    public static func pid(_ pid: Int32) -> String { "\(path)/\(pid)" }

    /// `<root>/<pid>/<name>`, e.g. `file(pid, "status")`.
    public static func file(_ pid: Int32, _ name: String) -> String { "\(path)/\(pid)/\(name)" }

    /// Sets the procfs root for this process and the plugins it loads. Takes
    /// effect only before the first use of `path`; returns false (and changes
    /// nothing) when `path` was already read with another value.
    @discardableResult
    public static func configure(_ root: String) -> Bool {
        setenv(environmentVariable, root, 1)
        var want = root
        while want.count > 1 && want.hasSuffix("/") { want.removeLast() }
        return path == want
    }
}
