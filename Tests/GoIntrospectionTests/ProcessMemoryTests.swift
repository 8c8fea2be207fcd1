import Foundation
import Glibc
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

/// Reads live child processes (a C fixture built here with /usr/bin/cc, and a Go program
/// built with /usr/bin/go) through ProcessMemory / ProcessMaps / ProcessTasks, and checks
/// every value against what the child printed and what `nm` says about its binary.
final class ProcessMemoryTests: XCTestCase {

    // MARK: - Reading memory

    func testReadBatchOfScatteredWordsMatchesPattern() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let base = try child.address("pattern")
        let memory = ProcessMemory(pid: child.pid)

        // 64 scattered word indices over the 32 KiB array (several pages), deterministic.
        var rng = SplitMix64(seed: 0xFE44E7)
        let indices = (0..<64).map { _ in Int(rng.next() % 4096) }
        let requests = indices.map { (address: base + UInt64($0) * 8, count: 8) }

        let before = ProcessMemory.syscallCount
        let chunks = try memory.readBatch(requests)
        XCTAssertEqual(ProcessMemory.syscallCount - before, 1, "64 requests must be one process_vm_readv")
        XCTAssertEqual(chunks.count, 64)
        for (i, chunk) in zip(indices, chunks) {
            XCTAssertEqual(chunk.count, 8)
            XCTAssertEqual(chunk.u64(at: 0), Self.pattern(i), "word \(i)")
        }

        let before2 = ProcessMemory.syscallCount
        let words = try memory.readWords(requests.map(\.address))
        XCTAssertEqual(ProcessMemory.syscallCount - before2, 1, "readWords of 64 addresses must be one process_vm_readv")
        XCTAssertEqual(words, indices.map(Self.pattern))

        // Single reads: a typed integer, an unaligned one, and the whole array at once.
        XCTAssertEqual(try memory.read(UInt64.self, at: base + 8 * 100), Self.pattern(100))
        let two = try memory.read(base, count: 16)
        let unaligned = try memory.read(UInt32.self, at: base + 5)
        XCTAssertEqual(unaligned, two.u32(at: 5))
        let all = try memory.read(base, count: 4096 * 8)
        for i in 0..<4096 where all.u64(at: i * 8) != Self.pattern(i) {
            XCTFail("word \(i) of the full read is \(String(all.u64(at: i * 8) ?? 0, radix: 16))")
            break
        }
        // Garbage lengths (as read from a target's len fields) are refused, not trapped on.
        XCTAssertThrowsError(try memory.read(base, count: -1)) { e in
            XCTAssertEqual(e as? ProcessReadError, .other(pid: child.pid, errno: EINVAL))
        }
        XCTAssertThrowsError(try memory.read(base, count: Int.max))
        XCTAssertThrowsError(try memory.readBatch([(base, 8), (base, -8)]))
        XCTAssertThrowsError(try memory.readBatch([(base, Int.max), (base, Int.max)]))
        XCTAssertEqual(try memory.read(base, count: 0), [])
        XCTAssertEqual(try memory.readBatch([]).count, 0)
        XCTAssertEqual(try memory.readWords([]), [])
    }

    func testUnmappedAddressFaultsNamingTheAddress() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let region = try child.address("region")
        let page = UInt64(try child.value("page"))
        let hole = region + page
        let memory = ProcessMemory(pid: child.pid)

        // The pages either side of the hole are readable and hold the child's bytes.
        let below = try memory.read(region, count: Int(page))
        XCTAssertEqual(below[0], 3)
        XCTAssertEqual(below[1], 10)
        let above = try memory.read(region + 2 * page, count: 4)
        XCTAssertEqual(above[0], UInt8(truncatingIfNeeded: Int(2 * page) * 7 + 3))

        XCTAssertThrowsError(try memory.read(hole, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole))
        }
        XCTAssertThrowsError(try memory.read(UInt64.self, at: hole + 16)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 16))
        }
        // A read that starts mapped and runs into the hole (the kernel copies the first part).
        XCTAssertThrowsError(try memory.read(hole - 100, count: 200)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole - 100))
        }
        XCTAssertThrowsError(try memory.read(0, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: 0))
        }

        // Batches name the first request that failed, not the first request or the last.
        let batch: [(address: UInt64, count: Int)] = [
            (region, 8), (region + 2 * page, 8), (region + 16, 0), (hole + 8, 8), (region + 8, 8), (hole + 64, 8),
        ]
        XCTAssertThrowsError(try memory.readBatch(batch)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 8))
        }
        // The first request failing: the kernel returns EFAULT rather than a short count.
        XCTAssertThrowsError(try memory.readBatch([(hole, 8), (region, 8)])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole))
        }
        // A request straddling into the hole after a good one.
        XCTAssertThrowsError(try memory.readBatch([(region, 8), (hole - 4, 8), (region, 8)])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole - 4))
        }
        XCTAssertThrowsError(try memory.readWords([region, region + 8, hole + 24, region + 16])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 24))
        }
        // In a second chunk of a large batch.
        var large = [UInt64](repeating: region, count: 1500)
        large[1300] = hole + 1300
        XCTAssertThrowsError(try memory.readWords(large)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 1300))
        }
    }

    func testReadAfterExitAndReapIsExited() throws {
        let child = try Child.start(Self.fixtures().pie)
        let pid = child.pid
        let base = try child.address("pattern")
        XCTAssertEqual(try ProcessMemory(pid: pid).read(UInt64.self, at: base), Self.pattern(0))
        child.stop() // SIGKILL + waitpid
        XCTAssertThrowsError(try ProcessMemory(pid: pid).read(base, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessMemory(pid: pid).readWords([base, base + 8])) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessMaps.read(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessTasks.threadIDs(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessTasks.threadCount(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
    }

    func testBatchLargerThanIOVMax() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let base = try child.address("pattern")
        let memory = ProcessMemory(pid: child.pid)

        // 3000 requests of 0...16 bytes at varying (unaligned) offsets: 3 syscalls.
        var rng = SplitMix64(seed: 42)
        let requests: [(address: UInt64, count: Int)] = (0..<3000).map { _ in
            (base + rng.next() % (4096 * 8 - 16), Int(rng.next() % 17))
        }
        let full = try memory.read(base, count: 4096 * 8)
        let before = ProcessMemory.syscallCount
        let chunks = try memory.readBatch(requests)
        XCTAssertEqual(ProcessMemory.syscallCount - before, 3)
        XCTAssertEqual(chunks.count, 3000)
        for (r, chunk) in zip(requests, chunks) {
            let o = Int(r.address - base)
            XCTAssertEqual(chunk, Array(full[o..<(o + r.count)]))
        }
        let packed = try memory.readBatchContiguous(requests)
        XCTAssertEqual(packed, chunks.flatMap { $0 })

        let addresses = (0..<2048).map { base + UInt64($0 % 4096) * 8 }
        let before2 = ProcessMemory.syscallCount
        let words = try memory.readWords(addresses)
        XCTAssertEqual(ProcessMemory.syscallCount - before2, 2)
        XCTAssertEqual(words, (0..<2048).map { Self.pattern($0 % 4096) })
    }

    // MARK: - Fixtures

    override class func tearDown() {
        for name in ["ferret-memtarget", "ferret-gotarget"] {
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "\(name)-\(getpid())")
        }
        super.tearDown()
    }

    /// Word `i` of the C fixture's pattern array.
    static func pattern(_ i: Int) -> UInt64 { UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15 }

    struct Fixtures: Sendable {
        var dir: String
        var pie: String
        var nonPIE: String
        var pieSymbols: [String: UInt64]
        var nonPIESymbols: [String: UInt64]
    }

    struct GoFixtures: Sendable {
        var pie: String
        var nonPIE: String
    }

    struct FixtureError: Error, CustomStringConvertible {
        var description: String
    }

    private static let builtFixtures: Result<Fixtures, FixtureError> = {
        let dir = NSTemporaryDirectory() + "ferret-memtarget-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/memtarget.c").path
        let pie = dir + "/memtarget-pie", nonPIE = dir + "/memtarget-nopie"
        for (out, flags) in [(pie, ["-fPIE", "-pie"]), (nonPIE, ["-fno-pie", "-no-pie"])] {
            let r = run("/usr/bin/cc", ["-O1", "-pthread"] + flags + ["-o", out, source])
            guard r.status == 0 else { return .failure(FixtureError(description: "cc failed: \(r.output)")) }
        }
        do {
            return .success(Fixtures(dir: dir, pie: pie, nonPIE: nonPIE, pieSymbols: try nm(pie),
                                     nonPIESymbols: try nm(nonPIE)))
        } catch {
            return .failure(error as? FixtureError ?? FixtureError(description: "\(error)"))
        }
    }()

    static func fixtures() throws -> Fixtures { try builtFixtures.get() }

    private static let builtGoFixtures: Result<GoFixtures, FixtureError> = {
        let dir = NSTemporaryDirectory() + "ferret-gotarget-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = dir + "/main.go"
        let program = """
            package main

            import (
            \t"fmt"
            \t"os"
            \t"time"
            )

            var marker = [4]uint64{0x6665727265742d67, 0x0123456789abcdef, 0xfedcba9876543210, 0x42}

            func main() {
            \tfmt.Printf("pid %d\\nmarker %p\\nready\\n", os.Getpid(), &marker)
            \ttime.Sleep(120 * time.Second)
            }

            """
        do {
            try program.write(toFile: source, atomically: true, encoding: .utf8)
        } catch {
            return .failure(FixtureError(description: "\(error)"))
        }
        let pie = dir + "/gotarget-pie", nonPIE = dir + "/gotarget"
        for (out, flags) in [(pie, ["-buildmode=pie"]), (nonPIE, [])] {
            let r = run("/usr/bin/go", ["build"] + flags + ["-o", out, source])
            guard r.status == 0 else { return .failure(FixtureError(description: "go build failed: \(r.output)")) }
        }
        return .success(GoFixtures(pie: pie, nonPIE: nonPIE))
    }()

    static func goFixtures() throws -> GoFixtures { try builtGoFixtures.get() }

    /// Defined symbols of `binary` per `nm`: name → value.
    static func nm(_ binary: String) throws -> [String: UInt64] {
        let r = run("/usr/bin/nm", [binary])
        guard r.status == 0 else { throw FixtureError(description: "nm \(binary) failed: \(r.output)") }
        var out: [String: UInt64] = [:]
        for line in r.output.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, let v = UInt64(f[0], radix: 16) { out[String(f[2])] = v }
        }
        return out
    }

    /// Runs a tool to completion; stdout and stderr together.
    static func run(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
        guard let p = try? Child.spawn(path, arguments) else { return (-1, "cannot spawn \(path)") }
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(p.fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output += buf[..<n]
        }
        close(p.fd)
        var status: Int32 = 0
        while waitpid(p.pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : -1, String(decoding: output, as: UTF8.self))
    }
}
