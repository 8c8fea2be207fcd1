import Foundation

/// procfs files read to their end. Foundation's `String(contentsOfFile:)`
/// stops after the first 4 KiB of a procfs file (its size reads as 0), so a
/// long /proc/PID/maps or mountinfo came back cut short.
public enum ProcRead {
    public static func text(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            out.append(contentsOf: chunk[..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
