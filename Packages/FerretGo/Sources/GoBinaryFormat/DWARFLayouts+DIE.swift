import ELFSymbols
import CElf

/// DWARFLayouts' walk over debugging information entries: typedef chains,
/// member offsets, sizes and names, bounded against hostile DWARF.
extension DWARFLayouts {
    static let qualifierTags: Set<Int32> = [
        Int32(DW_TAG_typedef), Int32(DW_TAG_const_type), Int32(DW_TAG_volatile_type),
        Int32(DW_TAG_restrict_type), Int32(DW_TAG_atomic_type),
    ]
    static let pointerTags: Set<Int32> = [
        Int32(DW_TAG_pointer_type), Int32(DW_TAG_reference_type), Int32(DW_TAG_rvalue_reference_type),
        Int32(DW_TAG_ptr_to_member_type),
    ]

    func isStruct(_ die: inout Dwarf_Die) -> Bool {
        let t = dwarf_tag(&die)
        return t == Int32(DW_TAG_structure_type) || t == Int32(DW_TAG_union_type) || t == Int32(DW_TAG_class_type)
    }

    /// The DIE DW_AT_type refers to.
    func typeOf(_ die: inout Dwarf_Die) -> Dwarf_Die? {
        var attr = Dwarf_Attribute()
        guard dwarf_attr(&die, UInt32(DW_AT_type), &attr) != nil else { return nil }
        var target = Dwarf_Die()
        guard dwarf_formref_die(&attr, &target) != nil else { return nil }
        return target
    }

    /// Follows typedef/const/volatile to the underlying type (bounded).
    func stripTypedefs(_ die: inout Dwarf_Die) -> Dwarf_Die? {
        var d = die
        for _ in 0..<Self.maxTypeChain {
            guard Self.qualifierTags.contains(dwarf_tag(&d)) else { return d }
            guard let next = typeOf(&d) else { return nil }
            d = next
        }
        return nil
    }

    func udata(_ die: inout Dwarf_Die, _ name: Int) -> UInt64? {
        var attr = Dwarf_Attribute()
        guard dwarf_attr(&die, UInt32(name), &attr) != nil else { return nil }
        var v: Dwarf_Word = 0
        guard dwarf_formudata(&attr, &v) == 0 else { return nil }
        return v
    }

    /// Sizes and offsets beyond 1 TiB are garbage.
    func toInt(_ v: UInt64) -> Int? { v < 1 << 40 ? Int(v) : nil }

    /// DW_AT_data_member_location: a constant (what Go writes), or a DWARF 2
    /// style expression consisting of a single DW_OP_plus_uconst.
    func memberOffset(_ die: inout Dwarf_Die) -> Int? {
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

    func addressSize(_ die: inout Dwarf_Die) -> Int {
        var cu = Dwarf_Die()
        var addr: UInt8 = 0
        var offSize: UInt8 = 0
        guard dwarf_diecu(&die, &cu, &addr, &offSize) != nil, addr == 4 || addr == 8 else { return 8 }
        return Int(addr)
    }

    /// Byte size of a type DIE: DW_AT_byte_size, pointers by address size,
    /// qualifiers followed, arrays as element size × count.
    func byteSize(_ die: inout Dwarf_Die, depth: Int = 0) -> Int? {
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
    func typeName(_ die: inout Dwarf_Die, depth: Int = 0) -> String {
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

    func findMember(named name: String, in die: inout Dwarf_Die) -> Dwarf_Die? {
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
    func forEachMember(of die: inout Dwarf_Die, _ body: (inout Dwarf_Die) -> Bool) {
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

    func structLayout(name: String, die: inout Dwarf_Die) -> TypeLayout? {
        guard isStruct(&die), let size = byteSize(&die) else { return nil }
        var members: [TypeLayout.Member] = []
        appendMembers(of: &die, prefix: "", base: 0, depth: 0, into: &members)
        return TypeLayout(name: name, size: size, members: members)
    }

    func appendMembers(
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
