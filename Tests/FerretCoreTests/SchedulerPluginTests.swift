import Foundation
import XCTest

/// The scheduler plugin end to end: the agent, the plugin .so, a live Go
/// program (the demo service) read from outside.
final class SchedulerPluginTests: XCTestCase {
    var children: [Process] = []
    override func tearDown() { for c in children where c.isRunning { c.terminate() } }

    func start(_ exe: String) throws -> Process {
        let p = try TestSupport.startDemo(exe)
        children.append(p)
        return p
    }

    func testGoSchedulerFiguresAndStrippedRefusal() throws {
        let dir = TestSupport.tempDir("sched")
        let stripped = dir + "/ferret-demo-stripped"
        // Debian's Go 1.19 (scripts/setup.sh) has no `go build -C`.
        let go = try TestSupport.run("/bin/bash", ["-c", "cd '\(TestSupport.repoRoot)/examples/demo' && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -ldflags='-s -w' -o '\(stripped)' ."])
        XCTAssertEqual(go.status, 0, go.stderr)
        let plain = try start(try TestSupport.demoBinary())
        let bare = try start(stripped)
        usleep(300_000)
        TestSupport.manifest(in: dir + "/plugins.d", name: "scheduler", library: TestSupport.productsDir + "/libferret_scheduler.so")
        let config = """
        agent: { interval: 200ms, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: demo
            match: { runtime: go, comm: "ferret-demo*" }
            collectors: { scheduler: {} }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? -1 }
        func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }

        let g = try agent.waitFor("go.goroutine.count of the plain build") { $0.name == "go.goroutine.count" && pid($0) == plain.processIdentifier }
        XCTAssertGreaterThanOrEqual(value(g), 4, "an idle net/http server has a handful of goroutines")
        XCTAssertLessThan(value(g), 100)
        XCTAssertEqual(g.resource["process.runtime.name"] as? String, "go")
        XCTAssertEqual(g.resource["go.linkage"] as? String, "dynamic", "net/http with cgo links libc")
        XCTAssertTrue((g.resource["process.runtime.version"] as? String)?.hasPrefix("go1.") == true)
        let procs = try agent.waitFor("go.sched.procs") { $0.name == "go.sched.procs" && pid($0) == plain.processIdentifier }
        let cpus = try TestSupport.run("/usr/bin/nproc", []).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(value(procs), Double(cpus), "GOMAXPROCS defaults to the usable CPUs")
        let threads = try agent.waitFor("go.sched.threads") { $0.name == "go.sched.threads" && pid($0) == plain.processIdentifier }
        let osThreads = try agent.waitFor("process.thread.count") { $0.name == "process.thread.count" && pid($0) == plain.processIdentifier }
        XCTAssertGreaterThanOrEqual(value(threads), value(osThreads) - 1)
        XCTAssertLessThanOrEqual(value(threads), value(osThreads) + 1, "Ms = OS threads, plus cgo's idle extra M")
        for name in ["go.sched.threads.idle", "go.sched.threads.spinning", "go.sched.procs.idle", "go.sched.runqueue.global", "go.cgo.calls",
                     "process.cpu.time", "process.context_switches", "process.run_delay"] {
            _ = try agent.waitFor(name) { $0.name == name && pid($0) == plain.processIdentifier && value($0) >= 0 }
        }

        // Stripped: no Go figures, one event saying why, OS figures still there.
        let ev = try agent.waitFor("go.runtime.unavailable for the stripped build") { $0.name == "go.runtime.unavailable" && pid($0) == bare.processIdentifier }
        XCTAssertTrue((ev["body"] as? String)?.contains("stripped") == true, "\(ev)")
        _ = try agent.waitFor("OS figures of the stripped build") { $0.name == "process.cpu.time" && pid($0) == bare.processIdentifier }
        XCTAssertFalse(agent.lines().contains { $0.signal == "metric" && $0.name.hasPrefix("go.") && pid($0) == bare.processIdentifier }, "never a guessed number")
        XCTAssertEqual(agent.stop(), 0)
    }
}
