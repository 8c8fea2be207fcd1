import Foundation
import Pprof
import SwiftProtobuf
import XCTest

final class PprofBuilderTests: XCTestCase {
    private func decode(_ gz: [UInt8]) throws -> Perftools_Profiles_Profile {
        try Perftools_Profiles_Profile(serializedBytes: try Gzip.decompress(gz))
    }

    func testGzippedDataIsGzip() throws {
        let gz = try Fixture.builder().gzippedData()
        XCTAssertEqual(Array(gz.prefix(3)), [0x1f, 0x8b, 0x08])  // magic, deflate
    }

    func testDecodedProfileFollowsGoConventions() throws {
        let p = try decode(try Fixture.builder().gzippedData())
        let s = p.stringTable
        XCTAssertEqual(s.first, "")
        XCTAssertEqual(Set(s).count, s.count, "strings are interned once")
        func str(_ i: Int64) -> String { s[Int(i)] }

        XCTAssertEqual(p.sampleType.map { [str($0.type), str($0.unit)] }, [["samples", "count"], ["cpu", "nanoseconds"]])
        XCTAssertEqual([str(p.periodType.type), str(p.periodType.unit)], ["cpu", "nanoseconds"])
        XCTAssertEqual(p.period, 10_000_000)
        XCTAssertEqual(p.timeNanos, Fixture.time)
        XCTAssertEqual(p.durationNanos, Fixture.duration)

        // Ids are 1...n in order.
        XCTAssertEqual(p.mapping.map(\.id), [1])
        XCTAssertEqual(p.location.map(\.id), Array(1...6))
        XCTAssertEqual(p.function.map(\.id), Array(1...5))  // main.main at two lines is one

        let m = p.mapping[0]
        XCTAssertEqual([m.memoryStart, m.memoryLimit, m.fileOffset], [0x40_0000, 0x80_0000, 0])
        XCTAssertEqual(str(m.filename), "/usr/local/bin/app")
        XCTAssertEqual(str(m.buildID), "0123456789abcdef")
        XCTAssertTrue(m.hasFunctions_p && m.hasFilenames_p && m.hasLineNumbers_p && m.hasInlineFrames_p)

        // Two distinct stacks, their 300 and 100 samples merged.
        XCTAssertEqual(p.sample.map(\.value), [[300, 3_000_000_000], [100, 1_000_000_000]])
        XCTAssertEqual(p.sample.map(\.locationID), [[1, 2, 3, 4], [5, 6, 4]])

        let fn = Dictionary(uniqueKeysWithValues: p.function.map { ($0.id, $0) })
        // The unknown address: kept, with its mapping, no lines.
        let unknown = p.location[1]
        XCTAssertEqual(unknown.address, Fixture.unknownAddress)
        XCTAssertEqual(unknown.mappingID, 1)
        XCTAssertTrue(unknown.line.isEmpty)
        // The inlined location: innermost first, the caller last.
        let inlined = p.location[4]
        XCTAssertEqual(inlined.address, 0x40_1110)
        XCTAssertEqual(inlined.line.map { str(fn[$0.functionID]!.name) }, ["main.B", "main.helper"])
        XCTAssertEqual(inlined.line.map(\.line), [21, 31])

        let b = try XCTUnwrap(p.function.first { str($0.name) == "main.B" })
        XCTAssertEqual(str(b.systemName), "main.B")
        XCTAssertEqual(str(b.filename), "/src/app/b.go")
        XCTAssertEqual(b.startLine, 20)
        XCTAssertEqual(p.function.filter { str($0.name) == "main.main" }.count, 1)
    }

    func testCollapsedIsExact() {
        XCTAssertEqual(Fixture.builder().collapsed(), """
            runtime.main;main.main;app+0x5abc;main.A 300
            runtime.main;main.main;main.helper;main.B 100

            """)

        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 0)
        let f = PprofFrame(function: "f"), g = PprofFrame(function: "g;x"), root = PprofFrame(function: "root")
        p.addSample(stack: [(0x10, nil, [f]), (0x20, nil, [root])], values: [2, 0])
        // Another address in f: the same collapsed stack, values added.
        p.addSample(stack: [(0x11, nil, [f]), (0x20, nil, [root])], values: [1, 0])
        p.addSample(stack: [(0x30, nil, [f, g]), (0x20, nil, [root])], values: [4, 0])
        p.addSample(stack: [(0xabc, nil, []), (0x20, nil, [root])], values: [5, 0])
        p.addSample(stack: [], values: [7, 0])
        XCTAssertEqual(p.collapsed(), "root;0xabc 5\nroot;f 3\nroot;g:x;f 4\n")
    }

    func testTopFunctionsShares() {
        let top = Fixture.builder().topFunctions(limit: 10)
        XCTAssertEqual(top.flat.map(\.name), ["main.A", "main.B"])
        XCTAssertEqual(top.flat.map(\.share), [0.75, 0.25])
        XCTAssertEqual(top.cumulative.map(\.name), [
            "main.main", "runtime.main", "app+0x5abc", "main.A", "main.B", "main.helper",
        ])
        XCTAssertEqual(top.cumulative.map(\.share), [1, 1, 0.75, 0.75, 0.25, 0.25])
        let two = Fixture.builder().topFunctions(limit: 1)
        XCTAssertEqual(two.flat.map(\.name), ["main.A"])
        XCTAssertEqual(two.cumulative.map(\.name), ["main.main"])
    }

    func testCumulativeCountsARecursiveFunctionOncePerSample() {
        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 0)
        let f = PprofFrame(function: "f", file: "x.go", line: 1, startLine: 1)
        let g = PprofFrame(function: "g", file: "x.go", line: 9, startLine: 8)
        p.addSample(stack: [(1, nil, [f]), (2, nil, [g]), (3, nil, [f])], values: [1, 10])
        p.addSample(stack: [(2, nil, [g])], values: [1, 10])
        let top = p.topFunctions(limit: 5)
        XCTAssertEqual(top.cumulative.map(\.name), ["g", "f"])
        XCTAssertEqual(top.cumulative.map(\.share), [1, 0.5])
        XCTAssertEqual(top.flat.map(\.share), [0.5, 0.5])
    }

    func testInterning() {
        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 0)
        let libUnsymbolized = PprofMappingInfo(start: 0x1000, limit: 0x2000, file: "/lib/x.so", hasFunctions: false)
        var libSymbolized = libUnsymbolized
        libSymbolized.hasFunctions = true
        libSymbolized.buildID = "feed"
        let other = PprofMappingInfo(start: 0x1000, limit: 0x2000, offset: 0x1000, file: "/lib/x.so", hasFunctions: false)
        let f10 = PprofFrame(function: "f", file: "x.c", line: 10, startLine: 9)
        let f11 = PprofFrame(function: "f", file: "x.c", line: 11, startLine: 9)
        let fElsewhere = PprofFrame(function: "f", file: "y.c", line: 11, startLine: 9)

        p.addSample(stack: [(0x1100, libUnsymbolized, [f10])], values: [1, 1])
        p.addSample(stack: [(0x1100, libSymbolized, [f11])], values: [1, 1])  // same mapping and location
        p.addSample(stack: [(0x1104, libSymbolized, [f11])], values: [1, 1])  // same function
        p.addSample(stack: [(0x1100, other, [fElsewhere])], values: [1, 1])   // another mapping: new location and function
        p.addSample(stack: [(0x1100, libUnsymbolized, [f10])], values: [1, 1], labels: ["k": "v"])
        XCTAssertEqual(p.sampleCount, 5)

        let prof = p.build()
        XCTAssertEqual(prof.mapping.count, 2)
        XCTAssertTrue(prof.mapping[0].hasFunctions_p, "a later use with functions marks the mapping")
        XCTAssertEqual(prof.stringTable[Int(prof.mapping[0].buildID)], "feed")
        XCTAssertEqual(prof.mapping[1].fileOffset, 0x1000)
        XCTAssertEqual(prof.location.map(\.address), [0x1100, 0x1104, 0x1100])
        XCTAssertEqual(prof.location.map(\.mappingID), [1, 1, 2])
        XCTAssertEqual(prof.function.count, 2)
        XCTAssertEqual(prof.location[0].line.map(\.line), [10], "a location keeps its first frames")
        // Merged by stack and labels: the labelled sample is its own.
        XCTAssertEqual(prof.sample.map(\.value), [[2, 2], [1, 1], [1, 1], [1, 1]])
        XCTAssertEqual(prof.sample[3].label.map { [prof.stringTable[Int($0.key)], prof.stringTable[Int($0.str)]] }, [["k", "v"]])
        XCTAssertEqual(Set(prof.stringTable).count, prof.stringTable.count)
    }

    func testMainMappingComesFirst() {
        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 0)
        let libc = PprofMappingInfo(start: 0x7f00_0000_0000, limit: 0x7f00_0010_0000, file: "/lib/libc.so.6", hasFunctions: true)
        p.addSample(stack: [(0x7f00_0000_0100, libc, [PprofFrame(function: "memcpy")]),
                            (0x40_2020, Fixture.exe, [Fixture.mainAtA])], values: [1, 1])
        XCTAssertEqual(p.build().mapping.map(\.memoryStart), [0x7f00_0000_0000, 0x40_0000], "first use")
        p.setMainMapping(Fixture.exe)
        let prof = p.build()
        XCTAssertEqual(prof.mapping.map(\.memoryStart), [0x40_0000, 0x7f00_0000_0000])
        XCTAssertEqual(prof.mapping.map(\.id), [1, 2])
        XCTAssertEqual(prof.location.map(\.mappingID), [2, 1])
    }

    func testCPUPeriodFromFrequency() {
        XCTAssertEqual(PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 0).period, 10_000_000)
        XCTAssertEqual(PprofBuilder.cpu(frequencyHz: 99, timeNanos: 0, durationNanos: 0).period, 10_101_010)
        let custom = PprofBuilder(sampleTypes: [("alloc_space", "bytes")], periodType: ("space", "bytes"),
                                  period: 512 * 1024, timeNanos: 1, durationNanos: 2).build()
        XCTAssertEqual(custom.sampleType.count, 1)
        XCTAssertEqual(custom.stringTable[Int(custom.periodType.type)], "space")
    }

    /// O(stack depth) per sample: 100k samples of 32 frames over 4k distinct
    /// addresses stay well under a few seconds even in a debug build.
    func testAddingSamplesIsFast() throws {
        let exe = Fixture.exe
        let frames = (0..<4096).map { i in
            PprofFrame(function: "pkg.fn\(i % 700)", file: "/src/pkg/f\(i % 50).go", line: i, startLine: i - i % 7)
        }
        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: 0, durationNanos: 10_000_000_000)
        var rng = SystemRandomNumberGenerator()
        let stacks: [[PprofStackElement]] = (0..<2000).map { _ in
            (0..<32).map { _ in
                let i = Int.random(in: 0..<4096, using: &rng)
                return (exe.start + UInt64(i) * 16, exe, [frames[i]])
            }
        }
        let start = ContinuousClock.now
        for i in 0..<100_000 {
            p.addSample(stack: stacks[i % stacks.count], values: [1, 10_000_000])
        }
        let added = ContinuousClock.now - start
        let gz = try p.gzippedData()
        let total = ContinuousClock.now - start
        print("100k samples: add \(added), with build+gzip \(total), \(gz.count) bytes")
        XCTAssertEqual(p.build().sample.count, 2000)
        XCTAssertLessThan(total, .seconds(20))
    }
}
