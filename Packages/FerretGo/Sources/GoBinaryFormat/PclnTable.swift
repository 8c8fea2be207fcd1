import ELFSymbols
import Foundation

/// Go's function table, `pclntab`, read from the executable file.
///
/// Hand-written because no library parses it (debug/gosym is Go-only and
/// ignores inline trees). Layouts follow runtime/symtab.go and
/// cmd/link/internal/ld/pcln.go of Go 1.18–1.27:
/// - pcHeader: magic u32 (0xfffffff0 for 1.18–1.19, 0xfffffff1 for 1.20+),
///   2 pad bytes, minLC u8, ptrSize u8, then 8 words: nfunc, nfiles,
///   textStart, and the offsets of funcnametab, cutab, filetab, pctab, pclntab.
/// - functab at pclntab: nfunc+1 pairs {entryOff u32, funcOff u32}, the last
///   entry holding the end of the text.
/// - _func: entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln,
///   npcdata, cuOffset (u32 each), [startLine i32 since 1.20], funcID u8,
///   flag u8, pad, nfuncdata u8, then npcdata u32 and nfuncdata u32 offsets.
/// - pc-value tables: (zig-zag value delta, pc delta × minLC) varint pairs,
///   starting at value -1 and pc = entry.
/// - inline tree (FUNCDATA 3, relative to moduledata.gofunc), indexed by
///   PCDATA 2: 16-byte {funcID, pad[3], nameOff, parentPc, startLine} since
///   1.20; 20-byte {parent i16, funcID, pad, file, line, nameOff, parentPc}
///   in 1.18–1.19.
///
/// Every read is bounds-checked: a corrupt table gives nil results or an
/// error, never a trap. Lookups are O(log n) by address.
public final class PclnTable: @unchecked Sendable {
    public enum Format: String, Sendable { case go118 = "go1.18", go120 = "go1.20" }

    public static let magic118: UInt32 = 0xFFFF_FFF0
    public static let magic120: UInt32 = 0xFFFF_FFF1

    public let format: Format
    /// Address of the table (the pcHeader) in the file's virtual address space.
    public let address: UInt64
    /// Link-time address functions' entry offsets are relative to.
    public let textStart: UInt64
    public let functionCount: Int
    /// Entries of the compilation units' file table (cutab).
    let fileCount: Int
    public let minLC: UInt8

    let data: [UInt8]
    private let funcnametab: Int, cutab: Int, filetab: Int
    let pctab: Int, pclntab: Int
    /// Entry offsets (relative to textStart), nfunc + 1 values, ascending.
    let entries: [UInt32]
    let funcOffsets: [UInt32]
    let funcSize: Int
    private let inlineTreeReader: InlineTreeReader?
    private var nameIndex: [String: [Int]]?
    private let lock = NSLock()

    /// Parses a table whose bytes start at the pcHeader.
    /// - Parameters:
    ///   - textStartFallback: used when the header's textStart is 0 (PIE files
    ///     leave it to a dynamic relocation), normally the .text address.
    ///   - inlineTree: the go:func.* area, when it could be found.
    init(data: [UInt8], address: UInt64, textStartFallback: UInt64?, inlineTree: InlineTreeReader?) throws(IntrospectionError) {
        guard data.count >= 72 else { throw .init("pclntab: truncated header (\(data.count) bytes)") }
        let magic = data.u32(at: 0) ?? 0
        switch magic {
        case Self.magic118: format = .go118
        case Self.magic120: format = .go120
        default: throw .init("pclntab: unknown magic 0x\(String(magic, radix: 16)) (Go 1.18 to 1.27 use 0xfffffff0 or 0xfffffff1)")
        }
        guard data[4] == 0, data[5] == 0, [1, 2, 4].contains(data[6]), data[7] == 8 else {
            throw .init("pclntab: unsupported header (minLC \(data[6]), pointer size \(data[7])); only 64-bit is supported")
        }
        minLC = data[6]
        func word(_ i: Int) -> UInt64 { data.u64(at: 8 + 8 * i) ?? 0 }
        let nfunc = word(0)
        guard nfunc > 0, nfunc < 10_000_000 else { throw .init("pclntab: implausible function count \(nfunc)") }
        functionCount = Int(nfunc)
        fileCount = Int(min(word(1), 1 << 24))
        let headerText = word(2)
        guard let text = headerText != 0 ? headerText : textStartFallback else {
            throw .init("pclntab: textStart is not in the file and no .text section gives it")
        }
        // Keeps entry + offset arithmetic below 2^64 whatever the file says.
        guard text < 1 << 62 else { throw .init("pclntab: implausible text start 0x\(String(text, radix: 16))") }
        textStart = text
        let offs = (3...7).map { word($0) }
        guard offs.allSatisfy({ $0 < UInt64(data.count) }) else { throw .init("pclntab: a table offset points past the end (\(data.count) bytes)") }
        funcnametab = Int(offs[0]); cutab = Int(offs[1]); filetab = Int(offs[2]); pctab = Int(offs[3]); pclntab = Int(offs[4])
        funcSize = format == .go120 ? 44 : 40
        let ftabBytes = (functionCount + 1) * 8
        guard pclntab + ftabBytes <= data.count else { throw .init("pclntab: function table truncated") }
        var e = [UInt32](repeating: 0, count: functionCount + 1)
        var f = [UInt32](repeating: 0, count: functionCount + 1)
        let base = pclntab, n = functionCount
        data.withUnsafeBytes { raw in
            for i in 0...n {
                e[i] = raw.loadUnaligned(fromByteOffset: base + 8 * i, as: UInt32.self)
                f[i] = raw.loadUnaligned(fromByteOffset: base + 8 * i + 4, as: UInt32.self)
            }
        }
        for i in 1...n where e[i] < e[i - 1] {
            throw .init("pclntab: function entries are not sorted at index \(i)")
        }
        entries = e
        funcOffsets = f
        self.data = data
        self.address = address
        self.inlineTreeReader = inlineTree
    }

    /// True when inlined frames can be expanded (the go:func.* area was found).
    public var hasInlineTree: Bool { inlineTreeReader != nil }

    // MARK: - functions

    /// The function whose code contains `pc` (a link-time address).
    public func function(containing pc: UInt64) -> Function? {
        guard let i = index(containing: pc) else { return nil }
        return function(at: i)
    }

    /// Looks a function up by its full name, e.g. "net/http.(*Transport).roundTrip"
    /// (the first, lowest-addressed one when the name occurs more than once).
    public func function(named name: String) -> Function? {
        functionIndices(named: name).first.flatMap(function(at:))
    }

    /// The first function of each of `names`, by one pass over the name table
    /// that compares bytes (no String per function): what the globals locator
    /// needs from a large binary whose name index is not built yet. Uses the
    /// index when it is.
    public func functions(named names: Set<String>) -> [String: Function] {
        lock.lock()
        let built = nameIndex
        lock.unlock()
        var out: [String: Function] = [:]
        if let built {
            for n in names { if let i = built[n]?.first, let f = function(at: i) { out[n] = f } }
            return out
        }
        var byLength: [Int: [([UInt8], String)]] = [:]
        for n in names { byLength[n.utf8.count, default: []].append((Array(n.utf8), n)) }
        let longest = byLength.keys.max() ?? 0
        var found: [String: Int] = [:]
        data.withUnsafeBufferPointer { buf in
            for i in 0..<functionCount where found.count < names.count {
                guard let r = rawFunc(i) else { continue }
                let start = funcnametab &+ Int(r.nameOff)
                guard r.nameOff >= 0, start < buf.count else { continue }
                var end = start
                while end < buf.count && buf[end] != 0 && end - start <= longest { end += 1 }
                guard let candidates = byLength[end - start] else { continue }
                let slice = UnsafeBufferPointer(rebasing: buf[start..<end])
                for (bytes, name) in candidates where found[name] == nil && slice.elementsEqual(bytes) { found[name] = i }
            }
        }
        for (n, i) in found { if let f = function(at: i) { out[n] = f } }
        return out
    }

    /// Every function with this name: Go emits some twice (ABI0 and
    /// ABIInternal wrappers of assembly functions), in address order.
    public func functions(named name: String) -> [Function] {
        functionIndices(named: name).compactMap(function(at:))
    }

    /// Indices by name, built on first use.
    private func functionIndices(named name: String) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        if nameIndex == nil {
            var idx: [String: [Int]] = [:]
            idx.reserveCapacity(functionCount)
            for i in 0..<functionCount {
                if let r = rawFunc(i), let n = cString(funcnametab, Int(r.nameOff)) { idx[n, default: []].append(i) }
            }
            nameIndex = idx
        }
        return nameIndex?[name] ?? []
    }

    /// Checks a candidate `gofunc` address: the inline-tree entries of a
    /// sample of functions must decode to real names and to parent PCs inside
    /// their function. Used where moduledata's layout is not known.
    func validatesInlineTrees(gofunc: UInt64, elf: ELFFile) -> Bool {
        let size = format == .go120 ? 16 : 20
        var good = 0
        var i = 0
        while i < functionCount && good < 8 {
            defer { i += max(1, functionCount / 64) }
            guard let f = rawFunc(i), let off = funcdata(f, 3) else { continue }
            let fsize = UInt64(entries[min(i + 1, functionCount)] - entries[i])
            guard let b = try? elf.read(vaddr: gofunc &+ UInt64(off), count: size), b.count == size else { return false }
            let nameOff = (format == .go120 ? b.i32(at: 4) : b.i32(at: 12)) ?? -1
            let parentPc = (format == .go120 ? b.i32(at: 8) : b.i32(at: 16)) ?? -1
            guard nameOff >= 0, let name = cString(funcnametab, Int(nameOff)), !name.isEmpty,
                  name.utf8.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }), parentPc >= 0, UInt64(parentPc) < fsize else { return false }
            good += 1
        }
        return good >= 3
    }

    /// All functions, in address order.
    public func allFunctions() -> [Function] { (0..<functionCount).compactMap(function(at:)) }

    /// Symbolizes `pc`: the inlined frames (innermost first) and then the
    /// function itself, with file and line of each — what Go's own
    /// runtime.CallersFrames reports. For a return address from a stack,
    /// pass `pc - 1` so the call instruction is what gets looked up.
    public func frames(at pc: UInt64) -> [Frame] {
        guard let i = index(containing: pc), let f = rawFunc(i) else { return [] }
        let entry = textStart + UInt64(entries[i])
        let name = functionName(i, f)
        var out: [Frame] = []
        out.reserveCapacity(2)
        var cur = pc
        if let reader = inlineTreeReader, let idxTable = pcdata(f, 2), let treeOff = funcdata(f, 3) {
            let size = format == .go120 ? 16 : 20
            var ix = pcvalue(idxTable, entry: entry, target: cur) ?? -1
            var guardCount = 0
            while ix >= 0, guardCount < 256 {
                guardCount += 1
                guard let b = reader.read(reader.gofunc &+ UInt64(treeOff) &+ UInt64(ix) &* UInt64(size), size) else { break }
                let nameOff: Int32, parentPc: Int32, startLine: Int32, funcID: UInt8
                if format == .go120 {
                    nameOff = b.i32(at: 4) ?? -1; parentPc = b.i32(at: 8) ?? -1; startLine = b.i32(at: 12) ?? -1
                    funcID = b[b.startIndex]
                } else {
                    nameOff = b.i32(at: 12) ?? -1; parentPc = b.i32(at: 16) ?? -1; startLine = 0
                    funcID = b[b.startIndex + 2]
                }
                let (file, line) = position(f, entry: entry, pc: cur)
                out.append(Frame(function: cString(funcnametab, Int(nameOff)) ?? "?", file: file, line: line, inlined: true,
                                 startLine: Int(startLine), funcID: funcID, pc: cur))
                cur = entry + UInt64(UInt32(bitPattern: parentPc))
                ix = pcvalue(idxTable, entry: entry, target: cur) ?? -1
            }
        }
        let (file, line) = position(f, entry: entry, pc: cur)
        out.append(Frame(function: name, file: file, line: line, inlined: false, startLine: startLine(f, entry: entry),
                         funcID: funcID(f), pc: cur))
        return out
    }

    /// How to step from a frame at `pc` to its caller, as Go's own traceback does
    /// (runtime.funcspdelta): `spDelta` is the bytes the function has pushed below
    /// its return address at `pc` (the pcsp table), so the return address is at
    /// SP + spDelta. `isTop` marks the outermost frame of a stack (goexit, mstart,
    /// rt0_go: funcFlag_TOPFRAME) and `writesSP` a function that switches stacks
    /// or otherwise sets SP (funcFlag_SPWRITE: systemstack, mcall, morestack),
    /// past which SP-based unwinding cannot go. Nil when `pc` is in no function or
    /// its table is corrupt. For a return address, pass `pc - 1`.
    public struct UnwindInfo: Sendable, Equatable {
        public var spDelta: Int32
        public var isTop: Bool
        public var writesSP: Bool
    }

    public func unwindInfo(at pc: UInt64) -> UnwindInfo? {
        guard let i = index(containing: pc), let f = rawFunc(i) else { return nil }
        let entry = textStart + UInt64(entries[i])
        let pcsp = data.u32(at: f.offset + 16) ?? 0
        guard let delta = pcvalue(Int(pcsp), entry: entry, target: pc), delta >= 0, delta < 1 << 24 else { return nil }
        // _func.flag: byte 41 from Go 1.20 (after startLine), 37 in 1.18–1.19.
        let flag = data[f.offset + (format == .go120 ? 41 : 37)]
        return UnwindInfo(spDelta: delta, isTop: flag & 1 != 0, writesSP: flag & 2 != 0)
    }

    /// _func.funcID: byte 40 from Go 1.20 (after startLine), 36 in 1.18–1.19.
    func funcID(_ f: RawFunc) -> UInt8 { data[f.offset + (format == .go120 ? 40 : 36)] }

    /// The funcID of the function holding `pc` (not of a frame inlined there).
    public func funcID(at pc: UInt64) -> UInt8? {
        guard let i = index(containing: pc), let f = rawFunc(i) else { return nil }
        return funcID(f)
    }

    /// File and line of `pc` in its function, ignoring inlining (the innermost position).
    public func position(at pc: UInt64) -> (file: String, line: Int)? {
        guard let i = index(containing: pc), let f = rawFunc(i) else { return nil }
        return position(f, entry: textStart + UInt64(entries[i]), pc: pc)
    }

    // MARK: - internals

    func function(at i: Int) -> Function? {
        guard i >= 0, i < functionCount, let f = rawFunc(i) else { return nil }
        let entry = textStart + UInt64(entries[i])
        return Function(index: i, name: cString(funcnametab, Int(f.nameOff)) ?? "?", entry: entry,
                        end: textStart + UInt64(entries[i + 1]), startLine: startLine(f, entry: entry),
                        file: position(f, entry: entry, pc: entry).file)
    }

    private func startLine(_ f: RawFunc, entry: UInt64) -> Int {
        if format == .go120 { return Int(f.startLine) }
        return pcvalue(Int(f.pcln), entry: entry, target: entry).map(Int.init) ?? 0
    }

    private func position(_ f: RawFunc, entry: UInt64, pc: UInt64) -> (file: String, line: Int) {
        let line = pcvalue(Int(f.pcln), entry: entry, target: pc) ?? 0
        guard let fileIndex = pcvalue(Int(f.pcfile), entry: entry, target: pc), fileIndex >= 0 else { return ("?", Int(line)) }
        let index = Int(f.cuOffset) + Int(fileIndex)
        return (fileName(cutabIndex: index) ?? "?", Int(line))
    }

    /// Offset (into pctab) of PCDATA table `k`, if the function has it.
    private func pcdata(_ f: RawFunc, _ k: Int) -> Int? {
        guard k < Int(f.npcdata), let v = data.u32(at: f.offset + funcSize + 4 * k), v != 0 else { return nil }
        return Int(v)
    }

    /// Offset (from gofunc) of FUNCDATA `k`, if present.
    private func funcdata(_ f: RawFunc, _ k: Int) -> UInt32? {
        guard k < Int(f.nfuncdata), f.npcdata < 1 << 16,
              let v = data.u32(at: f.offset + funcSize + 4 * Int(f.npcdata) + 4 * k), v != UInt32.max else { return nil }
        return v
    }

    /// File names by cutab index (no hashing on the hot path).
    private var fileNames: [String?] = []

    private func fileName(cutabIndex index: Int) -> String? {
        guard index >= 0 else { return nil }
        stringLock.lock()
        if index < fileNames.count, let n = fileNames[index] {
            stringLock.unlock()
            return n
        }
        stringLock.unlock()
        guard let fileOff = data.u32(at: cutab + 4 * index), fileOff != UInt32.max,
              let n = decodeCString(filetab, Int(fileOff)) else { return nil }
        stringLock.lock()
        if fileNames.isEmpty { fileNames = [String?](repeating: nil, count: min(fileCount, 1 << 22)) }
        if index < fileNames.count { fileNames[index] = n }
        stringLock.unlock()
        return n
    }

    /// Function names by function index (no hashing on the hot path).
    private var names: [String?] = []

    private func functionName(_ i: Int, _ f: RawFunc) -> String {
        stringLock.lock()
        if names.isEmpty { names = [String?](repeating: nil, count: functionCount) }
        if let n = names[i] {
            stringLock.unlock()
            return n
        }
        stringLock.unlock()
        let n = decodeCString(funcnametab, Int(f.nameOff)) ?? "?"
        stringLock.lock()
        names[i] = n
        stringLock.unlock()
        return n
    }

    /// Decoded strings by table offset: symbolizing the same functions and
    /// files over and over must not decode (and allocate) them each time.
    private var stringCache: [Int: String] = [:]
    private let stringLock = NSLock()

    private func cString(_ base: Int, _ off: Int) -> String? {
        let key = base &+ off
        stringLock.lock()
        if let hit = stringCache[key] {
            stringLock.unlock()
            return hit
        }
        stringLock.unlock()
        let s = decodeCString(base, off)
        if let s {
            stringLock.lock()
            if stringCache.count > 1 << 20 { stringCache.removeAll(keepingCapacity: true) }
            stringCache[key] = s
            stringLock.unlock()
        }
        return s
    }

    private func decodeCString(_ base: Int, _ off: Int) -> String? {
        let start = base + off
        guard off >= 0, start < data.count else { return nil }
        return data.withUnsafeBufferPointer { buf in
            var end = start
            while end < buf.count && buf[end] != 0 && end - start < 65536 { end += 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: buf[start..<end]), as: UTF8.self)
        }
    }
}
