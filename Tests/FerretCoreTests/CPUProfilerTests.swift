import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The cpu_profiler plugin end to end, through `ferret profile` (an in-process
/// agent running the plugin) and through `ferret run`, read back with Go's own
/// `go tool pprof`.
final class CPUProfilerTests: XCTestCase {
    static let burner = TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/burner"
    var children: [Process] = []
    override func tearDown() {
        for c in children where c.isRunning { c.terminate(); c.waitUntilExit() }
        children = []
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Starts the burner (TestSupport.startBurner), stopped at tearDown.
    func startBurner(_ path: String, _ args: [String]) throws -> Process {
        let p = try TestSupport.startBurner(path, args)
        children.append(p)
        return p
    }

    /// `ferret profile PID ...`; returns stderr.
    @discardableResult
    static func profile(_ pid: Int32, _ args: [String]) throws -> String {
        let r = try TestSupport.run(TestSupport.ferret, ["profile", "\(pid)"] + args)
        guard r.status == 0 else { throw Failure(description: "ferret profile failed (\(r.status)): \(r.stderr)") }
        return r.stderr
    }

    /// `go tool pprof ARGS` with the Go 1.22 toolchain (it ships pprof prebuilt).
    static func pprof(_ args: [String]) throws -> (stdout: String, stderr: String) {
        let go = try GoToolchains.go(for: "go1.22.10")
        let home = NSTemporaryDirectory() + "ferret-pprof-home"
        try? FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let r = try TestSupport.run(go, ["tool", "pprof"] + args,
                                    env: ["HOME": home, "GOTOOLCHAIN": "local", "PPROF_TMPDIR": home, "PATH": "/usr/bin:/bin"])
        guard r.status == 0 else { throw Failure(description: "go tool pprof \(args) failed: \(r.stderr)") }
        return (r.stdout, r.stderr)
    }

    /// Flat shares (percent) by function from `pprof -top`.
    static func flatShares(_ top: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in top.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            // flat flat% sum% cum cum% name
            guard f.count >= 6, f[1].hasSuffix("%"), let share = Double(f[1].dropLast()) else { continue }
            out[f[5...].joined(separator: " ")] = share
        }
        return out
    }

    // MARK: - The 3:1 split on every toolchain, plain, static and stripped-static

    func testSplitSharesOnEveryToolchainAndFlavour() throws {
        try splitOnEveryBuild(isolation: "in_process")
    }

    /// The same 3:1 split with the profiler in a helper process (issue #18).
    func testSplitSharesInAHelperProcess() throws {
        try splitOnEveryBuild(isolation: "process")
    }

    func splitOnEveryBuild(isolation: String) throws {
        let builds = try GoToolchains.buildAll(source: Self.burner, flavours: [.plain, .staticBuild, .strippedStatic])
        XCTAssertGreaterThanOrEqual(builds.count, 24)
        let dir = TestSupport.tempDir("split")
        var lines: [String] = []
        for b in builds {
            let tag = "\(b.version) \(b.flavour.rawValue)"
            do {
                let p = try startBurner(b.path, ["-mode", "split"])
                lines.append(try Self.checkSplit(pid: p.processIdentifier, tag: tag, out: "\(dir)/\(b.version)-\(b.flavour.rawValue).pb.gz",
                                                 isolation: isolation))
                p.terminate()
                p.waitUntilExit()
            } catch {
                XCTFail("\(tag): \(error)")
            }
        }
        print("CPUProfilerTests split (\(isolation)):\n" + lines.joined(separator: "\n"))
    }

    /// Profiles a burner running `-mode split` with `ferret profile` and checks
    /// the program's own 3:1 split of its CPU time between hotA and hotB.
    static func checkSplit(pid: Int32, tag: String, out: String, isolation: String = "in_process") throws -> String {
        // 3 s at 1000 Hz gives ~3,000 samples; a loaded machine gives the
        // burner less CPU, so profile longer until there are 2,000.
        var total = 0
        for seconds in [3, 6, 12] where total < 2000 {
            try profile(pid, ["--duration", "\(seconds)s", "--frequency", "1000", "--output", out, "--isolation", isolation])
            let raw = try pprof(["-raw", out]).stdout
            total = raw.split(separator: "\n").drop { !$0.hasPrefix("Samples:") }.dropFirst(2)
                .prefix { !$0.hasPrefix("Locations") }
                .compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).first.flatMap { Int($0) } }
                .reduce(0, +)
        }
        let top = try pprof(["-top", "-nodecount=20", out])
        XCTAssertEqual(top.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "", "\(tag): pprof warned")
        XCTAssertGreaterThanOrEqual(total, 2000, "\(tag): at least 2,000 samples")
        let shares = flatShares(top.stdout)
        let a = shares["main.hotA"] ?? 0, bb = shares["main.hotB"] ?? 0
        // The program splits its own CPU time 3:1 between hotA and hotB; the
        // runtime's background work (sysmon, GC) is outside that split.
        XCTAssertGreaterThanOrEqual(a + bb, 88, "\(tag): hotA and hotB hold the profile\n\(top.stdout)")
        XCTAssertEqual(100 * a / max(a + bb, 1), 75, accuracy: 3, "\(tag): hotA's part of hotA + hotB\n\(top.stdout)")
        return "\(tag): \(total) samples, hotA \(a)%, hotB \(bb)%"
    }

    // MARK: - Inlined frames, native code, cgo

    func testInlinedFrameHasItsFileAndLine() throws {
        let path = try GoToolchains.build(source: Self.burner, version: "go1.22.10", flavour: .plain)
        let p = try startBurner(path, ["-mode", "inline"])
        let out = TestSupport.tempDir("inline") + "/p.pb.gz"
        try Self.profile(p.processIdentifier, ["--duration", "2s", "--frequency", "500", "--output", out])
        let source = try String(contentsOfFile: Self.burner + "/main.go", encoding: .utf8)
        let line = try XCTUnwrap(source.split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.contains("INLINED-HOT-LINE") }) + 1
        let traces = try Self.pprof(["-traces", "-lines", out]).stdout
        XCTAssertTrue(traces.contains("main.inlinedHot") && traces.contains("main.go:\(line)"),
                      "the inlined frame with main.go:\(line):\n\(traces.prefix(3000))")
        XCTAssertTrue(traces.contains("(inline)"), "marked inline")
        XCTAssertTrue(traces.contains("main.outerLoop"), "its caller follows")
        // Collapsed stacks from the same plugin.
        let folded = TestSupport.tempDir("inline") + "/p.folded"
        try Self.profile(p.processIdentifier, ["--duration", "1s", "--frequency", "500", "--output", folded, "--format", "collapsed"])
        let text = try String(contentsOfFile: folded, encoding: .utf8)
        XCTAssertTrue(text.split(separator: "\n").contains { $0.contains("main.outerLoop;main.inlinedHot ") },
                      "collapsed: inlined frame after its caller\n\(text.prefix(2000))")
    }

    func testNativeCodeAndCgoThroughELFSymbols() throws {
        // A C program with symbols.
        let dir = TestSupport.tempDir("native")
        let c = dir + "/chot.c"
        try """
        #include <stdint.h>
        #include <stdio.h>
        __attribute__((noinline)) uint64_t c_hot_function(uint64_t x) {
            for (int i = 0; i < 100000; i++) { x = x * 6364136223846793005ULL + i; __asm__ volatile("" : "+r"(x)); }
            return x;
        }
        int main(void) { uint64_t x = 1; puts("ready"); fflush(stdout); for (;;) x = c_hot_function(x); }
        """.write(toFile: c, atomically: true, encoding: .utf8)
        let cc = try TestSupport.run("/usr/bin/cc", ["-O1", "-g", "-fno-omit-frame-pointer", "-o", dir + "/chot", c])
        XCTAssertEqual(cc.status, 0, cc.stderr)
        let p = try startBurner(dir + "/chot", [])
        try Self.profile(p.processIdentifier, ["--duration", "2s", "--frequency", "500", "--output", dir + "/c.pb.gz"])
        let top = try Self.pprof(["-top", dir + "/c.pb.gz"])
        XCTAssertGreaterThan(Self.flatShares(top.stdout)["c_hot_function"] ?? 0, 80, top.stdout)

        // cgo: the C function called from Go, named by the binary's ELF symbols.
        let path = try GoToolchains.build(source: Self.burner, version: "go1.22.10", flavour: .plain)
        let g = try startBurner(path, ["-mode", "cgo"])
        try Self.profile(g.processIdentifier, ["--duration", "2s", "--frequency", "500", "--output", dir + "/cgo.pb.gz"])
        let t = try Self.pprof(["-top", dir + "/cgo.pb.gz"]).stdout
        XCTAssertGreaterThan(Self.flatShares(t)["cburn"] ?? 0, 50, t)
    }

    // MARK: - Frames the frame-pointer walk misses, recovered from the stack copy

    /// Two ways frame pointers lose Go frames, on both _func layouts (Go 1.19; 1.20+),
    /// plain and stripped: a leaf without a frame of its own (the walk skips its
    /// caller) and assembly using RBP for data (the walk stops at the leaf, as in
    /// crypto/sha256's block). With the stack copy every such sample has its whole
    /// stack, from runtime.goexit to the leaf; without it (`--stack-copy 0`) they do
    /// not, which shows the fixture does what it claims.
    func testGoUnwindTablesRecoverWhatFramePointersMiss() throws {
        // Between goexit and main.burn is the `go` statement's wrapper (main.main.func2
        // in 1.19, main.main.gowrap2 from 1.22).
        let cases: [(mode: String, leaf: String, expected: String)] = [
            ("leaf", "main.leafSpin", ";main.burn;main.leafCaller;main.leafSpin"),
            ("asm", "ferret.test/burner/spin.ClobberSpin", ";main.burn;main.asmCaller;ferret.test/burner/spin.ClobberSpin"),
        ]
        let builds: [(String, GoToolchains.Flavour)] = [("go1.19.8", .strippedStatic), ("go1.22.10", .plain), ("go1.27.3", .strippedStatic)]
        let dir = TestSupport.tempDir("unwind")
        var lines: [String] = []
        for (version, flavour) in builds {
            let path = try GoToolchains.build(source: Self.burner, version: version, flavour: flavour)
            for c in cases {
                let tag = "\(version) \(flavour.rawValue) \(c.mode)"
                let p = try startBurner(path, ["-mode", c.mode])
                var figures: [String] = []
                for copy in [4096, 0] {
                    let out = "\(dir)/\(version)-\(flavour.rawValue)-\(c.mode)-\(copy).folded"
                    try Self.profile(p.processIdentifier, ["--duration", "2s", "--frequency", "500", "--stack-copy", "\(copy)",
                                                      "--format", "collapsed", "--output", out])
                    var inLeaf = 0, whole = 0
                    for line in try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n") {
                        guard let space = line.lastIndex(of: " "), let n = Int(line[line.index(after: space)...]) else { continue }
                        let stack = line[..<space]
                        guard stack.hasSuffix(";" + c.leaf) || stack == c.leaf else { continue }
                        inLeaf += n
                        if stack.hasPrefix("runtime.goexit;main.main.") && stack.hasSuffix(c.expected)
                            && stack.split(separator: ";").count == 5 { whole += n }
                    }
                    let share = Double(whole) / Double(max(inLeaf, 1))
                    figures.append("copy \(copy): \(whole)/\(inLeaf) whole")
                    XCTAssertGreaterThan(inLeaf, 300, "\(tag) copy \(copy): samples in \(c.leaf)")
                    if copy > 0 {
                        XCTAssertGreaterThanOrEqual(share, 0.97, "\(tag): whole stacks with the stack copy (\(whole) of \(inLeaf))")
                    } else {
                        XCTAssertLessThan(share, 0.1, "\(tag): frame pointers alone miss frames (\(whole) of \(inLeaf) whole)")
                    }
                }
                p.terminate()
                p.waitUntilExit()
                lines.append("\(tag): " + figures.joined(separator: ", "))
            }
        }
        print("CPUProfilerTests unwind:\n" + lines.joined(separator: "\n"))
    }

    /// Kernel frames (optional): a read(/dev/zero) loop spends its time in the
    /// kernel, named from /proc/kallsyms (read to its end: it is megabytes).
    func testKernelFramesAreNamed() throws {
        let dir = TestSupport.tempDir("kernel")
        try """
        #include <fcntl.h>
        #include <stdio.h>
        #include <unistd.h>
        int main(void) { char b[4096]; int fd = open("/dev/zero", O_RDONLY); puts("ready"); fflush(stdout); for (;;) read(fd, b, sizeof b); }
        """.write(toFile: dir + "/readloop.c", atomically: true, encoding: .utf8)
        let cc = try TestSupport.run("/usr/bin/cc", ["-O1", "-o", dir + "/readloop", dir + "/readloop.c"])
        XCTAssertEqual(cc.status, 0, cc.stderr)
        let p = try startBurner(dir + "/readloop", [])
        try Self.profile(p.processIdentifier, ["--duration", "2s", "--frequency", "199", "--kernel-frames", "--output", dir + "/k.pb.gz"])
        let top = try Self.pprof(["-top", "-nodecount=30", dir + "/k.pb.gz"]).stdout
        XCTAssertTrue(top.contains("vfs_read") || top.contains("ksys_read"), "kernel read path named:\n\(top)")
        XCTAssertFalse(top.contains("__pfx_"), "no padding symbols (a truncated kallsyms):\n\(top)")
    }

    // MARK: - Against Go's own profiler

    func testAgreesWithGoPprofOnTheSameTenSeconds() throws {
        let path = try GoToolchains.build(source: Self.burner, version: "go1.22.10", flavour: .plain)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = ["-mode", "split", "-workers", "2", "-pprof", "127.0.0.1:0"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        children.append(p)
        var text = ""
        while !text.contains("ready") {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            text += String(decoding: d, as: UTF8.self)
        }
        guard let addr = text.split(separator: "\n").first(where: { $0.hasPrefix("pprof on ") })?.dropFirst("pprof on ".count) else {
            throw Failure(description: "no pprof address: \(text)")
        }
        let dir = TestSupport.tempDir("vsgo")
        let hostPort = addr.split(separator: ":")
        let goProfile = dir + "/go.pb.gz"
        let fetch = Thread {
            if let r = try? TruthClient.get(host: String(hostPort[0]), port: UInt16(hostPort[1]) ?? 0,
                                            path: "/debug/pprof/profile?seconds=10", timeout: 30) {
                _ = FileManager.default.createFile(atPath: goProfile, contents: r.body)
            }
        }
        fetch.start()
        try Self.profile(p.processIdentifier, ["--duration", "10s", "--frequency", "99", "--output", dir + "/ours.pb.gz"])
        Wait.until("Go's own profile", timeout: 15, poll: 0.1) { FileManager.default.fileExists(atPath: goProfile) }
        let ours = Self.flatShares(try Self.pprof(["-top", "-nodecount=5", dir + "/ours.pb.gz"]).stdout)
        let theirs = Self.flatShares(try Self.pprof(["-top", "-nodecount=5", goProfile]).stdout)
        let topOurs = ours.sorted { $0.value > $1.value }.prefix(5).map(\.key)
        let topTheirs = theirs.sorted { $0.value > $1.value }.prefix(5).map(\.key)
        XCTAssertEqual(topOurs.prefix(2).sorted(), topTheirs.prefix(2).sorted(), "ours \(ours) vs Go's \(theirs)")
        for f in Set(topOurs).intersection(topTheirs) {
            XCTAssertEqual(ours[f] ?? 0, theirs[f] ?? 0, accuracy: 5, "\(f): ours \(ours) vs Go's \(theirs)")
        }
        print("CPUProfilerTests vs Go: ours \(ours) Go \(theirs)")
    }

    // MARK: - Through the agent: windows, hotspots, exit mid-window, no leaks

    func testAgentWindowsHotspotsExitAndNoLeaks() throws {
        let dir = TestSupport.tempDir("cpuagent")
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "cpu_profiler")
        let path = try GoToolchains.build(source: Self.burner, version: "go1.22.10", flavour: .staticBuild)
        let config = """
        agent: { interval: 1s, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: burn
            match: { comm: "burner*" }
            collectors: { cpu_profiler: { frequency: 199, window: 2s } }
          - name: short
            match: { comm: "sleep" , cmdline: "^/bin/sleep 0\\\\.3" }
            collectors: { cpu_profiler: { frequency: 99, window: 2s } }
        pipeline:
          sinks:
            - { type: pprof_dir, path: \(dir)/profiles }
            - { type: jsonl, path: \(dir)/out.jsonl }
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        let b = try startBurner(path, ["-mode", "split"])
        let pid = b.processIdentifier
        func pidOf(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }
        let prof = try agent.waitFor("a profile window") { $0.signal == "profile" && pidOf($0) == pid }
        let file = try XCTUnwrap(prof["path"] as? String, "pprof_dir stood ahead: the path is on the signal \(prof)")
        XCTAssertTrue(file.hasPrefix(dir + "/profiles/"), file)
        XCTAssertTrue(FileManager.default.fileExists(atPath: file))
        let hot = try agent.waitFor("a hotspot event") { $0.name == "cpu.hotspots" && pidOf($0) == pid }
        XCTAssertTrue((hot["body"] as? String)?.contains("main.hotA") == true, "\(hot)")

        // Exit mid-window: a partial profile, then a clean detach.
        usleep(700_000)  // into the next window: a measurement window, not a wait
        let before = agent.lines().filter { $0.signal == "profile" && pidOf($0) == pid }.count
        b.terminate()
        b.waitUntilExit()
        _ = try agent.waitFor("the partial window of the exited burner") { l in
            l.signal == "profile" && pidOf(l) == pid
                && agent.lines().filter { $0.signal == "profile" && pidOf($0) == pid }.count > before
        }

        // 100 short processes attached and detached: no fds or rings left behind.
        let agentPid = agent.process.processIdentifier
        func fds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agentPid)/fd").count) ?? -1 }
        func perfMaps() -> Int {
            (ProcRead.text("/proc/\(agentPid)/maps") ?? "")
                .split(separator: "\n").filter { $0.contains("perf_event") || $0.contains("anon_inode:[perf_event]") }.count
        }
        @discardableResult
        func shortBatch() throws -> Set<Int32> {
            var batch: [Process] = []
            for _ in 0..<10 {
                let s = Process()
                s.executableURL = URL(fileURLWithPath: "/bin/sleep")
                s.arguments = ["0.3"]
                try s.run()
                batch.append(s)
            }
            for s in batch { s.waitUntilExit() }
            return Set(batch.map(\.processIdentifier))
        }
        // One batch first: the symbols of /bin/sleep and its libraries are parsed
        // once and cached (per binary, not per process), and that is not a leak.
        let first = try shortBatch()
        // Every process of it the agent attached is detached (its exit reported).
        Wait.until("the first batch detached", timeout: 10, poll: 0.1) {
            let l = agent.lines()
            let attached = Set(l.filter { $0.name == "process.attach" }.map(pidOf)).intersection(first)
            return attached.isSubset(of: Set(l.filter { $0.name == "process.exit" }.map(pidOf)))
        }
        let fd0 = fds(), maps0 = perfMaps()
        for _ in 0..<10 {
            try shortBatch()
        }
        let attaches = agent.lines().filter { $0.name == "process.attach" && ($0["body"] as? String)?.contains("(sleep)") == true }.count
        XCTAssertGreaterThanOrEqual(attaches, 50, "most of the short processes were attached")
        Wait.until("the agent's fds and rings back to the baseline", timeout: 10, poll: 0.2) { fds() <= fd0 && perfMaps() <= maps0 }
        XCTAssertLessThanOrEqual(fds(), fd0, "no leaked fds")
        XCTAssertLessThanOrEqual(perfMaps(), maps0, "no leaked ring buffers")
        XCTAssertEqual(agent.stop(), 0)
    }
}
