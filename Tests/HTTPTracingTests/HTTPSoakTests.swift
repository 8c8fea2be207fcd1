import Foundation
import GoIntrospection
import GoTestSupport
@testable import HTTPTracing
import XCTest

/// The safety soak: one traced service per toolchain (flavours in turn), all
/// under checked load at once, while the probes of every service are attached
/// and detached every few seconds. Zero crashes and zero wrong answers.
///
/// FERRET_SOAK_SECONDS sets the length: 60 s by default (what CI runs, for its
/// 30-minute budget); the 10-minute run is `FERRET_SOAK_SECONDS=600`,
/// recorded in bench/RESULTS.md.
final class HTTPSoakTests: XCTestCase {
    static let fixtures = RetFinderTests.fixtures

    static var seconds: Int { Int(ProcessInfo.processInfo.environment["FERRET_SOAK_SECONDS"] ?? "") ?? 60 }

    func testAttachDetachUnderLoadOnEveryToolchain() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF") }
        let versions = try TracingTests.versions()
        let latest = try GoToolchains.required().last!.version
        let soak = try GoToolchains.build(source: Self.fixtures + "/httpsoak", version: latest, flavour: .staticBuild)
        let events = EventLog()
        let tracer = try TracerBPF(objectPath: try TracingTests.objectPath()) { e in events.append(e) }
        defer { tracer.close() }

        struct Target {
            var label: String
            var server: FixtureProcess
            var addr: String
            var plan: ProbePlan
            var load: Process
            var loadOut: Pipe
        }
        var targets: [Target] = []
        defer { for t in targets { t.server.terminate(); if t.load.isRunning { t.load.terminate() } } }
        let flavours = GoToolchains.Flavour.standard
        for (i, version) in versions.enumerated() {
            let flavour = flavours[i % flavours.count]
            let bin = try GoToolchains.build(source: Self.fixtures + "/httpsrv", version: version, flavour: flavour)
            let srv = try FixtureProcess(bin, [])
            let addr = String(try srv.waitForLine(prefix: "listening ", timeout: 10).dropFirst("listening ".count))
            let plan = try ProbePlan.make(for: GoBinary(path: "/proc/\(srv.pid)/exe"))
            let load = Process()
            load.executableURL = URL(fileURLWithPath: soak)
            load.arguments = ["-url", "http://" + addr, "-duration", "\(Self.seconds)s", "-c", "2"]
            let out = Pipe()
            load.standardOutput = out
            load.standardError = out
            targets.append(Target(label: "\(version) \(flavour)", server: srv, addr: addr, plan: plan, load: load, loadOut: out))
        }
        for t in targets { try t.load.run() }

        // Attach everything for 2 s, detach everything for 1 s, until the load ends.
        var cycles = 0
        let deadline = Date().addingTimeInterval(Double(Self.seconds))
        while Date() < deadline {
            for t in targets { try tracer.attach(pid: t.server.pid, plan: t.plan) }
            usleep(2_000_000)
            for t in targets { tracer.detach(pid: t.server.pid) }
            cycles += 1
            usleep(1_000_000)
        }
        XCTAssertEqual(tracer.linkCount, 0)
        XCTAssertEqual(tracer.inflightCount(), 0, "in-flight and goroutine entries left after detach")

        var lines: [String] = []
        for t in targets {
            t.load.waitUntilExit()
            let out = String(decoding: t.loadOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertTrue(t.server.process.isRunning, "\(t.label): the traced service died")
            guard let done = out.split(separator: "\n").first(where: { $0.hasPrefix("done ") }) else {
                XCTFail("\(t.label): load generator said: \(out)")
                continue
            }
            let f = TracingTests.servedCounts(String(done).replacingOccurrences(of: "done", with: "served"))
            XCTAssertEqual(f["errors"], 0, "\(t.label): \(out)")
            XCTAssertEqual(f["wrong"], 0, "\(t.label): \(out)")
            t.server.signal(SIGTERM)
            let served = try t.server.waitForLine(prefix: "served ", timeout: 10)
            let s = TracingTests.servedCounts(served)
            // Every request the load sent, and each call the service made to
            // itself, was served: nothing lost, nothing doubled.
            XCTAssertEqual(s["served"], (f["served"] ?? -1) + (f["downstream"] ?? -1), "\(t.label): \(served) vs \(done)")
            let spans = events.all.filter { $0.pid == t.server.pid }
            XCTAssertGreaterThan(spans.count, 0, "\(t.label): no spans while attached")
            XCTAssertEqual(spans.filter { $0.kind == .client }.isEmpty, false, "\(t.label): no client spans")
            lines.append("\(t.label): \(done); \(served); \(spans.count) spans while attached")
        }
        let c = tracer.counters()
        XCTAssertEqual(c.inflightFull, 0)
        XCTAssertEqual(c.ringbufFull, 0)
        print("HTTPSoakTests (\(Self.seconds) s, \(cycles) attach/detach cycles):\n" + lines.joined(separator: "\n") + "\ncounters: \(c)")
    }
}
