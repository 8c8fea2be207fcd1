import Foundation
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

final class LayoutTableTests: XCTestCase {
    static let repoRoot = DWARFLayoutTests.repoRoot
    static let tablePath = repoRoot + "/Packages/FerretGo/Sources/GoBinaryFormat/Layouts/layouts.json"
    static let expandedPath = repoRoot + "/tools/layoutgen/layouts.expanded.json"
    static let refprog = repoRoot + "/tools/layoutgen/refprog"

    /// The types the table carries. A version row lacks the ones its runtime
    /// does not have (swiss maps before 1.24, hmap from 1.24 on, ...).
    static let tableTypes = [
        "runtime.schedt", "runtime.p", "runtime.m", "runtime.g", "runtime.gobuf", "runtime.stack",
        "runtime.gQueue", "runtime.gList", "runtime.mutex",
        "runtime.mstats", "runtime.gcControllerState", "runtime.heapStatsDelta", "runtime.consistentHeapStats",
        "runtime.sysMemStat", "runtime.workType", "runtime.mheap", "runtime.mcentral", "runtime.mspan",
        "runtime.mcache", "runtime.fixalloc", "runtime.cpuStats", "runtime.hmap", "runtime.bmap",
        "internal/runtime/maps.Map", "internal/runtime/maps.table", "internal/runtime/maps.groupsReference",
        "net/http.Request", "net/http.Response", "net/http.response", "net/http.conn", "net/url.URL",
        "net/http.Header",
    ]

    /// Maintenance tool, not a test: regenerates Packages/FerretGo/Sources/GoBinaryFormat/Layouts/layouts.json
    /// by building tools/layoutgen/refprog with every toolchain in
    /// /opt/ferret-go/toolchains.txt and reading the layouts from each binary's DWARF.
    /// Runs only with FERRET_REGENERATE_LAYOUTS=1 (tools/layoutgen/generate.sh sets
    /// it); otherwise it returns at once so normal test runs never rewrite sources.
    func testRegenerateLayoutTable() throws {
        guard ProcessInfo.processInfo.environment["FERRET_REGENERATE_LAYOUTS"] == "1" else { return }
        let builds = try GoToolchains.buildAll(source: Self.refprog, flavours: [.plain])
        let table = try GoLayoutTable.generate(
            binaries: builds.map { ($0.version, $0.path) }, types: Self.tableTypes,
            generator: "tools/layoutgen (refprog built with each toolchain, plain build; layouts from DWARF via libdw)")
        for v in table.versions {
            let row = table.rows[v] ?? [:]
            let missing = Self.tableTypes.filter { row[$0] == nil }
            print("layoutgen: \(v): \(row.count) types; not present: \(missing.joined(separator: ", "))")
            for t in ["runtime.schedt", "runtime.g", "runtime.p", "runtime.m", "net/http.Request", "net/url.URL"] {
                XCTAssertNotNil(row[t], "\(v) lacks \(t)")
            }
        }
        let text = table.jsonText()
        // Check before writing: the compact form decodes to the same table.
        let decoded = try GoLayoutTable(json: Array(text.utf8))
        XCTAssertEqual(decoded.rows, table.rows)
        XCTAssertEqual(decoded.types, table.types)
        try Data(text.utf8).write(to: URL(fileURLWithPath: Self.tablePath))
        let expanded = table.expandedJSONText()
        try Data(expanded.utf8).write(to: URL(fileURLWithPath: Self.expandedPath))
        print("layoutgen: wrote \(Self.tablePath) (\(text.utf8.count) bytes, \(table.versions.count) versions)")
        print("layoutgen: wrote \(Self.expandedPath) (\(expanded.utf8.count) bytes)")
    }

    /// The committed table covers every installed toolchain and is in the
    /// generator's canonical form.
    func testBuiltInTableCoversEveryToolchain() throws {
        let table = GoLayoutTable.builtIn
        let committed = try XCTUnwrap(FileManager.default.contents(atPath: Self.tablePath))
        XCTAssertEqual(table.jsonText(), String(decoding: committed, as: UTF8.self), "canonical form")
        let expanded = try XCTUnwrap(FileManager.default.contents(atPath: Self.expandedPath))
        XCTAssertEqual(table.expandedJSONText(), String(decoding: expanded, as: UTF8.self), "readable copy is current")
        XCTAssertEqual(try GoLayoutTable(json: Array(expanded)).rows, table.rows)
        XCTAssertEqual(table.types, Self.tableTypes)
        let toolchains = try GoToolchains.required().map(\.version)
        XCTAssertEqual(table.versions, toolchains)
        for v in table.versions {
            let row = try XCTUnwrap(table.rows[v])
            for t in ["runtime.schedt", "runtime.p", "runtime.m", "runtime.g", "runtime.mheap", "runtime.mspan",
                      "runtime.mcache", "runtime.gQueue", "runtime.gList", "runtime.mstats", "runtime.gcControllerState",
                      "runtime.workType", "runtime.stack", "runtime.heapStatsDelta",
                      "runtime.consistentHeapStats", "net/http.Request", "net/http.response", "net/url.URL"] {
                let l = try XCTUnwrap(row[t], "\(v) \(t)")
                XCTAssertGreaterThan(l.size, 0, "\(v) \(t)")
                XCTAssertEqual(l.name, t)
                for m in l.members { XCTAssertLessThanOrEqual(m.offset + m.size, l.size, "\(v) \(t).\(m.name)") }
            }
            XCTAssertNil(row["net/http.Header"], "a map type, not a struct")
            let minor = try XCTUnwrap(GoVersion(v)).minor
            XCTAssertEqual(row["internal/runtime/maps.Map"] != nil, minor >= 24, "\(v): swiss maps from 1.24")
            XCTAssertEqual(row["runtime.hmap"] != nil, minor < 24, "\(v): hmap before 1.24")
            let g = try XCTUnwrap(row["runtime.g"])
            XCTAssertEqual(g.member("goid")?.size, 8, v)
            XCTAssertEqual(g.member("atomicstatus")?.size, 4, v)
            // Go 1.25 moved the free-list and run-queue counts into gList/gQueue.
            let schedt = try XCTUnwrap(row["runtime.schedt"])
            XCTAssertNotNil(schedt.member("gFree.stack"), v)
            XCTAssertEqual(schedt.member("gFree.n") != nil, minor < 25, "\(v): schedt.gFree.n before 1.25")
            XCTAssertEqual(schedt.member("runqsize") != nil, minor < 25, "\(v): schedt.runqsize before 1.25")
            XCTAssertEqual(row["runtime.gList"]?.member("size") != nil, minor >= 25, "\(v): gList.size from 1.25")
            XCTAssertEqual(row["runtime.gQueue"]?.member("size") != nil, minor >= 25, "\(v): gQueue.size from 1.25")
        }
    }

    /// RESEARCH notes: offsets in Go 1.19's DWARF for runtime.schedt.
    func testGo119SchedtRow() throws {
        let table = GoLayoutTable.builtIn
        let v = try XCTUnwrap(table.versions.first { $0.hasPrefix("go1.19.") })
        guard case .exact(let l) = table.lookup("runtime.schedt", goVersion: v) else {
            return XCTFail("no exact go1.19 row")
        }
        let expected: [(String, Int)] = [
            ("lock", 24), ("midle", 32), ("nmidle", 40), ("nmidlelocked", 44), ("mnext", 48), ("maxmcount", 56),
            ("nmsys", 60), ("nmfreed", 64), ("ngsys", 72), ("pidle", 80), ("npidle", 88), ("nmspinning", 92),
            ("runq", 96), ("runqsize", 112), ("gFree", 152), ("gFree.n", 176),
        ]
        for (name, off) in expected { XCTAssertEqual(l.member(name)?.offset, off, name) }
        XCTAssertEqual(table.offset(of: "gFree.n", in: "runtime.schedt", goVersion: v), 176)
        let gQueue = try XCTUnwrap(table.lookup("runtime.gQueue", goVersion: v).layout)
        XCTAssertEqual(table.offset(of: "runq.tail", in: "runtime.schedt", goVersion: v),
                       96 + gQueue.member("tail")!.offset)
        XCTAssertNil(table.offset(of: "runq.nosuch", in: "runtime.schedt", goVersion: v))
        XCTAssertNil(table.offset(of: "nosuch", in: "runtime.schedt", goVersion: v))
    }

    func testLookupRules() throws {
        func l(_ size: Int) -> TypeLayout { TypeLayout(name: "T", size: size, members: []) }
        let t = GoLayoutTable(generator: "test", types: ["T", "U"], rows: [
            "go1.22.3": ["T": l(3)],
            "go1.22.10": ["T": l(10)],
            "go1.23.9": ["T": l(239), "U": l(1)],
            "go1.21.13": ["T": l(2113)],
            "go1.23.0": ["U": l(2)],
        ])
        XCTAssertEqual(t.versions, ["go1.21.13", "go1.22.3", "go1.22.10", "go1.23.0", "go1.23.9"])
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.10"), .exact(l(10)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.10 X:boringcrypto"), .exact(l(10)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.8"), .nearestPatch(version: "go1.22.10", l(10)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.5"), .nearestPatch(version: "go1.22.3", l(3)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.0"), .nearestPatch(version: "go1.22.3", l(3)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22rc1"), .nearestPatch(version: "go1.22.3", l(3)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22beta2"), .nearestPatch(version: "go1.22.3", l(3)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.22.3"), .exact(l(3)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.21"), .nearestPatch(version: "go1.21.13", l(2113)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.21.13-custom"), .exact(l(2113)))
        // Exact row lacks the type: the nearest patch that has it.
        XCTAssertEqual(t.lookup("T", goVersion: "go1.23.0"), .nearestPatch(version: "go1.23.9", l(239)))
        XCTAssertEqual(t.lookup("U", goVersion: "go1.23.1"), .nearestPatch(version: "go1.23.0", l(2)))
        XCTAssertEqual(t.lookup("U", goVersion: "go1.23.0"), .exact(l(2)))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.20.5"), .unknown("unknown layout for go1.20"))
        XCTAssertEqual(t.lookup("T", goVersion: "go1.20"), .unknown("unknown layout for go1.20"))
        XCTAssertEqual(t.lookup("U", goVersion: "go1.22.10"), .unknown("no layout of U for go1.22 in the table"))
        for bad in ["devel go1.23-abcdef Tue", "", "go", "go1", "1.22.10", "go1.x", "gox.22", "go1.22.99999999999999999999"] {
            guard case .unknown(let why) = t.lookup("T", goVersion: bad) else {
                XCTFail("\(bad): expected unknown")
                continue
            }
            XCTAssertTrue(why.hasPrefix("unknown layout for"), why)
        }
    }

    func testResolvePrefersDWARF() throws {
        let table = GoLayoutTable.builtIn
        let v = try XCTUnwrap(table.versions.last)
        let row = try XCTUnwrap(table.lookup("runtime.schedt", goVersion: v).layout)
        let r1 = try XCTUnwrap(GoLayoutTable.resolve(binaryDWARF: nil, goVersion: v, type: "runtime.schedt"))
        XCTAssertEqual(r1.source, "table")
        XCTAssertEqual(r1.0, row)
        let older = try XCTUnwrap(GoVersion(v))
        let other = "go\(older.major).\(older.minor).\(older.patch + 1)"
        let r2 = try XCTUnwrap(GoLayoutTable.resolve(binaryDWARF: nil, goVersion: other, type: "runtime.schedt"))
        XCTAssertEqual(r2.source, "table (nearest patch \(v))")
        XCTAssertNil(GoLayoutTable.resolve(binaryDWARF: nil, goVersion: "go1.20.1", type: "runtime.schedt"))
        XCTAssertNil(GoLayoutTable.resolve(binaryDWARF: nil, goVersion: v, type: "runtime.nosuch"))
        // A binary with DWARF wins even when the version is unknown to the table.
        let bin = try GoToolchains.build(source: DWARFLayoutTests.fixture, version: v, flavour: .plain)
        let d = try DWARFLayouts(path: bin)
        let r3 = try XCTUnwrap(GoLayoutTable.resolve(binaryDWARF: d, goVersion: "devel", type: "runtime.schedt"))
        XCTAssertEqual(r3.source, "dwarf")
        XCTAssertEqual(r3.0, row)
    }

    func testJSONRoundTripAndGarbage() throws {
        let t = GoLayoutTable.builtIn
        for text in [t.jsonText(), t.expandedJSONText()] {
            let again = try GoLayoutTable(json: Array(text.utf8))
            XCTAssertEqual(again.rows, t.rows)
            XCTAssertEqual(again.types, t.types)
            XCTAssertEqual(again.generator, t.generator)
            XCTAssertEqual(again.jsonText(), t.jsonText())
        }
        let compactHeader = "{\"format\":2,\"generator\":\"x\",\"types\":[\"T\"],\"strings\":[\"a\"],"
        for bad in [
            "", "{", "[]", "{\"generator\":1}", "{\"generator\":\"x\",\"types\":[],\"versions\":{\"go1\":{\"T\":{}}}}",
            "{\"format\":3}",
            compactHeader + "\"members\":[0,0,1],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[0]}}",
            compactHeader + "\"members\":[0,0,1,5],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[0]}}",
            compactHeader + "\"members\":[0,0,1,0],\"layouts\":[[1,7]],\"versions\":{\"go1.1.1\":[0]}}",
            compactHeader + "\"members\":[0,0,1,0],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[3]}}",
            compactHeader + "\"members\":[0,0,1,0],\"layouts\":[[]],\"versions\":{\"go1.1.1\":[0]}}",
            compactHeader + "\"members\":[0,-4,1,0],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[0]}}",
            compactHeader + "\"members\":[0,0,1,0],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[0,0]}}",
        ] {
            XCTAssertThrowsError(try GoLayoutTable(json: Array(bad.utf8)), bad)
        }
        let good = try GoLayoutTable(json: Array(
            (compactHeader + "\"members\":[0,0,1,0],\"layouts\":[[1,0]],\"versions\":{\"go1.1.1\":[0]}}").utf8))
        XCTAssertEqual(good.lookup("T", goVersion: "go1.1.1"),
                       .exact(TypeLayout(name: "T", size: 1, members: [.init(name: "a", offset: 0, size: 1, type: "a")])))
    }
}
