import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// Issue #18: a plugin that crashes, aborts, exits, hangs, allocates without
/// bound or emits garbage, run in a helper process by the real agent. In every
/// case the agent runs on and exits 0, the rule's other collector (the C
/// example, fdcount) keeps its interval, the events say what happened, the
/// agent's own metrics count it, and nothing emitted before the fault is lost.
final class IsolationTests: XCTestCase {
    var children: [Process] = []
    let interval = 0.2

    override func tearDown() {
        for c in children where c.isRunning { c.terminate() }
        children.removeAll()
    }

    struct Run {
        let agent: TestSupport.AgentProcess
        let dir: String
        let target: Int32
    }

    /// An agent with one rule: `faulty` (settings `faulty`) and fdcount, both on a sleeper.
    func start(_ name: String, faulty: String, faultyManifest: String = "", hostKeys: String = "") throws -> Run {
        let dir = TestSupport.tempDir(name)
        TestSupport.manifest(in: dir + "/plugins.d", name: "faulty", library: try TestSupport.fixture("faulty"), extra: faultyManifest)
        TestSupport.manifest(in: dir + "/plugins.d", name: "fdcount", library: try TestSupport.examplePlugin())
        let (sleeper, token) = try TestSupport.spawnSleeper()
        children.append(sleeper)
        let config = """
        agent:
          interval: 200ms
          self_metrics_interval: 300ms
          call_timeout: 1s
        plugins:
          paths: [plugins.d]
        rules:
          - name: r
            match: { cmdline: "\(token.replacingOccurrences(of: ".", with: "\\\\."))" }
            collectors:
              faulty: { \(faulty)\(hostKeys.isEmpty ? "" : ", \(hostKeys)") }
              fdcount: {}
        pipeline:
          sinks:
            - type: jsonl
              path: \(dir)/out.jsonl
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        return Run(agent: agent, dir: dir, target: sleeper.processIdentifier)
    }

    func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? 0 }
    func time(_ l: [String: Any]) -> Double { ((l["time_unix_nano"] as? NSNumber)?.doubleValue ?? 0) / 1e9 }

    /// Everything the acceptance asks of every fault, checked on a finished run.
    func checkAftermath(_ run: Run, crashes minimum: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let agent = run.agent
        _ = try agent.waitFor("restarts counted") {
            $0.name == "ferret.plugin.restarts" && self.value($0) >= 1 && $0.attributes["ferret.plugin"] as? String == "faulty"
        }
        // Let the fdcount series run on after the restart, then stop the agent.
        Thread.sleep(forTimeInterval: 1.0)
        XCTAssertEqual(agent.stop(), 0, "the agent exits 0; stderr:\n\(agent.stderr)", file: file, line: line)
        let lines = agent.lines()
        // The other collector of the rule kept its interval: no gap over two intervals.
        let fd = lines.filter { $0.name == "process.open_file_descriptor.count" && ($0.resource["process.pid"] as? NSNumber)?.int32Value == run.target }
            .map(time).sorted()
        XCTAssertGreaterThan(fd.count, 10, "fdcount kept emitting", file: file, line: line)
        let gaps = zip(fd, fd.dropFirst()).map { $1 - $0 }
        XCTAssertLessThanOrEqual(gaps.max() ?? 0, 2 * interval + 0.05, "largest gap in fdcount's series: \(gaps.max() ?? 0) s", file: file, line: line)
        // The crashes are counted in the agent's own metrics.
        let counted = lines.filter { $0.name == "ferret.plugin.crashes" && $0.attributes["ferret.plugin"] as? String == "faulty" }.map(value).max() ?? 0
        XCTAssertGreaterThanOrEqual(Int(counted), minimum, "ferret.plugin.crashes", file: file, line: line)
    }

    func crashEvents(_ run: Run) -> [[String: Any]] { run.agent.lines().filter { $0.name == "ferret.plugin.crashed" } }

    /// The last faulty.seq point before each helper's fault arrived: the value
    /// `after` is the one emitted just before the fault, in the same call.
    func checkNothingLost(_ run: Run, after: Int, crashes: Int, file: StaticString = #filePath, line: UInt = #line) {
        let seq = run.agent.lines().filter { $0.name == "faulty.seq" }.map { Int(value($0)) }
        XCTAssertGreaterThanOrEqual(seq.filter { $0 == after }.count, crashes, "the point emitted right before each fault was delivered: \(seq)", file: file, line: line)
    }

    func testSegfaultInCollect() throws {
        let run = try start("segv", faulty: "fault: segv, after: 3")
        let crash = try run.agent.waitFor("crash event") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.signal"] as? String, "SIGSEGV")
        XCTAssertEqual(crash.attributes["crash.call"] as? String, "collect")
        XCTAssertEqual(crash.attributes["crash.reason"] as? String, "signal")
        let bt = crash.attributes["crash.backtrace"] as? String ?? ""
        XCTAssertTrue(bt.contains("#0 fault_now (libfaulty.so+0x"), "symbolized crashing frame:\n\(bt)")
        XCTAssertTrue(bt.contains("f_collect (libfaulty.so+0x"), "its caller:\n\(bt)")
        XCTAssertTrue((crash["body"] as? String ?? "").contains("restarting in 1s"))
        _ = try run.agent.waitFor("restarted event") { $0.name == "ferret.plugin.restarted" }
        try checkAftermath(run, crashes: 1)
        checkNothingLost(run, after: 3, crashes: crashEvents(run).count)
    }

    func testAbortInCollect() throws {
        let run = try start("abort", faulty: "fault: abort, after: 2")
        let crash = try run.agent.waitFor("crash event") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.signal"] as? String, "SIGABRT")
        XCTAssertTrue((crash.attributes["crash.backtrace"] as? String ?? "").contains("fault_now"), "\(crash)")
        try checkAftermath(run, crashes: 1)
        checkNothingLost(run, after: 2, crashes: crashEvents(run).count)
    }

    func testExitInCollect() throws {
        let run = try start("exit", faulty: "fault: exit, after: 2")
        let crash = try run.agent.waitFor("crash event") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.reason"] as? String, "exit")
        XCTAssertEqual((crash.attributes["crash.exit_status"] as? NSNumber)?.intValue, 3)
        XCTAssertEqual(crash.attributes["crash.call"] as? String, "collect")
        XCTAssertTrue((crash.attributes["crash.backtrace"] as? String ?? "").contains("f_collect"), "exit() is reported with its caller: \(crash)")
        try checkAftermath(run, crashes: 1)
        checkNothingLost(run, after: 2, crashes: crashEvents(run).count)
    }

    func testHangIsKilledAndRestarted() throws {
        let run = try start("hang", faulty: "fault: hang, after: 2", hostKeys: "timeout: 400ms")
        let crash = try run.agent.waitFor("hang event") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.reason"] as? String, "hang")
        XCTAssertEqual(crash.attributes["crash.call"] as? String, "collect")
        XCTAssertTrue((crash["body"] as? String ?? "").contains("no answer within the call timeout"), "\(crash)")
        try checkAftermath(run, crashes: 1)
        checkNothingLost(run, after: 2, crashes: crashEvents(run).count)
    }

    func testRunawayMemoryHitsTheLimit() throws {
        let run = try start("alloc", faulty: "fault: alloc, after: 2", hostKeys: "memory_limit: 48MiB")
        let crash = try run.agent.waitFor("memory event", timeout: 30) { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.reason"] as? String, "memory_limit", "\(crash)")
        XCTAssertEqual((crash.attributes["ferret.plugin.memory_limit"] as? NSNumber)?.intValue, 48 << 20)
        XCTAssertTrue((crash["body"] as? String ?? "").contains("memory_limit 48 MiB"), "the event names the limit: \(crash)")
        try checkAftermath(run, crashes: 1)
    }

    func testCrashInCreateLoopsIntoQuarantineAndReloadRetries() throws {
        let run = try start("create", faulty: "fault: segv, where: create", hostKeys: "max_crashes: 2")
        let first = try run.agent.waitFor("crash in create") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(first.attributes["crash.call"] as? String, "create")
        _ = try run.agent.waitFor("quarantine event") { $0.name == "ferret.plugin.quarantined" }
        _ = try run.agent.waitFor("quarantined gauge") {
            $0.name == "ferret.plugin.quarantined" && $0.signal == "metric" && self.value($0) == 1
        }
        let before = crashEvents(run).count
        XCTAssertEqual(before, 2, "no restart after quarantine")
        Thread.sleep(forTimeInterval: 1.5)
        XCTAssertEqual(crashEvents(run).count, 2, "quarantined: no more restarts")
        run.agent.signal(SIGHUP)
        _ = try run.agent.waitFor("a crash after the reload: it got another chance") {
            $0.name == "ferret.plugin.crashed" && ($0.attributes["crash.count"] as? NSNumber)?.intValue == 1
        }
        Thread.sleep(forTimeInterval: 0.5)
        XCTAssertEqual(run.agent.stop(), 0)
    }

    func testCrashInAttachSparesTheOtherTargets() throws {
        let run = try start("attach", faulty: "fault: segv, where: attach")
        let crash = try run.agent.waitFor("crash in attach") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.call"] as? String, "attach")
        XCTAssertEqual((crash.attributes["crash.target_pid"] as? NSNumber)?.int32Value, run.target)
        let restarted = try run.agent.waitFor("restart") { $0.name == "ferret.plugin.restarted" }
        XCTAssertTrue((restarted["body"] as? String ?? "").contains("not re-attached (their attach crashed it): \(run.target)"), "\(restarted)")
        try checkAftermath(run, crashes: 1)
        XCTAssertEqual(crashEvents(run).count, 1, "the target that crashed attach is not attached again")
        // Still collecting (for no target) after the restart.
        XCTAssertGreaterThan(run.agent.lines().filter { $0.name == "faulty.seq" }.count, 3)
    }

    func testCrashInAPushPluginsOwnThread() throws {
        let run = try start("thread", faulty: "fault: segv, where: thread, after: 4")
        let crash = try run.agent.waitFor("crash in the plugin's thread") { $0.name == "ferret.plugin.crashed" }
        XCTAssertEqual(crash.attributes["crash.call"] as? String, "none")
        XCTAssertEqual(crash.attributes["crash.thread"] as? String, "faulty-pusher")
        XCTAssertTrue((crash.attributes["crash.backtrace"] as? String ?? "").contains("thread_main"), "\(crash)")
        try checkAftermath(run, crashes: 1)
        checkNothingLost(run, after: 4, crashes: crashEvents(run).count)
    }

    /// Garbage records are refused and counted, with a rate-limited log line
    /// naming the plugin and the field, in both modes; the good point arrives.
    func testGarbageRecordsAreRefusedInBothModes() throws {
        for mode in ["process", "in_process"] {
            let run = try start("garbage-\(mode)", faulty: "fault: garbage", hostKeys: "isolation: \(mode)")
            _ = try run.agent.waitFor("good point (\(mode))") { $0.name == "faulty.good" }
            _ = try run.agent.waitFor("refusals counted (\(mode))") {
                $0.name == "ferret.plugin.emit.invalid" && self.value($0) >= 14 && $0.attributes["ferret.plugin"] as? String == "faulty"
            }
            XCTAssertEqual(run.agent.stop(), 0)
            let refusals = run.agent.stderr.split(separator: "\n").filter { $0.contains("plugin instance 'r/faulty': refused") }
            XCTAssertEqual(refusals.count, 1, "rate-limited to one line per 10 s (\(mode)):\n\(run.agent.stderr)")
            XCTAssertTrue(refusals.first?.contains("struct_size 16 is smaller than the ABI 1.0 size 120") == true, "names the field: \(refusals)")
            let names = Set(run.agent.lines().map(\.name))
            for bad in ["faulty.bad_size", "faulty.nan", "faulty.many_attrs", "faulty.kind", "faulty.event"] {
                XCTAssertFalse(names.contains(bad), "\(bad) was refused (\(mode))")
            }
            XCTAssertFalse(names.contains { $0.hasPrefix("faulty.\u{FFFD}") }, "the non-UTF-8 name was refused (\(mode))")
        }
    }

    /// The helper runs with no_new_privs, as the manifest's user, with only the
    /// capabilities it names.
    func testHelperDropsPrivileges() throws {
        let run = try start("privileges", faulty: "fault: none", faultyManifest: "user: nobody\ncapabilities: [cap_sys_ptrace]\n")
        _ = try run.agent.waitFor("faulty collecting") { $0.name == "faulty.seq" }
        let helpers = try TestSupport.run("/usr/bin/pgrep", ["-P", "\(run.agent.process.processIdentifier)", "-f", "libfaulty"]).stdout
            .split(separator: "\n").compactMap { Int32($0) }
        XCTAssertEqual(helpers.count, 1, "one helper for faulty")
        let status = ProcRead.text("/proc/\(helpers.first ?? 0)/status") ?? ""
        func field(_ name: String) -> String {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? ""
        }
        XCTAssertEqual(field("NoNewPrivs"), "1")
        XCTAssertTrue(field("Uid").hasPrefix("65534"), "runs as nobody: \(field("Uid"))")
        XCTAssertEqual(field("CapEff"), String(format: "%016llx", 1 << 19), "only cap_sys_ptrace (bit 19)")
        XCTAssertEqual(field("CapBnd"), String(format: "%016llx", 1 << 19), "nothing else can come back")
        XCTAssertEqual(run.agent.stop(), 0)
    }

    /// `ferret conformance` runs the plugin in a helper: a crash or a hang is a
    /// failed check with the backtrace, and the checker does not die.
    func testConformanceReportsCrashesAndHangs() throws {
        let lib = try TestSupport.fixture("faulty")
        let crash = try TestSupport.run(TestSupport.ferret, ["conformance", lib, "--config", #"{"fault":"segv","after":1}"#])
        XCTAssertEqual(crash.status, 1, crash.stdout + crash.stderr)
        XCTAssertTrue(crash.stdout.contains("FAIL  crash: SIGSEGV at address 0x0 in collect"), crash.stdout)
        XCTAssertTrue(crash.stdout.contains("fault_now (libfaulty.so+0x"), crash.stdout)
        let hang = try TestSupport.run(TestSupport.ferret, ["conformance", lib, "--config", #"{"fault":"hang","after":1}"#])
        XCTAssertEqual(hang.status, 1, hang.stdout + hang.stderr)
        XCTAssertTrue(hang.stdout.contains("FAIL  hang: no answer within the call timeout"), hang.stdout)
        let fine = try TestSupport.run(TestSupport.ferret, ["conformance", try TestSupport.examplePlugin()])
        XCTAssertEqual(fine.status, 0, fine.stdout + fine.stderr)
        XCTAssertTrue(fine.stdout.contains("in a helper process"), fine.stdout)
    }
}
