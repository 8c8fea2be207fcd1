import Foundation
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

/// Issue #8's safety net for stripped binaries: a byte flipped in the code the
/// locator decodes never becomes a figure, and the validator refuses wrong
/// addresses on a live process.
final class StrippedGlobalsTests: XCTestCase {
    static let fixture = TruthServer.fixtureSource
    static let names = RuntimeGlobalsLocator.names + RuntimeGlobalsLocator.optionalNames

    /// Every bit of every byte of every source instruction, and of 48 random
    /// other bytes of each source function, flipped one at a time, on the oldest
    /// and the newest toolchain:
    /// - the locator (all sources must agree) never reports an address other
    ///   than the true one;
    /// - each wrong address a single flipped source gives on its own is handed
    ///   to the validator on the running program, which must refuse it through a
    ///   check of that global.
    func testByteFlipsInTheDecodedFunctionsNeverReachAFigure() throws {
        let all = try GoToolchains.required()
        var summary: [String] = []
        for version in Set([all.first!.version, all.last!.version]).sorted() {
            summary.append(try flipBytes(version: version))
        }
        print("StrippedGlobalsTests byte flips:\n" + summary.joined(separator: "\n"))
    }

    private func flipBytes(version: String) throws -> String {
        let path = try GoToolchains.build(source: Self.fixture, version: version, flavour: .strippedStatic)
        let srv = try TruthServer(binary: path, arguments: ["-quiet", "-park", "20"])
        defer { srv.stop() }
        _ = try srv.truth("/gc") // one GC cycle done: the GC counters are not all zero
        let binary = try GoBinary(path: path)
        XCTAssertTrue(binary.isStripped)
        let strategy = CodeReferenceStrategy()
        let (row, original) = try strategy.answers(in: binary).get()
        let truth = strategy.findings(Self.names, in: binary, row: row, answers: original)
        var truthAt: [String: UInt64] = [:]
        for f in truth { if let a = f.address { truthAt[f.global] = a } }
        XCTAssertEqual(truthAt.count, RuntimeGlobalsLocator.names.count + 1, "\(version): every global and one extra-M count")
        let located = truth.map { RuntimeGlobal(name: $0.global, address: $0.address, size: $0.size, source: "code") }
        let bias = try ProcessMaps.loadBias(pid: srv.pid, elf: binary.elf)
        let baseline = RuntimeGlobalsValidator.validate(pid: srv.pid, binary: binary, globals: located, bias: bias)
        XCTAssertTrue(baseline.passed, "\(version): \(baseline.failure ?? "")")

        let pcln = try binary.pclnTable()
        var rng = SplitMix64(seed: 0x8_f1_1b)
        var flips = 0, wrongSingles = 0
        var wrong: [String: Set<UInt64>] = [:]
        for function in Set(original.map(\.source.function)).sorted() {
            guard let f = pcln.function(named: function) else { XCTFail("\(version): \(function) not in pclntab"); continue }
            let code = try binary.elf.read(vaddr: f.entry, count: Int(f.size))
            let rip = try X86Decoder.decode(code, address: f.entry, details: true).filter { $0.ripTarget != nil }
            let sources = (strategy.table.rows[row] ?? []).filter { $0.function == function }
            let others = original.filter { $0.source.function != function }
            var positions = Set<Int>()
            for s in sources {
                let insn = rip[s.operandIndex]
                for b in 0..<insn.size { positions.insert(Int(insn.address - f.entry) + b) }
            }
            for _ in 0..<48 { positions.insert(rng.below(code.count)) }
            let only = CodeReferenceStrategy(table: GlobalReferenceTable(generator: "test", rows: [row: sources]))
            for pos in positions.sorted() {
                for bit in 0..<8 {
                    var m = code
                    m[pos] ^= 1 << bit
                    let mutated = m
                    var flipped = only
                    flipped.codeReader = { address, _ in address == f.entry ? mutated : nil }
                    guard case .success(let r) = flipped.answers(in: binary) else { XCTFail("\(version): no answers"); continue }
                    flips += 1
                    for a in r.answers {
                        if let b = a.base, b != truthAt[a.source.global] {
                            wrongSingles += 1
                            wrong[a.source.global, default: []].insert(b)
                        }
                    }
                    for found in strategy.findings(Self.names, in: binary, row: row, answers: others + r.answers) {
                        if let a = found.address, a != truthAt[found.global] {
                            XCTFail("\(version): \(function)+\(pos) bit \(bit): \(found.global) at 0x\(String(a, radix: 16)), "
                                    + "not 0x\(String(truthAt[found.global] ?? 0, radix: 16)) (\(found.sources))")
                        }
                    }
                }
            }
        }
        XCTAssertGreaterThan(wrongSingles, 500, "\(version): the flips do move single sources")

        // The validator refuses every wrong address a single source gave. (A build
        // without cgo has no extra Ms: the readers do not read their count.)
        var refused = 0
        for (global, addresses) in wrong.sorted(by: { $0.key < $1.key }) where !global.hasPrefix("runtime.extraM") {
            for a in addresses.sorted() {
                let globals = located.map { g in g.name == global ? RuntimeGlobal(name: g.name, address: a, size: g.size, source: "code") : g }
                let v = RuntimeGlobalsValidator.validate(pid: srv.pid, binary: binary, globals: globals, bias: bias, attempts: 1)
                if v.checks(for: global).contains(where: { !$0.passed }) {
                    refused += 1
                } else {
                    XCTFail("\(version): \(global) at 0x\(String(a, radix: 16)) passed validation: "
                            + v.checks(for: global).map(\.description).joined(separator: "; "))
                }
            }
        }
        XCTAssertTrue(srv.process.isRunning, "\(version): the program was only read")
        return "\(version): \(flips) flips, \(wrongSingles) gave a single source a wrong address, "
            + "\(wrong.values.map(\.count).reduce(0, +)) distinct wrong addresses over \(wrong.count) globals, "
            + "all refused by the validator (\(refused)); the locator accepted none"
    }

    /// The globals are located once per file (build id and device, inode, size,
    /// mtime): two processes of one stripped build read by both readers, each
    /// through a fresh parse of /proc/PID/exe, cost no further locate; a copy of
    /// the file (same build id, another inode) is located apart, once, as issue
    /// #16 asks of every per-binary cache.
    func testGlobalsAreLocatedOncePerBinary() throws {
        let path = try GoToolchains.build(source: Self.fixture, version: try GoToolchains.required().last!.version, flavour: .strippedStatic)
        let copy = NSTemporaryDirectory() + "/ferret-located-once-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let a1 = try TruthServer(binary: path, arguments: ["-quiet"])
        defer { a1.stop() }
        let a2 = try TruthServer(binary: path, arguments: ["-quiet"])
        defer { a2.stop() }
        let b = try TruthServer(binary: copy, arguments: ["-quiet"])
        defer { b.stop() }
        let first = RuntimeGlobalsLocator.located(in: try GoBinary(path: path))  // located here, or by an earlier test
        XCTAssertTrue(first.contains { $0.source == "code" })
        let before = RuntimeGlobalsLocator.locatedCount
        for srv in [a1, a2] {
            let binary = try GoBinary(path: "/proc/\(srv.pid)/exe")  // a fresh parse each time
            _ = try SchedulerReader(pid: srv.pid, binary: binary)
            _ = try HeapReader(pid: srv.pid, binary: binary)
        }
        XCTAssertEqual(RuntimeGlobalsLocator.locatedCount, before,
                       "one locate for one file, whatever the process, parse or reader")
        for _ in 0..<2 {
            let binary = try GoBinary(path: "/proc/\(b.pid)/exe")
            _ = try SchedulerReader(pid: b.pid, binary: binary)
            _ = try HeapReader(pid: b.pid, binary: binary)
        }
        XCTAssertEqual(RuntimeGlobalsLocator.locatedCount, before + 1,
                       "a copy of the build (another inode) is located apart, and once")
    }

    /// The validator passes the true addresses (symbol table) of plain, static
    /// and stripped builds of every toolchain, and refuses each global moved by
    /// a word or a page either way.
    func testValidatorRefusesMovedGlobals() throws {
        let builds = try GoToolchains.buildAll(source: Self.fixture, flavours: [.plain, .strippedStatic])
        var lines: [String] = []
        for b in builds {
            let tag = "\(b.version) \(b.flavour.rawValue)"
            let srv = try TruthServer(binary: b.path, arguments: ["-quiet", "-park", "20"])
            defer { srv.stop() }
            _ = try srv.truth("/gc")
            let binary = try GoBinary(path: b.path)
            let located = RuntimeGlobalsLocator.located(in: binary)
            XCTAssertEqual(located.first { $0.name == "runtime.sched" }?.source, b.flavour == .plain ? "symtab" : "code", tag)
            let bias = try ProcessMaps.loadBias(pid: srv.pid, elf: binary.elf)
            let ok = RuntimeGlobalsValidator.validate(pid: srv.pid, binary: binary, globals: located, bias: bias)
            XCTAssertTrue(ok.passed, "\(tag): \(ok.failure ?? "")")
            var moved = 0
            // Without cgo there are no extra Ms: the readers do not read their count.
            let noCgo = b.flavour != .plain
            for g in located where g.address != nil && !(noCgo && g.name.hasPrefix("runtime.extraM")) {
                for delta in [-4096, -16, -8, 8, 16, 4096] {
                    let globals = located.map { x in
                        x.name == g.name ? RuntimeGlobal(name: x.name, address: UInt64(Int64(x.address!) + Int64(delta)), size: x.size, source: x.source) : x
                    }
                    let v = RuntimeGlobalsValidator.validate(pid: srv.pid, binary: binary, globals: globals, bias: bias, attempts: 1)
                    if v.checks(for: g.name).contains(where: { !$0.passed }) {
                        moved += 1
                    } else {
                        XCTFail("\(tag): \(g.name) moved by \(delta) passed: " + v.checks(for: g.name).map(\.description).joined(separator: "; "))
                    }
                }
            }
            lines.append("\(tag): \(ok.checks.count) checks pass at the true addresses; \(moved) moved globals refused")
        }
        print("StrippedGlobalsTests validator:\n" + lines.joined(separator: "\n"))
    }
}
