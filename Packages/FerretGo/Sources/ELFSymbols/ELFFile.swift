import CElf
import Foundation

/// An ELF executable or shared object, read through elfutils' libelf.
/// Opened read-only; never maps or writes the file. Thread-compatible (one
/// thread at a time per instance).
public final class ELFFile {
    public struct Section: Sendable {
        public var name: String
        public var type: UInt32
        public var flags: UInt64
        public var address: UInt64
        public var offset: UInt64
        public var size: UInt64
    }

    public struct Segment: Sendable {
        public var type: UInt32
        public var flags: UInt32
        public var offset: UInt64
        public var vaddr: UInt64
        public var fileSize: UInt64
        public var memSize: UInt64

        /// True when `address` lies in the part of the segment backed by the file
        /// (overflow-safe: sizes come from the file and may be hostile).
        public func containsFileBacked(_ address: UInt64) -> Bool {
            address >= vaddr && address - vaddr < fileSize
        }
    }

    public let path: String
    public let sections: [Section]
    public let segments: [Segment]
    /// ET_EXEC, ET_DYN, ...
    public let type: UInt16
    public let machine: UInt16
    /// Size of the file in bytes.
    public let fileSize: UInt64
    /// The opened file's identity (fstat of the descriptor, not of the path: the
    /// path may name another file by now), for caches keyed by file identity.
    public let device: UInt64
    public let inode: UInt64
    /// Modification time, nanoseconds since the epoch.
    public let modified: Int64
    private let fd: Int32
    private let elf: OpaquePointer
    var elfHandle: OpaquePointer { elf }

    /// libelf must be told the ELF version once per process (for every libelf
    /// user here, DWARFLayouts too); a static let is initialized exactly once,
    /// thread-safely.
    package static let libelfReady: Bool = elf_version(UInt32(EV_CURRENT)) != UInt32(EV_NONE)

    public init(path: String) throws(IntrospectionError) {
        guard Self.libelfReady else { throw .init("libelf: version mismatch") }
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .init("\(path): cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        fstat(fd, &st)
        fileSize = UInt64(max(st.st_size, 0))
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        modified = Int64(st.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(st.st_mtim.tv_nsec)
        guard let e = elf_begin(fd, ELF_C_READ_MMAP, nil) else {
            close(fd)
            throw .init("\(path): \(Self.lastError())")
        }
        guard elf_kind(e) == ELF_K_ELF else {
            elf_end(e)
            close(fd)
            throw .init("\(path): not an ELF file")
        }
        elf = e
        var ehdr = GElf_Ehdr()
        guard gelf_getehdr(e, &ehdr) != nil else {
            elf_end(e)
            close(fd)
            throw .init("\(path): bad ELF header: \(Self.lastError())")
        }
        type = ehdr.e_type
        machine = ehdr.e_machine

        var secs: [Section] = []
        var shstrndx = 0
        if elf_getshdrstrndx(e, &shstrndx) == 0 {
            var scn = elf_nextscn(e, nil)
            while let s = scn {
                var sh = GElf_Shdr()
                if gelf_getshdr(s, &sh) != nil {
                    let name = elf_strptr(e, shstrndx, Int(sh.sh_name)).map { String(cString: $0) } ?? ""
                    secs.append(Section(name: name, type: sh.sh_type, flags: sh.sh_flags, address: sh.sh_addr,
                                        offset: sh.sh_offset, size: sh.sh_size))
                }
                scn = elf_nextscn(e, s)
            }
        }
        sections = secs

        var segs: [Segment] = []
        var phnum = 0
        if elf_getphdrnum(e, &phnum) == 0 {
            for i in 0..<phnum {
                var ph = GElf_Phdr()
                if gelf_getphdr(e, Int32(i), &ph) != nil {
                    segs.append(Segment(type: ph.p_type, flags: ph.p_flags, offset: ph.p_offset, vaddr: ph.p_vaddr,
                                        fileSize: ph.p_filesz, memSize: ph.p_memsz))
                }
            }
        }
        segments = segs
    }

    deinit {
        elf_end(elf)
        close(fd)
    }

    public func section(named name: String) -> Section? { sections.first { $0.name == name } }

    /// Calls `body` with each libelf section handle and header.
    func forEachSection(_ body: (OpaquePointer, GElf_Shdr) -> Void) {
        var scn = elf_nextscn(elf, nil)
        while let s = scn {
            var sh = GElf_Shdr()
            if gelf_getshdr(s, &sh) != nil { body(s, sh) }
            scn = elf_nextscn(elf, s)
        }
    }

    /// True when the file has a PT_INTERP segment (it is dynamically linked).
    public var hasInterpreter: Bool { segments.contains { $0.type == UInt32(PT_INTERP) } }

    /// Reads up to `count` bytes at file offset `offset` (fewer at the end of
    /// the file; none past it). Offsets and sizes come from the file itself,
    /// so nothing here trusts them.
    public func read(offset: UInt64, count: Int) throws(IntrospectionError) -> [UInt8] {
        guard count > 0, offset < fileSize else { return [] }
        let count = Int(min(UInt64(count), fileSize - offset))
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        guard n >= 0 else { throw .init("\(path): read failed: \(String(cString: strerror(errno)))") }
        if n < count { out.removeLast(count - n) }
        return out
    }

    /// The bytes a virtual address range maps to in the file, via PT_LOAD segments.
    public func read(vaddr: UInt64, count: Int) throws(IntrospectionError) -> [UInt8] {
        for s in segments where s.type == UInt32(PT_LOAD) && s.containsFileBacked(vaddr) {
            let avail = Int(min(UInt64(max(count, 0)), s.fileSize - (vaddr - s.vaddr)))
            let (off, overflow) = s.offset.addingReportingOverflow(vaddr - s.vaddr)
            if overflow { break }
            return try read(offset: off, count: avail)
        }
        throw .init("\(path): address 0x\(String(vaddr, radix: 16)) is not in the file")
    }

    package static func lastError() -> String {
        elf_errmsg(-1).map { String(cString: $0) } ?? "unknown libelf error"
    }
}

public struct IntrospectionError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public var kind: Kind

    /// What the collectors tell apart (each gets its own event).
    public enum Kind: Sendable, Equatable {
        case other
        /// The Go version has no row in a layout or code-reference table.
        case unknownLayout
        /// Runtime globals were found but failed a check against the process.
        case failedValidation
    }

    public init(_ d: String, kind: Kind = .other) {
        description = d
        self.kind = kind
    }

    /// The event a collector emits when it cannot read a Go process's runtime:
    /// `go.runtime.unknown_layout` for a Go version without a table row,
    /// `go.runtime.unverified` when the globals failed validation, else
    /// `go.runtime.unavailable`.
    public static func eventName(for error: any Error) -> String {
        switch (error as? IntrospectionError)?.kind {
        case .unknownLayout?: "go.runtime.unknown_layout"
        case .failedValidation?: "go.runtime.unverified"
        default: "go.runtime.unavailable"
        }
    }
}
