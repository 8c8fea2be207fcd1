import Glibc

/// Why a read of another process's memory failed.
public enum ProcessReadError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The process no longer exists (ESRCH), or is a zombie that has no address space left.
    case exited(pid: Int32)
    /// The memory is not mapped (EFAULT, or a short read): it was never mapped, was unmapped,
    /// or moved (a Go heap span freed, a stack grown and copied). `address` is the start of the
    /// first request that could not be read in full.
    case fault(pid: Int32, address: UInt64)
    /// The agent may not read this process (EPERM/EACCES): not root, or a Yama/LSM policy refuses.
    case permission(pid: Int32)
    /// Any other errno.
    case other(pid: Int32, errno: Int32)

    public var pid: Int32 {
        switch self {
        case .exited(let p), .fault(let p, _), .permission(let p), .other(let p, _): p
        }
    }

    public var description: String {
        switch self {
        case .exited(let pid): "process \(pid) has exited"
        case .fault(let pid, let address): "process \(pid): memory at 0x\(String(address, radix: 16)) is not mapped"
        case .permission(let pid): "process \(pid): permission denied"
        case .other(let pid, let e): "process \(pid): \(String(cString: strerror(e))) (errno \(e))"
        }
    }

    /// Classifies an errno from process_vm_readv or from opening a /proc/PID file.
    /// `faultAddress` is used for EFAULT.
    public static func from(errno e: Int32, pid: Int32, faultAddress: UInt64 = 0) -> ProcessReadError {
        switch e {
        case ESRCH, ENOENT: .exited(pid: pid)
        case EFAULT: .fault(pid: pid, address: faultAddress)
        case EPERM, EACCES: .permission(pid: pid)
        default: .other(pid: pid, errno: e)
        }
    }
}

/// Reading small /proc files whose size stat does not report.
public enum ProcFile {
    public static func read(_ path: String, pid: Int32) throws(ProcessReadError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ProcessReadError.from(errno: errno, pid: pid) }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ProcessReadError.from(errno: errno, pid: pid)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[..<n])
        }
        return out
    }
}

/// Listing /proc directories.
public enum ProcDirectory {
    /// The numeric entries (pids, tids) of a /proc directory, in readdir order.
    /// Throws `.exited` (for `pid`) when the directory is gone.
    public static func numericEntries(_ path: String, pid: Int32) throws(ProcessReadError) -> [Int32] {
        guard let dir = opendir(path) else { throw ProcessReadError.from(errno: errno, pid: pid) }
        defer { closedir(dir) }
        var out: [Int32] = []
        while let e = readdir(dir) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { raw -> Int32? in
                var v: Int32 = 0
                var digits = 0
                for c in raw {
                    if c == 0 { break }
                    guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9"), digits < 10 else { return nil }
                    v = v &* 10 &+ Int32(c - UInt8(ascii: "0"))
                    digits += 1
                }
                return digits > 0 && v > 0 ? v : nil
            }
            if let n { out.append(n) }
        }
        return out
    }
}
