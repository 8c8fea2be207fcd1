import Foundation

/// How the host drives a collector.
public enum CollectionMode: Sendable {
    /// The host calls `collect(now:)` every interval.
    case pull
    /// The collector emits from its own threads between `start()` and `stop()`.
    case push
}

/// What a Swift plugin author implements. Conform a final class, then
/// export it with one line:
///
/// ```swift
/// @_cdecl("ferret_plugin_entry") public func entry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(MyCollector.self, major, minor, host) }
/// ```
///
/// Implementation requirements (the ABI's threading contract):
/// - `init`, `attach`, `detach`, `collect`, `start`, `stop` and `deinit` are
///   never called concurrently for one instance.
/// - `Emitter` methods may be called from any thread, never block, and return
///   `.dropped` when the host's queue is full.
/// - Throwing is how you report failure: no Swift error crosses into C.
public protocol FerretCollector: AnyObject {
    /// The plugin's settings (`NoSettings` for none). Decode them in `init`
    /// with `context.settings(Settings.self)`; the host's `ferret validate`
    /// decodes and checks them the same way without making an instance.
    associatedtype Settings: PluginSettings = NoSettings
    /// The plugin name; must equal the manifest's `name`.
    static var name: String { get }
    static var version: String { get }
    static var summary: String { get }
    static var mode: CollectionMode { get }

    /// Creates an instance for one (rule, plugin) pair. Throw
    /// `PluginError.invalidConfig` for bad settings.
    init(context: PluginContext) throws
    /// Starts monitoring a process. Throw `PluginError.unsupported` to decline it.
    func attach(_ target: PluginTarget) throws
    /// Stops monitoring a process; emit nothing for it afterwards.
    func detach(pid: Int32) throws
    /// Pull collectors: measure and emit.
    func collect(now: UInt64) throws
    /// Push collectors: begin producing.
    func start() throws
    /// Push collectors: stop producing and join your threads.
    func stop() throws
}

extension FerretCollector {
    public static var summary: String { "" }
    public static var mode: CollectionMode { .pull }
    public func detach(pid: Int32) throws {}
    public func collect(now: UInt64) throws {}
    public func start() throws {}
    public func stop() throws {}
}

/// Errors a plugin reports to the host (mapped to status + message).
public enum PluginError: Error, CustomStringConvertible {
    /// A setting is wrong. `path` is the JSON pointer of the key ("/interval").
    case invalidConfig(String, path: String? = nil)
    /// This target is not for this plugin (e.g. not a Go program). Not an error.
    case unsupported(String)
    /// Anything else.
    case failed(String)

    public var description: String {
        switch self {
        case .invalidConfig(let m, let p): p.map { "\($0): \(m)" } ?? m
        case .unsupported(let m): m
        case .failed(let m): m
        }
    }
}

/// A process handed to `attach`.
public struct PluginTarget: Sendable {
    public var pid: Int32
    public var startTimeTicks: UInt64
    public var exePath: String
    public var comm: String
    public var group: String
    public var rule: String
    /// e.g. "go1.22.10"; nil when the program is not Go.
    public var goVersion: String?
    public var isStatic: Bool
    public var isGo: Bool { goVersion != nil }
}

/// What `init` receives.
public struct PluginContext: @unchecked Sendable {
    public var instanceName: String
    /// The plugin's configuration subtree as JSON text ("{}" when empty).
    public var configJSON: String
    public var interval: Duration
    public var emit: Emitter

    public init(instanceName: String, configJSON: String, interval: Duration, emit: Emitter) {
        self.instanceName = instanceName
        self.configJSON = configJSON
        self.interval = interval
        self.emit = emit
    }

    /// The configuration as a JSON object.
    public func configObject() throws -> [String: Any] {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(configJSON.utf8)) as? [String: Any] else {
            throw PluginError.invalidConfig("the configuration must be a mapping")
        }
        return obj
    }

    /// Rejects keys not in `allowed`, naming the first unknown one.
    public func requireKnownKeys(_ allowed: Set<String>) throws {
        for key in try configObject().keys.sorted() where !allowed.contains(key) {
            throw PluginError.invalidConfig("unknown key '\(key)'; allowed: \(allowed.sorted().joined(separator: ", "))", path: "/" + key)
        }
    }

    /// Decodes the configuration, mapping decoding errors to the key's JSON pointer.
    public func decodeConfig<C: Decodable>(_ type: C.Type) throws -> C {
        do {
            return try JSONDecoder().decode(C.self, from: Data(configJSON.utf8))
        } catch let DecodingError.typeMismatch(type, ctx), let DecodingError.valueNotFound(type, ctx) {
            let key = ctx.codingPath.last.map { "'\($0.stringValue)'" } ?? "the configuration"
            throw PluginError.invalidConfig("\(key) must be \(Self.expected(type)); \(ctx.debugDescription)", path: pointer(ctx.codingPath))
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw PluginError.invalidConfig("missing key '\(key.stringValue)'", path: pointer(ctx.codingPath))
        } catch let DecodingError.dataCorrupted(ctx) {
            throw PluginError.invalidConfig(ctx.debugDescription, path: pointer(ctx.codingPath))
        }
    }

    private static func expected(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type, is UInt32.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        case is String.Type: "a string"
        case is [Any].Type: "a list"
        case is [String: Any].Type: "a mapping"
        default: "a \(type)"
        }
    }

    private func pointer(_ path: [any CodingKey]) -> String {
        "/" + path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: "/")
    }
}
