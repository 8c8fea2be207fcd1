import Foundation
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

/// DWARF layouts read through libdw from binaries built by every installed Go
/// toolchain, checked against the committed table, against the programs' own
/// view of their types (reflect), and against hostile files.
final class DWARFLayoutTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let fixture = repoRoot + "/Tests/GoIntrospectionTests/Fixtures/layoutprog"

    /// Plain and stripped builds of the fixture with every toolchain (cached).
    static func builds() throws -> [(version: String, plain: String, stripped: String)] {
        let all = try GoToolchains.buildAll(source: fixture, flavours: [.plain, .strippedStatic])
        return try GoToolchains.required().map { t in
            guard let p = all.first(where: { $0.version == t.version && $0.flavour == .plain }),
                  let s = all.first(where: { $0.version == t.version && $0.flavour == .strippedStatic })
            else { throw GoToolchains.Failure(description: "missing build for \(t.version)") }
            return (t.version, p.path, s.path)
        }
    }

    /// Every toolchain: the fixture's own DWARF gives exactly the table's row for
    /// runtime.schedt and net/http.Request; the stripped build has no DWARF and
    /// falls back to the table for the version its build info names.
    func testDWARFEqualsTableForEveryToolchain() throws {
        let table = GoLayoutTable.builtIn
        let builds = try Self.builds()
        XCTAssertEqual(builds.count, GoToolchains.all.count)
        for b in builds {
            let d = try DWARFLayouts(path: b.plain)
            XCTAssertTrue(d.hasDWARF, "\(b.version): plain build has DWARF")
            for type in ["runtime.schedt", "net/http.Request", "net/url.URL", "runtime.g", "runtime.p"] {
                guard let fromDWARF = d.layout(of: type) else {
                    XCTFail("\(b.version): no DWARF layout of \(type)")
                    continue
                }
                XCTAssertGreaterThan(fromDWARF.members.count, 3, "\(b.version) \(type)")
                guard case .exact(let row) = table.lookup(type, goVersion: b.version) else {
                    XCTFail("\(b.version): table has no exact row for \(type): \(table.lookup(type, goVersion: b.version))")
                    continue
                }
                XCTAssertEqual(fromDWARF, row, "\(b.version) \(type): DWARF differs from the committed table")
                let r = GoLayoutTable.resolve(binaryDWARF: d, goVersion: b.version, type: type)
                XCTAssertEqual(r?.source, "dwarf")
            }

            // Every other row the fixture also links (it has no HTTP server, so no
            // net/http.response or conn) must match too.
            let row = try XCTUnwrap(table.rows[b.version])
            var matched = 0
            for (type, layout) in row {
                guard let l = d.layout(of: type) else { continue }
                XCTAssertEqual(l, layout, "\(b.version) \(type): DWARF differs from the committed table")
                matched += 1
            }
            XCTAssertGreaterThanOrEqual(matched, 20, "\(b.version): rows checked against the fixture")

            let s = try DWARFLayouts(path: b.stripped)
            XCTAssertFalse(s.hasDWARF, "\(b.version): stripped build has no DWARF")
            XCTAssertNil(s.layout(of: "runtime.schedt"))
            XCTAssertNil(s.offset(of: "gFree.n", in: "runtime.schedt"))
            let elf = try ELFFile(path: b.stripped)
            let info = try XCTUnwrap(try GoBuildInfo.read(from: elf), "\(b.version): build info")
            XCTAssertEqual(info.goVersion, b.version)
            for type in ["runtime.schedt", "net/http.Request"] {
                let r = try XCTUnwrap(
                    GoLayoutTable.resolve(binaryDWARF: s, goVersion: info.goVersion, type: type),
                    "\(b.version) \(type): table fallback")
                XCTAssertEqual(r.source, "table")
                XCTAssertEqual(r.0, d.layout(of: type), "\(b.version) \(type): fallback equals the DWARF layout")
            }
        }
    }

    /// The DWARF reader agrees with the compiler: the fixture prints, through
    /// reflect, name/offset/size of every field of a few structs.
    func testDWARFAgreesWithReflect() throws {
        struct Reflected: Decodable {
            struct M: Decodable { var name: String; var offset: Int; var size: Int }
            var name: String
            var size: Int
            var members: [M]
        }
        for b in try Self.builds() {
            let (status, out) = try GoToolchains.run(b.plain, ["reflect"])
            XCTAssertEqual(status, 0, "\(b.version): \(out)")
            let d = try DWARFLayouts(path: b.plain)
            var checked = 0
            for line in out.split(separator: "\n") {
                let r = try JSONDecoder().decode(Reflected.self, from: Data(line.utf8))
                let l = try XCTUnwrap(d.layout(of: r.name), "\(b.version): \(r.name)")
                XCTAssertEqual(l.size, r.size, "\(b.version) \(r.name) size")
                let top = l.members.filter { !$0.name.contains(".") }
                XCTAssertEqual(top.map(\.name), r.members.map(\.name), "\(b.version) \(r.name) fields")
                XCTAssertEqual(top.map(\.offset), r.members.map(\.offset), "\(b.version) \(r.name) offsets")
                XCTAssertEqual(top.map(\.size), r.members.map(\.size), "\(b.version) \(r.name) sizes")
                for m in r.members {
                    XCTAssertEqual(d.offset(of: m.name, in: r.name), m.offset, "\(b.version) \(r.name).\(m.name)")
                }
                checked += 1
            }
            XCTAssertEqual(checked, 4, "\(b.version): reflect output")
        }
    }

    /// Offsets seen in Go 1.19's DWARF for runtime.schedt (RESEARCH notes).
    func testGo119SchedtOffsets() throws {
        let v = try XCTUnwrap(GoToolchains.all.first { $0.version.hasPrefix("go1.19.") }?.version, "a go1.19 toolchain")
        let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let d = try DWARFLayouts(path: bin)
        let l = try XCTUnwrap(d.layout(of: "runtime.schedt"))
        let expected: [(String, Int)] = [
            ("lock", 24), ("midle", 32), ("nmidle", 40), ("nmidlelocked", 44), ("mnext", 48), ("maxmcount", 56),
            ("nmsys", 60), ("nmfreed", 64), ("ngsys", 72), ("pidle", 80), ("npidle", 88), ("nmspinning", 92),
            ("runq", 96), ("runqsize", 112), ("gFree", 152), ("gFree.n", 176),
        ]
        for (name, off) in expected {
            XCTAssertEqual(l.member(name)?.offset, off, name)
            XCTAssertEqual(d.offset(of: name, in: "runtime.schedt"), off, name)
        }
        XCTAssertEqual(l.member("gFree.n")?.size, 4)
        XCTAssertEqual(l.member("gFree.n")?.type, "int32")
        XCTAssertEqual(l.member("midle")?.type, "runtime.muintptr")
        XCTAssertEqual(l.member("gFree")?.size, 32)
    }

    func testOffsetPathsAndTypedefs() throws {
        let v = try XCTUnwrap(GoToolchains.all.last?.version)
        let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let d = try DWARFLayouts(path: bin)
        let schedt = try XCTUnwrap(d.layout(of: "runtime.schedt"))
        let gQueue = try XCTUnwrap(d.layout(of: "runtime.gQueue"))
        let runq = try XCTUnwrap(schedt.member("runq"))
        XCTAssertEqual(runq.type, "runtime.gQueue")
        XCTAssertEqual(runq.size, gQueue.size)
        // Through a named member type.
        XCTAssertEqual(d.offset(of: "runq.tail", in: "runtime.schedt"), runq.offset + gQueue.member("tail")!.offset)
        // Through an anonymous one: same as the flattened member.
        let gFreeStack = try XCTUnwrap(schedt.member("gFree.stack"))
        XCTAssertEqual(gFreeStack.type, "runtime.gList")
        XCTAssertEqual(d.offset(of: "gFree.stack", in: "runtime.schedt"), gFreeStack.offset)
        XCTAssertEqual(d.offset(of: "gFree.stack.head", in: "runtime.schedt"), gFreeStack.offset)
        XCTAssertEqual(gFreeStack.offset, schedt.member("gFree")!.offset + 8, "after gFree.lock")
        for bad in ["", ".", "gFree.", ".gFree", "gFree..n", "nosuchmember", "gFree.nosuch", "lock.key.x.y"] {
            XCTAssertNil(d.offset(of: bad, in: "runtime.schedt"), bad)
        }
        XCTAssertNil(d.offset(of: "lock", in: "runtime.nosuchtype"))
        XCTAssertNil(d.layout(of: "runtime.nosuchtype"))
        XCTAssertNil(d.layout(of: ""))
        // A typedef to a map is not a struct; a pointer member is 8 bytes.
        XCTAssertNil(d.layout(of: "net/http.Header"))
        let req = try XCTUnwrap(d.layout(of: "net/http.Request"))
        XCTAssertEqual(req.member("URL")?.size, 8)
        XCTAssertEqual(req.member("URL")?.type, "*net/url.URL")
        XCTAssertEqual(req.member("Header")?.type, "net/http.Header")
        XCTAssertEqual(req.member("Header")?.size, 8)
        XCTAssertEqual(req.member("Method")?.size, 16)
        let g = try XCTUnwrap(d.layout(of: "runtime.g"))
        XCTAssertEqual(g.member("goid")?.size, 8)
        XCTAssertEqual(g.member("atomicstatus")?.size, 4)
        XCTAssertEqual(g.member("stack")?.offset, 0)
        XCTAssertEqual(g.member("stack")?.size, 16)
        // Members are in declaration order and inside the struct.
        let top = schedt.members.filter { !$0.name.contains(".") }
        XCTAssertEqual(top.map(\.offset), top.map(\.offset).sorted())
        for m in schedt.members { XCTAssertLessThanOrEqual(m.offset + m.size, schedt.size, m.name) }
        XCTAssertTrue(d.typeNames().contains("runtime.schedt"))
    }

    /// Many threads asking at once get the same answers (the index is built once).
    func testConcurrentLookups() throws {
        let v = try XCTUnwrap(GoToolchains.all.last?.version)
        let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let d = try DWARFLayouts(path: bin)
        let types = ["runtime.schedt", "runtime.g", "runtime.p", "runtime.m", "net/http.Request", "net/url.URL"]
        final class Box: @unchecked Sendable {
            let lock = NSLock()
            var seen: [String: Set<Int>] = [:]
        }
        let box = Box()
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            let t = types[i % types.count]
            let size = d.layout(of: t)?.size ?? -1
            let off = d.offset(of: "gFree.noStack", in: "runtime.schedt") ?? -1
            box.lock.withLock {
                box.seen[t, default: []].insert(size)
                box.seen["off", default: []].insert(off)
            }
        }
        for (k, v) in box.seen {
            XCTAssertEqual(v.count, 1, k)
            XCTAssertFalse(v.contains(-1), k)
        }
    }

    /// Opening a Go binary and indexing its DWARF is fast.
    /// A layout resolved before the handle is released stays; a type not yet
    /// resolved opens the file again and is found. (Speed is a benchmark:
    /// bench/Sources/IntrospectionBench, "dwarf:".)
    func testReleasedHandleKeepsLayoutsAndReopens() throws {
        let v = try XCTUnwrap(GoToolchains.all.last?.version)
        let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let d = try DWARFLayouts(path: bin)
        let schedt = try XCTUnwrap(d.layout(of: "runtime.schedt"))
        let lock = d.offset(of: "lock", in: "runtime.schedt")
        d.releaseHandle()
        XCTAssertEqual(d.layout(of: "runtime.schedt"), schedt)
        XCTAssertEqual(d.offset(of: "lock", in: "runtime.schedt"), lock)
        let fresh = try DWARFLayouts(path: bin)
        XCTAssertEqual(d.layout(of: "runtime.m"), fresh.layout(of: "runtime.m"), "reopened after release")
        XCTAssertNotNil(d.layout(of: "runtime.m"))
        XCTAssertEqual(d.typeNames(), fresh.typeNames())
    }

    // MARK: - Not Go, not ELF, damaged

    func testNonGoELF() throws {
        for path in ["/bin/sleep", "/bin/ls"] where FileManager.default.fileExists(atPath: path) {
            let d = try DWARFLayouts(path: path)
            XCTAssertNil(d.layout(of: "runtime.schedt"), path)
            XCTAssertNil(d.offset(of: "lock", in: "runtime.schedt"), path)
            XCTAssertNil(GoLayoutTable.resolve(binaryDWARF: d, goVersion: "devel", type: "runtime.schedt"))
        }
    }

    func testNotELFThrowsCleanly() throws {
        let dir = try tempDir()
        var rng = SplitMix64(seed: 42)
        let cases: [(String, [UInt8])] = [
            ("empty", []),
            ("garbage", (0..<65536).map { _ in UInt8(truncatingIfNeeded: rng.next()) }),
            ("elf-magic-only", [0x7F, 0x45, 0x4C, 0x46]),
            ("elf-header-garbage", [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + (0..<4000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }),
            ("text", Array("#!/bin/sh\necho hi\n".utf8)),
        ]
        for (name, bytes) in cases {
            let p = dir + "/" + name
            XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bytes)))
            do {
                let d = try DWARFLayouts(path: p)
                XCTAssertNil(d.layout(of: "runtime.schedt"), name)
            } catch {
                XCTAssertFalse(error.description.isEmpty, name)
            }
        }
        XCTAssertThrowsError(try DWARFLayouts(path: dir + "/does-not-exist"))
        XCTAssertThrowsError(try DWARFLayouts(path: dir), "a directory")
        let fifo = dir + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try DWARFLayouts(path: fifo), "a FIFO: refused, without blocking")
    }

    /// Truncated copies of a Go binary, at many lengths: a clean error, or no
    /// DWARF, or nil lookups; never a crash or a wrong answer.
    func testTruncatedGoBinary() throws {
        let v = try XCTUnwrap(GoToolchains.all.last?.version)
        let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: bin))
        let good = try DWARFLayouts(path: bin).layout(of: "runtime.schedt")
        let elf = try ELFFile(path: bin)
        let debugInfo = try XCTUnwrap(elf.section(named: ".debug_info") ?? elf.section(named: ".zdebug_info"))
        let dir = try tempDir()
        let p = dir + "/truncated"
        var lengths = [1, 16, 63, 64, 100, 4096, data.count / 4, data.count / 2, data.count - 1]
        lengths += [Int(debugInfo.offset) + 10, Int(debugInfo.offset + debugInfo.size / 2)]
        for n in lengths where n > 0 && n < data.count {
            XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: data.prefix(n)))
            do {
                let d = try DWARFLayouts(path: p)
                if let l = d.layout(of: "runtime.schedt") { XCTAssertEqual(l, good, "truncated at \(n)") }
                _ = d.offset(of: "gFree.n", in: "runtime.schedt")
            } catch {
                XCTAssertFalse(error.description.isEmpty)
            }
        }
    }

    /// Random damage to the DWARF sections of a Go binary, compressed (what Go
    /// writes) and uncompressed (-compressdwarf=false, so the bytes libdw parses
    /// are the bytes we damage): no crash, no hang, no negative offsets.
    /// FERRET_FUZZ_ROUNDS=n runs n rounds per binary instead of 60.
    func testDamagedDWARFDoesNotCrash() throws {
        let v = try XCTUnwrap(GoToolchains.all.last?.version)
        let rounds = Int(ProcessInfo.processInfo.environment["FERRET_FUZZ_ROUNDS"] ?? "") ?? 60
        let expected = GoLayoutTable.builtIn.offset(of: "gFree.stack", in: "runtime.schedt", goVersion: v)
        XCTAssertNotNil(expected)
        let dir = try tempDir()
        let p = dir + "/damaged"
        var rng = SplitMix64(seed: 7)
        for (label, ldflags) in [("compressed", [String]()), ("uncompressed", ["-compressdwarf=false"])] {
            let bin = try GoToolchains.build(source: Self.fixture, version: v, flavour: .plain, ldflags: ldflags)
            let original = try XCTUnwrap(FileManager.default.contents(atPath: bin))
            let elf = try ELFFile(path: bin)
            let targets = [".debug_info", ".debug_abbrev"].compactMap { elf.section(named: $0) }
            XCTAssertEqual(targets.count, 2, "\(label): .debug_info and .debug_abbrev")
            XCTAssertEqual(try DWARFLayouts(path: bin).offset(of: "gFree.stack", in: "runtime.schedt"), expected, label)
            var answered = 0
            let start = Date()
            for round in 0..<rounds {
                var bytes = [UInt8](original)
                let s = targets[round % targets.count]
                // A few bytes near the start (the runtime's types are in the first units) or anywhere.
                let span = max(1, round % 3 == 0 ? Int(s.size) : min(Int(s.size), 4096 << (round % 8)))
                for _ in 0..<(1 + Int(rng.next() % 8)) {
                    let at = Int(s.offset) + Int(rng.next() % UInt64(span))
                    bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                }
                XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bytes)))
                guard let d = try? DWARFLayouts(path: p) else { continue }
                for t in ["runtime.schedt", "runtime.g", "net/http.Request"] {
                    if let l = d.layout(of: t) {
                        answered += 1
                        XCTAssertGreaterThanOrEqual(l.size, 0)
                        for m in l.members { XCTAssertGreaterThanOrEqual(m.offset, 0) }
                    }
                }
                _ = d.offset(of: "gFree.stack", in: "runtime.schedt")
                _ = d.offset(of: "runq.head", in: "runtime.schedt")
            }
            let ms = Int(Date().timeIntervalSince(start) * 1000)
            print("damaged DWARF (\(label)): \(rounds) rounds, \(answered) layouts answered, \(ms) ms")
        }
    }

    // MARK: - Helpers

    func tempDir() throws -> String {
        let dir = NSTemporaryDirectory() + "/ferret-dwarf-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }
}
