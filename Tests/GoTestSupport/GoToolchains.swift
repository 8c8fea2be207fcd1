import Foundation

/// The Go toolchains installed by `scripts/install-go-toolchains.sh` (listed in
/// /opt/ferret-go/toolchains.txt as "<version> <path-to-go>"), and cached
/// offline builds of Go test programs with each of them.
///
/// Shared by the GoIntrospection tests. Builds are cached under
/// NSTemporaryDirectory()/ferret-go-builds/<key>/, where the key hashes the
/// program's source (every file under its folder), the toolchain and the
/// flavour, so a rerun with unchanged sources reuses the binaries; `go build`'s
/// own cache makes a rebuild cheap too. At most two `go build`s run at a time
/// in the process, whoever asks.
public enum GoToolchains {
    public enum Flavour: String, CaseIterable, Sendable {
        /// `go build` with default settings (cgo as the toolchain decides; DWARF kept).
        case plain
        /// CGO_ENABLED=0: statically linked, DWARF kept.
        case staticBuild = "static"
        /// CGO_ENABLED=0 -ldflags="-s -w": statically linked, no symbols, no DWARF.
        case strippedStatic = "stripped"
        /// -buildmode=pie -ldflags="-s -w" (cgo as the toolchain decides): loaded at
        /// a random address, no symbols, no DWARF.
        case strippedPIE = "stripped-pie"

        /// The three builds every toolchain is tested in.
        public static let standard: [Flavour] = [.plain, .staticBuild, .strippedStatic]
        public var isStripped: Bool { self == .strippedStatic || self == .strippedPIE }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public static let listPath = "/opt/ferret-go/toolchains.txt"
    public static let missingMessage =
        "\(listPath) is missing: run scripts/setup.sh --go-toolchains (or scripts/install-go-toolchains.sh)"

    /// Every toolchain in the list, oldest first; versions as Go spells them
    /// ("go1.22.10", the form in build info and `runtime.Version()`). Empty when
    /// the list is missing: tests should call `required()` to fail clearly.
    public static var all: [(version: String, go: String)] { (try? required()) ?? [] }

    /// Like `all`, but throws a clear error when the list is missing, empty, or
    /// names a `go` that does not exist.
    public static func required() throws -> [(version: String, go: String)] {
        guard let text = try? String(contentsOfFile: listPath, encoding: .utf8) else {
            throw Failure(description: missingMessage)
        }
        var out: [(version: String, go: String)] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, !line.hasPrefix("#") else { continue }
            let v = f[0].hasPrefix("go") ? String(f[0]) : "go" + f[0]
            let go = String(f[1])
            guard FileManager.default.isExecutableFile(atPath: go) else {
                throw Failure(description: "\(listPath): \(go) (\(v)) is not executable; \(missingMessage)")
            }
            out.append((v, go))
        }
        guard !out.isEmpty else { throw Failure(description: "\(listPath) lists no toolchain; \(missingMessage)") }
        return out
    }

    /// The `go` for a version ("go1.22.10" or "1.22.10").
    public static func go(for version: String) throws -> String {
        let v = version.hasPrefix("go") ? version : "go" + version
        guard let t = try required().first(where: { $0.version == v }) else {
            throw Failure(description: "no Go toolchain \(v) in \(listPath)")
        }
        return t.go
    }

    /// Builds the Go program in `dir` (a folder with a go.mod, or loose .go files)
    /// with toolchain `version` and returns the path of the binary. Offline:
    /// GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod, standard library only.
    /// `ldflags` are appended to the flavour's (e.g. ["-compressdwarf=false"]).
    public static func build(source dir: String, version: String, flavour: Flavour, ldflags: [String] = []) throws -> String {
        let go = try go(for: version)
        let src = URL(fileURLWithPath: dir).standardizedFileURL.path
        let files = try sourceFiles(src)
        guard files.contains(where: { $0.hasSuffix(".go") }) else {
            throw Failure(description: "\(src): no .go files")
        }
        var h = Hash128()
        h.add(src); h.add(version); h.add(go); h.add(flavour.rawValue)
        for f in ldflags { h.add(f) }
        for f in files {
            h.add(f)
            guard let data = FileManager.default.contents(atPath: src + "/" + f) else {
                throw Failure(description: "\(src)/\(f): unreadable")
            }
            h.add(data)
        }
        let outDir = cacheRoot + "/" + h.hex
        let out = outDir + "/" + (URL(fileURLWithPath: src).lastPathComponent) + "-" + version + "-" + flavour.rawValue
        if FileManager.default.isExecutableFile(atPath: out) { return out }
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)

        slots.wait()
        defer { slots.signal() }
        if FileManager.default.isExecutableFile(atPath: out) { return out }  // built meanwhile
        let tmp = out + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var args = ["build", "-buildvcs=false", "-o", tmp] + (flavour == .strippedPIE ? ["-buildmode=pie"] : [])
        let allLDFlags = (flavour.isStripped ? ["-s", "-w"] : []) + ldflags
        if !allLDFlags.isEmpty { args.append("-ldflags=" + allLDFlags.joined(separator: " ")) }
        if FileManager.default.fileExists(atPath: src + "/go.mod") {
            args.append(".")
        } else {
            args += files.filter { $0.hasSuffix(".go") && !$0.contains("/") && !$0.hasSuffix("_test.go") }
        }
        var env = ProcessInfo.processInfo.environment
        env["GOTOOLCHAIN"] = "local"
        env["GOPROXY"] = "off"
        env["GOFLAGS"] = "-mod=mod"
        env["GOWORK"] = "off"
        if flavour == .staticBuild || flavour == .strippedStatic { env["CGO_ENABLED"] = "0" }
        if env["HOME"] == nil && env["GOCACHE"] == nil { env["GOCACHE"] = cacheRoot + "/gocache" }
        if env["HOME"] == nil && env["GOPATH"] == nil { env["GOPATH"] = cacheRoot + "/gopath" }
        let (status, output) = try run(go, args, cwd: src, env: env)
        guard status == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw Failure(description: "\(version) go build (\(flavour.rawValue)) of \(src) failed (\(status)):\n\(output)")
        }
        guard rename(tmp, out) == 0 else {
            throw Failure(description: "rename \(tmp) → \(out): \(String(cString: strerror(errno)))")
        }
        return out
    }

    /// Builds `dir` with every toolchain in each flavour, two at a time; results
    /// in toolchain order, then flavour order.
    public static func buildAll(source dir: String, flavours: [Flavour] = [.plain])
        throws -> [(version: String, flavour: Flavour, path: String)]
    {
        let jobs = try required().flatMap { t in flavours.map { (t.version, $0) } }
        let results = Results(count: jobs.count)
        DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
            results.set(i, Result { try build(source: dir, version: jobs[i].0, flavour: jobs[i].1) })
        }
        return try jobs.indices.map { i in (jobs[i].0, jobs[i].1, try results.get(i).get()) }
    }

    // MARK: - Internals

    public static let cacheRoot = NSTemporaryDirectory().hasSuffix("/")
        ? NSTemporaryDirectory() + "ferret-go-builds" : NSTemporaryDirectory() + "/ferret-go-builds"

    /// At most two `go build`s at a time in this process.
    private static let slots = DispatchSemaphore(value: 2)

    private final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [Result<String, any Error>?]
        init(count: Int) { items = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ r: Result<String, any Error>) { lock.withLock { items[i] = r } }
        func get(_ i: Int) -> Result<String, any Error> {
            lock.withLock { items[i] ?? .failure(Failure(description: "job \(i) did not run")) }
        }
    }

    /// Relative paths of the regular files under `dir`, sorted; hidden entries skipped.
    private static func sourceFiles(_ dir: String) throws -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else {
            throw Failure(description: "\(dir): not a folder")
        }
        var out: [String] = []
        while let p = e.nextObject() as? String {
            if p.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir + "/" + p, isDirectory: &isDir), !isDir.boolValue {
                out.append(p)
            }
        }
        return out.sorted()
    }

    /// Runs a program to completion; returns its status and combined output.
    public static func run(_ exe: String, _ args: [String], cwd: String? = nil, env: [String: String]? = nil)
        throws -> (Int32, String)
    {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        if let env { p.environment = env }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Two independent FNV-1a 64-bit hashes: a cache key, not a security measure.
    private struct Hash128 {
        var a: UInt64 = 0xcbf2_9ce4_8422_2325
        var b: UInt64 = 0x6c62_272e_07bb_0142
        mutating func add(_ s: String) { add(Data(s.utf8)); add(Data([0])) }
        mutating func add(_ d: Data) {
            for byte in d {
                a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
                b = (b ^ UInt64(byte ^ 0x5a)) &* 0x0000_0100_0000_01b3
            }
            // Length separates ("ab","c") from ("a","bc").
            var n = UInt64(d.count)
            for _ in 0..<8 {
                a = (a ^ (n & 0xff)) &* 0x0000_0100_0000_01b3
                n >>= 8
            }
        }
        var hex: String {
            String(a, radix: 16).leftPad(16) + String(b, radix: 16).leftPad(16)
        }
    }
}

private extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
