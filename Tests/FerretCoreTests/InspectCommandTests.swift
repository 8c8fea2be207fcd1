import FerretTestSupport
import Foundation
import XCTest

/// `ferret inspect` on the demo Go service (binary and live process), a
/// non-Go binary and garbage.
final class InspectCommandTests: XCTestCase {
    func inspect(_ args: [String]) throws -> (status: Int32, json: [String: Any]?, stdout: String, stderr: String) {
        let r = try TestSupport.run(TestSupport.ferret, ["inspect"] + args)
        let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return (r.status, json, r.stdout, r.stderr)
    }

    func testInspectGoBinaryAndProcess() throws {
        let exe = try TestSupport.demoBinary()
        let r = try inspect(["--json", exe])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try XCTUnwrap(r.json, r.stdout)
        XCTAssertTrue((j["go_version"] as? String)?.hasPrefix("go1.") == true)
        XCTAssertEqual(j["module_path"] as? String, "ferret.example/demo")
        // net/http with cgo available links libc's resolver: a dynamic executable.
        XCTAssertEqual(j["linkage"] as? String, "dynamic")
        XCTAssertEqual(j["pie"] as? Bool, false)
        XCTAssertEqual(j["stripped"] as? Bool, false)
        XCTAssertEqual(j["has_dwarf"] as? Bool, true)
        XCTAssertNotNil((j["build_settings"] as? [String: String])?["GOARCH"])
        let globals = try XCTUnwrap(j["runtime_globals"] as? [String: [String: Any]])
        XCTAssertEqual(globals.count, 12, "11 globals and the extra-M count: \(globals.keys.sorted())")
        XCTAssertEqual(globals["runtime.sched"]?["source"] as? String, "symtab")
        XCTAssertGreaterThan((j["functions"] as? Int) ?? 0, 1000)
        XCTAssertEqual((j["layouts"] as? [String: String])?["runtime.schedt"], "dwarf")

        let demo = try TestSupport.startDemo(exe)  // returns once the demo is serving
        defer { demo.terminate() }
        let live = try inspect(["--json", String(demo.processIdentifier)])
        XCTAssertEqual(live.status, 0, live.stderr)
        let lj = try XCTUnwrap(live.json)
        XCTAssertEqual(lj["pid"] as? Int, Int(demo.processIdentifier))
        XCTAssertEqual(lj["load_bias"] as? String, "0x0", "not PIE")
        let maps = try XCTUnwrap(lj["mappings"] as? [[String: Any]])
        XCTAssertTrue(maps.contains { ($0["path"] as? String) == exe }, "\(maps)")

        XCTAssertEqual(lj["globals_validated"] as? Bool, true, live.stdout)

        let text = try inspect([String(demo.processIdentifier)])
        XCTAssertTrue(text.stdout.contains("runtime.sched"), text.stdout)
        XCTAssertTrue(text.stdout.contains("load bias       0x0"), text.stdout)
    }

    /// A stripped static build, live: every global found in code, each with the
    /// sources that agreed and the checks it passed against the process.
    func testInspectStrippedProcessShowsStrategyAndChecks() throws {
        let dir = TestSupport.tempDir("inspect-stripped")
        let stripped = try TestSupport.strippedDemoBinary(in: dir)
        let demo = try TestSupport.startDemo(stripped)  // returns once the demo is serving
        defer { demo.terminate() }
        let live = try inspect(["--json", String(demo.processIdentifier)])
        XCTAssertEqual(live.status, 0, live.stderr)
        let j = try XCTUnwrap(live.json, live.stdout)
        XCTAssertEqual(j["stripped"] as? Bool, true)
        XCTAssertEqual(j["globals_validated"] as? Bool, true, live.stdout)
        let globals = try XCTUnwrap(j["runtime_globals"] as? [String: [String: Any]])
        XCTAssertEqual(globals.count, 12, "\(globals.keys.sorted())")
        for (name, g) in globals {
            XCTAssertEqual(g["source"] as? String, "code", name)
            XCTAssertGreaterThanOrEqual((g["evidence"] as? [String])?.count ?? 0, 2, "\(name): two sources at least")
            let checks = try XCTUnwrap(g["checks"] as? [[String: Any]], name)
            XCTAssertFalse(checks.isEmpty, name)
            XCTAssertTrue(checks.allSatisfy { $0["passed"] as? Bool == true }, "\(name): \(checks)")
        }
        XCTAssertTrue(globals["runtime.allp"].flatMap { ($0["checks"] as? [[String: Any]])?.map { $0["name"] as? String ?? "" } }?
            .contains("gomaxprocs = len(allp)") == true)
        let text = try inspect([String(demo.processIdentifier)])
        XCTAssertTrue(text.stdout.contains("checked against the process: all passed"), text.stdout)
        XCTAssertTrue(text.stdout.contains("via code (runtime.mexit#"), text.stdout)
        XCTAssertTrue(text.stdout.contains("passed Ms on threads = /proc/PID/task"), text.stdout)
    }

    func testInspectNonGoAndGarbage() throws {
        let r = try inspect(["--json", "/bin/sleep"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.json?["go"] as? Bool, false)
        XCTAssertTrue(r.json?["go_version"] is NSNull)
        XCTAssertEqual(r.json?["linkage"] as? String, "dynamic")
        let garbage = TestSupport.tempDir("inspect") + "/garbage"
        try "hello".write(toFile: garbage, atomically: true, encoding: .utf8)
        let g = try inspect([garbage])
        XCTAssertEqual(g.status, 1)
        XCTAssertEqual(g.stderr, "ferret inspect: \(garbage): not an ELF file\n")
        let missing = try inspect(["999999999"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.hasPrefix("ferret inspect: /proc/999999999/exe: "), missing.stderr)
    }
}
