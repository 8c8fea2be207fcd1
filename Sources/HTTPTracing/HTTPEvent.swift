import Foundation

/// One finished request as the BPF program reports it (`struct http_event` in
/// bpf/http_tracer.bpf.c, 384 bytes; offsets below follow that layout).
public struct HTTPEvent: Sendable, Equatable {
    public enum Kind: UInt32, Sendable { case server = 1, client = 2 }

    /// `F_*` in the BPF C.
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// An incoming traceparent set the trace id and the parent span.
        public static let traceparentFound = Flags(rawValue: 1)
        /// A traceparent header was there but malformed (a new trace was started).
        public static let traceparentInvalid = Flags(rawValue: 2)
        /// The header map could not be searched (too large or growing).
        public static let headerMiss = Flags(rawValue: 4)
        /// The status could not be read.
        public static let statusUnknown = Flags(rawValue: 8)
        /// A client span whose parent is a server span of the same process.
        public static let localParent = Flags(rawValue: 16)
        /// The client call returned an error (no response).
        public static let clientError = Flags(rawValue: 32)
    }

    public static let size = 384

    public var kind: Kind
    public var pid: Int32
    public var goroutine: UInt64
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    public var startMonotonicNanos: UInt64
    public var endMonotonicNanos: UInt64
    /// Server: the status the handler set, 0 when it set none (net/http then
    /// sends 200). Client: the response's StatusCode, 0 on an error.
    public var status: Int64
    public var flags: Flags
    /// The ServeMux pattern that matched (Go 1.23+), "" when unknown.
    public var route: String
    public var traceID: [UInt8]
    public var spanID: [UInt8]
    public var parentSpanID: [UInt8]
    public var method: String
    public var path: String
    /// Server: the Host header; client: the URL's host.
    public var host: String

    /// The status as sent: an unset server status means net/http's implicit
    /// 200; nil when it is not known (unreadable, or a client error).
    public var effectiveStatus: Int64? {
        if flags.contains(.statusUnknown) || flags.contains(.clientError) { return nil }
        return kind == .server && status == 0 ? 200 : status
    }

    /// Decodes one ring-buffer record; nil when it is too short or of an
    /// unknown kind.
    public init?(_ raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.size, let k = Kind(rawValue: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) else {
            return nil
        }
        func u64(_ o: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
        func u16(_ o: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        func bytes(_ o: Int, _ n: Int) -> [UInt8] { Array(raw[o..<(o + n)]) }
        func string(_ o: Int, _ len: Int, max: Int) -> String {
            String(decoding: raw[o..<(o + min(len, max))], as: UTF8.self)
        }
        kind = k
        pid = raw.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        goroutine = u64(8)
        startMonotonicNanos = u64(16)
        endMonotonicNanos = u64(24)
        status = raw.loadUnaligned(fromByteOffset: 32, as: Int64.self)
        route = string(48, u16(40), max: 64)
        // struct inflight at 112: start_ns, resp, req, trace_id[16],
        // span_id[8], parent_span_id[8], method_len, path_len, host_len,
        // flags, method[16], path[128], host[64].
        let r = 112
        traceID = bytes(r + 24, 16)
        spanID = bytes(r + 40, 8)
        parentSpanID = bytes(r + 48, 8)
        flags = Flags(rawValue: raw.loadUnaligned(fromByteOffset: r + 62, as: UInt16.self))
        method = string(r + 64, u16(r + 56), max: 16)
        path = string(r + 80, u16(r + 58), max: 128)
        host = string(r + 208, u16(r + 60), max: 64)
    }

    public init(kind: Kind, pid: Int32, goroutine: UInt64, startMonotonicNanos: UInt64, endMonotonicNanos: UInt64,
                status: Int64, flags: Flags = [], route: String = "", traceID: [UInt8], spanID: [UInt8],
                parentSpanID: [UInt8], method: String, path: String, host: String) {
        self.kind = kind
        self.pid = pid
        self.goroutine = goroutine
        self.startMonotonicNanos = startMonotonicNanos
        self.endMonotonicNanos = endMonotonicNanos
        self.status = status
        self.flags = flags
        self.route = route
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.method = method
        self.path = path
        self.host = host
    }
}

/// Converts CLOCK_MONOTONIC nanoseconds (the BPF clock) to Unix wall-clock
/// nanoseconds, from an offset sampled between two monotonic reads.
public struct ClockConverter: Sendable {
    public var offsetNanos: Int64

    public init() {
        var best = Int64.max
        var offset: Int64 = 0
        // The tightest of a few samples bounds the error by one clock read.
        for _ in 0..<5 {
            let a = Self.now(CLOCK_MONOTONIC)
            let w = Self.now(CLOCK_REALTIME)
            let b = Self.now(CLOCK_MONOTONIC)
            if b - a < best {
                best = b - a
                offset = w - (a + (b - a) / 2)
            }
        }
        offsetNanos = offset
    }

    public func unixNanos(monotonic: UInt64) -> UInt64 { UInt64(Int64(monotonic) &+ offsetNanos) }

    /// Nanoseconds on `clock` now.
    public static func now(_ clock: clockid_t) -> Int64 {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
