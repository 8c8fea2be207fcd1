import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// Issue #8 on real third-party Go programs as Debian ships them: Prometheus 2.42
/// and InfluxDB 1.6, both stripped Go 1.19 builds (dynamically linked, cgo).
/// The agent reads their goroutines, threads and heap from outside; each
/// program says the same about itself on its own endpoint (Prometheus'
/// /metrics, influxd's /debug/vars expvar JSON).
final class ThirdPartyGoProgramsTests: XCTestCase {
    func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? -1 }
    func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }

    /// Prometheus' own figures from /metrics.
    static func prometheusSays(port: Int) throws -> [String: Double] {
        let r = try HTTP.get(port: port, path: "/metrics", timeout: 5)
        var out: [String: Double] = [:]
        for line in String(decoding: r.body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("go_") {
            let f = line.split(separator: " ")
            if f.count == 2, let v = Double(f[1]) { out[String(f[0])] = v }
        }
        return out
    }

    /// influxd's own figures from /debug/vars: runtime.MemStats and the
    /// goroutine count of its "runtime" statistics.
    static func influxSays(_ influx: InfluxServer) throws -> [String: Double] {
        guard case .success(let a) = influx.get("/debug/vars"), a.status == 200,
              let obj = try JSONSerialization.jsonObject(with: Data(a.body.utf8)) as? [String: Any] else {
            throw TestSupport.TestError("influxd /debug/vars did not answer")
        }
        var out: [String: Double] = [:]
        for (k, v) in obj["memstats"] as? [String: Any] ?? [:] { if let n = v as? NSNumber { out["memstats." + k] = n.doubleValue } }
        if let rt = obj["runtime"] as? [String: Any], let values = rt["values"] as? [String: Any] {
            for (k, v) in values { if let n = v as? NSNumber { out["runtime." + k] = n.doubleValue } }
        }
        return out
    }

    func testDebianPrometheusAndInfluxdAgreeWithTheirOwnMetrics() throws {
        let dir = TestSupport.tempDir("thirdparty")
        let prom = try PrometheusServerProcess(dir: dir + "/prometheus", target: "127.0.0.1:9")
        defer { prom.stop() }
        let influx = try InfluxServer()
        defer { influx.stop() }
        let promPid = prom.process.processIdentifier
        let influxPid = try XCTUnwrap(influx.process?.processIdentifier)
        for exe in ["/usr/bin/prometheus", "/usr/bin/influxd"] {
            let r = try TestSupport.run(TestSupport.ferret, ["inspect", "--json", exe])
            let j = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
            XCTAssertEqual(j["stripped"] as? Bool, true, "\(exe) as Debian ships it")
            XCTAssertEqual(j["has_dwarf"] as? Bool, false, exe)
            XCTAssertTrue((j["go_version"] as? String)?.hasPrefix("go1.19") == true, "\(exe): \(j["go_version"] ?? "")")
        }

        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "scheduler")
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "heap")
        let config = """
        agent: { interval: 250ms, self_metrics_interval: 10s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: prometheus
            match: { pid: \(promPid) }
            collectors: { scheduler: { syscalls: false }, heap: { pss: false } }
          - name: influxd
            match: { pid: \(influxPid) }
            collectors: { scheduler: { syscalls: false }, heap: { pss: false } }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        for p in [promPid, influxPid] {
            _ = try agent.waitFor("go.goroutine.count of pid \(p)") { $0.name == "go.goroutine.count" && pid($0) == p }
            _ = try agent.waitFor("go.memory.heap.used of pid \(p)") { $0.name == "go.memory.heap.used" && pid($0) == p }
        }
        XCTAssertFalse(agent.lines().contains { ($0.name as String).hasPrefix("go.runtime.") }, "no unavailable event: \(agent.stderr)")

        /// The agent's newest value of `metric` for `p`, taken after `after`.
        func newest(_ metric: String, _ p: Int32, after: Int) throws -> Double {
            let found = try? Wait.value("\(metric) of \(p)", timeout: 10, poll: 0.05) { () -> Double? in
                let lines = agent.lines()
                guard lines.count > after, let l = lines[after...].last(where: { $0.name == metric && pid($0) == p }) else { return nil }
                return value(l)
            }
            guard let found else { throw TestSupport.TestError("no \(metric) for \(p)") }
            return found
        }
        /// The program's figure before and after the agent's reading: ours within
        /// [min − slack, max + slack]; a few tries, as both sides move.
        func agree(_ what: String, _ p: Int32, metric: String, slack: (Double) -> Double, says: () throws -> Double) throws -> String {
            var last = ""
            for _ in 0..<8 {
                let before = try says()
                let mark = agent.lines().count
                let ours = try newest(metric, p, after: mark)
                let after = try says()
                let lo = min(before, after), hi = max(before, after)
                last = "\(what): program \(Int(before))…\(Int(after)), ferret \(Int(ours))"
                if ours >= lo - slack(hi), ours <= hi + slack(hi) { return last }
            }
            XCTFail("disagree: \(last)")
            return last
        }
        var report: [String] = []
        // Goroutines: Go's goroutine profile ("goroutine profile: total N"), which
        // both programs serve on /debug/pprof, counts the 2 goroutines serving the
        // request itself (the connection's and its background reader); their own
        // metrics (go_goroutines, NumGoroutine) are taken inside a request too, and
        // client_golang adds its gather workers.
        func pprofGoroutines(_ get: () throws -> String) throws -> Double {
            let text = try get()
            guard let line = text.split(separator: "\n").first, line.hasPrefix("goroutine profile: total "),
                  let n = Double(line.dropFirst("goroutine profile: total ".count)) else {
                throw TestSupport.TestError("no goroutine profile: \(text.prefix(200))")
            }
            return n - 2
        }
        report.append(try agree("prometheus goroutines (pprof total − 2)", promPid, metric: "go.goroutine.count", slack: { _ in 1 }) {
            try pprofGoroutines { String(decoding: try HTTP.get(port: prom.port, path: "/debug/pprof/goroutine?debug=1", timeout: 5).body, as: UTF8.self) }
        })
        // go_threads is runtime.ThreadCreateProfile's count: every M in allm.
        report.append(try agree("prometheus threads", promPid, metric: "go.sched.threads", slack: { _ in 0 }) {
            try Self.prometheusSays(port: prom.port)["go_threads"] ?? -1000
        })
        report.append(try agree("prometheus heap in use", promPid, metric: "go.memory.heap.used", slack: { $0 * 0.05 }) {
            try Self.prometheusSays(port: prom.port)["go_memstats_heap_inuse_bytes"] ?? -1
        })
        // Committed heap: HeapSys less what was returned to the OS (HeapReleased).
        report.append(try agree("prometheus heap committed", promPid, metric: "go.memory.heap.committed", slack: { $0 * 0.05 }) {
            let m = try Self.prometheusSays(port: prom.port)
            return (m["go_memstats_heap_sys_bytes"] ?? -1) - (m["go_memstats_heap_released_bytes"] ?? 0)
        })
        report.append(try agree("prometheus stack in use", promPid, metric: "go.memory.stack.used", slack: { $0 * 0.05 }) {
            try Self.prometheusSays(port: prom.port)["go_memstats_stack_inuse_bytes"] ?? -1
        })
        report.append(try agree("prometheus GCs", promPid, metric: "go.gc.count", slack: { _ in 1 }) {
            try Self.prometheusSays(port: prom.port)["go_gc_duration_seconds_count"] ?? -1
        })
        // influxd: expvar's memstats (runtime.ReadMemStats).
        report.append(try agree("influxd goroutines (pprof total − 2)", influxPid, metric: "go.goroutine.count", slack: { _ in 1 }) {
            try pprofGoroutines {
                guard case .success(let a) = influx.get("/debug/pprof/goroutine?debug=1"), a.status == 200 else { throw TestSupport.TestError("influxd /debug/pprof") }
                return a.body
            }
        })
        report.append(try agree("influxd heap in use", influxPid, metric: "go.memory.heap.used", slack: { $0 * 0.05 }) {
            try Self.influxSays(influx)["memstats.HeapInuse"] ?? -1
        })
        report.append(try agree("influxd heap committed", influxPid, metric: "go.memory.heap.committed", slack: { $0 * 0.05 }) {
            let m = try Self.influxSays(influx)
            return (m["memstats.HeapSys"] ?? -1) - (m["memstats.HeapReleased"] ?? 0)
        })
        report.append(try agree("influxd stack in use", influxPid, metric: "go.memory.stack.used", slack: { $0 * 0.05 }) {
            try Self.influxSays(influx)["memstats.StackInuse"] ?? -1
        })
        report.append(try agree("influxd GCs", influxPid, metric: "go.gc.count", slack: { _ in 1 }) {
            try Self.influxSays(influx)["memstats.NumGC"] ?? -1
        })
        // Threads against the OS for both (the Ms that run on a thread).
        for p in [promPid, influxPid] {
            let ms = try newest("go.sched.threads", p, after: 0)
            let os = try newest("process.thread.count", p, after: 0)
            XCTAssertLessThanOrEqual(abs(ms - os), 2, "pid \(p): Ms \(ms), OS threads \(os)")
        }
        print("ThirdPartyGoProgramsTests:\n" + report.joined(separator: "\n"))
        XCTAssertTrue(prom.process.isRunning && influx.process?.isRunning == true, "only read")
        XCTAssertEqual(agent.stop(), 0)
    }
}
