@testable import FerretComponents
@testable import FerretCore
import FerretTestSupport
import Foundation
import Glibc
import GoTestSupport
import Logging
@testable import SinkStatsD
import XCTest

/// The statsd sink, added as docs/adding-a-sink.md describes (a folder, its
/// import and one registry line): built from YAML through the registry, it
/// sends real UDP datagrams to a socket of the test's own.
final class StatsDSinkTests: XCTestCase {
    /// A UDP socket on 127.0.0.1 at a free port, read with a deadline.
    final class Receiver {
        let fd: Int32
        let port: Int

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            self.fd = fd
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &a) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                    bind(fd, s, len) == 0 && getsockname(fd, s, &len) == 0
                }
            }
            guard ok else { throw TestSupport.TestError("bind: \(String(cString: strerror(errno)))") }
            port = Int(UInt16(bigEndian: a.sin_port))
        }

        deinit { close(fd) }

        /// Every line received until `until` holds or the deadline passes. Each
        /// check blocks in poll(2) for up to 100 ms: no poll interval of its own.
        func lines(timeout: Double = 5, until: ([String]) -> Bool) -> [String] {
            var out: [String] = []
            var buf = [UInt8](repeating: 0, count: 65_536)
            Wait.until("the statsd lines", timeout: timeout, poll: 0) {
                if until(out) { return true }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 100) > 0 else { return false }
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 { out += String(decoding: buf[0..<n], as: UTF8.self).split(separator: "\n").map(String.init) }
                return until(out)
            }
            return out
        }
    }

    func testPointsBecomeStatsDLinesThroughTheRegistry() throws {
        let rx = try Receiver()
        let yaml = """
        pipeline:
          sinks:
            - type: statsd
              address: 127.0.0.1:\(rx.port)
              prefix: "ferret."
              tags: [ferret.group, process.pid]
        """
        let config = try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)
        var errors: [ConfigError] = []
        let runners = FerretComponents.all.makeSinkRunners(config.pipeline.sinks, logger: Logger(label: "t"), errors: &errors)
        XCTAssertTrue(errors.isEmpty, "\(errors)")
        XCTAssertEqual(runners.map(\.type), ["statsd"])
        let pipeline = Pipeline(queueSize: 1024, sinks: runners, logger: Logger(label: "t"))
        pipeline.start()
        defer { pipeline.shutdown(timeout: 2) }

        let r = Resource([Attribute("ferret.group", .string("api svc")), Attribute("process.pid", .int(4242))])
        func m(_ name: String, _ kind: MetricKind, _ v: Double, _ h: HistogramData? = nil, attrs: [Attribute] = []) -> Signal {
            .metric(MetricPoint(name: name, kind: kind, value: v, histogram: h, timeUnixNano: Clock.unixNanos(), attributes: attrs, resource: r))
        }
        _ = pipeline.submit([
            m("go.goroutine.count", .gauge, 12),
            m("process.cpu.time", .counter, 1.5, attrs: [Attribute("cpu.mode", .string("user"))]),
            m("http.server.request.duration", .histogram, 0, HistogramData(count: 4, sum: 0.5, bounds: [0.1], bucketCounts: [3, 1])),
            .event(Event(name: "go.goroutine.leak", severity: .warn, body: "b", timeUnixNano: Clock.unixNanos(), resource: r)),
        ])
        _ = pipeline.submit([
            m("process.cpu.time", .counter, 1.75, attrs: [Attribute("cpu.mode", .string("user"))]),
            m("http.server.request.duration", .histogram, 0, HistogramData(count: 10, sum: 1.25, bounds: [0.1], bucketCounts: [8, 2])),
            m("go.goroutine.count", .gauge, 13.5),
        ])
        let tags = "|#ferret.group:api_svc,process.pid:4242"
        let want = [
            "ferret.go.goroutine.count:12|g\(tags)",
            "ferret.process.cpu.time:0.25|c\(tags),cpu.mode:user",
            "ferret.http.server.request.duration.count:6|c\(tags)",
            "ferret.http.server.request.duration.sum:0.75|c\(tags)",
            "ferret.go.goroutine.count:13.5|g\(tags)",
        ]
        let got = rx.lines { $0.count >= want.count }
        XCTAssertEqual(got, want, "the first counter and histogram points set baselines; events are not sent")
    }

    /// The real agent, configured from YAML alone, sends its own metrics.
    func testTheAgentSendsItsSelfMetricsOverStatsD() throws {
        let rx = try Receiver()
        let dir = TestSupport.tempDir("statsd-agent")
        let agent = try TestSupport.AgentProcess(config: """
        agent: { self_metrics_interval: 200ms }
        plugins: { paths: [] }
        pipeline:
          sinks:
            - { type: statsd, address: "127.0.0.1:\(rx.port)" }
            - { type: jsonl, path: \(dir)/out.jsonl }
        """, dir: dir)
        defer { agent.stop() }
        let got = rx.lines(timeout: 10) { l in l.contains { $0.hasPrefix("ferret.pipeline.queue.capacity:") } }
        let line = got.first { $0.hasPrefix("ferret.pipeline.queue.capacity:") }
        XCTAssertEqual(line?.split(separator: "|").prefix(2).joined(separator: "|"), "ferret.pipeline.queue.capacity:65536|g", "\(got.prefix(5))")
        XCTAssertEqual(agent.stop(), 0)
    }
}
