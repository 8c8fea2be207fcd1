import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// End to end: the real `ferret` binary, real processes, real plugins (the C
/// example and the C fixtures compiled with plain cc), real netlink events.
final class AgentTests: XCTestCase {
    var children: [Process] = []

    override func tearDown() {
        for c in children where c.isRunning { c.terminate() }
        children.removeAll()
    }

    func sleeper() throws -> (Process, String) {
        let s = try TestSupport.spawnSleeper()
        children.append(s.0)
        return s
    }

    func pluginsDir(_ dir: String, _ plugins: [String: String]) {
        for (name, lib) in plugins { TestSupport.manifest(in: dir + "/plugins.d", name: name, library: lib) }
    }

    func config(_ dir: String, rules: String, queue: Int = 65536, sinkBuffer: Int = 65536, extraSinks: String = "") -> String {
        """
        agent:
          interval: 100ms
          self_metrics_interval: 200ms
          rescan: 2s
          call_timeout: 2s
        plugins:
          paths: [plugins.d]
        rules:
        \(rules)
        pipeline:
          queue_size: \(queue)
          sinks:
            - type: jsonl
              path: \(dir)/out.jsonl
              buffer: \(sinkBuffer)
        \(extraSinks)
        """
    }

    func pid(_ line: [String: Any]) -> Int? { (line.resource["process.pid"] as? NSNumber)?.intValue }

    /// Processes already running and processes started later are both
    /// attached; the C example's signals arrive stamped with the resource.
    func testAttachesRunningAndNewProcessesAndStampsResources() throws {
        let dir = TestSupport.tempDir("attach")
        pluginsDir(dir, ["fdcount": try TestSupport.examplePlugin(), "counter": try TestSupport.fixture("counter")])
        let (early, tokenA) = try sleeper()
        let tokenB = "\(Int.random(in: 100_000...999_999)).4242"
        let rules = """
          - name: sleepers
            match:
              comm: sleep
              cmdline: "^/bin/sleep (\(tokenA.replacingOccurrences(of: ".", with: "\\\\."))|\(tokenB.replacingOccurrences(of: ".", with: "\\\\.")))$"
            group: "naps-{user}"
            collectors:
              fdcount: {}
              counter: {}
        """
        let agent = try TestSupport.AgentProcess(config: config(dir, rules: rules), dir: dir)
        defer { agent.stop() }

        // Already running: attached at startup.
        let fd = try agent.waitFor("fdcount metric for the early process") {
            $0.name == "process.open_file_descriptor.count" && self.pid($0) == Int(early.processIdentifier)
        }
        XCTAssertEqual(fd["kind"] as? String, "gauge")
        XCTAssertEqual(fd["unit"] as? String, "{file_descriptor}")
        XCTAssertGreaterThanOrEqual((fd["value"] as? NSNumber)?.intValue ?? -1, 3)
        let r = fd.resource
        XCTAssertEqual(r["process.executable.name"] as? String, "sleep")
        XCTAssertEqual((r["process.executable.path"] as? String).map { $0.hasSuffix("/sleep") }, true)
        XCTAssertEqual(r["process.command_line"] as? String, "/bin/sleep \(tokenA)")
        XCTAssertEqual(r["process.owner"] as? String, "root")
        XCTAssertEqual(r["ferret.group"] as? String, "naps-root")
        XCTAssertEqual(r["ferret.rule"] as? String, "sleepers")
        XCTAssertEqual(r["host.name"] as? String, ProcessInfo.processInfo.hostName)
        XCTAssertNil(r["process.runtime.name"], "sleep is not a Go program")

        // Started after the agent: seen through the netlink connector.
        let late = Process()
        late.executableURL = URL(fileURLWithPath: "/bin/sleep")
        late.arguments = [tokenB]
        try late.run()
        children.append(late)
        let attached = try agent.waitFor("counter.attached for the late process") {
            $0.name == "counter.attached" && ($0.attributes["target.pid"] as? NSNumber)?.intValue == Int(late.processIdentifier)
        }
        XCTAssertEqual(attached.attributes["target.group"] as? String, "naps-root")
        _ = try agent.waitFor("host lifecycle event process.attach") {
            $0.name == "process.attach" && self.pid($0) == Int(late.processIdentifier)
        }
        _ = try agent.waitFor("a histogram point from the counter fixture") {
            $0.name == "test.latency" && ($0["bucket_counts"] as? [NSNumber])?.map(\.intValue) == [1, 2, 3] && self.pid($0) == Int(late.processIdentifier)
        }
        // The exec-to-attach latency was measured.
        _ = try agent.waitFor("attach latency histogram with a sample") {
            $0.name == "ferret.discovery.attach.latency" && (($0["count"] as? NSNumber)?.intValue ?? 0) >= 1
        }

        // Exit: detached, with a lifecycle event.
        late.terminate()
        let exit = try agent.waitFor("process.exit event") { $0.name == "process.exit" && self.pid($0) == Int(late.processIdentifier) }
        XCTAssertEqual((exit.attributes["process.exit.signal"] as? NSNumber)?.intValue, Int(SIGTERM))

        XCTAssertEqual(agent.stop(), 0, "SIGTERM exits 0: \(agent.stderr)")
    }

    /// A plugin whose create() fails is reported at the config line it
    /// complained about; broken libraries are reported; the rest works.
    func testBrokenPluginsAreReportedAndOthersKeepWorking() throws {
        let dir = TestSupport.tempDir("broken")
        pluginsDir(dir, ["counter": try TestSupport.fixture("counter"), "create_fails": try TestSupport.fixture("create_fails"),
                         "wrong_abi": try TestSupport.fixture("wrong_abi"), "no_entry": try TestSupport.fixture("no_entry")])
        try "junk".write(toFile: dir + "/plugins.d/libjunk.so", atomically: true, encoding: .utf8)
        TestSupport.manifest(in: dir + "/plugins.d", name: "junk", library: "libjunk.so")
        let (p, token) = try sleeper()
        let rules = """
          - name: naps
            match: { cmdline: "\(token.replacingOccurrences(of: ".", with: "\\\\."))" }
            collectors:
              create_fails:
                reason: "testing"
              wrong_abi: {}
              no_entry: {}
              junk: {}
              counter: {}
        """
        let agent = try TestSupport.AgentProcess(config: config(dir, rules: rules), dir: dir)
        defer { agent.stop() }
        _ = try agent.waitFor("counter keeps collecting") { $0.name == "test.collect.count" && self.pid($0) == Int(p.processIdentifier) }
        let err = agent.stderr
        // Line 13 col 9 is the 'reason' key the plugin pointed at with its JSON pointer.
        XCTAssertTrue(err.contains("\(dir)/config.yaml:13:9: plugin 'create_fails' ("), err)
        XCTAssertTrue(err.contains("refused its configuration in rule 'naps': create_fails: refusing on purpose"), err)
        XCTAssertTrue(err.contains("plugin ABI 99.1 is incompatible with host ABI 1.1"), err)
        XCTAssertTrue(err.contains("libno_entry.so: no entry symbol 'ferret_plugin_entry'"), err)
        XCTAssertTrue(err.contains("libjunk.so: cannot load library:"), err)
        XCTAssertEqual(agent.stop(), 0)
    }

    /// Queue overflow is dropped, counted and visible in the agent's own metrics.
    func testQueueOverflowShowsInSelfMetrics() throws {
        // Both modes: in a helper, the plugin learns of the queue's drops through
        // its ring filling up while the reader waits for room (docs/isolation.md).
        for isolation in ["in_process", "process"] {
            let dir = TestSupport.tempDir("flood-\(isolation)")
            pluginsDir(dir, ["flood": try TestSupport.fixture("flood")])
            let (_, token) = try sleeper()
            let rules = """
              - name: flood
                match: { cmdline: "\(token.replacingOccurrences(of: ".", with: "\\\\."))" }
                collectors:
                  flood: { points_per_batch: 1000, batches: 300, isolation: \(isolation) }
            """
            // The jsonl sink's own buffer holds every point the queue can accept, so the
            // only drops are the queue's (a full sink buffer would drop flood.done too:
            // the plugin learns of the queue's drops, not of a sink's).
            let agent = try TestSupport.AgentProcess(config: config(dir, rules: rules, queue: 2000, sinkBuffer: 400_000), dir: dir)
            defer { agent.stop() }
            let done = try agent.waitFor("flood.done (\(isolation))", timeout: 60) { $0.name == "flood.done" }
            let droppedByPlugin = (done.attributes["dropped"] as? NSNumber)?.intValue ?? 0
            XCTAssertGreaterThan(droppedByPlugin, 0, "\(isolation): a 2000-signal queue must overflow under 300k points")
            if isolation == "in_process" {
                let m = try agent.waitFor("ferret.pipeline.points.dropped > 0") {
                    $0.name == "ferret.pipeline.points.dropped" && (($0["value"] as? NSNumber)?.intValue ?? 0) > 0
                }
                XCTAssertEqual(m.resource["service.name"] as? String, "ferret")
            }
            // In a helper the ring's reader waits for room in the queue, so the
            // drops happen in the helper (its ring is full) and are the plugin's.
            _ = try agent.waitFor("per-plugin drop counter") {
                $0.name == "ferret.plugin.emit.dropped" && (($0["value"] as? NSNumber)?.intValue ?? 0) > 0 && $0.attributes["ferret.plugin"] as? String == "flood"
            }
            XCTAssertEqual(agent.stop(), 0, isolation)
        }
    }

    /// In the agent (isolation: in_process), a call past its timeout is reported
    /// and the instance marked unhealthy; collects that would overlap are skipped
    /// and counted. (In a helper, the helper is killed and restarted instead:
    /// IsolationTests.testHangIsKilledAndRestarted.)
    func testSlowCollectTimesOutAndSkips() throws {
        let dir = TestSupport.tempDir("slowcollect")
        pluginsDir(dir, ["counter": try TestSupport.fixture("counter")])
        let (_, token) = try sleeper()
        let rules = """
          - name: slow
            match: { cmdline: "\(token.replacingOccurrences(of: ".", with: "\\\\."))" }
            collectors:
              counter: { sleep_ms: 1500, timeout: 300ms, isolation: in_process }
        """
        let agent = try TestSupport.AgentProcess(config: config(dir, rules: rules), dir: dir)
        defer { agent.stop() }
        _ = try agent.waitFor("timeout event") { $0.name == "ferret.plugin.timeout" }
        _ = try agent.waitFor("unhealthy gauge") { $0.name == "ferret.plugin.healthy" && ($0["value"] as? NSNumber)?.intValue == 0 }
        _ = try agent.waitFor("skipped collects") { $0.name == "ferret.plugin.collect.skipped" && (($0["value"] as? NSNumber)?.intValue ?? 0) > 0 }
        XCTAssertTrue(agent.stderr.contains("'collect' has run longer than its 300ms timeout; instance marked unhealthy"), agent.stderr)
        XCTAssertEqual(agent.stop(), 0)
    }

    /// SIGHUP: an invalid config keeps the old one; a valid one applies its rules.
    func testSighupReload() throws {
        let dir = TestSupport.tempDir("reload")
        pluginsDir(dir, ["counter": try TestSupport.fixture("counter")])
        let (a, tokenA) = try sleeper()
        let (b, tokenB) = try sleeper()
        func rules(_ token: String) -> String {
            """
              - name: r
                match: { cmdline: "\(token.replacingOccurrences(of: ".", with: "\\\\."))" }
                collectors:
                  counter: {}
            """
        }
        let agent = try TestSupport.AgentProcess(config: config(dir, rules: rules(tokenA)), dir: dir)
        defer { agent.stop() }
        _ = try agent.waitFor("A attached") { $0.name == "counter.attached" && ($0.attributes["target.pid"] as? NSNumber)?.intValue == Int(a.processIdentifier) }

        // Invalid: reported with its position; the old rules keep working.
        let valid = config(dir, rules: rules(tokenB))
        try (valid + "\nbogus_key: 1\n").write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let bogusLine = valid.split(separator: "\n", omittingEmptySubsequences: false).count + 1
        agent.signal(SIGHUP)
        try agent.waitForStderr("reload: the new configuration is invalid; keeping the old one")
        XCTAssertTrue(agent.stderr.contains("config.yaml:\(bogusLine):1: unknown key 'bogus_key' at the top level"), agent.stderr)
        let before = agent.lines().count
        Wait.until("A collected", timeout: 0.5) {
            agent.lines()[before...].contains { $0.name == "test.collect.count" && self.pid($0) == Int(a.processIdentifier) }
        }
        XCTAssertTrue(agent.lines()[before...].contains { $0.name == "test.collect.count" && self.pid($0) == Int(a.processIdentifier) },
                      "A is still collected under the old config")

        // Valid: the new rule applies without a restart.
        try config(dir, rules: rules(tokenB)).write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        _ = try agent.waitFor("B attached after reload") { $0.name == "counter.attached" && ($0.attributes["target.pid"] as? NSNumber)?.intValue == Int(b.processIdentifier) }
        // A's detach (the reload re-matched it before attaching B) has reached the sink:
        // every collect of A came before it.
        Wait.until("A detached", timeout: 5) {
            agent.lines().contains { $0.name == "counter.detached" && self.pid($0) == Int(a.processIdentifier) }
        }
        let after = agent.lines().count
        usleep(600_000)  // a measurement window, not a wait
        XCTAssertFalse(agent.lines()[after...].contains { $0.name == "test.collect.count" && self.pid($0) == Int(a.processIdentifier) },
                       "A is no longer matched")

        // The same process re-attached under a changed group carries the new group.
        let alternatives = [tokenA, tokenB].map { $0.replacingOccurrences(of: ".", with: "\\\\.") }.joined(separator: "|")
        let both = "  - name: r\n    match: { cmdline: \"(\(alternatives))\" }\n    group: renamed\n    collectors:\n      counter: {}"
        try config(dir, rules: both).write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        for p in [a, b] {
            _ = try agent.waitFor("pid \(p.processIdentifier) collected in group 'renamed'") {
                $0.name == "test.collect.count" && self.pid($0) == Int(p.processIdentifier) && $0.resource["ferret.group"] as? String == "renamed"
            }
        }
        XCTAssertEqual(agent.stop(), 0)
    }

    func testValidateCommand() throws {
        let dir = TestSupport.tempDir("validate")
        pluginsDir(dir, ["counter": try TestSupport.fixture("counter")])
        try config(dir, rules: "  - name: ok\n    collectors: { counter: {} }").write(toFile: dir + "/good.yaml", atomically: true, encoding: .utf8)
        let good = try TestSupport.run(TestSupport.ferret, ["validate", "--config", dir + "/good.yaml"])
        XCTAssertEqual(good.status, 0, good.stderr)
        XCTAssertTrue(good.stdout.contains("valid (1 rule(s), 1 collector(s), 1 sink(s))"), good.stdout)

        try config(dir, rules: "  - name: bad\n    collectors: { countr: {} }\n    match: { cmdline: \"(\" }").write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try TestSupport.run(TestSupport.ferret, ["validate", "--config", dir + "/bad.yaml"])
        XCTAssertEqual(bad.status, 1)
        let lines = bad.stderr.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, bad.stderr)
        XCTAssertTrue(lines.contains { $0.hasPrefix("\(dir)/bad.yaml:11:23: invalid regular expression '(' for 'cmdline' in rule 'bad'") }, bad.stderr)
        XCTAssertTrue(lines.contains { $0.hasPrefix("\(dir)/bad.yaml:10:19: unknown plugin 'countr' in rule 'bad' (did you mean 'counter'?)") }, bad.stderr)
    }

    /// `ferret ps` tells Go programs apart by their build info.
    func testPsDetectsGoPrograms() throws {
        let demo = try TestSupport.startDemo(try TestSupport.demoBinary())
        children.append(demo)
        let (sl, _) = try sleeper()
        func comm(_ p: Process) -> String {
            ((try? String(contentsOfFile: "/proc/\(p.processIdentifier)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
        }
        Wait.until("the demo and sleep exec'd", timeout: 5) { comm(demo) == "ferret-demo" && comm(sl) == "sleep" }
        let dir = TestSupport.tempDir("ps")
        try FileManager.default.createDirectory(atPath: dir + "/plugins.d", withIntermediateDirectories: true)
        try config(dir, rules: "  - name: go\n    match: { runtime: go }\n    group: \"{exe.name}-{go.version}\"").write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let r = try TestSupport.run(TestSupport.ferret, ["ps", "--config", dir + "/config.yaml", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        let go = try XCTUnwrap(rows.first { ($0["pid"] as? NSNumber)?.int32Value == demo.processIdentifier })
        XCTAssertEqual(go["runtime"] as? String, "go")
        XCTAssertTrue((go["go_version"] as? String)?.hasPrefix("go1.") == true)
        XCTAssertEqual(go["rule"] as? String, "go")
        XCTAssertEqual(go["group"] as? String, "ferret-demo-\(go["go_version"] as? String ?? "")")
        let native = try XCTUnwrap(rows.first { ($0["pid"] as? NSNumber)?.int32Value == sl.processIdentifier })
        XCTAssertEqual(native["runtime"] as? String, "native")
        XCTAssertTrue(native["rule"] is NSNull)
    }
}
