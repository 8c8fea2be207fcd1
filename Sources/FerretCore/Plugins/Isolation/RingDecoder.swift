import CPluginIsolation
import FerretPluginABI
import Foundation
import Logging

/// Turns the ring's records back into the ABI's record structs and hands them
/// to the same conversion in-process emits go through (HostServices), so both
/// modes refuse and count exactly the same things.
///
/// A record is copied out of the shared memory first (the helper cannot change
/// it under us), then every pointer field, which holds an offset into the
/// payload, is checked against the payload's length and turned back into a
/// pointer. A record that does not check out was not written by an honest
/// helper (its memory was corrupted): it is refused and counted like garbage.
struct RingDecoder {
    let context: HostContext
    let logger: Logger
    let bulk: Int32
    /// 8-byte aligned scratch the records are copied into.
    private var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)

    init(context: HostContext, logger: Logger, bulk: Int32) {
        self.context = context
        self.logger = logger
        self.bulk = bulk
    }

    struct Malformed: Error {}

    /// Frees the scratch (the reader thread is done).
    mutating func release() {
        scratch.deallocate()
        scratch = .allocate(byteCount: 0, alignment: 16)
    }

    /// Set when the pipeline dropped a record of the last `deliver` (its queue
    /// is full): the reader then tells the helper's producers to refuse for a
    /// while, so the plugin sees FERRET_E_DROPPED as it would in process.
    private(set) var pipelineDropped = false

    mutating func deliver(type: UInt32, payload: UnsafeRawBufferPointer) {
        pipelineDropped = false
        switch type {
        case UInt32(FI_REC_LOG):
            guard payload.count >= 8 else { return }
            let level = payload.loadUnaligned(fromByteOffset: 0, as: Int32.self)
            let hasCtx = payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self) != 0
            let text = String(decoding: payload[8...], as: UTF8.self)
            HostServices.log(hasCtx ? context : nil, level: level, text)
        case UInt32(FI_REC_REFUSED):
            guard payload.count >= 8 else { return }
            let records = Int(payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            _ = context.reject(String(decoding: payload[8...], as: UTF8.self), records: records)
        case UInt32(FI_REC_BULK):
            guard payload.count >= 16 else { return }
            let kind = payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
            let length = payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            guard length > 0 else { return } // the helper could not send it: already counted as dropped there
            guard let bytes = receiveBulk(length: Int(length)) else {
                _ = context.reject("a bulk record of \(length) bytes did not arrive", records: 1)
                return
            }
            bytes.withUnsafeBytes { deliverEmit(kind: kind, $0) }
        default:
            deliverEmit(kind: type, payload)
        }
    }

    private mutating func deliverEmit(kind: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard payload.count >= 8 else { return }
        if scratch.count < payload.count {
            scratch.deallocate()
            scratch = .allocate(byteCount: max(payload.count, scratch.count * 2), alignment: 16)
        }
        scratch.copyMemory(from: payload)
        let buf = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<payload.count])
        let count = Int(buf.load(fromByteOffset: 0, as: UInt32.self))
        let stride = Int(buf.load(fromByteOffset: 4, as: UInt32.self))
        let ctx = HostServices.pointer(context)
        do {
            switch kind {
            case UInt32(FI_REC_METRICS):
                let p = try records(buf, count, stride, ferret_metric_point.self) { m, b in
                    try Self.str(&m.name, b); try Self.str(&m.unit, b)
                    try Self.attrs(&m.attrs, m.attr_count, b)
                    m.bounds = try Self.array(m.bounds, m.bound_count, b)
                    m.bucket_counts = try Self.array(m.bucket_counts, m.bound_count + 1, b)
                }
                note(HostServices.emitMetrics(ctx, p, count))
            case UInt32(FI_REC_SPANS):
                let p = try records(buf, count, stride, ferret_span.self) { s, b in
                    try Self.str(&s.name, b); try Self.str(&s.status_message, b)
                    try Self.attrs(&s.attrs, s.attr_count, b)
                }
                note(HostServices.emitSpans(ctx, p, count))
            case UInt32(FI_REC_PROFILES):
                let p = try records(buf, count, stride, ferret_profile.self) { r, b in
                    r.data = try Self.array(r.data, r.data_len, b)
                    try Self.str(&r.profile_type, b)
                    try Self.attrs(&r.attrs, r.attr_count, b)
                }
                note(HostServices.emitProfiles(ctx, p, count))
            case UInt32(FI_REC_EVENTS):
                let p = try records(buf, count, stride, ferret_event.self) { e, b in
                    try Self.str(&e.name, b); try Self.str(&e.body, b)
                    try Self.attrs(&e.attrs, e.attr_count, b)
                }
                note(HostServices.emitEvents(ctx, p, count))
            default:
                throw Malformed()
            }
        } catch {
            _ = context.reject("the helper sent a malformed record (type \(kind)); its memory may be corrupted", records: max(count, 1))
        }
    }

    private mutating func note(_ status: Int32) {
        if status == Int32(FERRET_E_DROPPED.rawValue) { pipelineDropped = true }
    }

    /// Relocates `count` structs of type T that follow the 8-byte array header.
    private func records<T>(_ buf: UnsafeMutableRawBufferPointer, _ count: Int, _ stride: Int, _ type: T.Type,
                            _ fix: (inout T, UnsafeMutableRawBufferPointer) throws -> Void) throws -> UnsafePointer<T> {
        guard stride == MemoryLayout<T>.size, count > 0, 8 + count * stride <= buf.count else { throw Malformed() }
        let base = (buf.baseAddress! + 8).assumingMemoryBound(to: T.self)
        for i in 0..<count { try fix(&base[i], buf) }
        return UnsafePointer(base)
    }

    /// The pointer an offset stands for, after checking `bytes` fit in the payload.
    private static func resolve(_ raw: UnsafeRawPointer?, bytes: Int, alignment: Int, _ b: UnsafeMutableRawBufferPointer) throws -> UnsafeRawPointer? {
        let off = UInt64(UInt(bitPattern: raw))
        if off == UInt64.max { return nil } // FI_NULL
        guard bytes >= 0, off <= UInt64(b.count), UInt64(bytes) <= UInt64(b.count) - off, Int(off) % alignment == 0 else { throw Malformed() }
        return UnsafeRawPointer(b.baseAddress! + Int(off))
    }

    private static func str(_ s: inout ferret_str, _ b: UnsafeMutableRawBufferPointer) throws {
        let p = try resolve(UnsafeRawPointer(s.ptr), bytes: s.len, alignment: 1, b)
        s.ptr = p?.assumingMemoryBound(to: CChar.self)
    }

    private static func array<E>(_ p: UnsafePointer<E>?, _ count: Int, _ b: UnsafeMutableRawBufferPointer) throws -> UnsafePointer<E>? {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<E>.stride)
        guard !overflow else { throw Malformed() }
        return try resolve(UnsafeRawPointer(p), bytes: bytes, alignment: Swift.min(8, MemoryLayout<E>.alignment), b)?
            .assumingMemoryBound(to: E.self)
    }

    private static func attrs(_ attrs: inout UnsafePointer<ferret_attr>?, _ count: Int, _ b: UnsafeMutableRawBufferPointer) throws {
        // None, or more than the conversion takes (it refuses them): nothing to relocate.
        guard count > 0, count <= 1024 else { attrs = nil; return }
        guard let p = try array(attrs, count, b) else { attrs = nil; return }
        let m = UnsafeMutablePointer(mutating: p)
        for i in 0..<count {
            try str(&m[i].key, b)
            if m[i].type == UInt32(FERRET_ATTR_STRING.rawValue) { try str(&m[i].value.s, b) }
        }
        attrs = p
    }

    private func receiveBulk(length: Int) -> [UInt8]? {
        var tag: UInt64 = 0
        var control = [UInt8](repeating: 0, count: 64)
        let n: Int = withUnsafeMutableBytes(of: &tag) { tagBuf in
            control.withUnsafeMutableBytes { cbuf in
                var iov = iovec(iov_base: tagBuf.baseAddress, iov_len: 8)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = cbuf.baseAddress
                    msg.msg_controllen = cbuf.count
                    let r = recvmsg(bulk, &msg, Int32(MSG_DONTWAIT) | Int32(MSG_CMSG_CLOEXEC))
                    return r
                }
            }
        }
        guard n == 8, tag == UInt64(length) else { return nil }
        // SCM_RIGHTS: the descriptor follows the 16-byte cmsghdr.
        let fd = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: Int32.self) }
        guard fd > 2 else { return nil }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: length)
        var off = 0
        while off < length {
            let r = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + off, length - off, off_t(off)) }
            if r <= 0 { return nil }
            off += r
        }
        return out
    }
}
