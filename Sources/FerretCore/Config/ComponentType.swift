import Foundation
import Logging

/// How to build one type of pipeline component (a sink or an aggregator), in
/// two typed phases, as the OTel Collector's factories do:
///
/// 1. `decode`: the entry's values into the component's `Config` (a plain
///    Equatable value), each bad value reported through the decoder with its
///    position. No side effects: `ferret validate`, startup and reloads all run
///    it, once per entry. The Config's equality is the entry's identity on a
///    reload: an unchanged Config keeps the running component and its state.
/// 2. `make`: the component from a Config that decoded cleanly. It binds no
///    socket and starts no thread (a sink does that in `start`); a thrown
///    error (a file that cannot be opened) is reported at the entry, or where
///    a thrown `ConfigError` says.
public struct ComponentType<Product>: Sendable {
    /// Keys the entry may carry besides `type` and `name`.
    public let keys: [String]
    /// Keys it cannot do without.
    public let required: [String]
    let decodeEntry: @Sendable (ComponentConfig, ConfigDecoder, String) -> DecodedComponent<Product>?

    public init<Config: Equatable & Sendable>(
        keys: [String], required: [String] = [],
        decode: @escaping @Sendable (_ entry: ComponentConfig, _ d: ConfigDecoder, _ context: String) -> Config?,
        make: @escaping @Sendable (_ config: Config, _ entry: ComponentConfig, _ logger: Logger) throws -> Product
    ) {
        self.keys = keys
        self.required = required
        decodeEntry = { entry, d, context in
            let before = d.errors.count
            guard let config = decode(entry, d, context), d.errors.count == before else { return nil }
            return DecodedComponent(config: config, same: { ($0 as? Config) == config }, make: { try make(config, entry, $0) })
        }
    }

    /// Phase 1 for one entry: nil when a value is bad (reported through `d`).
    public func decode(_ entry: ComponentConfig, _ d: ConfigDecoder, context: String) -> DecodedComponent<Product>? {
        decodeEntry(entry, d, context)
    }
}

/// An entry's decoded Config, ready to be made into its component.
public struct DecodedComponent<Product>: Sendable {
    /// The component's Config value.
    public let config: any Sendable
    /// Whether another decoded Config (of any component) is this one.
    let same: @Sendable (any Sendable) -> Bool
    let make: @Sendable (Logger) throws -> Product

    public func isSame(as other: any Sendable) -> Bool { same(other) }
    public func build(logger: Logger) throws -> Product { try make(logger) }
}

public typealias SinkType = ComponentType<any Sink>
public typealias AggregatorType = ComponentType<any Aggregator>

enum ComponentCheck {
    /// Decodes every entry (phase 1 only: no socket, thread or file), reporting
    /// bad values through `d`. Configuration loading calls it, so `ferret
    /// validate`, startup and reloads all catch them with their position.
    static func validate<Product>(_ configs: [ComponentConfig], _ types: [String: ComponentType<Product>],
                                  what: String, _ d: ConfigDecoder) {
        for c in configs {
            guard let type = types[c.type], !type.required.contains(where: { c.node[$0] == nil }) else { continue }
            _ = type.decode(c, d, context: "in \(what) '\(c.name)'")
        }
    }
}
