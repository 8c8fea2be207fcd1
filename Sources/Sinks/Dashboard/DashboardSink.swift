import FerretCore
import FerretHTTPServer
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `dashboard`: keeps recent history in memory (``DashboardState``) and serves
/// it on `listen` (default 127.0.0.1:9465, loopback) as web pages and the JSON
/// API behind them (``DashboardAPI``), on the same HTTP stack as the prometheus
/// sink (``SinkHTTPServer``). Issue #9; documented in README.md in this folder.
public final class DashboardSink: Sink, @unchecked Sendable {
    public static let keys = ["listen", "raw_span", "long_span", "max_bytes", "max_events", "max_traces", "max_routes"]
    public static let defaultListen = "127.0.0.1:9465"

    public let name: String
    public let state: DashboardState
    private let logger: Logger
    private var server: SinkHTTPServer?
    private let boundPort = Atomic<Int>(-1)

    public var port: Int? {
        let p = boundPort.load(ordering: .relaxed)
        return p < 0 ? nil : p
    }

    private let host: String
    private let requestedPort: Int

    /// Makes the sink; with `serve` (standalone use) it starts serving at once,
    /// otherwise in `start` (the agent: sockets bind in start, not in init).
    public init(name: String, host: String, port: Int, options: DashboardState.Options = .init(), logger: Logger,
                serve: Bool = true) throws {
        self.name = name
        self.logger = logger
        self.host = host
        requestedPort = port
        state = DashboardState(options: options)
        if serve { try start() }
    }

    public func start() throws {
        guard server == nil else { return }
        let state = self.state
        let s = SinkHTTPServer(host: host, port: requestedPort, label: "dashboard", logger: logger) { request in
            DashboardAPI.respond(request, state: state)
        }
        let bound = try s.start(timeout: 10)
        server = s
        boundPort.store(bound, ordering: .relaxed)
        logger.info("sink '\(name)' (dashboard) serving http://\(host.contains(":") ? "[\(host)]" : host):\(bound)/")
    }

    public func write(_ batch: [Signal]) throws { state.apply(batch) }

    public func close() {
        server?.stop()
        server = nil
        boundPort.store(-1, ordering: .relaxed)
    }

    public struct Config: Equatable, Sendable {
        var host: String
        var port: Int
        var options: DashboardState.Options
    }

    public static let sinkType = SinkType(keys: keys, decode: { c, d, ctx -> Config? in
        var (host, port) = ListenAddress.parse(defaultListen)!
        if let n = c.node["listen"], let s = d.string(n, "'listen'", context: ctx) {
            if let hp = ListenAddress.parse(s) { (host, port) = hp } else {
                d.fail(n.mark, "invalid 'listen' address '\(s)' \(ctx); use HOST:PORT, [IPv6]:PORT or :PORT")
            }
        }
        var o = DashboardState.Options()
        if let n = c.node["raw_span"], let v = d.duration(n, "'raw_span'", context: ctx, minimum: .seconds(60)) { o.history.rawSpan = v }
        if let n = c.node["long_span"], let v = d.duration(n, "'long_span'", context: ctx, minimum: .seconds(60)) { o.history.longSpan = v }
        if let n = c.node["max_bytes"], let v = d.int(n, "'max_bytes'", context: ctx, range: (1 << 20)...(1 << 40)) { o.history.maxBytes = v }
        if let n = c.node["max_events"], let v = d.int(n, "'max_events'", context: ctx, range: 10...1_000_000) { o.maxEvents = v }
        if let n = c.node["max_traces"], let v = d.int(n, "'max_traces'", context: ctx, range: 10...1_000_000) { o.maxTraces = v }
        if let n = c.node["max_routes"], let v = d.int(n, "'max_routes'", context: ctx, range: 1...100_000) { o.maxRoutes = v }
        return Config(host: host, port: port, options: o)
    }, make: { cf, c, logger in
        try DashboardSink(name: c.name, host: cf.host, port: cf.port, options: cf.options, logger: logger, serve: false)
    })
}
