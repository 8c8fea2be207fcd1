// http_tracer: zero-code tracing of Go net/http servers and clients with eBPF
// uprobes (issue #6). Plain uprobes on the entry and every RET of
// serverHandler.ServeHTTP, (*Transport).roundTrip and, where configured,
// runtime.newproc1 (never uretprobes), field offsets from the binary's DWARF or
// the per-version layout table, events through a BPF ring buffer; server and
// client spans and the RED histograms http.{server,client}.request.duration.
import FerretPluginKit
import Foundation
import GoIntrospection
import HTTPTracing
import Synchronization

public final class HTTPTracerCollector: FerretCollector, @unchecked Sendable {
    public static let name = "http_tracer"
    public static let version = "0.1.0"
    public static let summary = "spans and RED metrics of Go net/http servers, from eBPF uprobes (no code change)"
    public static let mode = CollectionMode.push

    struct Options {
        var objectPath: String?
        var metricsIntervalNanos: UInt64 = 10_000_000_000
        var spans = true
        var goroutineParents = GoroutineParents.auto
    }

    private let emit: Emitter
    private let settings: Options
    private var tracer: TracerBPF?
    private var clock = ClockConverter()
    /// Spans waiting for the flusher (filled on the ring thread).
    private let pendingSpans = Mutex([PluginSpan]())
    private let red = Mutex(REDHistograms())
    private var plans: [Int32: ProbePlan] = [:]
    private let running = Atomic<Bool>(false)
    private let flusherDone = DispatchSemaphore(value: 0)
    private var flusher: Thread?
    private let droppedSpans = Atomic<UInt64>(0)

    /// The configuration keys as written (README.md, sample.yaml).
    public struct Settings: PluginSettings {
        var bpf_object: String?
        var metrics_interval: DurationSetting?
        var spans: Bool?
        var goroutine_parents: String?

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case bpf_object, metrics_interval, spans, goroutine_parents
        }

        /// The values in force: defaults filled in, every value checked.
        func options() throws -> Options {
            var o = Options()
            if let p = bpf_object {
                guard !p.isEmpty else {
                    throw PluginError.invalidConfig("bpf_object must be the path of http_tracer.bpf.o", path: "/bpf_object")
                }
                o.objectPath = p
            }
            if let m = metrics_interval {
                guard m.nanoseconds >= 1_000_000_000 else {
                    throw PluginError.invalidConfig("metrics_interval must be a duration of at least 1s (e.g. 10s)", path: "/metrics_interval")
                }
                o.metricsIntervalNanos = m.nanoseconds
            }
            if let b = spans { o.spans = b }
            if let t = goroutine_parents {
                guard let g = GoroutineParents(rawValue: t) else {
                    throw PluginError.invalidConfig("goroutine_parents must be auto, newproc1 or off, got \(t)", path: "/goroutine_parents")
                }
                o.goroutineParents = g
            }
            return o
        }

        public func check() throws { _ = try options() }
    }

    public init(context: PluginContext) throws {
        settings = try context.settings(Settings.self).options()
        emit = context.emit
    }

    /// The BPF object: configured, else http_tracer.bpf.o in the folder this
    /// library was loaded from (found in /proc/self/maps; Glibc's dladdr is not
    /// visible to Swift). The file is read to its end: Foundation's
    /// `String(contentsOfFile:)` stops after the first 4 KiB of a procfs file,
    /// and a process with many libraries maps this one further down.
    static func defaultObjectPath() -> String? {
        guard let bytes = try? ProcFile.read("/proc/self/maps", pid: getpid()) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let path = line[slash...]
            if path.hasSuffix("/libferret_http_tracer.so") {
                return URL(fileURLWithPath: String(path)).deletingLastPathComponent().appendingPathComponent("http_tracer.bpf.o").path
            }
        }
        return nil
    }

    public func start() throws {
        guard let path = settings.objectPath ?? Self.defaultObjectPath() else {
            throw PluginError.failed("cannot locate http_tracer.bpf.o; set bpf_object")
        }
        clock = ClockConverter()
        let clock = self.clock
        do {
            tracer = try TracerBPF(objectPath: path) { [weak self] e in self?.received(e, clock: clock) }
        } catch {
            throw PluginError.failed("\(error)")
        }
        running.store(true, ordering: .relaxed)
        let t = Thread { [weak self] in self?.loop() }
        t.name = "http_tracer"
        flusher = t
        t.start()
    }

    public func stop() throws {
        running.store(false, ordering: .relaxed)
        if flusher != nil { flusherDone.wait() }
        flusher = nil
        tracer?.close()
        flushSpans()
        flushMetrics(now: Self.unixNanos())
        tracer = nil
        plans.removeAll()
    }

    public func attach(_ target: PluginTarget) throws {
        guard let tracer else { throw PluginError.failed("http_tracer is not started") }
        guard target.isGo else { throw PluginError.unsupported("pid \(target.pid) (\(target.comm)) is not a Go program") }
        let plan: ProbePlan
        do {
            let binary = try GoBinaryCache.binary(path: "\(HostProc.path)/\(target.pid)/exe")
            plan = try ProbePlan.make(for: binary, goroutineParents: settings.goroutineParents)
        } catch {
            // One clear event per refused process: no probes were attached.
            emit.events([PluginEvent(
                name: "http_tracer.unsupported", severity: .warn,
                body: "pid \(target.pid) (\(target.comm)): not traced: \(error)", pid: target.pid,
                attributes: [("reason", .string("\(error)"))])])
            throw PluginError.unsupported("pid \(target.pid) (\(target.comm)): \(error)")
        }
        do {
            try tracer.attach(pid: target.pid, plan: plan)
        } catch {
            throw PluginError.failed("\(error)")
        }
        plans[target.pid] = plan
        let functions = [(plan.server, ProbePlan.serverFunction), (plan.client, ProbePlan.clientFunction),
                         (plan.spawn, ProbePlan.spawnFunction)].compactMap { $0.0 == nil ? nil : $0.1 }
        emit.log(.info, "pid \(target.pid) (\(target.comm), \(plan.goVersion)): \(plan.probeCount) uprobes on \(functions.joined(separator: ", ")); goroutine parents: \(plan.parenting); layouts from \(plan.layoutSource)")
    }

    public func detach(pid: Int32) throws {
        guard plans.removeValue(forKey: pid) != nil else { throw PluginError.failed("pid \(pid) is not attached") }
        tracer?.detach(pid: pid)
        flushSpans()
        let now = Self.unixNanos()
        flushMetrics(now: now, only: pid)
        red.withLock { $0.remove(pid: pid) }
    }

    // MARK: - events → spans and histograms

    private func received(_ e: HTTPEvent, clock: ClockConverter) {
        let seconds = Double(e.endMonotonicNanos &- e.startMonotonicNanos) / 1e9
        // Status 0 in a series key: no status (a client error, or unreadable).
        let status = e.effectiveStatus ?? 0
        red.withLock {
            $0.record(.init(pid: e.pid, kind: e.kind, method: e.method, status: status, route: e.route), seconds: seconds)
        }
        guard settings.spans else { return }
        let span = Self.span(e, clock: clock)
        let n = pendingSpans.withLock { p -> Int in
            if p.count >= 65_536 { return -1 }
            p.append(span)
            return p.count
        }
        if n < 0 { droppedSpans.add(1, ordering: .relaxed) }
    }

    /// The OTel span of one event (HTTP semantic conventions).
    static func span(_ e: HTTPEvent, clock: ClockConverter) -> PluginSpan {
        let status = e.effectiveStatus
        var attrs: [(String, AttrValue)] = [
            ("http.request.method", .string(e.method)),
            ("url.path", .string(e.path)),
        ]
        if let status { attrs.append(("http.response.status_code", .int(status))) }
        if !e.route.isEmpty { attrs.append(("http.route", .string(Self.routePath(e.route)))) }
        if !e.host.isEmpty { attrs.append(("server.address", .string(Self.hostOnly(e.host)))) }
        if let port = Self.port(e.host) { attrs.append(("server.port", .int(port))) }
        let error = Self.errorType(e.kind, status: status, noResponse: e.flags.contains(.clientError))
        if let error { attrs.append(("error.type", .string(error))) }
        // The name: method and route where the mux reported one, else the path
        // the request asked for (the issue's `GET /path`).
        let target = e.route.isEmpty ? e.path : Self.routePath(e.route)
        return PluginSpan(
            pid: e.pid, kind: e.kind == .server ? .server : .client,
            traceID: e.traceID, spanID: e.spanID, parentSpanID: e.parentSpanID,
            name: target.isEmpty ? e.method : "\(e.method) \(target)",
            startUnixNano: clock.unixNanos(monotonic: e.startMonotonicNanos),
            endUnixNano: clock.unixNanos(monotonic: e.endMonotonicNanos),
            status: error != nil ? .error : .unset, attributes: attrs)
    }

    /// OTel's `error.type` of a request, nil when it did not fail: a server
    /// fails on 5xx; a client on 4xx, 5xx and on no response at all.
    static func errorType(_ kind: HTTPEvent.Kind, status: Int64?, noResponse: Bool) -> String? {
        if kind == .client && noResponse { return "no response" }
        guard let status, status > 0 else { return nil }
        return status >= (kind == .server ? 500 : 400) ? String(status) : nil
    }

    /// The path part of a ServeMux pattern: "GET example.com/items/{id}" →
    /// "/items/{id}" (the method is in its own attribute; a host, if any, too).
    static func routePath(_ pattern: String) -> String {
        var p = Substring(pattern)
        if let space = p.firstIndex(of: " ") { p = p[p.index(after: space)...] }
        if let slash = p.firstIndex(of: "/") { p = p[slash...] }
        return String(p)
    }

    /// "example.com:8080" → "example.com"; "[::1]:80" → "::1".
    static func hostOnly(_ host: String) -> String {
        if host.hasPrefix("["), let end = host.firstIndex(of: "]") { return String(host[host.index(after: host.startIndex)..<end]) }
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon { return String(host[..<colon]) }
        return host
    }

    static func port(_ host: String) -> Int64? {
        guard let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") else { return nil }
        if !host.hasPrefix("["), host.firstIndex(of: ":") != colon { return nil }
        return Int64(host[host.index(after: colon)...])
    }

    private func flushSpans() {
        let batch = pendingSpans.withLock { p -> [PluginSpan] in
            defer { p.removeAll(keepingCapacity: true) }
            return p
        }
        var i = 0
        while i < batch.count {
            let chunk = Array(batch[i..<min(i + 512, batch.count)])
            if emit.spans(chunk) == .dropped { droppedSpans.add(UInt64(chunk.count), ordering: .relaxed) }
            i += chunk.count
        }
    }

    private func flushMetrics(now: UInt64, only pid: Int32? = nil) {
        let series = red.withLock { $0.series }
        var points: [Metric] = []
        for (k, s) in series where pid == nil || k.pid == pid {
            // Status 0 in a series key: no status known (see received).
            let status = k.status == 0 ? nil : k.status
            var attrs: [(String, AttrValue)] = [("http.request.method", .string(k.method))]
            if let status { attrs.append(("http.response.status_code", .int(status))) }
            if !k.route.isEmpty { attrs.append(("http.route", .string(Self.routePath(k.route)))) }
            if let error = Self.errorType(k.kind, status: status, noResponse: status == nil) {
                attrs.append(("error.type", .string(error)))
            }
            points.append(.histogram(REDHistograms.name(k.kind), bounds: REDHistograms.bounds, bucketCounts: s.counts,
                                     sum: s.sum, unit: "s", pid: k.pid, attributes: attrs, time: now))
        }
        if pid == nil, let c = tracer?.counters() {
            points += [
                .counter("http_tracer.inflight.overflow", Double(c.inflightFull), unit: "{request}", pid: 0),
                .counter("http_tracer.events.lost", Double(c.ringbufFull), unit: "{event}", pid: 0),
                .counter("http_tracer.returns.unmatched", Double(c.unmatchedReturn), unit: "{probe}", pid: 0),
                .counter("http_tracer.read.errors", Double(c.readErrors), unit: "{read}", pid: 0),
                .counter("http_tracer.header.misses", Double(c.headerMisses), unit: "{request}", pid: 0),
                .counter("http_tracer.status.unknown", Double(c.statusUnknown), unit: "{request}", pid: 0),
                .counter("http_tracer.spans.dropped", Double(droppedSpans.load(ordering: .relaxed)), unit: "{span}", pid: 0),
            ]
        }
        emit.metrics(points)
    }

    /// Emits spans every 100 ms and metrics every metrics_interval.
    private func loop() {
        var nextMetrics = Self.unixNanos() + settings.metricsIntervalNanos
        while running.load(ordering: .relaxed) {
            usleep(100_000)
            flushSpans()
            let now = Self.unixNanos()
            if now >= nextMetrics {
                flushMetrics(now: now)
                nextMetrics = now + settings.metricsIntervalNanos
            }
        }
        flusherDone.signal()
    }

    static func unixNanos() -> UInt64 { UInt64(ClockConverter.now(CLOCK_REALTIME)) }
}

@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(HTTPTracerCollector.self, major, minor, host) }
