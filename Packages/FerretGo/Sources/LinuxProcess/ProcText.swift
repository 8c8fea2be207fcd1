import Glibc

/// Fast readers for small /proc text files, for collectors that read several per
/// process every interval: one open/read/close into a reused buffer, parsed as
/// bytes (no String, no Foundation). Not thread-safe: one instance per caller.
public final class ProcText {
    private var buffer: [UInt8]
    /// Bytes of the last `read`.
    public private(set) var count = 0

    public init(capacity: Int = 8192) { buffer = [UInt8](repeating: 0, count: capacity) }

    /// Reads the whole file (up to the buffer's size, grown as needed up to 1 MiB);
    /// false when it cannot be opened or read.
    public func read(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        count = 0
        while true {
            if count == buffer.count {
                guard buffer.count < 1 << 20 else { return true }
                buffer += [UInt8](repeating: 0, count: buffer.count)
            }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 { if errno == EINTR { continue }; return false }
            if n == 0 { return true }
            count += n
        }
    }

    /// The unsigned integer after `key` (e.g. "voluntary_ctxt_switches:") at the
    /// start of a line, skipping blanks; nil when absent.
    public func value(after key: StaticString) -> UInt64? {
        let k = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        return buffer.withUnsafeBufferPointer { b -> UInt64? in
            var i = 0
            while i + k.count <= count {
                // i is at a line start.
                var match = true
                for j in 0..<k.count where b[i + j] != k[j] { match = false; break }
                if match { return Self.number(b, from: i + k.count, to: count).value }
                while i < count && b[i] != 10 { i += 1 }
                i += 1
            }
            return nil
        }
    }

    /// The space-separated fields of a /proc/PID/stat line after the command
    /// (which may itself hold spaces and parentheses): field 3 (state) is index 0.
    /// Returns the numeric fields wanted, by their stat field number (1-based as in
    /// proc(5)); nil when the line is malformed.
    public func statFields(_ wanted: [Int]) -> [UInt64]? {
        buffer.withUnsafeBufferPointer { b -> [UInt64]? in
            var close = -1
            for i in stride(from: count - 1, through: 0, by: -1) where b[i] == UInt8(ascii: ")") { close = i; break }
            guard close >= 0 else { return nil }
            var out = [UInt64](repeating: 0, count: wanted.count)
            var field = 3, i = close + 2
            let last = wanted.max() ?? 0
            while i < count && field <= last {
                let start = i
                while i < count && b[i] != 32 && b[i] != 10 { i += 1 }
                if let w = wanted.firstIndex(of: field) {
                    guard let v = Self.number(b, from: start, to: i).value else { return nil }
                    out[w] = v
                    // Fields can repeat in `wanted`.
                    for (k, f) in wanted.enumerated() where f == field { out[k] = v }
                }
                field += 1
                i += 1
            }
            return field > last ? out : nil
        }
    }

    /// The `index`-th (0-based) space-separated unsigned number of the file.
    public func number(at index: Int) -> UInt64? {
        buffer.withUnsafeBufferPointer { b -> UInt64? in
            var i = 0, n = 0
            while i < count {
                while i < count && (b[i] == 32 || b[i] == 10) { i += 1 }
                let start = i
                while i < count && b[i] != 32 && b[i] != 10 { i += 1 }
                if n == index { return Self.number(b, from: start, to: i).value }
                n += 1
            }
            return nil
        }
    }

    private static func number(_ b: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> (value: UInt64?, end: Int) {
        var i = from
        while i < to && (b[i] == 32 || b[i] == 9) { i += 1 }
        var v: UInt64 = 0
        let start = i
        while i < to, b[i] >= 48, b[i] <= 57 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(b[i] - 48))
            if o1 || o2 { return (nil, i) }
            v = s
            i += 1
        }
        return (i > start ? v : nil, i)
    }

    /// The numeric entries of a /proc directory (pids, tids), via readdir; empty
    /// when it cannot be opened.
    public static func numericEntries(_ path: String) -> [Int32] {
        (try? ProcDirectory.numericEntries(path, pid: 0)) ?? []
    }
}
