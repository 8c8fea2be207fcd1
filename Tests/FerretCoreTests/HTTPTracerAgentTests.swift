import FerretTestSupport
import FerretCore
import Foundation
import GoTestSupport
import XCTest

/// The http_tracer plugin inside the real agent (`ferret run`): two processes
/// of one binary matched by a rule, spans and both RED histograms in the jsonl
/// sink, a trace across them, and a killed agent leaving no BPF program behind.
final class HTTPTracerAgentTests: XCTestCase {
    static let fixtures = TestSupport.repoRoot + "/Tests/HTTPTracingTests/Fixtures"

    /// Loaded BPF programs named like the http_tracer's (bpftool).
    static func tracerPrograms() throws -> Int {
        let r = try TestSupport.run("/usr/sbin/bpftool", ["prog", "show"])
        return r.stdout.split(separator: "\n").filter { $0.contains("name server_entry") || $0.contains("name client_entry") }.count
    }

    func testSpansMetricsAndNothingLeftAfterKill() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF") }
        let latest = try GoToolchains.required().last!.version
        let server = try GoToolchains.build(source: Self.fixtures + "/httpsrv", version: latest, flavour: .strippedStatic)
        let client = try GoToolchains.build(source: Self.fixtures + "/httpclient", version: latest, flavour: .staticBuild)
        let before = try Self.tracerPrograms()

        func start() throws -> (Process, Pipe, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: server)
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            var text = ""
            // availableData blocks until output or EOF: no poll interval of its own.
            Wait.until("httpsrv's first line", timeout: 10, poll: 0) {
                let d = out.fileHandleForReading.availableData
                text += String(decoding: d, as: UTF8.self)
                return d.isEmpty || text.contains("\n")
            }
            guard let line = text.split(separator: "\n").first, line.hasPrefix("listening ") else {
                throw TestSupport.TestError("httpsrv said: \(text)")
            }
            return (p, out, String(line.dropFirst("listening ".count)))
        }
        let (a, _, addrA) = try start()
        defer { a.terminate() }
        let (b, _, addrB) = try start()
        defer { b.terminate() }

        let dir = TestSupport.tempDir("http-tracer-agent")
        let config = """
        agent: { interval: 1s, rescan: 1s, log_level: info }
        plugins: { paths: [\(TestSupport.repoRoot)/plugins.d] }
        rules:
          - name: web
            match: { exe: "\(server)" }
            collectors:
              http_tracer: { metrics_interval: 1s }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        // Both processes of the binary get their probes.
        for pid in [a.processIdentifier, b.processIdentifier] {
            try agent.waitForStderr("pid \(pid) (", timeout: 20)
        }
        XCTAssertGreaterThan(try Self.tracerPrograms(), before, "programs loaded while tracing")

        let trace = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let parent = "00f067aa0ba902b7"
        let (st, out) = try GoToolchains.run(client, ["-url", "http://" + addrA, "-n", "1", "-c", "1",
                                                      "-path", "/call/agent?to=http://\(addrB)/ok/agent",
                                                      "-H", "traceparent: 00-\(trace)-\(parent)-01"])
        XCTAssertEqual(st, 0, out)

        func span(_ kind: String, _ path: String, pid: Int32) throws -> [String: Any] {
            try agent.waitFor("\(kind) span \(path)") { l in
                guard l["signal"] as? String == "span", l["kind"] as? String == kind,
                      let attrs = l["attributes"] as? [String: Any], attrs["url.path"] as? String == path else { return false }
                return (l.resource["process.pid"] as? NSNumber)?.int32Value == pid
            }
        }
        let s = try span("server", "/call/agent", pid: a.processIdentifier)
        let c = try span("client", "/ok/agent", pid: a.processIdentifier)
        let d = try span("server", "/ok/agent", pid: b.processIdentifier)
        XCTAssertEqual(s["trace_id"] as? String, trace)
        XCTAssertEqual(s["parent_span_id"] as? String, parent)
        XCTAssertEqual(s["name"] as? String, "GET /call/", "route from Request.Pattern names the span")
        XCTAssertEqual(c["trace_id"] as? String, trace)
        XCTAssertEqual(c["parent_span_id"] as? String, s["span_id"] as? String, "client span under the server span")
        XCTAssertEqual(d["trace_id"] as? String, trace, "downstream span in the same trace")
        XCTAssertEqual((c["attributes"] as? [String: Any])?["http.response.status_code"] as? NSNumber, 200)
        XCTAssertEqual(s.resource["ferret.group"] as? String != nil, true)

        for name in ["http.server.request.duration", "http.client.request.duration"] {
            let m = try agent.waitFor(name) { l in
                l["signal"] as? String == "metric" && l["name"] as? String == name
                    && (l.resource["process.pid"] as? NSNumber)?.int32Value == a.processIdentifier
            }
            XCTAssertEqual(m["kind"] as? String, "histogram")
            XCTAssertEqual(m["unit"] as? String, "s")
            XCTAssertGreaterThanOrEqual((m["count"] as? NSNumber)?.intValue ?? 0, 1, "\(name): \(m)")
        }

        // A killed agent: the kernel drops its links and programs with its descriptors.
        agent.signal(SIGKILL)
        agent.process.waitUntilExit()
        var left = 0
        try Wait.until("the killed agent's BPF programs gone", timeout: 10, poll: 0.2) {
            left = try Self.tracerPrograms()
            return left <= before
        }
        XCTAssertEqual(left, before, "BPF programs left behind by a killed agent")
        XCTAssertTrue(a.isRunning && b.isRunning, "the traced services survived")
    }
}
