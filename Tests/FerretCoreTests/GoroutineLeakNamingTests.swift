import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The seed article's leak, named by the code: foxy, a small reverse proxy that
/// builds a new http.Transport per request (each keeps its idle connection's
/// readLoop and writeLoop goroutines), and the same proxy fixed (one shared
/// Transport), both under the same load, watched by `ferret run` with the
/// scheduler and goroutines collectors and the goroutine_leak aggregator
/// (window 30 s). The leak event must name net/http.(*persistConn).readLoop and
/// writeLoop, created by net/http.(*Transport).dialConn, within one window of
/// the load's start; the fixed proxy must raise nothing over 5 minutes.
final class GoroutineLeakNamingTests: XCTestCase {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static let source = TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/foxy"

    /// A foxy process; `address` is what it printed after "listening on ".
    final class Foxy {
        let process = Process()
        var address = ""
        var pid: Int32 { process.processIdentifier }
        init(_ binary: String, _ args: [String], listens: Bool = true) throws {
            let out = Pipe()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = args
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            guard listens else { return }
            let line = TestContainer.readLine(out.fileHandleForReading.fileDescriptor, timeout: 20)
            guard line.hasPrefix("listening on ") else { throw Failure(description: "foxy \(args): got '\(line)'") }
            address = String(line.dropFirst("listening on ".count))
        }
        func stop() { if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() } }
        deinit { stop() }
    }

    static func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }

    func testLeakNamesReadLoopAndWriteLoopAndTheFixedProxyRaisesNothing() throws {
        guard let newest = try GoToolchains.required().last else { throw Failure(description: "no Go toolchain") }
        let binary = try GoToolchains.build(source: Self.source, version: newest.version, flavour: .plain)
        let upstream = try Foxy(binary, ["upstream"])
        let leaky = try Foxy(binary, ["proxy", "-upstream", upstream.address, "-leak"])
        let fixed = try Foxy(binary, ["proxy", "-upstream", upstream.address])
        defer { [upstream, leaky, fixed].forEach { $0.stop() } }

        let dir = TestSupport.tempDir("foxy")
        for name in ["scheduler", "goroutines"] { TestSupport.shippedManifest(in: dir + "/plugins.d", name: name) }
        let config = """
        agent: { interval: 1s, self_metrics_interval: 60s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: foxy
            match: { pid: [\(leaky.pid), \(fixed.pid)] }
            group: "foxy-{pid}"
            collectors:
              scheduler: {}
              goroutines: { census_interval: 2s }
        pipeline:
          aggregators:
            - type: goroutine_leak
              window: 30s
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        for p in [leaky, fixed] {
            _ = try agent.waitFor("a census of pid \(p.pid)", timeout: 30) { $0.name == "go.goroutine.group.count" && Self.pid($0) == p.pid }
        }
        let start = Date()
        let loads = try [leaky, fixed].map { try Foxy(binary, ["load", "-target", $0.address, "-rps", "20"], listens: false) }
        defer { loads.forEach { $0.stop() } }

        // Named within one window (30 s) of the count's rise, and the census's own
        // first two samples: 60 s at most.
        let leak = try agent.waitFor("go.goroutine.leak naming the code", timeout: 75) {
            $0.signal == "event" && $0.name == "go.goroutine.leak" && Self.pid($0) == leaky.pid
        }
        let after = Date().timeIntervalSince(start)
        let groups = leak.attributes["go.goroutine.leak.groups"] as? String ?? ""
        let body = leak["body"] as? String ?? ""
        for loop in ["readLoop", "writeLoop"] {
            XCTAssertTrue(groups.contains("net/http.(*persistConn).\(loop) created by net/http.(*Transport).dialConn at "), groups)
            XCTAssertTrue(body.contains("net/http.(*persistConn).\(loop)"), body)
        }
        XCTAssertEqual(leak.attributes["go.goroutine.creator"] as? String, "net/http.(*Transport).dialConn")
        XCTAssertLessThanOrEqual(after, 60)
        print("GoroutineLeakNamingTests: leak named \(String(format: "%.1f", after)) s after the load started:\n\(groups)")

        // The fixed proxy under the same load for 5 minutes: nothing.
        let remaining = 300 - Date().timeIntervalSince(start)
        if remaining > 0 { Thread.sleep(forTimeInterval: remaining) }  // a measurement window, not a wait
        let lines = agent.lines()
        let fixedEvents = lines.filter { $0.signal == "event" && $0.name.hasPrefix("go.goroutine.leak") && Self.pid($0) == fixed.pid }
        XCTAssertEqual(fixedEvents.count, 0, "\(fixedEvents.map { $0["body"] ?? "" })")
        // Not vacuous: the fixed proxy was censused all along, and served.
        let t0 = UInt64(start.timeIntervalSince1970 * 1e9)
        let censuses = Set(lines.filter {
            $0.name == "go.goroutine.group.count" && Self.pid($0) == fixed.pid && (($0["time_unix_nano"] as? NSNumber)?.uint64Value ?? 0) >= t0
        }.compactMap { ($0["time_unix_nano"] as? NSNumber)?.uint64Value })
        XCTAssertGreaterThanOrEqual(censuses.count, 140, "a census every 2 s for 5 minutes")
        let readLoops = lines.filter {
            $0.name == "go.goroutine.group.count" && Self.pid($0) == fixed.pid
                && ($0.attributes["go.goroutine.start"] as? String) == "net/http.(*persistConn).readLoop"
        }.compactMap { ($0["value"] as? NSNumber)?.doubleValue }
        XCTAssertFalse(readLoops.isEmpty, "the fixed proxy keeps its pooled connections' readLoop")
        XCTAssertLessThanOrEqual(readLoops.max() ?? 0, 50, "a shared Transport keeps a few connections")
        print("GoroutineLeakNamingTests: fixed proxy: \(censuses.count) censuses, readLoop goroutines \(Int(readLoops.min() ?? 0))…\(Int(readLoops.max() ?? 0)), no event")
        XCTAssertEqual(agent.stop(), 0)
    }
}
