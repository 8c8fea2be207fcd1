import FerretPluginABI
import Foundation

/// Copies Swift strings into C memory that lives as long as the arena, for
/// building ferret_* structs to pass into a plugin call.
final class CStringArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func str(_ s: String) -> ferret_str {
        var s = s
        return s.withUTF8 { u in
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(u.count, 1) + 1, alignment: 1)
            if u.count > 0 { p.copyMemory(from: u.baseAddress!, byteCount: u.count) }
            p.storeBytes(of: 0, toByteOffset: u.count, as: UInt8.self)
            blocks.append(p)
            return ferret_str(ptr: p.assumingMemoryBound(to: CChar.self), len: u.count)
        }
    }

    deinit { for b in blocks { b.deallocate() } }
}

extension ferret_str {
    /// Decodes as UTF-8 (invalid sequences are replaced).
    var string: String {
        guard let p = ptr, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }
}

/// A host-owned message buffer for plugin errors.
final class MessageBuffer {
    let data = UnsafeMutablePointer<CChar>.allocate(capacity: 2048)
    let path = UnsafeMutablePointer<CChar>.allocate(capacity: 512)
    var buf = ferret_msg_buf()

    init() {
        buf.hdr = ferret_header(abi_major: UInt16(FERRET_ABI_MAJOR), abi_minor: UInt16(FERRET_ABI_MINOR),
                                struct_size: UInt32(MemoryLayout<ferret_msg_buf>.size))
        buf.data = data
        buf.cap = 2048
        buf.path = path
        buf.path_cap = 512
        data[0] = 0
        path[0] = 0
    }

    var message: String {
        let n = min(buf.len, 2047)
        return String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
    }

    var jsonPointer: String? {
        let n = min(buf.path_len, 511)
        return n == 0 ? nil : String(decoding: UnsafeRawBufferPointer(start: path, count: n), as: UTF8.self)
    }

    deinit {
        data.deallocate()
        path.deallocate()
    }
}

extension ferret_header {
    static func current<T>(_: T.Type) -> ferret_header {
        ferret_header(abi_major: UInt16(FERRET_ABI_MAJOR), abi_minor: UInt16(FERRET_ABI_MINOR),
                      struct_size: UInt32(MemoryLayout<T>.size))
    }
}
