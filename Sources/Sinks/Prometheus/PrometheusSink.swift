import FerretCore
import FerretHTTPServer
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `prometheus`: serves the latest value of every metric series over HTTP for
/// Prometheus to scrape (`listen`, default 127.0.0.1:9464, `path`, default
/// /metrics), in the text format 0.0.4 or, when the scraper's Accept header
/// asks for it, OpenMetrics 1.0.0. Names follow the OpenTelemetry-to-Prometheus
/// rules (`PrometheusNaming`); the resource attributes named in
/// `resource_labels` become labels next to the point's own attributes.
/// Samples carry no timestamps, so Prometheus marks a series stale as soon as
/// it disappears: on its process' exit, or after `expire_after` without an update.
///
/// The server starts in `init` (a port in use is an error naming the sink and
/// the address) and stops in `close()`. Other signals than metrics and
/// `process.exit` events are ignored.
public final class PrometheusSink: Sink, @unchecked Sendable {
    public static let keys = ["listen", "path", "resource_labels", "expire_after"]
    public static let defaultListen = "127.0.0.1:9464"

    public let name: String
    public let store: PrometheusStore
    public let host: String
    public let requestedPort: Int
    public let path: String
    private let logger: Logger
    /// Confined to the runner thread (and `init`).
    private var server: SinkHTTPServer?
    private var lastBindAttempt: UInt64 = 0
    private var closed = false
    private var started = false
    private let addressKey: String

    /// The port the server listens on (the chosen one when `listen` said port 0),
    /// or nil while it waits for the address (see `init`).
    public var port: Int? {
        let p = boundPort.load(ordering: .relaxed)
        return p < 0 ? nil : p
    }
    private let boundPort = Atomic<Int>(-1)

    /// Makes the sink; with `serve` (standalone use) it starts serving at once,
    /// otherwise in `start` (the agent: sockets bind in start, not in init).
    public init(name: String, host: String, port: Int, path: String = "/metrics",
                options: PrometheusStore.Options = .init(), logger: Logger, serve: Bool = true) throws {
        self.name = name
        self.host = host
        self.requestedPort = port
        self.path = path
        self.logger = logger
        let sinkName = name
        store = PrometheusStore(options: options) { message in
            logger.warning("sink '\(sinkName)' (prometheus): \(message)")
        }
        addressKey = "\(host):\(port)"
        if serve { try start() }
    }

    /// Starts serving. When another prometheus sink of this process holds the
    /// address (a reload that changed the sink's settings, before the old one
    /// is closed), binding is retried from the runner thread until it is free.
    public func start() throws {
        guard server == nil, !started else { return }
        started = true
        do {
            try bind()
        } catch let e as SinkHTTPServer.AddressInUse where requestedPort != 0 && Self.held(addressKey) {
            logger.info("sink '\(name)' (prometheus): \(e); waiting for the sink that holds it to close")
        }
        Self.hold(addressKey)
    }

    private func bind() throws {
        lastBindAttempt = Clock.monotonicNanos()
        let (path, store) = (self.path, self.store)
        let s = SinkHTTPServer(host: host, port: requestedPort, label: "prometheus", logger: logger) { request in
            Self.respond(request, path: path, store: store)
        }
        let bound = try s.start(timeout: 10)
        server = s
        boundPort.store(bound, ordering: .relaxed)
        logger.info("sink '\(name)' (prometheus) serving http://\(host.contains(":") ? "[\(host)]" : host):\(bound)\(path)")
    }

    public func write(_ batch: [Signal]) throws {
        store.apply(batch)
        try bindIfWaiting()
    }

    public func flush() throws {
        store.maintain()
        try bindIfWaiting()
    }

    private func bindIfWaiting() throws {
        guard server == nil, !closed, Clock.monotonicNanos() - lastBindAttempt >= 500_000_000 else { return }
        do { try bind() } catch is SinkHTTPServer.AddressInUse where Self.held(addressKey, excludingOne: true) {
            // The old sink has not closed yet.
        }
    }

    public func close() {
        guard !closed else { return }
        closed = true
        server?.stop()
        server = nil
        boundPort.store(-1, ordering: .relaxed)
        Self.release(addressKey)
    }

    // Addresses held by open prometheus sinks of this process (counted).
    private static let holders = Mutex<[String: Int]>([:])
    private static func hold(_ key: String) { holders.withLock { $0[key, default: 0] += 1 } }
    private static func release(_ key: String) {
        holders.withLock { h in
            if let n = h[key] { h[key] = n > 1 ? n - 1 : nil }
        }
    }
    private static func held(_ key: String, excludingOne: Bool = false) -> Bool {
        holders.withLock { ($0[key] ?? 0) > (excludingOne ? 1 : 0) }
    }
}

extension PrometheusSink {
    public struct Config: Equatable, Sendable {
        var host: String
        var port: Int
        var path: String
        var options: PrometheusStore.Options
    }

    public static let sinkType = SinkType(keys: keys, decode: { c, d, ctx -> Config? in
        var (host, port) = ListenAddress.parse(defaultListen)!
        if let n = c.node["listen"], let s = d.string(n, "'listen'", context: ctx) {
            if let hp = ListenAddress.parse(s) { (host, port) = hp } else {
                d.fail(n.mark, "invalid 'listen' address '\(s)' \(ctx); use HOST:PORT, [IPv6]:PORT or :PORT")
            }
        }
        var path = "/metrics"
        if let n = c.node["path"], let s = d.string(n, "'path'", context: ctx) {
            if s.hasPrefix("/") && !s.contains("?") && !s.contains(" ") { path = s } else {
                d.fail(n.mark, "invalid 'path' '\(s)' \(ctx); it must start with '/'")
            }
        }
        var options = PrometheusStore.Options()
        if let n = c.node["resource_labels"], let list = d.stringList(n, "'resource_labels'", context: ctx) {
            options.resourceLabels = list
        }
        if let n = c.node["expire_after"], let dur = d.duration(n, "'expire_after'", context: ctx, minimum: .seconds(1)) {
            options.expireAfterNanos = UInt64(dur.nanoseconds)
        }
        return Config(host: host, port: port, path: path, options: options)
    }, make: { cf, c, logger in
        try PrometheusSink(name: c.name, host: cf.host, port: cf.port, path: cf.path, options: cf.options, logger: logger, serve: false)
    })
}

extension PrometheusSink {
    fileprivate static func respond(_ request: Request, path: String, store: PrometheusStore) -> Response {
        guard request.uri.path == path else {
            return Response(status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: "not found; metrics are at \(path)\n")))
        }
        guard request.method == .get || request.method == .head else {
            return Response(status: .methodNotAllowed, headers: [.allow: "GET, HEAD"])
        }
        let accept = request.headers[values: .accept].joined(separator: ",")
        let format = PrometheusFormat.negotiate(accept: accept)
        var headers = HTTPFields()
        headers[.contentType] = format.contentType
        if request.method == .head { return Response(status: .ok, headers: headers) }
        // Streamed in chunks (chunked transfer encoding): a scrape of any size
        // holds about one chunk, and the store's lock one chunk at a time.
        let cursor = store.cursor(format)
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            while let chunk = cursor.next() { try await writer.write(ByteBuffer(bytes: chunk)) }
            try await writer.finish(nil)
        })
    }
}
