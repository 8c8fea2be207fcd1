import ELFSymbols
import Foundation
import Synchronization

/// Everything the introspection library knows about one executable file,
/// parsed lazily and shared: 50 processes of one binary parse it once
/// (see `GoBinaryCache`).
public final class GoBinary: @unchecked Sendable {
    public let path: String
    public let elf: ELFFile
    /// nil for non-Go binaries.
    public let buildInfo: GoBuildInfo?
    private let lock = NSLock()
    private let parseLock = NSLock()
    private var _symbols: [ELFSymbol]?
    private var _pcln: Result<PclnTable, IntrospectionError>?
    private var _dwarf: DWARFLayouts??

    /// Opens `path` (use /proc/PID/exe for a running process: it works for
    /// deleted binaries and other mount namespaces).
    public convenience init(path: String) throws(IntrospectionError) {
        try self.init(elf: try ELFFile(path: path))
    }

    /// Wraps an opened file.
    public init(elf: ELFFile) throws(IntrospectionError) {
        self.path = elf.path
        self.elf = elf
        buildInfo = try GoBuildInfo.read(from: elf)
    }

    public var isGo: Bool { buildInfo != nil }
    public var goVersion: String? { buildInfo?.goVersion }
    public var isStatic: Bool { !elf.hasInterpreter }
    public var isPIE: Bool { elf.isPositionIndependent }
    /// Stripped of its symbol table (`-ldflags=-s`).
    public var isStripped: Bool { !elf.hasSymbolTable }
    public var hasDWARF: Bool { elf.hasDWARFSections }
    /// GNU build id, else Go build id.
    public var buildID: String? { elf.gnuBuildID ?? elf.goBuildID }

    public var symbols: [ELFSymbol] {
        lock.lock()
        defer { lock.unlock() }
        if let s = _symbols { return s }
        let s = elf.readSymbols()
        _symbols = s
        return s
    }

    public func symbol(named name: String) -> ELFSymbol? {
        symbols.first { $0.name == name && !$0.isDynamic } ?? symbols.first { $0.name == name }
    }

    /// The function table; parsed on first use.
    public func pclnTable() throws(IntrospectionError) -> PclnTable {
        lock.lock()
        let cached = _pcln
        lock.unlock()
        if let cached { return try cached.get() }
        // Plugins attach concurrently: the first parses, the others wait for
        // its table instead of parsing the same bytes again.
        parseLock.lock()
        defer { parseLock.unlock() }
        lock.lock()
        let parsed = _pcln
        lock.unlock()
        if let parsed { return try parsed.get() }
        let syms = symbols
        let r: Result<PclnTable, IntrospectionError>
        do throws(IntrospectionError) { r = .success(try PclnTable.load(from: elf, symbols: syms)) } catch { r = .failure(error) }
        IntrospectionCounters.pclnTablesParsed.add(1, ordering: .relaxed)
        lock.lock()
        _pcln = r
        lock.unlock()
        return try r.get()
    }

    /// Closes the DWARF handle, keeping the layouts resolved so far (see
    /// `DWARFLayouts.releaseHandle`). Each reader calls it once its layouts are
    /// resolved, so a cached binary does not keep megabytes of DWARF.
    public func releaseDWARF() {
        lock.lock()
        let d = _dwarf
        lock.unlock()
        d??.releaseHandle()
    }

    /// The binary's own DWARF layouts, or nil when it has none.
    public var dwarf: DWARFLayouts? {
        lock.lock()
        defer { lock.unlock() }
        if let d = _dwarf { return d }
        let d = hasDWARF ? (try? DWARFLayouts(path: path)).flatMap { $0.hasDWARF ? $0 : nil } : nil
        _dwarf = .some(d)
        return d
    }

    /// Where the runtime's globals are, by every strategy of `locator`.
    public func runtimeGlobals(locator: RuntimeGlobalsLocator = .standard) -> [RuntimeGlobal] {
        locator.locate(in: self)
    }
}

/// Shares parsed binaries by file identity (device, inode, size, mtime).
public enum GoBinaryCache {
    /// A file's identity: the build id *and* (device, inode, size, mtime). Two
    /// containers may run different builds at one path, and a replaced binary may
    /// get the old one's inode back (tmpfs reuses them): offsets computed for one
    /// build applied to another could read, or for a tracer patch, the wrong place.
    struct Key: Hashable { var dev: UInt64; var ino: UInt64; var size: UInt64; var modified: Int64; var buildID: String }
    private static let cache = Mutex<[Key: GoBinary]>([:])

    /// The parsed binary behind `path`, from the cache when the same file was
    /// seen. The file is opened once either way: its identity comes from the open
    /// descriptor and its notes, so a path that now names another file (a reused
    /// pid's /proc/PID/exe) cannot return the old file's parse.
    public static func binary(path: String) throws(IntrospectionError) -> GoBinary {
        try binary(elf: try ELFFile(path: path))
    }

    /// The parsed binary behind an opened file: the cached one when the same
    /// file (and build) was parsed before, through whichever path. The CPU
    /// profiler's symbolizer and the runtime readers share one pclntab this way.
    public static func binary(elf: ELFFile) throws(IntrospectionError) -> GoBinary {
        let key = Key(dev: elf.device, ino: elf.inode, size: elf.fileSize, modified: elf.modified,
                      buildID: elf.gnuBuildID ?? elf.goBuildID ?? "")
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let made = try GoBinary(elf: elf)
        // Two plugins may miss at once: the first one stored wins, so both
        // share its parses.
        return cache.withLock { c in
            if let first = c[key] { return first }
            if c.count >= 256 { c.removeAll() }
            c[key] = made
            IntrospectionCounters.binariesOpened.add(1, ordering: .relaxed)
            return made
        }
    }

    /// Number of distinct binaries cached (for tests and self-metrics).
    public static var count: Int { cache.withLock { $0.count } }
}

/// How often this process parsed something, for the agent's self-metrics
/// (`ferret.introspection.*`): with the library shared by the host and every
/// plugin, a binary read by three plugins is opened and parsed once.
public enum IntrospectionCounters {
    /// Binaries opened and wrapped (`GoBinaryCache` misses).
    public static let binariesOpened = Atomic<Int>(0)
    /// Function tables (pclntab) parsed.
    public static let pclnTablesParsed = Atomic<Int>(0)
}
