import Foundation
@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection
import GoTestSupport
import XCTest

/// A seeded mutation loop over the ELF, build-info and pclntab parsers: real
/// Go binaries, truncated and corrupted where the parsers look, plus garbage.
/// Nothing may crash; failures must be one-line errors. The iteration count
/// is printed and recorded in bench/RESULTS.md.
final class HostileInputTests: XCTestCase {
    static var iterations: Int {
        Int(ProcessInfo.processInfo.environment["FERRET_FUZZ_ITERATIONS"] ?? "") ?? 1500
    }

    /// Parses `path` every way the agent would, returning how far it got.
    @discardableResult
    static func exercise(_ path: String, rng: inout SplitMix64) -> Int {
        var depth = 0
        if let facts = try? ExecutableFacts.read(path: path) { depth += 1; _ = facts.isGo }
        guard let b = try? GoBinary(path: path) else { return depth }
        depth += 1
        _ = b.buildID
        _ = b.isStripped
        _ = b.runtimeGlobals()
        guard let t = try? b.pclnTable() else { return depth }
        depth += 1
        _ = t.function(named: "main.main")
        _ = t.functions(named: "runtime.asmcgocall")
        for _ in 0..<40 {
            let pc = t.textStart &+ UInt64(rng.below(4 << 20))
            _ = t.function(containing: pc)
            _ = t.frames(at: pc)
            _ = t.position(at: pc)
        }
        _ = b.dwarf?.layout(of: "runtime.schedt")
        return depth + 1
    }

    func testMutatedBinariesNeverCrash() throws {
        let builds = try GoToolchains.buildAll(source: GoBinaryTests.fixture, flavours: [.plain, .strippedStatic])
        let seeds = [builds.first!, builds.first { $0.flavour == .strippedStatic }!, builds.last!].map(\.path)
        let dir = NSTemporaryDirectory() + "ferret-fuzz-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 0xF3BB_E7)
        var reachedPcln = 0
        let n = Self.iterations
        for i in 0..<n {
            let original = try Array(Data(contentsOf: URL(fileURLWithPath: seeds[i % seeds.count])))
            let elf = try ELFFile(path: seeds[i % seeds.count])
            // The regions parsers read: ELF header, program headers, section
            // headers, .go.buildinfo, .gopclntab (header, function table, body).
            var regions: [Range<Int>] = [0..<64, 64..<(64 + 56 * elf.segments.count)]
            if let shoff = Self.sectionHeaderOffset(original) { regions.append(shoff..<original.count) }
            for name in [".go.buildinfo", ".gopclntab", ".note.go.buildid", ".symtab", ".strtab"] {
                if let s = elf.section(named: name) {
                    let start = Int(s.offset)
                    regions.append(start..<min(original.count, start + Int(min(s.size, 4096))))
                    regions.append(start..<min(original.count, start + Int(s.size)))
                }
            }
            var bytes = original
            switch i % 4 {
            case 0: // truncate
                bytes = Array(bytes.prefix(rng.below(bytes.count)))
            case 1, 2: // corrupt a few bytes in one region
                let r = regions[rng.below(regions.count)]
                for _ in 0..<(1 + rng.below(8)) where !r.isEmpty {
                    bytes[r.lowerBound + rng.below(r.count)] = UInt8(truncatingIfNeeded: rng.next())
                }
            default: // corrupt words with boundary values
                let r = regions[rng.below(regions.count)]
                let specials: [UInt64] = [0, 1, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, UInt64.max, 0xFFFF_FFF1, UInt64(bytes.count)]
                for _ in 0..<(1 + rng.below(4)) where r.count >= 8 {
                    let o = r.lowerBound + rng.below(r.count - 7)
                    let v = specials[rng.below(specials.count)]
                    for k in 0..<(rng.below(2) == 0 ? 4 : 8) { bytes[o + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
                }
            }
            let path = dir + "/m\(i % 8)"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            if Self.exercise(path, rng: &rng) >= 4 { reachedPcln += 1 }
        }
        // Garbage of every size, and non-ELF headers.
        for i in 0..<200 {
            var g = (0..<(rng.below(1 << 14))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0 && g.count > 16 { g.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46]) }
            let path = dir + "/g"
            try Data(g).write(to: URL(fileURLWithPath: path))
            Self.exercise(path, rng: &rng)
            if let e = (Result { try GoBinary(path: path) }).failureDescription {
                XCTAssertFalse(e.contains("\n"), "one-line reason: \(e)")
            }
        }
        print("hostile input: \(n) mutated binaries (\(reachedPcln) still parsed to a function table) and 200 garbage files, no crash")
        XCTAssertGreaterThan(reachedPcln, n / 10, "mutations should mostly leave a parseable table, to exercise the lookups")
    }

    static func sectionHeaderOffset(_ b: [UInt8]) -> Int? {
        guard b.count >= 64 else { return nil }
        var v = 0
        for k in 0..<8 { v |= Int(b[0x28 + k]) << (8 * k) }
        return v > 0 && v < b.count ? v : nil
    }
}

extension Result {
    var failureDescription: String? {
        if case .failure(let e) = self { return "\(e)" }
        return nil
    }
}
