import FerretTestSupport
import Foundation
import GoTestSupport
@testable import SchedulerPlugin
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

    func testGoSchedulerFiguresOfPlainAndStrippedBuilds() throws {
        let dir = TestSupport.tempDir("sched")
        let stripped = try TestSupport.strippedDemoBinary(in: dir)
        let plain = try start(try TestSupport.demoBinary())
        let bare = try start(stripped)  // start returns once each demo is serving
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
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

        let cpus = try TestSupport.run("/usr/bin/nproc", []).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // The stripped static build (globals from code, checked against the process)
        // reads like the plain one (symbol table).
        for (p, what) in [(plain, "plain"), (bare, "stripped")] {
            let g = try agent.waitFor("go.goroutine.count of the \(what) build") { $0.name == "go.goroutine.count" && pid($0) == p.processIdentifier }
            XCTAssertGreaterThanOrEqual(value(g), 4, "\(what): an idle net/http server has a handful of goroutines")
            XCTAssertLessThan(value(g), 100, what)
            XCTAssertEqual(g.resource["process.runtime.name"] as? String, "go")
            XCTAssertTrue((g.resource["process.runtime.version"] as? String)?.hasPrefix("go1.") == true)
            let procs = try agent.waitFor("go.sched.procs") { $0.name == "go.sched.procs" && pid($0) == p.processIdentifier }
            XCTAssertEqual(value(procs), Double(cpus), "\(what): GOMAXPROCS defaults to the usable CPUs")
            let threads = try agent.waitFor("go.sched.threads") { $0.name == "go.sched.threads" && pid($0) == p.processIdentifier }
            let osThreads = try agent.waitFor("process.thread.count") { $0.name == "process.thread.count" && pid($0) == p.processIdentifier }
            XCTAssertGreaterThanOrEqual(value(threads), value(osThreads) - 1, what)
            XCTAssertLessThanOrEqual(value(threads), value(osThreads) + 1, "\(what): Ms = OS threads, plus cgo's idle extra M")
            for name in ["go.sched.threads.idle", "go.sched.threads.spinning", "go.sched.procs.idle", "go.sched.runqueue.global", "go.cgo.calls",
                         "process.cpu.time", "process.context_switches", "process.run_delay"] {
                _ = try agent.waitFor(name) { $0.name == name && pid($0) == p.processIdentifier && value($0) >= 0 }
            }
        }
        let plainLinkage = agent.lines().first { $0.name == "go.goroutine.count" && pid($0) == plain.processIdentifier }?.resource["go.linkage"] as? String
        XCTAssertEqual(plainLinkage, "dynamic", "net/http with cgo links libc")
        XCTAssertFalse(agent.lines().contains { ($0.name as String).hasPrefix("go.runtime.") }, "no unavailable event")
        XCTAssertEqual(agent.stop(), 0)
    }

    /// A Go version the code-reference table has no row for (the row removed from a
    /// copy of the table, given to the agent through FERRET_GLOBALREFS): the
    /// stripped build gets one go.runtime.unknown_layout event from each collector
    /// and no Go figure, its OS figures stay, and the plain build (symbol table)
    /// is not affected.
    func testUnknownLayoutOfAStrippedBuildIsAnEventNotAGuess() throws {
        try strippedDemoWithTable(event: "go.runtime.unknown_layout", saying: { "unknown layout: no code-reference table for \($0)" }) { rows, _ in
            rows = nil
        }
    }

    /// A table whose sched sources all agree on an address 8 bytes off (their
    /// field offset changed): the locator accepts it, the checks against the
    /// process refuse it. go.runtime.unverified, no Go figure.
    func testGlobalsFailingValidationAreAnEventNotAFigure() throws {
        try strippedDemoWithTable(event: "go.runtime.unverified", saying: { _ in "runtime globals unavailable: " }) { rows, _ in
            rows = rows?.map { r in
                guard r[0] as? String == "runtime.sched", let off = r[4] as? Int else { return r }
                var m = r
                m[4] = off - 8
                return m
            }
        }
    }

    /// Runs the stripped demo (Debian's Go) and the plain one under an agent whose
    /// code-reference table rows for the demo's Go version went through `edit`;
    /// expects `event` for the stripped build only, and no Go figure for it.
    private func strippedDemoWithTable(event: String, saying: (String) -> String,
                                       edit: (inout [[Any]]?, String) -> Void) throws {
        let dir = TestSupport.tempDir("sched-table")
        let stripped = try TestSupport.strippedDemoBinary(in: dir)
        let version = try TestSupport.run("/bin/bash", ["-c", "go env GOVERSION"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        var table = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TestSupport.repoRoot + "/Packages/FerretGo/Sources/GoBinaryFormat/Layouts/globalrefs.json"))) as! [String: Any]
        var versions = table["versions"] as! [String: Any]
        let minor = version.split(separator: ".").prefix(2).joined(separator: ".") + "."
        let keys = versions.keys.filter { $0.hasPrefix(minor) }
        XCTAssertFalse(keys.isEmpty, "the table has a row for \(version)")
        for k in keys {
            var rows = versions[k] as? [[Any]]
            edit(&rows, k)
            versions[k] = rows
        }
        table["versions"] = versions
        try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: dir + "/globalrefs.json"))

        let plain = try start(try TestSupport.demoBinary())
        let bare = try start(stripped)  // start returns once each demo is serving
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "heap")
        let config = """
        agent: { interval: 200ms, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: demo
            match: { runtime: go, comm: "ferret-demo*" }
            collectors: { scheduler: {}, heap: {} }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir, environment: ["FERRET_GLOBALREFS": dir + "/globalrefs.json"])
        defer { agent.stop() }
        func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }
        let ev = try agent.waitFor("\(event) for the stripped build") { $0.name == event && pid($0) == bare.processIdentifier }
        XCTAssertTrue((ev["body"] as? String)?.contains(saying(version)) == true, "\(ev)")
        _ = try agent.waitFor("Go figures of the plain build") { $0.name == "go.goroutine.count" && pid($0) == plain.processIdentifier }
        _ = try agent.waitFor("heap figures of the plain build") { ($0.name as String).hasPrefix("go.memory") && pid($0) == plain.processIdentifier }
        _ = try agent.waitFor("OS figures of the stripped build") { $0.name == "process.cpu.time" && pid($0) == bare.processIdentifier }
        _ = try agent.waitFor("RSS of the stripped build") { ($0.name as String).hasPrefix("process.memory") && pid($0) == bare.processIdentifier }
        usleep(600_000)  // room for a wrong point or a second event to show: a measurement window, not a wait
        let lines = agent.lines()
        XCTAssertFalse(lines.contains { $0.signal == "metric" && ($0.name as String).hasPrefix("go.") && pid($0) == bare.processIdentifier }, "never a guessed number")
        XCTAssertEqual(lines.filter { $0.name == event && pid($0) == bare.processIdentifier }.count, 2, "one event from each collector")
        XCTAssertFalse(lines.contains { ($0.name as String).hasPrefix("go.runtime.") && pid($0) == plain.processIdentifier })
        XCTAssertTrue(bare.isRunning)
        XCTAssertEqual(agent.stop(), 0)
    }

    // MARK: - process.syscalls

    func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? -1 }
    func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }

    /// The demo service calling its own endpoints (an idle Go program can make
    /// no calls at all: sysmon parks, the netpoller blocks), the syscaller
    /// fixture, and an agent watching just these two (other demos may be
    /// running on this machine) with the scheduler collector.
    func syscallsSetup(_ dir: String, scheduler: String = "{}", wrapper: [String] = [])
        throws -> (demo: Process, fixture: TestSupport.Syscaller, agent: TestSupport.AgentProcess) {
        let micros = Int.random(in: 90_000...99_999) // the unique token: the self-load interval
        let demo = Process()
        demo.executableURL = URL(fileURLWithPath: try TestSupport.demoBinary())
        demo.arguments = ["-listen", "127.0.0.1:0", "-selfload-workers", "1", "-selfload-interval", "\(micros)us"]
        demo.standardError = FileHandle.nullDevice
        demo.standardOutput = FileHandle.nullDevice
        try demo.run()
        children.append(demo)
        let token = "\(micros)"
        let fixture = try TestSupport.Syscaller(token: token)
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
        let config = """
        agent: { interval: 200ms, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: demo
            match: { runtime: go, cmdline: "-selfload-interval \(micros)us$" }
            collectors: { scheduler: \(scheduler) }
          - name: fixture
            match: { comm: syscaller, cmdline: "syscaller \(token)$" }
            collectors: { scheduler: \(scheduler) }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir, wrapper: wrapper)
        return (demo, fixture, agent)
    }

    func syscallPoints(_ agent: TestSupport.AgentProcess, _ p: Int32) -> [Double] {
        agent.lines().filter { $0.name == "process.syscalls" && pid($0) == p }.map(value)
    }

    func waitForFDs(_ agent: TestSupport.AgentProcess, _ predicate: (Int) -> Bool, _ what: String) throws {
        if Wait.until(what, timeout: 10, poll: 0.05, { predicate(TestSupport.perfEventFDs(of: agent.process.processIdentifier)) }) { return }
        XCTFail("\(what): the agent holds \(TestSupport.perfEventFDs(of: agent.process.processIdentifier)) perf event fds")
    }

    /// process.syscalls flows for a Go process and grows; on the fixture the
    /// agent's delta equals the calls made (threads started after attach
    /// included, counted once); the events are closed when the processes exit.
    func testSyscallsThroughTheAgent() throws {
        let (demo, fixture, agent) = try syscallsSetup(TestSupport.tempDir("syscalls"))
        defer { agent.stop() }

        let first = try agent.waitFor("process.syscalls of the Go demo") { $0.name == "process.syscalls" && self.pid($0) == demo.processIdentifier }
        XCTAssertEqual(first["kind"] as? String, "counter")
        XCTAssertEqual(first["unit"] as? String, "{syscall}")
        XCTAssertEqual(first.resource["process.runtime.name"] as? String, "go")
        _ = try agent.waitFor("a larger process.syscalls of the Go demo") {
            $0.name == "process.syscalls" && self.pid($0) == demo.processIdentifier && self.value($0) > self.value(first)
        }

        // The fixture is idle (blocked in read) after startup: its count is flat until told to call.
        _ = try agent.waitFor("process.syscalls of the fixture") { $0.name == "process.syscalls" && self.pid($0) == fixture.pid }
        usleep(600_000)  // idle points: a measurement window, not a wait
        let idle = syscallPoints(agent, fixture.pid)
        XCTAssertGreaterThanOrEqual(idle.count, 2)
        let v0 = idle.last ?? 0
        XCTAssertEqual(idle.suffix(2).first, v0, "an idle process makes no calls: \(idle)")
        let n = 50_000.0
        try fixture.send("calls \(Int(n))")
        try fixture.send("thread \(Int(n))") // a thread started after attach
        try fixture.send("nested \(Int(n))") // one whose creator has exited
        _ = try agent.waitFor("the fixture's calls") { $0.name == "process.syscalls" && self.pid($0) == fixture.pid && self.value($0) >= v0 + 3 * n }
        usleep(600_000)  // room for a call counted twice to show: a measurement window, not a wait
        let d = (syscallPoints(agent, fixture.pid).last ?? 0) - v0
        XCTAssertGreaterThanOrEqual(d, 3 * n)
        XCTAssertLessThanOrEqual(d, 3 * n + 300, "each call counted once")
        XCTAssertFalse(agent.lines().contains { $0.name == "process.syscalls.unavailable" }, "root and tracefs: no refusal")

        // One event per thread at attach, closed when the processes exit.
        XCTAssertGreaterThanOrEqual(TestSupport.perfEventFDs(of: agent.process.processIdentifier), 2)
        demo.terminate()
        fixture.process.terminate()
        for p in [demo.processIdentifier, fixture.pid] {
            _ = try agent.waitFor("process.exit of \(p)") { $0.name == "process.exit" && self.pid($0) == p }
        }
        try waitForFDs(agent, { $0 == 0 }, "after both processes exited")
        XCTAssertEqual(agent.stop(), 0)
    }

    func testSyscallsFalseOpensNothing() throws {
        let (demo, fixture, agent) = try syscallsSetup(TestSupport.tempDir("nosyscalls"), scheduler: "{ syscalls: false }")
        defer { agent.stop() }
        for p in [demo.processIdentifier, fixture.pid] {
            _ = try agent.waitFor("process.cpu.time of \(p)") { $0.name == "process.cpu.time" && self.pid($0) == p }
        }
        _ = try agent.waitFor("go.goroutine.count (the other figures flow)") { $0.name == "go.goroutine.count" && self.pid($0) == demo.processIdentifier }
        try fixture.send("calls 1000")
        // Several collections later: still no syscall counts.
        Wait.until("5 collections of the fixture", timeout: 15, poll: 0.1) {
            agent.lines().filter({ $0.name == "process.run_delay" && self.pid($0) == fixture.pid }).count >= 5
        }
        XCTAssertFalse(agent.lines().contains { $0.name.hasPrefix("process.syscalls") }, "syscalls: false")
        XCTAssertEqual(TestSupport.perfEventFDs(of: agent.process.processIdentifier), 0, "no perf events opened")
        XCTAssertEqual(agent.stop(), 0)
    }

    /// A private mount namespace for the agent, so the tests can change what
    /// it sees under /sys/kernel/tracing without touching this machine's.
    func privateMounts(_ script: String, execAs user: [String] = []) throws -> [String] {
        let exec = (["exec"] + user + ["\"$0\" \"$@\""]).joined(separator: " ")
        let wrapper = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script + "\n" + exec]
        let probe = try TestSupport.run(wrapper[0], Array(wrapper.dropFirst()) + ["/bin/true"])
        if probe.status != 0 { throw XCTSkip("cannot set up a private mount namespace here: \(probe.stderr)") }
        return wrapper
    }

    /// A kernel without the tracepoint (a tmpfs with an empty events directory
    /// stands in for tracefs): one warn event per process saying why, no
    /// points, and the other figures keep flowing.
    func testSyscallsUnavailableSaysWhyOnceAndTheRestFlows() throws {
        let wrapper = try privateMounts("set -e; mount -t tmpfs none /sys/kernel/tracing; mkdir /sys/kernel/tracing/events")
        let (demo, fixture, agent) = try syscallsSetup(TestSupport.tempDir("nosyscallstp"), wrapper: wrapper)
        defer { agent.stop() }
        for p in [demo.processIdentifier, fixture.pid] {
            let ev = try agent.waitFor("process.syscalls.unavailable for \(p)") { $0.name == "process.syscalls.unavailable" && self.pid($0) == p }
            XCTAssertEqual(ev["severity"] as? String, "warn")
            let body = ev["body"] as? String ?? ""
            XCTAssertTrue(body.contains("pid \(p) (") && body.contains("no tracepoint raw_syscalls:sys_enter"), body)
            XCTAssertEqual(ev.attributes["reason"] as? String, body.components(separatedBy: "unavailable: ").last)
        }
        _ = try agent.waitFor("go.goroutine.count (the Go figures flow)") { $0.name == "go.goroutine.count" && self.pid($0) == demo.processIdentifier }
        let seen = agent.lines().filter { $0.name == "process.run_delay" && self.pid($0) == fixture.pid }.count
        Wait.until("5 more collections of the fixture", timeout: 15, poll: 0.1) {
            agent.lines().filter({ $0.name == "process.run_delay" && self.pid($0) == fixture.pid }).count >= seen + 5
        }
        let lines = agent.lines()
        XCTAssertGreaterThanOrEqual(lines.filter { $0.name == "process.run_delay" && self.pid($0) == fixture.pid }.count, seen + 5, "the OS figures flow")
        for p in [demo.processIdentifier, fixture.pid] {
            XCTAssertEqual(lines.filter { $0.name == "process.syscalls.unavailable" && self.pid($0) == p }.count, 1, "said once")
        }
        XCTAssertFalse(lines.contains { $0.name == "process.syscalls" }, "never a guessed number")
        XCTAssertEqual(TestSupport.perfEventFDs(of: agent.process.processIdentifier), 0)
        XCTAssertTrue(demo.isRunning && fixture.process.isRunning, "the targets are never stopped")
        XCTAssertEqual(agent.stop(), 0)
    }

    /// No tracefs mounted anywhere, agent is root: it mounts one at
    /// /sys/kernel/tracing (in its private mount namespace here) and counts.
    func testSyscallsMountsTracefsWhenNoneIsMounted() throws {
        let wrapper = try privateMounts("""
            umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null
            [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ] || exit 97
            """)
        let (demo, fixture, agent) = try syscallsSetup(TestSupport.tempDir("mounttracefs"), wrapper: wrapper)
        defer { agent.stop() }
        for p in [demo.processIdentifier, fixture.pid] {
            _ = try agent.waitFor("process.syscalls of \(p)") { $0.name == "process.syscalls" && self.pid($0) == p }
        }
        XCTAssertEqual(agent.stderr.components(separatedBy: "mounted tracefs at /sys/kernel/tracing").count - 1, 1, agent.stderr)
        let v0 = syscallPoints(agent, fixture.pid).last ?? 0
        try fixture.send("calls 10000")
        _ = try agent.waitFor("the fixture's calls") { $0.name == "process.syscalls" && self.pid($0) == fixture.pid && self.value($0) >= v0 + 10_000 }
        XCTAssertFalse(agent.lines().contains { $0.name == "process.syscalls.unavailable" })
        XCTAssertEqual(agent.stop(), 0)
    }

    /// An unprivileged agent (nobody, watching a process of nobody; the
    /// tracepoint id made readable): with kernel.perf_event_paranoid >= 2 the
    /// kernel refuses and the event says so; with <= 1 the calls are counted.
    func testSyscallsUnprivileged() throws {
        let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let canRun = try TestSupport.run(nobody[0], Array(nobody.dropFirst()) + [TestSupport.ferret, "--help"])
        if canRun.status != 0 { throw XCTSkip("nobody cannot run \(TestSupport.ferret) here: \(canRun.stderr)") }
        var mounted = false
        let id = try Tracefs.sysEnterID(mounted: &mounted)
        let paranoid = Int((try String(contentsOfFile: "/proc/sys/kernel/perf_event_paranoid", encoding: .utf8))
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 2
        let wrapper = try privateMounts("""
            set -e; mount -t tmpfs -o mode=755 none /sys/kernel/tracing
            mkdir -p /sys/kernel/tracing/events/raw_syscalls/sys_enter; echo \(id) > /sys/kernel/tracing/events/raw_syscalls/sys_enter/id
            chmod -R a+rX /sys/kernel/tracing
            """, execAs: nobody)
        let dir = TestSupport.tempDir("nobody")
        chmod(dir, 0o777)
        let token = "\(Int.random(in: 100_000...999_999))"
        let fixture = try TestSupport.Syscaller(token: token, wrapper: nobody)
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
        let config = """
        agent: { interval: 200ms, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: fixture
            match: { comm: syscaller, cmdline: "syscaller \(token)$" }
            collectors: { scheduler: {} }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir, wrapper: wrapper)
        defer { agent.stop() }
        _ = try agent.waitFor("process.cpu.time of the fixture") { $0.name == "process.cpu.time" && self.pid($0) == fixture.pid }
        if paranoid >= 2 {
            let ev = try agent.waitFor("process.syscalls.unavailable") { $0.name == "process.syscalls.unavailable" && self.pid($0) == fixture.pid }
            let body = ev["body"] as? String ?? ""
            XCTAssertTrue(body.contains("pid \(fixture.pid)") && body.contains("EACCES (Permission denied)")
                          && body.contains("kernel.perf_event_paranoid is \(paranoid)"), body)
            XCTAssertFalse(agent.lines().contains { $0.name == "process.syscalls" })
        } else {
            let first = try agent.waitFor("process.syscalls of the fixture") { $0.name == "process.syscalls" && self.pid($0) == fixture.pid }
            try fixture.send("calls 10000")
            _ = try agent.waitFor("the fixture's calls") { $0.name == "process.syscalls" && self.pid($0) == fixture.pid && self.value($0) >= self.value(first) + 10_000 }
        }
        XCTAssertEqual(agent.stop(), 0)
    }
}
