import Foundation
import GoIntrospection
import GoTestSupport
@testable import HTTPTracing
import XCTest

final class RetFinderTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let server = fixtures + "/httpsrv"

    /// Functions the tracer probes now or will (server, client, goroutine parenting).
    static let functions = [
        "net/http.serverHandler.ServeHTTP", "net/http.(*Transport).roundTrip", "runtime.newproc1", "main.main",
    ]

    func testDecodeSkipsBytesInsideImmediates() throws {
        // endbr64; mov eax, 0xc3; ret; ret 8; int3; int3
        let code: [UInt8] = [0xF3, 0x0F, 0x1E, 0xFA, 0xB8, 0xC3, 0x00, 0x00, 0x00, 0xC3, 0xC2, 0x08, 0x00, 0xCC, 0xCC]
        let insns = try RetFinder.decode(code, address: 0x1000)
        XCTAssertEqual(insns.filter(\.isReturn).map(\.address), [0x1009, 0x100A])
        XCTAssertTrue(insns[0].isEndbr64)
        XCTAssertEqual(insns[0].size, 4)
        XCTAssertEqual(insns.reduce(0) { $0 + $1.size }, code.count)
    }

    func testUndecodableBodyIsAnError() {
        // 0x06 (push es) is invalid in 64-bit mode: the RET list would be incomplete.
        XCTAssertThrowsError(try RetFinder.decode([0x55, 0x06, 0xC3], address: 0x2000)) { e in
            XCTAssertTrue("\(e)".contains("0x2001"), "\(e)")
        }
    }

    /// Every RET capstone finds equals what binutils' objdump lists, for the
    /// traced functions of the fixture built with every toolchain, in default,
    /// static and stripped-static builds.
    func testRetsMatchObjdumpForEveryToolchain() throws {
        let builds = try GoToolchains.buildAll(source: Self.server, flavours: GoToolchains.Flavour.standard)
        XCTAssertGreaterThanOrEqual(builds.count, 3)
        var checked = 0
        for b in builds {
            let bin = try GoBinary(path: b.path)
            let table = try bin.pclnTable()
            for name in Self.functions {
                let f = try XCTUnwrap(table.function(named: name), "\(b.version) \(b.flavour): \(name)")
                let probes = try RetFinder.probes(for: f, elf: bin.elf)
                let oracle = try Self.objdumpReturns(b.path, from: f.entry, to: f.end)
                XCTAssertEqual(probes.returnAddresses, oracle, "\(b.version) \(b.flavour) \(name)")
                XCTAssertFalse(probes.startsWithEndbr, "Go code has no ENDBR64")
                // File offsets map back to the same bytes: a RET opcode.
                for off in probes.returnFileOffsets {
                    let byte = try bin.elf.read(offset: off, count: 1)[0]
                    XCTAssertTrue(byte == 0xC3 || byte == 0xC2, "\(name) RET at file offset \(off) is 0x\(String(byte, radix: 16))")
                }
                XCTAssertEqual(probes.entryFileOffset, RetFinder.fileOffset(of: f.entry, in: bin.elf))
                checked += 1
            }
        }
        print("RetFinderTests: \(checked) functions in \(builds.count) builds agree with objdump")
    }

    /// RET addresses objdump (binutils) prints in [from, to).
    static func objdumpReturns(_ path: String, from: UInt64, to: UInt64) throws -> [UInt64] {
        let (st, out) = try GoToolchains.run("/usr/bin/objdump", [
            "-d", "--no-show-raw-insn", "--start-address=0x" + String(from, radix: 16),
            "--stop-address=0x" + String(to, radix: 16), path,
        ])
        guard st == 0 else { throw RetFinder.Failure("objdump failed: \(out)") }
        var rets: [UInt64] = []
        for line in out.split(separator: "\n") {
            // "  6289f0:\tret" (also "ret    $0x8", "rep ret", "retq")
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, parts[0].hasSuffix(":"),
                  let a = UInt64(parts[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            let mnemonic = parts[1].split(separator: " ").filter { $0 != "rep" && $0 != "bnd" && $0 != "notrack" }.first ?? ""
            if mnemonic == "ret" || mnemonic == "retq" { rets.append(a) }
        }
        return rets
    }
}
