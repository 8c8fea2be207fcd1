import Foundation
@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection
import GoTestSupport
import XCTest

/// Runtime globals from code references (issue #8) against the symbol table,
/// on every toolchain: a program the table was not generated from (truthsrv
/// via TruthServer's fixture, and httpsrv-like layoutprog), plain and static
/// builds (code references == .symtab), and stripped-static builds. A
/// stripped build has no symbol table to compare with, and its data does not
/// sit exactly where the static build's does (measured: 32 bytes further on
/// 1.19–1.23), so there every global must be found, every source must agree,
/// and all globals must sit at one common shift from the static build's
/// symbols. The truth test against the running process comes with the
/// validation step.
final class CodeReferenceTests: XCTestCase {
    static let programs = [
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/layoutprog").path,
        TruthServer.fixtureSource,
    ]

    func testCodeReferencesEqualTheSymbolTableOnEveryToolchain() throws {
        let names = RuntimeGlobalsLocator.names + RuntimeGlobalsLocator.optionalNames
        var lines: [String] = []
        for program in Self.programs {
            for (version, _) in try GoToolchains.required() {
                let statik = try GoBinary(path: GoToolchains.build(source: program, version: version, flavour: .staticBuild))
                let plain = try GoBinary(path: GoToolchains.build(source: program, version: version, flavour: .plain))
                let stripped = try GoBinary(path: GoToolchains.build(source: program, version: version, flavour: .strippedStatic))
                XCTAssertTrue(stripped.isStripped)
                let label = "\(URL(fileURLWithPath: program).lastPathComponent) \(version)"
                var shifts = Set<Int64>()
                for (name, binary, truth) in [("plain", plain, plain), ("static", statik, statik), ("stripped", stripped, statik)] {
                    let want = SymbolTableStrategy().locate(names, in: truth)
                    let got = CodeReferenceStrategy().findings(names, in: binary)
                    XCTAssertEqual(got.count, names.count)
                    // One extra-M count per version: extraMCount (1.19), extraMLength (1.21+).
                    XCTAssertEqual(want.count, names.count - 1, "\(label) \(name)")
                    for f in got where want[f.global] != nil {
                        XCTAssertNil(f.problem, "\(label) \(name): \(f.global): \(f.problem ?? "")")
                        XCTAssertGreaterThanOrEqual(f.sources.count, CodeReferenceStrategy.minimumSources, "\(label) \(name): \(f.global)")
                        guard let a = f.address, let w = want[f.global]?.address else {
                            XCTFail("\(label) \(name): \(f.global) not found")
                            continue
                        }
                        if name == "stripped" {
                            shifts.insert(Int64(bitPattern: a &- w))
                        } else {
                            XCTAssertEqual(a, w, "\(label) \(name): \(f.global)")
                        }
                    }
                }
                XCTAssertEqual(shifts.count, 1, "\(label): stripped globals at one common shift from the static build's: \(shifts)")
                lines.append("\(label): \(names.count - 1) globals from code == .symtab (plain, static); stripped at shift \(shifts.sorted())")
            }
        }
        print("CodeReferenceTests:\n" + lines.joined(separator: "\n"))
    }

    func testAVersionWithoutATableFindsNothing() throws {
        let version = try GoToolchains.required().last!.version
        let bin = try GoBinary(path: GoToolchains.build(source: Self.programs[0], version: version, flavour: .strippedStatic))
        var table = GlobalReferenceTable.builtIn
        let minor = version.split(separator: ".").prefix(2).joined(separator: ".")
        table.rows = table.rows.filter { !$0.key.hasPrefix(minor + ".") && $0.key != minor }
        let found = CodeReferenceStrategy(table: table).findings(RuntimeGlobalsLocator.names, in: bin)
        XCTAssertTrue(found.allSatisfy { $0.address == nil && ($0.problem ?? "").contains("unknown layout") }, "\(found)")
    }
}
