import Foundation
import Synchronization

/// One frame of a symbolized address. An address inside inlined code gives
/// several: the inlined functions, innermost first, then the function they were
/// inlined into (what `runtime.CallersFrames` and pprof's Location.line list).
public struct SymbolizedFrame: Sendable, Hashable {
    public var function: String
    /// Source file; "" when only a symbol name is known (native code without DWARF).
    public var file: String
    public var line: Int
    /// The function's first line (0 when unknown).
    public var startLine: Int
    public var inlined: Bool

    public init(function: String, file: String = "", line: Int = 0, startLine: Int = 0, inlined: Bool = false) {
        self.function = function
        self.file = file
        self.line = line
        self.startLine = startLine
        self.inlined = inlined
    }
}

/// The executable mapping an address fell in, as pprof's Mapping records it.
public struct SymbolizedMapping: Sendable, Hashable {
    public var start: UInt64
    public var limit: UInt64
    /// File offset of `start`.
    public var offset: UInt64
    public var path: String
    public var buildID: String
    /// Whether addresses in it were symbolized to functions.
    public var hasFunctions: Bool
}

/// A symbolized address: never dropped. An address no symbol covers keeps its
/// mapping (when it has one) and no frames.
public struct SymbolizedLocation: Sendable, Hashable {
    public var address: UInt64
    public var mapping: SymbolizedMapping?
    /// Innermost first; empty when unknown.
    public var frames: [SymbolizedFrame]
}

/// The symbols of one ELF object (an executable or a shared library), for
/// symbolizing link-time addresses: Go functions through pclntab, with inlined
/// frames (stripped Go binaries keep pclntab), then native functions through
/// `.symtab` and `.dynsym`, from a separate debug file found by build id under
/// /usr/lib/debug/.build-id when the object itself has no `.symtab`.
public final class ObjectSymbols: @unchecked Sendable {
    public let path: String
    public let buildID: String
    let elf: ELFFile
    let pcln: PclnTable?
    /// Native function symbols, sorted by address, non-overlapping lookups by
    /// binary search; `end` is value + size (or the next symbol for size 0).
    private let natives: [(start: UInt64, end: UInt64, name: String)]
    /// Where the native symbols came from ("symtab", "dynsym", "debug file /usr/lib/debug/...").
    public let nativeSource: String

    /// `openPath` is where the file is opened (e.g. through /proc/PID/root);
    /// `path` is the name recorded in profiles.
    public convenience init(path: String, openPath: String? = nil,
                            debugRoots: [String] = ["/usr/lib/debug"]) throws(IntrospectionError) {
        try self.init(path: path, elf: try ELFFile(path: openPath ?? path), debugRoots: debugRoots)
    }

    /// The symbols of an opened file. Separate debug files are looked up by build
    /// id under each of `debugRoots` in turn (a container's own /usr/lib/debug,
    /// through /proc/PID/root, before the host's).
    public init(path: String, elf: ELFFile, debugRoots: [String]) {
        self.path = path
        self.elf = elf
        buildID = elf.gnuBuildID ?? elf.goBuildID ?? ""
        var symbols = elf.readSymbols()
        // Go: pclntab, when the object has one (found by section or by magic
        // scan), shared with the runtime readers through the binary cache.
        if let go = try? GoBinaryCache.binary(elf: elf), go.isGo {
            pcln = try? go.pclnTable()
        } else {
            pcln = nil
        }
        var source = elf.hasSymbolTable ? "symtab" : "dynsym"
        if !elf.hasSymbolTable, let id = elf.gnuBuildID, id.count > 2 {
            for root in debugRoots {
                let debugPath = "\(root)/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug"
                if let debug = try? ELFFile(path: debugPath), debug.gnuBuildID == id {
                    symbols += debug.readSymbols()
                    source = "debug file \(debugPath)"
                    break
                }
            }
        }
        nativeSource = source
        var funcs = symbols.filter { $0.type == 2 /* STT_FUNC */ && $0.value != 0 && !$0.name.isEmpty }
        funcs.sort { ($0.value, $1.isDynamic ? 0 : 1) < ($1.value, $0.isDynamic ? 0 : 1) }
        var out: [(UInt64, UInt64, String)] = []
        out.reserveCapacity(funcs.count)
        for (i, s) in funcs.enumerated() {
            if let last = out.last, last.0 == s.value { continue } // aliases: keep the first (symtab) name
            let next = i + 1 < funcs.count ? funcs[i + 1].value : s.value &+ max(s.size, 1)
            out.append((s.value, s.size > 0 ? s.value &+ s.size : max(next, s.value &+ 1), s.name))
        }
        natives = out
    }

    /// The link-time address of a file offset, through the PT_LOAD segment holding it.
    public func linkAddress(fileOffset: UInt64) -> UInt64? {
        for s in elf.segments where s.type == 1 /* PT_LOAD */ && fileOffset >= s.offset && fileOffset < s.offset &+ s.fileSize {
            return s.vaddr &+ (fileOffset &- s.offset)
        }
        return nil
    }

    /// Frames for a link-time address (innermost first); empty when unknown.
    public func frames(at address: UInt64) -> [SymbolizedFrame] {
        if let pcln {
            let f = pcln.frames(at: address)
            if !f.isEmpty {
                return f.map { SymbolizedFrame(function: $0.function, file: $0.file, line: $0.line,
                                               startLine: $0.startLine, inlined: $0.inlined) }
            }
        }
        var lo = 0, hi = natives.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if natives[mid].start <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return [] }
        let n = natives[lo - 1]
        guard address < n.end else { return [] }
        return [SymbolizedFrame(function: n.name)]
    }

    public var isGo: Bool { pcln != nil }

    /// How to unwind a Go frame at a link-time address (nil for non-Go code).
    public func goUnwindInfo(at address: UInt64) -> PclnTable.UnwindInfo? { pcln?.unwindInfo(at: address) }
}

/// ObjectSymbols shared across processes and plugins' calls, keyed by the file's
/// identity (device, inode, size, mtime) *and* its build id, so a binary that 100
/// processes run is parsed once, and a replaced binary that got the old inode
/// back is parsed anew.
public enum ObjectSymbolsCache {
    private static let cache = Mutex([String: ObjectSymbols]())
    private static let failures = Mutex([String: String]())

    public static func symbols(for m: MemoryMapping, pid: Int32) -> ObjectSymbols? {
        let mapped = "\(m.device):\(m.inode):\(m.path)"
        if failures.withLock({ $0[mapped] }) != nil { return nil }
        // The file the process mapped, read through the process's own root, so
        // programs in containers resolve their own files. When the path there names
        // another file by now (replaced on disk), the mapping itself is opened
        // through map_files.
        let root = HostProc.file(pid, "root")
        var elf = try? ELFFile(path: root + m.path)
        if elf.map({ $0.inode != m.inode }) ?? true {
            let mapFile = HostProc.file(pid, "map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))")
            elf = (try? ELFFile(path: mapFile)) ?? elf
        }
        if elf == nil { elf = try? ELFFile(path: m.path) }
        guard let elf else {
            failures.withLock { $0[mapped] = "\(m.path): cannot be opened through \(root) or map_files" }
            return nil
        }
        let key = "\(elf.device):\(elf.inode):\(elf.fileSize):\(elf.modified):\(elf.gnuBuildID ?? elf.goBuildID ?? "")"
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let s = ObjectSymbols(path: m.path, elf: elf, debugRoots: [root + "/usr/lib/debug", "/usr/lib/debug"])
        cache.withLock { c in
            if c.count >= 1024 { c.removeAll() }
            c[key] = s
        }
        return s
    }

    /// Forgets everything (tests; a host that wants the memory back).
    public static func removeAll() {
        cache.withLock { $0.removeAll() }
        failures.withLock { $0.removeAll() }
    }
}

/// Symbolizes addresses of one running process, with a per-address cache.
/// Addresses are mapped to the object file whose executable mapping holds them
/// (`/proc/PID/maps`), converted to link-time addresses through the mapping's
/// file offset and the object's PT_LOAD segments (this handles PIE and ASLR),
/// and looked up there. An address outside every known mapping makes the maps be
/// read again (a library loaded since), at most once a second, then stays unknown.
public final class ProcessSymbolizer: @unchecked Sendable {
    public let pid: Int32
    private var mappings: [MemoryMapping] = []
    private var cache: [UInt64: SymbolizedLocation] = [:]
    /// Cache bound: a process's distinct sampled PCs stay far below this.
    static let maxCached = 200_000

    public init(pid: Int32) throws(ProcessReadError) {
        self.pid = pid
        try reloadMaps()
    }

    /// A symbolizer over mappings recorded earlier (the maps a crashed process
    /// wrote before it died): they are never read again.
    public init(pid: Int32, recordedMaps: [MemoryMapping]) {
        self.pid = pid
        frozen = true
        use(recordedMaps)
    }
    private var frozen = false

    public func reloadMaps() throws(ProcessReadError) {
        if frozen { return }
        use(try ProcessMaps.read(pid: pid))
    }

    private func use(_ maps: [MemoryMapping]) {
        let executable = maps.filter { $0.executable }
        mappings = executable.filter { $0.isFile && !$0.path.isEmpty }
        code = executable.map { ($0.start, $0.end) }
    }

    /// Every executable range, file-backed or not (JIT code, the vDSO).
    private var code: [(start: UInt64, end: UInt64)] = []

    /// Whether `address` lies in executable memory of the process. A return
    /// address that does not is not a frame: a frame-pointer chain broken by code
    /// that uses RBP for data (hand-written assembly) reads garbage from there on.
    public func isCode(_ address: UInt64) -> Bool {
        if code.contains(where: { address >= $0.start && address < $0.end }) { return true }
        return reloadIfDue() && code.contains(where: { address >= $0.start && address < $0.end })
    }

    /// Reads the maps again (a library loaded since) at most once a second.
    private func reloadIfDue() -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        guard !frozen, now &- lastReload >= 1_000_000_000 else { return false }
        lastReload = now
        return (try? reloadMaps()) != nil
    }
    private var lastReload: UInt64 = 0

    /// Symbolizes `address`. A return address (any frame but a sample's leaf) is
    /// looked up at `address − 1`, inside the call instruction, as Go's own
    /// profiler does; the location keeps `address`.
    public func symbolize(_ address: UInt64, isReturnAddress: Bool) -> SymbolizedLocation {
        let key = Self.cacheKey(address, isReturnAddress)
        if let hit = cache[key] { return hit }
        var loc = SymbolizedLocation(address: address, mapping: nil, frames: [])
        if let m = mapping(containing: address) {
            let objects = ObjectSymbolsCache.symbols(for: m, pid: pid)
            if let objects, let link = Self.linkAddress(isReturnAddress ? address &- 1 : address, m, objects) {
                loc.frames = objects.frames(at: link)
            }
            loc.mapping = SymbolizedMapping(start: m.start, limit: m.end, offset: m.offset, path: m.path,
                                            buildID: objects?.buildID ?? "", hasFunctions: objects != nil)
        }
        if cache.count >= Self.maxCached { cache.removeAll(keepingCapacity: true) }
        cache[key] = loc
        return loc
    }

    public var cachedAddresses: Int { cache.count }

    /// How to step from a Go frame at `address` to its caller (see
    /// `PclnTable.UnwindInfo`); nil when the address is not Go code with a
    /// pcsp table. A return address is looked up at `address − 1`. Cached.
    public func goUnwindInfo(_ address: UInt64, isReturnAddress: Bool) -> PclnTable.UnwindInfo? {
        let key = Self.cacheKey(address, isReturnAddress)
        if let hit = unwindCache[key] { return hit }
        var info: PclnTable.UnwindInfo?
        let lookup = isReturnAddress ? address &- 1 : address
        if let m = mapping(containing: lookup), let objects = ObjectSymbolsCache.symbols(for: m, pid: pid), objects.isGo,
           let link = Self.linkAddress(lookup, m, objects) {
            info = objects.goUnwindInfo(at: link)
        }
        if unwindCache.count >= Self.maxCached { unwindCache.removeAll(keepingCapacity: true) }
        unwindCache[key] = .some(info)
        return info
    }
    private var unwindCache: [UInt64: PclnTable.UnwindInfo?] = [:]

    /// A cache key telling a return address from a leaf IP at the same address
    /// (user addresses never set bit 63).
    private static func cacheKey(_ address: UInt64, _ isReturnAddress: Bool) -> UInt64 {
        isReturnAddress ? address : address | (1 << 63)
    }

    /// The executable file mapping holding `address`; when none does, the maps
    /// are read again (at most once a second) and looked at once more.
    private func mapping(containing address: UInt64) -> MemoryMapping? {
        if let m = mappings.first(where: { $0.contains(address) }) { return m }
        return reloadIfDue() ? mappings.first { $0.contains(address) } : nil
    }

    /// The link-time address in `objects` of `address`, mapped by `m`.
    private static func linkAddress(_ address: UInt64, _ m: MemoryMapping, _ objects: ObjectSymbols) -> UInt64? {
        objects.linkAddress(fileOffset: address &- m.start &+ m.offset)
    }
}
