import FerretCore
import FerretDelivery
/// InfluxDB line protocol (1.x and 2.x): `measurement,tag=v field=1 1700000000000000000`.
/// Escaping per the spec: measurements escape commas and spaces; tag keys,
/// tag values and field keys escape commas, equals signs and spaces; string
/// field values escape double quotes and backslashes. Line breaks cannot be
/// escaped in names or tags and become spaces.
public struct LineProtocolWriter {
    public private(set) var bytes: [UInt8] = []
    /// Lines written since the last `take`.
    public private(set) var lines = 0

    public init(capacity: Int = 1 << 16) { bytes.reserveCapacity(capacity) }

    /// Hands over what was written and starts afresh.
    public mutating func take() -> (bytes: [UInt8], lines: Int) {
        defer { bytes = []; bytes.reserveCapacity(1 << 16); lines = 0 }
        return (bytes, lines)
    }

    public enum Field {
        case float(Double)
        case int(Int64)
        case string(String)
        case bool(Bool)
    }

    /// Writes one line. Tags with empty values are left out (the protocol
    /// refuses them); non-finite floats are left out (it cannot carry them).
    /// Returns false, writing nothing, when no field is left.
    @discardableResult
    public mutating func line(measurement: String, tags: [(String, String)], fields: [(String, Field)], timeUnixNano: UInt64) -> Bool {
        let usable = fields.filter {
            if case .float(let d) = $0.1 { return d.isFinite }
            return true
        }
        guard !usable.isEmpty, !measurement.isEmpty else { return false }
        escaped(measurement, equals: false)
        for (k, v) in tags.sorted(by: { $0.0 < $1.0 }) where !v.isEmpty && !k.isEmpty {
            bytes.append(UInt8(ascii: ","))
            escaped(k, equals: true)
            bytes.append(UInt8(ascii: "="))
            escaped(v, equals: true)
        }
        bytes.append(UInt8(ascii: " "))
        for (i, (k, f)) in usable.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            escaped(k, equals: true)
            bytes.append(UInt8(ascii: "="))
            switch f {
            case .float(let d): bytes.append(contentsOf: floatText(d).utf8)
            case .int(let n):
                bytes.append(contentsOf: String(n).utf8)
                bytes.append(UInt8(ascii: "i"))
            case .bool(let b): bytes.append(contentsOf: (b ? "true" : "false").utf8)
            case .string(let s):
                bytes.append(UInt8(ascii: "\""))
                for c in s.utf8 {
                    if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
                    if c == UInt8(ascii: "\n") {
                        bytes.append(UInt8(ascii: "\\"))
                        bytes.append(UInt8(ascii: "n"))
                        continue
                    }
                    bytes.append(c)
                }
                bytes.append(UInt8(ascii: "\""))
            }
        }
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: String(timeUnixNano).utf8)
        bytes.append(UInt8(ascii: "\n"))
        lines += 1
        return true
    }

    private mutating func escaped(_ s: String, equals: Bool) {
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: ","), UInt8(ascii: " "):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(c)
            case UInt8(ascii: "="):
                if equals { bytes.append(UInt8(ascii: "\\")) }
                bytes.append(c)
            case UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: " "))
            default:
                bytes.append(c)
            }
        }
    }

    /// Shortest text that reads back to the same double; integers without ".0".
    private func floatText(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }
}
