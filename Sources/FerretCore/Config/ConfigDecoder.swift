import Foundation

/// Turns `YAMLNode`s into typed values, collecting every problem with its
/// position instead of stopping at the first one.
public final class ConfigDecoder {
    public private(set) var errors: [ConfigError] = []
    private let environment: [String: String]

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    public func fail(_ mark: SourceMark, _ message: String) {
        errors.append(ConfigError(mark: mark, message))
    }

    /// The pairs of a mapping, after rejecting keys not in `allowed`.
    /// `context` reads like "in rule 'go-services'".
    public func mapping(_ node: YAMLNode, _ what: String, context: String = "",
                        allowed: [String]? = nil) -> [(key: String, keyMark: SourceMark, value: YAMLNode)]? {
        if node.isNull { return [] }
        guard case .mapping(let pairs) = node.kind else {
            fail(node.mark, "expected a mapping for \(what)\(suffix(context)), got \(node.kindDescription)")
            return nil
        }
        var out: [(key: String, keyMark: SourceMark, value: YAMLNode)] = []
        for (k, v) in pairs {
            let key = k.scalar ?? ""
            if let allowed, !allowed.contains(key) {
                fail(k.mark, "unknown key '\(key)'\(suffix(context.isEmpty ? "in \(what)" : context))"
                    + Spelling.hint(for: key, among: allowed))
                continue
            }
            out.append((key, k.mark, v))
        }
        return out
    }

    public func sequence(_ node: YAMLNode, _ what: String, context: String = "") -> [YAMLNode]? {
        if node.isNull { return [] }
        guard case .sequence(let items) = node.kind else {
            fail(node.mark, "expected a sequence for \(what)\(suffix(context)), got \(node.kindDescription)")
            return nil
        }
        return items
    }

    /// A scalar with `${VAR}` / `${VAR:-default}` expanded.
    public func string(_ node: YAMLNode, _ what: String, context: String = "") -> String? {
        guard case .scalar(let raw, _) = node.kind else {
            fail(node.mark, "expected a string for \(what)\(suffix(context)), got \(node.kindDescription)")
            return nil
        }
        return expand(raw, at: node.mark)
    }

    public func bool(_ node: YAMLNode, _ what: String, context: String = "") -> Bool? {
        guard let s = scalarValue(node, what, "true or false", context) else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(node.mark, "expected true or false for \(what)\(suffix(context)), got '\(s)'")
            return nil
        }
    }

    public func int(_ node: YAMLNode, _ what: String, context: String = "", range: ClosedRange<Int>? = nil) -> Int? {
        guard let s = scalarValue(node, what, "an integer", context) else { return nil }
        guard let v = Int(s.replacingOccurrences(of: "_", with: "")) else {
            fail(node.mark, "expected an integer for \(what)\(suffix(context)), got '\(s)'")
            return nil
        }
        if let range, !range.contains(v) {
            fail(node.mark, "\(what) must be between \(range.lowerBound) and \(range.upperBound)\(suffix(context)), got \(v)")
            return nil
        }
        return v
    }

    public func duration(_ node: YAMLNode, _ what: String, context: String = "",
                         minimum: Duration? = nil) -> Duration? {
        guard let s = scalarValue(node, what, "a duration like '500ms', '1s' or '5m'", context) else { return nil }
        switch DurationParser.parse(s) {
        case .success(let d):
            if let minimum, d < minimum {
                fail(node.mark, "\(what) must be at least \(DurationParser.format(minimum))\(suffix(context)), got '\(s)'")
                return nil
            }
            return d
        case .failure(let reason):
            fail(node.mark, "invalid duration '\(s)' for \(what)\(suffix(context)): \(reason)")
            return nil
        }
    }

    public func stringList(_ node: YAMLNode, _ what: String, context: String = "") -> [String]? {
        if case .scalar = node.kind, let s = string(node, what, context: context) { return [s] }
        guard let items = sequence(node, what, context: context) else { return nil }
        return items.compactMap { string($0, what, context: context) }
    }

    // MARK: - helpers

    private func scalarValue(_ node: YAMLNode, _ what: String, _ expected: String, _ context: String) -> String? {
        guard case .scalar(let raw, _) = node.kind, !node.isNull else {
            fail(node.mark, "expected \(expected) for \(what)\(suffix(context)), got \(node.kindDescription)")
            return nil
        }
        return expand(raw, at: node.mark)
    }

    private func suffix(_ context: String) -> String { context.isEmpty ? "" : " \(context)" }

    /// Expands `${VAR}`, `${VAR:-default}` and `$$` (a literal `$`).
    public func expand(_ raw: String, at mark: SourceMark) -> String? {
        guard raw.contains("$") else { return raw }
        var out = ""
        var chars = raw[...]
        while let i = chars.firstIndex(of: "$") {
            out += chars[..<i]
            let rest = chars[chars.index(after: i)...]
            if rest.first == "$" {
                out += "$"
                chars = rest.dropFirst()
                continue
            }
            guard rest.first == "{", let close = rest.firstIndex(of: "}") else {
                out += "$"
                chars = rest
                continue
            }
            let body = rest[rest.index(after: rest.startIndex)..<close]
            let name: Substring, fallback: Substring?
            if let r = body.range(of: ":-") {
                name = body[..<r.lowerBound]
                fallback = body[r.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                fail(mark, "invalid variable reference '${\(body)}'")
                return nil
            }
            if let value = environment[String(name)], !(value.isEmpty && fallback != nil) {
                out += value
            } else if let fallback {
                out += fallback
            } else {
                fail(mark, "environment variable '\(name)' is not set (write ${\(name):-default} to give a default)")
                return nil
            }
            chars = rest[rest.index(after: close)...]
        }
        out += chars
        return out
    }
}

/// Durations in Go's notation: "500ms", "1s", "1m30s", "2h". Units: ns, us, µs, ms, s, m, h.
public enum DurationParser {
    public static func parse(_ text: String) -> Result<Duration, DurationError> {
        let s = text.trimmingCharacters(in: .whitespaces)
        if s.isEmpty { return .failure(DurationError("empty")) }
        if s == "0" { return .success(.zero) }
        var total: Double = 0
        var rest = Substring(s)
        while !rest.isEmpty {
            let numEnd = rest.firstIndex(where: { !($0.isNumber || $0 == ".") }) ?? rest.endIndex
            guard numEnd != rest.startIndex, let n = Double(rest[..<numEnd]) else {
                return .failure(DurationError("expected a number followed by a unit (ns, us, ms, s, m, h)"))
            }
            rest = rest[numEnd...]
            let unitEnd = rest.firstIndex(where: { $0.isNumber || $0 == "." }) ?? rest.endIndex
            let unit = rest[..<unitEnd]
            rest = rest[unitEnd...]
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            case "": return .failure(DurationError("missing unit after \(n) (use ns, us, ms, s, m or h)"))
            default: return .failure(DurationError("unknown unit '\(unit)' (use ns, us, ms, s, m or h)"))
            }
            total += n * scale
        }
        guard total < 1e18 else { return .failure(DurationError("too long")) }
        return .success(.nanoseconds(Int64(total.rounded())))
    }

    public static func format(_ d: Duration) -> String {
        let ns = d.nanoseconds
        if ns % 3_600_000_000_000 == 0, ns > 0 { return "\(ns / 3_600_000_000_000)h" }
        if ns % 60_000_000_000 == 0, ns > 0 { return "\(ns / 60_000_000_000)m" }
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        if ns % 1_000 == 0 { return "\(ns / 1_000)us" }
        return "\(ns)ns"
    }
}

public struct DurationError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

extension Duration {
    /// Whole nanoseconds (saturating).
    public var nanoseconds: Int64 {
        let (s, a) = components
        return s * 1_000_000_000 + a / 1_000_000_000
    }
}
