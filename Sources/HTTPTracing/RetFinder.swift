import Foundation
import GoIntrospection

/// Where to put plain uprobes on one function: its entry and every RET.
///
/// Go functions must never get uretprobes (they rewrite the return address on
/// the stack, which Go moves when a goroutine stack grows: golang/go#22008).
/// Instead a plain uprobe goes on every RET instruction of the body; finding
/// them needs a real decoder, since a 0xC3 byte may sit inside an immediate.
public struct FunctionProbes: Sendable, Equatable {
    public var function: String
    /// Link-time address and size of the body (from pclntab).
    public var entry: UInt64
    public var size: UInt64
    /// File offset of the entry probe: the entry, or just past an ENDBR64.
    public var entryFileOffset: UInt64
    /// File offsets of every RET instruction, ascending.
    public var returnFileOffsets: [UInt64]
    /// Link-time addresses of the same RETs (for logs and tests).
    public var returnAddresses: [UInt64]
    /// True when the body starts with ENDBR64 (the entry probe skips it).
    public var startsWithEndbr: Bool
}

/// Decodes x86-64 function bodies with capstone and lists their RETs.
public enum RetFinder {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
        public init(_ d: String) { description = d }
    }

    /// One decoded instruction (GoIntrospection's capstone decoder).
    public typealias Instruction = X86Decoder.Instruction

    /// Decodes `code` (loaded at `address`) to the end (GoIntrospection's
    /// capstone decoder). Throws when an instruction cannot be decoded, since
    /// the RET list would then be incomplete and a missed RET is a leaked
    /// in-flight entry. Trailing INT3 padding is decoded like any other
    /// instruction.
    public static func decode(_ code: [UInt8], address: UInt64) throws(Failure) -> [Instruction] {
        do {
            return try X86Decoder.decode(code, address: address)
        } catch {
            throw Failure(error.description)
        }
    }

    /// The probe sites of `name` in `binary`: entry and RETs from pclntab's
    /// entry and size, body bytes read from the ELF file (works stripped).
    public static func probes(for name: String, in binary: GoBinary) throws -> FunctionProbes {
        let table = try binary.pclnTable()
        guard let f = table.function(named: name) else {
            throw Failure("\(name) is not in \(binary.path)'s pclntab")
        }
        return try probes(for: f, elf: binary.elf)
    }

    public static func probes(for f: PclnTable.Function, elf: ELFFile) throws -> FunctionProbes {
        guard f.size > 0, f.size < 1 << 24 else { throw Failure("\(f.name): implausible size \(f.size)") }
        guard let entryOff = fileOffset(of: f.entry, in: elf), fileOffset(of: f.end - 1, in: elf) != nil else {
            throw Failure("\(f.name) at 0x\(String(f.entry, radix: 16)) is not in a file-backed segment")
        }
        let code = try elf.read(offset: entryOff, count: Int(f.size))
        let insns = try decode(code, address: f.entry)
        let rets = insns.filter(\.isReturn).map(\.address)
        guard !rets.isEmpty else { throw Failure("\(f.name): no RET instruction in its \(f.size) bytes") }
        let endbr = insns.first?.isEndbr64 ?? false
        let probeAt = endbr ? f.entry + UInt64(insns[0].size) : f.entry
        return FunctionProbes(
            function: f.name, entry: f.entry, size: f.size,
            entryFileOffset: fileOffset(of: probeAt, in: elf)!,
            returnFileOffsets: rets.map { fileOffset(of: $0, in: elf)! },
            returnAddresses: rets, startsWithEndbr: endbr)
    }

    /// File offset of a link-time address (the offset uprobes take).
    public static func fileOffset(of address: UInt64, in elf: ELFFile) -> UInt64? {
        for s in elf.segments where s.type == 1 /* PT_LOAD */ && s.containsFileBacked(address) {
            return s.offset + (address - s.vaddr)
        }
        return nil
    }
}
