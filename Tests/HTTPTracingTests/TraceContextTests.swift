import Foundation
import GoIntrospection
import GoTestSupport
@testable import HTTPTracing
import XCTest

/// Trace context end to end, on every toolchain and flavour: incoming
/// traceparent (both header-map layouts, small and large maps), client spans
/// parented to the server span of the goroutine that made them (directly and
/// through a goroutine the handler started), the downstream service's span in
/// the same trace when the caller forwards the header, malformed headers, and
/// ServeMux pattern routes (Go 1.23+).
final class TraceContextTests: XCTestCase {
    static let fixtures = RetFinderTests.fixtures

    struct Parent {
        var trace: String
        var span: String
        var header: String { "traceparent: 00-\(trace)-\(span)-01" }
    }

    static func randomHex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    func testTraceContextOnEveryToolchain() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF") }
        let latest = try GoToolchains.required().last!.version
        let client = try GoToolchains.build(source: Self.fixtures + "/httpclient", version: latest, flavour: .staticBuild)
        let events = EventLog()
        let tracer = try TracerBPF(objectPath: try TracingTests.objectPath()) { e in events.append(e) }
        defer { tracer.close() }
        var lines: [String] = []
        let versions = try TracingTests.versions()
        for version in versions {
            // Default (offsets from DWARF) and stripped-static (from the layout
            // table); TracingTests covers the static flavour too.
            for flavour in [GoToolchains.Flavour.plain, .strippedStatic] {
                let server = try GoToolchains.build(source: Self.fixtures + "/httpsrv", version: version, flavour: flavour)
                // Goroutine parents from parentGoid (Go 1.21+) or newproc1
                // (1.19); and newproc1 forced, on the plain builds of the
                // oldest and newest toolchains that have parentGoid.
                let forced = flavour == .plain && (version.hasPrefix("go1.21.") || version == versions.last)
                for parents in forced ? [GoroutineParents.auto, .newproc1] : [.auto] {
                    events.removeAll()
                    lines.append(try check(server: server, client: client, tracer: tracer, events: events,
                                           label: "\(version) \(flavour) \(parents)", parents: parents,
                                           minor: Int(version.split(separator: ".")[1]) ?? 0))
                }
            }
        }
        let c = tracer.counters()
        XCTAssertEqual(c.headerMisses, 0, "every header map was searched")
        XCTAssertEqual(c.readErrors, 0)
        XCTAssertEqual(c.unmatchedReturn, 0)
        print("TraceContextTests:\n" + lines.joined(separator: "\n") + "\ncounters: \(c)")
    }

    func check(server: String, client: String, tracer: TracerBPF, events: EventLog, label: String,
               parents: GoroutineParents, minor: Int) throws -> String {
        let a = try FixtureProcess(server, [])
        defer { a.terminate() }
        let b = try FixtureProcess(server, [])
        defer { b.terminate() }
        let addrA = String(try a.waitForLine(prefix: "listening ", timeout: 10).dropFirst("listening ".count))
        let addrB = String(try b.waitForLine(prefix: "listening ", timeout: 10).dropFirst("listening ".count))
        // One plan serves both processes of the binary.
        let t0 = Date()
        let plan = try ProbePlan.make(for: GoBinary(path: "/proc/\(a.pid)/exe"), goroutineParents: parents)
        let planned = Date().timeIntervalSince(t0)
        XCTAssertNotNil(plan.client, "\(label): roundTrip probes")
        let parenting = parents == .newproc1 || minor < 21 ? "newproc1" : "parentGoid"
        XCTAssertEqual(plan.parenting, parenting, label)
        XCTAssertEqual(plan.spawn != nil, parenting == "newproc1", label)
        for p in [a, b] { try tracer.attach(pid: p.pid, plan: plan) }
        defer {
            tracer.detach(pid: a.pid)
            tracer.detach(pid: b.pid)
        }

        func get(_ path: String, _ headers: [String] = []) throws {
            let args = ["-url", "http://" + addrA, "-n", "1", "-c", "1", "-path", path] + headers.flatMap { ["-H", $0] }
            let (st, out) = try GoToolchains.run(client, args)
            XCTAssertTrue(st == 0 && out.contains("errors=0"), "\(label): GET \(path): \(out)")
        }
        let p1 = Parent(trace: Self.randomHex(16), span: Self.randomHex(8))
        let p2 = Parent(trace: Self.randomHex(16), span: Self.randomHex(8))
        let p3 = Parent(trace: Self.randomHex(16), span: Self.randomHex(8))
        try get("/ok/tp", [p1.header])
        try get("/call/x?to=http://\(addrB)/ok/down", [p2.header])
        try get("/spawn/x?to=http://\(addrB)/ok/spawned")
        // 24 headers: hmap buckets beyond the first (Go ≤ 1.23), a swiss
        // table rather than one small group (Go 1.24+).
        try get("/ok/many", (0..<24).map { "X-Pad-\($0): value-\($0)" } + [p3.header])
        try get("/ok/bad", ["traceparent: 00-\(Self.randomHex(15))zz-\(Self.randomHex(8))-01"])
        if minor >= 22 { try get("/items/7") }
        let expected = minor >= 22 ? 10 : 9
        Wait.until("\(label): \(expected) events", timeout: 5) { events.count >= expected }
        usleep(100_000)  // room for an extra (wrong) event to show: a measurement window, not a wait
        let got = events.all
        XCTAssertEqual(got.count, expected, "\(label): events \(got.map { "\($0.kind) \($0.path)" })")

        func one(_ pid: Int32, _ kind: HTTPEvent.Kind, _ path: String) -> HTTPEvent? {
            let m = got.filter { $0.pid == pid && $0.kind == kind && $0.path == path }
            XCTAssertEqual(m.count, 1, "\(label): \(kind) \(path) in \(pid == a.pid ? "A" : "B")")
            return m.first
        }
        let zero = [UInt8](repeating: 0, count: 8)
        // 1. An incoming traceparent: its trace, its span as the parent.
        if let s = one(a.pid, .server, "/ok/tp") {
            XCTAssertEqual(Self.hex(s.traceID), p1.trace, "\(label): trace id from traceparent")
            XCTAssertEqual(Self.hex(s.parentSpanID), p1.span, "\(label): parent from traceparent")
            XCTAssertTrue(s.flags.contains(.traceparentFound), "\(label): \(s.flags)")
            XCTAssertEqual(s.route, minor >= 23 ? "/ok/" : "", "\(label): route")
        }
        // 2. A handler's call: the client span is the server span's child;
        //    the downstream span is in the same trace (the handler forwards
        //    the header it got).
        if let s = one(a.pid, .server, "/call/x"), let c = one(a.pid, .client, "/ok/down"), let d = one(b.pid, .server, "/ok/down") {
            XCTAssertEqual(Self.hex(s.traceID), p2.trace, label)
            XCTAssertEqual(c.traceID, s.traceID, "\(label): client span in the server span's trace")
            XCTAssertEqual(c.parentSpanID, s.spanID, "\(label): client span's parent is the server span")
            XCTAssertTrue(c.flags.contains(.localParent), label)
            XCTAssertEqual(c.effectiveStatus, 200, label)
            XCTAssertEqual(c.host, addrB, "\(label): client span's host")
            XCTAssertEqual(c.method, "GET", label)
            XCTAssertTrue(c.startMonotonicNanos >= s.startMonotonicNanos && c.endMonotonicNanos <= s.endMonotonicNanos,
                          "\(label): client span inside its server span")
            XCTAssertEqual(Self.hex(d.traceID), p2.trace, "\(label): downstream server span in the same trace")
            XCTAssertNotEqual(d.spanID, c.spanID, label)
        }
        // 3. A goroutine the handler started makes the call: still its child.
        if let s = one(a.pid, .server, "/spawn/x"), let c = one(a.pid, .client, "/ok/spawned"), one(b.pid, .server, "/ok/spawned") != nil {
            XCTAssertNotEqual(s.traceID, [UInt8](repeating: 0, count: 16), label)
            XCTAssertEqual(s.parentSpanID, zero, "\(label): no incoming context: a root span")
            XCTAssertEqual(c.traceID, s.traceID, "\(label): spawned goroutine's client span in the handler's trace")
            XCTAssertEqual(c.parentSpanID, s.spanID, "\(label): spawned goroutine's client span parented via newproc1")
        }
        // 4. A large header map.
        if let s = one(a.pid, .server, "/ok/many") {
            XCTAssertEqual(Self.hex(s.traceID), p3.trace, "\(label): traceparent among 25 headers")
            XCTAssertEqual(Self.hex(s.parentSpanID), p3.span, label)
        }
        // 5. A malformed header: a new trace, flagged.
        if let s = one(a.pid, .server, "/ok/bad") {
            XCTAssertTrue(s.flags.contains(.traceparentInvalid), "\(label): \(s.flags)")
            XCTAssertEqual(s.parentSpanID, zero, label)
        }
        // 6. A pattern route (Go 1.22 mux; Request.Pattern from Go 1.23).
        if minor >= 22, let s = one(a.pid, .server, "/items/7") {
            XCTAssertEqual(s.route, minor >= 23 ? "GET /items/{id}" : "", "\(label): route")
            XCTAssertEqual(s.effectiveStatus, 200, label)
        }
        return "\(label): \(got.count) spans; traceparent, client parenting (direct and spawned) and routes checked; "
            + "planned in \(String(format: "%.2f", planned)) s, checked in \(String(format: "%.2f", Date().timeIntervalSince(t0))) s"
    }
}
