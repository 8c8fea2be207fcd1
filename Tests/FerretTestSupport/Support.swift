import FerretCore
import Foundation
import GoTestSupport
import XCTest

/// Helpers shared by the tests: build products, fixture plugins, temp dirs,
/// child processes and jsonl reading.
public enum TestSupport {
    /// The folder holding `ferret` and the plugin libraries (.build/<triple>/debug).
    public static let productsDir: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // swift-corelibs-xctest runs <products>/ferretPackageTests.xctest
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("ferret").path) && dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir.path
    }()

    public static let repoRoot: String = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { dir = dir.deletingLastPathComponent() }
        return dir.path
    }()

    public static var ferret: String {
        let p = productsDir + "/ferret"
        precondition(FileManager.default.fileExists(atPath: p), "\(p) is missing: run `swift build` before `swift test` (scripts/test.sh does)")
        return p
    }

    public static let headerDir = repoRoot + "/Sources/FerretPluginABI/include"

    /// Compiles a fixture plugin (Tests/FerretCoreTests/Fixtures/plugins/NAME.c) once per run.
    public static func fixture(_ name: String) throws -> String {
        try compile(source: repoRoot + "/Tests/FerretCoreTests/Fixtures/plugins/\(name).c", output: buildDir + "/lib\(name).so")
    }

    /// Compiles the C example plugin with plain cc against the header alone.
    public static func examplePlugin() throws -> String {
        try compile(source: repoRoot + "/examples/c-plugin/fdcount.c", output: buildDir + "/libferret_fdcount.so")
    }

    public static let buildDir: String = {
        let d = NSTemporaryDirectory() + "ferret-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    private static let compileLock = NSLock()

    /// Compiles a fixture program (Tests/FerretCoreTests/Fixtures/programs/NAME.c) once per run.
    public static func program(_ name: String) throws -> String {
        try compile(source: repoRoot + "/Tests/FerretCoreTests/Fixtures/programs/\(name).c", output: buildDir + "/\(name)", shared: false)
    }

    /// Compiles a C source against ferret_plugin.h in `headers` (this tree's
    /// header unless told: the ABI tests use a saved 1.0 copy).
    public static func compile(source: String, output: String, shared: Bool = true, headers: String = headerDir) throws -> String {
        compileLock.lock()
        defer { compileLock.unlock() }
        if FileManager.default.fileExists(atPath: output) { return output }
        let r = try run("/usr/bin/cc", ["-std=c99", "-Wall", "-Wextra", "-Werror"] + (shared ? ["-shared", "-fPIC"] : []) + ["-pthread",
                                        "-I", headers, "-o", output, source])
        guard r.status == 0 else { throw TestError("cc \(source) failed:\n\(r.stderr)") }
        return output
    }

    public struct TestError: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    /// Runs a command to completion.
    public static func run(_ exe: String, _ args: [String], env: [String: String]? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let env { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// A fresh private directory (mode 0700).
    public static func tempDir(_ name: String = "case") -> String {
        let d = buildDir + "/\(name)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return d
    }

    /// Writes a plugins.d manifest for `library`.
    /// `extra` is appended as is (e.g. "isolation: in_process\n"); without it the
    /// plugin runs in a helper process, the default for libraries not shipped with Ferret.
    public static func manifest(in dir: String, name: String, library: String, extra: String = "") {
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try! "name: \(name)\nlibrary: \(library)\nkind: collector\n\(extra)".write(toFile: dir + "/\(name).yaml", atomically: true, encoding: .utf8)
    }

    /// Writes the manifest of a plugin shipped with Ferret (plugins.d/NAME.yaml:
    /// isolation in_process, the capabilities its helper keeps), naming the
    /// library built next to `ferret`. A rule's `isolation:` may override it.
    public static func shippedManifest(in dir: String, name: String) {
        let text = (try? String(contentsOfFile: repoRoot + "/plugins.d/\(name).yaml", encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            line.hasPrefix("library:") ? "library: \(productsDir)/libferret_\(name).so" : String(line)
        }
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try! lines.joined(separator: "\n").write(toFile: dir + "/\(name).yaml", atomically: true, encoding: .utf8)
    }

    /// The bundled Go demo service, built once per run by scripts/build-demo.sh.
    public static func demoBinary() throws -> String {
        compileLock.lock()
        defer { compileLock.unlock() }
        let r = try run("/bin/bash", [repoRoot + "/scripts/build-demo.sh", buildDir + "/demo"])
        guard r.status == 0 else { throw TestError("scripts/build-demo.sh failed:\n\(r.stderr)") }
        return buildDir + "/demo/ferret-demo"
    }

    /// The demo built stripped and static (`CGO_ENABLED=0 -ldflags='-s -w'`) with
    /// Debian's Go 1.19 (no `go build -C` there) into `dir`; returns its path.
    public static func strippedDemoBinary(in dir: String) throws -> String {
        let out = dir + "/ferret-demo-stripped"
        let r = try run("/bin/bash", ["-c", "cd '\(repoRoot)/examples/demo' && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -ldflags='-s -w' -o '\(out)' ."])
        guard r.status == 0 else { throw TestError("stripped demo build failed:\n\(r.stderr)") }
        return out
    }

    /// Starts the burner fixture (Fixtures/burner) with `args`, waits for its
    /// "ready" line and for it to be burning. The caller terminates it.
    public static func startBurner(_ path: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var text = ""
        // availableData blocks until output or EOF: no poll interval of its own.
        Wait.until("\(path)'s ready line", timeout: 10, poll: 0) {
            let d = out.fileHandleForReading.availableData
            text += String(decoding: d, as: UTF8.self)
            return d.isEmpty || text.contains("ready")
        }
        guard text.contains("ready") else {
            p.terminate()
            throw TestError("\(path) did not start: \(text)")
        }
        // Burning: 0.1 s of CPU time since the ready line.
        let pid = p.processIdentifier
        let cpu0 = cpuSeconds(pid) ?? 0
        Wait.until("\(path) burning", timeout: 10) { (cpuSeconds(pid) ?? 0) >= cpu0 + 0.1 }
        return p
    }

    /// utime + stime of process `pid`, seconds.
    public static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return nil }
        let f = s[s.index(after: close)...].split(separator: " ")
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        guard f.count > 13, let u = Double(f[11]), let st = Double(f[12]) else { return nil }
        return (u + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Starts a demo binary quietly on a free port, without its self-load, and
    /// returns once it is serving (holds its listening socket: its runtime is
    /// up). The caller terminates it.
    public static func startDemo(_ exe: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["-listen", "127.0.0.1:0", "-selfload=false"]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        guard Wait.until("\(exe) listening", timeout: 10, poll: 0.01, { isListening(p.processIdentifier) }) else {
            p.terminate()
            throw TestError("\(exe) did not start listening within 10 s")
        }
        return p
    }

    /// Whether process `pid` holds a TCP (IPv4) socket in the LISTEN state.
    public static func isListening(_ pid: Int32) -> Bool {
        let fdDir = "/proc/\(pid)/fd"
        let inodes = Set(((try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? []).compactMap { fd -> String? in
            guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: fdDir + "/" + fd),
                  link.hasPrefix("socket:[") else { return nil }
            return String(link.dropFirst("socket:[".count).dropLast())
        })
        guard !inodes.isEmpty, let tcp = ProcRead.text("/proc/\(pid)/net/tcp") else { return false }
        // sl local rem st ... inode: st 0A is LISTEN.
        return tcp.split(separator: "\n").dropFirst().contains { line in
            let f = line.split(separator: " ")
            return f.count > 9 && f[3] == "0A" && inodes.contains(String(f[9]))
        }
    }

    /// Starts `sleep` with a unique duration token so rules can match it by cmdline.
    public static func spawnSleeper() throws -> (Process, String) {
        let token = "\(Int.random(in: 100_000...999_999)).\(Int.random(in: 1000...9999))"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = [token]
        try p.run()
        return (p, token)
    }

    /// The syscaller fixture (Fixtures/programs/syscaller.c): makes a known
    /// number of system calls when told to. Terminated on deinit.
    public final class Syscaller {
        public let process = Process()
        private let input = Pipe(), output = Pipe()
        public var pid: Int32 { process.processIdentifier }

        /// `token` (ignored by the program) lets a rule match this one by cmdline;
        /// `wrapper` is a command that execs the program (e.g. setpriv).
        public init(token: String = "", wrapper: [String] = []) throws {
            let command = wrapper + [try TestSupport.program("syscaller")] + (token.isEmpty ? [] : [token])
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        deinit {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }

        /// Sends one command ("calls 1000", "thread 1000", "nested 1000", "park", "wake 1000")
        /// and returns its reply line once the fixture has done it.
        @discardableResult
        public func send(_ command: String) throws -> String {
            input.fileHandleForWriting.write(Data((command + "\n").utf8))
            var line = Data()
            while true {
                let b = try output.fileHandleForReading.read(upToCount: 1) ?? Data()
                if b.isEmpty { throw TestError("syscaller exited during '\(command)'") }
                if b.first == UInt8(ascii: "\n") { break }
                line.append(b)
            }
            let reply = String(decoding: line, as: UTF8.self)
            guard reply.hasPrefix("ok") else { throw TestError("syscaller: '\(command)' -> '\(reply)'") }
            return reply
        }
    }

    /// How many perf event fds process `pid` holds.
    public static func perfEventFDs(of pid: Int32) -> Int {
        let dir = "/proc/\(pid)/fd"
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + $0)) == "anon_inode:[perf_event]" }.count
    }

    /// A running `ferret run` child.
    public final class AgentProcess {
        public let process = Process()
        public let stderrPipe = Pipe()
        public let stdoutPipe = Pipe()
        public let dir: String
        public var jsonl: String { dir + "/out.jsonl" }
        public final class Buffer: @unchecked Sendable {
            public let lock = NSLock()
            public var data = Data()
            public func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
            public var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
            public init() {}
        }
        private let errBuf = Buffer()

        /// `wrapper`: a command that execs its arguments (the ferret command line), e.g. unshare.
        public init(config: String, dir: String, args: [String] = [], wrapper: [String] = [],
             environment: [String: String] = [:]) throws {
            self.dir = dir
            if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
            try config.write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
            let command = wrapper + [TestSupport.ferret, "run", "--config", dir + "/config.yaml"] + args
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
            process.standardError = stderrPipe
            process.standardOutput = stdoutPipe
            stderrPipe.fileHandleForReading.readabilityHandler = { [errBuf] h in errBuf.append(h.availableData) }
            stdoutPipe.fileHandleForReading.readabilityHandler = { h in _ = h.availableData }
            try process.run()
        }

        public var stderr: String { errBuf.text }

        public func signal(_ s: Int32) { kill(process.processIdentifier, s) }

        @discardableResult
        public func stop() -> Int32 {
            if process.isRunning { signal(SIGTERM) }
            process.waitUntilExit()
            stderrPipe.fileHandleForReading.readabilityHandler = nil
            stdoutPipe.fileHandleForReading.readabilityHandler = nil
            return process.terminationStatus
        }

        deinit { if process.isRunning { process.terminate() } }

        /// Parsed lines of the jsonl sink so far. Parsed incrementally: each call
        /// reads only what the sink appended since the last one.
        public func lines() -> [[String: Any]] {
            parseLock.lock()
            defer { parseLock.unlock() }
            guard let h = FileHandle(forReadingAtPath: jsonl) else { return parsed }
            defer { try? h.close() }
            guard (try? h.seek(toOffset: parsedBytes)) != nil, let data = try? h.readToEnd(),
                  let lastNewline = data.lastIndex(of: UInt8(ascii: "\n")) else { return parsed }
            parsedBytes += UInt64(data.distance(from: data.startIndex, to: lastNewline) + 1)
            for line in data[..<lastNewline].split(separator: UInt8(ascii: "\n")) {
                if let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] { parsed.append(obj) }
            }
            return parsed
        }
        private let parseLock = NSLock()
        private var parsed: [[String: Any]] = []
        private var parsedBytes: UInt64 = 0

        /// Waits up to `timeout` seconds for a line satisfying `predicate` (each line
        /// is tested once).
        public func waitFor(_ what: String, timeout: Double = 15, _ predicate: ([String: Any]) -> Bool) throws -> [String: Any] {
            var checked = 0
            var hit: [String: Any]?
            Wait.until(what, timeout: timeout, poll: 0.05) {
                let all = lines()
                hit = all[checked...].first(where: predicate)
                checked = all.count
                return hit != nil || !process.isRunning  // an agent gone writes nothing more
            }
            if let hit { return hit }
            throw TestError("timed out waiting for \(what); agent stderr:\n\(stderr)")
        }

        public func waitForStderr(_ text: String, timeout: Double = 15) throws {
            guard Wait.until("'\(text)' on stderr", timeout: timeout, poll: 0.05, { stderr.contains(text) }) else {
                throw TestError("timed out waiting for '\(text)' on stderr:\n\(stderr)")
            }
        }
    }
}

extension Dictionary where Key == String, Value == Any {
    public var resource: [String: Any] { self["resource"] as? [String: Any] ?? [:] }
    public var attributes: [String: Any] { self["attributes"] as? [String: Any] ?? [:] }
    public var name: String { self["name"] as? String ?? "" }
    public var signal: String { self["signal"] as? String ?? "" }
}

extension TestSupport {
    /// A TCP port on loopback that nothing listens on right now.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw TestError("bind: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
