import Foundation
import Logging

/// How to build one type of pipeline component (a sink or an aggregator)
/// from its configuration entry.
public struct ComponentType<Product>: Sendable {
    /// Keys the entry may carry besides `type` and `name`.
    public let keys: [String]
    /// Keys it cannot do without.
    public let required: [String]
    /// Builds the component. Bad values are reported through the decoder (with
    /// their position) and make it return nil; a thrown error is reported at the
    /// entry. With `d.checkOnly` it checks its values and starts nothing.
    public let make: @Sendable (_ entry: ComponentConfig, _ d: ConfigDecoder, _ context: String, _ logger: Logger) throws -> Product?

    public init(keys: [String], required: [String] = [],
                make: @escaping @Sendable (ComponentConfig, ConfigDecoder, String, Logger) throws -> Product?) {
        self.keys = keys
        self.required = required
        self.make = make
    }
}

public typealias SinkType = ComponentType<any Sink>
public typealias AggregatorType = ComponentType<any Aggregator>

enum ComponentCheck {
    /// Decodes every entry's values in check-only mode (no sockets, threads or
    /// files), reporting bad ones through `d`. Configuration loading calls it,
    /// so `ferret validate`, startup and reloads all catch them with their position.
    static func validate<Product>(_ configs: [ComponentConfig], _ types: [String: ComponentType<Product>],
                                  what: String, _ d: ConfigDecoder) {
        let logger = Logger(label: "ferret.validate")
        let was = d.checkOnly
        d.checkOnly = true
        defer { d.checkOnly = was }
        for c in configs {
            guard let type = types[c.type], !type.required.contains(where: { c.node[$0] == nil }) else { continue }
            do {
                _ = try type.make(c, d, "in \(what) '\(c.name)'", logger)
            } catch {
                d.fail(c.mark, "\(what) '\(c.name)' (\(c.type)): \(error)")
            }
        }
    }
}
