@testable import FerretComponents
@testable import FerretCore
@testable import FerretHTTPServer
import Foundation
import Logging
@testable import SinkPrometheus
import XCTest

/// The prometheus sink without a Prometheus: naming, escaping, both exposition
/// formats (golden texts, and promtool's parser), content negotiation,
/// staleness, and the HTTP server (formats, errors, a port in use, close).
final class PrometheusSinkTests: XCTestCase {
    static let agent = Resource([Attribute("process.pid", .int(7)), Attribute("process.executable.name", .string("ferret")),
                                 Attribute("ferret.group", .string("ferret")), Attribute("host.name", .string("h"))])

    static func process(_ pid: Int64, group: String = "api") -> Resource {
        Resource([Attribute("process.pid", .int(pid)), Attribute("process.executable.name", .string("srv")),
                  Attribute("process.command_line", .string("srv -x")),
                  Attribute("ferret.group", .string(group)), Attribute("ferret.rule", .string("go")), Attribute("host.name", .string("h"))])
    }

    static func gauge(_ name: String, _ v: Double, unit: String = "", _ r: Resource, _ attrs: [Attribute] = []) -> Signal {
        .metric(MetricPoint(name: name, kind: .gauge, unit: unit, value: v, timeUnixNano: 1, attributes: attrs, resource: r))
    }

    static func counter(_ name: String, _ v: Double, unit: String = "", _ r: Resource, _ attrs: [Attribute] = []) -> Signal {
        .metric(MetricPoint(name: name, kind: .counter, unit: unit, value: v, timeUnixNano: 1, attributes: attrs, resource: r))
    }

    static func exit(_ r: Resource) -> Signal {
        .event(Event(name: "process.exit", severity: .info, body: "gone", timeUnixNano: 1, resource: r))
    }

    static func text(_ store: PrometheusStore, _ f: PrometheusFormat = .text, now: UInt64 = 1_000_000_000_000) -> String {
        String(decoding: store.render(f, now: now), as: UTF8.self)
    }

    // MARK: - naming

    func testMetricNamesFollowTheOTelRules() {
        let cases: [(String, String, MetricKind, String)] = [
            ("process.cpu.time", "s", .counter, "process_cpu_time_seconds_total"),
            ("go.goroutine.count", "{goroutine}", .gauge, "go_goroutine_count"),
            ("process.memory.usage", "By", .gauge, "process_memory_usage_bytes"),
            ("go.gc.cpu.fraction", "1", .gauge, "go_gc_cpu_fraction_ratio"),
            ("events.seen", "1", .counter, "events_seen_total"),
            ("http.server.request.duration", "s", .histogram, "http_server_request_duration_seconds"),
            ("rpc.latency", "ms", .histogram, "rpc_latency_milliseconds"),
            ("net.throughput", "By/s", .gauge, "net_throughput_bytes_per_second"),
            ("requests", "{request}/s", .gauge, "requests_per_second"),
            ("packets", "By{packet}", .counter, "packets_bytes_total"),
            ("jobs.total", "", .counter, "jobs_total"),
            ("heap.bytes", "By", .gauge, "heap_bytes"),
            ("weird-name/with spaces..and:colon", "", .gauge, "weird_name_with_spaces_and:colon"),
            ("5xx.count", "", .counter, "_5xx_count_total"),
            ("café.latency", "us", .gauge, "caf_latency_microseconds"),
            ("disk.free", "MiBy", .gauge, "disk_free_mebibytes"),
            ("temp", "Cel", .gauge, "temp_celsius"),
            ("odd", "furlong", .gauge, "odd_furlong"),
        ]
        for (name, unit, kind, want) in cases {
            XCTAssertEqual(PrometheusNaming.sampleName(name, unit: unit, kind: kind), want, "\(name) [\(unit)] \(kind)")
        }
        XCTAssertEqual(PrometheusNaming.familyName("process.cpu.time", unit: "s", kind: .counter), "process_cpu_time_seconds")
    }

    func testLabelNamesAreSanitised() {
        XCTAssertEqual(PrometheusNaming.labelName("ferret.group"), "ferret_group")
        XCTAssertEqual(PrometheusNaming.labelName("process.executable.name"), "process_executable_name")
        XCTAssertEqual(PrometheusNaming.labelName("http:method"), "http_method", "no colons in label names")
        XCTAssertEqual(PrometheusNaming.labelName("0x"), "key_0x")
        XCTAssertEqual(PrometheusNaming.labelName("__name__"), "key_name_", "Prometheus' reserved prefix is never produced")
        XCTAssertEqual(PrometheusNaming.labelName("_private"), "key_private")
    }

    func testLabelValuesAreEscaped() {
        let store = PrometheusStore(options: .init(resourceLabels: ["ferret.group"]))
        store.apply([Self.gauge("g", 1, Self.process(1, group: "a\"b\\c\nd"), [Attribute("path", .string("C:\\x \"y\""))])], now: 1_000_000_000_000)
        XCTAssertEqual(Self.text(store), """
            # HELP g g
            # TYPE g gauge
            g{ferret_group="a\\"b\\\\c\\nd",path="C:\\\\x \\"y\\""} 1

            """)
    }

    // MARK: - formats

    /// One store with a gauge, a counter with attributes and a histogram, as both formats.
    func goldenStore() -> PrometheusStore {
        let store = PrometheusStore()
        let p = Self.process(42)
        store.apply([
            Self.gauge("go.goroutine.count", 17, unit: "{goroutine}", p),
            Self.counter("process.cpu.time", 1.25, unit: "s", p, [Attribute("cpu.mode", .string("user"))]),
            Self.counter("process.cpu.time", 0.5, unit: "s", p, [Attribute("cpu.mode", .string("system"))]),
            Self.gauge("go.gc.cpu.fraction", 0.015, unit: "1", Self.agent),
            .metric(MetricPoint(name: "ferret.discovery.attach.latency", kind: .histogram, unit: "s",
                                histogram: HistogramData(count: 6, sum: 0.042, bounds: [0.005, 0.01, 0.1], bucketCounts: [1, 2, 3, 0]),
                                timeUnixNano: 1, resource: Self.agent)),
        ], now: 1_000_000_000_000)
        return store
    }

    func testTextFormat004() {
        XCTAssertEqual(Self.text(goldenStore(), .text), """
            # HELP ferret_discovery_attach_latency_seconds ferret.discovery.attach.latency (s)
            # TYPE ferret_discovery_attach_latency_seconds histogram
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.005"} 1
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.01"} 3
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.1"} 6
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="+Inf"} 6
            ferret_discovery_attach_latency_seconds_sum{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 0.042
            ferret_discovery_attach_latency_seconds_count{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 6
            # HELP go_gc_cpu_fraction_ratio go.gc.cpu.fraction (1)
            # TYPE go_gc_cpu_fraction_ratio gauge
            go_gc_cpu_fraction_ratio{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 0.015
            # HELP go_goroutine_count go.goroutine.count ({goroutine})
            # TYPE go_goroutine_count gauge
            go_goroutine_count{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h"} 17
            # HELP process_cpu_time_seconds_total process.cpu.time (s)
            # TYPE process_cpu_time_seconds_total counter
            process_cpu_time_seconds_total{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h",cpu_mode="user"} 1.25
            process_cpu_time_seconds_total{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h",cpu_mode="system"} 0.5

            """)
    }

    func testOpenMetrics100() {
        XCTAssertEqual(Self.text(goldenStore(), .openMetrics), """
            # HELP ferret_discovery_attach_latency_seconds ferret.discovery.attach.latency (s)
            # TYPE ferret_discovery_attach_latency_seconds histogram
            # UNIT ferret_discovery_attach_latency_seconds seconds
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.005"} 1
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.01"} 3
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="0.1"} 6
            ferret_discovery_attach_latency_seconds_bucket{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h",le="+Inf"} 6
            ferret_discovery_attach_latency_seconds_sum{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 0.042
            ferret_discovery_attach_latency_seconds_count{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 6
            # HELP go_gc_cpu_fraction_ratio go.gc.cpu.fraction (1)
            # TYPE go_gc_cpu_fraction_ratio gauge
            # UNIT go_gc_cpu_fraction_ratio ratio
            go_gc_cpu_fraction_ratio{ferret_group="ferret",process_pid="7",process_executable_name="ferret",host_name="h"} 0.015
            # HELP go_goroutine_count go.goroutine.count ({goroutine})
            # TYPE go_goroutine_count gauge
            go_goroutine_count{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h"} 17
            # HELP process_cpu_time_seconds process.cpu.time (s)
            # TYPE process_cpu_time_seconds counter
            # UNIT process_cpu_time_seconds seconds
            process_cpu_time_seconds_total{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h",cpu_mode="user"} 1.25
            process_cpu_time_seconds_total{ferret_group="api",ferret_rule="go",process_pid="42",process_executable_name="srv",host_name="h",cpu_mode="system"} 0.5
            # EOF

            """)
        let empty = PrometheusStore()
        XCTAssertEqual(Self.text(empty, .openMetrics), "# EOF\n")
        XCTAssertEqual(Self.text(empty, .text), "")
    }

    /// promtool (from Debian's prometheus package) parses the text format with
    /// Prometheus' own parser: exit status 1 is a parse error (3 is lint advice).
    func testPromtoolParsesTheTextFormat() throws {
        let promtool = "/usr/bin/promtool"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: promtool), "promtool missing: run scripts/setup.sh")
        let store = goldenStore()
        store.apply([Self.gauge("strange", .nan, Self.process(9, group: "q\"uo\nte"), [Attribute("x", .double(0.5))]),
                     Self.gauge("big", 1e300, Self.agent), Self.gauge("neg", -.infinity, Self.agent)], now: 1_000_000_000_000)
        let input = TestSupport.tempDir("promtool") + "/metrics.txt"
        try Data(store.render(.text, now: 1_000_000_000_000)).write(to: URL(fileURLWithPath: input))
        let r = try TestSupport.run("/bin/sh", ["-c", "\(promtool) check metrics < \(input)"])
        XCTAssertNotEqual(r.status, 1, "promtool could not parse it:\n\(r.stdout)\(r.stderr)")
        XCTAssertFalse((r.stdout + r.stderr).contains("error while linting"), r.stdout + r.stderr)
    }

    func testContentNegotiation() {
        let prometheus242 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        XCTAssertEqual(PrometheusFormat.negotiate(accept: prometheus242), .openMetrics)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "application/openmetrics-text"), .openMetrics)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "application/openmetrics-text; version=0.0.1"), .text)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "text/plain;version=0.0.4"), .text)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "text/plain, application/openmetrics-text;q=0.2"), .text)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "*/*"), .text)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: nil), .text)
        XCTAssertEqual(PrometheusFormat.negotiate(accept: "application/openmetrics-text;q=0"), .text)
    }

    func testValuesFormat() {
        var w = ExpositionWriter(capacity: 64)
        for v in [0, -0.0, 3, -42, 1e15, 1e17, 0.1, 1.5e-7, .nan, .infinity, -.infinity, 123456789012345] as [Double] {
            w.append(value: v)
            w.append(byte: 0x20)
        }
        w.append(unsigned: UInt64.max)
        XCTAssertEqual(String(decoding: w.bytes, as: UTF8.self), "0 0 3 -42 1000000000000000.0 1e+17 0.1 1.5e-07 NaN +Inf -Inf 123456789012345 18446744073709551615")
    }

    // MARK: - labels

    func testPointAttributesJoinAndOverrideResourceLabels() {
        let store = PrometheusStore(options: .init(resourceLabels: ["ferret.group", "ferret.rule", "process.pid"]))
        store.apply([
            // ferret.rule on the point replaces the resource's; a.b and a_b collide and join.
            Self.gauge("g", 1, Self.process(5), [Attribute("ferret.rule", .string("mine")), Attribute("a_b", .int(2)), Attribute("a.b", .bool(true))]),
            // Attribute order does not make another series.
            Self.gauge("h", 1, Self.process(5), [Attribute("y", .int(1)), Attribute("x", .int(2))]),
            Self.gauge("h", 2, Self.process(5), [Attribute("x", .int(2)), Attribute("y", .int(1))]),
        ], now: 1_000_000_000_000)
        let lines = Self.text(store).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(lines, [
            #"g{ferret_group="api",process_pid="5",a_b="true;2",ferret_rule="mine"} 1"#,
            #"h{ferret_group="api",ferret_rule="go",process_pid="5",x="2",y="1"} 2"#,
        ])
    }

    /// Gauge `jobs` and counter `jobs` (samples `jobs_total`) are one family
    /// name in OpenMetrics: the later type is dropped, counted and logged once.
    func testTypeConflictsDropTheLaterKind() {
        let conflicts = Conflicts()
        let store = PrometheusStore(options: .init(), onConflict: { conflicts.add($0) })
        store.apply([Self.gauge("jobs", 1, Self.agent), Self.counter("jobs", 5, Self.agent), Self.gauge("jobs.x", 2, Self.agent)])
        XCTAssertEqual(store.conflictCount, 1)
        store.apply([Self.counter("jobs.total", 1, Self.agent)])
        XCTAssertEqual(store.conflictCount, 2)
        XCTAssertEqual(conflicts.messages.count, 1, "logged once per name: \(conflicts.messages)")
        store.apply([Self.counter("requests", 1, Self.agent), Self.counter("requests.total", 2, Self.agent)])
        XCTAssertEqual(store.conflictCount, 2, "one family under two OTel spellings")
        let text = Self.text(store)
        XCTAssertTrue(text.contains("\nrequests_total{ferret_group=\"ferret\",process_pid=\"7\",process_executable_name=\"ferret\",host_name=\"h\"} 2\n"), text)
        XCTAssertTrue(text.contains("\njobs{"), text)
        XCTAssertFalse(text.contains("jobs_total"), text)
    }

    final class Conflicts: @unchecked Sendable {
        let lock = NSLock()
        var messages: [String] = []
        func add(_ m: String) { lock.withLock { messages.append(m) } }
    }

    // MARK: - staleness

    func testProcessExitRemovesItsSeriesAndIgnoresLatePoints() {
        let store = PrometheusStore()
        let a = Self.process(100), b = Self.process(200)
        let t0: UInt64 = 1_000_000_000_000
        store.apply([Self.gauge("go.goroutine.count", 5, a), Self.gauge("go.goroutine.count", 6, b),
                     Self.counter("process.cpu.time", 1, unit: "s", a, [Attribute("cpu.mode", .string("user"))])], now: t0)
        XCTAssertEqual(store.count, 3)
        store.apply([Self.gauge("go.goroutine.count", 7, a), Self.exit(a), Self.gauge("go.goroutine.count", 8, a)], now: t0 + 1)
        XCTAssertEqual(store.count, 1, "pid 100's series are gone, pid 200's stays")
        XCTAssertFalse(Self.text(store, now: t0 + 1).contains(#"process_pid="100""#))
        store.apply([Self.gauge("go.goroutine.count", 9, a)], now: t0 + 2_000_000_000)
        XCTAssertEqual(store.count, 1, "a late point of the exited process does not bring it back")
        // The pid is reused by a new process: a new resource, same labels. It shows.
        store.apply([Self.gauge("go.goroutine.count", 3, Self.process(100))], now: t0 + 3_000_000_000)
        XCTAssertTrue(Self.text(store, now: t0 + 3_000_000_000).contains(#"process_pid="100",process_executable_name="srv",host_name="h"} 3"#))
    }

    func testSeriesExpireWithoutUpdates() {
        let store = PrometheusStore(options: .init(expireAfterNanos: 10_000_000_000))
        let t0: UInt64 = 1_000_000_000_000
        store.apply([Self.gauge("a", 1, Self.agent), Self.gauge("b", 1, Self.agent)], now: t0)
        store.apply([Self.gauge("b", 2, Self.agent)], now: t0 + 8_000_000_000)
        XCTAssertEqual(Self.text(store, now: t0 + 9_000_000_000).filter { $0 == "\n" }.count, 6, "both shown")
        let at11 = Self.text(store, now: t0 + 11_000_000_000)
        XCTAssertFalse(at11.contains("a{"), "a is past expire_after: not rendered even before a sweep")
        XCTAssertTrue(at11.contains("b{"))
        store.maintain(now: t0 + 11_000_000_000)
        XCTAssertEqual(store.count, 1, "the sweep removed a")
        store.maintain(now: t0 + 30_000_000_000)
        XCTAssertEqual(store.count, 0)
        XCTAssertEqual(Self.text(store, now: t0 + 30_000_000_000), "", "empty families are dropped too")
    }

    /// A scrape reads the exposition in chunks, each under the lock: the chunks
    /// add up to the whole, and a family compacted in the middle of a scrape
    /// (most of its processes exited) loses no surviving series and repeats none.
    func testChunkedScrapesAddUpAndSurviveCompaction() {
        let store = PrometheusStore()
        let t0: UInt64 = 1_000_000_000_000
        let procs = (0..<300).map { Self.process(Int64($0)) }
        store.apply(procs.flatMap { [Self.gauge("a", 1, $0), Self.counter("b", 2, unit: "s", $0)] }, now: t0)
        let whole = store.render(.openMetrics, now: t0)
        let cursor = store.cursor(.openMetrics, now: t0)
        var chunks: [[UInt8]] = []
        while let c = cursor.next(targetBytes: 1000) { chunks.append(c) }
        XCTAssertGreaterThan(chunks.count, 50)
        XCTAssertEqual(Array(chunks.joined()), whole)
        XCTAssertNil(cursor.next())

        let scrape = store.cursor(.text, now: t0)
        var got = scrape.next(targetBytes: 2000)!
        store.apply(procs[0..<200].map { Self.exit($0) }, now: t0)
        while let c = scrape.next(targetBytes: 2000) { got += c }
        let samples = String(decoding: got, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(Set(samples).count, samples.count, "no series twice")
        for pid in 200..<300 {
            XCTAssertTrue(samples.contains { $0.hasPrefix("a{") && $0.contains("process_pid=\"\(pid)\"") }, "a of \(pid) is missing")
            XCTAssertTrue(samples.contains { $0.hasPrefix("b_seconds_total{") && $0.contains("process_pid=\"\(pid)\"") }, "b of \(pid) is missing")
        }
        XCTAssertFalse(samples.contains { $0.hasPrefix("b_seconds_total{") && $0.contains("process_pid=\"5\"") }, "family b was not reached before the exits")
    }

    // MARK: - HTTP

    func testServesBothFormatsOverHTTP() throws {
        let sink = try PrometheusSink(name: "prom", host: "127.0.0.1", port: 0, path: "/m", logger: Logger(label: "test"))
        defer { sink.close() }
        let port = try XCTUnwrap(sink.port)
        try sink.write([Self.gauge("go.goroutine.count", 12, unit: "{goroutine}", Self.process(3))])

        let plain = try HTTP.get(port: port, path: "/m")
        XCTAssertEqual(plain.status, 200)
        XCTAssertEqual(plain.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        XCTAssertTrue(plain.text.contains(#"go_goroutine_count{ferret_group="api",ferret_rule="go",process_pid="3",process_executable_name="srv",host_name="h"} 12"#), plain.text)
        XCTAssertFalse(plain.text.contains("# EOF"))

        let om = try HTTP.get(port: port, path: "/m", headers: ["Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"])
        XCTAssertEqual(om.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8")
        XCTAssertTrue(om.text.hasSuffix("# EOF\n"), om.text)

        XCTAssertEqual(try HTTP.get(port: port, path: "/metrics").status, 404)
        XCTAssertEqual(try HTTP.get(port: port, path: "/m", method: "POST").status, 405)
        XCTAssertEqual(try HTTP.get(port: port, path: "/m?x=1").status, 200)

        sink.close()
        XCTAssertThrowsError(try HTTP.get(port: port, path: "/m"), "closed: the port is released")
    }

    func testAPortInUseIsAConfigErrorNamingSinkAndAddress() throws {
        let first = try PrometheusSink(name: "one", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { first.close() }
        let port = try XCTUnwrap(first.port)
        let yaml = """
        pipeline:
          sinks:
            - type: prometheus
              name: second
              listen: 127.0.0.1:\(port)
        """
        let config = try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)
        var errors: [ConfigError] = []
        let runners = FerretComponents.all.makeSinkRunners(config.pipeline.sinks, logger: Logger(label: "test"), errors: &errors)
        XCTAssertTrue(runners.isEmpty)
        let text = errors.map { "\($0)" }.joined(separator: "\n")
        XCTAssertTrue(text.contains("c.yaml:3:"), text)
        XCTAssertTrue(text.contains("sink 'second' (prometheus)"), text)
        XCTAssertTrue(text.contains("cannot listen on 127.0.0.1:\(port): address already in use"), text)
        XCTAssertEqual(try HTTP.get(port: port, path: "/metrics").status, 200, "the first one still serves")
    }

    /// A reload that changes the sink's settings builds the new sink before
    /// closing the old one: the new one takes the address once it is free.
    func testANewSinkOnTheSameAddressWaitsForTheOldOne() throws {
        let probe = try PrometheusSink(name: "probe", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let port = try XCTUnwrap(probe.port)
        probe.close()
        let old = try PrometheusSink(name: "old", host: "127.0.0.1", port: port, logger: Logger(label: "test"))
        let new = try PrometheusSink(name: "new", host: "127.0.0.1", port: port, path: "/new", logger: Logger(label: "test"))
        defer { new.close() }
        XCTAssertNil(new.port, "waiting")
        old.close()
        let deadline = Date().addingTimeInterval(5)
        while new.port == nil && Date() < deadline {
            try? new.flush()
            usleep(100_000)
        }
        XCTAssertEqual(new.port, port)
        XCTAssertEqual(try HTTP.get(port: port, path: "/new").status, 200)
    }

    func testConfigKeys() throws {
        let yaml = """
        pipeline:
          sinks:
            - type: prometheus
              listen: "nonsense"
              path: metrics
              expire_after: 10 parsecs
              colour: red
        """
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)) { e in
            XCTAssertTrue("\(e)".contains("c.yaml:7:"), "\(e)")
            XCTAssertTrue("\(e)".contains("unknown key 'colour'"), "\(e)")
        }
        // Loading checks the values without binding (what `ferret validate` runs).
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml.replacingOccurrences(of: "\n      colour: red", with: ""), file: "c.yaml", components: FerretComponents.all)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("c.yaml:4:") && text.contains("invalid 'listen' address 'nonsense'"), text)
            XCTAssertTrue(text.contains("c.yaml:5:") && text.contains("invalid 'path' 'metrics'"), text)
            XCTAssertTrue(text.contains("c.yaml:6:") && text.contains("expire_after"), text)
        }

        XCTAssertEqual(ListenAddress.parse(":9100")?.host, "0.0.0.0")
        XCTAssertEqual(ListenAddress.parse("[::1]:9100")?.host, "::1")
        XCTAssertEqual(ListenAddress.parse("localhost:80")?.port, 80)
        XCTAssertNil(ListenAddress.parse("::1:9100"))
        XCTAssertNil(ListenAddress.parse("127.0.0.1:70000"))
    }
}

/// A tiny HTTP/1.1 client over a POSIX socket, with request headers and the
/// response's headers (lower-cased names).
enum HTTP {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    static func get(host: String = "127.0.0.1", port: Int, path: String, method: String = "GET",
                    headers: [String: String] = [:], timeout: Double = 30) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestSupport.TestError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw TestSupport.TestError("connect \(host):\(port): \(String(cString: strerror(errno)))") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let request = Array((head + "\r\n").utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestSupport.TestError("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw TestSupport.TestError("recv \(path): \(String(cString: strerror(errno)))") }
            response.append(contentsOf: buf[0..<n])
        }
        guard let sep = response.range(of: Data("\r\n\r\n".utf8)) else {
            throw TestSupport.TestError("\(method) \(path): no HTTP header in \(response.count) bytes")
        }
        let lines = String(decoding: response[..<sep.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestSupport.TestError("bad status line \(lines.first ?? "")") }
        var fields: [String: String] = [:]
        for l in lines.dropFirst() {
            guard let c = l.firstIndex(of: ":") else { continue }
            fields[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(response[sep.upperBound...])
        if fields["transfer-encoding"] == "chunked" { body = try dechunk(body) }
        return Response(status: status, headers: fields, body: body)
    }

    static func dechunk(_ data: Data) throws -> Data {
        var out = Data()
        var i = data.startIndex
        while let lineEnd = data[i...].range(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: data[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw TestSupport.TestError("bad chunk size") }
            if size == 0 { return out }
            let start = lineEnd.upperBound
            guard data.distance(from: start, to: data.endIndex) >= size + 2 else { throw TestSupport.TestError("truncated chunk") }
            out.append(data[start..<data.index(start, offsetBy: size)])
            i = data.index(start, offsetBy: size + 2)
        }
        throw TestSupport.TestError("truncated chunked body")
    }

    /// A GET of Prometheus' HTTP API, decoded.
    static func json(port: Int, path: String) throws -> [String: Any] {
        let r = try get(port: port, path: path)
        guard let obj = try JSONSerialization.jsonObject(with: r.body) as? [String: Any] else {
            throw TestSupport.TestError("GET \(path): HTTP \(r.status), not JSON: \(r.text)")
        }
        return obj
    }
}
