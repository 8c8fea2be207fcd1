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
    private static let maxTypeChain = 32
    private static let maxNesting = 8
    private static let maxMembers = 1 << 16
    private static let maxTopLevelDIEs = 1 << 24

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

    // MARK: - DIE helpers

    private static let qualifierTags: Set<Int32> = [
        Int32(DW_TAG_typedef), Int32(DW_TAG_const_type), Int32(DW_TAG_volatile_type),
        Int32(DW_TAG_restrict_type), Int32(DW_TAG_atomic_type),
    ]
    private static let pointerTags: Set<Int32> = [
        Int32(DW_TAG_pointer_type), Int32(DW_TAG_reference_type), Int32(DW_TAG_rvalue_reference_type),
        Int32(DW_TAG_ptr_to_member_type),
    ]

    private func isStruct(_ die: inout Dwarf_Die) -> Bool {
        let t = dwarf_tag(&die)
        return t == Int32(DW_TAG_structure_type) || t == Int32(DW_TAG_union_type) || t == Int32(DW_TAG_class_type)
    }

    /// The DIE DW_AT_type refers to.
    private func typeOf(_ die: inout Dwarf_Die) -> Dwarf_Die? {
        var attr = Dwarf_Attribute()
        guard dwarf_attr(&die, UInt32(DW_AT_type), &attr) != nil else { return nil }
        var target = Dwarf_Die()
        guard dwarf_formref_die(&attr, &target) != nil else { return nil }
        return target
    }

    /// Follows typedef/const/volatile to the underlying type (bounded).
    private func stripTypedefs(_ die: inout Dwarf_Die) -> Dwarf_Die? {
        var d = die
        for _ in 0..<Self.maxTypeChain {
            guard Self.qualifierTags.contains(dwarf_tag(&d)) else { return d }
            guard let next = typeOf(&d) else { return nil }
            d = next
        }
        return nil
    }

    private func udata(_ die: inout Dwarf_Die, _ name: Int) -> UInt64? {
        var attr = Dwarf_Attribute()
        guard dwarf_attr(&die, UInt32(name), &attr) != nil else { return nil }
        var v: Dwarf_Word = 0
        guard dwarf_formudata(&attr, &v) == 0 else { return nil }
        return v
    }

    /// Sizes and offsets beyond 1 TiB are garbage.
    private func toInt(_ v: UInt64) -> Int? { v < 1 << 40 ? Int(v) : nil }

    /// DW_AT_data_member_location: a constant (what Go writes), or a DWARF 2
    /// style expression consisting of a single DW_OP_plus_uconst.
    private func memberOffset(_ die: inout Dwarf_Die) -> Int? {
        var attr = Dwarf_Attribute()
        guard dwarf_attr(&die, UInt32(DW_AT_data_member_location), &attr) != nil else {
            // Union members and some producers omit it: offset 0.
            return 0
        }
        var v: Dwarf_Word = 0
        if dwarf_formudata(&attr, &v) == 0 { return toInt(v) }
        var ops: UnsafeMutablePointer<Dwarf_Op>?
        var n = 0
        guard dwarf_getlocation(&attr, &ops, &n) == 0, n == 1, let op = ops?.pointee,
              op.atom == UInt8(DW_OP_plus_uconst)
        else { return nil }
        return toInt(op.number)
    }

    private func addressSize(_ die: inout Dwarf_Die) -> Int {
        var cu = Dwarf_Die()
        var addr: UInt8 = 0
        var offSize: UInt8 = 0
        guard dwarf_diecu(&die, &cu, &addr, &offSize) != nil, addr == 4 || addr == 8 else { return 8 }
        return Int(addr)
    }

    /// Byte size of a type DIE: DW_AT_byte_size, pointers by address size,
    /// qualifiers followed, arrays as element size × count.
    private func byteSize(_ die: inout Dwarf_Die, depth: Int = 0) -> Int? {
        guard depth < Self.maxTypeChain else { return nil }
        if let v = udata(&die, DW_AT_byte_size) { return toInt(v) }
        let tag = dwarf_tag(&die)
        if Self.pointerTags.contains(tag) { return addressSize(&die) }
        if Self.qualifierTags.contains(tag) {
            guard var t = typeOf(&die) else { return nil }
            return byteSize(&t, depth: depth + 1)
        }
        if tag == Int32(DW_TAG_array_type) {
            guard var elem = typeOf(&die), let es = byteSize(&elem, depth: depth + 1) else { return nil }
            var total = es
            var sub = Dwarf_Die()
            guard dwarf_child(&die, &sub) == 0 else { return nil }
            var dims = 0
            repeat {
                guard dims < 16 else { return nil }
                if dwarf_tag(&sub) == Int32(DW_TAG_subrange_type) {
                    dims += 1
                    let count: UInt64
                    if let c = udata(&sub, DW_AT_count) {
                        count = c
                    } else if let ub = udata(&sub, DW_AT_upper_bound) {
                        let lb = udata(&sub, DW_AT_lower_bound) ?? 0
                        guard ub >= lb, ub < UInt64(Int32.max) else { return nil }
                        count = ub - lb + 1
                    } else {
                        return nil
                    }
                    guard count <= UInt64(Int32.max) else { return nil }
                    let (p, o) = total.multipliedReportingOverflow(by: Int(count))
                    guard !o else { return nil }
                    total = p
                }
                var next = Dwarf_Die()
                guard dwarf_siblingof(&sub, &next) == 0 else { break }
                sub = next
            } while true
            return total
        }
        return nil
    }

    /// The Go name of a type DIE; synthesized for the rare unnamed pointer or array.
    private func typeName(_ die: inout Dwarf_Die, depth: Int = 0) -> String {
        if let n = dwarf_diename(&die) { return String(cString: n) }
        guard depth < Self.maxTypeChain else { return "?" }
        let tag = dwarf_tag(&die)
        if Self.pointerTags.contains(tag) {
            guard var t = typeOf(&die) else { return "unsafe.Pointer" }
            return "*" + typeName(&t, depth: depth + 1)
        }
        if Self.qualifierTags.contains(tag), var t = typeOf(&die) { return typeName(&t, depth: depth + 1) }
        if tag == Int32(DW_TAG_structure_type) { return "struct {...}" }
        return "?"
    }

    private func findMember(named name: String, in die: inout Dwarf_Die) -> Dwarf_Die? {
        var found: Dwarf_Die?
        forEachMember(of: &die) { m in
            if let n = dwarf_diename(&m), String(cString: n) == name {
                found = m
                return false
            }
            return true
        }
        return found
    }

    /// Calls `body` for each DW_TAG_member child; `body` returns false to stop.
    private func forEachMember(of die: inout Dwarf_Die, _ body: (inout Dwarf_Die) -> Bool) {
        var child = Dwarf_Die()
        guard dwarf_child(&die, &child) == 0 else { return }
        var last = dwarf_dieoffset(&child)
        var count = 0
        while count < Self.maxMembers {
            count += 1
            if dwarf_tag(&child) == Int32(DW_TAG_member) {
                guard body(&child) else { return }
            }
            var sib = Dwarf_Die()
            guard dwarf_siblingof(&child, &sib) == 0 else { return }
            let so = dwarf_dieoffset(&sib)
            guard so > last else { return }
            last = so
            child = sib
        }
    }

    private func structLayout(name: String, die: inout Dwarf_Die) -> TypeLayout? {
        guard isStruct(&die), let size = byteSize(&die) else { return nil }
        var members: [TypeLayout.Member] = []
        appendMembers(of: &die, prefix: "", base: 0, depth: 0, into: &members)
        return TypeLayout(name: name, size: size, members: members)
    }

    private func appendMembers(
        of die: inout Dwarf_Die, prefix: String, base: Int, depth: Int, into out: inout [TypeLayout.Member]
    ) {
        forEachMember(of: &die) { m in
            guard out.count < Self.maxMembers else { return false }
            let name = dwarf_diename(&m).map { String(cString: $0) } ?? ""
            guard let off = memberOffset(&m) else { return true }
            let (abs, overflow) = base.addingReportingOverflow(off)
            guard !overflow else { return true }
            var size = 0
            var typeString = "?"
            var nested: Dwarf_Die?
            if var t = typeOf(&m) {
                size = byteSize(&t) ?? 0
                typeString = typeName(&t)
                if var s = stripTypedefs(&t), isStruct(&s) {
                    let n = dwarf_diename(&s).map { String(cString: $0) }
                    if n == nil || n!.hasPrefix("struct {") || n!.hasPrefix("struct{") { nested = s }
                }
            }
            out.append(.init(name: prefix + name, offset: abs, size: size, type: typeString))
            if var s = nested, depth + 1 < Self.maxNesting {
                appendMembers(of: &s, prefix: prefix + name + ".", base: abs, depth: depth + 1, into: &out)
            }
            return true
        }
    }
}
