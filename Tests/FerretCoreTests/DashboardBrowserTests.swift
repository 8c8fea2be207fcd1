import FerretTestSupport
import FerretCore
import Foundation
import GoTestSupport
import Logging
@testable import SinkDashboard
import XCTest

/// The dashboard in a real headless browser (issue #9 acceptance): Debian's
/// chromium, driven through chromedriver by selenium (scripts/setup.sh installs
/// both, selenium into /opt/ferret-py). The checks themselves are in
/// Fixtures/browser/dashboard_check.py; screenshots are kept under
/// $FERRET_ARTIFACTS (default /tmp/ferret-artifacts)/dashboard, never committed.
final class DashboardBrowserTests: XCTestCase {
    static let script = TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/browser/dashboard_check.py"
    static let python = "/opt/ferret-py/bin/python3"
    static var artifacts: String {
        (ProcessInfo.processInfo.environment["FERRET_ARTIFACTS"] ?? "/tmp/ferret-artifacts") + "/dashboard"
    }

    /// Runs the browser script; fails the test with its output unless it passes.
    func runBrowser(_ args: [String], timeout: Double = 300) throws {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver", Self.python] {
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: tool), "\(tool) is missing: run scripts/setup.sh")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.python)
        p.arguments = [Self.script] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        let buf = TestSupport.AgentProcess.Buffer()
        out.fileHandleForReading.readabilityHandler = { h in buf.append(h.availableData) }
        try p.run()
        Wait.until("the browser checks", timeout: timeout, poll: 0.1) { !p.isRunning }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        out.fileHandleForReading.readabilityHandler = nil
        let text = buf.text
        print(text)
        XCTAssertEqual(p.terminationStatus, 0, "browser checks failed:\n\(text)")
    }

    /// The agent monitors the leaking fixture (truthsrv served by net/http,
    /// `/leak` at 10 requests/s, each calling out with a new http.Client:
    /// scheduler + heap + http_tracer + goroutines) and the CPU-burning fixture (burner
    /// `-mode split`, scheduler + heap + cpu_profiler); the browser opens every
    /// page and checks what is on it.
    func testPagesInARealBrowserShowTheLeakTheHotspotAndTheTrace() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for BPF and perf") }
        let toolchains = try GoToolchains.required()
        let newest = toolchains.last!, oldest = toolchains.first!
        let truthBinary = try GoToolchains.build(source: TruthServer.fixtureSource, version: newest.version, flavour: .plain)
        let burnerBinary = try GoToolchains.build(source: CPUProfilerTests.burner, version: oldest.version, flavour: .strippedStatic)
        let leaky = try TruthServer(binary: truthBinary, arguments: ["-nethttp"])
        defer { leaky.stop() }
        // The burner runs in a Kubernetes-style container (issue #16): its process
        // page shows the container and the pod.
        let container = try TestContainer(layout: .containerdKubepods)
        defer { container.stop() }
        let burner = try container.spawn(try container.install(burnerBinary, as: "burner"), ["-mode", "split"], ready: "ready")
        defer { container.kill(burner) }

        let dir = TestSupport.tempDir("dashboard-browser")
        let config = """
        agent: { interval: 1s, rescan: 1s, self_metrics_interval: 60s }
        plugins: { paths: [\(TestSupport.repoRoot)/plugins.d] }
        rules:
          - name: leaky-services
            match: { pid: [\(leaky.pid)] }
            group: truthsrv
            collectors: { scheduler: {}, heap: {}, http_tracer: { metrics_interval: 5s }, goroutines: { census_interval: 2s } }
          - name: cpu-burners
            match: { pid: [\(burner.pid)] }
            group: burner
            collectors: { scheduler: {}, heap: {}, cpu_profiler: { window: 3s } }
        pipeline:
          aggregators:
            - type: goroutine_leak
              window: 20s
          sinks:
            - { type: dashboard, listen: "127.0.0.1:0" }
            - { type: jsonl, path: \(dir)/out.jsonl }
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        try agent.waitForStderr("(dashboard) serving http://127.0.0.1:", timeout: 30)
        let line = agent.stderr.split(separator: "\n").first { $0.contains("(dashboard) serving") }!
        let url = String(line[line.range(of: "http://")!.lowerBound...]).trimmingCharacters(in: .whitespaces)
        _ = try agent.waitFor("go.goroutine.count of the leaking fixture", timeout: 30) {
            $0.name == "go.goroutine.count" && AgentAggregatorTests.pid($0) == leaky.pid
        }
        try agent.waitForStderr("pid \(leaky.pid) (", timeout: 30) // the http_tracer's probes are in
        let load = AgentAggregatorTests.Load(leaky, "/leak?n=1", rate: 10)
        defer { load.stop() }
        _ = try agent.waitFor("go.goroutine.leak", timeout: 90) {
            $0.signal == "event" && $0.name == "go.goroutine.leak" && AgentAggregatorTests.pid($0) == leaky.pid
        }

        try runBrowser([
            "fixtures", "--url", url, "--out", Self.artifacts,
            "--leak-group", "truthsrv", "--leak-pid", "\(leaky.pid)", "--leak-version", newest.version,
            "--burn-group", "burner", "--burn-pid", "\(burner.pid)", "--burn-version", oldest.version,
            "--burn-container", container.containerID, "--burn-runtime", container.layout.runtime ?? "",
            "--burn-pod", container.podUID ?? "",
            "--hot-function", "main.hotA",
        ])
        XCTAssertEqual(kill(burner.pid, 0), 0, "the burner survived")
        XCTAssertEqual(load.errors, [], "the leaking fixture answered every request")
    }

    /// 100 process groups with an hour of history each (14 series at 5 s, fed to the sink the
    /// way the pipeline does): the overview lists them all and it and a
    /// process page render within 3 s; one overview refresh stays under 500 ms.
    func testPagesStayResponsiveWithAHundredGroups() throws {
        let sink = try DashboardSink(name: "dashboard", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { sink.close() }
        let now = UInt64(Date().timeIntervalSince1970) * 1_000_000_000
        let names = ["go.goroutine.count", "go.sched.threads", "process.thread.count", "go.sched.threads.idle", "go.sched.procs.idle",
                     "go.memory.heap.used", "go.memory.heap.committed", "go.memory.heap.idle", "go.memory.heap.released",
                     "go.memory.stack.committed", "go.memory.offheap.committed", "go.gc.count", "go.gc.pause.time",
                     "process.memory.usage"]
        for g in 0..<100 {
            let resource = Resource([
                Attribute("process.pid", .int(Int64(100_000 + g))), Attribute("ferret.group", .string("group-\(g)")),
                Attribute("ferret.rule", .string("go-services")), Attribute("process.runtime.version", .string("go1.27.3")),
                Attribute("process.linkage", .string(g % 2 == 0 ? "static" : "dynamic")),
                Attribute("process.executable.name", .string("svc\(g)")),
            ])
            var batch: [Signal] = []
            for s in stride(from: 3600, through: 0, by: -5) {
                let t = now - UInt64(s) * 1_000_000_000
                for (i, n) in names.enumerated() {
                    let counter = n == "go.gc.count" || n == "go.gc.pause.time"
                    let v = counter ? Double(3600 - s) * 0.5 : Double(100 + i * 10 + (s % 37))
                    batch.append(.metric(MetricPoint(name: n, kind: counter ? .counter : .gauge, unit: "", value: v,
                                                timeUnixNano: t, attributes: [], resource: resource)))
                }
            }
            sink.state.apply(batch)
        }
        XCTAssertEqual(sink.state.processes.count, 100)
        try runBrowser(["load", "--url", "http://127.0.0.1:\(sink.port!)", "--out", Self.artifacts + "/load",
                        "--groups", "100", "--pid", "100042", "--max-seconds", "3"])
    }
}
