import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The HTTP server of the sinks that serve (prometheus, dashboard): a
/// Hummingbird application on its own task (in a ServiceGroup of its own),
/// answering every request with `respond`. `start` blocks until the socket is
/// bound (or binding failed); `stop` shuts the group down gracefully (a request
/// in flight completes) and waits until the socket is closed.
public final class SinkHTTPServer: Sendable {
    public struct AddressInUse: Error, CustomStringConvertible {
        public var address: String
        public var description: String { "cannot listen on \(address): address already in use" }
    }

    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
    }

    public let host: String
    public let port: Int
    /// "prometheus", "dashboard": names the server in logs.
    public let label: String
    let logger: Logger
    let respond: @Sendable (Request) async -> Response
    private let running = Mutex<(task: Task<Void, Never>, group: ServiceGroup)?>(nil)
    private let finished = DispatchSemaphore(value: 0)

    public init(host: String, port: Int, label: String, logger: Logger, respond: @escaping @Sendable (Request) async -> Response) {
        self.host = host
        self.port = port
        self.label = label
        self.logger = logger
        self.respond = respond
    }

    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Binds and starts serving; returns the bound port.
    public func start(timeout: Double) throws -> Int {
        let outcome = Mutex<Result<Int, any Error>?>(nil)
        let decided = DispatchSemaphore(value: 0)
        let (address, logger, finished, label, respond) = (self.address, self.logger, self.finished, self.label, self.respond)
        let responder = CallbackResponder<BasicRequestContext> { request, _ in await respond(request) }
        // Hummingbird's warnings and errors only (the sink logs its address itself).
        // Not `logger.logLevel = …`: the agent's handler keeps one level for all.
        let hbLogger = Logger(label: "ferret.\(label).http") { _ in LibraryLogHandler(base: logger, prefix: "\(label) server on \(address): ") }
        let app = Application(
            responder: responder,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                outcome.withLock { $0 = .success(channel.localAddress?.port ?? 0) }
                decided.signal()
            },
            eventLoopGroupProvider: .singleton,
            logger: hbLogger)
        let group = ServiceGroup(configuration: .init(services: [app], logger: hbLogger))
        let t = Task {
            do {
                try await group.run()
            } catch {
                let first = outcome.withLock { o -> Bool in
                    guard o == nil else { return false }
                    o = .failure(Self.describe(error, address: address))
                    return true
                }
                if first { decided.signal() } else if !Task.isCancelled {
                    logger.error("\(label) server on \(address) stopped: \(error)")
                }
            }
            finished.signal()
        }
        running.withLock { $0 = (t, group) }
        if decided.wait(timeout: .now() + timeout) == .timedOut {
            stop()
            throw StartFailure(description: "cannot listen on \(address): the server did not start within \(Int(timeout)) s")
        }
        return try outcome.withLock { $0! }.get()
    }

    static func describe(_ error: any Error, address: String) -> any Error {
        if let io = error as? IOError, io.errnoCode == EADDRINUSE { return AddressInUse(address: address) }
        return StartFailure(description: "cannot listen on \(address): \(error)")
    }

    /// Shuts the server down gracefully and waits for the socket to close;
    /// cancels it after 5 s.
    public func stop() {
        guard let (task, group) = running.withLock({ r in defer { r = nil }; return r }) else { return }
        Task { await group.triggerGracefulShutdown() }
        if finished.wait(timeout: .now() + 5) == .timedOut {
            task.cancel()
            if finished.wait(timeout: .now() + 2) == .timedOut {
                logger.warning("\(label) server on \(address) did not stop within 7 s")
            }
        }
    }
}

/// Hands a library's warnings and errors to the agent's logger with a prefix;
/// the level is this handler's own.
struct LibraryLogHandler: LogHandler {
    var base: Logger
    var prefix: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        base.log(level: event.level, "\(prefix)\(event.message)", metadata: event.metadata,
                 source: event.source, file: event.file, function: event.function, line: event.line)
    }
}

/// A `listen` setting: HOST:PORT, [IPv6]:PORT or :PORT (all interfaces).
public enum ListenAddress {
    /// "host:port", "[v6]:port" or ":port" (every interface).
    public static func parse(_ s: String) -> (host: String, port: Int)? {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        if host.contains(":") && !s.hasPrefix("[") { return nil }
        return (host, port)
    }
}
