import CElf
import Glibc

/// One line of /proc/PID/maps: a virtual memory area of a process.
public struct MemoryMapping: Sendable, Equatable {
    /// First address of the mapping.
    public var start: UInt64
    /// One past the last address.
    public var end: UInt64
    public var readable: Bool
    public var writable: Bool
    public var executable: Bool
    /// `p` (copy-on-write private) rather than `s` (shared).
    public var isPrivate: Bool
    /// Offset in the mapped file (page aligned; meaningless for anonymous mappings).
    public var offset: UInt64
    /// The file's device as the kernel prints it: hex `major:minor`, e.g. `fd:01`.
    public var device: String
    /// The file's inode; 0 for anonymous mappings.
    public var inode: UInt64
    /// The file path (without any " (deleted)" suffix), a pseudo path such as `[heap]`,
    /// `[stack]`, `[vdso]`, `[anon:name]`, or "" for an anonymous mapping. The kernel
    /// escapes a newline in a path as `\012`; that is left as is.
    public var path: String
    /// The kernel marked the file " (deleted)": it was unlinked (or replaced) after it
    /// was mapped. (A file really named "... (deleted)" is indistinguishable.)
    public var deleted: Bool

    public init(start: UInt64, end: UInt64, readable: Bool, writable: Bool, executable: Bool, isPrivate: Bool,
                offset: UInt64, device: String, inode: UInt64, path: String, deleted: Bool = false) {
        self.start = start
        self.end = end
        self.readable = readable
        self.writable = writable
        self.executable = executable
        self.isPrivate = isPrivate
        self.offset = offset
        self.device = device
        self.inode = inode
        self.path = path
        self.deleted = deleted
    }

    public var size: UInt64 { end - start }
    public func contains(_ address: UInt64) -> Bool { address >= start && address < end }

    /// `device` as numbers (nil if it is malformed).
    public var deviceNumbers: (major: UInt32, minor: UInt32)? {
        let parts = device.split(separator: ":")
        guard parts.count == 2, let ma = UInt32(parts[0], radix: 16), let mi = UInt32(parts[1], radix: 16) else {
            return nil
        }
        return (ma, mi)
    }

    /// A file-backed mapping (not anonymous, not a `[pseudo]` area).
    public var isFile: Bool { inode != 0 || path.hasPrefix("/") }
}

extension Array where Element == MemoryMapping {
    /// The mapping that contains `address`, by binary search. The array must be sorted by
    /// address and non-overlapping, as /proc/PID/maps and ``ProcessMaps/parse(_:)`` give it.
    public func mapping(containing address: UInt64) -> MemoryMapping? {
        var lo = startIndex
        var hi = endIndex
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let m = self[mid]
            if address < m.start {
                hi = mid
            } else if address >= m.end {
                lo = mid + 1
            } else {
                return m
            }
        }
        return nil
    }
}

/// Reads and parses /proc/PID/maps, and finds where a process's executable is loaded.
public enum ProcessMaps {
    /// The mappings of process `pid`, sorted by address. Throws `.exited` if the process is
    /// gone and `.permission` if the agent may not read its maps. A zombie has no mappings.
    public static func read(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> [MemoryMapping] {
        let bytes = try ProcFile.read("\(procRoot)/\(pid)/maps", pid: pid)
        return parse(bytes)
    }

    /// Parses the text of a maps file. Malformed lines are skipped.
    public static func parse(_ text: String) -> [MemoryMapping] {
        var text = text
        return text.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }

    static func parse(_ bytes: [UInt8]) -> [MemoryMapping] {
        bytes.withUnsafeBytes { parse($0) }
    }

    static func parse(_ raw: UnsafeRawBufferPointer) -> [MemoryMapping] {
        var out: [MemoryMapping] = []
        var lineStart = 0
        while lineStart < raw.count {
            var lineEnd = lineStart
            while lineEnd < raw.count && raw[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            if let m = parseLine(UnsafeRawBufferPointer(rebasing: raw[lineStart..<lineEnd])) { out.append(m) }
            lineStart = lineEnd + 1
        }
        return out
    }

    /// `start-end perms offset major:minor inode [padding path]`
    static func parseLine(_ line: UnsafeRawBufferPointer) -> MemoryMapping? {
        var i = 0
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
        func skipBlanks() { while i < line.count && (line[i] == space || line[i] == tab) { i += 1 } }
        func field() -> UnsafeRawBufferPointer? {
            skipBlanks()
            let s = i
            while i < line.count && line[i] != space && line[i] != tab { i += 1 }
            return i > s ? UnsafeRawBufferPointer(rebasing: line[s..<i]) : nil
        }
        func hex(_ f: UnsafeRawBufferPointer) -> UInt64? {
            guard !f.isEmpty, f.count <= 16 else { return nil }
            var v: UInt64 = 0
            for c in f {
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt64(d)
            }
            return v
        }
        guard let range = field(), let dash = range.firstIndex(of: UInt8(ascii: "-")),
              let start = hex(UnsafeRawBufferPointer(rebasing: range[..<dash])),
              let end = hex(UnsafeRawBufferPointer(rebasing: range[(dash + 1)...])),
              let perms = field(), perms.count >= 4,
              let offField = field(), let offset = hex(offField),
              let dev = field(), dev.contains(UInt8(ascii: ":")),
              let inoField = field(), let inode = UInt64(String(decoding: inoField, as: UTF8.self))
        else { return nil }
        skipBlanks()
        var path = String(decoding: UnsafeRawBufferPointer(rebasing: line[i...]), as: UTF8.self)
        var deleted = false
        if path.hasSuffix(" (deleted)") {
            path.removeLast(" (deleted)".utf8.count)
            deleted = true
        }
        return MemoryMapping(
            start: start, end: end,
            readable: perms[0] == UInt8(ascii: "r"), writable: perms[1] == UInt8(ascii: "w"),
            executable: perms[2] == UInt8(ascii: "x"), isPrivate: perms[3] == UInt8(ascii: "p"),
            offset: offset, device: String(decoding: dev, as: UTF8.self), inode: inode,
            path: path, deleted: deleted)
    }

    // MARK: - Load bias

    /// Identity of a process's executable file, for finding its mappings.
    public struct ExecutableIdentity: Sendable, Equatable {
        public var deviceMajor: UInt32
        public var deviceMinor: UInt32
        public var inode: UInt64
        /// readlink of /proc/PID/exe, without a " (deleted)" suffix ("" if unknown).
        public var path: String

        public init(deviceMajor: UInt32, deviceMinor: UInt32, inode: UInt64, path: String) {
            self.deviceMajor = deviceMajor
            self.deviceMinor = deviceMinor
            self.inode = inode
            self.path = path
        }

        /// stat() and readlink() of `\(procRoot)/\(pid)/exe`. stat follows the magic link to the
        /// very file the process executes, so this works for deleted binaries and binaries in
        /// other mount namespaces (containers), where the path means nothing to the agent.
        public static func of(pid: Int32, procRoot: String = HostProc.path) throws(ProcessReadError) -> ExecutableIdentity {
            let exe = "\(procRoot)/\(pid)/exe"
            var st = stat()
            guard stat(exe, &st) == 0 else { throw ProcessReadError.from(errno: errno, pid: pid) }
            let dev = UInt64(st.st_dev)
            // glibc's gnu_dev_major/minor encoding.
            let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff)))
            let minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff)))
            var path = ""
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(exe, &buf, buf.count - 1)
            if n > 0 {
                path = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".utf8.count) }
            }
            return ExecutableIdentity(deviceMajor: major, deviceMinor: minor, inode: UInt64(st.st_ino), path: path)
        }
    }

    /// The mappings (sorted by address) of the file `exe`: those with its device and inode;
    /// if there are none (overlayfs reports the underlying file's device in maps while stat
    /// reports the overlay's), those with its inode and path; failing that, its path.
    public static func mappings(of exe: ExecutableIdentity, in maps: [MemoryMapping]) -> [MemoryMapping] {
        let byID = maps.filter { m in
            m.inode == exe.inode && m.deviceNumbers.map { $0.major == exe.deviceMajor && $0.minor == exe.deviceMinor } == true
        }
        if !byID.isEmpty { return byID }
        guard !exe.path.isEmpty else { return [] }
        let byInodeAndPath = maps.filter { $0.inode == exe.inode && $0.path == exe.path }
        if !byInodeAndPath.isEmpty { return byInodeAndPath }
        return maps.filter { $0.isFile && $0.path == exe.path }
    }

    /// The load bias of process `pid`'s main executable, `elf` (the same file, opened by the
    /// caller, e.g. from /proc/PID/exe): what to add to a virtual address in the ELF file
    /// (a symbol value, a section address) to get the address in the process.
    ///
    /// 0 for a non-PIE executable (ET_EXEC), which is loaded at its link addresses. For a
    /// PIE (ET_DYN) the kernel maps the first PT_LOAD segment at `bias + page_down(vaddr)`
    /// from file offset `page_down(offset)`, so
    /// `bias = mapping.start - mapping.offset - (load.vaddr - load.offset)` for the lowest
    /// mapping of the file that holds the first PT_LOAD's file offset.
    ///
    /// Throws ``ProcessReadError`` if the process is gone or unreadable, and
    /// ``IntrospectionError`` if the executable's mappings cannot be found.
    public static func loadBias(pid: Int32, elf: ELFFile, procRoot: String = HostProc.path) throws -> UInt64 {
        if elf.type == UInt16(ET_EXEC) { return 0 }
        let exe = try ExecutableIdentity.of(pid: pid, procRoot: procRoot)
        let maps = try read(pid: pid, procRoot: procRoot)
        return try loadBias(executableMappings: mappings(of: exe, in: maps), elf: elf)
    }

    /// The load bias given the executable's own mappings (see ``mappings(of:in:)``).
    public static func loadBias(executableMappings: [MemoryMapping], elf: ELFFile) throws(IntrospectionError) -> UInt64 {
        try loadBias(executableMappings: executableMappings, elfType: elf.type, segments: elf.segments, path: elf.path)
    }

    static func loadBias(executableMappings: [MemoryMapping], elfType: UInt16, segments: [ELFFile.Segment],
                         path: String) throws(IntrospectionError) -> UInt64 {
        if elfType == UInt16(ET_EXEC) { return 0 }
        let loads = segments.filter { $0.type == UInt32(PT_LOAD) }
        guard let first = loads.min(by: { $0.vaddr < $1.vaddr }) else {
            throw .init("\(path): no PT_LOAD segment")
        }
        guard !executableMappings.isEmpty else {
            throw .init("\(path): the executable is not among the process's mappings")
        }
        let page = UInt64(max(4096, sysconf(Int32(_SC_PAGESIZE))))
        let firstPage = first.offset & ~(page - 1)
        // The mapping of the first PT_LOAD: the lowest one starting at its page-aligned file
        // offset. (The kernel may split a segment's mapping, e.g. for RELRO, and merge
        // adjacent ones; either way start - offset stays constant within one segment.)
        let sorted = executableMappings.sorted { $0.start < $1.start }
        if let m = sorted.first(where: { $0.offset == firstPage }) {
            return m.start &- m.offset &- (first.vaddr &- first.offset)
        }
        // No mapping at that offset (partly unmapped?): use any mapping that falls inside
        // exactly one PT_LOAD's file range.
        for m in sorted {
            let holders = loads.filter { s in
                let lo = s.offset & ~(page - 1)
                return m.offset >= lo && m.offset < s.offset + max(s.fileSize, 1)
            }
            if holders.count == 1, let s = holders.first {
                return m.start &- m.offset &- (s.vaddr &- s.offset)
            }
        }
        throw .init("\(path): cannot match the process's mappings to the file's PT_LOAD segments")
    }
}
