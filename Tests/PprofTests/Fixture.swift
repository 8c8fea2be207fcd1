import Foundation
import GoTestSupport
import Pprof

/// A small CPU profile with known content, and a runner for the real `go tool pprof`.
enum Fixture {
    static let hz = 100
    static let period: Int64 = 10_000_000
    static let time: Int64 = 1_700_000_000_000_000_000
    static let duration: Int64 = 10_000_000_000

    static let exe = PprofMappingInfo(
        start: 0x40_0000, limit: 0x80_0000, offset: 0, file: "/usr/local/bin/app",
        buildID: "0123456789abcdef", hasFunctions: true)
    static let vdso = PprofMappingInfo(
        start: 0x7fff_f7fc_1000, limit: 0x7fff_f7fc_3000, offset: 0, file: "[vdso]",
        buildID: "", hasFunctions: false)

    static let a = PprofFrame(function: "main.A", file: "/src/app/a.go", line: 12, startLine: 10)
    static let b = PprofFrame(function: "main.B", file: "/src/app/b.go", line: 21, startLine: 20)
    static let helper = PprofFrame(function: "main.helper", file: "/src/app/b.go", line: 31, startLine: 30)
    static let mainAtA = PprofFrame(function: "main.main", file: "/src/app/main.go", line: 5, startLine: 3)
    static let mainAtB = PprofFrame(function: "main.main", file: "/src/app/main.go", line: 6, startLine: 3)
    static let runtimeMain = PprofFrame(
        function: "runtime.main", file: "/usr/lib/go/src/runtime/proc.go", line: 267, startLine: 144)

    /// The address of a frame the symbolizer could not resolve (inside the executable).
    static let unknownAddress: UInt64 = 0x40_5abc

    /// 300 samples in main.A (called from main.main through an unsymbolized
    /// frame), 100 in main.B (inlined into main.helper, called from main.main).
    static func builder() -> PprofBuilder {
        let p = PprofBuilder.cpu(frequencyHz: hz, timeNanos: time, durationNanos: duration)
        let stackA: [PprofStackElement] = [
            (0x40_1010, exe, [a]),
            (unknownAddress, exe, []),
            (0x40_2020, exe, [mainAtA]),
            (0x40_3030, exe, [runtimeMain]),
        ]
        let stackB: [PprofStackElement] = [
            (0x40_1110, exe, [b, helper]),  // main.B inlined into main.helper
            (0x40_2024, exe, [mainAtB]),
            (0x40_3030, exe, [runtimeMain]),
        ]
        for _ in 0..<300 { p.addSample(stack: stackA, values: [1, period]) }
        for _ in 0..<100 { p.addSample(stack: stackB, values: [1, period]) }
        return p
    }

    // MARK: - go tool pprof

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// A temporary folder removed when the process exits.
    static let scratch: String = {
        let dir = NSTemporaryDirectory() + "/pprof-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "/pprof-tests-\(getpid())") }
        return dir
    }()

    /// Writes `bytes` to a file of its own and returns its path.
    static func write(_ bytes: [UInt8], name: String) throws -> String {
        let path = scratch + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// `go tool pprof ARGS` with toolchain `go` (offline, its own HOME and caches).
    static func pprof(_ go: String, _ args: [String]) throws -> Output {
        let home = scratch + "/home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let id = UUID().uuidString
        let outPath = scratch + "/out-\(id)", errPath = scratch + "/err-\(id)"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: go)
        p.arguments = ["tool", "pprof"] + args
        var env = ProcessInfo.processInfo.environment
        env["GOTOOLCHAIN"] = "local"
        env["GOPROXY"] = "off"
        env["HOME"] = home
        // Go >= 1.25 builds pprof on first use: keep its build cache across runs
        // (shared with GoToolchains' fixture builds).
        env["GOCACHE"] = GoToolchains.cacheRoot + "/gocache"
        env["GOPATH"] = home + "/gopath"
        env["PPROF_TMPDIR"] = home + "/pprof"
        env.removeValue(forKey: "PPROF_BINARY_PATH")
        env.removeValue(forKey: "GOFLAGS")
        p.environment = env
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: outPath)
        p.standardError = FileHandle(forWritingAtPath: errPath)
        try p.run()
        p.waitUntilExit()
        return Output(
            status: p.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    /// The toolchain whose pprof the detailed tests run: go1.24.11, the newest
    /// that ships pprof prebuilt (fast on a fresh machine); else the newest listed.
    /// `testEveryToolchainsPprofReadsTheProfile` covers the others.
    static func go() throws -> String {
        let all = try GoToolchains.required()
        return (all.first { $0.version == "go1.24.11" } ?? all.last!).go
    }
}
