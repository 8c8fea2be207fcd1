import ELFSymbols
import CElf
import Foundation

/// Struct layouts read from a binary's DWARF through elfutils' libdw.
///
/// Go writes its DWARF into compressed sections (SHF_COMPRESSED, or `.zdebug_*`
/// before Go 1.12); libdw decompresses them. The file is read with `pread`
/// (libelf's ELF_C_READ), never mapped, so a binary that is replaced or
/// truncated while it is open cannot fault the process. Garbage is tolerated:
/// a file that is not ELF throws; an ELF file without usable DWARF gives
/// `hasDWARF == false`; malformed DWARF gives `nil` lookups.
///
/// Thread-safe: every libdw call happens under an internal lock.
public final class DWARFLayouts: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var fd: Int32 = -1
    private var elf: OpaquePointer?
    private var dwarf: OpaquePointer?
    private let dwarfPresent: Bool
    /// type name → offset of its DIE; built on first lookup.
    private var index: [String: Dwarf_Off]?
    private var cache: [String: TypeLayout?] = [:]
    /// (type, member path) → offset, kept when the handle is released.
    private var offsets: [String: Int?] = [:]

    /// Bounds that keep hostile DWARF from running away.
    static let maxTypeChain = 32
    static let maxNesting = 8
    static let maxMembers = 1 << 16
    static let maxTopLevelDIEs = 1 << 24

    /// Opens `path`. Throws when the file cannot be opened or is not an ELF file;
    /// an ELF file without DWARF (stripped, `-ldflags=-w`) is not an error.
    public init(path: String) throws(IntrospectionError) {
        self.path = path
        let handle = try Self.open(path)
        dwarfPresent = handle != nil
        if let handle { (fd, elf, dwarf) = handle }
    }

    /// The file's libdw handle, or nil when it has no DWARF.
    private static func open(_ path: String) throws(IntrospectionError) -> (Int32, OpaquePointer, OpaquePointer)? {
        guard ELFFile.libelfReady else { throw .init("libelf: version mismatch") }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .init("\(path): cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .init("\(path): not a regular file")
        }
        guard let e = elf_begin(fd, ELF_C_READ, nil) else {
            close(fd)
            throw .init("\(path): \(ELFFile.lastError())")
        }
        guard elf_kind(e) == ELF_K_ELF else {
            elf_end(e)
            close(fd)
            throw .init("\(path): not an ELF file")
        }
        guard let dw = dwarf_begin_elf(e, DWARF_C_READ, nil) else {
            elf_end(e)
            close(fd)
            return nil
        }
        return (fd, e, dw)
    }

    deinit { closeHandle() }

    private func closeHandle() {
        if let dw = dwarf { dwarf_end(dw) }
        if let e = elf { elf_end(e) }
        if fd >= 0 { close(fd) }
        (fd, elf, dwarf, index) = (-1, nil, nil, nil)
    }

    /// Closes libdw's handle and drops the type index, keeping the layouts
    /// already resolved: the decompressed DWARF of a large binary is megabytes,
    /// and the readers resolve what they need when they attach. A later lookup
    /// of a type not resolved yet opens the file again.
    public func releaseHandle() {
        lock.lock()
        defer { lock.unlock() }
        closeHandle()
    }

    /// Opens the handle again after `releaseHandle` (under the lock).
    private func reopenIfReleased() {
        guard dwarfPresent, dwarf == nil, let handle = try? Self.open(path) else { return }
        (fd, elf, dwarf) = handle
    }

    /// False when the file carries no DWARF (stripped binaries).
    public var hasDWARF: Bool { dwarfPresent }

    /// The layout of the struct type named `typeName` ("runtime.schedt",
    /// "net/http.Request"), following typedefs. Nil when there is no such type or
    /// it is not a struct (e.g. `net/http.Header`, a map).
    public func layout(of typeName: String) -> TypeLayout? {
        lock.lock()
        defer { lock.unlock() }
        if let hit = cache[typeName] { return hit }
        reopenIfReleased()
        var result: TypeLayout?
        if var die = lookupDIE(typeName), var s = stripTypedefs(&die) {
            result = structLayout(name: typeName, die: &s)
        }
        cache[typeName] = result
        return result
    }

    /// Byte offset of a dotted member path inside `typeName`, descending through
    /// nested struct members of any kind: ("gFree.n", "runtime.schedt"),
    /// ("runq.head", "runtime.schedt"). Nil when a component is missing.
    public func offset(of path: String, in typeName: String) -> Int? {
        let parts = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        let key = typeName + "\u{0}" + path
        if let hit = offsets[key] { return hit }
        let found = resolveOffset(parts, in: typeName)
        offsets[key] = found
        return found
    }

    private func resolveOffset(_ parts: [String], in typeName: String) -> Int? {
        reopenIfReleased()
        guard var die = lookupDIE(typeName) else { return nil }
        var total = 0
        for part in parts {
            guard var s = stripTypedefs(&die), isStruct(&s) else { return nil }
            guard var m = findMember(named: part, in: &s), let off = memberOffset(&m), let t = typeOf(&m) else {
                return nil
            }
            let (sum, overflow) = total.addingReportingOverflow(off)
            guard !overflow else { return nil }
            total = sum
            die = t
        }
        return total
    }

    /// All struct and typedef names in the DWARF, sorted (for diagnostics and tools).
    public func typeNames() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        reopenIfReleased()
        return ensureIndex().keys.sorted()
    }

    // MARK: - Index

    private func ensureIndex() -> [String: Dwarf_Off] {
        if let index { return index }
        let built = buildIndex()
        index = built
        return built
    }

    private func buildIndex() -> [String: Dwarf_Off] {
        guard let dw = dwarf else { return [:] }
        var idx: [String: Dwarf_Off] = [:]
        var off: Dwarf_Off = 0
        var seen = 0
        let structTag = Int32(DW_TAG_structure_type), typedefTag = Int32(DW_TAG_typedef)
        while true {
            var next: Dwarf_Off = 0
            var headerSize = 0
            guard dwarf_nextcu(dw, off, &next, &headerSize, nil, nil, nil) == 0, next > off else { break }
            var cu = Dwarf_Die()
            if dwarf_offdie(dw, off + Dwarf_Off(headerSize), &cu) != nil {
                var child = Dwarf_Die()
                if dwarf_child(&cu, &child) == 0 {
                    var last = dwarf_dieoffset(&child)
                    while seen < Self.maxTopLevelDIEs {
                        seen += 1
                        let tag = dwarf_tag(&child)
                        if tag == structTag || tag == typedefTag, let n = dwarf_diename(&child) {
                            let name = String(cString: n)
                            if idx[name] == nil { idx[name] = dwarf_dieoffset(&child) }
                        }
                        var sib = Dwarf_Die()
                        guard dwarf_siblingof(&child, &sib) == 0 else { break }
                        let so = dwarf_dieoffset(&sib)
                        guard so > last else { break }  // malformed DW_AT_sibling going backwards
                        last = so
                        child = sib
                    }
                }
            }
            off = next
        }
        return idx
    }

    private func lookupDIE(_ name: String) -> Dwarf_Die? {
        guard let dw = dwarf, let off = ensureIndex()[name] else { return nil }
        var die = Dwarf_Die()
        guard dwarf_offdie(dw, off, &die) != nil else { return nil }
        return die
    }
}
