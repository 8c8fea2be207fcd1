/// Appends JSON to a byte buffer without Foundation: the jsonl sink writes
/// a million points a second through this, so it avoids per-value allocation.
public struct JSONWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    @inline(__always) public mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    @inline(__always) public mutating func byte(_ b: UInt8) { bytes.append(b) }

    public mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var start = 0
            for i in 0..<utf8.count {
                let c = utf8[i]
                if c >= 0x20 && c != 0x22 && c != 0x5C { continue }
                if start < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i])) }
                escape(c)
                start = i + 1
            }
            if start < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func escape(_ c: UInt8) {
        switch c {
        case 0x22: raw("\\\"")
        case 0x5C: raw("\\\\")
        case 0x0A: raw("\\n")
        case 0x0D: raw("\\r")
        case 0x09: raw("\\t")
        default:
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            raw("\\u00")
            bytes.append(hex[Int(c >> 4)])
            bytes.append(hex[Int(c & 15)])
        }
    }

    public mutating func uint(_ v: UInt64) {
        if v < 10 { bytes.append(UInt8(truncatingIfNeeded: v) + 48); return }
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes of scratch
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &tmp) { buf in
            while x > 0 {
                buf[23 - n] = UInt8(truncatingIfNeeded: x % 10) + 48
                x /= 10
                n += 1
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[(24 - n)...]))
        }
    }

    public mutating func int(_ v: Int64) {
        if v < 0 {
            bytes.append(UInt8(ascii: "-"))
            uint(v == Int64.min ? UInt64(Int64.max) + 1 : UInt64(-v))
        } else {
            uint(UInt64(v))
        }
    }

    /// Integral values print without a fraction; NaN and infinities as null.
    public mutating func double(_ v: Double) {
        if !v.isFinite { raw("null"); return }
        if v == v.rounded(), abs(v) < 9.0e15 { int(Int64(v)); return }
        bytes.append(contentsOf: v.description.utf8)
    }

    public mutating func bool(_ v: Bool) { if v { raw("true") } else { raw("false") } }

    /// A string, or null.
    public mutating func string(_ s: String?) { if let s { string(s) } else { raw("null") } }
    /// An integer, or null.
    public mutating func int(_ v: Int64?) { if let v { int(v) } else { raw("null") } }

    /// A JSON array of `items`, each written by `element`.
    public mutating func array<S: Sequence>(_ items: S, _ element: (inout JSONWriter, S.Element) -> Void) {
        byte(UInt8(ascii: "["))
        var first = true
        for x in items {
            if !first { byte(UInt8(ascii: ",")) }
            first = false
            element(&self, x)
        }
        byte(UInt8(ascii: "]"))
    }

    /// `,"key":`: a member after a previous one.
    public mutating func key(_ k: StaticString) {
        byte(UInt8(ascii: ","))
        byte(UInt8(ascii: "\""))
        raw(k)
        raw("\":")
    }

    public mutating func attributeValue(_ v: AttributeValue) {
        switch v {
        case .string(let s): string(s)
        case .int(let i): int(i)
        case .double(let d): double(d)
        case .bool(let b): bool(b)
        }
    }

    public mutating func attributesObject(_ attrs: [Attribute]) {
        byte(UInt8(ascii: "{"))
        for (i, a) in attrs.enumerated() {
            if i > 0 { byte(UInt8(ascii: ",")) }
            string(a.key)
            byte(UInt8(ascii: ":"))
            attributeValue(a.value)
        }
        byte(UInt8(ascii: "}"))
    }

    public mutating func hex(_ id: [UInt8]) {
        let digits: StaticString = "0123456789abcdef"
        byte(UInt8(ascii: "\""))
        digits.withUTF8Buffer { d in
            for b in id {
                bytes.append(d[Int(b >> 4)])
                bytes.append(d[Int(b & 15)])
            }
        }
        byte(UInt8(ascii: "\""))
    }
}

extension JSONWriter {
    /// One signal as one line of the jsonl schema (see README "jsonl schema").
    public mutating func signalLine(_ signal: Signal) {
        switch signal {
        case .metric(let m): metricLine(m)
        case .span(let s): spanLine(s)
        case .profile(let p): profileLine(p)
        case .event(let e): eventLine(e)
        }
        raw("}\n")
    }

    private mutating func metricLine(_ m: MetricPoint) {
        raw("{\"signal\":\"metric\",\"name\":")
        string(m.name)
        raw(",\"kind\":\"")
        switch m.kind {
        case .gauge: raw("gauge")
        case .counter: raw("counter")
        case .histogram: raw("histogram")
        }
        raw("\",\"unit\":")
        string(m.unit)
        if let h = m.histogram {
            raw(",\"count\":")
            uint(h.count)
            raw(",\"sum\":")
            double(h.sum)
            raw(",\"bounds\":[")
            for (i, b) in h.bounds.enumerated() {
                if i > 0 { byte(UInt8(ascii: ",")) }
                double(b)
            }
            raw("],\"bucket_counts\":[")
            for (i, c) in h.bucketCounts.enumerated() {
                if i > 0 { byte(UInt8(ascii: ",")) }
                uint(c)
            }
            raw("]")
        } else {
            raw(",\"value\":")
            double(m.value)
        }
        raw(",\"time_unix_nano\":")
        uint(m.timeUnixNano)
        raw(",\"attributes\":")
        attributesObject(m.attributes)
        raw(",\"resource\":")
        bytes.append(contentsOf: m.resource.json)
    }

    private mutating func spanLine(_ s: Span) {
        raw("{\"signal\":\"span\",\"name\":")
        string(s.name)
        raw(",\"kind\":\"")
        bytes.append(contentsOf: s.kind.rawValue.utf8)
        raw("\",\"trace_id\":")
        hex(s.traceID)
        raw(",\"span_id\":")
        hex(s.spanID)
        raw(",\"parent_span_id\":")
        hex(s.parentSpanID)
        raw(",\"start_time_unix_nano\":")
        uint(s.startUnixNano)
        raw(",\"end_time_unix_nano\":")
        uint(s.endUnixNano)
        raw(",\"status\":\"")
        bytes.append(contentsOf: s.status.rawValue.utf8)
        raw("\"")
        if !s.statusMessage.isEmpty {
            raw(",\"status_message\":")
            string(s.statusMessage)
        }
        raw(",\"attributes\":")
        attributesObject(s.attributes)
        raw(",\"resource\":")
        bytes.append(contentsOf: s.resource.json)
    }

    private mutating func profileLine(_ p: Profile) {
        raw("{\"signal\":\"profile\",\"type\":")
        string(p.profileType)
        if let path = p.path {
            raw(",\"path\":")
            string(path)
        }
        raw(",\"size_bytes\":")
        uint(UInt64(p.data.count))
        raw(",\"samples\":")
        int(p.samples)
        raw(",\"start_time_unix_nano\":")
        uint(p.startUnixNano)
        raw(",\"duration_nano\":")
        uint(p.durationNano)
        raw(",\"attributes\":")
        attributesObject(p.attributes)
        raw(",\"resource\":")
        bytes.append(contentsOf: p.resource.json)
    }

    private mutating func eventLine(_ e: Event) {
        raw("{\"signal\":\"event\",\"name\":")
        string(e.name)
        raw(",\"severity\":\"")
        bytes.append(contentsOf: e.severity.rawValue.utf8)
        raw("\",\"body\":")
        string(e.body)
        raw(",\"time_unix_nano\":")
        uint(e.timeUnixNano)
        raw(",\"attributes\":")
        attributesObject(e.attributes)
        raw(",\"resource\":")
        bytes.append(contentsOf: e.resource.json)
    }
}
