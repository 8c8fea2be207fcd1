/// One integer field of a runtime struct, resolved for one binary: where it is
/// (offset from the start of the outermost struct) and how to read it.
public struct RuntimeField: Sendable, Equatable, CustomStringConvertible {
    /// "runtime.schedt.runq.size"
    public var name: String
    public var offset: Int
    /// 1, 2, 4 or 8 bytes.
    public var size: Int
    public var signed: Bool

    public init(name: String, offset: Int, size: Int, signed: Bool) {
        self.name = name
        self.offset = offset
        self.size = size
        self.signed = signed
    }

    public var description: String { "\(name)@\(offset):\(signed ? "i" : "u")\(size * 8)" }

    /// The field's value in `bytes` (which start at the struct's start, or at
    /// `base` within `bytes`); nil when `bytes` is too short.
    public func value<B: LittleEndianBytes>(in bytes: B, base: Int = 0) -> Int64? {
        let at = base + offset
        switch (size, signed) {
        case (8, true): return bytes.i64(at: at)
        case (8, false): return bytes.u64(at: at).map { Int64(bitPattern: $0) }
        case (4, true): return bytes.i32(at: at).map(Int64.init)
        case (4, false): return bytes.u32(at: at).map(Int64.init)
        case (2, true): return bytes.i16(at: at).map(Int64.init)
        case (2, false): return bytes.u16(at: at).map(Int64.init)
        case (1, true): return bytes.i8(at: at).map(Int64.init)
        case (1, false): return bytes.u8(at: at).map(Int64.init)
        default: return nil
        }
    }
}

/// Resolves dotted member paths of Go runtime structs to integer fields, from
/// the binary's own DWARF when it has it, else from the per-version layout
/// table. Never guesses an offset: a path that cannot be resolved throws,
/// naming the path.
///
/// Rules (all derived from the layouts, none hard-codes an offset):
/// - flattened members first ("gFree.n" of an anonymous struct member), then the
///   longest member prefix whose type has its own layout ("runq.size" through
///   `runtime.gQueue`);
/// - a leaf of a scalar type ("int32", "uint64", "uintptr", "*runtime.m",
///   "runtime.guintptr") is read at its size; signed for Go's intN types;
/// - a leaf that is a struct wrapping one integer (the `sync/atomic` and
///   `runtime/internal/atomic` types: `atomic.Int32` is `{noCopy; value int32}`)
///   is read through that integer: from the wrapper's own layout when known,
///   else by the atomic package's definition (the integer is the only sized
///   member, so it sits at offset 0 and has the wrapper's size).
public struct RuntimeFieldResolver: Sendable {
    public let goVersion: String
    public let dwarf: DWARFLayouts?
    public let table: GoLayoutTable

    public init(goVersion: String, dwarf: DWARFLayouts?, table: GoLayoutTable = .builtIn) {
        self.goVersion = goVersion
        self.dwarf = dwarf.flatMap { $0.hasDWARF ? $0 : nil }
        self.table = table
    }

    /// "dwarf" when the binary's DWARF is used, else "table" (or the table's note).
    public func source(of type: String) -> String? {
        GoLayoutTable.resolve(binaryDWARF: dwarf, goVersion: goVersion, type: type, table: table)?.source
    }

    /// The layout of `type`, or nil.
    public func layout(of type: String) -> TypeLayout? {
        GoLayoutTable.resolve(binaryDWARF: dwarf, goVersion: goVersion, type: type, table: table)?.0
    }

    /// Why `type` has no layout: the table's reason ("unknown layout for go1.20").
    public func missingLayoutReason(_ type: String) -> String {
        if case .unknown(let why) = table.lookup(type, goVersion: goVersion) {
            return dwarf == nil ? why : "\(type) is not in the binary's DWARF and \(why)"
        }
        return "no layout of \(type) for \(goVersion)"
    }

    /// Whether `path` resolves in `type` (to probe version-specific fields).
    public func has(_ path: String, in type: String) -> Bool {
        (try? field(path, in: type)) != nil
    }

    /// The integer field at `path` in `type`.
    public func field(_ path: String, in type: String) throws(IntrospectionError) -> RuntimeField {
        guard let l = layout(of: type) else { throw .init(missingLayoutReason(type)) }
        let full = "\(type).\(path)"
        guard let (offset, member) = locate(path, in: l, depth: 0) else {
            throw .init("\(goVersion): field \(full) not in the layout (\(source(of: type) ?? "no layout"))")
        }
        guard let (inner, size, signed) = scalar(member, depth: 0) else {
            throw .init("\(goVersion): field \(full) (\(member.type), \(member.size) bytes) is not an integer")
        }
        return RuntimeField(name: full, offset: offset + inner, size: size, signed: signed)
    }

    /// Where the member at `path` of `type` lies (any type: arrays, structs), for
    /// reading it whole: its offset from the start of `type`, its size and type name.
    public func region(_ path: String, in type: String) throws(IntrospectionError)
        -> (offset: Int, size: Int, type: String)
    {
        guard let l = layout(of: type) else { throw .init(missingLayoutReason(type)) }
        guard let (offset, member) = locate(path, in: l, depth: 0) else {
            throw .init("\(goVersion): field \(type).\(path) not in the layout (\(source(of: type) ?? "no layout"))")
        }
        return (offset, member.size, member.type)
    }

    /// The element count and element size of an array member ("[68]uint64"), checked
    /// against the member's size.
    public func array(_ path: String, in type: String) throws(IntrospectionError)
        -> (offset: Int, count: Int, elementSize: Int)
    {
        let r = try region(path, in: type)
        guard r.type.hasPrefix("["), let close = r.type.firstIndex(of: "]"),
              let count = Int(r.type[r.type.index(after: r.type.startIndex)..<close]), count > 0,
              r.size % count == 0 else {
            throw .init("\(goVersion): field \(type).\(path) (\(r.type)) is not an array")
        }
        return (r.offset, count, r.size / count)
    }

    /// The offset of `path` from the start of `l`, and its member.
    private func locate(_ path: String, in l: TypeLayout, depth: Int) -> (Int, TypeLayout.Member)? {
        if let m = l.member(path) { return (m.offset, m) }
        guard depth < 8 else { return nil }
        var parts = path.split(separator: ".").map(String.init)
        var rest: [String] = []
        while parts.count > 1 {
            rest.insert(parts.removeLast(), at: 0)
            if let m = l.member(parts.joined(separator: ".")), let inner = layout(of: m.type),
               let (o, leaf) = locate(rest.joined(separator: "."), in: inner, depth: depth + 1)
            {
                return (m.offset + o, leaf)
            }
        }
        return nil
    }

    private static let signedScalars: Set<String> = ["int", "int8", "int16", "int32", "int64", "runtime.bucketType"] // bucketType: named int
    private static let unsignedScalars: Set<String> = [
        "uint", "uint8", "uint16", "uint32", "uint64", "uintptr", "unsafe.Pointer", "bool",
        "runtime.guintptr", "runtime.muintptr", "runtime.puintptr",
        "runtime.sysMemStat", "runtime.spanClass", "runtime.waitReason", // named uint64, uint8, uint8
    ]

    /// (offset inside the member, size, signed) when the member is an integer.
    private func scalar(_ m: TypeLayout.Member, depth: Int) -> (Int, Int, Bool)? {
        guard [1, 2, 4, 8].contains(m.size) else { return nil }
        if Self.signedScalars.contains(m.type) { return (0, m.size, true) }
        if Self.unsignedScalars.contains(m.type) || m.type.hasPrefix("*") { return (0, m.size, false) }
        // A struct wrapping one integer.
        if depth < 4, let l = layout(of: m.type) {
            let sized = l.members.filter { $0.size > 0 && !$0.name.contains(".") }
            guard sized.count == 1, let v = sized.first, v.size == m.size,
                  let (o, s, sg) = scalar(v, depth: depth + 1) else { return nil }
            return (v.offset + o, s, sg)
        }
        // The atomic packages' integer types, by definition (no layout in the table).
        let base = m.type.split(separator: "/").last.map(String.init) ?? m.type
        switch base {
        case "atomic.Int32" where m.size == 4, "atomic.Int64" where m.size == 8: return (0, m.size, true)
        case "atomic.Uint32" where m.size == 4, "atomic.Uint64" where m.size == 8,
             "atomic.Uintptr" where m.size == 8, "atomic.Bool" where m.size == 1:
            return (0, m.size, false)
        default: return nil
        }
    }
}
