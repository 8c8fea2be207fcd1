import CZlib

/// gzip (RFC 1952) through the system zlib: pprof profiles are stored gzipped.
public enum Gzip {
    /// A zlib call failed; `code` is zlib's return value.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var operation: String
        public var code: Int32
        public var message: String
        public var description: String { "gzip: \(operation) failed (\(code)): \(message)" }
    }

    /// `bytes` as a gzip member (header, deflate data, CRC-32 and length).
    public static func compress(_ bytes: [UInt8], level: Int32 = Z_DEFAULT_COMPRESSION) throws -> [UInt8] {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip wrapper instead of zlib's.
        var rc = deflateInit2_(
            &stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw failure("deflateInit2", rc, &stream) }
        defer { deflateEnd(&stream) }

        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))))
        rc = bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = output.baseAddress
                stream.avail_out = uInt(output.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        // deflateBound is enough for a single Z_FINISH call.
        guard rc == Z_STREAM_END else { throw failure("deflate", rc, &stream) }
        out.removeLast(out.count - Int(stream.total_out))
        return out
    }

    /// The data of a gzip file (several members are concatenated).
    public static func decompress(_ bytes: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        var rc = inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw failure("inflateInit2", rc, &stream) }
        defer { inflateEnd(&stream) }

        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: max(4096, bytes.count * 4))
        try bytes.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = uInt(input.count)
            while true {
                let produced: Int = chunk.withUnsafeMutableBufferPointer { buf in
                    stream.next_out = buf.baseAddress
                    stream.avail_out = uInt(buf.count)
                    rc = inflate(&stream, Z_NO_FLUSH)
                    return buf.count - Int(stream.avail_out)
                }
                out.append(contentsOf: chunk[0..<produced])
                switch rc {
                case Z_STREAM_END:
                    // Another member may follow.
                    if stream.avail_in == 0 { return }
                    rc = inflateReset(&stream)
                    guard rc == Z_OK else { throw failure("inflateReset", rc, &stream) }
                case Z_OK:
                    continue
                case Z_BUF_ERROR where produced > 0:
                    continue
                default:
                    throw failure("inflate", rc == Z_BUF_ERROR ? Z_DATA_ERROR : rc, &stream,
                                  rc == Z_BUF_ERROR ? "truncated input" : nil)
                }
            }
        }
        return out
    }

    private static func failure(_ op: String, _ rc: Int32, _ stream: inout z_stream, _ note: String? = nil) -> Failure {
        let msg = note ?? stream.msg.map { String(cString: $0) } ?? "zlib error"
        return Failure(operation: op, code: rc, message: msg)
    }
}
