import FerretCore
import FerretHTTPServer
/// OpenTelemetry-to-Prometheus names, after the OTel specification's
/// "Prometheus and OpenMetrics Compatibility" (metric points to Prometheus):
/// characters outside `[a-zA-Z0-9_:]` become `_` (runs collapse to one), the
/// unit becomes a suffix (`s` → `seconds`, `By` → `bytes`, `1` → `ratio` for
/// gauges, `{…}` annotations dropped, `a/b` → `a_per_b`), and counters end in
/// `_total`. Label names are sanitised the same way (no `:`; a leading digit
/// gets `key_`, a leading `_` gets `key`, since `__` is Prometheus' own).
public enum PrometheusNaming {
    /// The metric family's name, without the counter's `_total`:
    /// `process.cpu.time` (s, counter) → `process_cpu_time_seconds`.
    public static func familyName(_ name: String, unit: String, kind: MetricKind) -> String {
        var base = sanitize(name, allowColon: true)
        if kind == .counter, base.hasSuffix("_total") { base.removeLast("_total".count) }
        let u = unitSuffix(unit, kind: kind)
        if !u.isEmpty, !base.hasSuffix("_" + u), base != u { base += "_" + u }
        if base.isEmpty { base = "_" }
        return base
    }

    /// The name counter samples carry (`…_total`); the family name otherwise.
    public static func sampleName(_ name: String, unit: String, kind: MetricKind) -> String {
        let f = familyName(name, unit: unit, kind: kind)
        return kind == .counter ? f + "_total" : f
    }

    /// `ferret.group` → `ferret_group`; `0x` → `key_0x`; `_x` → `key_x`.
    public static func labelName(_ key: String) -> String {
        var s = sanitize(key, allowColon: false)
        if s.isEmpty { return "key_" }
        if s.first == "_" { s = "key" + s }
        return s
    }

    /// The unit as a name suffix; empty when there is none to add.
    public static func unitSuffix(_ unit: String, kind: MetricKind) -> String {
        // Annotations in braces are dropped: "{goroutine}" → "", "By{packet}" → "By".
        var u = ""
        var depth = 0
        for c in unit {
            if c == "{" { depth += 1 } else if c == "}" { depth = max(0, depth - 1) } else if depth == 0 { u.append(c) }
        }
        u = trimmed(u)
        if u.isEmpty { return "" }
        if u == "1" { return kind == .gauge ? "ratio" : "" }
        if let slash = u.firstIndex(of: "/") {
            let num = String(u[..<slash]), den = String(u[u.index(after: slash)...])
            let n = num.isEmpty || num == "1" ? "" : (units[num] ?? sanitizeUnit(num))
            let d = perUnits[den] ?? units[den] ?? sanitizeUnit(den)
            if d.isEmpty { return n }
            return n.isEmpty ? "per_" + d : n + "_per_" + d
        }
        return units[u] ?? sanitizeUnit(u)
    }

    /// UCUM-ish abbreviations to the words Prometheus uses (the OTel collector's table).
    static let units: [String: String] = [
        "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
        "us": "microseconds", "ns": "nanoseconds",
        "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tebibytes",
        "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
        "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
        "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
        "Cel": "celsius", "Hz": "hertz", "%": "percent",
    ]
    /// Denominators of rates: `By/s` → `bytes_per_second`.
    static let perUnits: [String: String] = [
        "s": "second", "m": "minute", "min": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
    ]

    private static func trimmed(_ s: String) -> String {
        var t = Substring(s)
        while t.first?.isWhitespace == true { t.removeFirst() }
        while t.last?.isWhitespace == true { t.removeLast() }
        return String(t)
    }

    private static func sanitizeUnit(_ u: String) -> String {
        var s = sanitize(u, allowColon: false)
        while s.hasPrefix("_") { s.removeFirst() }
        while s.hasSuffix("_") { s.removeLast() }
        return s
    }

    /// Replaces what Prometheus does not allow with `_`, collapsing runs; a
    /// leading digit gets a `_` in front.
    static func sanitize(_ s: String, allowColon: Bool) -> String {
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count + 1)
        var lastUnderscore = false
        for b in s.utf8 {
            let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
                || b == 0x5F || (allowColon && b == 0x3A)
            if ok && b != 0x5F {
                out.append(b)
                lastUnderscore = false
            } else if b < 0x80 || (b & 0xC0) == 0xC0 {
                // One `_` per invalid character (continuation bytes of UTF-8 add nothing).
                if !lastUnderscore { out.append(0x5F) }
                lastUnderscore = true
            }
        }
        if let f = out.first, f >= 0x30 && f <= 0x39 { out.insert(0x5F, at: 0) }
        return String(decoding: out, as: UTF8.self)
    }
}
