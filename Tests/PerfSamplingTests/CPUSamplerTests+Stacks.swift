import CLinuxSupport
import Foundation
@testable import PerfSampling
import XCTest

extension CPUSamplerTests {
    /// Time in system calls is sampled even without kernel frames (samples ≈
    /// utime + stime); with includeKernel the samples carry kernel frames too.
    func testKernelTimeAndKernelFrames() throws {
        let exe = try Fixtures.cc("syscalls", Self.syscallsSource)
        let main = try Fixtures.symbol("main", in: exe)
        for includeKernel in [false, true] {
            let c = Collector()
            let sampler = c.sampler(includeKernel: includeKernel)
            defer { sampler.shutdown() }
            let pid = try Fixtures.spawn(exe, ["4"])
            defer { Fixtures.kill(pid) }
            try Fixtures.waitForExec(pid, exe)
            let bias = try Fixtures.loadBias(pid, exe, pie: true)
            let cpu0 = Fixtures.cpuSeconds(pid) ?? 0
            try sampler.start(pid: pid)
            Thread.sleep(forTimeInterval: 1.5)  // a measurement window, not a wait
            let cpu1 = Fixtures.cpuSeconds(pid) ?? 0
            sampler.stop(pid: pid)
            let samples = c.samples(pid: pid)
            assertRate(samples.count, cpu: cpu1 - cpu0, hz: 99, "syscall loop, includeKernel \(includeKernel)")
            // The user stack of a sample in read(2) leads back to main. (Not through
            // reader(): libc's read() wrapper keeps no frame pointer, so the walk
            // goes from its IP straight to reader's caller.)
            let viaMain = samples.filter { $0.userStack.count >= 2 && $0.userStack.contains { main.contains($0 &- bias) } }
            XCTAssertGreaterThanOrEqual(Double(viaMain.count), 0.8 * Double(samples.count), "user stacks through main()")
            let withKernel = samples.filter { !$0.kernelStack.isEmpty }
            if includeKernel {
                XCTAssertGreaterThanOrEqual(Double(withKernel.count), 0.5 * Double(samples.count), "samples in the kernel")
                for s in withKernel {
                    XCTAssert(s.kernelStack.allSatisfy { $0 >= 0xffff_8000_0000_0000 }, "kernel addresses \(s.kernelStack)")
                    XCTAssert(s.userStack.allSatisfy { $0 < 0x0000_8000_0000_0000 }, "user addresses \(s.userStack)")
                }
            } else {
                XCTAssertEqual(withKernel.count, 0)
            }
        }
    }

    /// A Go program: the kernel's frame-pointer walk gets through Go stacks
    /// (Go >= 1.12 keeps frame pointers): burn ← main.main ← runtime.main.
    func testGoCallchainsWalkFramePointers() throws {
        let go = "/usr/lib/go-1.19/bin/go"
        guard FileManager.default.isExecutableFile(atPath: go) else { throw XCTSkip("no \(go)") }
        let dir = Fixtures.dir + "/goburn"
        try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
        try Self.goSource.write(toFile: dir + "/main.go", atomically: true, encoding: .utf8)
        try "module burn\n\ngo 1.19\n".write(toFile: dir + "/go.mod", atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = dir + "/home"
        env["GOCACHE"] = dir + "/home/cache"
        env["GOPATH"] = dir + "/home/gopath"
        env["GOTOOLCHAIN"] = "local"
        env["GOFLAGS"] = "-mod=mod"
        env["GOPROXY"] = "off"
        let exe = dir + "/burn"
        let (status, out) = try Fixtures.run(go, ["build", "-o", exe, "."], cwd: dir, env: env)
        XCTAssertEqual(status, 0, out)
        guard status == 0 else { return }
        let burn = try Fixtures.symbol("main.burn", in: exe)
        let main = try Fixtures.symbol("main.main", in: exe)
        let runtimeMain = try Fixtures.symbol("runtime.main", in: exe)

        let c = Collector()
        let sampler = c.sampler()
        defer { sampler.shutdown() }
        let pid = try Fixtures.spawn(exe, ["4s"])
        defer { Fixtures.kill(pid) }
        try Fixtures.waitForExec(pid, exe)
        let cpu0 = Fixtures.cpuSeconds(pid) ?? 0
        try sampler.start(pid: pid)
        Thread.sleep(forTimeInterval: 2.0)  // a measurement window, not a wait
        let cpu1 = Fixtures.cpuSeconds(pid) ?? 0
        let stats = try XCTUnwrap(sampler.stats(pid: pid))
        sampler.stop(pid: pid)
        let samples = c.samples(pid: pid)
        assertRate(samples.count, cpu: cpu1 - cpu0, hz: 99, "Go busy loop")
        XCTAssertEqual(stats.lost, 0)
        // Not PIE: symbol values are addresses.
        let inBurn = samples.filter { $0.userStack.first.map(burn.contains) ?? false }
        XCTAssertGreaterThanOrEqual(Double(inBurn.count), 0.9 * Double(samples.count), "leaf in main.burn")
        let deep = inBurn.filter { s in
            s.userStack.count >= 3 && s.userStack.contains(where: main.contains) && s.userStack.contains(where: runtimeMain.contains)
        }
        XCTAssertGreaterThanOrEqual(Double(deep.count), 0.9 * Double(inBurn.count),
                                    "main.burn … main.main … runtime.main; e.g. \(inBurn.first.map { $0.userStack.map { String($0, radix: 16) } } ?? [])")
        print("Go: \(samples.count) samples, stack of one: \(inBurn.first?.userStack.map { String($0, radix: 16) } ?? [])")
    }

    static let goSource = """
    package main

    import (
    \t"os"
    \t"time"
    )

    var sink int

    //go:noinline
    func burn(n int) int {
    \tx := 0
    \tfor i := 0; i < n; i++ {
    \t\tx += i ^ (x >> 3)
    \t}
    \treturn x
    }

    //go:noinline
    func work(rounds int) int {
    \ts := 0
    \tfor r := 0; r < rounds; r++ {
    \t\ts += burn(1 << 16)
    \t}
    \treturn s
    }

    func main() {
    \td := 3 * time.Second
    \tif len(os.Args) > 1 {
    \t\tif v, err := time.ParseDuration(os.Args[1]); err == nil {
    \t\t\td = v
    \t\t}
    \t}
    \tend := time.Now().Add(d)
    \tfor time.Now().Before(end) {
    \t\tsink += work(100)
    \t}
    \tif sink == 42 {
    \t\tos.Exit(3)
    \t}
    }
    """
}
