import GoTestSupport
import Pprof
import XCTest

/// The profiles as the real `go tool pprof` reads them.
final class GoPprofTests: XCTestCase {
    private func fixturePath() throws -> String {
        try Fixture.write(try Fixture.builder().gzippedData(), name: "fixture.pb.gz")
    }

    /// pprof's -top row for `name`: [flat, flat%, sum%, cum, cum%].
    private func topRow(_ top: String, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [String]? {
        for l in top.split(separator: "\n") {
            let f = l.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if f.count > 5, f[5...].joined(separator: " ") == name { return Array(f[0..<5]) }
        }
        XCTFail("no -top row for \(name) in:\n\(top)", file: file, line: line)
        return nil
    }

    func testTopShowsFlatSharesWithoutWarnings() throws {
        let out = try Fixture.pprof(Fixture.go(), ["-top", "-nodecount=50", try fixturePath()])
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertEqual(out.stderr, "", "pprof warned")
        XCTAssertTrue(out.stdout.contains("File: app\n"), out.stdout)
        XCTAssertTrue(out.stdout.contains("Build ID: 0123456789abcdef\n"), out.stdout)
        XCTAssertTrue(out.stdout.contains("Type: cpu\n"), out.stdout)
        XCTAssertTrue(out.stdout.contains("Duration: 10s, Total samples = 4s (40.00%)"), out.stdout)
        XCTAssertEqual(topRow(out.stdout, "main.A")?[1], "75.00%")
        XCTAssertEqual(topRow(out.stdout, "main.B (inline)")?[1], "25.00%")
        XCTAssertEqual(topRow(out.stdout, "main.helper")?[4], "25.00%")
        XCTAssertEqual(topRow(out.stdout, "main.main")?[4], "100%")
        // The unsymbolized frame is named after its mapping.
        XCTAssertEqual(topRow(out.stdout, "[app]")?[4], "75.00%")
    }

    func testTracesShowInlinedFrameWithFileAndLine() throws {
        let out = try Fixture.pprof(Fixture.go(), ["-traces", "-lines", try fixturePath()])
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertEqual(out.stderr, "")
        let lines = out.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let inl = try XCTUnwrap(lines.firstIndex(of: "1s   main.B /src/app/b.go:21 (inline)"), out.stdout)
        XCTAssertEqual(Array(lines[inl + 1...inl + 3]), [
            "main.helper /src/app/b.go:31",
            "main.main /src/app/main.go:6",
            "runtime.main /usr/lib/go/src/runtime/proc.go:267",
        ])
        let a = try XCTUnwrap(lines.firstIndex(of: "3s   main.A /src/app/a.go:12"), out.stdout)
        XCTAssertEqual(Array(lines[a + 1...a + 3]), [
            "[app]", "main.main /src/app/main.go:5", "runtime.main /usr/lib/go/src/runtime/proc.go:267",
        ])
    }

    func testRawShowsHeaderSamplesUnknownAddressAndMapping() throws {
        let out = try Fixture.pprof(Fixture.go(), ["-raw", try fixturePath()])
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertEqual(out.stderr, "")
        let lines = out.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        for expected in [
            "PeriodType: cpu nanoseconds",
            "Period: 10000000",
            "Time: 2023-11-14 22:13:20 +0000 UTC",
            "Duration: 10s",
            "samples/count cpu/nanoseconds",
            "300 3000000000: 1 2 3 4",
            "100 1000000000: 5 6 4",
            "1: 0x401010 M=1 main.A /src/app/a.go:12:0 s=10",
            "2: 0x405abc M=1",  // unknown: kept, with address and mapping, no lines
            "5: 0x401110 M=1 main.B /src/app/b.go:21:0 s=20",
            "main.helper /src/app/b.go:31:0 s=30",
            "1: 0x400000/0x800000/0x0 /usr/local/bin/app 0123456789abcdef [FN][FL][LN][IN]",
        ] {
            XCTAssertTrue(lines.contains(expected), "no line \"\(expected)\" in:\n\(out.stdout)")
        }
        // The inlined frame's caller line directly follows it.
        let b = try XCTUnwrap(lines.firstIndex(of: "5: 0x401110 M=1 main.B /src/app/b.go:21:0 s=20"))
        XCTAssertEqual(lines[b + 1], "main.helper /src/app/b.go:31:0 s=30")
    }

    /// Addresses in an unsymbolizable mapping ([vdso]) or in none: kept, no
    /// warnings; the executable named by setMainMapping is mapping 1 although
    /// first used after another; labels reach pprof.
    func testUnknownAddressesMainMappingAndLabels() throws {
        let p = PprofBuilder.cpu(frequencyHz: 100, timeNanos: Fixture.time, durationNanos: Fixture.duration)
        let main: PprofStackElement = (0x40_2020, Fixture.exe, [Fixture.mainAtA])
        p.addSample(stack: [(0x7fff_f7fc_1a2b, Fixture.vdso, []), main], values: [1, Fixture.period],
                    labels: ["goroutine": "worker"])
        p.addSample(stack: [(0xdead_beef, nil, []), main], values: [3, 3 * Fixture.period])
        p.setMainMapping(Fixture.exe)
        let path = try Fixture.write(try p.gzippedData(), name: "unknown.pb.gz")

        let raw = try Fixture.pprof(Fixture.go(), ["-raw", path])
        XCTAssertEqual(raw.status, 0, raw.stderr)
        XCTAssertEqual(raw.stderr, "")
        let lines = raw.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        for expected in [
            "1: 0x7ffff7fc1a2b M=2",
            "3: 0xdeadbeef",
            "1: 0x400000/0x800000/0x0 /usr/local/bin/app 0123456789abcdef [FN][FL][LN]",
            "2: 0x7ffff7fc1000/0x7ffff7fc3000/0x0 [vdso]",
        ] {
            XCTAssertTrue(lines.contains(expected), "no line \"\(expected)\" in:\n\(raw.stdout)")
        }
        XCTAssertTrue(raw.stdout.contains("goroutine:[worker]"), raw.stdout)

        let top = try Fixture.pprof(Fixture.go(), ["-top", path])
        XCTAssertEqual(top.status, 0, top.stderr)
        XCTAssertEqual(top.stderr, "")
        XCTAssertTrue(top.stdout.contains("File: app\n"), top.stdout)
        XCTAssertEqual(topRow(top.stdout, "main.main")?[4], "100%")

        let traces = try Fixture.pprof(Fixture.go(), ["-traces", path])
        XCTAssertEqual(traces.stderr, "")
        XCTAssertTrue(traces.stdout.contains("goroutine:  worker"), traces.stdout)
    }

    /// The pprof of every listed toolchain that ships it prebuilt (Go 1.19 to
    /// 1.24), and of the newest, reads the profile alike. Go >= 1.25 builds
    /// pprof on first use (about a minute, cached after), so the toolchains in
    /// between are left out to keep a fresh machine's run short.
    func testEveryToolchainsPprofReadsTheProfile() throws {
        let path = try fixturePath()
        let all = try GoToolchains.required()
        let chosen = all.enumerated().filter { i, t in
            let goroot = URL(fileURLWithPath: t.go).deletingLastPathComponent().deletingLastPathComponent().path
            return i == all.count - 1 || FileManager.default.fileExists(atPath: goroot + "/pkg/tool/linux_amd64/pprof")
        }.map(\.element)
        XCTAssertGreaterThan(chosen.count, 1)
        for t in chosen {
            let out = try Fixture.pprof(t.go, ["-top", "-nodecount=50", path])
            XCTAssertEqual(out.status, 0, "\(t.version): \(out.stderr)")
            XCTAssertEqual(out.stderr, "", "\(t.version) warned")
            XCTAssertEqual(topRow(out.stdout, "main.A")?[1], "75.00%", t.version)
            XCTAssertEqual(topRow(out.stdout, "main.B (inline)")?[1], "25.00%", t.version)
        }
    }
}
