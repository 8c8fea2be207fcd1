@testable import FerretComponents
@testable import FerretCore
@testable import FerretHTTPServer
import FerretTestSupport
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
        .event(Event(name: "process.exit", severity: .info, body: "gone", timeUnixNano: 1, resource: r, lifecycle: .exited))
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
}
