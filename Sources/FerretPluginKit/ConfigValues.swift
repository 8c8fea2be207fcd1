import Foundation

/// Parsing of plugin config values that several plugins share.
public enum ConfigValues {
    /// "10s", "500ms", "250us", "1m", "2h", or a number of seconds; nil when
    /// not a positive duration.
    public static func durationNanos(_ v: Any) -> UInt64? {
        if let n = v as? Int { return n > 0 ? UInt64(n) * 1_000_000_000 : nil }
        if let d = v as? Double { return d > 0 ? UInt64(d * 1e9) : nil }
        guard let s = v as? String else { return nil }
        let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        for (u, mult) in units where s.hasSuffix(u) {
            guard let n = Double(s.dropLast(u.count).trimmingCharacters(in: .whitespaces)), n > 0 else { return nil }
            return UInt64(n * mult)
        }
        return nil
    }

    /// A size: a number of bytes, or a string with a unit: "64MiB", "512KiB",
    /// "1GiB" (K, M, G mean the same; KB, MB, GB are powers of ten); nil when
    /// not a size. The host's own config keys (memory_limit) read sizes the same way.
    public static func bytes(_ v: Any) -> Int? {
        if let n = v as? Int { return n >= 0 ? n : nil }
        guard let s = (v as? String)?.trimmingCharacters(in: .whitespaces), let end = s.firstIndex(where: { !$0.isNumber }) ?? Optional(s.endIndex),
              let n = Int(s[..<end]) else { return nil }
        let unit = s[end...].trimmingCharacters(in: .whitespaces).lowercased()
        let scale: Int
        switch unit {
        case "", "b": scale = 1
        case "k", "kib": scale = 1 << 10
        case "m", "mib": scale = 1 << 20
        case "g", "gib": scale = 1 << 30
        case "kb": scale = 1000
        case "mb": scale = 1_000_000
        case "gb": scale = 1_000_000_000
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: scale)
        return overflow ? nil : v
    }
}
