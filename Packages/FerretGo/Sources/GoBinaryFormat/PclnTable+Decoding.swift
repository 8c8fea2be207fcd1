import ELFSymbols
extension PclnTable {
    /// Reads the inline-tree bytes that live in the `go:func.*` area.
    struct InlineTreeReader {
        var gofunc: UInt64
        var base: UInt64
        var bytes: [UInt8]
        func read(_ vaddr: UInt64, _ count: Int) -> ArraySlice<UInt8>? {
            guard vaddr >= base, vaddr - base <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - (vaddr - base) else { return nil }
            let o = Int(vaddr - base)
            return bytes[o..<(o + count)]
        }
    }

    struct RawFunc {
        var offset: Int
        var entryOff: UInt32, nameOff: Int32, pcfile: UInt32, pcln: UInt32, npcdata: UInt32, cuOffset: UInt32
        var startLine: Int32, nfuncdata: UInt8
    }

    @inline(__always)
    func index(containing pc: UInt64) -> Int? {
        guard pc >= textStart, pc - textStart < UInt64(UInt32.max) else { return nil }
        let off = UInt32(pc - textStart)
        guard off >= entries[0], off < entries[functionCount] else { return nil }
        var lo = 0, hi = functionCount // invariant: entries[lo] <= off < entries[hi]
        while hi - lo > 1 {
            let mid = (lo + hi) >> 1
            if entries[mid] <= off { lo = mid } else { hi = mid }
        }
        return lo
    }

    func rawFunc(_ i: Int) -> RawFunc? {
        let o = pclntab + Int(funcOffsets[i])
        guard o >= 0, o + funcSize <= data.count else { return nil }
        return data.withUnsafeBytes { raw in
            func u(_ k: Int) -> UInt32 { raw.loadUnaligned(fromByteOffset: o + k, as: UInt32.self) }
            let is120 = format == .go120
            return RawFunc(offset: o, entryOff: u(0), nameOff: Int32(bitPattern: u(4)), pcfile: u(20), pcln: u(24), npcdata: u(28),
                           cuOffset: u(32), startLine: is120 ? Int32(bitPattern: u(36)) : 0,
                           nfuncdata: raw[o + (is120 ? 43 : 39)])
        }
    }

    /// The value of a pc-value table at `target`; nil when corrupt or out of range.
    @inline(__always)
    func pcvalue(_ off: Int, entry: UInt64, target: UInt64) -> Int32? {
        guard off > 0 else { return nil }
        return data.withUnsafeBufferPointer { buf -> Int32? in
            var p = pctab + off
            var val: Int32 = -1
            var pc = entry
            var first = true
            let n = buf.count
            while p < n {
                // value delta (zig-zag varint)
                var uv: UInt32 = 0, shift: UInt32 = 0
                while true {
                    guard p < n, shift < 35 else { return nil }
                    let b = buf[p]; p += 1
                    uv |= UInt32(b & 0x7F) << shift
                    if b & 0x80 == 0 { break }
                    shift += 7
                }
                if uv == 0 && !first { return nil }
                first = false
                let delta = Int32(bitPattern: (uv >> 1) ^ (0 &- (uv & 1)))
                val = val &+ delta
                var upc: UInt32 = 0
                shift = 0
                while true {
                    guard p < n, shift < 35 else { return nil }
                    let b = buf[p]; p += 1
                    upc |= UInt32(b & 0x7F) << shift
                    if b & 0x80 == 0 { break }
                    shift += 7
                }
                pc &+= UInt64(upc) * UInt64(minLC)
                if target < pc { return val }
            }
            return nil
        }
    }
}
