import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The webhook sink through the real agent, posting to a real HTTP server
/// (Fixtures/receivers/http_receiver.py) that refuses its first requests.
final class WebhookSinkTests: XCTestCase {
    var children: [Process] = []
    override func tearDown() {
        for c in children where c.isRunning { c.terminate() }
        children = []
    }

    /// Starts the receiver; returns its port and the file it records to.
    func receiver(fail: Int) throws -> (Int, String) {
        let out = TestSupport.tempDir("webhook") + "/requests.jsonl"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/receivers/http_receiver.py",
                       "--out", out, "--fail", String(fail)]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        children.append(p)
        let line = String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
        guard let port = Int(line.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") else {
            throw TestSupport.TestError("receiver did not say its port: \(line)")
        }
        return (port, out)
    }

    func posted(_ file: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            guard let req = try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any],
                  let body = req["body"] as? String else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        }
    }

    /// Process events matching the sink's globs are posted as JSON, one per
    /// request, after the receiver's first refusals; other events are not.
    func testProcessEventsArePostedAfterRetries() throws {
        let (port, file) = try receiver(fail: 2)
        let dir = TestSupport.tempDir("webhook-agent")
        TestSupport.manifest(in: dir + "/plugins.d", name: "counter", library: try TestSupport.fixture("counter"))
        let (sleeper, token) = try TestSupport.spawnSleeper()
        children.append(sleeper)
        let config = """
            agent:
              interval: 200ms
            plugins:
              paths: [plugins.d]
            rules:
              - name: naps
                match: { comm: sleep, cmdline: "^/bin/sleep \(token.replacingOccurrences(of: ".", with: "\\\\."))$" }
                collectors: { counter: {} }
            pipeline:
              sinks:
                - type: jsonl
                  path: \(dir)/out.jsonl
                - type: webhook
                  url: http://127.0.0.1:\(port)/hook
                  headers: { X-Token: secret }
                  events: ["process.*"]
                  retry_initial: 50ms
                  retry_max: 200ms
            """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        _ = try agent.waitFor("counter.attached") { $0.name == "counter.attached" }
        sleeper.terminate()
        sleeper.waitUntilExit()
        _ = try agent.waitFor("process.exit") { $0.name == "process.exit" }
        Wait.until("process.exit posted", timeout: 20, poll: 0.1) { posted(file).contains(where: { $0.name == "process.exit" }) }
        XCTAssertEqual(agent.stop(), 0)

        let events = posted(file)
        let names = events.map(\.name)
        XCTAssertEqual(names.filter { $0 == "process.attach" }.count, 1, "\(names)")
        XCTAssertEqual(names.filter { $0 == "process.exit" }.count, 1, "\(names)")
        XCTAssertFalse(names.contains("counter.attached"), "not selected by the globs")
        XCTAssertTrue(names.allSatisfy { $0.hasPrefix("process.") })
        let exit = try XCTUnwrap(events.first { $0.name == "process.exit" })
        XCTAssertEqual((exit.resource["process.pid"] as? NSNumber)?.int32Value, sleeper.processIdentifier)
        XCTAssertEqual(exit["signal"] as? String, "event")
        XCTAssertNotNil(exit["severity"] as? String)
        let raw = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertTrue(raw.contains("\"x-token\": \"secret\""), "configured headers are sent")
        XCTAssertTrue(raw.contains("\"content-type\": \"application/json\""))
    }
}
