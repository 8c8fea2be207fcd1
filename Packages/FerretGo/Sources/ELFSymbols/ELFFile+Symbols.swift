import CElf
import Foundation

/// An ELF symbol (.symtab or .dynsym).
public struct ELFSymbol: Sendable, Hashable {
    public var name: String
    public var value: UInt64
    public var size: UInt64
    /// STT_* (0 notype, 1 object, 2 func, ...)
    public var type: UInt8
    public var sectionIndex: UInt16
    public var isDynamic: Bool
}

extension ELFFile {
    /// Symbols of .symtab and .dynsym (empty for a stripped static binary).
    public func readSymbols() -> [ELFSymbol] {
        var out: [ELFSymbol] = []
        forEachSection { scn, sh in
            guard sh.sh_type == UInt32(SHT_SYMTAB) || sh.sh_type == UInt32(SHT_DYNSYM), sh.sh_entsize > 0 else { return }
            guard let data = elf_getdata(scn, nil) else { return }
            let count = Int(sh.sh_size / sh.sh_entsize)
            guard count > 0, count < 50_000_000 else { return }
            out.reserveCapacity(out.count + count)
            for i in 1..<max(count, 1) {
                var sym = GElf_Sym()
                guard gelf_getsym(data, Int32(i), &sym) != nil else { break }
                guard let namePtr = elf_strptr(elfHandle, Int(sh.sh_link), Int(sym.st_name)) else { continue }
                let name = String(cString: namePtr)
                if name.isEmpty { continue }
                out.append(ELFSymbol(name: name, value: sym.st_value, size: sym.st_size, type: sym.st_info & 0xF,
                                     sectionIndex: sym.st_shndx, isDynamic: sh.sh_type == UInt32(SHT_DYNSYM)))
            }
        }
        return out
    }

    /// True when the file has a .symtab section (not stripped of symbols).
    public var hasSymbolTable: Bool { sections.contains { $0.type == UInt32(SHT_SYMTAB) } }

    /// True when the file has DWARF sections (compressed or not).
    public var hasDWARFSections: Bool {
        sections.contains { $0.name == ".debug_info" || $0.name == ".zdebug_info" }
    }

    /// A position-independent executable (or shared object): addresses move by a load bias.
    public var isPositionIndependent: Bool { type == UInt16(ET_DYN) }

    /// The GNU build id (NT_GNU_BUILD_ID) as hex, if present.
    public var gnuBuildID: String? { note(named: "GNU", type: 3).map(Self.hex) }

    /// The Go build id (.note.go.buildid, type 4), if present.
    public var goBuildID: String? { note(named: "Go", type: 4).map { String(decoding: $0, as: UTF8.self) } }

    /// The descriptor bytes of the first note with this owner name and type.
    public func note(named owner: String, type: UInt32) -> [UInt8]? {
        for s in sections where s.type == UInt32(SHT_NOTE) && s.size < 1 << 20 {
            guard let bytes = try? read(offset: s.offset, count: Int(s.size)) else { continue }
            var off = 0
            while off + 12 <= bytes.count {
                func u32(_ o: Int) -> UInt32 { UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24 }
                let namesz = Int(u32(off)), descsz = Int(u32(off + 4)), ntype = u32(off + 8)
                let nameStart = off + 12
                let descStart = nameStart + ((namesz + 3) & ~3)
                let next = descStart + ((descsz + 3) & ~3)
                guard namesz >= 0, descsz >= 0, next <= bytes.count, next > off else { break }
                let name = String(decoding: bytes[nameStart..<(nameStart + namesz)].prefix(while: { $0 != 0 }), as: UTF8.self)
                if name == owner && ntype == type { return Array(bytes[descStart..<(descStart + descsz)]) }
                off = next
            }
        }
        return nil
    }

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
}
