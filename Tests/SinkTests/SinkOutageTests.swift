import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The delivery core under a real outage: the agent writes to a real influxd
/// under steady load, influxd is stopped for 60 s and started again.
final class SinkOutageTests: XCTestCase {
    var children: [Process] = []
    override func tearDown() {
        for c in children where c.isRunning { c.terminate() }
        children = []
    }

    /// Within the buffer budget every point arrives (no duplicates beyond
    /// at-least-once: InfluxDB keeps one point per series and time); past it
    /// the drop counter equals what is missing; RSS stays under budget + 20 MB.
    func testInfluxOutageOf60sLosesNothingWithinBudgetAndCountsDropsPastIt() throws {
        let influx = try InfluxServer()
        let dir = TestSupport.tempDir("outage")
        TestSupport.manifest(in: dir + "/plugins.d", name: "counter", library: try TestSupport.fixture("counter"))
        // Steady load: 40 processes × 10 collections/s × 2 points, plus the agent's own metrics.
        var tokens: [String] = []
        for _ in 0..<40 {
            let (p, token) = try TestSupport.spawnSleeper()
            children.append(p)
            tokens.append(token.replacingOccurrences(of: ".", with: "\\\\."))
        }
        let fullBudget = 32 << 20, smallBudget = 256 << 10
        let config = """
            agent:
              interval: 100ms
              self_metrics_interval: 500ms
              rescan: 2s
            plugins:
              paths: [plugins.d]
            rules:
              - name: load
                match: { comm: sleep, cmdline: "^/bin/sleep (\(tokens.joined(separator: "|")))$" }
                collectors: { counter: {} }
            pipeline:
              sinks:
                - type: jsonl
                  path: \(dir)/out.jsonl
                - type: influxdb
                  name: full
                  url: \(influx.url)
                  database: full
                  signals: [metric]
                  buffer_bytes: \(fullBudget)
                  retry_max: 2s
                - type: influxdb
                  name: small
                  url: \(influx.url)
                  database: small
                  signals: [metric]
                  buffer_bytes: \(smallBudget)
                  batch_bytes: 65536
                  retry_max: 2s
            """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        Wait.until("1000 points in 'small'", timeout: 30, poll: 0.2) { (try? influx.pointCount(db: "small")) ?? 0 >= 1000 }
        XCTAssertGreaterThanOrEqual(try influx.pointCount(db: "small"), 1000, agent.stderr)
        let agentPid = agent.process.processIdentifier
        let rssBefore = Self.rss(agentPid)

        influx.stop()
        let outageStart = Date()
        var rssMax = rssBefore
        while Date().timeIntervalSince(outageStart) < 60 {
            rssMax = max(rssMax, Self.rss(agentPid))
            usleep(500_000)  // sampling the 60 s outage: a measurement window, not a wait
        }
        let during = agent.lines().count
        try influx.start()
        let restarted = agent.lines().count
        XCTAssertGreaterThan(restarted, during / 2, "the load went on during the outage")

        // Both backlogs drain: under one batch buffered, reported after the restart.
        let restartNanos = UInt64(Date().timeIntervalSince1970 * 1e9)
        for sink in ["full", "small"] {
            _ = try agent.waitFor("\(sink) drained", timeout: 60) { l in
                guard l.name == "ferret.sink.delivery.buffered.bytes",
                      (l["time_unix_nano"] as? NSNumber)?.uint64Value ?? 0 > restartNanos,
                      (l["attributes"] as? [String: Any])?["ferret.sink"] as? String == sink else { return false }
                return (l["value"] as? NSNumber)?.intValue ?? .max < 1 << 20
            }
        }
        let lastDropped = agent.lines().last { l in
            l.name == "ferret.sink.delivery.dropped" && (l["attributes"] as? [String: Any])?["ferret.sink"] as? String == "small"
        }.flatMap { ($0["value"] as? NSNumber)?.intValue }
        XCTAssertEqual(agent.stop(), 0)

        // What the agent produced: every metric point the jsonl sink wrote (InfluxDB cannot hold a non-finite value).
        let produced = agent.lines().filter { l in
            l["signal"] as? String == "metric" && (l["value"] is NSNumber || l["count"] != nil)
        }.count
        func totals(_ sink: String) throws -> [String: Int] {
            guard let line = agent.stderr.split(separator: "\n").first(where: { $0.contains("sink '\(sink)' (influxdb) closed:") }) else {
                throw TestSupport.TestError("no closing totals for \(sink):\n\(agent.stderr)")
            }
            var out: [String: Int] = [:]
            for key in ["accepted", "delivered", "dropped", "rejected"] {
                if let r = line.range(of: "\(key) ") {
                    out[key] = Int(line[r.upperBound...].prefix { $0.isNumber })
                }
            }
            return out
        }
        let full = try totals("full"), small = try totals("small")
        let inFull = try influx.pointCount(db: "full"), inSmall = try influx.pointCount(db: "small")
        print("outage: produced \(produced); full \(full), stored \(inFull); small \(small), stored \(inSmall); RSS \(rssBefore >> 20) → max \(rssMax >> 20) MiB")

        XCTAssertGreaterThan(produced, 40 * 2 * 10 * 60, "steady load through the outage")
        XCTAssertEqual(full["accepted"], produced)
        XCTAssertEqual(full["dropped"], 0, "within the budget nothing is dropped")
        XCTAssertEqual(full["rejected"], 0)
        XCTAssertEqual(inFull, produced, "within the budget every point arrives")
        XCTAssertEqual(small["accepted"], produced)
        XCTAssertGreaterThan(small["dropped"] ?? 0, 0, "a 256 KiB budget cannot hold a minute of this load")
        XCTAssertEqual(small["rejected"], 0)
        XCTAssertEqual(inSmall, produced - (small["dropped"] ?? -1), "past the budget, the drop counter equals what is missing")
        XCTAssertEqual(lastDropped, small["dropped"], "the agent's own metric reports the same drops")
        XCTAssertLessThan(rssMax - rssBefore, fullBudget + smallBudget + (20 << 20), "RSS stays under budget + 20 MB")
    }

    static func rss(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) << 10
    }
}
