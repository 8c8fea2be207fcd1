import FerretCore
import Foundation

/// Small decoding helpers the aggregator types share (on top of `ConfigDecoder`).
enum AggregatorDecoding {
    /// A number (`0.25`, `1e3`, `-4`); `range` bounds it.
    static func double(_ d: ConfigDecoder, _ node: YAMLNode, _ what: String, _ ctx: String,
                       range: ClosedRange<Double>? = nil) -> Double? {
        guard let s = d.string(node, what, context: ctx) else { return nil }
        guard let v = Double(s.replacingOccurrences(of: "_", with: "")), v.isFinite else {
            d.fail(node.mark, "expected a number for \(what) \(ctx), got '\(s)'")
            return nil
        }
        if let range, !range.contains(v) {
            d.fail(node.mark, "\(what) must be between \(format(range.lowerBound)) and \(format(range.upperBound)) \(ctx), got \(s)")
            return nil
        }
        return v
    }

    /// A duration in nanoseconds, at least `minimum`.
    static func nanos(_ d: ConfigDecoder, _ entry: ComponentConfig, _ key: String, _ ctx: String,
                      default value: Duration, minimum: Duration = .milliseconds(1)) -> UInt64 {
        guard let n = entry.node[key] else { return UInt64(value.nanoseconds) }
        let v = d.duration(n, "'\(key)'", context: ctx, minimum: minimum) ?? value
        return UInt64(v.nanoseconds)
    }

    static func bool(_ d: ConfigDecoder, _ entry: ComponentConfig, _ key: String, _ ctx: String, default value: Bool) -> Bool {
        entry.node[key].flatMap { d.bool($0, "'\(key)'", context: ctx) } ?? value
    }

    static func number(_ d: ConfigDecoder, _ entry: ComponentConfig, _ key: String, _ ctx: String,
                       default value: Double, range: ClosedRange<Double>? = nil) -> Double {
        entry.node[key].flatMap { double(d, $0, "'\(key)'", ctx, range: range) } ?? value
    }

    /// Words from a fixed vocabulary (`[sum, avg, max]`); unknown ones are reported
    /// with the allowed list.
    static func words(_ d: ConfigDecoder, _ entry: ComponentConfig, _ key: String, _ ctx: String,
                      allowed: [String], default value: [String]) -> [String] {
        guard let n = entry.node[key] else { return value }
        let items = d.stringList(n, "'\(key)'", context: ctx) ?? value
        var out: [String] = []
        for w in items {
            if allowed.contains(w) {
                if !out.contains(w) { out.append(w) }
            } else {
                d.fail(n.mark, "unknown value '\(w)' in '\(key)' \(ctx); use \(allowed.joined(separator: ", "))"
                    + Spelling.hint(for: w, among: allowed))
            }
        }
        return out
    }

    static func format(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }
}

/// Figures in event bodies: up to 3 decimals, no trailing zeros.
func formatFigure(_ v: Double) -> String {
    if !v.isFinite { return String(v) }
    if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
    var s = String(format: "%.3f", v)
    while s.hasSuffix("0") { s.removeLast() }
    if s.hasSuffix(".") { s.removeLast() }
    return s
}
