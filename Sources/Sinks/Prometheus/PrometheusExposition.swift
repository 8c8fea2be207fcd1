import FerretCore
import FerretHTTPServer
/// The two exposition formats and the byte-level writing both share.
public enum PrometheusFormat: Sendable, Equatable {
    /// The classic text format, version 0.0.4.
    case text
    /// OpenMetrics 1.0.0 text.
    case openMetrics

    public var contentType: String {
        switch self {
        case .text: "text/plain; version=0.0.4; charset=utf-8"
        case .openMetrics: "application/openmetrics-text; version=1.0.0; charset=utf-8"
        }
    }

    /// Chooses from an HTTP Accept header: OpenMetrics when it is acceptable
    /// (version 1.0.0 or unversioned) with a quality at least that of the text
    /// format; the text format otherwise (also for no header or `*/*`).
    /// Prometheus 2.42 sends `application/openmetrics-text;version=1.0.0,…;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`.
    public static func negotiate(accept: String?) -> PrometheusFormat {
        guard let accept, !accept.isEmpty else { return .text }
        var om = -1.0, text = -1.0
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: " \t") }
            guard let type = parts.first?.lowercased() else { continue }
            var q = 1.0
            var version: String?
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " \t\"") }
                guard kv.count == 2 else { continue }
                switch kv[0].lowercased() {
                case "q": q = Double(kv[1]) ?? 0
                case "version": version = kv[1]
                default: break
                }
            }
            switch type {
            case "application/openmetrics-text" where version == nil || version == "1.0.0": om = max(om, q)
            case "text/plain" where version == nil || version == "0.0.4": text = max(text, q)
            case "text/*", "*/*": text = max(text, q)
            default: break
            }
        }
        return om > 0 && om >= text ? .openMetrics : .text
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

/// Appends exposition text to a byte array.
struct ExpositionWriter {
    var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    @inline(__always)
    mutating func append(_ s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }

    @inline(__always)
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }

    @inline(__always)
    mutating func append(byte: UInt8) { bytes.append(byte) }

    /// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`,
    /// otherwise Swift's shortest round-tripping form (which Go's ParseFloat reads).
    mutating func append(value v: Double) {
        if v.isNaN { append("NaN"); return }
        if v.isInfinite { append(v < 0 ? "-Inf" : "+Inf"); return }
        if v == v.rounded(.towardZero) && abs(v) < 1e15 {
            append(integer: Int64(v))
            return
        }
        append(v.description)
    }

    mutating func append(integer: Int64) {
        if integer < 0 { bytes.append(0x2D) }
        append(unsigned: integer.magnitude)
    }

    mutating func append(unsigned: UInt64) {
        var n = unsigned
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { d in
            var i = 20
            repeat {
                i -= 1
                d[i] = UInt8(truncatingIfNeeded: n % 10) + 0x30
                n /= 10
            } while n > 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: d[i...]))
        }
    }

    /// A histogram bound as an `le` value: `+Inf`, else a float with a
    /// fraction or exponent (`1.0`, `0.005`), OpenMetrics' canonical form.
    mutating func append(bound: Double) {
        if bound.isInfinite { append(bound < 0 ? "-Inf" : "+Inf") } else if bound.isNaN { append("NaN") } else { append(bound.description) }
    }
}

extension PrometheusFormat {
    /// A label value between quotes: `\` → `\\`, `"` → `\"`, newline → `\n`
    /// (the same in both formats).
    static func escapeLabelValue(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x22 || $0 == 0x0A }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 8)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// HELP text: `\` and newline escaped; OpenMetrics also escapes `"`.
    func escapeHelp(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where self == .openMetrics: out += "\\\""
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
