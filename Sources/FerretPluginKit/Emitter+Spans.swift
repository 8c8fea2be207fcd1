import Foundation

/// One finished span to emit (W3C trace context ids).
public struct PluginSpan: Sendable {
    public enum Kind: UInt32, Sendable { case `internal` = 0, server, client, producer, consumer }
    public enum Status: UInt32, Sendable { case unset = 0, ok, error }

    /// The attached process it was measured in.
    public var pid: Int32
    public var kind: Kind
    /// 16 bytes.
    public var traceID: [UInt8]
    /// 8 bytes.
    public var spanID: [UInt8]
    /// 8 bytes; all zero for a root span.
    public var parentSpanID: [UInt8]
    public var name: String
    public var startUnixNano: UInt64
    public var endUnixNano: UInt64
    public var status: Status
    public var statusMessage: String
    public var attributes: [(String, AttrValue)]

    public init(pid: Int32, kind: Kind, traceID: [UInt8], spanID: [UInt8], parentSpanID: [UInt8] = Array(repeating: 0, count: 8),
                name: String, startUnixNano: UInt64, endUnixNano: UInt64, status: Status = .unset,
                statusMessage: String = "", attributes: [(String, AttrValue)] = []) {
        self.pid = pid
        self.kind = kind
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.name = name
        self.startUnixNano = startUnixNano
        self.endUnixNano = endUnixNano
        self.status = status
        self.statusMessage = statusMessage
        self.attributes = attributes
    }
}

extension Emitter {
    /// Emits finished spans. Ids shorter than their field are zero-padded,
    /// longer ones truncated.
    @discardableResult
    public func spans(_ spans: [PluginSpan]) -> EmitResult {
        guard !spans.isEmpty else { return .ok }
        let arena = Arena()
        let recs = spans.map { s -> ferret_span in
            var r = ferret_span()
            r.hdr = header(ferret_span.self)
            r.pid = s.pid
            r.kind = s.kind.rawValue
            withUnsafeMutableBytes(of: &r.trace_id) { copyID(s.traceID, into: $0) }
            withUnsafeMutableBytes(of: &r.span_id) { copyID(s.spanID, into: $0) }
            withUnsafeMutableBytes(of: &r.parent_span_id) { copyID(s.parentSpanID, into: $0) }
            r.name = arena.str(s.name)
            r.start_time_unix_nano = s.startUnixNano
            r.end_time_unix_nano = s.endUnixNano
            r.status = s.status.rawValue
            r.status_message = arena.str(s.statusMessage)
            (r.attrs, r.attr_count) = arena.attrs(s.attributes)
            return r
        }
        return recs.withUnsafeBufferPointer { self.spans($0) }
    }
}

private func copyID(_ id: [UInt8], into dst: UnsafeMutableRawBufferPointer) {
    for i in 0..<dst.count { dst[i] = i < id.count ? id[i] : 0 }
}
