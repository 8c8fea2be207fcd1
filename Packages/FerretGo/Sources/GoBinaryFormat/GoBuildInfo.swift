import ELFSymbols
/// Go build information from the `.go.buildinfo` blob that every Go
/// executable since 1.13 carries, stripped or not. Layout (Go 1.18+,
/// src/debug/buildinfo/buildinfo.go): a 32-byte header beginning with the
/// magic "\xff Go buildinf:", pointer size at byte 14, flags at byte 15;
/// flag 0x2 means the version and module strings follow inline as
/// varint-length-prefixed strings. Older binaries store two pointers instead.
public struct GoBuildInfo: Sendable, Hashable {
    public struct Module: Sendable, Hashable {
        public var path: String
        public var version: String
        public var sum: String
    }

    /// e.g. "go1.22.10"
    public var goVersion: String
    /// The main module ("mod" line); empty for programs built outside a module.
    public var main: Module?
    public var dependencies: [Module]
    /// Build settings ("build" lines), e.g. CGO_ENABLED, -ldflags, vcs.revision.
    public var settings: [(key: String, value: String)]

    public static func == (a: GoBuildInfo, b: GoBuildInfo) -> Bool {
        a.goVersion == b.goVersion && a.main == b.main && a.dependencies == b.dependencies
            && a.settings.map(\.key) == b.settings.map(\.key) && a.settings.map(\.value) == b.settings.map(\.value)
    }

    public func hash(into h: inout Hasher) {
        h.combine(goVersion)
        h.combine(main)
    }

    public func setting(_ key: String) -> String? { settings.first { $0.key == key }?.value }

    static let magic: [UInt8] = [0xFF] + Array(" Go buildinf:".utf8)

    /// Reads build info from an ELF file. Returns nil when the file is not a Go binary.
    public static func read(from elf: ELFFile) throws(IntrospectionError) -> GoBuildInfo? {
        var header: [UInt8] = []
        var base: UInt64 = 0
        if let s = elf.section(named: ".go.buildinfo") {
            header = try elf.read(offset: s.offset, count: Int(min(s.size, 64 * 1024)))
            base = s.address
        } else {
            // No section headers: scan the writable PT_LOAD segments, 16-byte aligned.
            for seg in elf.segments where seg.type == 1 && seg.flags & 2 != 0 {
                let data = try elf.read(offset: seg.offset, count: Int(min(seg.fileSize, 32 << 20)))
                var i = 0
                while i + 32 <= data.count {
                    if data[i] == 0xFF && Array(data[i..<i + 14]) == magic {
                        header = Array(data[i..<min(data.count, i + 64 * 1024)])
                        base = seg.vaddr &+ UInt64(i)
                        break
                    }
                    i += 16
                }
                if !header.isEmpty { break }
            }
        }
        guard header.count >= 32, Array(header[0..<14]) == magic else { return nil }
        let ptrSize = Int(header[14])
        let flags = header[15]
        var version = "", modinfo = ""
        if flags & 0x2 != 0 {
            var pos = 32
            version = readVarString(header, &pos) ?? ""
            modinfo = readVarString(header, &pos) ?? ""
        } else {
            // Pre-1.18: two pointers to Go string headers {ptr, len}.
            let bigEndian = flags & 0x1 != 0
            guard ptrSize == 4 || ptrSize == 8 else { return GoBuildInfo(goVersion: "unknown", main: nil, dependencies: [], settings: []) }
            func word(_ b: [UInt8], _ at: Int) -> UInt64 {
                var v: UInt64 = 0
                for k in 0..<ptrSize { v |= UInt64(b[at + k]) << (8 * UInt64(bigEndian ? ptrSize - 1 - k : k)) }
                return v
            }
            func goString(_ ptr: UInt64) throws(IntrospectionError) -> String {
                let hdr = try elf.read(vaddr: ptr, count: 2 * ptrSize)
                guard hdr.count == 2 * ptrSize else { return "" }
                let data = try elf.read(vaddr: word(hdr, 0), count: Int(min(word(hdr, ptrSize), 1 << 20)))
                return String(decoding: data, as: UTF8.self)
            }
            _ = base
            version = try goString(word(header, 16))
            modinfo = try goString(word(header, 16 + ptrSize))
        }
        if version.isEmpty { version = "unknown" }
        var info = GoBuildInfo(goVersion: version, main: nil, dependencies: [], settings: [])
        // The module info is framed by 16-byte sentinels.
        if modinfo.utf8.count >= 33 {
            let u = Array(modinfo.utf8)
            if u[u.count - 17] == 0x0A { modinfo = String(decoding: u[16..<(u.count - 16)], as: UTF8.self) }
        }
        for line in modinfo.split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard let kind = f.first else { continue }
            switch kind {
            case "mod" where f.count >= 2:
                info.main = Module(path: f[1], version: f.count > 2 ? f[2] : "", sum: f.count > 3 ? f[3] : "")
            case "dep" where f.count >= 2:
                info.dependencies.append(Module(path: f[1], version: f.count > 2 ? f[2] : "", sum: f.count > 3 ? f[3] : ""))
            case "=>" where f.count >= 2 && !info.dependencies.isEmpty:
                // A replacement of the previous dependency.
                let last = info.dependencies.count - 1
                info.dependencies[last].version += " => \(f[1])\(f.count > 2 ? " " + f[2] : "")"
            case "build" where f.count >= 2:
                let kv = f[1...].joined(separator: "\t")
                if let eq = kv.firstIndex(of: "=") {
                    info.settings.append((String(kv[..<eq]), String(kv[kv.index(after: eq)...])))
                }
            default: break
            }
        }
        return info
    }

    private static func readVarString(_ b: [UInt8], _ pos: inout Int) -> String? {
        var len: UInt64 = 0, shift: UInt64 = 0
        while pos < b.count {
            let c = b[pos]
            pos += 1
            len |= UInt64(c & 0x7F) << shift
            if c & 0x80 == 0 { break }
            shift += 7
            if shift > 63 { return nil }
        }
        guard len <= UInt64(b.count - pos) else { return nil }
        defer { pos += Int(len) }
        return String(decoding: b[pos..<pos + Int(len)], as: UTF8.self)
    }
}

/// What the agent needs to know about an executable to match rules.
public struct ExecutableFacts: Sendable, Hashable {
    public var goBuildInfo: GoBuildInfo?
    public var isStatic: Bool
    /// No .symtab section (built with `-ldflags=-s`, or run through `strip`).
    public var isStripped: Bool
    public var isGo: Bool { goBuildInfo != nil }

    public init(goBuildInfo: GoBuildInfo?, isStatic: Bool, isStripped: Bool = false) {
        self.goBuildInfo = goBuildInfo
        self.isStatic = isStatic
        self.isStripped = isStripped
    }

    /// Reads the facts of the executable at `path` (e.g. /proc/PID/exe).
    public static func read(path: String) throws(IntrospectionError) -> ExecutableFacts {
        let elf = try ELFFile(path: path)
        return ExecutableFacts(goBuildInfo: try GoBuildInfo.read(from: elf), isStatic: !elf.hasInterpreter,
                               isStripped: elf.section(named: ".symtab") == nil)
    }
}
