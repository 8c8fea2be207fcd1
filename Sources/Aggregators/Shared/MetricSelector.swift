import FerretCore
/// A name pattern: `*` matches any run of characters (dots included), `?` one
/// character; everything else matches itself. `go.*`, `*.duration`, `process.cpu.time`.
public struct Glob: Sendable, Hashable, CustomStringConvertible {
    public let pattern: String
    private let bytes: [UInt8]
    private let hasWildcard: Bool

    public init(_ pattern: String) {
        self.pattern = pattern
        bytes = Array(pattern.utf8)
        hasWildcard = bytes.contains(UInt8(ascii: "*")) || bytes.contains(UInt8(ascii: "?"))
    }

    public var description: String { pattern }

    public func matches(_ s: String) -> Bool {
        if !hasWildcard { return s == pattern }
        var s = s
        return s.withUTF8 { text in bytes.withUnsafeBufferPointer { Self.match(text, $0) } }
    }

    /// Iterative wildcard matching: on a mismatch, the last `*` takes one more byte.
    private static func match(_ s: UnsafeBufferPointer<UInt8>, _ p: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0, j = 0
        var star = -1, mark = 0
        while i < s.count {
            if j < p.count, p[j] == UInt8(ascii: "*") {
                star = j
                mark = i
                j += 1
            } else if j < p.count, p[j] == UInt8(ascii: "?") || p[j] == s[i] {
                // `?` takes one UTF-8 sequence, not one byte.
                if p[j] == UInt8(ascii: "?") { i += sequenceLength(s[i]) - 1 }
                i += 1
                j += 1
            } else if star >= 0 {
                j = star + 1
                mark += 1
                i = mark
            } else {
                return false
            }
        }
        while j < p.count, p[j] == UInt8(ascii: "*") { j += 1 }
        return j == p.count
    }

    private static func sequenceLength(_ lead: UInt8) -> Int {
        switch lead {
        case 0xF0...: 4
        case 0xE0...: 3
        case 0xC0...: 2
        default: 1
        }
    }
}

/// What an attribute must be for a `where` condition: a glob on its text, or a
/// number compared as a number (so `1` matches the integer 1 and the double 1.0).
public struct ValuePattern: Sendable, Equatable, CustomStringConvertible {
    public let glob: Glob
    private let number: Double?

    public init(_ text: String) {
        glob = Glob(text)
        number = Double(text)
    }

    public var description: String { glob.pattern }

    public func matches(_ v: AttributeValue) -> Bool {
        switch v {
        case .string(let s): return glob.matches(s)
        case .int(let i): return number.map { $0 == Double(i) } ?? glob.matches(String(i))
        case .double(let d): return number.map { $0 == d } ?? glob.matches(String(d))
        case .bool(let b): return glob.matches(b ? "true" : "false")
        }
    }
}

/// Which metric points an aggregator works on: names by glob (`metrics`) and
/// attributes (`where`, matched against the point's attributes first, then its
/// resource's). Everything else passes through the aggregator untouched.
public struct MetricSelector: Sendable, Equatable, CustomStringConvertible {
    /// Empty selects every name.
    public var names: [Glob]
    /// Every condition must hold; a condition holds when the key's value matches
    /// one of its patterns.
    public var conditions: [(key: String, patterns: [ValuePattern])]

    /// The keys every aggregator accepts for selection.
    public static let keys = ["metrics", "where"]

    public init(names: [String] = [], where conditions: [(key: String, patterns: [String])] = []) {
        self.names = names.filter { $0 != "*" }.map(Glob.init)
        if names.contains("*") { self.names = [] }
        self.conditions = conditions.map { ($0.key, $0.patterns.map(ValuePattern.init)) }
    }

    public static func == (a: MetricSelector, b: MetricSelector) -> Bool {
        a.names == b.names && a.conditions.count == b.conditions.count
            && zip(a.conditions, b.conditions).allSatisfy { $0.key == $1.key && $0.patterns == $1.patterns }
    }

    public var description: String {
        var parts = [names.isEmpty ? "every metric" : names.map(\.pattern).joined(separator: ", ")]
        for c in conditions { parts.append("\(c.key)=\(c.patterns.map(\.description).joined(separator: "|"))") }
        return parts.joined(separator: " where ")
    }

    public func matchesName(_ name: String) -> Bool {
        names.isEmpty || names.contains { $0.matches(name) }
    }

    /// The `where` conditions alone.
    public func matchesAttributes(_ attributes: [Attribute], _ resource: Resource) -> Bool {
        for c in conditions {
            let value = attributes.first(where: { $0.key == c.key })?.value ?? resource[c.key]
            guard let value, c.patterns.contains(where: { $0.matches(value) }) else { return false }
        }
        return true
    }

    public func matches(_ m: MetricPoint) -> Bool {
        matchesName(m.name) && matchesAttributes(m.attributes, m.resource)
    }

    /// Reads `metrics` and `where` from an aggregator entry; `defaultMetrics`
    /// applies when `metrics` is absent.
    public static func decode(_ entry: ComponentConfig, _ d: ConfigDecoder, _ ctx: String,
                              defaultMetrics: [String] = ["*"]) -> MetricSelector {
        var names = defaultMetrics
        if let n = entry.node["metrics"] {
            names = d.stringList(n, "'metrics'", context: ctx) ?? names
            if names.contains(where: \.isEmpty) { d.fail(n.mark, "'metrics' \(ctx) has an empty pattern") }
        }
        var conditions: [(key: String, patterns: [String])] = []
        if let w = entry.node["where"] {
            for (key, _, value) in d.mapping(w, "'where'", context: ctx) ?? [] {
                let patterns = value.isNull ? [] : d.stringList(value, "'where.\(key)'", context: ctx) ?? []
                if patterns.isEmpty { d.fail(value.mark, "'where.\(key)' \(ctx) needs a value or a list of values") }
                conditions.append((key, patterns))
            }
        }
        return MetricSelector(names: names, where: conditions)
    }
}

/// A selector with its per-name answers cached (names repeat; globs cost).
/// Used from the pipeline's dispatcher thread only.
final class MetricFilter {
    let selector: MetricSelector
    private var byName: [String: Bool] = [:]

    init(_ selector: MetricSelector) { self.selector = selector }

    /// True when the aggregator works on this point.
    @inline(__always)
    func selects(_ m: MetricPoint) -> Bool {
        guard nameSelected(m.name) else { return false }
        return selector.conditions.isEmpty || selector.matchesAttributes(m.attributes, m.resource)
    }

    func nameSelected(_ name: String) -> Bool {
        if selector.names.isEmpty { return true }
        if let known = byName[name] { return known }
        let r = selector.matchesName(name)
        if byName.count >= 4096 { byName.removeAll(keepingCapacity: true) }
        byName[name] = r
        return r
    }
}
