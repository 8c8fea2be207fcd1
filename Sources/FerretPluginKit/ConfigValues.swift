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
}
