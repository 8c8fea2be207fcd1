import ELFSymbols
import CElf
import Foundation

extension PclnTable {
    /// moduledata field offsets that have not moved in 1.18–1.27 (checked with
    /// gdb against DWARF): pcHeader 0, text 176. `gofunc` moves
    /// (304 in 1.18–1.19, 320 in 1.20–1.26, 344 in 1.27), so candidates are
    /// validated against real inline-tree entries instead of trusted by offset.
    static let moduledataTextOffset = 176
    static let gofuncCandidateOffsets = [344, 320, 304] + Array(stride(from: 256, through: 480, by: 8))

    /// Finds and parses the pclntab of an ELF Go binary: by the .gopclntab
    /// section, or by scanning loadable segments for the header magic (PIE
    /// builds up to Go 1.25 may have no such section).
    public static func load(from elf: ELFFile, symbols: [ELFSymbol]? = nil) throws(IntrospectionError) -> PclnTable {
        let textFallback = elf.section(named: ".text")?.address
        var candidates: [(data: [UInt8], address: UInt64)] = []
        if let s = elf.section(named: ".gopclntab"), s.type != UInt32(SHT_NOBITS) {
            candidates.append((try elf.read(offset: s.offset, count: Int(min(s.size, 1 << 30))), s.address))
        } else {
            for seg in elf.segments where seg.type == UInt32(PT_LOAD) && seg.fileSize > 72 {
                let bytes = try elf.read(offset: seg.offset, count: Int(min(seg.fileSize, 1 << 30)))
                // A hostile file can be full of magic patterns: try a few only.
                for o in scan(bytes).prefix(8) where candidates.count < 16 {
                    candidates.append((Array(bytes[o...]), seg.vaddr &+ UInt64(o)))
                }
            }
        }
        var lastError = IntrospectionError("\(elf.path): no Go pclntab found (not a Go 1.18+ binary?)")
        let syms = symbols ?? elf.readSymbols()
        for c in candidates {
            do {
                // Where function offsets count from when the header does not say
                // (Go 1.26+ no longer stores textStart; PIE files leave it 0):
                // runtime.text, from the symbol table or from moduledata.text. An
                // externally linked binary's .text section starts before it (C code
                // from the C toolchain comes first), so the section is a last resort.
                let text = syms.first(where: { $0.name == "runtime.text" && $0.value != 0 })?.value
                    ?? moduledataText(elf: elf, pclnAddress: c.address) ?? textFallback
                let probe = try PclnTable(data: c.data, address: c.address, textStartFallback: text, inlineTree: nil)
                let reader = inlineTreeReader(elf: elf, table: probe, symbols: symbols)
                if reader == nil { return probe }
                return try PclnTable(data: c.data, address: c.address, textStartFallback: text, inlineTree: reader)
            } catch {
                lastError = IntrospectionError("\(elf.path): \(error)")
            }
        }
        throw lastError
    }

    /// moduledata.text of the module whose pcHeader is at `pclnAddress`: the
    /// moduledata is found by its first word (a pointer to the pcHeader) in the
    /// writable segments, or, in PIE files, among the dynamic relocations.
    static func moduledataText(elf: ELFFile, pclnAddress: UInt64) -> UInt64? {
        for seg in elf.segments where seg.type == UInt32(PT_LOAD) && seg.flags & 2 != 0 && seg.fileSize > 0 {
            guard let bytes = try? elf.read(offset: seg.offset, count: Int(min(seg.fileSize, 256 << 20))) else { continue }
            var o = 0
            while o + moduledataTextOffset + 8 <= bytes.count {
                if bytes.u64(at: o) == pclnAddress, let t = bytes.u64(at: o + moduledataTextOffset), t != 0 { return t }
                o += 8
            }
        }
        let relocs = relativeRelocations(elf)
        for (md, target) in relocs where target == pclnAddress {
            if let t = relocs[md &+ UInt64(moduledataTextOffset)], t != 0 { return t }
        }
        return nil
    }

    /// Offsets of plausible pcHeaders (magic, zero pads, minLC 1, 8-byte pointers), 8-aligned.
    static func scan(_ b: [UInt8]) -> [Int] {
        var out: [Int] = []
        b.withUnsafeBytes { raw in
            var o = 0
            while o + 72 <= raw.count {
                let m = raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)
                // little-endian: magic | pad 0 | pad 0 | minLC 1 | ptrSize 8
                if m == 0x0801_0000_FFFF_FFF1 || m == 0x0801_0000_FFFF_FFF0 { out.append(o) }
                o += 8
            }
        }
        return out
    }

    /// Finds moduledata.gofunc and reads the area the inline trees live in.
    static func inlineTreeReader(elf: ELFFile, table: PclnTable, symbols: [ELFSymbol]?) -> InlineTreeReader? {
        guard let gofunc = findGofunc(elf: elf, table: table, symbols: symbols ?? elf.readSymbols()) else { return nil }
        for seg in elf.segments where seg.type == UInt32(PT_LOAD) && seg.containsFileBacked(gofunc) {
            let count = Int(min(seg.fileSize - (gofunc - seg.vaddr), 256 << 20))
            guard let bytes = try? elf.read(vaddr: gofunc, count: count) else { return nil }
            return InlineTreeReader(gofunc: gofunc, base: gofunc, bytes: bytes)
        }
        return nil
    }

    static func findGofunc(elf: ELFFile, table: PclnTable, symbols: [ELFSymbol]) -> UInt64? {
        // 1. The linker's symbol for the area.
        if let s = symbols.first(where: { $0.name == "go:func.*" || $0.name == "go.func.*" }), s.value != 0 { return s.value }
        let span = 488
        func fromModuledata(_ md: UInt64) -> UInt64? {
            guard let words = try? elf.read(vaddr: md, count: span), words.count == span,
                  let head = words.u64(at: 0), head == table.address,
                  let text = words.u64(at: moduledataTextOffset), text == table.textStart || text == 0 else { return nil }
            for off in gofuncCandidateOffsets {
                if let g = words.u64(at: off), g != 0, table.validatesInlineTrees(gofunc: g, elf: elf) { return g }
            }
            return nil
        }
        // 2. runtime.firstmoduledata from the symbol table.
        if let md = symbols.first(where: { $0.name == "runtime.firstmoduledata" }), let g = fromModuledata(md.value) { return g }
        // 3. Stripped: moduledata starts with a pointer to the pcHeader; look for it in data.
        for seg in elf.segments where seg.type == UInt32(PT_LOAD) && seg.flags & 2 != 0 && seg.fileSize > 0 {
            guard let bytes = try? elf.read(offset: seg.offset, count: Int(min(seg.fileSize, 256 << 20))) else { continue }
            var o = 0
            while o + span <= bytes.count {
                if bytes.u64(at: o) == table.address, let g = fromModuledata(seg.vaddr &+ UInt64(o)) { return g }
                o += 8
            }
        }
        // 4. PIE: the pointers are dynamic relocations (R_X86_64_RELATIVE) whose addends hold them.
        let relocs = relativeRelocations(elf)
        for (md, target) in relocs where target == table.address {
            for off in gofuncCandidateOffsets {
                if let g = relocs[md &+ UInt64(off)], g != 0, table.validatesInlineTrees(gofunc: g, elf: elf) { return g }
            }
        }
        return nil
    }

    /// r_offset -> addend of every R_X86_64_RELATIVE relocation.
    static func relativeRelocations(_ elf: ELFFile) -> [UInt64: UInt64] {
        var out: [UInt64: UInt64] = [:]
        for s in elf.sections where s.type == UInt32(SHT_RELA) && s.size < 512 << 20 {
            guard let b = try? elf.read(offset: s.offset, count: Int(s.size)) else { continue }
            var o = 0
            while o + 24 <= b.count {
                if let off = b.u64(at: o), let info = b.u64(at: o + 8), let addend = b.u64(at: o + 16), info & 0xFFFF_FFFF == 8 {
                    out[off] = addend
                }
                o += 24
            }
        }
        return out
    }
}
