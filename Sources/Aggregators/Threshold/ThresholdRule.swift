import FerretCore
import Foundation

/// One static rule of the `threshold` aggregator: `<metric> <op> <number> [for <duration>]`,
/// e.g. `go.gc.cpu.fraction > 0.25 for 30s` or
/// `go.goroutine.count{ferret.group=web} >= 10000 for 1m`, or the same as a mapping.
public struct ThresholdRule: Sendable, Equatable {
    public enum Comparison: String, Sendable, CaseIterable {
        case greater = ">", greaterOrEqual = ">=", less = "<", lessOrEqual = "<=", equal = "==", notEqual = "!="

        func holds(_ a: Double, _ b: Double) -> Bool {
            switch self {
            case .greater: a > b
            case .greaterOrEqual: a >= b
            case .less: a < b
            case .lessOrEqual: a <= b
            case .equal: a == b
            case .notEqual: a != b
            }
        }
    }

    /// What the alert events call the rule: its `name`, or its text.
    public var name: String
    public var selector: MetricSelector
    public var comparison: Comparison
    public var threshold: Double
    /// How long the condition must hold before the alert fires (0: at once).
    public var holdFor: UInt64
    public var severity: Severity

    public init(name: String, selector: MetricSelector, comparison: Comparison, threshold: Double,
                holdFor: UInt64 = 0, severity: Severity = .warn) {
        self.name = name
        self.selector = selector
        self.comparison = comparison
        self.threshold = threshold
        self.holdFor = holdFor
        self.severity = severity
    }

    /// The canonical text: `metric{k=v} > 0.25 for 30s`.
    public var text: String {
        var s = selector.names.map(\.pattern).first ?? "*"
        if !selector.conditions.isEmpty {
            s += "{" + selector.conditions.map { "\($0.key)=\($0.patterns.map(\.description).joined(separator: "|"))" }.joined(separator: ",") + "}"
        }
        s += " \(comparison.rawValue) \(formatFigure(threshold))"
        if holdFor > 0 { s += " for \(DurationParser.format(.nanoseconds(Int64(holdFor))))" }
        return s
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses the text form.
    public static func parse(_ text: String) -> Result<ThresholdRule, ParseError> {
        func fail(_ s: String) -> Result<ThresholdRule, ParseError> { .failure(ParseError(description: s)) }
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        // The metric: up to whitespace, an operator character or '{'.
        let stop: Set<Character> = [" ", "\t", ">", "<", "=", "!", "{"]
        let nameEnd = rest.firstIndex(where: { stop.contains($0) }) ?? rest.endIndex
        let metric = String(rest[..<nameEnd])
        guard !metric.isEmpty else { return fail("expected a metric name first, as in 'go.gc.cpu.fraction > 0.25 for 30s'") }
        rest = rest[nameEnd...]
        var conditions: [(key: String, patterns: [String])] = []
        if rest.first == "{" {
            guard let close = rest.firstIndex(of: "}") else { return fail("'{' without '}' after '\(metric)'") }
            for pair in rest[rest.index(after: rest.startIndex)..<close].split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { return fail("expected key=value in '{...}', got '\(pair)'") }
                let key = kv[0].trimmingCharacters(in: .whitespaces)
                var value = kv[1].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.first == "\"" || value.first == "'", value.last == value.first {
                    value = String(value.dropFirst().dropLast())
                }
                guard !key.isEmpty else { return fail("empty attribute name in '{...}'") }
                conditions.append((key, value.split(separator: "|").map(String.init)))
            }
            rest = rest[rest.index(after: close)...]
        }
        rest = rest.drop(while: { $0 == " " || $0 == "\t" })
        let opEnd = rest.firstIndex(where: { !"<>=!".contains($0) }) ?? rest.endIndex
        let opText = String(rest[..<opEnd])
        guard let op = Comparison(rawValue: opText == "=" ? "==" : opText) else {
            return fail(opText.isEmpty ? "expected a comparison (>, >=, <, <=, ==, !=) after '\(metric)'"
                                       : "unknown comparison '\(opText)'; use >, >=, <, <=, == or !=")
        }
        let words = rest[opEnd...].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = words.first else { return fail("expected a number after '\(opText)'") }
        guard let threshold = Double(first.replacingOccurrences(of: "_", with: "")), threshold.isFinite else {
            return fail("expected a number after '\(opText)', got '\(first)'")
        }
        var holdFor: UInt64 = 0
        switch words.count {
        case 1: break
        case 3 where words[1] == "for":
            switch DurationParser.parse(String(words[2])) {
            case .success(let d): holdFor = UInt64(max(0, d.nanoseconds))
            case .failure(let e): return fail("invalid duration '\(words[2])' after 'for': \(e)")
            }
        default:
            return fail("unexpected '\(words.dropFirst().joined(separator: " "))' after the threshold; the form is '<metric> <op> <number> [for <duration>]'")
        }
        let rule = ThresholdRule(name: "", selector: MetricSelector(names: [metric], where: conditions),
                                 comparison: op, threshold: threshold, holdFor: holdFor)
        return .success(rule)
    }
}

extension ThresholdRule {
    static let mappingKeys = ["name", "metric", "op", "value", "for", "where", "severity"]

    /// One entry of `rules`: the text form, or a mapping
    /// `{metric, op, value, for, where, severity, name}`; a mapping may also give
    /// `rule: "<text>"` with `severity` and `name`.
    static func decode(_ node: YAMLNode, _ d: ConfigDecoder, _ ctx: String) -> ThresholdRule? {
        if case .scalar = node.kind {
            guard let text = d.string(node, "a rule", context: ctx) else { return nil }
            switch parse(text) {
            case .success(var r):
                r.name = r.text
                return r
            case .failure(let e):
                d.fail(node.mark, "invalid rule '\(text)' \(ctx): \(e)")
                return nil
            }
        }
        guard let pairs = d.mapping(node, "a rule", context: ctx, allowed: mappingKeys + ["rule"]) else { return nil }
        let field = { (k: String) in pairs.first(where: { $0.key == k })?.value }
        var rule: ThresholdRule
        if let t = field("rule") {
            for k in ["metric", "op", "value", "for", "where"] where field(k) != nil {
                d.fail(t.mark, "a rule \(ctx) gives either 'rule' (the text form) or 'metric'/'op'/'value', not both ('\(k)')")
                return nil
            }
            guard let text = d.string(t, "'rule'", context: ctx) else { return nil }
            switch parse(text) {
            case .success(let r): rule = r
            case .failure(let e):
                d.fail(t.mark, "invalid rule '\(text)' \(ctx): \(e)")
                return nil
            }
        } else {
            guard let m = field("metric") else {
                d.fail(node.mark, "a rule \(ctx) needs 'metric' (or 'rule' with the text form)")
                return nil
            }
            guard let metric = d.string(m, "'metric'", context: ctx) else { return nil }
            var op = Comparison.greater
            if let o = field("op"), let s = d.string(o, "'op'", context: ctx) {
                guard let c = Comparison(rawValue: s == "=" ? "==" : s) else {
                    d.fail(o.mark, "unknown comparison '\(s)' \(ctx); use >, >=, <, <=, == or !=")
                    return nil
                }
                op = c
            }
            guard let v = field("value") else {
                d.fail(node.mark, "a rule \(ctx) needs 'value' (the threshold)")
                return nil
            }
            guard let threshold = AggregatorDecoding.double(d, v, "'value'", ctx) else { return nil }
            var holdFor: UInt64 = 0
            if let f = field("for"), let dur = d.duration(f, "'for'", context: ctx) { holdFor = UInt64(max(0, dur.nanoseconds)) }
            var conditions: [(key: String, patterns: [String])] = []
            if let w = field("where") {
                for (key, _, value) in d.mapping(w, "'where'", context: ctx) ?? [] {
                    let patterns = value.isNull ? [] : d.stringList(value, "'where.\(key)'", context: ctx) ?? []
                    if patterns.isEmpty { d.fail(value.mark, "'where.\(key)' \(ctx) needs a value or a list of values") }
                    conditions.append((key, patterns))
                }
            }
            rule = ThresholdRule(name: "", selector: MetricSelector(names: [metric], where: conditions),
                                 comparison: op, threshold: threshold, holdFor: holdFor)
        }
        rule.name = rule.text
        if let n = field("name") { rule.name = d.string(n, "'name'", context: ctx) ?? rule.name }
        if let s = field("severity"), let text = d.string(s, "'severity'", context: ctx) {
            let all: [Severity] = [.debug, .info, .warn, .error]
            if let sev = all.first(where: { $0.rawValue == text }) { rule.severity = sev } else {
                d.fail(s.mark, "unknown severity '\(text)' \(ctx); use debug, info, warn or error")
            }
        }
        return rule
    }
}
